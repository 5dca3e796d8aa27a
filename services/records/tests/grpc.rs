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
                break_glass_reason: String::new(),
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
        (
            create("p-1", &format!("{}1{}", "[".repeat(70), "]".repeat(70))),
            "resource_json",
        ),
        (
            create(
                "p-1",
                r#"{"resourceType":"Observation","status":"final","status":"draft","subject":{"reference":"Patient/p-1"}}"#,
            ),
            "resource_json",
        ),
        (
            create(
                "p-1",
                r#"{"resourceType":"Observation","id":"a/b","subject":{"reference":"Patient/p-1"}}"#,
            ),
            "resource_json.id",
        ),
        (
            pb::CreateRecordRequest {
                idempotency_key: "has spaces".into(),
                ..create("p-1", OBSERVATION)
            },
            "idempotency_key",
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
    // Health tells the truth while the slot is taken: the server is serving.
    let health = tonic_health::pb::health_client::HealthClient::new(f.server.channel.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("a health check is never shed");
    assert_eq!(
        health.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // The first one fails closed in the end: its peers never answered.
    let first = first.await.expect("join").expect_err("peers are silent");
    assert_eq!(first.code(), Code::Unavailable);
}

#[tokio::test]
async fn a_client_over_its_rate_is_refused_while_others_are_served() {
    let f = Fixture::with_gates(
        Arc::new(PermitAll::default()),
        Arc::new(MemoryAudit::default()),
        ServerConfig {
            client_requests_per_second: 2,
            client_burst: 5,
            ..ServerConfig::loopback()
        },
        OutboxSettings::default(),
    )
    .await;
    let (busy, other) = (f.clinician(), f.clinician());
    let mut client = f.client();
    let mut ok = 0;
    let mut refused = None;
    for _ in 0..30 {
        match client
            .create_record(with_token(create("p-1", OBSERVATION), &busy))
            .await
        {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused = Some(status);
            }
        }
    }
    let refused = refused.expect("30 calls at once are over a burst of 5");
    assert!(
        refused.message().contains("rate limit"),
        "{}",
        refused.message()
    );
    // The burst, and whatever the rate refilled while the calls were made.
    assert!((5..30).contains(&ok), "{ok} admitted");
    let stored =
        sharedcare_kit::testing::table_rows(&f.store.connection(), "records_resource_versions")
            .await;
    assert_eq!(stored, ok, "nothing refused was stored");
    // Another client, on the same connection, is served.
    client
        .create_record(with_token(create("p-1", OBSERVATION), &other))
        .await
        .expect("another client is not limited by the first");
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
                obligations: vec!["AUDIT".into()],
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
                    break_glass_reason: String::new(),
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
                break_glass_reason: String::new(),
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
    // Every other path fails closed the same way.
    let mut client = f.client();
    let refusals = [
        client
            .search(with_token(
                pb::SearchRequest {
                    patient_id: "p-1".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .map(drop),
        client
            .history(with_token(
                pb::HistoryRequest {
                    patient_id: "p-1".into(),
                    record_id: created.record_id.clone(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .map(drop),
        client
            .update_record(with_token(
                pb::UpdateRecordRequest {
                    patient_id: "p-1".into(),
                    record_id: created.record_id.clone(),
                    resource_json: HEART_RATE.into(),
                    if_match_version: 1,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .map(drop),
        client
            .delete_record(with_token(
                pb::DeleteRecordRequest {
                    patient_id: "p-1".into(),
                    record_id: created.record_id.clone(),
                    if_match_version: 1,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .map(drop),
        client
            .create_record(with_token(create("p-1", HEART_RATE), &token))
            .await
            .map(drop),
    ];
    for refusal in refusals {
        let status = refusal.expect_err("audit unreachable too long");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    assert_eq!(outbox_rows(&f.store).await, 4, "nothing more stored");

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

/// consent that permits every category but those it is told to withhold.
#[derive(Default)]
struct Withholding {
    withheld: Mutex<Vec<RecordCategory>>,
}

impl Withholding {
    fn withhold(&self, category: RecordCategory) {
        self.withheld.lock().expect("lock").push(category);
    }
}

impl ConsentGate for Withholding {
    fn evaluate(
        &self,
        _patient_id: &str,
        _actor: Actor,
        _purpose: Purpose,
        category: RecordCategory,
    ) -> BoxFuture<'_, Decision> {
        let permitted = !self.withheld.lock().expect("lock").contains(&category);
        Box::pin(async move {
            Ok(Decision {
                permitted,
                decision_id: "decision-1".into(),
                reasons: vec![("TEST".into(), "a test decision".into())],
                valid_until: None,
                obligations: vec!["AUDIT".into()],
            })
        })
    }
}

fn search(patient: &str) -> pb::SearchRequest {
    pb::SearchRequest {
        patient_id: patient.into(),
        ..Default::default()
    }
}

fn ids(records: &[pb::Record]) -> Vec<&str> {
    records.iter().map(|r| r.record_id.as_str()).collect()
}

#[tokio::test]
async fn versions_history_search_and_a_withheld_category_over_grpc() {
    let consent = Arc::new(Withholding::default());
    let audit = Arc::new(MemoryAudit::default());
    let f = Fixture::with_gates(
        consent.clone(),
        audit.clone(),
        ServerConfig::loopback(),
        OutboxSettings::default(),
    )
    .await;
    let token = f.clinician();
    let mut client = f.client();
    let call = |status: Result<tonic::Response<pb::CreateRecordResponse>, tonic::Status>| {
        status
            .expect("created")
            .into_inner()
            .record
            .expect("record")
    };

    // Kept as sent: member order and number text; only id and meta set.
    let sent = r#"{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/p-1"},"code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"valueQuantity":{"value":1.50,"unit":"/min"},"effectiveDateTime":"2024-03-01"}"#;
    let keyed = pb::CreateRecordRequest {
        idempotency_key: "retry-me".into(),
        ..create("p-1", sent)
    };
    let heart = call(
        client
            .create_record(with_token(keyed.clone(), &token))
            .await,
    );
    let (id, version) = (&heart.record_id, &heart.version);
    let expected = sent.replacen(
        r#""resourceType":"Observation","#,
        &format!(
            r#""resourceType":"Observation","id":"{id}","meta":{{"versionId":"{version}","lastUpdated":"#
        ),
        1,
    );
    assert!(
        heart
            .resource_json
            .starts_with(&expected[..expected.len() - sent.len() + 30]),
        "{}",
        heart.resource_json
    );
    assert!(
        heart
            .resource_json
            .contains(r#""valueQuantity":{"value":1.50,"unit":"/min"}"#)
    );

    // A retry with the same key answers with the first result; the same
    // key with another request is refused.
    let again = call(
        client
            .create_record(with_token(keyed.clone(), &token))
            .await,
    );
    assert_eq!((again.record_id.as_str(), again.version), (id.as_str(), 1));
    assert_eq!(again.resource_json, heart.resource_json);
    let status = client
        .create_record(with_token(
            pb::CreateRecordRequest {
                resource_json: HEART_RATE.into(),
                ..keyed.clone()
            },
            &token,
        ))
        .await
        .expect_err("key reused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("idempotency_key"),
        "{}",
        status.message()
    );

    let hiv = call(
        client
            .create_record(with_token(create("p-1", HIV_CONDITION), &token))
            .await,
    );
    assert_eq!(hiv.category, RecordCategory::SexualHealth as i32);

    // Versions: if-match, naming the current version on a mismatch.
    let update = |json: &str, if_match: i64| pb::UpdateRecordRequest {
        patient_id: "p-1".into(),
        record_id: id.clone(),
        resource_json: json.into(),
        if_match_version: if_match,
        purpose: 0,
        category: 0,
    };
    let v2 = client
        .update_record(with_token(update(HEART_RATE, 1), &token))
        .await
        .expect("updated")
        .into_inner()
        .record
        .expect("record");
    assert_eq!(v2.version, 2);
    assert!(v2.resource_json.contains(r#""versionId":"2""#));
    let status = client
        .update_record(with_token(update(HEART_RATE, 1), &token))
        .await
        .expect_err("stale");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("version 2 is current"),
        "{}",
        status.message()
    );
    for (request, field) in [
        (update(HEART_RATE, 0), "if_match_version"),
        (
            update(&HEART_RATE.replacen("{", r#"{"id":"another","#, 1), 2),
            "resource_json.id",
        ),
        (update(HIV_CONDITION, 2), "resource_json.resourceType"),
    ] {
        let status = client
            .update_record(with_token(request, &token))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // History, newest first, paged by a cursor bound to this record.
    let history = |page_token: &str, record_id: &str| pb::HistoryRequest {
        patient_id: "p-1".into(),
        record_id: record_id.into(),
        page_size: 1,
        page_token: page_token.into(),
        purpose: 0,
    };
    let first = client
        .history(with_token(history("", id), &token))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        first.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2]
    );
    let second = client
        .history(with_token(history(&first.next_page_token, id), &token))
        .await
        .expect("history")
        .into_inner();
    assert_eq!(
        second
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [1]
    );
    assert!(second.next_page_token.is_empty());
    for bad in [first.next_page_token.as_str(), "made-up"] {
        let status = client
            .history(with_token(history(bad, &hiv.record_id), &token))
            .await
            .expect_err("another record's cursor");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("page_token"),
            "{}",
            status.message()
        );
    }

    // Search: by code, by type, paged; a cursor works only for its search.
    let found = client
        .search(with_token(search("p-1"), &token))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(ids(&found.records), [id.as_str(), hiv.record_id.as_str()]);
    let by_code = client
        .search(with_token(
            pb::SearchRequest {
                codes: vec!["http://loinc.org|8867-4".into()],
                ..search("p-1")
            },
            &token,
        ))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(ids(&by_code.records), [id.as_str()]);
    let paged = client
        .search(with_token(
            pb::SearchRequest {
                page_size: 1,
                ..search("p-1")
            },
            &token,
        ))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(paged.records.len(), 1);
    assert!(!paged.next_page_token.is_empty());
    let status = client
        .search(with_token(
            pb::SearchRequest {
                page_size: 1,
                page_token: paged.next_page_token.clone(),
                resource_types: vec!["Condition".into()],
                ..search("p-1")
            },
            &token,
        ))
        .await
        .expect_err("a cursor of another search");
    assert_eq!(status.code(), Code::InvalidArgument);
    for (request, field) in [
        (
            pb::SearchRequest {
                resource_types: vec!["Patient".into()],
                ..search("p-1")
            },
            "resource_types",
        ),
        (
            pb::SearchRequest {
                codes: vec!["a|b|c".into()],
                ..search("p-1")
            },
            "codes",
        ),
        (
            pb::SearchRequest {
                page_size: 501,
                ..search("p-1")
            },
            "page_size",
        ),
        (
            pb::SearchRequest {
                date_from: Some(prost_types::Timestamp {
                    seconds: 10,
                    nanos: 0,
                }),
                date_to: Some(prost_types::Timestamp {
                    seconds: 5,
                    nanos: 0,
                }),
                ..search("p-1")
            },
            "date_to",
        ),
    ] {
        let status = client
            .search(with_token(request, &token))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // Sexual health withheld: the record looks exactly like an absent one,
    // and searches say nothing of it — not in results, sizes or cursors.
    consent.withhold(RecordCategory::SexualHealth);
    let get = |record_id: &str| pb::GetRecordRequest {
        patient_id: "p-1".into(),
        record_id: record_id.into(),
        purpose: 0,
        break_glass_reason: String::new(),
    };
    let withheld = client
        .get_record(with_token(get(&hiv.record_id), &token))
        .await
        .expect_err("withheld");
    let absent = client
        .get_record(with_token(get("no-such-record"), &token))
        .await
        .expect_err("absent");
    assert_eq!(
        (withheld.code(), withheld.message()),
        (absent.code(), absent.message())
    );
    assert_eq!(withheld.code(), Code::NotFound);
    let status = client
        .history(with_token(history("", &hiv.record_id), &token))
        .await
        .expect_err("withheld");
    assert_eq!(
        (status.code(), status.message()),
        (absent.code(), absent.message())
    );
    let page = client
        .search(with_token(
            pb::SearchRequest {
                page_size: 1,
                ..search("p-1")
            },
            &token,
        ))
        .await
        .expect("search")
        .into_inner();
    assert_eq!(ids(&page.records), [id.as_str()]);
    assert!(
        page.next_page_token.is_empty(),
        "no hint of a withheld record"
    );
    let page = client
        .search(with_token(
            pb::SearchRequest {
                categories: vec![RecordCategory::SexualHealth as i32],
                ..search("p-1")
            },
            &token,
        ))
        .await
        .expect("search")
        .into_inner();
    assert!(page.records.is_empty());

    // Export: the permitted records as NDJSON lines, as stored.
    let mut stream = client
        .export_patient(with_token(
            pb::ExportPatientRequest {
                patient_id: "p-1".into(),
                purpose: 0,
            },
            &token,
        ))
        .await
        .expect("export")
        .into_inner();
    let mut lines = Vec::new();
    while let Some(line) = stream.message().await.expect("line") {
        lines.push(line);
    }
    assert_eq!(lines.len(), 1, "the withheld record is not exported");
    assert_eq!(lines[0].record_id, *id);
    assert_eq!(lines[0].resource_type, "Observation");
    assert_eq!(lines[0].resource_json, v2.resource_json);

    // Delete: a tombstone; reads answer NOT_FOUND, history shows it.
    let deleted = client
        .delete_record(with_token(
            pb::DeleteRecordRequest {
                patient_id: "p-1".into(),
                record_id: id.clone(),
                if_match_version: 2,
                purpose: 0,
            },
            &token,
        ))
        .await
        .expect("deleted")
        .into_inner()
        .record
        .expect("tombstone");
    assert!(deleted.deleted && deleted.resource_json.is_empty());
    assert_eq!(deleted.version, 3);
    let status = client
        .get_record(with_token(get(id), &token))
        .await
        .expect_err("deleted");
    assert_eq!(
        (status.code(), status.message()),
        (absent.code(), absent.message())
    );
    let mut all = history("", id);
    all.page_size = 0;
    let versions = client
        .history(with_token(all, &token))
        .await
        .expect("history")
        .into_inner()
        .versions;
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.deleted))
            .collect::<Vec<_>>(),
        [(3, true), (2, false), (1, false)]
    );
    let page = client
        .search(with_token(search("p-1"), &token))
        .await
        .expect("search")
        .into_inner();
    assert!(page.records.is_empty());

    // Every access reached audit: creates, updates, the delete, reads,
    // searches (one event per record returned), and the denials.
    use sharedcare_proto::audit::v1::{Action, Outcome};
    eventually(async || {
        audit
            .delivered()
            .iter()
            .any(|e| e.action == Action::Delete as i32)
    })
    .await;
    let delivered = audit.delivered();
    let count = |action: Action, outcome: Outcome| {
        delivered
            .iter()
            .filter(|e| e.action == action as i32 && e.outcome == outcome as i32)
            .count()
    };
    assert_eq!(count(Action::Create, Outcome::Success), 2);
    assert_eq!(count(Action::Update, Outcome::Success), 1);
    assert_eq!(count(Action::Delete, Outcome::Success), 1);
    assert!(
        count(Action::Read, Outcome::Denied) >= 2,
        "the withheld reads"
    );
    assert!(count(Action::Search, Outcome::Success) >= 4);
    assert_eq!(count(Action::Export, Outcome::Success), 1);
}

/// CreateRecordRequest as it is on the wire, with `resource_json` as bytes,
/// so a test can send what a well-behaved client never would.
#[derive(Clone, PartialEq, prost::Message)]
struct RawCreateRecordRequest {
    #[prost(string, tag = "1")]
    patient_id: String,
    #[prost(bytes = "vec", tag = "2")]
    resource_json: Vec<u8>,
}

#[tokio::test]
async fn a_resource_that_is_not_utf8_is_invalid_argument_naming_the_field() {
    let f = Fixture::with_gates(
        Arc::new(PermitAll::default()),
        Arc::new(MemoryAudit::default()),
        ServerConfig::loopback(),
        OutboxSettings::default(),
    )
    .await;
    let mut grpc = tonic::client::Grpc::new(f.server.channel.clone());
    grpc.ready().await.expect("ready");
    let mut bytes = OBSERVATION.as_bytes().to_vec();
    bytes[40] = 0xff;
    let request = with_token(
        RawCreateRecordRequest {
            patient_id: "p-1".into(),
            resource_json: bytes,
        },
        &f.clinician(),
    );
    let status = grpc
        .unary::<_, pb::CreateRecordResponse, _>(
            request,
            http::uri::PathAndQuery::from_static(
                "/sharedcare.records.v1.RecordsService/CreateRecord",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("not UTF-8");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("resource_json"),
        "{}",
        status.message()
    );
    assert_eq!(outbox_rows(&f.store).await, 0, "nothing stored or audited");
    // The service is unharmed.
    f.client()
        .create_record(with_token(create("p-1", OBSERVATION), &f.clinician()))
        .await
        .expect("a good request after a bad one");
}

#[tokio::test]
async fn the_change_feed_is_filtered_by_consent_and_resumes_where_it_left_off() {
    let consent = Arc::new(Withholding::default());
    let f = Fixture::with_gates(
        consent.clone(),
        Arc::new(MemoryAudit::default()),
        ServerConfig::loopback(),
        OutboxSettings::default(),
    )
    .await;
    let writer = f.clinician();
    let watcher = f
        .authority
        .token(PrincipalKind::Application, "A81001", "", &["records.read"]);
    let mut client = f.client();
    let created = |json: &'static str| {
        let mut client = f.client();
        let writer = writer.clone();
        async move {
            client
                .create_record(with_token(create("p-1", json), &writer))
                .await
                .expect("created")
                .into_inner()
                .record
                .expect("record")
        }
    };
    let heart = created(HEART_RATE).await;
    let hiv = created(HIV_CONDITION).await;
    assert_eq!(hiv.category, RecordCategory::SexualHealth as i32);
    consent.withhold(RecordCategory::SexualHealth);
    let watch = |after: &str| pb::WatchRecordsRequest {
        after_change_id: after.into(),
        purpose: 0,
    };
    let next = async |stream: &mut tonic::Streaming<pb::WatchRecordsResponse>| {
        tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("a change within five seconds")
            .expect("stream")
            .expect("open")
    };

    // From the start: what is stored, the withheld category left out...
    let mut stream = client
        .watch_records(with_token(watch(""), &watcher))
        .await
        .expect("watch")
        .into_inner();
    let first = next(&mut stream).await;
    assert_eq!(
        (first.record_id.as_str(), first.version),
        (heart.record_id.as_str(), 1)
    );
    assert_eq!(first.resource_type, "Observation");
    // ...then each change as it commits, deletions included.
    let later = created(HEART_RATE).await;
    let change = next(&mut stream).await;
    assert_eq!(change.record_id, later.record_id);
    client
        .delete_record(with_token(
            pb::DeleteRecordRequest {
                patient_id: "p-1".into(),
                record_id: later.record_id.clone(),
                if_match_version: 1,
                purpose: 0,
            },
            &writer,
        ))
        .await
        .expect("deleted");
    let deleted = next(&mut stream).await;
    assert_eq!((deleted.version, deleted.deleted), (2, true));
    drop(stream);

    // Missed while away: resumed exactly after the last change received.
    let while_away = created(HEART_RATE).await;
    let mut stream = client
        .watch_records(with_token(watch(&deleted.change_id), &watcher))
        .await
        .expect("resume")
        .into_inner();
    assert_eq!(next(&mut stream).await.record_id, while_away.record_id);
    let nothing = tokio::time::timeout(Duration::from_millis(400), stream.message()).await;
    assert!(nothing.is_err(), "nothing repeated: {nothing:?}");

    // A cursor this service did not issue is refused.
    let status = client
        .watch_records(with_token(watch("made-up"), &watcher))
        .await
        .expect_err("forged cursor");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("after_change_id"),
        "{}",
        status.message()
    );
}

/// Nonsense to each RPC this issue added is INVALID_ARGUMENT naming the
/// field, before consent is asked or anything is stored or audited.
#[tokio::test]
async fn the_new_rpcs_refuse_bad_input_naming_the_field() {
    let f = Fixture::isolated().await;
    let token = f.clinician();
    let mut client = f.client();
    let delete = |record_id: &str, if_match| pb::DeleteRecordRequest {
        patient_id: "p-1".into(),
        record_id: record_id.into(),
        if_match_version: if_match,
        purpose: 0,
    };
    let history = |record_id: &str, page_size| pb::HistoryRequest {
        patient_id: "p-1".into(),
        record_id: record_id.into(),
        page_size,
        ..Default::default()
    };
    let refusals = [
        (
            client
                .delete_record(with_token(delete("r-1", 0), &token))
                .await
                .map(drop),
            "if_match_version",
        ),
        (
            client
                .delete_record(with_token(delete("a/b", 1), &token))
                .await
                .map(drop),
            "record_id",
        ),
        (
            client
                .history(with_token(history("r-1", 101), &token))
                .await
                .map(drop),
            "page_size",
        ),
        (
            client
                .history(with_token(history("", 0), &token))
                .await
                .map(drop),
            "record_id",
        ),
        (
            client
                .export_patient(with_token(pb::ExportPatientRequest::default(), &token))
                .await
                .map(drop),
            "patient_id",
        ),
        (
            client
                .search(with_token(
                    pb::SearchRequest {
                        patient_id: "p-1".into(),
                        categories: vec![99],
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .map(drop),
            "categories",
        ),
    ];
    for (result, field) in refusals {
        let status = result.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(field),
            "{field}: {}",
            status.message()
        );
    }
    let watcher = f
        .authority
        .token(PrincipalKind::Application, "A81001", "", &["records.read"]);
    let status = client
        .watch_records(with_token(
            pb::WatchRecordsRequest {
                after_change_id: String::new(),
                purpose: 99,
            },
            &watcher,
        ))
        .await
        .expect_err("unknown purpose");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(outbox_rows(&f.store).await, 0, "nothing stored or audited");
}
