//! `sharedcare principal`: staff, applications, services and patients, with
//! the client credentials their tokens are issued against.

use clap::{Subcommand, ValueEnum};
use sharedcare_proto::{
    common::v1::PrincipalKind,
    identity::v1::{
        CreatePrincipalRequest, CreatePrincipalResponse, RevokePrincipalRequest,
        RotateSigningKeyRequest,
    },
};

use crate::output::out;
use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
    labels::{self, PurposeArg},
};

#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Add a principal and print its client credentials (needs `admin`).
    Create(CreatePrincipalArgs),
    /// Revoke a principal for good: no more tokens, and its tokens are
    /// refused everywhere within the services' revocation refresh interval
    /// (needs `admin`).
    Revoke(RevokePrincipalArgs),
    /// Sign new tokens with a new key; the old key's tokens stay valid
    /// until they expire (needs `admin`).
    RotateSigningKey,
}

#[derive(Debug, clap::Args)]
pub struct RevokePrincipalArgs {
    /// The principal's id (as `principal create` printed it).
    #[arg(long)]
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct CreatePrincipalArgs {
    /// What the principal is.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// ODS code of the organisation it acts for; not for patients.
    #[arg(long, default_value = "", hide_default_value = true, required_if_eq_any([
        ("kind", "staff"), ("kind", "application"), ("kind", "service"),
    ]))]
    pub ods: String,
    /// Role code at that organisation (national RBAC code, e.g. R8000);
    /// required for staff. Its capabilities come from identity's role map.
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        required_if_eq("kind", "staff")
    )]
    pub role: String,
    /// Display name, e.g. "Dr A".
    #[arg(long)]
    pub name: String,
    /// The patient a patient principal is bound to (its id); patients only.
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        required_if_eq("kind", "patient")
    )]
    pub patient: String,
    /// Scopes its tokens may carry (repeatable); none means the kind's
    /// defaults. A PAS application needs e.g. patients.write and consent.write.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// Purposes its tokens may name, fixed now (repeatable); none means the
    /// kind's default (direct care; patient access for patients).
    #[arg(long = "purpose", value_enum, value_name = "PURPOSE")]
    pub purposes: Vec<PurposeArg>,
}

/// The kinds of principal an admin may create (admins come from bootstrap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Staff,
    Application,
    Service,
    /// A patient signed in for themselves, bound to one patient id.
    Patient,
}

impl KindArg {
    fn to_proto(self) -> PrincipalKind {
        match self {
            KindArg::Staff => PrincipalKind::Staff,
            KindArg::Application => PrincipalKind::Application,
            KindArg::Service => PrincipalKind::Service,
            KindArg::Patient => PrincipalKind::Patient,
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
                patient_id: args.patient,
                purposes: args
                    .purposes
                    .into_iter()
                    .map(|p| p.to_proto() as i32)
                    .collect(),
            },
            services.token()?,
        )?)
        .await
        .grpc()
}

pub async fn run(services: &Services, command: PrincipalCommand) -> anyhow::Result<()> {
    let args = match command {
        PrincipalCommand::Create(args) => args,
        PrincipalCommand::Revoke(args) => return revoke(services, args).await,
        PrincipalCommand::RotateSigningKey => return rotate(services).await,
    };
    let created = create(services, args).await?;
    let principal = created.principal.unwrap_or_default();
    out!("principal_id:  {}", principal.principal_id);
    out!("kind:          {}", labels::principal_kind(principal.kind));
    if principal.patient_id.is_empty() {
        out!("organisation:  {}", principal.organisation_ods_code);
    } else {
        out!("patient_id:    {}", principal.patient_id);
    }
    if !principal.role.is_empty() {
        out!("role:          {}", principal.role);
    }
    out!("client_id:     {}", principal.client_id);
    out!("client_secret: {}", created.client_secret);
    out!("scopes:        {}", principal.scopes.join(" "));
    out!("purposes:      {}", labels::purposes(&principal.purposes));
    eprintln!("The client secret is shown this once: keep it now.");
    Ok(())
}

async fn revoke(services: &Services, args: RevokePrincipalArgs) -> anyhow::Result<()> {
    let revoked = services
        .identity()?
        .revoke_principal(bearer(
            RevokePrincipalRequest {
                principal_id: args.id,
            },
            services.token()?,
        )?)
        .await
        .grpc()?;
    out!("principal_id:    {}", revoked.principal_id);
    out!(
        "revoked_at:      {}",
        labels::time(revoked.revoke_time.as_ref())
    );
    out!("already_revoked: {}", revoked.already_revoked);
    Ok(())
}

async fn rotate(services: &Services) -> anyhow::Result<()> {
    let rotated = services
        .identity()?
        .rotate_signing_key(bearer(RotateSigningKeyRequest {}, services.token()?)?)
        .await
        .grpc()?;
    out!("kid:            {}", rotated.kid);
    out!("published_kids: {}", rotated.published_kids.join(" "));
    out!(
        "old keys until: {}",
        labels::time(rotated.previous_keys_retire_time.as_ref())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: CreatePrincipalArgs,
    }

    #[derive(Debug, Parser)]
    struct Commands {
        #[command(subcommand)]
        command: PrincipalCommand,
    }

    #[test]
    fn revoke_names_the_principal_and_rotation_takes_nothing() {
        let cli = Commands::try_parse_from(["x", "revoke", "--id", "p-1"]).expect("parses");
        assert!(matches!(cli.command, PrincipalCommand::Revoke(ref a) if a.id == "p-1"));
        Commands::try_parse_from(["x", "revoke"]).expect_err("no id");
        let cli = Commands::try_parse_from(["x", "rotate-signing-key"]).expect("parses");
        assert!(matches!(cli.command, PrincipalCommand::RotateSigningKey));
    }

    #[test]
    fn a_patient_needs_a_patient_id_and_no_organisation() {
        let cli = Cli::try_parse_from([
            "x",
            "--kind",
            "patient",
            "--patient",
            "p1",
            "--name",
            "Jane",
        ])
        .expect("parses");
        assert_eq!(cli.args.kind, KindArg::Patient);
        assert_eq!(cli.args.patient, "p1");
        assert_eq!(cli.args.ods, "");
        let err = Cli::try_parse_from(["x", "--kind", "patient", "--name", "Jane"])
            .expect_err("no patient id");
        assert!(err.to_string().contains("--patient"), "{err}");
    }

    #[test]
    fn staff_need_an_organisation_and_a_role_and_may_be_given_purposes() {
        let err = Cli::try_parse_from(["x", "--kind", "staff", "--ods", "A81001", "--name", "Dr"])
            .expect_err("no role");
        assert!(err.to_string().contains("--role"), "{err}");
        let err = Cli::try_parse_from(["x", "--kind", "application", "--name", "PAS"])
            .expect_err("no organisation");
        assert!(err.to_string().contains("--ods"), "{err}");
        let cli = Cli::try_parse_from([
            "x",
            "--kind",
            "staff",
            "--ods",
            "A81001",
            "--role",
            "R8000",
            "--name",
            "Dr",
            "--purpose",
            "direct-care",
            "--purpose",
            "research",
        ])
        .expect("parses");
        assert_eq!(
            cli.args.purposes,
            vec![PurposeArg::DirectCare, PurposeArg::Research]
        );
    }
}
