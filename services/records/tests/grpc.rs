//! records over real gRPC sockets, on its own: input checks come first,
//! when consent cannot be reached nothing is stored or served, every access
//! is in the audit outbox before it is answered (and none is served once
//! audit has been unreachable too long), and what is written is classified
//! by its codes before consent is asked.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sharedcare_kit::{
    client::{TokenSource, lazy_channel},
    config::{Secret, ServerConfig},
    crypto::{Kek, Keyring},
    outbox::{BatchSink, Outbox, OutboxSettings},
    paging::CursorKey,
    server::MessageLimits,
    testing::{MemoryAudit, TestAuthority, TestDatabase, TestServer, spawn_with, with_token},
};
use sharedcare_proto::{
    common::v1::{Actor, PrincipalKind, Purpose, RecordCategory},
    records::v1::{self as pb, records_service_client::RecordsServiceClient},
};
use sharedcare_records::{
    Records,
    access::{BoxFuture, ConsentGate, Decision, GrpcAudit, GrpcConsent},
    domain::{Category, ClassificationMap, PatientId, RecordId},
    spec,
    store::{Encrypted, OUTBOX_TABLE, RecordStore, SqlStore},
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
    outbox: Arc<Outbox>,
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
            OutboxSettings::default(),
        )
        .await
    }

    /// records with the built-in classification map and these consent and
    /// audit services.
    async fn with_gates(
        consent: Arc<dyn ConsentGate>,
        audit: Arc<dyn BatchSink>,
        server_config: ServerConfig,
        settings: OutboxSettings,
    ) -> Self {
        let db = TestDatabase::sqlite();
        let store = Arc::new(SqlStore::connect(db.url(), 2).await.expect("store"));
        let outbox = Outbox::start(
            store.connection(),
            store.write_gate(),
            OUTBOX_TABLE,
            audit,
            settings,
        );
        let kek = Kek::generate();
        let cursors = CursorKey::new(kek.derive("records.cursor"));
        let encrypted = Encrypted::new(store.clone(), Keyring::new(kek, []));
        let records = Arc::new(Records::new(
            Arc::new(encrypted),
            consent,
            outbox.clone(),
            cursors,
            4096,
        ));
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
            outbox,
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

/// Rows in records' audit outbox.
async fn outbox_rows(store: &SqlStore) -> i64 {
    sharedcare_kit::testing::outbox_rows(&store.connection(), OUTBOX_TABLE).await
}

fn create(patient: &str, json: &str) -> pb::CreateRecordRequest {
    pb::CreateRecordRequest {
        patient_id: patient.into(),
        resource_json: json.into(),
        category: 0,
        purpose: 0,
        idempotency_key: String::new(),
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
    assert_eq!(
        outbox_rows(&f.store).await,
        0,
        "no audit event without an access"
    );

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
    assert_eq!(
        outbox_rows(&f.store).await,
        0,
        "no audit event without an access"
    );
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
        .export_patient(with_token(
            pb::ExportPatientRequest::default(),
            &f.clinician(),
        ))
        .await
        .expect_err("a later increment");
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
                valid_until: None,
            })
        })
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
        Arc::new(MemoryAudit::default()),
        ServerConfig::loopback(),
        OutboxSettings::default(),
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
        assert_eq!(record.meta.category, stored, "{label:?}: stored");

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

/// Polls `done` for up to five seconds.
async fn eventually(mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..500 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within five seconds");
}

#[tokio::test]
async fn every_access_is_in_the_outbox_before_it_is_answered_and_reaches_audit() {
    let audit = Arc::new(MemoryAudit::default());
    let f = Fixture::with_gates(
        Arc::new(PermitAll::default()),
        audit.clone(),
        ServerConfig::loopback(),
        OutboxSettings {
            max_lag: Duration::from_millis(300),
            poll: Duration::from_millis(20),
            ..OutboxSettings::default()
        },
    )
    .await;
    let token = f.clinician();
    let get = |record_id: &str| {
        with_token(
            pb::GetRecordRequest {
                patient_id: "p-1".into(),
                record_id: record_id.into(),
                purpose: 0,
            },
            &token,
        )
    };

    // audit is down: the write and the reads are still answered, their
    // events durable in records' outbox.
    audit.set_down(true);
    let created = f
        .client()
        .create_record(with_token(create("p-1", HEART_RATE), &token))
        .await
        .expect("created while audit is briefly down")
        .into_inner()
        .record
        .expect("record");
    for _ in 0..3 {
        f.client()
            .get_record(get(&created.record_id))
            .await
            .expect("read while audit is briefly down");
    }
    assert_eq!(outbox_rows(&f.store).await, 4, "four accesses, four events");

    // Down for longer than the bound: no new access at all.
    eventually(async || f.outbox.admit().is_err()).await;
    let status = f
        .client()
        .get_record(get(&created.record_id))
        .await
        .expect_err("audit unreachable too long");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("audit"), "{}", status.message());

    // audit is back: everything is delivered, the outbox pruned, and
    // accesses are served again.
    audit.set_down(false);
    eventually(async || audit.delivered().len() == 4).await;
    eventually(async || f.outbox.admit().is_ok()).await;
    eventually(async || outbox_rows(&f.store).await == 0).await;
    f.client()
        .get_record(get(&created.record_id))
        .await
        .expect("served again");
    eventually(async || audit.delivered().len() == 5).await;
    let actions: Vec<i32> = audit.delivered().iter().map(|e| e.action).collect();
    use sharedcare_proto::audit::v1::Action;
    assert_eq!(
        actions,
        [
            Action::Create as i32,
            Action::Read as i32,
            Action::Read as i32,
            Action::Read as i32,
            Action::Read as i32
        ]
    );
}
