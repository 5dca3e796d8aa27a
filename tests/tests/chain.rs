//! The walking skeleton's chain, end to end over real sockets with the four
//! real services: a patient is registered once → a clinician gets a token →
//! the practice has a care relationship → it writes a record → a read is
//! consent-checked and audited → the access report shows it. And every
//! denial on the way. Runs on SQLite, and on PostgreSQL when
//! SHAREDCARE_TEST_DATABASE_URL is set.

use sharedcare_kit::testing::{TestAuthority, TestDatabase, with_token};
use sharedcare_proto::{
    audit::v1::{self as audit, Action, Outcome, audit_service_client::AuditServiceClient},
    common::v1::PrincipalKind,
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

struct Clinician {
    token: String,
}

async fn clinician(p: &Platform, admin: &str, ods: &str) -> Clinician {
    let mut identity = IdentityServiceClient::new(p.identity.channel.clone());
    identity
        .create_organisation(with_token(
            identity::CreateOrganisationRequest {
                ods_code: ods.into(),
                name: format!("Practice {ods}"),
            },
            admin,
        ))
        .await
        .expect("organisation created");
    let created = identity
        .create_principal(with_token(
            identity::CreatePrincipalRequest {
                kind: PrincipalKind::Staff as i32,
                display_name: format!("GP at {ods}"),
                organisation_ods_code: ods.into(),
                role: "R8000".into(),
                scopes: vec![],
            },
            admin,
        ))
        .await
        .expect("staff principal created")
        .into_inner();
    let client_id = created.principal.expect("principal").client_id;
    Clinician {
        token: p.token(&client_id, &created.client_secret).await,
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

    // Two practices, a clinician at each.
    let ours = clinician(&p, &admin, "A81001").await;
    let theirs = clinician(&p, &admin, "B82002").await;

    // A patient is registered once.
    let register = || identity::RegisterPatientRequest {
        nhs_number: NHS_NUMBER.into(),
        demographics: Some(identity::Demographics {
            given_names: vec!["Jane".into()],
            family_name: "Smith".into(),
            birth_date: "1980-02-29".into(),
            gender: identity::Gender::Female as i32,
            postcode: "LS1 4AP".into(),
        }),
    };
    let registered = identity
        .register_patient(with_token(register(), &ours.token))
        .await
        .expect("registered")
        .into_inner();
    assert!(registered.created);
    let patient_id = registered.patient.expect("patient").patient_id;
    let again = identity
        .register_patient(with_token(register(), &theirs.token))
        .await
        .expect("registered again")
        .into_inner();
    assert!(!again.created, "details are given once");
    assert_eq!(again.patient.expect("patient").patient_id, patient_id);

    // An invalid NHS number is refused, naming the field.
    let mut bad = register();
    bad.nhs_number = "999 000 0019".into();
    let status = identity
        .register_patient(with_token(bad, &ours.token))
        .await
        .expect_err("check digit");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("nhs_number"),
        "{}",
        status.message()
    );

    // Our practice is the patient's registered GP.
    consent_client
        .record_care_relationship(with_token(
            consent::RecordCareRelationshipRequest {
                patient_id: patient_id.clone(),
                organisation_ods_code: "A81001".into(),
                kind: CareRelationshipKind::RegisteredGp as i32,
                start_time: None,
                end_time: None,
            },
            &ours.token,
        ))
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
            },
            &ours.token,
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
                },
                &ours.token,
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
    };
    let read = records_client
        .get_record(with_token(get(&created.record_id), &ours.token))
        .await
        .expect("permitted read")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(read.resource_json, created.resource_json);

    // The other practice has no relationship: denied, with the reason.
    let status = records_client
        .get_record(with_token(get(&created.record_id), &theirs.token))
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
        .get_record(with_token(get("no-such-record"), &ours.token))
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

    // The patient's access report shows the write, the read and the denial.
    let report = audit_client
        .access_report(with_token(
            audit::AccessReportRequest {
                patient_id: patient_id.clone(),
                page_size: 0,
                page_token: String::new(),
            },
            &admin,
        ))
        .await
        .expect("access report")
        .into_inner();
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

    // Fail closed: with audit down a read is not served...
    p.audit.shutdown().await;
    let status = records_client
        .get_record(with_token(get(&created.record_id), &ours.token))
        .await
        .expect_err("audit down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // ...and with consent down neither.
    p.consent.shutdown().await;
    let status = records_client
        .get_record(with_token(get(&created.record_id), &ours.token))
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
