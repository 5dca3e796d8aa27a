//! The audit service over real sockets, through the generated client.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sharedcare_audit::{
    SCOPE_APPEND, SCOPE_READ,
    auditor::{LineError, check_report_line, leaf_hash_of},
    domain::{
        checkpoint::{LogSigner, LogVerifierKey},
        merkle::{MemoryTree, verify_consistency, verify_inclusion},
    },
    heads::TreeHeads,
    store::{AuditLogStore, SqlStore},
};
use sharedcare_kit::{
    access::Capability,
    server::MessageLimits,
    testing::{TestAuthority, TestDatabase, TestServer, TestToken, spawn, with_token},
};
use sharedcare_proto::{
    audit::v1::{
        AccessReportLine, AccessReportRequest, Action, AppendBatchRequest, AppendRequest,
        AuditEntry, AuditEvent, BreakGlassAccess, ConsistencyProofRequest, InclusionProofRequest,
        ListBreakGlassAccessesRequest, ListEntriesRequest, Outcome, QueryRequest,
        SignedTreeHeadRequest, SignedTreeHeadResponse, audit_service_client::AuditServiceClient,
    },
    common::v1::{Actor, PrincipalKind, Purpose},
};
use tonic::{Code, transport::Channel};

struct Harness {
    authority: TestAuthority,
    store: Arc<dyn AuditLogStore>,
    /// What an auditor is given to check the log's heads.
    verifier_key: LogVerifierKey,
    server: TestServer,
    /// One platform service's token, kept so its replays are its own.
    appender: String,
    _db: TestDatabase,
}

impl Harness {
    async fn start() -> Self {
        let db = TestDatabase::sqlite();
        let store: Arc<dyn AuditLogStore> =
            Arc::new(SqlStore::connect(db.url(), 4).await.expect("connect"));
        let authority = TestAuthority::new();
        let signer = LogSigner::new(
            "sharedcare.test/audit",
            ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
        )
        .expect("signer");
        let verifier_key = signer.verifier();
        let heads = TreeHeads::new(store.clone(), signer);
        let server = spawn(sharedcare_audit::spec(
            store.clone(),
            heads,
            authority.verifier(),
            MessageLimits { max_bytes: 4 << 20 },
        ))
        .await;
        let appender = service_token(&authority, &[SCOPE_APPEND]);
        Harness {
            authority,
            store,
            verifier_key,
            server,
            appender,
            _db: db,
        }
    }

    fn client(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.server.channel.clone())
    }

    fn appender(&self) -> String {
        self.appender.clone()
    }

    /// The principal id of the harness's appending service.
    fn appender_id(&self) -> String {
        subject(&self.appender)
    }

    /// A service token with only the read scope (services may not read).
    fn service_reader(&self) -> String {
        service_token(&self.authority, &[SCOPE_READ])
    }

    /// A staff token at `org` with `audit.read` and these capabilities.
    fn staff(&self, org: &str, capabilities: &[Capability]) -> String {
        self.authority.sign(TestToken {
            kind: PrincipalKind::Staff,
            org,
            role: "R8000",
            scopes: &[SCOPE_READ],
            purposes: &[Purpose::DirectCare],
            capabilities,
            patient: "",
        })
    }

    /// A platform auditor: reads everything.
    fn reader(&self) -> String {
        self.staff("X26", &[Capability::PlatformAuditor])
    }

    /// A privacy officer at `org`.
    fn officer(&self, org: &str) -> String {
        self.staff(org, &[Capability::PrivacyOfficer])
    }

    /// A patient's own token, with `audit.read`.
    fn patient(&self, patient: &str) -> String {
        self.authority.sign(TestToken {
            kind: PrincipalKind::Patient,
            org: "",
            role: "",
            scopes: &[SCOPE_READ],
            purposes: &[Purpose::PatientAccess],
            capabilities: &[],
            patient,
        })
    }

    async fn append(
        &self,
        event: AuditEvent,
    ) -> Result<tonic::Response<sharedcare_proto::audit::v1::AppendResponse>, tonic::Status> {
        self.append_as(event, &self.appender).await
    }

    async fn append_as(
        &self,
        event: AuditEvent,
        token: &str,
    ) -> Result<tonic::Response<sharedcare_proto::audit::v1::AppendResponse>, tonic::Status> {
        self.client()
            .append(with_token(AppendRequest { event: Some(event) }, token))
            .await
    }

    async fn append_all(&self, events: Vec<AuditEvent>) {
        self.client()
            .append_batch(with_token(AppendBatchRequest { events }, &self.appender))
            .await
            .expect("batch");
    }

    async fn query(
        &self,
        patient: &str,
        page_size: i32,
        token: &str,
    ) -> Result<Vec<AuditEvent>, tonic::Status> {
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client()
                .query(with_token(
                    QueryRequest {
                        patient_id: patient.into(),
                        page_size,
                        page_token,
                    },
                    token,
                ))
                .await?
                .into_inner();
            assert!(page.entries.len() <= usize::try_from(page_size).expect("size"));
            events.extend(page.entries.into_iter().map(|e| e.event.expect("event")));
            if page.next_page_token.is_empty() {
                return Ok(events);
            }
            page_token = page.next_page_token;
        }
    }

    async fn report(
        &self,
        patient: &str,
        page_size: i32,
        token: &str,
    ) -> Result<Vec<AccessReportLine>, tonic::Status> {
        let mut lines = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .client()
                .access_report(with_token(
                    AccessReportRequest {
                        patient_id: patient.into(),
                        page_size,
                        page_token,
                        with_proofs: false,
                    },
                    token,
                ))
                .await?
                .into_inner();
            assert!(page.lines.len() <= usize::try_from(page_size).expect("size"));
            lines.extend(page.lines);
            if page.next_page_token.is_empty() {
                return Ok(lines);
            }
            page_token = page.next_page_token;
        }
    }

    async fn log_size(&self) -> usize {
        self.store.entries(0, 1000).await.expect("entries").len()
    }
}

fn service_token(authority: &TestAuthority, scopes: &[&str]) -> String {
    authority.token(PrincipalKind::Service, "X26", "", scopes)
}

/// The principal id (`sub`) a token was issued to.
fn subject(token: &str) -> String {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    let claims: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    claims["sub"].as_str().expect("sub").to_owned()
}

fn event(id: &str, patient: &str) -> AuditEvent {
    AuditEvent {
        event_id: id.into(),
        occur_time: Some(prost_types::Timestamp {
            seconds: 1_750_000_000,
            nanos: 250_000_001,
        }),
        actor: Some(Actor {
            acting_application: None,
            principal_id: "staff-17".into(),
            kind: PrincipalKind::Staff as i32,
            organisation_ods_code: "A81001".into(),
            role: "R8000".into(),
            patient_id: String::new(),
            display_name: "Dr Asha Patel".into(),
            organisation_name: "Leeds Health Centre".into(),
            capabilities: vec![],
        }),
        patient_id: patient.into(),
        action: Action::Read as i32,
        resource_type: "Observation".into(),
        record_id: "obs-1".into(),
        record_ids: vec![],
        purpose: Purpose::DirectCare as i32,
        outcome: Outcome::Success as i32,
        outcome_reason: String::new(),
        break_glass: false,
        source_service: "records".into(),
        decision_id: "decision-1".into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        appended_by: String::new(),
        trace_parent: String::new(),
    }
}

/// An event by a member of staff at `org`.
fn event_by(id: &str, patient: &str, org: &str) -> AuditEvent {
    let mut e = event(id, patient);
    e.actor.as_mut().expect("actor").organisation_ods_code = org.into();
    e
}

/// An event by the patient themselves.
fn event_by_patient(id: &str, patient: &str) -> AuditEvent {
    let mut e = event(id, patient);
    e.actor = Some(Actor {
        principal_id: format!("patient-login-{patient}"),
        kind: PrincipalKind::Patient as i32,
        organisation_ods_code: String::new(),
        role: String::new(),
        patient_id: patient.into(),
        ..Actor::default()
    });
    e.purpose = Purpose::PatientAccess as i32;
    e
}

/// `e` as audit stores it, appended by `appended_by`.
fn stored(mut e: AuditEvent, appended_by: &str) -> AuditEvent {
    e.appended_by = appended_by.into();
    e
}

fn assert_denied(status: &tonic::Status, names: &[&str]) {
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    for name in names {
        assert!(
            status.message().contains(name),
            "message {:?} should name {name}",
            status.message()
        );
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
async fn append_writes_a_numbered_leaf_and_is_idempotent() {
    let h = Harness::start().await;
    let first = h
        .append(event("ev-1", "p1"))
        .await
        .expect("append")
        .into_inner();
    assert!(!first.duplicate);
    let entry = first.entry.expect("entry");
    assert_eq!(entry.sequence, 1);
    assert_eq!(
        entry.event,
        Some(stored(event("ev-1", "p1"), &h.appender_id()))
    );
    assert_eq!(entry.leaf_hash, leaf_hash_of(&entry).to_vec());
    assert!(entry.record_time.is_some());

    let second = h
        .append(event("ev-2", "p1"))
        .await
        .expect("append")
        .into_inner();
    let second = second.entry.expect("entry");
    assert_eq!(second.sequence, 2);

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
    assert_eq!(h.log_size().await, 2);
    assert_eq!(h.store.tree_size().await.expect("size"), 2);
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
        ("event.actor.display_name", |e| {
            e.actor.as_mut().expect("actor").display_name = "n".repeat(129)
        }),
        ("event.actor.organisation_name", |e| {
            e.actor.as_mut().expect("actor").organisation_name = "a\nb".into()
        }),
        ("event.actor.patient_id", |e| {
            e.actor.as_mut().expect("actor").patient_id = "p1".into()
        }),
        ("event.actor.patient_id", |e| {
            e.actor.as_mut().expect("actor").kind = PrincipalKind::Patient as i32
        }),
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
    assert_eq!(
        response.entries[1].event,
        Some(stored(event("ev-0", "p1"), &h.appender_id()))
    );

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
    assert_eq!(h.store.tree_size().await.expect("size"), 3);
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
                    with_proofs: false,
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
                with_proofs: false,
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
                with_proofs: false,
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
async fn access_report_lines_are_words_and_with_proofs_check_against_the_signed_head() {
    let h = Harness::start().await;
    let mut refused = event("ev-2", "p1");
    refused.outcome = Outcome::Denied as i32;
    refused.outcome_reason = "NO_CARE_RELATIONSHIP".into();
    h.client()
        .append_batch(with_token(
            AppendBatchRequest {
                events: vec![event("ev-1", "p1"), event("ev-x", "p2"), refused],
            },
            &h.appender(),
        ))
        .await
        .expect("batch");
    let report = |with_proofs| {
        let mut client = h.client();
        let token = h.patient("p1");
        async move {
            client
                .access_report(with_token(
                    AccessReportRequest {
                        patient_id: "p1".into(),
                        with_proofs,
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .expect("report")
                .into_inner()
        }
    };

    let plain = report(false).await;
    assert_eq!(plain.lines.len(), 2);
    assert!(plain.tree_head.is_none());
    assert!(
        plain
            .lines
            .iter()
            .all(|l| l.entry.is_none() && l.inclusion_proof.is_empty())
    );
    let allowed = &plain.lines[0];
    assert_eq!(allowed.sequence, 1);
    assert_eq!(allowed.actor_name, "Dr Asha Patel");
    assert_eq!(allowed.role_name, "Clinical Practitioner");
    assert_eq!(allowed.organisation_name, "Leeds Health Centre");
    assert_eq!(
        allowed.summary,
        "Dr Asha Patel, Clinical Practitioner, at Leeds Health Centre (A81001) looked at an \
         Observation for the patient's care — allowed."
    );
    let denied = &plain.lines[1];
    assert_eq!(denied.sequence, 3);
    assert_eq!(denied.reason_text, "they are not caring for the patient");
    assert!(
        denied.summary.contains("tried to look at an Observation")
            && denied
                .summary
                .ends_with("refused: they are not caring for the patient."),
        "{}",
        denied.summary
    );

    // With proofs: every line checks against a head the log's key signed.
    let proved = report(true).await;
    let note = &proved.tree_head.as_ref().expect("a signed head").checkpoint;
    let head = h
        .verifier_key
        .verify(note)
        .expect("signed by the log's key");
    assert_eq!(head.size, 3);
    for line in &proved.lines {
        check_report_line(line, &head).expect("the line is in the log");
    }
    // A line that says other than its entry, or a wrong path, is caught.
    let mut reworded = proved.lines[1].clone();
    reworded.summary = reworded.summary.replace("refused", "allowed");
    assert_eq!(
        check_report_line(&reworded, &head),
        Err(LineError::Differs(3))
    );
    let mut moved = proved.lines[1].clone();
    moved.sequence = 2;
    moved.entry.as_mut().expect("entry").sequence = 2;
    assert!(matches!(
        check_report_line(&moved, &head),
        Err(LineError::NotIncluded { sequence: 2, .. })
    ));
    assert_eq!(
        check_report_line(&plain.lines[0], &head),
        Err(LineError::NoProof(1))
    );
}

#[tokio::test]
async fn every_call_needs_a_token_and_its_rule() {
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
        .signed_tree_head(SignedTreeHeadRequest::default())
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
            &h.service_reader(),
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
            &h.service_reader(),
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

impl Harness {
    async fn head(&self, fresh: bool) -> SignedTreeHeadResponse {
        self.client()
            .signed_tree_head(with_token(SignedTreeHeadRequest { fresh }, &self.reader()))
            .await
            .expect("head")
            .into_inner()
    }

    async fn entries(&self) -> Vec<AuditEntry> {
        self.client()
            .list_entries(with_token(
                ListEntriesRequest {
                    after_sequence: 0,
                    page_size: 500,
                },
                &self.reader(),
            ))
            .await
            .expect("entries")
            .into_inner()
            .entries
    }
}

#[tokio::test]
async fn tree_heads_are_signed_and_proofs_verify_against_them() {
    let h = Harness::start().await;
    // The empty log has a signed head too.
    let empty = h.head(false).await;
    assert_eq!(empty.tree_size, 0);
    let head = h.verifier_key.verify(&empty.checkpoint).expect("verifies");
    assert_eq!(head.size, 0);
    assert_eq!(empty.origin, "sharedcare.test/audit");
    assert_eq!(empty.key_id.len(), 4);
    assert_eq!(empty.signature.len(), 64);

    h.append_all((0..5).map(|n| event(&format!("a{n}"), "p1")).collect())
        .await;
    h.append(event("b", "p2")).await.expect("append");
    h.append_all((0..7).map(|n| event(&format!("c{n}"), "p3")).collect())
        .await;

    // Until it is published again, the last head stands; fresh signs now.
    assert_eq!(h.head(false).await.tree_size, 0);
    let latest = h.head(true).await;
    assert_eq!(latest.tree_size, 13);
    assert_eq!(h.head(false).await, latest);
    let head = h.verifier_key.verify(&latest.checkpoint).expect("verifies");
    assert_eq!(head.root.to_vec(), latest.root_hash);
    assert_eq!(head.size, 13);

    // An auditor re-derives the root from the entries.
    let entries = h.entries().await;
    let mut tree = MemoryTree::new();
    for entry in &entries {
        tree.push(leaf_hash_of(entry));
    }
    assert_eq!(tree.root(13).expect("root"), head.root);

    // Every entry's inclusion in every tree that holds it.
    let mut client = h.client();
    for size in [1i64, 2, 6, 13] {
        let root = tree.root(size as u64).expect("root");
        for sequence in 1..=size {
            let proof = client
                .inclusion_proof(with_token(
                    InclusionProofRequest {
                        sequence,
                        tree_size: size,
                    },
                    &h.patient("p1"),
                ))
                .await
                .expect("proof")
                .into_inner();
            assert_eq!((proof.leaf_index, proof.tree_size), (sequence - 1, size));
            let leaf = leaf_hash_of(&entries[(sequence - 1) as usize]);
            verify_inclusion(
                leaf.as_bytes(),
                (sequence - 1) as u64,
                size as u64,
                &proof.audit_path,
                root.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("entry {sequence} in {size}: {e}"));
        }
    }
    // And that every head extends every earlier one.
    for old in 1..=13i64 {
        let proof = client
            .consistency_proof(with_token(
                ConsistencyProofRequest {
                    first_tree_size: old,
                    second_tree_size: 13,
                },
                &h.officer("A81001"),
            ))
            .await
            .expect("proof")
            .into_inner();
        verify_consistency(
            old as u64,
            13,
            tree.root(old as u64).expect("root").as_bytes(),
            head.root.as_bytes(),
            &proof.proof,
        )
        .unwrap_or_else(|e| panic!("{old} → 13: {e}"));
    }
}

#[tokio::test]
async fn bad_proof_requests_name_the_field() {
    let h = Harness::start().await;
    h.append_all((0..3).map(|n| event(&format!("a{n}"), "p1")).collect())
        .await;
    let mut client = h.client();
    let token = h.reader();
    for (sequence, tree_size, field, says) in [
        (0, 1, "sequence", "at least 1"),
        (-1, 1, "sequence", "at least 1"),
        (1, 0, "tree_size", "at least 1"),
        (3, 2, "tree_size", "at least the entry's sequence (3)"),
        (4, 4, "tree_size", "beyond the log, which holds 3 entries"),
        (1, i64::MAX, "tree_size", "beyond the log"),
    ] {
        let status = client
            .inclusion_proof(with_token(
                InclusionProofRequest {
                    sequence,
                    tree_size,
                },
                &token,
            ))
            .await
            .expect_err("refused");
        assert_invalid(&status, field);
        assert!(status.message().contains(says), "{status:?}");
    }
    for (first, second, field, says) in [
        (0, 2, "first_tree_size", "at least 1"),
        (3, 2, "second_tree_size", "at least first_tree_size (3)"),
        (
            1,
            4,
            "second_tree_size",
            "beyond the log, which holds 3 entries",
        ),
        (-5, -1, "first_tree_size", "at least 1"),
    ] {
        let status = client
            .consistency_proof(with_token(
                ConsistencyProofRequest {
                    first_tree_size: first,
                    second_tree_size: second,
                },
                &token,
            ))
            .await
            .expect_err("refused");
        assert_invalid(&status, field);
        assert!(status.message().contains(says), "{status:?}");
    }
    for (after, size, field) in [(-1, 10, "after_sequence"), (0, 501, "page_size")] {
        let status = client
            .list_entries(with_token(
                ListEntriesRequest {
                    after_sequence: after,
                    page_size: size,
                },
                &token,
            ))
            .await
            .expect_err("refused");
        assert_invalid(&status, field);
    }
    // Only a platform auditor lists the whole log.
    for token in [h.officer("A81001"), h.patient("p1"), h.appender()] {
        let status = client
            .list_entries(with_token(ListEntriesRequest::default(), &token))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    assert_eq!(h.log_size().await, 3);
}

#[tokio::test]
async fn an_event_far_in_the_future_is_refused() {
    let h = Harness::start().await;
    let mut future = event("ev-1", "p1");
    future.occur_time = Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3600,
        nanos: 0,
    });
    let status = h.append(future).await.expect_err("refused");
    assert_invalid(&status, "event.occur_time");
    assert!(status.message().contains("future"), "{status:?}");
    // A little ahead (clock skew) is fine.
    let mut skewed = event("ev-2", "p1");
    skewed.occur_time = Some(prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 60,
        nanos: 0,
    });
    h.append(skewed).await.expect("within the skew");
    assert_eq!(h.log_size().await, 1);
}

#[tokio::test]
async fn only_platform_services_append() {
    let h = Harness::start().await;
    let token = |kind| h.authority.token(kind, "A81001", "R8000", &[SCOPE_APPEND]);
    let patient = h.authority.sign(TestToken {
        kind: PrincipalKind::Patient,
        org: "",
        role: "",
        scopes: &[SCOPE_APPEND],
        purposes: &[Purpose::PatientAccess],
        capabilities: &[],
        patient: "p1",
    });
    let auditor = h.authority.sign(TestToken {
        kind: PrincipalKind::Staff,
        org: "A81001",
        role: "R8000",
        scopes: &[SCOPE_APPEND, SCOPE_READ],
        purposes: &[Purpose::DirectCare],
        capabilities: &[Capability::PlatformAuditor],
        patient: "",
    });
    for (who, token) in [
        ("staff", token(PrincipalKind::Staff)),
        ("application", token(PrincipalKind::Application)),
        ("admin", token(PrincipalKind::Admin)),
        ("patient", patient),
        ("auditor", auditor),
    ] {
        let status = h
            .append_as(event("ev-1", "p1"), &token)
            .await
            .expect_err(who);
        assert_denied(
            &status,
            &["Append may be called only by service", SCOPE_APPEND],
        );
        let status = h
            .client()
            .append_batch(with_token(
                AppendBatchRequest {
                    events: vec![event("ev-1", "p1")],
                },
                &token,
            ))
            .await
            .expect_err(who);
        assert_denied(
            &status,
            &["AppendBatch may be called only by service", SCOPE_APPEND],
        );
    }
    assert_eq!(h.log_size().await, 0);
}

#[tokio::test]
async fn the_appender_is_taken_from_the_token_not_the_event() {
    let h = Harness::start().await;
    let mut forged = event("ev-1", "p1");
    forged.appended_by = "svc-consent".into();
    let entry = h
        .append(forged.clone())
        .await
        .expect("append")
        .into_inner()
        .entry
        .expect("entry");
    let recorded = entry.event.clone().expect("event");
    assert_eq!(recorded.appended_by, h.appender_id());
    assert_ne!(recorded.appended_by, "svc-consent");
    assert_eq!(recorded, stored(event("ev-1", "p1"), &h.appender_id()));

    // The same service replaying, whatever it claims: a duplicate.
    let again = h
        .append(event("ev-1", "p1"))
        .await
        .expect("replay")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(again.entry, Some(entry));

    // Another service sending the same event: not the same event.
    let other = service_token(&h.authority, &[SCOPE_APPEND]);
    let status = h
        .append_as(event("ev-1", "p1"), &other)
        .await
        .expect_err("another appender");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("event.event_id"), "{status:?}");

    // The batch path records it the same way.
    let batch = h
        .client()
        .append_batch(with_token(
            AppendBatchRequest {
                events: vec![forged.clone(), event("ev-2", "p1")],
            },
            &other,
        ))
        .await
        .expect_err("another appender replaying ev-1");
    assert_eq!(batch.code(), Code::AlreadyExists, "{batch:?}");
    let mut second = event("ev-2", "p1");
    second.appended_by = h.appender_id();
    let response = h
        .client()
        .append_batch(with_token(
            AppendBatchRequest {
                events: vec![second],
            },
            &other,
        ))
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(
        response.entries[0]
            .event
            .as_ref()
            .expect("event")
            .appended_by,
        subject(&other)
    );
    assert_eq!(h.log_size().await, 2);
}

#[tokio::test]
async fn a_patient_actor_is_appended_and_read_back() {
    let h = Harness::start().await;
    let mine = event_by_patient("ev-1", "p1");
    h.append(mine.clone()).await.expect("append");
    let events = h.query("p1", 10, &h.reader()).await.expect("query");
    assert_eq!(events, vec![stored(mine.clone(), &h.appender_id())]);
    let lines = h.report("p1", 10, &h.patient("p1")).await.expect("report");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].actor, mine.actor);
    assert_eq!(lines[0].purpose, Purpose::PatientAccess as i32);
}

#[tokio::test]
async fn a_patient_reads_their_own_report_and_no_one_elses() {
    let h = Harness::start().await;
    h.append_all(vec![
        event_by("ev-1", "p1", "A81001"),
        event_by("ev-2", "p1", "B82002"),
        event_by("ev-3", "p2", "A81001"),
        event_by_patient("ev-4", "p1"),
    ])
    .await;
    let me = h.patient("p1");
    // Every access by anyone: that is the patient's right.
    let lines = h.report("p1", 1, &me).await.expect("own report");
    let orgs: Vec<String> = lines
        .iter()
        .map(|l| {
            l.actor
                .as_ref()
                .expect("actor")
                .organisation_ods_code
                .clone()
        })
        .collect();
    assert_eq!(orgs, vec!["A81001", "B82002", ""]);

    let status = h.report("p2", 10, &me).await.expect_err("another patient");
    assert_denied(&status, &["AccessReport", "own patient_id"]);
    // Query is for auditors: the raw log is not the patient's report.
    let status = h.query("p1", 10, &me).await.expect_err("query");
    assert_denied(&status, &["Query may be called only by"]);
}

#[tokio::test]
async fn a_privacy_officer_sees_only_their_organisations_accesses() {
    let h = Harness::start().await;
    h.append_all(vec![
        event_by("ev-1", "p1", "A81001"),
        event_by("ev-2", "p1", "B82002"),
        event_by_patient("ev-3", "p1"),
        event_by("ev-4", "p1", "B82002"),
        event_by("ev-5", "p1", "A81001"),
        event_by("ev-6", "p2", "A81001"),
        event_by("ev-7", "p1", "B82002"),
    ])
    .await;
    let officer = h.officer("A81001");
    for page_size in [1, 2, 100] {
        let events = h.query("p1", page_size, &officer).await.expect("query");
        let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(ids, vec!["ev-1", "ev-5"], "page size {page_size}");
        let lines = h.report("p1", page_size, &officer).await.expect("report");
        assert_eq!(lines.len(), 2, "page size {page_size}");
        for line in &lines {
            assert_eq!(
                line.actor.as_ref().expect("actor").organisation_ods_code,
                "A81001"
            );
        }
    }
    let other = h.officer("B82002");
    let events = h.query("p1", 2, &other).await.expect("query");
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, vec!["ev-2", "ev-4", "ev-7"]);
    // A long run of other organisations' accesses: a read scans a bounded
    // part of the log, so a page may come back empty with a token to go on.
    let mut events: Vec<AuditEvent> = (0..20)
        .map(|n| event_by(&format!("q{n}"), "p3", "B82002"))
        .collect();
    events.push(event_by("q-mine", "p3", "A81001"));
    h.append_all(events).await;
    let first = h
        .client()
        .query(with_token(
            QueryRequest {
                patient_id: "p3".into(),
                page_size: 1,
                page_token: String::new(),
            },
            &officer,
        ))
        .await
        .expect("query")
        .into_inner();
    assert!(first.entries.is_empty());
    assert!(!first.next_page_token.is_empty());
    let events = h.query("p3", 1, &officer).await.expect("query");
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, vec!["q-mine"]);
    // An organisation that accessed nothing sees nothing (not an error).
    let none = h
        .query("p1", 10, &h.officer("C83003"))
        .await
        .expect("query");
    assert!(none.is_empty());
}

#[tokio::test]
async fn a_platform_auditor_sees_everything() {
    let h = Harness::start().await;
    h.append_all(vec![
        event_by("ev-1", "p1", "A81001"),
        event_by("ev-2", "p1", "B82002"),
        event_by_patient("ev-3", "p1"),
    ])
    .await;
    let auditor = h.reader();
    let events = h.query("p1", 2, &auditor).await.expect("query");
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, vec!["ev-1", "ev-2", "ev-3"]);
    assert_eq!(h.report("p1", 2, &auditor).await.expect("report").len(), 3);
}

#[tokio::test]
async fn reading_needs_a_capability_or_a_patient_token() {
    let h = Harness::start().await;
    h.append_all(vec![event("ev-1", "p1")]).await;
    let plain_staff = h.staff("A81001", &[]);
    let other_capability = h.staff("A81001", &[Capability::RecordDirectives]);
    let application = h
        .authority
        .token(PrincipalKind::Application, "A81001", "", &[SCOPE_READ]);
    let admin = h
        .authority
        .token(PrincipalKind::Admin, "X26", "", &[SCOPE_READ]);
    for (who, token) in [
        ("staff without a capability", plain_staff),
        ("staff with another capability", other_capability),
        ("application", application),
        ("admin", admin),
        ("service", h.service_reader()),
    ] {
        let status = h.query("p1", 10, &token).await.expect_err(who);
        assert_denied(
            &status,
            &["Query may be called only by", "platform_auditor"],
        );
        let status = h.report("p1", 10, &token).await.expect_err(who);
        assert_denied(
            &status,
            &["AccessReport may be called only by", "privacy_officer"],
        );
    }
    // A patient token without audit.read is refused too.
    let patient = h.authority.sign(TestToken {
        kind: PrincipalKind::Patient,
        org: "",
        role: "",
        scopes: &[],
        purposes: &[Purpose::PatientAccess],
        capabilities: &[],
        patient: "p1",
    });
    let status = h.report("p1", 10, &patient).await.expect_err("no scope");
    assert_denied(&status, &[SCOPE_READ]);
}

/// A break-glass event by staff at `org`: the grant consent records, or a
/// read under it.
fn broke_glass(id: &str, patient: &str, org: &str) -> AuditEvent {
    let mut e = event_by(id, patient, org);
    e.break_glass = true;
    e.purpose = Purpose::EmergencyCare as i32;
    e.outcome_reason = "BREAK_GLASS".into();
    e
}

impl Harness {
    /// One page of break-glass accesses.
    async fn break_glass_page(
        &self,
        organisation: &str,
        page_size: i32,
        page_token: &str,
        token: &str,
    ) -> Result<sharedcare_proto::audit::v1::ListBreakGlassAccessesResponse, tonic::Status> {
        self.client()
            .list_break_glass_accesses(with_token(
                ListBreakGlassAccessesRequest {
                    organisation_ods_code: organisation.into(),
                    page_size,
                    page_token: page_token.into(),
                },
                token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every break-glass access `token` may list for `organisation`, paging
    /// `page_size` at a time.
    async fn break_glass(
        &self,
        organisation: &str,
        page_size: i32,
        token: &str,
    ) -> Result<Vec<BreakGlassAccess>, tonic::Status> {
        let mut accesses = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .break_glass_page(organisation, page_size, &page_token, token)
                .await?;
            assert!(page.accesses.len() <= usize::try_from(page_size).expect("size"));
            accesses.extend(page.accesses);
            if page.next_page_token.is_empty() {
                return Ok(accesses);
            }
            page_token = page.next_page_token;
        }
    }
}

/// The patient ids of `accesses`, in order.
fn patients_of(accesses: &[BreakGlassAccess]) -> Vec<&str> {
    accesses.iter().map(|a| a.patient_id.as_str()).collect()
}

/// The break-glass log the listing tests read: RR8 broke glass for p1 and
/// p2 (twice), A81001 for p4; everything else is unflagged.
async fn a_log_with_break_glass(h: &Harness) {
    h.append_all(vec![
        event_by("plain-1", "p1", "RR8"),
        broke_glass("rr8-p1", "p1", "RR8"),
        broke_glass("rr8-p2", "p2", "RR8"),
        event_by("plain-2", "p3", "RR8"),
        broke_glass("a81-p4", "p4", "A81001"),
        event_by_patient("plain-3", "p2"),
    ])
    .await;
    let mut read = broke_glass("rr8-p2-read", "p2", "RR8");
    read.outcome_reason = "BREAK_GLASS_GRANT".into();
    h.append(read).await.expect("append");
}

#[tokio::test]
async fn a_privacy_officer_lists_their_organisations_break_glass_accesses_across_patients() {
    let h = Harness::start().await;
    a_log_with_break_glass(&h).await;
    let officer = h.officer("RR8");
    for (named, page_size) in [("", 1), ("", 2), ("RR8", 100)] {
        let accesses = h
            .break_glass(named, page_size, &officer)
            .await
            .expect("listed");
        assert_eq!(
            patients_of(&accesses),
            ["p1", "p2", "p2"],
            "{named:?} {page_size} a page"
        );
        for access in &accesses {
            let line = access.line.as_ref().expect("line");
            assert!(line.break_glass);
            assert_eq!(
                line.actor.as_ref().expect("actor").organisation_ods_code,
                "RR8"
            );
            assert!(
                line.summary.starts_with("EMERGENCY ACCESS (break-glass): "),
                "{}",
                line.summary
            );
        }
    }
    // Each line is the access report's line for the same entry.
    let accesses = h.break_glass("", 10, &officer).await.expect("listed");
    let report = h.report("p2", 10, &h.reader()).await.expect("report");
    let flagged: Vec<&AccessReportLine> = report.iter().filter(|l| l.break_glass).collect();
    let listed: Vec<&AccessReportLine> = accesses[1..]
        .iter()
        .map(|a| a.line.as_ref().expect("line"))
        .collect();
    assert_eq!(listed, flagged);

    // Another organisation's officer sees only theirs; one whose staff
    // never broke glass sees nothing (not an error).
    let theirs = h
        .break_glass("", 10, &h.officer("A81001"))
        .await
        .expect("listed");
    assert_eq!(patients_of(&theirs), ["p4"]);
    let none = h
        .break_glass("", 10, &h.officer("C83003"))
        .await
        .expect("listed");
    assert!(none.is_empty());
}

#[tokio::test]
async fn a_platform_auditor_lists_every_organisations_break_glass_accesses_or_one() {
    let h = Harness::start().await;
    a_log_with_break_glass(&h).await;
    let auditor = h.reader();
    let all = h.break_glass("", 2, &auditor).await.expect("listed");
    assert_eq!(patients_of(&all), ["p1", "p2", "p4", "p2"]);
    assert!(
        all.iter()
            .all(|a| a.line.as_ref().is_some_and(|l| l.break_glass))
    );
    let one = h.break_glass("A81001", 2, &auditor).await.expect("listed");
    assert_eq!(patients_of(&one), ["p4"]);
    let rr8 = h.break_glass("RR8", 1, &auditor).await.expect("listed");
    assert_eq!(patients_of(&rr8), ["p1", "p2", "p2"]);
    assert!(
        h.break_glass("Q999", 10, &auditor)
            .await
            .expect("listed")
            .is_empty()
    );
}

#[tokio::test]
async fn a_privacy_officer_naming_another_organisation_is_refused() {
    let h = Harness::start().await;
    a_log_with_break_glass(&h).await;
    for other in ["A81001", "rr8", "Q999"] {
        let status = h
            .break_glass_page(other, 10, "", &h.officer("RR8"))
            .await
            .expect_err(other);
        assert_denied(
            &status,
            &["ListBreakGlassAccesses", "own organisation's break-glass"],
        );
        assert!(!status.message().contains(other), "{status:?}");
    }
}

#[tokio::test]
async fn patients_and_ordinary_staff_cannot_list_break_glass_accesses() {
    let h = Harness::start().await;
    a_log_with_break_glass(&h).await;
    let application = h
        .authority
        .token(PrincipalKind::Application, "RR8", "", &[SCOPE_READ]);
    let admin = h
        .authority
        .token(PrincipalKind::Admin, "X26", "", &[SCOPE_READ]);
    for (who, token) in [
        ("the patient", h.patient("p1")),
        ("staff without a capability", h.staff("RR8", &[])),
        (
            "staff who may break glass",
            h.staff("RR8", &[Capability::BreakGlass]),
        ),
        ("application", application),
        ("admin", admin),
        ("service", h.service_reader()),
    ] {
        let status = h.break_glass_page("", 10, "", &token).await.expect_err(who);
        assert_denied(
            &status,
            &[
                "ListBreakGlassAccesses may be called only by",
                "privacy_officer",
            ],
        );
        assert!(!status.message().contains("p1"), "{who}: {status:?}");
    }
}

#[tokio::test]
async fn listing_break_glass_accesses_refuses_bad_arguments_by_name() {
    let h = Harness::start().await;
    a_log_with_break_glass(&h).await;
    let too_long = "Q".repeat(129);
    let cases = [
        ("page_size", "", 501, ""),
        ("page_size", "", -1, ""),
        ("page_token", "", 10, "not-a-token!"),
        ("page_token", "", 10, "AAAA"),
        ("organisation_ods_code", too_long.as_str(), 10, ""),
        ("organisation_ods_code", "RR\n8", 10, ""),
    ];
    for (field, organisation, size, token) in cases {
        for reader in [h.reader(), h.officer("RR8")] {
            let status = h
                .break_glass_page(organisation, size, token, &reader)
                .await
                .expect_err(field);
            assert_invalid(&status, field);
        }
    }
}

/// The store finds break-glass entries by a column copied out of the event,
/// which the leaf hash does not cover: a row whose column was altered is
/// not listed unless its hashed event says break-glass by that organisation.
#[tokio::test]
async fn the_hashed_event_not_the_index_decides_what_is_listed() {
    use sea_orm::{ConnectionTrait, Database};
    let h = Harness::start().await;
    a_log_with_break_glass(&h).await;
    let db = Database::connect(h._db.url()).await.expect("connect");
    db.execute_unprepared(
        "UPDATE audit_entries SET break_glass_by = 'RR8' \
         WHERE event_id IN ('plain-1', 'a81-p4')",
    )
    .await
    .expect("alter the index");
    let accesses = h
        .break_glass("", 10, &h.officer("RR8"))
        .await
        .expect("listed");
    assert_eq!(patients_of(&accesses), ["p1", "p2", "p2"]);
    let all = h.break_glass("", 10, &h.reader()).await.expect("listed");
    assert_eq!(patients_of(&all), ["p1", "p2", "p4", "p2"]);
}
