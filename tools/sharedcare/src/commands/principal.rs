//! `sharedcare principal`: staff, applications and services, with the
//! client credentials their tokens are issued against.

use clap::{Subcommand, ValueEnum};
use sharedcare_proto::{
    common::v1::PrincipalKind,
    identity::v1::{CreatePrincipalRequest, CreatePrincipalResponse},
};

use crate::output::out;
use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
};

#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Add a principal and print its client credentials (needs `admin`).
    Create(CreatePrincipalArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreatePrincipalArgs {
    /// What the principal is.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// ODS code of the organisation it acts for.
    #[arg(long)]
    pub ods: String,
    /// Role code at that organisation (national RBAC code, e.g. R8000);
    /// required for staff.
    #[arg(long, default_value = "")]
    pub role: String,
    /// Display name, e.g. "Dr A".
    #[arg(long)]
    pub name: String,
    /// Scopes its tokens may carry (repeatable); none means the kind's defaults.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
}

/// The kinds of principal an admin may create (admins come from bootstrap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Staff,
    Application,
    Service,
}

impl KindArg {
    fn to_proto(self) -> PrincipalKind {
        match self {
            KindArg::Staff => PrincipalKind::Staff,
            KindArg::Application => PrincipalKind::Application,
            KindArg::Service => PrincipalKind::Service,
        }
    }
}

/// Calls CreatePrincipal.
pub async fn create(
    services: &Services,
    args: CreatePrincipalArgs,
) -> anyhow::Result<CreatePrincipalResponse> {
    services
        .identity()?
        .create_principal(bearer(
            CreatePrincipalRequest {
                kind: args.kind.to_proto() as i32,
                display_name: args.name,
                organisation_ods_code: args.ods,
                role: args.role,
                scopes: args.scopes,
            },
            services.token()?,
        )?)
        .await
        .grpc()
}

pub async fn run(services: &Services, command: PrincipalCommand) -> anyhow::Result<()> {
    let PrincipalCommand::Create(args) = command;
    let created = create(services, args).await?;
    let principal = created.principal.unwrap_or_default();
    out!("principal_id:  {}", principal.principal_id);
    out!("client_id:     {}", principal.client_id);
    out!("client_secret: {}", created.client_secret);
    out!("scopes:        {}", principal.scopes.join(" "));
    eprintln!("The client secret is shown this once: keep it now.");
    Ok(())
}
