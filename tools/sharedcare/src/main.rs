//! `sharedcare`: run the platform on a laptop (`dev`) and call it from the
//! shell (`token`, `patient`, `record`, `access-report`, `demo`, ...), and
//! measure it (`bench`).

mod bench;
mod bootstrap;
mod cli;
mod commands;
mod connect;
mod demo;
mod dev;
mod failure;
mod labels;
mod output;
mod ports;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    cli::{Cli, Command},
    connect::Services,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let services = Services::from_args(&cli.global);
    match run(cli, &services).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if failure::status_code(&e) == Some(tonic::Code::Unavailable) {
                eprintln!(
                    "hint: is `sharedcare dev` running? Calling identity {}, consent {}, records {}, \
                     audit {} (see --base-port and the --*-url flags)",
                    services.identity_url,
                    services.consent_url,
                    services.records_url,
                    services.audit_url
                );
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, services: &Services) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => dev::run(args, cli.global.base_port).await,
        Command::Token(args) => commands::token::run(services, args).await,
        Command::Org(command) => commands::org::run(services, command).await,
        Command::Principal(command) => commands::principal::run(services, command).await,
        Command::Patient(command) => commands::patient::run(services, command).await,
        Command::CareRelationship(args) => commands::care::run(services, args).await,
        Command::Refer(args) => commands::care::run_refer(services, args).await,
        Command::EndRelationship(args) => commands::care::run_end(services, args).await,
        Command::Directive(command) => commands::directive::run(services, command).await,
        Command::Record(command) => commands::record::run(services, command).await,
        Command::Records(command) => commands::records_admin::run(command).await,
        Command::Import(args) => commands::transfer::import(services, args).await.map(drop),
        Command::Export(args) => commands::transfer::export(services, args).await,
        Command::StorageServer(args) => commands::storage::run(args).await,
        Command::AccessReport(args) => commands::access_report::run(services, args).await,
        Command::Audit(command) => commands::audit::run(services, command).await,
        Command::Demo(args) => demo::run(services, args, cli.global.base_port).await,
        Command::Bench(args) => bench::run(services, args).await,
    }
}
