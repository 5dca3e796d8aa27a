//! One request is one trace: an in-process OTLP receiver collects what the
//! four real services export, and a clinician's GetRecord is found as one
//! trace spanning records (the request), consent (its decision), records'
//! storage and audit (storing the access's event, after the outbox relay
//! carried it) — with no patient identifier, name or birth date anywhere
//! in what was exported.
//!
//! Its own test binary: telemetry is installed once per process.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use sharedcare_kit::{
    config::{LogFormat, TelemetryConfig},
    testing::{ExportedSpan as Exported, OtlpReceiver, with_token},
};
use sharedcare_proto::{
    consent::v1::{self as consent, consent_service_client::ConsentServiceClient},
    identity::v1::{self as identity, identity_service_client::IdentityServiceClient},
    records::v1::{self as records, records_service_client::RecordsServiceClient},
};
use sharedcare_tests::{Backend, Platform};

const NHS: &str = "9990000018";
const FAMILY: &str = "Tracewell";
const GIVEN: &str = "Ottoline";
const BIRTH: &str = "1957-03-09";

// Several threads: the exporter's flush blocks its caller while the
// receiver, on this runtime too, takes the spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_get_record_is_one_trace_across_records_consent_and_audit() {
    let (receiver, url) = OtlpReceiver::start().await;
    let telemetry = Arc::new(
        sharedcare_kit::telemetry::init(
            "platform",
            &TelemetryConfig {
                otlp_endpoint: Some(url),
                ..quiet()
            },
        )
        .expect("telemetry"),
    );

    let p = Platform::start(Backend::Sqlite).await;
    let admin = p.admin_token().await;
    p.organisation(&admin, "A81001").await;
    let pas = p.pas(&admin, "A81001").await;
    let clinician = p.staff(&admin, "A81001", "R8000").await;
    let patient_id = IdentityServiceClient::new(p.identity.channel.clone())
        .register_patient(with_token(
            identity::RegisterPatientRequest {
                nhs_number: NHS.into(),
                demographics: Some(identity::Demographics {
                    given_names: vec![GIVEN.into()],
                    family_name: FAMILY.into(),
                    birth_date: BIRTH.into(),
                    gender: identity::Gender::Female as i32,
                    ..Default::default()
                }),
                confirm_new_patient: false,
            },
            &pas,
        ))
        .await
        .expect("registered")
        .into_inner()
        .patient
        .expect("patient")
        .patient_id;
    ConsentServiceClient::new(p.consent.channel.clone())
        .record_care_relationship(with_token(
            consent::RecordCareRelationshipRequest {
                patient_id: patient_id.clone(),
                organisation_ods_code: "A81001".into(),
                kind: consent::CareRelationshipKind::RegisteredGp as i32,
                ..Default::default()
            },
            &pas,
        ))
        .await
        .expect("relationship");
    let mut records_client = RecordsServiceClient::new(p.records.channel.clone());
    let record_id = records_client
        .create_record(with_token(
            records::CreateRecordRequest {
                patient_id: patient_id.clone(),
                resource_json: serde_json::json!({
                    "resourceType": "Observation",
                    "status": "final",
                    "subject": {"reference": format!("Patient/{patient_id}")},
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
                    "valueQuantity": {"value": 72, "unit": "beats/minute"}
                })
                .to_string(),
                ..Default::default()
            },
            &pas,
        ))
        .await
        .expect("written")
        .into_inner()
        .record
        .expect("record")
        .record_id;

    // The clinician's first read: records asks consent (nothing kept for
    // this actor yet), reads its store, and its outbox carries the access's
    // event to audit.
    records_client
        .get_record(with_token(
            records::GetRecordRequest {
                patient_id: patient_id.clone(),
                record_id,
                ..Default::default()
            },
            &clinician,
        ))
        .await
        .expect("read");

    let is = |span: &Exported, service: &str, method: &str| {
        span.attributes.get("rpc.service").map(String::as_str) == Some(service)
            && span.attributes.get("rpc.method").map(String::as_str) == Some(method)
    };
    let mut trace = Vec::new();
    for _ in 0..100 {
        let flushing = telemetry.clone();
        tokio::task::spawn_blocking(move || flushing.flush())
            .await
            .expect("flushed");
        let spans = receiver.spans();
        let read = spans
            .iter()
            .find(|s| is(s, "sharedcare.records.v1.RecordsService", "GetRecord"));
        if let Some(read) = read {
            trace = spans
                .iter()
                .filter(|s| s.trace_id == read.trace_id)
                .cloned()
                .collect();
            if trace.iter().any(|s| s.name == "audit store event") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: BTreeSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
    let read = trace
        .iter()
        .find(|s| is(s, "sharedcare.records.v1.RecordsService", "GetRecord"))
        .unwrap_or_else(|| panic!("no GetRecord span: {names:?}"));
    assert_eq!(
        read.name, "sharedcare.records.v1.RecordsService/GetRecord",
        "named {{rpc.service}}/{{rpc.method}}"
    );
    assert_eq!(
        read.attributes.get("rpc.system").map(String::as_str),
        Some("grpc")
    );
    assert_eq!(
        read.attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("0")
    );
    const SERVER: i32 = 2;
    const CLIENT: i32 = 3;
    assert_eq!(read.kind, SERVER);
    let evaluate = |kind: i32| {
        trace
            .iter()
            .find(|s| is(s, "sharedcare.consent.v1.ConsentService", "Evaluate") && s.kind == kind)
            .unwrap_or_else(|| panic!("consent's decision is not in the trace: {names:?}"))
    };
    let (asked, decided) = (evaluate(CLIENT), evaluate(SERVER));
    // Walks up from `span` to the trace's root: whether `ancestor` is on
    // the way.
    let descends = |span: &Exported, ancestor: &Exported| {
        let mut parent = span.parent_span_id.clone();
        while !parent.is_empty() {
            if parent == ancestor.span_id {
                return true;
            }
            parent = trace
                .iter()
                .find(|s| s.span_id == parent)
                .map(|s| s.parent_span_id.clone())
                .unwrap_or_default();
        }
        false
    };
    assert!(
        descends(asked, read),
        "records' call to consent is within its request"
    );
    assert_eq!(
        decided.parent_span_id, asked.span_id,
        "consent's span continues records' call"
    );
    assert!(
        trace.iter().any(|s| s.name.starts_with("sea_orm.")),
        "storage spans in the trace: {names:?}"
    );
    let stored = trace
        .iter()
        .find(|s| s.name == "audit store event")
        .unwrap_or_else(|| panic!("audit's storing of the event is not in the trace: {names:?}"));
    assert!(
        descends(stored, read),
        "audit's storing of the access's event is within the request's trace tree"
    );

    // Nothing personal in anything exported, from any trace.
    let everything = receiver.spans();
    let secrets = [NHS, FAMILY, GIVEN, BIRTH, patient_id.as_str(), "Heart rate"];
    for span in &everything {
        let exported = format!("{} {:?}", span.name, span.attributes);
        for secret in secrets {
            assert!(
                !exported.contains(secret),
                "span {} carries {secret}: {exported}",
                span.name
            );
        }
    }
    p.stop().await;
}

/// Logs at warn, as JSON; no export.
fn quiet() -> TelemetryConfig {
    TelemetryConfig {
        log_level: "warn".into(),
        log_format: LogFormat::Json,
        otlp_endpoint: None,
        metrics_addr: None,
    }
}
