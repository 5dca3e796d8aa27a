//! `sharedcare access-report`: who accessed a patient's record, when, why
//! and with what outcome, one line per access. Read by the patient
//! themselves (a patient token), a privacy officer (their organisation's
//! accesses) or a platform auditor.

use clap::Args;
use sharedcare_proto::audit::v1::{AccessReportLine, AccessReportRequest};

use crate::output::out;
use crate::{
    connect::{Services, bearer},
    failure::GrpcResult,
    labels,
};

#[derive(Debug, Args)]
pub struct AccessReportArgs {
    /// Patient id.
    #[arg(long)]
    pub patient: String,
}

/// Calls AccessReport page by page until the last.
pub async fn fetch(
    services: &Services,
    token: &str,
    patient: &str,
) -> anyhow::Result<Vec<AccessReportLine>> {
    let mut client = services.audit()?;
    let mut lines = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .access_report(bearer(
                AccessReportRequest {
                    patient_id: patient.to_owned(),
                    page_size: 500,
                    page_token,
                },
                token,
            )?)
            .await
            .grpc()?;
        lines.extend(page.lines);
        if page.next_page_token.is_empty() {
            return Ok(lines);
        }
        page_token = page.next_page_token;
    }
}

pub async fn run(services: &Services, args: AccessReportArgs) -> anyhow::Result<()> {
    let lines = fetch(services, services.token()?, &args.patient).await?;
    print(&lines);
    Ok(())
}

/// A header and one line per access; says so when there are none.
pub fn print(lines: &[AccessReportLine]) {
    if lines.is_empty() {
        out!("no accesses recorded for this patient");
        return;
    }
    out!(
        "{:<20}  {:<36}  {:<6}  {:<11}  {:<24}  {:<14}  {:<7}  REASON",
        "TIME",
        "ACTOR",
        "ORG",
        "ROLE",
        "ACTION",
        "PURPOSE",
        "OUTCOME"
    );
    for line in lines {
        out!("{}", format_line(line));
    }
}

/// time, actor principal, organisation, role, action, purpose, outcome,
/// reason. An actor without an organisation or role (the patient) shows `-`
/// and its kind.
pub fn format_line(line: &AccessReportLine) -> String {
    let actor = line.actor.clone().unwrap_or_default();
    let organisation = if actor.organisation_ods_code.is_empty() {
        "-".to_owned()
    } else {
        actor.organisation_ods_code
    };
    let role = if actor.role.is_empty() {
        labels::principal_kind(actor.kind).to_lowercase()
    } else {
        actor.role
    };
    let mut action = labels::action(line.action);
    if !line.resource_type.is_empty() {
        action = format!("{action} {}", line.resource_type);
    }
    let mut reason = line.outcome_reason.clone();
    if line.break_glass {
        reason = format!("{reason} [BREAK-GLASS]");
    }
    format!(
        "{:<20}  {:<36}  {:<6}  {:<11}  {:<24}  {:<14}  {:<7}  {}",
        labels::time(line.occur_time.as_ref()),
        actor.principal_id,
        organisation,
        role,
        action,
        labels::purpose(line.purpose),
        labels::outcome(line.outcome),
        reason,
    )
}

#[cfg(test)]
mod tests {
    use sharedcare_proto::{
        audit::v1::{Action, Outcome},
        common::v1::{Actor, PrincipalKind, Purpose},
    };

    use super::*;

    #[test]
    fn a_patients_own_access_shows_its_kind_and_no_organisation() {
        let line = AccessReportLine {
            actor: Some(Actor {
                principal_id: "p-1".into(),
                kind: PrincipalKind::Patient as i32,
                patient_id: "pat".into(),
                ..Actor::default()
            }),
            action: Action::Create as i32,
            resource_type: "Directive".into(),
            purpose: Purpose::PatientAccess as i32,
            outcome: Outcome::Success as i32,
            outcome_reason: "PATIENT".into(),
            ..AccessReportLine::default()
        };
        let text = format_line(&line);
        assert!(
            text.contains("  -       patient      CREATE Directive"),
            "{text}"
        );
        assert!(text.contains("PATIENT_ACCESS  SUCCESS  PATIENT"), "{text}");
    }
}
