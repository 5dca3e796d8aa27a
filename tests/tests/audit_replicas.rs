//! Two audit replicas (separate servers: their own store, pool, sequencer
//! and tree heads) on one PostgreSQL database, appended to concurrently
//! over gRPC: no append fails, the log neither forks nor gaps, both replicas
//! serve the same log and sign the same heads, and an event retried at the
//! other replica is not logged twice. Runs when SHAREDCARE_TEST_DATABASE_URL
//! is set.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sharedcare_audit::{
    auditor::leaf_hash_of,
    domain::{
        checkpoint::LogVerifierKey,
        merkle::{MemoryTree, verify_consistency},
    },
};
use sharedcare_kit::testing::{TestDatabase, with_token};
use sharedcare_proto::{
    audit::v1::{
        Action, AppendBatchRequest, AppendRequest, AuditEntry, AuditEvent, ConsistencyProofRequest,
        ListEntriesRequest, Outcome, SignedTreeHeadRequest, SignedTreeHeadResponse,
        audit_service_client::AuditServiceClient,
    },
    common::v1::{Actor, PrincipalKind, Purpose},
};
use sharedcare_tests::{Backend, Platform, RECORDS_SECRET};
use tonic::transport::Channel;

/// Concurrent appending tasks, AppendBatch calls per task, events per call.
const TASKS: usize = 8;
const CALLS: usize = 25;
const EVENTS: usize = 3;

type Client = AuditServiceClient<Channel>;

/// A valid event; everything but the id and patient is fixed, so sending
/// the same id again is a replay, not a conflict.
fn event(id: &str, patient: &str, occurred: &prost_types::Timestamp) -> AuditEvent {
    AuditEvent {
        event_id: id.into(),
        occur_time: Some(*occurred),
        actor: Some(Actor {
            principal_id: "staff-17".into(),
            kind: PrincipalKind::Staff as i32,
            organisation_ods_code: "A81001".into(),
            role: "R8000".into(),
            ..Default::default()
        }),
        patient_id: patient.into(),
        action: Action::Read as i32,
        resource_type: "Observation".into(),
        record_id: format!("obs-{id}"),
        purpose: Purpose::DirectCare as i32,
        outcome: Outcome::Success as i32,
        source_service: "records".into(),
        decision_id: "decision-1".into(),
        ..Default::default()
    }
}

/// The events of one AppendBatch call.
fn batch(task: usize, call: usize, occurred: &prost_types::Timestamp) -> Vec<AuditEvent> {
    (0..EVENTS)
        .map(|n| {
            event(
                &format!("t{task}-c{call}-e{n}"),
                &format!("patient-{task}"),
                occurred,
            )
        })
        .collect()
}

async fn append_batch(
    client: &mut Client,
    events: Vec<AuditEvent>,
    token: &str,
) -> Result<Vec<AuditEntry>, tonic::Status> {
    Ok(client
        .append_batch(with_token(AppendBatchRequest { events }, token))
        .await?
        .into_inner()
        .entries)
}

async fn fresh_head(client: &mut Client, token: &str) -> SignedTreeHeadResponse {
    client
        .signed_tree_head(with_token(SignedTreeHeadRequest { fresh: true }, token))
        .await
        .expect("fresh tree head")
        .into_inner()
}

/// The whole log from one replica, page by page.
async fn list_all(client: &mut Client, token: &str) -> Vec<AuditEntry> {
    let mut all: Vec<AuditEntry> = Vec::new();
    loop {
        let after_sequence = all.last().map_or(0, |e| e.sequence);
        let page = client
            .list_entries(with_token(
                ListEntriesRequest {
                    after_sequence,
                    page_size: 500,
                },
                token,
            ))
            .await
            .expect("list entries")
            .into_inner()
            .entries;
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// What one appending task saw: every entry it was answered with, the
/// events it sent by id, and every failure (reported together at the end).
#[derive(Default)]
struct Seen {
    answered: Vec<AuditEntry>,
    sent: HashMap<String, AuditEvent>,
    /// Which replica first appended each id (index into the clients).
    appended_at: HashMap<String, usize>,
    failures: Vec<String>,
}

/// One task: CALLS batches alternating between the replicas. Call 3 of
/// every five re-sends the previous batch to the other replica (a retry),
/// call 4 sends a new batch to both at once (a race); either way the
/// answer must be the entries written once.
async fn appender(
    task: usize,
    mut clients: [Client; 2],
    token: Arc<String>,
    auditor: Arc<String>,
    occurred: prost_types::Timestamp,
) -> (Seen, Option<(usize, SignedTreeHeadResponse)>) {
    let mut seen = Seen::default();
    let mut mid_run = None;
    let mut previous: Option<(usize, Vec<AuditEvent>, Vec<AuditEntry>)> = None;
    for call in 0..CALLS {
        let at = (task + call) % 2;
        if task == 0 && call == CALLS / 2 {
            // A head taken while every task is still appending.
            mid_run = Some((at, fresh_head(&mut clients[at], &auditor).await));
        }
        if call % 5 == 3
            && let Some((was_at, events, entries)) = previous.take()
        {
            let other = 1 - was_at;
            match append_batch(&mut clients[other], events, &token).await {
                Ok(again) if again == entries => {}
                Ok(again) => seen.failures.push(format!(
                    "task {task} call {call}: retry at replica {other} answered {:?}, first answer {:?}",
                    sequences(&again),
                    sequences(&entries)
                )),
                Err(status) => seen.failures.push(format!(
                    "task {task} call {call}: retry at replica {other} failed: {}",
                    said(&status)
                )),
            }
            continue;
        }
        let events = batch(task, call, &occurred);
        for e in &events {
            seen.sent.insert(e.event_id.clone(), e.clone());
            seen.appended_at.insert(e.event_id.clone(), at);
        }
        let answer = if call % 5 == 4 {
            let (mut a, mut b) = (clients[0].clone(), clients[1].clone());
            let (first, second) = tokio::join!(
                append_batch(&mut a, events.clone(), &token),
                append_batch(&mut b, events.clone(), &token)
            );
            match (first, second) {
                (Ok(first), Ok(second)) if first == second => Ok(first),
                (Ok(first), Ok(second)) => Err(format!(
                    "the same batch sent to both replicas at once was answered {:?} and {:?}",
                    sequences(&first),
                    sequences(&second)
                )),
                (first, second) => Err(format!(
                    "the same batch sent to both replicas at once: {} / {}",
                    first.err().as_ref().map_or("ok".into(), said),
                    second.err().as_ref().map_or("ok".into(), said)
                )),
            }
        } else {
            append_batch(&mut clients[at], events.clone(), &token)
                .await
                .map_err(|status| format!("at replica {at}: {}", said(&status)))
        };
        match answer {
            Ok(entries) => {
                let ids: Vec<&str> = entries
                    .iter()
                    .map(|e| e.event.as_ref().map_or("", |ev| ev.event_id.as_str()))
                    .collect();
                let sent: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
                if ids != sent {
                    seen.failures.push(format!(
                        "task {task} call {call}: answered ids {ids:?} for {sent:?}"
                    ));
                }
                seen.answered.extend(entries.iter().cloned());
                previous = Some((at, events, entries));
            }
            Err(why) => seen
                .failures
                .push(format!("task {task} call {call}: {why}")),
        }
    }
    (seen, mid_run)
}

/// A status in one line (its metadata is noise here).
fn said(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

fn sequences(entries: &[AuditEntry]) -> Vec<i64> {
    entries.iter().map(|e| e.sequence).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_audit_replicas_on_one_postgres_database_never_fork_gap_or_fail() {
    let Some(db) = TestDatabase::postgres("two_audit_replicas_on_one_postgres_database").await
    else {
        return;
    };
    let p = Platform::start(Backend::Postgres(db)).await;
    let replica = p.spawn_audit_replica().await;
    let admin = p.admin_token().await;
    // records is a platform service: it may append.
    let token = Arc::new(p.token("records", RECORDS_SECRET).await);
    let auditor = Arc::new(p.staff(&admin, "X26", "platform-auditor").await);
    let key = LogVerifierKey::parse(&p.audit_verifier_key()).expect("the log's verifier key");
    let clients = [
        AuditServiceClient::new(p.audit.channel.clone()),
        AuditServiceClient::new(replica.channel.clone()),
    ];

    // A minute ago, whole seconds: valid, and the same on every retry.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let occurred = prost_types::Timestamp {
        seconds: i64::try_from(now.as_secs()).expect("seconds") - 60,
        nanos: 0,
    };

    // Fresh heads from alternate replicas throughout the run.
    let done = Arc::new(AtomicBool::new(false));
    let observer = tokio::spawn({
        let (mut clients, auditor, done) = (clients.clone(), auditor.clone(), done.clone());
        async move {
            let mut heads = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let at = heads.len() % 2;
                heads.push((at, fresh_head(&mut clients[at], &auditor).await));
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            heads
        }
    });
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            tokio::spawn(appender(
                task,
                clients.clone(),
                token.clone(),
                auditor.clone(),
                occurred,
            ))
        })
        .collect();
    let mut answered = Vec::new();
    let mut sent = HashMap::new();
    let mut appended_at = HashMap::new();
    let mut failures = Vec::new();
    let mut mid_run = None;
    for task in tasks {
        let (seen, head) = task.await.expect("appending task");
        answered.extend(seen.answered);
        sent.extend(seen.sent);
        appended_at.extend(seen.appended_at);
        failures.extend(seen.failures);
        mid_run = mid_run.or(head);
    }
    done.store(true, Ordering::Relaxed);
    let observed = observer.await.expect("observer task");
    assert!(
        failures.is_empty(),
        "{} append(s) failed or answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Both replicas list the same log: numbered 1..=N without gap or
    // duplicate, holding every event sent exactly once and nothing else.
    let mut clients = clients;
    let listed = list_all(&mut clients[0], &auditor).await;
    assert_eq!(
        listed,
        list_all(&mut clients[1], &auditor).await,
        "both replicas list the same entries"
    );
    let n = listed.len();
    assert_eq!(
        sequences(&listed),
        (1..=n as i64).collect::<Vec<_>>(),
        "numbered 1..=N"
    );
    let mut count: HashMap<&str, usize> = HashMap::new();
    for entry in &listed {
        let event = entry.event.as_ref().expect("an entry holds its event");
        *count.entry(event.event_id.as_str()).or_default() += 1;
        let original = sent
            .get(&event.event_id)
            .unwrap_or_else(|| panic!("{} was never sent", event.event_id));
        assert_eq!(
            AuditEvent {
                appended_by: String::new(),
                ..event.clone()
            },
            *original,
            "entry {} is the event sent",
            entry.sequence
        );
        assert!(!event.appended_by.is_empty(), "audit recorded the appender");
    }
    assert!(
        count.values().all(|&c| c == 1),
        "logged more than once: {:?}",
        count.iter().filter(|(_, c)| **c > 1).collect::<Vec<_>>()
    );
    assert_eq!(n, sent.len(), "every event sent is logged exactly once");
    assert_eq!(n, TASKS * (CALLS - CALLS.div_ceil(5)) * EVENTS);
    // Every answer stands in the log as answered (none was rolled back).
    for entry in &answered {
        assert_eq!(
            listed[usize::try_from(entry.sequence - 1).expect("sequence ≥ 1")],
            *entry,
            "the entry answered at {}",
            entry.sequence
        );
    }

    // The root re-derived from the leaves is what both replicas sign, with
    // the log's key: Ed25519 is deterministic, so the same checkpoint.
    let mut tree = MemoryTree::new();
    for entry in &listed {
        let leaf = leaf_hash_of(entry);
        assert_eq!(entry.leaf_hash, leaf.to_vec(), "leaf {}", entry.sequence);
        tree.push(leaf);
    }
    let root = tree.root(n as u64).expect("root").to_vec();
    let finals = [
        fresh_head(&mut clients[0], &auditor).await,
        fresh_head(&mut clients[1], &auditor).await,
    ];
    for (at, head) in finals.iter().enumerate() {
        assert_eq!(
            head.tree_size, n as i64,
            "replica {at}'s head covers the log"
        );
        assert_eq!(
            head.root_hash, root,
            "replica {at}'s head is the re-derived root"
        );
        let verified = key
            .verify(&head.checkpoint)
            .expect("signed with the log key");
        assert_eq!(
            (verified.size, verified.root.to_vec()),
            (n as u64, root.clone())
        );
    }
    assert_eq!(finals[0], finals[1], "both replicas sign the same head");

    // Every head taken during the run was of this same tree, and the final
    // head (from the other replica) proves it extends it.
    let (mid_at, mid) = mid_run.expect("task 0 took a head mid-run");
    assert!(
        0 < mid.tree_size && mid.tree_size < n as i64,
        "taken mid-run: {} of {n}",
        mid.tree_size
    );
    let mut last_size = 0;
    let observed_count = observed.len();
    for (at, head) in std::iter::once((mid_at, mid)).chain(observed) {
        let verified = key
            .verify(&head.checkpoint)
            .expect("signed with the log key");
        assert_eq!(verified.size, u64::try_from(head.tree_size).expect("size"));
        if head.tree_size == 0 {
            continue;
        }
        let size = u64::try_from(head.tree_size).expect("size");
        assert_eq!(
            head.root_hash,
            tree.root(size).expect("root").to_vec(),
            "replica {at}'s head of size {size} is a prefix of the final tree"
        );
        let other = 1 - at;
        let proof = clients[other]
            .consistency_proof(with_token(
                ConsistencyProofRequest {
                    first_tree_size: head.tree_size,
                    second_tree_size: n as i64,
                },
                &auditor,
            ))
            .await
            .expect("consistency proof")
            .into_inner()
            .proof;
        verify_consistency(
            size,
            n as u64,
            &head.root_hash,
            &finals[other].root_hash,
            &proof,
        )
        .unwrap_or_else(|e| panic!("replica {at}'s {size} → replica {other}'s {n}: {e}"));
        last_size = last_size.max(size);
    }
    assert!(observed_count > 0, "the observer took heads during the run");
    assert!(last_size > 0);

    // A single Append retried at the other replica is a duplicate.
    for entry in [&listed[0], &listed[n / 2], &listed[n - 1]] {
        let id = &entry.event.as_ref().expect("event").event_id;
        let other = 1 - appended_at[id];
        let again = clients[other]
            .append(with_token(
                AppendRequest {
                    event: Some(sent[id].clone()),
                },
                &token,
            ))
            .await
            .expect("retry at the other replica")
            .into_inner();
        assert!(again.duplicate, "{id} retried at replica {other}");
        assert_eq!(again.entry.as_ref(), Some(entry));
    }
    assert_eq!(
        list_all(&mut clients[1], &auditor).await.len(),
        n,
        "retries logged nothing"
    );

    replica.stop().await;
    p.stop().await;
}
