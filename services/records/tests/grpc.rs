//! records over real gRPC sockets, on its own: input checks come first,
//! when consent and audit cannot be reached nothing is stored or served, and
//! what is written is classified by its codes before consent is asked.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sharedcare_kit::{
    client::{TokenSource, lazy_channel},
    config::{Secret, ServerConfig},
    crypto::{Kek, Keyring},
    server::MessageLimits,
    testing::{TestAuthority, TestDatabase, TestServer, spawn_with, with_token},
};
use sharedcare_proto::{
    audit::v1::AuditEvent,
    common::v1::{Actor, PrincipalKind, Purpose, RecordCategory},
    records::v1::{self as pb, records_service_client::RecordsServiceClient},
};
use sharedcare_records::{
    Records,
    access::{AuditSink, BoxFuture, ConsentGate, Decision, GrpcAudit, GrpcConsent},
    domain::{Category, ClassificationMap, PatientId, RecordId},
    spec,
    store::{RecordStore, SqlStore},
};
use tonic::{Code, transport::Channel};

/// A URL nothing listens on.
async fn closed_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

struct Fixture {
    server: TestServer,
    store: Arc<SqlStore>,
    authority: TestAuthority,
    _db: TestDatabase,
}

impl Fixture {
    /// records with consent, audit and identity all unreachable.
    async fn isolated() -> Self {
        Self::with_peers(closed_url().await, ServerConfig::loopback()).await
    }

    async fn with_peers(nowhere: String, server_config: ServerConfig) -> Self {
        let tokens = Arc::new(TokenSource::new(
            lazy_channel(&nowhere).expect("url"),
            "records".into(),
            Secret::new("unused"),
        ));
        let timeout = Duration::from_secs(2);
        Self::with_gates(
            Arc::new(GrpcConsent::new(
                lazy_channel(&nowhere).expect("url"),
                tokens.clone(),
                timeout,
            )),
            Arc::new(GrpcAudit::new(
                lazy_channel(&nowhere).expect("url"),
                tokens,
                timeout,
            )),
            server_config,
        )
        .await
    }

    /// records with the built-in classification map and these consent and
    /// audit services.
    async fn with_gates(
        consent: Arc<dyn ConsentGate>,
        audit: Arc<dyn AuditSink>,
        server_config: ServerConfig,
    ) -> Self {
        let db = TestDatabase::sqlite();
        let store = Arc::new(
            SqlStore::connect(db.url(), 2, Keyring::new(Kek::generate(), []))
                .await
                .expect("store"),
        );
        let records = Arc::new(Records::new(store.clone(), consent, audit, 4096));
        let classification = Arc::new(ClassificationMap::builtin().expect("built-in map"));
        let authority = TestAuthority::new();
        let server = spawn_with(
            spec(
                records,
                classification,
                authority.verifier(),
                MessageLimits {
                    max_bytes: 64 * 1024,
                },
            ),
            server_config,
        )
        .await;
        Fixture {
            server,
            store,
            authority,
            _db: db,
        }
    }

    fn client(&self) -> RecordsServiceClient<Channel> {
        RecordsServiceClient::new(self.server.channel.clone())
    }

    fn clinician(&self) -> String {
        self.authority.token(
            PrincipalKind::Staff,
            "A81001",
            "R8000",
            &["records.read", "records.write"],
        )
    }
}

fn create(patient: &str, json: &str) -> pb::CreateRecordRequest {
    pb::CreateRecordRequest {
        patient_id: patient.into(),
        resource_json: json.into(),
        category: 0,
        purpose: 0,
    }
}

const OBSERVATION: &str =
    r#"{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/p-1"}}"#;

#[tokio::test]
async fn without_consent_nothing_is_stored_or_served() {
    let f = Fixture::isolated().await;
    let token = f.clinician();
    let status = f
        .client()
        .create_record(with_token(create("p-1", OBSERVATION), &token))
        .await
        .expect_err("consent unreachable");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("consent"), "{}", status.message());
    assert!(f.store.pending_outbox(10).await.expect("outbox").is_empty());

    let status = f
        .client()
        .get_record(with_token(
            pb::GetRecordRequest {
                patient_id: "p-1".into(),
                record_id: "r-1".into(),
                purpose: 0,
            },
            &token,
        ))
        .await
        .expect_err("consent unreachable");
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_else() {
    let f = Fixture::isolated().await;
    let token = f.clinician();
    let cases = [
        (create("", OBSERVATION), "patient_id"),
        (create("p/1", OBSERVATION), "patient_id"),
        (create("p-1", "{broken"), "resource_json"),
        (
            create("p-1", r#"{"resourceType":"Patient"}"#),
            "resource_json.resourceType",
        ),
        (
            create(
                "p-1",
                r#"{"resourceType":"Observation","subject":{"reference":"Patient/p-2"}}"#,
            ),
            "resource_json.subject.reference",
        ),
        (
            create("p-1", &format!("{{\"x\":\"{}\"}}", "a".repeat(5000))),
            "resource_json",
        ),
        (
            pb::CreateRecordRequest {
                category: 99,
                ..create("p-1", OBSERVATION)
            },
            "category",
        ),
    ];
    for (request, field) in cases {
        let status = f
            .client()
            .create_record(with_token(request, &token))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    assert!(f.store.pending_outbox(10).await.expect("outbox").is_empty());
}

#[tokio::test]
async fn tokens_and_scopes_are_checked_first() {
    let f = Fixture::isolated().await;
    let status = f
        .client()
        .create_record(create("p-1", OBSERVATION))
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let reader = f
        .authority
        .token(PrincipalKind::Staff, "A81001", "R8000", &["records.read"]);
    let status = f
        .client()
        .create_record(with_token(create("p-1", OBSERVATION), &reader))
        .await
        .expect_err("no write scope");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("records.write"));

    let status = f
        .client()
        .history(with_token(pb::HistoryRequest::default(), &f.clinician()))
        .await
        .expect_err("later issue");
    assert_eq!(status.code(), Code::Unimplemented);
}

/// A peer that accepts connections and never answers.
async fn black_hole_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn beyond_the_concurrency_limit_requests_are_shed_with_resource_exhausted() {
    let f = Fixture::with_peers(
        black_hole_url().await,
        ServerConfig {
            concurrency_limit: 1,
            ..ServerConfig::loopback()
        },
    )
    .await;
    let token = f.clinician();
    // The first request holds the only slot while it waits on a silent peer.
    let mut first_client = f.client();
    let first_token = token.clone();
    let first = tokio::spawn(async move {
        first_client
            .create_record(with_token(create("p-1", OBSERVATION), &first_token))
            .await
    });
    let mut shed = None;
    for _ in 0..200 {
        // Another client, on its own connection.
        let mut second = RecordsServiceClient::new(
            tonic::transport::Endpoint::from_shared(f.server.url())
                .expect("url")
                .connect_lazy(),
        );
        match second
            .create_record(with_token(create("p-1", OBSERVATION), &token))
            .await
        {
            Err(status) if status.code() == Code::ResourceExhausted => {
                shed = Some(status);
                break;
            }
            _ if first.is_finished() => break,
            _ => tokio::task::yield_now().await,
        }
    }
    let status = shed.expect("a second request was shed while the first held the slot");
    assert!(
        status.message().contains("concurrency limit"),
        "{}",
        status.message()
    );
    // The first one fails closed in the end: its peers never answered.
    let first = first.await.expect("join").expect_err("peers are silent");
    assert_eq!(first.code(), Code::Unavailable);
}

/// consent that permits everything and remembers which categories it was
/// asked about.
#[derive(Default)]
struct PermitAll {
    asked: Mutex<Vec<RecordCategory>>,
}

impl PermitAll {
    fn asked(&self) -> Vec<RecordCategory> {
        std::mem::take(&mut *self.asked.lock().expect("lock"))
    }
}

impl ConsentGate for PermitAll {
    fn evaluate(
        &self,
        _patient_id: &str,
        _actor: Actor,
        _purpose: Purpose,
        category: RecordCategory,
    ) -> BoxFuture<'_, Decision> {
        self.asked.lock().expect("lock").push(category);
        Box::pin(async {
            Ok(Decision {
                permitted: true,
                decision_id: "decision-1".into(),
                reasons: vec![("CARE_RELATIONSHIP".into(), "a test permit".into())],
            })
        })
    }
}

/// audit that takes every event.
struct AcceptAll;

impl AuditSink for AcceptAll {
    fn append(&self, _event: AuditEvent) -> BoxFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

const HIV_CONDITION: &str = r#"{"resourceType":"Condition","subject":{"reference":"Patient/p-1"},
    "code":{"coding":[{"system":"http://snomed.info/sct","code":"86406008",
                       "display":"Human immunodeficiency virus infection"}]}}"#;

const HEART_RATE: &str = r#"{"resourceType":"Observation","status":"final",
    "subject":{"reference":"Patient/p-1"},
    "code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}]},
    "valueQuantity":{"value":72,"unit":"/min"}}"#;

#[tokio::test]
async fn a_record_is_classified_by_its_codes_and_a_writers_label_only_raises_it() {
    let consent = Arc::new(PermitAll::default());
    let f = Fixture::with_gates(
        consent.clone(),
        Arc::new(AcceptAll),
        ServerConfig::loopback(),
    )
    .await;
    let token = f.clinician();
    let patient = PatientId::parse("p", "p-1").expect("id");
    let cases = [
        // An HIV diagnosis labelled general is sexual health.
        (
            HIV_CONDITION,
            RecordCategory::General,
            RecordCategory::SexualHealth,
            Category::SexualHealth,
        ),
        // A label can raise a record's sensitivity...
        (
            HEART_RATE,
            RecordCategory::MentalHealth,
            RecordCategory::MentalHealth,
            Category::MentalHealth,
        ),
        // ...and without a label or a sensitive code it stays general.
        (
            HEART_RATE,
            RecordCategory::Unspecified,
            RecordCategory::General,
            Category::General,
        ),
    ];
    for (json, label, expected, stored) in cases {
        let request = pb::CreateRecordRequest {
            category: label as i32,
            ..create("p-1", json)
        };
        let created = f
            .client()
            .create_record(with_token(request, &token))
            .await
            .expect("created")
            .into_inner()
            .record
            .expect("record");
        assert_eq!(created.category, expected as i32, "{label:?}: returned");
        assert_eq!(consent.asked(), [expected], "{label:?}: consent asked");
        let id = RecordId::parse("record_id", &created.record_id).expect("id");
        let record = f
            .store
            .current(&patient, &id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(record.category, stored, "{label:?}: stored");

        // A read is decided on the stored category, and returns it.
        let read = f
            .client()
            .get_record(with_token(
                pb::GetRecordRequest {
                    patient_id: "p-1".into(),
                    record_id: created.record_id.clone(),
                    purpose: 0,
                },
                &token,
            ))
            .await
            .expect("read")
            .into_inner()
            .record
            .expect("record");
        assert_eq!(read.category, expected as i32, "{label:?}: read");
        assert_eq!(
            consent.asked(),
            [expected],
            "{label:?}: consent asked on read"
        );
    }
}
