//! `sharedcare directive`: the patient's wishes about their record. Recorded
//! and revoked by the patient themselves, or by staff at an organisation
//! caring for them whose role may record directives on their behalf
//! (consent keeps who, for whom and from which source).

use clap::{Subcommand, ValueEnum};
use sharedcare_proto::consent::v1::{
    Directive, DirectiveKind, Effect, ListDirectivesRequest, RecordDirectiveRequest,
    RevokeDirectiveRequest, SetNationalOptOutRequest, SetNationalOptOutResponse,
};

use crate::output::out;
use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
    labels::{self, CategoryArg, PurposeArg},
};

#[derive(Debug, Subcommand)]
pub enum DirectiveCommand {
    /// Record a directive: permit or deny, narrowed by purpose, organisation,
    /// staff role and record category (each unset means any).
    Record(RecordArgs),
    /// Withdraw a directive.
    Revoke {
        /// Patient id: the patient the directive belongs to.
        #[arg(long)]
        patient: String,
        /// Directive id, as printed by `directive record`.
        #[arg(long)]
        directive: String,
    },
    /// List a patient's directives in force (or yet to start).
    List {
        /// Patient id.
        #[arg(long)]
        patient: String,
        /// Every version: revoked and ended directives too.
        #[arg(long)]
        history: bool,
    },
    /// Register (or with --withdraw, withdraw) the patient's National Data
    /// Opt-out: research, planning and commissioning are refused unless an
    /// exemption holds; care is never touched. By the patient, or the
    /// national opt-out service.
    OptOut {
        /// Patient id.
        #[arg(long)]
        patient: String,
        /// Withdraw the opt-out instead.
        #[arg(long)]
        withdraw: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Patient id.
    #[arg(long)]
    pub patient: String,
    /// Permit or deny.
    #[arg(long, value_enum)]
    pub effect: EffectArg,
    /// Only for this purpose (repeatable).
    #[arg(long = "purpose", value_enum, value_name = "PURPOSE")]
    pub purposes: Vec<PurposeArg>,
    /// Only for this organisation (ODS code).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub ods: String,
    /// Only for staff in this role.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub role: String,
    /// Only for this part of the record (repeatable).
    #[arg(long = "category", value_enum, value_name = "CATEGORY")]
    pub categories: Vec<CategoryArg>,
    /// A note kept with it (no clinical content).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EffectArg {
    Permit,
    Deny,
}

impl EffectArg {
    fn to_proto(self) -> Effect {
        match self {
            EffectArg::Permit => Effect::Permit,
            EffectArg::Deny => Effect::Deny,
        }
    }
}

/// Calls RecordDirective, in force from now and open-ended.
pub async fn record(services: &Services, args: RecordArgs) -> anyhow::Result<Directive> {
    let response = services
        .consent()?
        .record_directive(bearer(
            RecordDirectiveRequest {
                directive: Some(Directive {
                    patient_id: args.patient,
                    effect: args.effect.to_proto() as i32,
                    purposes: args
                        .purposes
                        .into_iter()
                        .map(|p| p.to_proto() as i32)
                        .collect(),
                    organisation_ods_code: args.ods,
                    staff_role: args.role,
                    categories: args
                        .categories
                        .into_iter()
                        .map(|c| c.to_proto() as i32)
                        .collect(),
                    note: args.note,
                    ..Directive::default()
                }),
            },
            services.token()?,
        )?)
        .await
        .grpc()?;
    Ok(response.directive.unwrap_or_default())
}

/// Calls RevokeDirective.
pub async fn revoke(
    services: &Services,
    patient: String,
    directive: String,
) -> anyhow::Result<Directive> {
    let response = services
        .consent()?
        .revoke_directive(bearer(
            RevokeDirectiveRequest {
                directive_id: directive,
                patient_id: patient,
            },
            services.token()?,
        )?)
        .await
        .grpc()?;
    Ok(response.directive.unwrap_or_default())
}

/// Calls SetNationalOptOut: registers the opt-out (`opted_out`) or
/// withdraws it.
pub async fn set_national_opt_out(
    services: &Services,
    patient: String,
    opted_out: bool,
) -> anyhow::Result<SetNationalOptOutResponse> {
    services
        .consent()?
        .set_national_opt_out(bearer(
            SetNationalOptOutRequest {
                patient_id: patient,
                opted_out,
            },
            services.token()?,
        )?)
        .await
        .grpc()
}

pub async fn run(services: &Services, command: DirectiveCommand) -> anyhow::Result<()> {
    match command {
        DirectiveCommand::Record(args) => print(&record(services, args).await?),
        DirectiveCommand::Revoke { patient, directive } => {
            print(&revoke(services, patient, directive).await?);
        }
        DirectiveCommand::List { patient, history } => {
            let mut directives = vec![];
            let mut page_token = String::new();
            loop {
                let page = services
                    .consent()?
                    .list_directives(bearer(
                        ListDirectivesRequest {
                            patient_id: patient.clone(),
                            page_size: 100,
                            page_token,
                            include_history: history,
                        },
                        services.token()?,
                    )?)
                    .await
                    .grpc()?;
                directives.extend(page.directives);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if directives.is_empty() {
                out!("no directives in force for this patient");
            }
            for (i, directive) in directives.iter().enumerate() {
                if i > 0 {
                    out!();
                }
                print(directive);
            }
        }
        DirectiveCommand::OptOut { patient, withdraw } => {
            let response = set_national_opt_out(services, patient, !withdraw).await?;
            out!(
                "National Data Opt-out: {}",
                if response.opted_out {
                    "registered"
                } else {
                    "not registered"
                }
            );
            if let Some(directive) = &response.directive {
                out!();
                print(directive);
            }
        }
    }
    Ok(())
}

/// What the directive says, and who recorded it from which source.
pub fn print(d: &Directive) {
    out!("directive_id: {}", d.directive_id);
    if d.kind == DirectiveKind::NationalOptOut as i32 {
        out!("kind:         National Data Opt-out");
    }
    out!("patient_id:   {}", d.patient_id);
    out!("effect:       {}", labels::effect(d.effect));
    out!("purposes:     {}", labels::purposes(&d.purposes));
    out!("organisation: {}", or_any(&d.organisation_ods_code));
    if !d.staff_principal_id.is_empty() {
        out!("staff:        {}", d.staff_principal_id);
    }
    out!("staff_role:   {}", or_any(&d.staff_role));
    out!("categories:   {}", labels::categories(&d.categories));
    if !d.note.is_empty() {
        out!("note:         {}", d.note);
    }
    out!("created:      {}", labels::time(d.create_time.as_ref()));
    let at = if d.recorded_by_ods_code.is_empty() {
        String::new()
    } else {
        format!(" at {}", d.recorded_by_ods_code)
    };
    out!(
        "recorded_by:  {}{at} ({})",
        d.recorded_by,
        labels::directive_source(d.source)
    );
    if d.revoke_time.is_some() {
        out!(
            "revoked:      {} by {}",
            labels::time(d.revoke_time.as_ref()),
            d.revoked_by
        );
    }
}

fn or_any(value: &str) -> &str {
    if value.is_empty() { "any" } else { value }
}
