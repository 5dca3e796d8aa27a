//! `sharedcare access-report`: who accessed a patient's record, when, why
//! and with what outcome, one line per access. Read by the patient
//! themselves (a patient token), a privacy officer (their organisation's
//! accesses) or a platform auditor.

use anyhow::anyhow;
use clap::Args;
use sharedcare_audit::auditor::check_report_line;
use sharedcare_proto::audit::v1::{AccessReportLine, AccessReportRequest};

use crate::output::out;
use crate::{
    commands::audit::VerifierKeyArg,
    connect::{Services, bearer},
    failure::GrpcResult,
    labels,
};

#[derive(Debug, Args)]
pub struct AccessReportArgs {
    /// Patient id.
    #[arg(long)]
    pub patient: String,
    /// Check every line against the audit log: that it says what its entry
    /// says and that the entry is in a tree head signed by the log's key.
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub key: VerifierKeyArg,
}

/// Calls AccessReport page by page until the last. With a verifier key,
/// asks for proofs and checks every page's signed head and every line.
pub async fn fetch(
    services: &Services,
    token: &str,
    patient: &str,
    verify_with: Option<&sharedcare_audit::domain::checkpoint::LogVerifierKey>,
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
                    with_proofs: verify_with.is_some(),
                },
                token,
            )?)
            .await
            .grpc()?;
        if let Some(key) = verify_with {
            let note = page.tree_head.as_ref().map(|h| h.checkpoint.as_str());
            let head = key
                .verify(note.unwrap_or_default())
                .map_err(|e| anyhow!("the report's tree head does NOT verify: {e}"))?;
            for line in &page.lines {
                check_report_line(line, &head)
                    .map_err(|e| anyhow!("the report does NOT verify: {e}"))?;
            }
        }
        lines.extend(page.lines);
        if page.next_page_token.is_empty() {
            return Ok(lines);
        }
        page_token = page.next_page_token;
    }
}

pub async fn run(services: &Services, args: AccessReportArgs) -> anyhow::Result<()> {
    let key = if args.verify {
        Some(args.key.load()?)
    } else {
        None
    };
    let lines = fetch(services, services.token()?, &args.patient, key.as_ref()).await?;
    print(&lines);
    if key.is_some() {
        out!(
            "verified: each of the {} lines is an entry of the audit log, in a tree head signed by its key",
            lines.len()
        );
    }
    Ok(())
}

/// One line per access, oldest first; says so when there are none.
pub fn print(lines: &[AccessReportLine]) {
    if lines.is_empty() {
        out!("no accesses recorded for this patient");
        return;
    }
    for line in lines {
        out!("{}", format_line(line));
    }
}

/// When, then the line in words, e.g. `2026-11-25 20:00:01  Dr Asha Patel,
/// Clinical Practitioner, at Leeds General Infirmary (RR8) looked at an
/// Observation for the patient's care — allowed: they are caring for the
/// patient.`
pub fn format_line(line: &AccessReportLine) -> String {
    format!(
        "{:<20}  {}",
        labels::time(line.occur_time.as_ref()),
        line.summary
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_its_time_and_its_sentence() {
        let line = AccessReportLine {
            summary: "You looked at an Observation — allowed.".into(),
            ..AccessReportLine::default()
        };
        let text = format_line(&line);
        assert!(
            text.ends_with("  You looked at an Observation — allowed."),
            "{text}"
        );
    }
}
