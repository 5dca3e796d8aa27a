//! The command line: global flags (where the services are, which token to
//! send) and one subcommand per task. Each subcommand's own flags live with
//! the code that runs it.

use clap::{Args, Parser, Subcommand};

use crate::{bench::BenchArgs, commands, demo::DemoArgs, dev::DevArgs};

/// The sharedcare command line: run the platform on a laptop and walk the
/// chain (token → patient → consent → record → audit) without writing code.
#[derive(Debug, Parser)]
#[command(name = "sharedcare", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The help section the global flags are listed under.
const HEADING: &str = "Services (every command)";

/// Where the four services listen and which token client commands send.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// First of four consecutive ports: identity N, consent N+1, records N+2,
    /// audit N+3. `dev` listens there; client commands call there unless a
    /// service URL is given.
    #[arg(
        long,
        global = true,
        help_heading = HEADING,
        env = "SHAREDCARE_BASE_PORT",
        default_value_t = crate::ports::DEFAULT_BASE_PORT,
        value_parser = clap::value_parser!(u16).range(1..=65532),
    )]
    pub base_port: u16,
    /// identity's gRPC URL [default: http://127.0.0.1:<base-port>]
    #[arg(long, global = true, help_heading = HEADING, env = "SHAREDCARE_IDENTITY_URL")]
    pub identity_url: Option<String>,
    /// consent's gRPC URL [default: http://127.0.0.1:<base-port + 1>]
    #[arg(long, global = true, help_heading = HEADING, env = "SHAREDCARE_CONSENT_URL")]
    pub consent_url: Option<String>,
    /// records' gRPC URL [default: http://127.0.0.1:<base-port + 2>]
    #[arg(long, global = true, help_heading = HEADING, env = "SHAREDCARE_RECORDS_URL")]
    pub records_url: Option<String>,
    /// audit's gRPC URL [default: http://127.0.0.1:<base-port + 3>]
    #[arg(long, global = true, help_heading = HEADING, env = "SHAREDCARE_AUDIT_URL")]
    pub audit_url: Option<String>,
    /// Access token sent as `authorization: Bearer <token>`.
    #[arg(
        long,
        global = true,
        help_heading = HEADING,
        env = "SHAREDCARE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run identity, consent, records and audit in one process on SQLite.
    Dev(DevArgs),
    /// Exchange client credentials for an access token (prints only the token).
    Token(commands::token::TokenArgs),
    /// Organisations, known by ODS code (identity).
    #[command(subcommand)]
    Org(commands::org::OrgCommand),
    /// Staff, application, service and patient principals (identity).
    #[command(subcommand)]
    Principal(commands::principal::PrincipalCommand),
    /// The patient index (identity).
    #[command(subcommand)]
    Patient(commands::patient::PatientCommand),
    /// Record that the caller's own organisation is caring for a patient
    /// (consent; its PAS, or staff whose role may assert relationships).
    CareRelationship(commands::care::CareRelationshipArgs),
    /// Refer a patient the caller's organisation cares for to another
    /// organisation (consent).
    Refer(commands::care::ReferArgs),
    /// End one of the caller's organisation's care relationships (consent).
    EndRelationship(commands::care::EndArgs),
    /// A patient's directives: by the patient, or on their behalf (consent).
    #[command(subcommand)]
    Directive(commands::directive::DirectiveCommand),
    /// FHIR R4 resources in a patient's shared record (records).
    #[command(subcommand)]
    Record(commands::record::RecordCommand),
    /// Maintenance of records' storage with records' own configuration
    /// (e.g. `records rewrap` after a key rotation).
    #[command(subcommand)]
    Records(commands::records_admin::RecordsCommand),
    /// Load a FHIR bulk export (a directory of NDJSON files) through the
    /// public APIs: patients into identity, the importing organisation's care
    /// relationship into consent, everything else into records. Safe to run
    /// again: nothing is imported twice.
    Import(commands::transfer::ImportArgs),
    /// Write a patient's record out as FHIR NDJSON files, one per type.
    Export(commands::transfer::ExportArgs),
    /// Serve records' storage protocol on SQLite or PostgreSQL: the reference
    /// store for records' `remote` backend.
    StorageServer(commands::storage::StorageServerArgs),
    /// Who accessed a patient's record, when, why and with what outcome
    /// (audit; the patient, a privacy officer or a platform auditor).
    AccessReport(commands::access_report::AccessReportArgs),
    /// Check the tamper-evident audit log as an outside auditor would.
    #[command(subcommand)]
    Audit(commands::audit::AuditCommand),
    /// The platform's story, narrated call by call against a running
    /// platform (`sharedcare dev`, or a cluster): who asks, what they are
    /// allowed, and why.
    Demo(DemoArgs),
    /// Closed-loop load on one RPC of a running platform, reported beside
    /// (and as a ratio to) a bare echo server it runs itself.
    Bench(BenchArgs),
}
