//! What each scenario loads, and the setup that makes it an authorised
//! call: through the real APIs, as `sharedcare demo` does, admin (secret
//! from bootstrap.toml) creates a practice, its PAS and a clinician; the
//! PAS registers a patient and asserts the practice is their GP; the
//! clinician writes one Observation. Every platform scenario then calls as
//! that clinician, except `audit-append`, which appends as the records
//! service (its secret is in bootstrap.toml too) an event about the
//! clinician reading the patient's record, and `trace-patient`, which
//! traces as a staff member in the `patient-tracer` role (identity's role
//! map must give it `trace_patients`; `sharedcare dev`'s does) the people
//! the PAS registered first (see [`seed_patients`]).

use std::{path::Path, sync::Arc};

use anyhow::{Context, bail};
use clap::ValueEnum;
use futures::StreamExt;
use serde::Serialize;
use sharedcare_proto::{
    audit::v1::{Action, AuditEvent, Outcome},
    common::v1::{Actor, PrincipalKind, Purpose},
    identity::v1::{
        GetPatientRequest, RegisterOutcome, RegisterPatientRequest, TracePatientRequest,
        identity_service_client::IdentityServiceClient,
    },
    records::v1::{CreateRecordRequest, GetRecordRequest, SearchRequest},
};
use tonic::transport::Channel;

use super::{
    people,
    rpc::{Authorization, RawInsert, Rpc, authorization},
};
use crate::{
    bootstrap::{self, ADMIN_CLIENT_ID, RECORDS_CLIENT_ID},
    commands::{
        care, org,
        patient::{self, GenderArg, RegisterArgs},
        principal::{self, CreatePrincipalArgs, KindArg},
        record, token,
    },
    connect::Services,
    demo::{self, nhs},
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
    /// TracePatient by demographics as a staff member whose role has
    /// `trace_patients`: a registered person asked about with a nickname or
    /// a typo and no NHS number, among the `--seed-patients` people
    /// registered first. Read against get-patient, which runs with it.
    TracePatient,
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
            Scenario::TracePatient => "trace-patient",
            Scenario::Search => "search",
            Scenario::AuditAppend => "audit-append",
            Scenario::AuditAppendBatch => "audit-append-batch",
            Scenario::SqliteInsert => "sqlite-insert",
            Scenario::Echo => "echo",
        }
    }

    /// The scenario this one is read against in the same run (and brings
    /// along): a trace is a GetPatient plus the matching.
    pub fn yardstick(self) -> Option<Scenario> {
        match self {
            Scenario::TracePatient => Some(Scenario::GetPatient),
            _ => None,
        }
    }

    /// The URL the scenario loads.
    pub fn target(self, services: &Services) -> Option<&str> {
        match self {
            Scenario::GetRecord | Scenario::CreateRecord | Scenario::Search => {
                Some(&services.records_url)
            }
            Scenario::GetPatient | Scenario::TracePatient => Some(&services.identity_url),
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
            Scenario::TracePatient => {
                let Some(token) = &fixture.tracer_token else {
                    bail!("trace-patient: the setup made no tracer");
                };
                if fixture.traces.is_empty() {
                    bail!("trace-patient: no patients were seeded to trace (--seed-patients 0)");
                }
                Rpc::TracePatient {
                    auth: authorization(token)?,
                    requests: fixture.traces.clone(),
                    next: Default::default(),
                }
            }
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
/// The role trace-patient's staff member holds: one with `trace_patients`.
const TRACER_ROLE: &str = crate::dev::config::TRACER_ROLE;
/// Different traces trace-patient sends, round and round.
const TRACES: usize = 10_000;
/// RegisterPatient calls in flight while seeding.
const SEEDING_IN_FLIGHT: usize = 64;
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
    /// The bench practice's PAS, which registers the seeded people.
    pub pas: Services,
    /// For trace-patient only: its staff member's token.
    pub tracer_token: Option<String>,
    /// What trace-patient sends; empty until [`seed_patients`].
    pub traces: Arc<[TracePatientRequest]>,
    /// Client id and secret behind each token, to renew them
    /// ([`Fixture::renew_tokens`]): clinician, records, tracer.
    credentials: [(String, String); 3],
}

impl Fixture {
    /// Fresh tokens for every principal, for a run longer than a token
    /// lives (`sharedcare bench --soak`).
    pub async fn renew_tokens(&mut self, services: &Services) -> anyhow::Result<()> {
        let [clinician, records, tracer] = self.credentials.clone();
        self.clinician_token = issue(services, clinician.0, clinician.1).await?;
        self.records_token = issue(services, records.0, records.1).await?;
        if self.tracer_token.is_some() {
            self.tracer_token = Some(issue(services, tracer.0, tracer.1).await?);
        }
        Ok(())
    }
}

async fn issue(services: &Services, client_id: String, secret: String) -> anyhow::Result<String> {
    token::issue(services, &client_id, &secret, vec![], None)
        .await
        .map(|issued| issued.access_token)
        .with_context(|| format!("issuing a token for {client_id}"))
}

/// admin (from dev's bootstrap file), with the bench practice in place,
/// and the records service's token.
async fn practice(
    services: &Services,
    data_dir: &Path,
) -> anyhow::Result<(Services, String, String)> {
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
    Ok((admin, records_token, credentials.records_secret))
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
    let (admin, _, _) = practice(services, data_dir).await?;
    let pas = new_pas(services, &admin, "Bench importer").await?;
    Ok((PRACTICE.0, pas))
}

/// Sets up through the real APIs (with a tracer too when `tracer`); says
/// what it made on standard error.
pub async fn prepare(
    services: &Services,
    data_dir: &Path,
    tracer: bool,
) -> anyhow::Result<Fixture> {
    let (admin, records_token, records_secret) = practice(services, data_dir).await?;
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
        clinician.client_secret.clone(),
    )
    .await?;
    let mut tracer_credentials = (String::new(), String::new());

    let tracer_token = match tracer {
        false => None,
        true => {
            let created = principal::create(
                &admin,
                principal_args(KindArg::Staff, TRACER_ROLE, "Bench tracer", &[]),
            )
            .await
            .with_context(|| {
                format!(
                    "creating the bench tracer (staff in role {TRACER_ROLE}, which identity's \
                     identity.roles must give trace_patients, as `sharedcare dev` does)"
                )
            })?;
            let client_id = created.principal.unwrap_or_default().client_id;
            tracer_credentials = (client_id.clone(), created.client_secret.clone());
            Some(issue(services, client_id, created.client_secret).await?)
        }
    };

    let (family, birth_date) = fresh_person();
    let registered = patient::register(
        &pas,
        RegisterArgs {
            nhs_number: nhs::random_test_number(),
            given: vec!["Bench".into()],
            family,
            birth_date,
            gender: Some(GenderArg::Unknown),
            postcode: "LS1 4AP".into(),
            gp_practice: String::new(),
            confirm_new: false,
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
    let credentials = [
        (
            clinician_principal.client_id.clone(),
            clinician.client_secret,
        ),
        (RECORDS_CLIENT_ID.to_owned(), records_secret),
        tracer_credentials,
    ];
    Ok(Fixture {
        credentials,
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
        pas,
        tracer_token,
        traces: Arc::from(Vec::new()),
    })
}

/// A family name and date of birth no earlier run gave its bench patient
/// (see [`demo::fresh_family_name`]).
fn fresh_person() -> (String, String) {
    use rand::Rng;
    let days = rand::thread_rng().gen_range(0..60 * 365);
    let birth_date = chrono::NaiveDate::from_ymd_opt(1940, 1, 1)
        .and_then(|d| d.checked_add_days(chrono::Days::new(days)))
        .map_or_else(|| "1980-02-29".to_owned(), |d| d.to_string());
    (demo::fresh_family_name(), birth_date)
}

/// How one seeded person's registration came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seeded {
    Created,
    /// Already registered (an earlier run).
    Found,
    /// Too like another seeded person to register without a person
    /// choosing: left out.
    Ambiguous,
    /// The NHS number is registered with other details (a patient from
    /// before the bench kept its own part of the test range).
    NumberTaken,
}

async fn register_seeded(
    identity: &IdentityServiceClient<Channel>,
    auth: &Authorization,
    person: &people::Person,
) -> anyhow::Result<Seeded> {
    let mut request = tonic::Request::new(RegisterPatientRequest {
        nhs_number: person.nhs_number.clone(),
        demographics: Some(person.demographics()),
        confirm_new_patient: false,
    });
    request.metadata_mut().insert("authorization", auth.clone());
    match identity.clone().register_patient(request).await {
        Ok(answer) => Ok(match answer.into_inner().outcome() {
            RegisterOutcome::Created => Seeded::Created,
            RegisterOutcome::Ambiguous => Seeded::Ambiguous,
            _ => Seeded::Found,
        }),
        Err(status) if status.code() == tonic::Code::FailedPrecondition => Ok(Seeded::NumberTaken),
        // The status only: its message names no patient.
        Err(status) => Err(crate::failure::GrpcError(status)).context("seeding patients"),
    }
}

/// Registers people `0..count` ([`people::people`]) through RegisterPatient
/// as the bench PAS, many in flight, and returns the traces trace-patient
/// sends about them. Registering is find-or-create, so a data dir seeded
/// before is reused: when the last person is found registered, an earlier
/// run registered them all and nothing more is sent; otherwise everyone is
/// sent again and those already there are found.
pub async fn seed_patients(
    fixture: &Fixture,
    count: u64,
) -> anyhow::Result<Arc<[TracePatientRequest]>> {
    let started = std::time::Instant::now();
    let people = people::people(count);
    if (people.len() as u64) < count {
        bail!(
            "--seed-patients {count}: the bench's part of the NHS number test range holds {}",
            people::capacity()
        );
    }
    let traces: Arc<[TracePatientRequest]> = people::traces(&people, TRACES).into();
    let Some(last) = people.last() else {
        return Ok(traces);
    };
    let identity = fixture.pas.identity()?;
    let auth = authorization(fixture.pas.token()?)?;
    let probe = register_seeded(&identity, &auth, last).await?;
    if probe == Seeded::Found {
        eprintln!(
            "setup: the {count} bench patients were registered by an earlier run (the last \
             of them is found by NHS number); reusing them"
        );
        return Ok(traces);
    }
    let rest = &people[..people.len() - 1];
    let mut outcomes = futures::stream::iter(rest)
        .map(|person| register_seeded(&identity, &auth, person))
        .buffer_unordered(SEEDING_IN_FLIGHT);
    let (mut done, mut created, mut found, mut ambiguous, mut taken) = (0u64, 0u64, 0, 0, 0);
    let mut next = Some(Ok(probe));
    while let Some(outcome) = match next.take() {
        Some(probed) => Some(probed),
        None => outcomes.next().await,
    } {
        match outcome? {
            Seeded::Created => created += 1,
            Seeded::Found => found += 1,
            Seeded::Ambiguous => ambiguous += 1,
            Seeded::NumberTaken => taken += 1,
        }
        done += 1;
        if done % 10_000 == 0 {
            eprintln!(
                "setup: {done}/{count} patients ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64().max(1e-3)
            );
        }
    }
    eprintln!(
        "setup: {count} bench patients in {:.1} s: {created} registered, {found} already \
         there, {ambiguous} too like another to register automatically (left out), {taken} \
         with a number taken by other details",
        started.elapsed().as_secs_f64()
    );
    Ok(traces)
}

/// Adds `count` records of mixed types and dates to the fixture's patient
/// through CreateRecord, 64 at a time, for the search scenario.
pub async fn seed(services: &Services, fixture: &Fixture, count: u64) -> anyhow::Result<()> {
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
