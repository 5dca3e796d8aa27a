//! What each scenario loads, and the setup that makes it an authorised
//! call: through the real APIs, as `sharedcare demo` does, admin (secret
//! from bootstrap.toml) creates a practice, its PAS and a clinician; the
//! PAS registers a patient and asserts the practice is their GP; the
//! clinician writes one Observation. Every platform scenario then calls as
//! that clinician, except `audit-append`, which appends as the records
//! service (its secret is in bootstrap.toml too) an event about the
//! clinician reading the patient's record.

use std::path::Path;

use anyhow::Context;
use clap::ValueEnum;
use serde::Serialize;
use sharedcare_proto::{
    audit::v1::{Action, AuditEvent, Outcome},
    common::v1::{Actor, PrincipalKind, Purpose},
    identity::v1::GetPatientRequest,
    records::v1::{CreateRecordRequest, GetRecordRequest, SearchRequest},
};

use super::rpc::{RawInsert, Rpc, authorization};
use crate::{
    bootstrap::{self, ADMIN_CLIENT_ID, RECORDS_CLIENT_ID},
    commands::{
        care, org,
        patient::{self, GenderArg, RegisterArgs},
        principal::{self, CreatePrincipalArgs, KindArg},
        record, token,
    },
    connect::Services,
    demo::nhs,
    failure::status_code,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// An authorised GetRecord of one Observation (token, consent, store, audit).
    GetRecord,
    /// CreateRecord of a small Observation.
    CreateRecord,
    /// GetPatient (demographics) as the clinician.
    GetPatient,
    /// audit's Append of one event, as the records service.
    AuditAppend,
    /// audit's AppendBatch of 50 events, as records' outbox relay sends
    /// them (events/s = 50 × calls/s).
    AuditAppendBatch,
    /// Search by patient and type (Condition), first page of 20, over the
    /// records `--seed-records` adds to the bench patient first (mixed types
    /// and dates). Compare its calls/s to get-record's.
    Search,
    /// create-record's yardstick: a raw sqlx loop on one connection, one
    /// transaction per record row and its outbox row, in records' schema
    /// in a fresh SQLite file beside the data dir (WAL, synchronous FULL,
    /// as records runs). No gRPC: compare create-record's calls/s to it.
    SqliteInsert,
    /// Only the bench's own echo server.
    Echo,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::GetRecord => "get-record",
            Scenario::CreateRecord => "create-record",
            Scenario::GetPatient => "get-patient",
            Scenario::Search => "search",
            Scenario::AuditAppend => "audit-append",
            Scenario::AuditAppendBatch => "audit-append-batch",
            Scenario::SqliteInsert => "sqlite-insert",
            Scenario::Echo => "echo",
        }
    }

    /// The URL the scenario loads.
    pub fn target(self, services: &Services) -> Option<&str> {
        match self {
            Scenario::GetRecord | Scenario::CreateRecord | Scenario::Search => {
                Some(&services.records_url)
            }
            Scenario::GetPatient => Some(&services.identity_url),
            Scenario::AuditAppend | Scenario::AuditAppendBatch => Some(&services.audit_url),
            // Not a call: its workers ignore the connection they are given.
            Scenario::SqliteInsert => Some(&services.records_url),
            Scenario::Echo => None,
        }
    }

    /// The call, given the fixture (every scenario but echo needs one) and
    /// the data dir (beside which sqlite-insert keeps its file).
    pub async fn rpc(self, fixture: &Fixture, data_dir: &Path) -> anyhow::Result<Rpc> {
        let clinician = authorization(&fixture.clinician_token)?;
        let read_event = AuditEvent {
            actor: Some(fixture.clinician.clone()),
            patient_id: fixture.patient_id.clone(),
            action: Action::Read as i32,
            resource_type: "Observation".into(),
            record_id: fixture.record_id.clone(),
            purpose: Purpose::DirectCare as i32,
            outcome: Outcome::Success as i32,
            source_service: RECORDS_CLIENT_ID.into(),
            ..AuditEvent::default()
        };
        Ok(match self {
            Scenario::Echo => Rpc::Echo,
            Scenario::SqliteInsert => Rpc::SqliteInsert(std::sync::Arc::new(
                RawInsert::open(
                    data_dir,
                    &fixture.patient_id,
                    observation(&fixture.patient_id).into_bytes(),
                    read_event,
                )
                .await?,
            )),
            Scenario::GetRecord => Rpc::GetRecord {
                auth: clinician,
                request: GetRecordRequest {
                    patient_id: fixture.patient_id.clone(),
                    record_id: fixture.record_id.clone(),
                    purpose: Purpose::Unspecified as i32,
                    break_glass_reason: String::new(),
                },
            },
            Scenario::CreateRecord => Rpc::CreateRecord {
                auth: clinician,
                request: CreateRecordRequest {
                    patient_id: fixture.patient_id.clone(),
                    resource_json: observation(&fixture.patient_id),
                    category: 0,
                    purpose: Purpose::Unspecified as i32,
                    idempotency_key: String::new(),
                },
            },
            Scenario::Search => Rpc::Search {
                auth: clinician,
                request: SearchRequest {
                    patient_id: fixture.patient_id.clone(),
                    resource_types: vec!["Condition".into()],
                    page_size: 20,
                    ..SearchRequest::default()
                },
            },
            Scenario::GetPatient => Rpc::GetPatient {
                auth: clinician,
                request: GetPatientRequest {
                    patient_id: fixture.patient_id.clone(),
                },
            },
            Scenario::AuditAppend => Rpc::AuditAppend {
                auth: authorization(&fixture.records_token)?,
                event: Box::new(read_event),
            },
            Scenario::AuditAppendBatch => Rpc::AuditAppendBatch {
                auth: authorization(&fixture.records_token)?,
                event: Box::new(read_event),
                events: 50,
            },
        })
    }
}

/// The bench practice: created on the first run, reused after.
const PRACTICE: (&str, &str) = ("BENCH1", "sharedcare bench practice");
const CLINICIAN_ROLE: &str = "R8000";
const PAS_SCOPES: [&str; 6] = [
    "patients.read",
    "patients.write",
    "records.read",
    "records.write",
    "consent.read",
    "consent.write",
];

/// What the setup made: a patient the clinician may read and write, one
/// Observation of theirs, and the tokens to call with.
#[derive(Debug)]
pub struct Fixture {
    pub patient_id: String,
    pub record_id: String,
    pub clinician: Actor,
    pub clinician_token: String,
    pub records_token: String,
}

async fn issue(services: &Services, client_id: String, secret: String) -> anyhow::Result<String> {
    token::issue(services, &client_id, &secret, vec![], None)
        .await
        .map(|issued| issued.access_token)
        .with_context(|| format!("issuing a token for {client_id}"))
}

/// admin (from dev's bootstrap file), with the bench practice in place,
/// and the records service's token.
async fn practice(services: &Services, data_dir: &Path) -> anyhow::Result<(Services, String)> {
    let credentials = bootstrap::read(&data_dir.join(bootstrap::FILE_NAME))?;
    let admin = services.with_token(
        issue(
            services,
            ADMIN_CLIENT_ID.into(),
            credentials.admin_secret.clone(),
        )
        .await?,
    );
    let records_token = issue(
        services,
        RECORDS_CLIENT_ID.into(),
        credentials.records_secret.clone(),
    )
    .await?;
    let (ods, name) = PRACTICE;
    match org::create(&admin, ods, name).await {
        Ok(_) => {}
        Err(e) if status_code(&e) == Some(tonic::Code::AlreadyExists) => {}
        Err(e) => return Err(e.context(format!("creating organisation {ods}"))),
    }
    Ok((admin, records_token))
}

fn principal_args(kind: KindArg, role: &str, name: &str, scopes: &[&str]) -> CreatePrincipalArgs {
    CreatePrincipalArgs {
        kind,
        ods: PRACTICE.0.to_owned(),
        role: role.to_owned(),
        name: name.to_owned(),
        patient: String::new(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        purposes: vec![],
    }
}

/// A new PAS of the bench practice: its own idempotency keys, so an import
/// it makes stores everything anew.
async fn new_pas(services: &Services, admin: &Services, name: &str) -> anyhow::Result<Services> {
    let pas = principal::create(
        admin,
        principal_args(KindArg::Application, "", name, &PAS_SCOPES),
    )
    .await
    .context("creating the bench PAS")?;
    let client_id = pas.principal.unwrap_or_default().client_id;
    Ok(services.with_token(issue(services, client_id, pas.client_secret).await?))
}

/// The bench practice's ODS code and a fresh PAS of it, for the import
/// comparison.
pub async fn importer(
    services: &Services,
    data_dir: &Path,
) -> anyhow::Result<(&'static str, Services)> {
    let (admin, _) = practice(services, data_dir).await?;
    let pas = new_pas(services, &admin, "Bench importer").await?;
    Ok((PRACTICE.0, pas))
}

/// Sets up through the real APIs; says what it made on standard error.
pub async fn prepare(services: &Services, data_dir: &Path) -> anyhow::Result<Fixture> {
    let (admin, records_token) = practice(services, data_dir).await?;
    let ods = PRACTICE.0;
    let pas = new_pas(services, &admin, "Bench PAS").await?;
    let clinician = principal::create(
        &admin,
        principal_args(KindArg::Staff, CLINICIAN_ROLE, "Dr Bench", &[]),
    )
    .await
    .context("creating the bench clinician")?;
    let clinician_principal = clinician.principal.unwrap_or_default();
    let clinician_token = issue(
        services,
        clinician_principal.client_id.clone(),
        clinician.client_secret,
    )
    .await?;

    let nhs_number = nhs::random_test_number();
    let registered = patient::register(
        &pas,
        RegisterArgs {
            birth_date: nhs::birth_date_for(&nhs_number),
            nhs_number,
            given: vec!["Bench".into()],
            family: "Patient".into(),
            gender: Some(GenderArg::Unknown),
            postcode: "LS1 4AP".into(),
        },
    )
    .await
    .context("registering the bench patient")?;
    let patient_id = registered.patient.unwrap_or_default().patient_id;
    care::record(
        &pas,
        care::CareRelationshipArgs {
            patient: patient_id.clone(),
            ods: ods.to_owned(),
            kind: care::KindArg::RegisteredGp,
            staff: String::new(),
            team: String::new(),
        },
    )
    .await
    .context("recording the bench care relationship")?;
    let created = record::create(
        services,
        &clinician_token,
        &patient_id,
        observation(&patient_id),
        None,
        None,
        None,
    )
    .await
    .context("creating the bench Observation")?;
    eprintln!(
        "setup: practice {ods}, clinician {} ({CLINICIAN_ROLE}), patient {patient_id} \
         (registered GP {ods}), Observation {}",
        clinician_principal.principal_id, created.record_id
    );
    Ok(Fixture {
        patient_id,
        record_id: created.record_id,
        clinician: Actor {
            principal_id: clinician_principal.principal_id,
            kind: PrincipalKind::Staff as i32,
            organisation_ods_code: ods.to_owned(),
            role: CLINICIAN_ROLE.to_owned(),
            patient_id: String::new(),
            ..Actor::default()
        },
        clinician_token,
        records_token,
    })
}

/// Adds `count` records of mixed types and dates to the fixture's patient
/// through CreateRecord, 64 at a time, for the search scenario.
pub async fn seed(services: &Services, fixture: &Fixture, count: u64) -> anyhow::Result<()> {
    use futures::StreamExt;
    let started = std::time::Instant::now();
    let records = services.records()?;
    let auth = authorization(&fixture.clinician_token)?;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..count)
        .map(|n| {
            let mut records = records.clone();
            let mut request = tonic::Request::new(CreateRecordRequest {
                patient_id: fixture.patient_id.clone(),
                resource_json: seeded(&fixture.patient_id, n),
                ..CreateRecordRequest::default()
            });
            request.metadata_mut().insert("authorization", auth.clone());
            async move {
                records
                    .create_record(request)
                    .await
                    .map(drop)
                    .map_err(|s| anyhow::anyhow!("seeding: {}", s.message()))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    eprintln!(
        "setup: seeded {count} records for the bench patient in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The `n`th seeded resource: a quarter each of Observation, Condition,
/// Procedure and Immunization, dated over 20 years.
fn seeded(patient_id: &str, n: u64) -> String {
    let day = chrono::NaiveDate::from_ymd_opt(2005, 1, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new(n % 7300)))
        .map(|d| d.to_string())
        .unwrap_or_default();
    let subject = serde_json::json!({ "reference": format!("Patient/{patient_id}") });
    let code = |system: &str, code: String| serde_json::json!({"coding": [{"system": system, "code": code}]});
    let resource = match n % 4 {
        0 => serde_json::json!({"resourceType": "Observation", "status": "final",
            "code": code("http://loinc.org", format!("{}-{}", 1000 + n % 50, n % 10)),
            "subject": subject, "effectiveDateTime": day}),
        1 => serde_json::json!({"resourceType": "Condition",
            "code": code("http://snomed.info/sct", format!("{}", 400_000 + n % 200)),
            "subject": subject, "onsetDateTime": day}),
        2 => serde_json::json!({"resourceType": "Procedure", "status": "completed",
            "code": code("http://snomed.info/sct", format!("{}", 700_000 + n % 100)),
            "subject": subject, "performedDateTime": day}),
        _ => serde_json::json!({"resourceType": "Immunization", "status": "completed",
            "vaccineCode": code("http://hl7.org/fhir/sid/cvx", format!("{}", n % 40)),
            "patient": subject, "occurrenceDateTime": day}),
    };
    resource.to_string()
}

/// A small heart-rate Observation for `patient_id`.
fn observation(patient_id: &str) -> String {
    serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [{
                "system": "http://snomed.info/sct",
                "code": "364075005",
                "display": "Heart rate"
            }]
        },
        "subject": { "reference": format!("Patient/{patient_id}") },
        "effectiveDateTime": "2025-01-15T09:30:00Z",
        "valueQuantity": {
            "value": 72,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min"
        }
    })
    .to_string()
}
