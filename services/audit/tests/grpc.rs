//! The audit service over real sockets, through the generated client.

use std::sync::Arc;

use sharedcare_audit::{
    SCOPE_APPEND, SCOPE_READ,
    store::{AuditLogStore, SqlStore},
};
use sharedcare_kit::{
    server::MessageLimits,
    testing::{TestAuthority, TestDatabase, TestServer, spawn, with_token},
};
use sharedcare_proto::{
    audit::v1::{
        AccessReportRequest, Action, AppendBatchRequest, AppendRequest, AuditEvent,
        ConsistencyProofRequest, InclusionProofRequest, Outcome, QueryRequest,
        SignedTreeHeadRequest, audit_service_client::AuditServiceClient,
    },
    common::v1::{Actor, PrincipalKind, Purpose},
};
use tonic::{Code, transport::Channel};

struct Harness {
    authority: TestAuthority,
    store: Arc<dyn AuditLogStore>,
    server: TestServer,
    _db: TestDatabase,
}

impl Harness {
    async fn start() -> Self {
        let db = TestDatabase::sqlite();
        let store: Arc<dyn AuditLogStore> =
            Arc::new(SqlStore::connect(db.url(), 4).await.expect("connect"));
        let authority = TestAuthority::new();
        let server = spawn(sharedcare_audit::spec(
            store.clone(),
            authority.verifier(),
            MessageLimits { max_bytes: 4 << 20 },
        ))
        .await;
        Harness {
            authority,
            store,
            server,
            _db: db,
        }
    }

    fn client(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.server.channel.clone())
    }

    fn token(&self, scopes: &[&str]) -> String {
        self.authority
            .token(PrincipalKind::Service, "A81001", "R8000", scopes)
    }

    fn appender(&self) -> String {
        self.token(&[SCOPE_APPEND])
    }

    fn reader(&self) -> String {
        self.token(&[SCOPE_READ])
    }

    async fn append(
        &self,
        event: AuditEvent,
    ) -> Result<tonic::Response<sharedcare_proto::audit::v1::AppendResponse>, tonic::Status> {
        self.client()
            .append(with_token(
                AppendRequest { event: Some(event) },
                &self.appender(),
            ))
            .await
    }

    async fn log_size(&self) -> usize {
        self.store.entries(0, 1000).await.expect("entries").len()
    }
}

fn event(id: &str, patient: &str) -> AuditEvent {
    AuditEvent {
        event_id: id.into(),
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_750_000_000,
            nanos: 250_000_001,
        }),
        actor: Some(Actor {
            principal_id: "staff-17".into(),
            kind: PrincipalKind::Staff as i32,
            organisation_ods_code: "A81001".into(),
            role: "R8000".into(),
        }),
        patient_id: patient.into(),
        action: Action::Read as i32,
        resource_type: "Observation".into(),
        record_id: "obs-1".into(),
        purpose: Purpose::DirectCare as i32,
        outcome: Outcome::Success as i32,
        outcome_reason: String::new(),
        break_glass: false,
        source_service: "records".into(),
        decision_id: "decision-1".into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
    }
}

fn assert_invalid(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field),
        "message {:?} should name {field}",
        status.message()
    );
}

#[tokio::test]
async fn append_writes_a_chained_entry_and_is_idempotent() {
    let h = Harness::start().await;
    let first = h
        .append(event("ev-1", "p1"))
        .await
        .expect("append")
        .into_inner();
    assert!(!first.duplicate);
    let entry = first.entry.expect("entry");
    assert_eq!(entry.sequence, 1);
    assert_eq!(entry.event, Some(event("ev-1", "p1")));
    assert_eq!(entry.previous_hash, vec![0u8; 32]);
    assert_eq!(entry.entry_hash.len(), 32);
    assert!(entry.record_time.is_some());

    let second = h
        .append(event("ev-2", "p1"))
        .await
        .expect("append")
        .into_inner();
    let second = second.entry.expect("entry");
    assert_eq!(second.sequence, 2);
    assert_eq!(second.previous_hash, entry.entry_hash);

    // The same event again: the entry already written, flagged.
    let again = h
        .append(event("ev-1", "p1"))
        .await
        .expect("replay")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.entry, Some(entry));

    // The same id with other content.
    let mut altered = event("ev-1", "p1");
    altered.outcome = Outcome::Denied as i32;
    let status = h.append(altered).await.expect_err("conflict");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("event.event_id"), "{status:?}");

    let head = h
        .store
        .verify_chain()
        .await
        .expect("read")
        .expect("verifies");
    assert_eq!(head.size, 2);
}

#[tokio::test]
async fn append_refuses_each_bad_field_by_name_and_stores_nothing() {
    let h = Harness::start().await;
    type Mutation = fn(&mut AuditEvent);
    let cases: Vec<(&str, Mutation)> = vec![
        ("event.event_id", |e| e.event_id.clear()),
        ("event.event_id", |e| e.event_id = "x".repeat(129)),
        ("event.occur_time", |e| e.occur_time = None),
        ("event.occur_time", |e| {
            e.occur_time = Some(prost_types::Timestamp {
                seconds: 1,
                nanos: -1,
            })
        }),
        ("event.actor", |e| e.actor = None),
        ("event.actor.principal_id", |e| {
            e.actor.as_mut().expect("actor").principal_id.clear()
        }),
        ("event.actor.organisation_ods_code", |e| {
            e.actor.as_mut().expect("actor").organisation_ods_code = "  ".into()
        }),
        ("event.actor.kind", |e| {
            e.actor.as_mut().expect("actor").kind = 77
        }),
        ("event.patient_id", |e| e.patient_id.clear()),
        ("event.action", |e| e.action = Action::Unspecified as i32),
        ("event.action", |e| e.action = 42),
        ("event.outcome", |e| e.outcome = Outcome::Unspecified as i32),
        ("event.outcome", |e| e.outcome = 9),
        ("event.purpose", |e| e.purpose = 99),
        ("event.source_service", |e| e.source_service.clear()),
        ("event.outcome_reason", |e| {
            e.outcome_reason = "r".repeat(1025)
        }),
        ("event.trace_id", |e| e.trace_id = "a\nb".into()),
    ];
    for (field, mutate) in cases {
        let mut bad = event("ev-bad", "p1");
        mutate(&mut bad);
        let status = h.append(bad).await.expect_err(field);
        assert_invalid(&status, field);
    }
    let status = h
        .client()
        .append(with_token(AppendRequest { event: None }, &h.appender()))
        .await
        .expect_err("no event");
    assert_invalid(&status, "event");
    assert_eq!(h.log_size().await, 0);
}

#[tokio::test]
async fn append_batch_is_atomic_and_idempotent() {
    let h = Harness::start().await;
    h.append(event("ev-0", "p1")).await.expect("append");
    let response = h
        .client()
        .append_batch(with_token(
            AppendBatchRequest {
                events: vec![
                    event("ev-1", "p1"),
                    event("ev-0", "p1"),
                    event("ev-2", "p2"),
                ],
            },
            &h.appender(),
        ))
        .await
        .expect("batch")
        .into_inner();
    let sequences: Vec<i64> = response.entries.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, vec![2, 1, 3]);
    assert_eq!(response.entries[1].event, Some(event("ev-0", "p1")));

    // One bad event: nothing of the batch is written, and the error names it.
    let mut bad = event("ev-5", "p1");
    bad.patient_id.clear();
    let status = h
        .client()
        .append_batch(with_token(
            AppendBatchRequest {
                events: vec![event("ev-3", "p1"), event("ev-4", "p1"), bad],
            },
            &h.appender(),
        ))
        .await
        .expect_err("invalid");
    assert_invalid(&status, "events[2].patient_id");

    // A conflict with the log: nothing written either.
    let mut altered = event("ev-1", "p1");
    altered.break_glass = true;
    let status = h
        .client()
        .append_batch(with_token(
            AppendBatchRequest {
                events: vec![event("ev-3", "p1"), altered],
            },
            &h.appender(),
        ))
        .await
        .expect_err("conflict");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(
        status.message().contains("events[1].event_id"),
        "{status:?}"
    );
    assert_eq!(h.log_size().await, 3);

    let status = h
        .client()
        .append_batch(with_token(
            AppendBatchRequest { events: vec![] },
            &h.appender(),
        ))
        .await
        .expect_err("empty");
    assert_invalid(&status, "events");

    let too_many = (0..501)
        .map(|n| event(&format!("many-{n}"), "p1"))
        .collect();
    let status = h
        .client()
        .append_batch(with_token(
            AppendBatchRequest { events: too_many },
            &h.appender(),
        ))
        .await
        .expect_err("too many");
    assert_invalid(&status, "events");
    assert!(status.message().contains("500"), "{status:?}");
    assert_eq!(h.log_size().await, 3);
    assert!(h.store.verify_chain().await.expect("read").is_ok());
}

#[tokio::test]
async fn query_pages_through_a_patients_entries() {
    let h = Harness::start().await;
    let events = (0..5)
        .flat_map(|n| [event(&format!("a{n}"), "p1"), event(&format!("b{n}"), "p2")])
        .collect();
    h.client()
        .append_batch(with_token(AppendBatchRequest { events }, &h.appender()))
        .await
        .expect("batch");

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .client()
            .query(with_token(
                QueryRequest {
                    patient_id: "p1".into(),
                    page_size: 2,
                    page_token: token.clone(),
                },
                &h.reader(),
            ))
            .await
            .expect("query")
            .into_inner();
        assert!(page.entries.len() <= 2);
        for entry in &page.entries {
            let e = entry.event.as_ref().expect("event");
            assert_eq!(e.patient_id, "p1");
            seen.push(e.event_id.clone());
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec!["a0", "a1", "a2", "a3", "a4"]);

    // page_size 0 means 100: everything at once.
    let all = h
        .client()
        .query(with_token(
            QueryRequest {
                patient_id: "p2".into(),
                page_size: 0,
                page_token: String::new(),
            },
            &h.reader(),
        ))
        .await
        .expect("query")
        .into_inner();
    assert_eq!(all.entries.len(), 5);
    assert!(all.next_page_token.is_empty());

    // A patient nobody has accessed has an empty log, not NOT_FOUND.
    let none = h
        .client()
        .query(with_token(
            QueryRequest {
                patient_id: "never-seen".into(),
                page_size: 10,
                page_token: String::new(),
            },
            &h.reader(),
        ))
        .await
        .expect("query")
        .into_inner();
    assert!(none.entries.is_empty());
}

#[tokio::test]
async fn query_and_access_report_refuse_bad_paging() {
    let h = Harness::start().await;
    let cases = [
        ("patient_id", "", 10, ""),
        ("page_size", "p1", 501, ""),
        ("page_size", "p1", -1, ""),
        ("page_token", "p1", 10, "not-a-token!"),
        ("page_token", "p1", 10, "AAAA"),
    ];
    for (field, patient, size, token) in cases {
        let status = h
            .client()
            .query(with_token(
                QueryRequest {
                    patient_id: patient.into(),
                    page_size: size,
                    page_token: token.into(),
                },
                &h.reader(),
            ))
            .await
            .expect_err(field);
        assert_invalid(&status, field);
        let status = h
            .client()
            .access_report(with_token(
                AccessReportRequest {
                    patient_id: patient.into(),
                    page_size: size,
                    page_token: token.into(),
                },
                &h.reader(),
            ))
            .await
            .expect_err(field);
        assert_invalid(&status, field);
    }
}

#[tokio::test]
async fn access_report_says_who_accessed_a_record() {
    let h = Harness::start().await;
    let mut denied = event("ev-2", "p1");
    denied.outcome = Outcome::Denied as i32;
    denied.outcome_reason = "DIRECTIVE_DENY".into();
    denied.purpose = Purpose::Research as i32;
    let mut glass = event("ev-3", "p1");
    glass.break_glass = true;
    glass.action = Action::Export as i32;
    glass.resource_type = String::new();
    h.client()
        .append_batch(with_token(
            AppendBatchRequest {
                events: vec![
                    event("ev-1", "p1"),
                    event("ev-x", "p2"),
                    denied.clone(),
                    glass.clone(),
                ],
            },
            &h.appender(),
        ))
        .await
        .expect("batch");

    let first = h
        .client()
        .access_report(with_token(
            AccessReportRequest {
                patient_id: "p1".into(),
                page_size: 2,
                page_token: String::new(),
            },
            &h.reader(),
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(first.lines.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let line = &first.lines[1];
    assert_eq!(line.occur_time, denied.occur_time);
    assert_eq!(line.actor, denied.actor);
    assert_eq!(line.action, Action::Read as i32);
    assert_eq!(line.resource_type, "Observation");
    assert_eq!(line.purpose, Purpose::Research as i32);
    assert_eq!(line.outcome, Outcome::Denied as i32);
    assert_eq!(line.outcome_reason, "DIRECTIVE_DENY");
    assert!(!line.break_glass);

    let rest = h
        .client()
        .access_report(with_token(
            AccessReportRequest {
                patient_id: "p1".into(),
                page_size: 2,
                page_token: first.next_page_token,
            },
            &h.reader(),
        ))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(rest.lines.len(), 1);
    assert!(rest.next_page_token.is_empty());
    assert!(rest.lines[0].break_glass);
    assert_eq!(rest.lines[0].action, Action::Export as i32);
}

#[tokio::test]
async fn every_call_needs_a_token_and_its_scope() {
    let h = Harness::start().await;
    let mut client = h.client();

    let status = client
        .append(AppendRequest {
            event: Some(event("ev-1", "p1")),
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .query(QueryRequest {
            patient_id: "p1".into(),
            ..Default::default()
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .signed_tree_head(SignedTreeHeadRequest {})
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .append(with_token(
            AppendRequest {
                event: Some(event("ev-1", "p1")),
            },
            "not.a.jwt",
        ))
        .await
        .expect_err("bad token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Reading does not let you append, nor appending read.
    let status = client
        .append(with_token(
            AppendRequest {
                event: Some(event("ev-1", "p1")),
            },
            &h.reader(),
        ))
        .await
        .expect_err("no append scope");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(SCOPE_APPEND), "{status:?}");
    let status = client
        .append_batch(with_token(
            AppendBatchRequest {
                events: vec![event("ev-1", "p1")],
            },
            &h.reader(),
        ))
        .await
        .expect_err("no append scope");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    for request in [
        QueryRequest {
            patient_id: "p1".into(),
            ..Default::default()
        },
        // Scope is checked before the request is looked at.
        QueryRequest::default(),
    ] {
        let status = client
            .query(with_token(request, &h.appender()))
            .await
            .expect_err("no read scope");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(SCOPE_READ), "{status:?}");
    }
    let status = client
        .access_report(with_token(
            AccessReportRequest {
                patient_id: "p1".into(),
                ..Default::default()
            },
            &h.appender(),
        ))
        .await
        .expect_err("no read scope");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(h.log_size().await, 0);
}

#[tokio::test]
async fn merkle_rpcs_are_not_implemented_yet() {
    let h = Harness::start().await;
    let mut client = h.client();
    let token = h.reader();
    let statuses = [
        client
            .signed_tree_head(with_token(SignedTreeHeadRequest {}, &token))
            .await
            .expect_err("unimplemented"),
        client
            .inclusion_proof(with_token(
                InclusionProofRequest {
                    sequence: 1,
                    tree_size: 1,
                },
                &token,
            ))
            .await
            .expect_err("unimplemented"),
        client
            .consistency_proof(with_token(
                ConsistencyProofRequest {
                    first_tree_size: 1,
                    second_tree_size: 2,
                },
                &token,
            ))
            .await
            .expect_err("unimplemented"),
    ];
    for (status, rpc) in
        statuses
            .iter()
            .zip(["SignedTreeHead", "InclusionProof", "ConsistencyProof"])
    {
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
        assert!(status.message().contains(rpc), "{status:?}");
        assert!(
            status.message().contains("the Merkle log issue"),
            "{status:?}"
        );
    }
}
