//! The walking skeleton's chain, end to end over real sockets with the four
//! real services: a patient is registered once → a clinician gets a token →
//! the practice has a care relationship → it writes a record → a read is
//! consent-checked and audited → the access report shows it. And every
//! denial on the way. Runs on SQLite, and on PostgreSQL when
//! SHAREDCARE_TEST_DATABASE_URL is set.

use sharedcare_kit::testing::{TestAuthority, TestDatabase, with_token};
use sharedcare_proto::{
    audit::v1::{self as audit, Action, Outcome, audit_service_client::AuditServiceClient},
    common::v1::{PrincipalKind, RecordCategory},
    consent::v1::{
        self as consent, CareRelationshipKind, consent_service_client::ConsentServiceClient,
    },
    identity::v1::{self as identity, identity_service_client::IdentityServiceClient},
    records::v1::{self as records, records_service_client::RecordsServiceClient},
};
use sharedcare_tests::{Backend, Platform};
use tonic::Code;

/// A test-range NHS number with a valid check digit.
const NHS_NUMBER: &str = "999 000 0018";

/// A clinician (national RBAC R8000) at a new organisation, and that
/// organisation's patient administration system.
struct Practice {
    clinician: String,
    pas: String,
}

async fn practice(p: &Platform, admin: &str, ods: &str) -> Practice {
    p.organisation(admin, ods).await;
    Practice {
        clinician: p.staff(admin, ods, "R8000").await,
        pas: p.pas(admin, ods).await,
    }
}

fn observation(patient_id: &str) -> String {
    serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "364075005", "display": "Heart rate"}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "valueQuantity": {"value": 72, "unit": "beats/minute"}
    })
    .to_string()
}

async fn the_chain(backend: Backend) {
    let p = Platform::start(backend).await;
    let admin = p.admin_token().await;
    let mut identity = IdentityServiceClient::new(p.identity.channel.clone());
    let mut consent_client = ConsentServiceClient::new(p.consent.channel.clone());
    let mut records_client = RecordsServiceClient::new(p.records.channel.clone());
    let mut audit_client = AuditServiceClient::new(p.audit.channel.clone());

    // Two practices, a clinician and the practice's system at each.
    let ours = practice(&p, &admin, "A81001").await;
    let theirs = practice(&p, &admin, "B82002").await;

    // A patient is registered once.
    let register = || identity::RegisterPatientRequest {
        confirm_new_patient: false,
        nhs_number: NHS_NUMBER.into(),
        demographics: Some(identity::Demographics {
            given_names: vec!["Jane".into()],
            family_name: "Smith".into(),
            birth_date: "1980-02-29".into(),
            gender: identity::Gender::Female as i32,
            postcode: "LS1 4AP".into(),
            ..Default::default()
        }),
    };
    let registered = identity
        .register_patient(with_token(register(), &ours.clinician))
        .await
        .expect("registered")
        .into_inner();
    assert!(registered.created);
    let patient_id = registered.patient.expect("patient").patient_id;
    let again = identity
        .register_patient(with_token(register(), &theirs.clinician))
        .await
        .expect("registered again")
        .into_inner();
    assert!(!again.created, "details are given once");
    assert_eq!(again.patient.expect("patient").patient_id, patient_id);

    // The NHS number with someone else's details reveals nothing.
    let mut guess = register();
    guess
        .demographics
        .as_mut()
        .expect("demographics")
        .family_name = "Jones".into();
    let status = identity
        .register_patient(with_token(guess, &theirs.clinician))
        .await
        .expect_err("other details");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(!status.message().contains("Smith") && !status.message().contains("1980"));

    // An invalid NHS number is refused, naming the field.
    let mut bad = register();
    bad.nhs_number = "999 000 0019".into();
    let status = identity
        .register_patient(with_token(bad, &ours.clinician))
        .await
        .expect_err("check digit");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("nhs_number"),
        "{}",
        status.message()
    );

    // Our practice is the patient's registered GP: its own system says so.
    // A clinician cannot assert it, nor can the other practice's system.
    let relationship = |ods: &str| consent::RecordCareRelationshipRequest {
        patient_id: patient_id.clone(),
        organisation_ods_code: ods.into(),
        kind: CareRelationshipKind::RegisteredGp as i32,
        start_time: None,
        end_time: None,
        ..Default::default()
    };
    for (token, ods) in [(&ours.clinician, "A81001"), (&theirs.pas, "A81001")] {
        let status = consent_client
            .record_care_relationship(with_token(relationship(ods), token))
            .await
            .expect_err("not theirs to assert");
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    consent_client
        .record_care_relationship(with_token(relationship("A81001"), &ours.pas))
        .await
        .expect("care relationship recorded");

    // It writes a record: version 1, id and meta set by the server.
    let created = records_client
        .create_record(with_token(
            records::CreateRecordRequest {
                patient_id: patient_id.clone(),
                resource_json: observation(&patient_id),
                category: 0,
                purpose: 0,
                idempotency_key: String::new(),
            },
            &ours.clinician,
        ))
        .await
        .expect("record created")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(created.version, 1);
    let stored: serde_json::Value =
        serde_json::from_str(&created.resource_json).expect("stored JSON");
    assert_eq!(stored["id"], created.record_id.as_str());
    assert_eq!(stored["meta"]["versionId"], "1");
    assert_eq!(p.stored_record_count().await, 1);

    // Bad FHIR changes nothing.
    for (json, field) in [
        (
            "{\"resourceType\": \"Observation\",".to_owned(),
            "resource_json",
        ),
        (
            r#"{"resourceType":"Banana","subject":{"reference":"Patient/x"}}"#.to_owned(),
            "resource_json.resourceType",
        ),
        (
            observation("someone-else"),
            "resource_json.subject.reference",
        ),
    ] {
        let status = records_client
            .create_record(with_token(
                records::CreateRecordRequest {
                    patient_id: patient_id.clone(),
                    resource_json: json,
                    category: 0,
                    purpose: 0,
                    idempotency_key: String::new(),
                },
                &ours.clinician,
            ))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    assert_eq!(p.stored_record_count().await, 1, "nothing stored");

    // Our clinician reads it back.
    let get = |record_id: &str| records::GetRecordRequest {
        patient_id: patient_id.clone(),
        record_id: record_id.into(),
        purpose: 0,
        break_glass_reason: String::new(),
    };
    let read = records_client
        .get_record(with_token(get(&created.record_id), &ours.clinician))
        .await
        .expect("permitted read")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(read.resource_json, created.resource_json);

    // The other practice has no relationship: denied, with the reason.
    let status = records_client
        .get_record(with_token(get(&created.record_id), &theirs.clinician))
        .await
        .expect_err("no care relationship");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("NO_CARE_RELATIONSHIP"),
        "{}",
        status.message()
    );

    // An unknown record: NOT_FOUND for those who may look.
    let status = records_client
        .get_record(with_token(get("no-such-record"), &ours.clinician))
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);

    // Tokens: none, or signed by a key identity never published.
    let status = records_client
        .get_record(get(&created.record_id))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    let forged =
        TestAuthority::new().token(PrincipalKind::Staff, "A81001", "R8000", &["records.read"]);
    let status = records_client
        .get_record(with_token(get(&created.record_id), &forged))
        .await
        .expect_err("forged");
    assert_eq!(status.code(), Code::Unauthenticated);

    // The patient's access report — read by the patient — shows the
    // relationship, the write, the read and the denial. Admin cannot read it.
    let report_request = || audit::AccessReportRequest {
        patient_id: patient_id.clone(),
        page_size: 0,
        page_token: String::new(),
        with_proofs: false,
    };
    let status = audit_client
        .access_report(with_token(report_request(), &admin))
        .await
        .expect_err("admin sees no clinical data");
    assert_eq!(status.code(), Code::PermissionDenied);
    let the_patient = p.patient(&admin, &patient_id).await;
    // records ships its events through its outbox, moments after the
    // accesses were answered: wait until the last of them has arrived.
    let mut report = audit::AccessReportResponse::default();
    for _ in 0..500 {
        report = audit_client
            .access_report(with_token(report_request(), &the_patient))
            .await
            .expect("access report")
            .into_inner();
        let denial_arrived = report.lines.iter().any(|l| {
            l.outcome == Outcome::Denied as i32
                && l.outcome_reason == "NO_CARE_RELATIONSHIP"
                && l.actor
                    .as_ref()
                    .is_some_and(|a| a.organisation_ods_code == "B82002")
        });
        let assertion_arrived = report
            .lines
            .iter()
            .any(|l| l.resource_type == "CareRelationship");
        let demographics_arrived = report
            .lines
            .iter()
            .any(|l| l.resource_type == "Patient" && l.action == Action::Read as i32);
        if denial_arrived && assertion_arrived && demographics_arrived {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.resource_type == "CareRelationship" && l.action == Action::Create as i32),
        "the relationship's assertion is on the report"
    );
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.resource_type == "Patient" && l.action == Action::Read as i32),
        "demographic reads are on the report"
    );
    let lines: Vec<(i32, i32, String, String)> = report
        .lines
        .iter()
        .map(|l| {
            (
                l.action,
                l.outcome,
                l.actor
                    .as_ref()
                    .map(|a| a.organisation_ods_code.clone())
                    .unwrap_or_default(),
                l.outcome_reason.clone(),
            )
        })
        .collect();
    assert!(
        lines.contains(&(
            Action::Create as i32,
            Outcome::Success as i32,
            "A81001".into(),
            "CARE_RELATIONSHIP".into()
        )),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.0 == Action::Read as i32
            && l.1 == Outcome::Success as i32
            && l.2 == "A81001"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(
            Action::Read as i32,
            Outcome::Denied as i32,
            "B82002".into(),
            "NO_CARE_RELATIONSHIP".into()
        )),
        "{lines:?}"
    );

    // The patient reads their own record, and no one else's.
    let own = records_client
        .get_record(with_token(get(&created.record_id), &the_patient))
        .await
        .expect("the patient reads their own record")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(own.resource_json, created.resource_json);

    // The category comes from the content: an HIV diagnosis sent as
    // "general" is stored as sexual health...
    let hiv = serde_json::json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "86406008", "display": "Human immunodeficiency virus infection"}]},
        "subject": {"reference": format!("Patient/{patient_id}")}
    });
    let condition = records_client
        .create_record(with_token(
            records::CreateRecordRequest {
                patient_id: patient_id.clone(),
                resource_json: hiv.to_string(),
                category: RecordCategory::General as i32,
                purpose: 0,
                idempotency_key: String::new(),
            },
            &ours.clinician,
        ))
        .await
        .expect("condition created")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(condition.category, RecordCategory::SexualHealth as i32);
    // ...so the patient's objection to sharing sexual health with our
    // practice applies to it, and not to the heart rate.
    consent_client
        .record_directive(with_token(
            consent::RecordDirectiveRequest {
                directive: Some(consent::Directive {
                    patient_id: patient_id.clone(),
                    effect: consent::Effect::Deny as i32,
                    organisation_ods_code: "A81001".into(),
                    categories: vec![RecordCategory::SexualHealth as i32],
                    ..Default::default()
                }),
            },
            &the_patient,
        ))
        .await
        .expect("the patient objects");
    // The withheld record looks exactly like one that does not exist.
    let status = records_client
        .get_record(with_token(get(&condition.record_id), &ours.clinician))
        .await
        .expect_err("the patient objected");
    let absent = records_client
        .get_record(with_token(get("no-such-record"), &ours.clinician))
        .await
        .expect_err("absent");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        (status.code(), status.message()),
        (absent.code(), absent.message())
    );
    records_client
        .get_record(with_token(get(&created.record_id), &ours.clinician))
        .await
        .expect("the heart rate is still shared");

    // Fail closed: with audit down a read is served only while its event
    // can wait, durable, in records' outbox; once audit has been
    // unreachable longer than the bound (300 ms here), no access at all...
    p.audit.shutdown().await;
    records_client
        .get_record(with_token(get(&created.record_id), &ours.clinician))
        .await
        .expect("within the bound");
    let mut refused = None;
    for _ in 0..500 {
        match records_client
            .get_record(with_token(get(&created.record_id), &ours.clinician))
            .await
        {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    let status = refused.expect("refused once audit is down too long");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("audit"), "{}", status.message());
    // ...and with consent down neither.
    p.consent.shutdown().await;
    let status = records_client
        .get_record(with_token(get(&created.record_id), &ours.clinician))
        .await
        .expect_err("consent down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    p.stop().await;
}

#[tokio::test]
async fn the_chain_on_sqlite() {
    the_chain(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_chain_on_postgres() {
    let Some(db) = TestDatabase::postgres("the_chain_on_postgres").await else {
        return;
    };
    the_chain(Backend::Postgres(db)).await;
}
