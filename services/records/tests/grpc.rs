//! records over real gRPC sockets, on its own: input checks come first, and
//! when consent and audit cannot be reached nothing is stored or served.

use std::{sync::Arc, time::Duration};

use sharedcare_kit::{
    client::{TokenSource, lazy_channel},
    config::{Secret, ServerConfig},
    crypto::{Kek, Keyring},
    server::MessageLimits,
    testing::{TestAuthority, TestDatabase, TestServer, spawn_with, with_token},
};
use sharedcare_proto::{
    common::v1::PrincipalKind,
    records::v1::{self as pb, records_service_client::RecordsServiceClient},
};
use sharedcare_records::{
    Records,
    access::{GrpcAudit, GrpcConsent},
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
        let db = TestDatabase::sqlite();
        let store = Arc::new(
            SqlStore::connect(db.url(), 2, Keyring::new(Kek::generate(), []))
                .await
                .expect("store"),
        );
        let tokens = Arc::new(TokenSource::new(
            lazy_channel(&nowhere).expect("url"),
            "records".into(),
            Secret::new("unused"),
        ));
        let timeout = Duration::from_secs(2);
        let records = Arc::new(Records::new(
            store.clone(),
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
            4096,
        ));
        let authority = TestAuthority::new();
        let server = spawn_with(
            spec(
                records,
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
