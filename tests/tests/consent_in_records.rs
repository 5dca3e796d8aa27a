//! consent as records meets it, end to end over real sockets with the four
//! real services: a change of consent is honoured by the very next GetRecord
//! although records keeps consent's decisions; and break-glass — an A&E
//! clinician with no care relationship reads a patient's record by breaking
//! glass, with a reason; consent records a time-boxed grant; the read is
//! flagged in the audit trail, and the patient's access report says it was
//! emergency access; the privacy officer of the clinician's organisation
//! finds it in their list of break-glass accesses, and another
//! organisation's does not. A role not allowed break-glass is refused and
//! nothing is stored.

use sharedcare_kit::testing::with_token;
use sharedcare_proto::{
    audit::v1::{self as audit, Action, Outcome, audit_service_client::AuditServiceClient},
    consent::v1::{self as consent, consent_service_client::ConsentServiceClient},
    records::v1::{self as records, records_service_client::RecordsServiceClient},
};
use sharedcare_tests::{Backend, Platform};
use tonic::Code;

/// Every break-glass access `token` may list (its own organisation's for a
/// privacy officer).
async fn break_glass_accesses(p: &Platform, token: &str) -> Vec<audit::BreakGlassAccess> {
    let mut client = AuditServiceClient::new(p.audit.channel.clone());
    let mut accesses = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_break_glass_accesses(with_token(
                audit::ListBreakGlassAccessesRequest {
                    page_token,
                    ..Default::default()
                },
                token,
            ))
            .await
            .expect("listed")
            .into_inner();
        accesses.extend(page.accesses);
        if page.next_page_token.is_empty() {
            return accesses;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn a_change_of_consent_is_honoured_by_the_very_next_get_record() {
    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    p.organisation(&admin, "A81001").await;
    let gp_pas = p.pas(&admin, "A81001").await;
    let gp = p.staff(&admin, "A81001", "R8000").await;
    let (patient_id, created) = p.cared_for_patient(&gp_pas, &gp).await;
    let the_patient = p.patient(&admin, &patient_id).await;
    let mut records_client = RecordsServiceClient::new(p.records.channel.clone());
    let mut consent_client = ConsentServiceClient::new(p.consent.channel.clone());
    let get = || records::GetRecordRequest {
        patient_id: patient_id.clone(),
        record_id: created.record_id.clone(),
        purpose: 0,
        break_glass_reason: String::new(),
    };
    for round in 0..10 {
        // Warm: records now keeps the permit.
        for _ in 0..3 {
            records_client
                .get_record(with_token(get(), &gp))
                .await
                .unwrap_or_else(|s| panic!("round {round}: permitted: {s:?}"));
        }
        // The patient objects; the very next read is refused.
        let objection = consent_client
            .record_directive(with_token(
                consent::RecordDirectiveRequest {
                    directive: Some(consent::Directive {
                        patient_id: patient_id.clone(),
                        effect: consent::Effect::Deny as i32,
                        ..Default::default()
                    }),
                },
                &the_patient,
            ))
            .await
            .expect("recorded")
            .into_inner()
            .directive
            .expect("directive");
        let status = records_client
            .get_record(with_token(get(), &gp))
            .await
            .expect_err("the objection applies at once");
        assert_eq!(status.code(), Code::PermissionDenied, "round {round}");
        assert!(
            status.message().contains("PATIENT_DIRECTIVE_DENY"),
            "{}",
            status.message()
        );
        // Withdrawn: the very next read is permitted again.
        consent_client
            .revoke_directive(with_token(
                consent::RevokeDirectiveRequest {
                    directive_id: objection.directive_id,
                    patient_id: patient_id.clone(),
                },
                &the_patient,
            ))
            .await
            .expect("revoked");
    }
    records_client
        .get_record(with_token(get(), &gp))
        .await
        .expect("permitted once more");
    p.stop().await;
}

#[tokio::test]
async fn an_emergency_read_by_break_glass_is_granted_flagged_and_reported() {
    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    for ods in ["A81001", "RR8"] {
        p.organisation(&admin, ods).await;
    }
    let gp_pas = p.pas(&admin, "A81001").await;
    let gp = p.staff(&admin, "A81001", "R8000").await;
    // R8000 carries break_glass in identity's default role map; R8001 does
    // not.
    let ae = p.staff(&admin, "RR8", "R8000").await;
    let ae_clerk = p.staff(&admin, "RR8", "R8001").await;

    let (patient_id, created) = p.cared_for_patient(&gp_pas, &gp).await;
    let mut records_client = RecordsServiceClient::new(p.records.channel.clone());
    let get = |reason: &str| records::GetRecordRequest {
        patient_id: patient_id.clone(),
        record_id: created.record_id.clone(),
        purpose: 0,
        break_glass_reason: reason.into(),
    };

    // Without break-glass, A&E has no relationship.
    let status = records_client
        .get_record(with_token(get(""), &ae))
        .await
        .expect_err("no relationship");
    assert_eq!(status.code(), Code::PermissionDenied);

    // A role not allowed break-glass is refused, and no grant is stored.
    let status = records_client
        .get_record(with_token(get("unconscious, allergies unknown"), &ae_clerk))
        .await
        .expect_err("not their role's");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("break-glass"),
        "{}",
        status.message()
    );

    // The clinician breaks glass, with a reason.
    let read = records_client
        .get_record(with_token(get("unconscious, allergies unknown"), &ae))
        .await
        .expect("emergency read")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(read.resource_json, created.resource_json);
    // Within the grant, the next read needs no second reason; still flagged.
    records_client
        .get_record(with_token(get(""), &ae))
        .await
        .expect("within the grant");

    let the_patient = p.patient(&admin, &patient_id).await;
    let grants: Vec<consent::CareRelationship> =
        ConsentServiceClient::new(p.consent.channel.clone())
            .list_care_relationships(with_token(
                consent::ListCareRelationshipsRequest {
                    patient_id: patient_id.clone(),
                    ..Default::default()
                },
                &the_patient,
            ))
            .await
            .expect("listed")
            .into_inner()
            .relationships
            .into_iter()
            .filter(|r| r.kind == consent::CareRelationshipKind::BreakGlass as i32)
            .collect();
    assert_eq!(grants.len(), 1, "one grant, reused");
    assert_eq!(grants[0].organisation_ods_code, "RR8");
    assert_eq!(grants[0].reason, "unconscious, allergies unknown");

    // The patient's report: the grant and both reads, flagged, in words.
    let audit_client = AuditServiceClient::new(p.audit.channel.clone());
    let flagged = || async {
        audit_client
            .clone()
            .access_report(with_token(
                audit::AccessReportRequest {
                    patient_id: patient_id.clone(),
                    ..Default::default()
                },
                &the_patient,
            ))
            .await
            .expect("report")
            .into_inner()
            .lines
            .into_iter()
            .filter(|l| l.break_glass)
            .collect::<Vec<_>>()
    };
    let mut lines = flagged().await;
    for _ in 0..500 {
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        lines = flagged().await;
    }
    let seen: Vec<(i32, String, i32, String)> = lines
        .iter()
        .map(|l| {
            (
                l.action,
                l.resource_type.clone(),
                l.outcome,
                l.outcome_reason.clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                Action::Create as i32,
                "CareRelationship".into(),
                Outcome::Success as i32,
                "BREAK_GLASS".into()
            ),
            (
                Action::Read as i32,
                "AllergyIntolerance".into(),
                Outcome::Success as i32,
                "BREAK_GLASS".into()
            ),
            (
                Action::Read as i32,
                "AllergyIntolerance".into(),
                Outcome::Success as i32,
                "BREAK_GLASS_GRANT".into()
            ),
        ]
    );
    for line in &lines {
        assert_eq!(
            line.actor
                .as_ref()
                .map(|a| a.organisation_ods_code.as_str()),
            Some("RR8")
        );
        assert!(
            line.summary.starts_with("EMERGENCY ACCESS (break-glass): "),
            "{}",
            line.summary
        );
    }

    // RR8's privacy officer, told of it (NOTIFY_PRIVACY_OFFICER), lists
    // RR8's break-glass accesses: this patient's grant and both reads, the
    // very lines of the patient's report. Events arrive through outboxes.
    let rr8_officer = p.staff(&admin, "RR8", "privacy-officer").await;
    let mut listed = break_glass_accesses(&p, &rr8_officer).await;
    for _ in 0..500 {
        if listed.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        listed = break_glass_accesses(&p, &rr8_officer).await;
    }
    assert!(listed.iter().all(|a| a.patient_id == patient_id));
    let listed_lines: Vec<audit::AccessReportLine> =
        listed.into_iter().filter_map(|a| a.line).collect();
    assert_eq!(listed_lines, lines);
    // A81001's privacy officer: their staff never broke glass.
    let gp_officer = p.staff(&admin, "A81001", "privacy-officer").await;
    assert!(break_glass_accesses(&p, &gp_officer).await.is_empty());
    p.stop().await;
}
