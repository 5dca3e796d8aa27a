//! The store conformance suite: every behaviour written once against
//! `&dyn AuditLogStore`, run on every backend (`kit::testing`): memory,
//! SQLite and (when SHAREDCARE_TEST_DATABASE_URL is set) PostgreSQL, bare
//! and behind the group committer.

use std::sync::Arc;

use sharedcare_audit::{
    domain::{
        EncodedEvent, EventId, PageSize, PageToken, PatientId,
        merkle::{EMPTY_ROOT, MemoryTree, verify_consistency, verify_inclusion},
    },
    store::{self, AuditLogStore, GroupCommit, Proofs, SqlStore},
};
use sharedcare_kit::{
    error::Code,
    testing::{TestDatabase, on_every_backend},
};

fn event(id: &str, patient: &str, bytes: &str) -> EncodedEvent {
    EncodedEvent {
        event_id: EventId::parse("event_id", id).expect("event id"),
        patient_id: PatientId::parse("patient_id", patient).expect("patient id"),
        bytes: bytes.as_bytes().to_vec(),
        break_glass_by: None,
    }
}

/// An event flagged break-glass by an actor at `organisation`.
fn flagged(id: &str, patient: &str, organisation: &str) -> EncodedEvent {
    EncodedEvent {
        break_glass_by: Some(organisation.to_owned()),
        ..event(id, patient, id)
    }
}

/// Every page of break-glass entries for `organisation`, `n` at a time:
/// the sequences, in order, and how many pages it took.
async fn all_break_glass(
    store: &dyn AuditLogStore,
    organisation: Option<&str>,
    n: i32,
) -> (Vec<u64>, usize) {
    let mut seen = Vec::new();
    let mut token: Option<PageToken> = None;
    let mut pages = 0;
    loop {
        let page = store
            .break_glass_entries(organisation.map(str::to_owned), token, size(n))
            .await
            .expect("page");
        pages += 1;
        assert!(page.entries.len() <= usize::try_from(n).expect("size"));
        seen.extend(page.entries.iter().map(|e| e.sequence));
        match page.next {
            Some(next) => token = Some(next),
            None => return (seen, pages),
        }
    }
}

fn patient(id: &str) -> PatientId {
    PatientId::parse("patient_id", id).expect("patient id")
}

fn size(n: i32) -> PageSize {
    PageSize::parse("page_size", n).expect("page size")
}

/// Re-derives the tree from every entry and checks the stored tree against
/// it: same size, and the same root at every size (each read from the
/// stored nodes). Returns the size.
async fn verified_size(store: &dyn AuditLogStore) -> u64 {
    let entries = store.entries(0, 100_000).await.expect("entries");
    let mut tree = MemoryTree::new();
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.sequence, i as u64 + 1, "numbered without gaps");
        tree.push(entry.leaf_hash());
    }
    let size = store.tree_size().await.expect("tree size");
    assert_eq!(size, entries.len() as u64, "the tree covers every entry");
    let proofs = Proofs(store);
    for n in 0..=size {
        assert_eq!(
            proofs.root(n).await.expect("root"),
            tree.root(n).expect("root"),
            "root of the first {n}"
        );
    }
    size
}

async fn appends_number_entries_and_grow_the_tree(store: &dyn AuditLogStore) {
    assert_eq!(verified_size(store).await, 0);
    assert_eq!(Proofs(store).root(0).await.expect("root"), EMPTY_ROOT);
    let first = store
        .append(event("e1", "p1", "one"))
        .await
        .expect("append");
    assert!(!first.duplicate);
    assert_eq!(first.entry.sequence, 1);
    assert_eq!(first.entry.event, b"one");
    assert_eq!(
        Proofs(store).root(1).await.expect("root"),
        first.entry.leaf_hash()
    );
    let second = store
        .append(event("e2", "p2", "two"))
        .await
        .expect("append");
    assert_eq!(second.entry.sequence, 2);
    let all = store.entries(0, 10).await.expect("entries");
    assert_eq!(all, vec![first.entry.clone(), second.entry.clone()]);
    assert_eq!(
        store.entries(1, 10).await.expect("entries"),
        vec![second.entry.clone()]
    );
    assert_eq!(store.entry(2).await.expect("entry"), Some(second.entry));
    assert_eq!(store.entry(3).await.expect("entry"), None);
    assert_eq!(verified_size(store).await, 2);
}

/// Every inclusion and consistency proof the stored tree gives verifies
/// against the roots re-derived from the entries, at every size.
async fn proofs_from_stored_nodes_verify(store: &dyn AuditLogStore) {
    let mut tree = MemoryTree::new();
    // Batches of uneven sizes, so nodes form across batch boundaries.
    let mut n = 0;
    for batch in [1usize, 2, 5, 1, 8, 3] {
        let events = (0..batch)
            .map(|_| {
                n += 1;
                event(&format!("e{n}"), "p1", &format!("event {n}"))
            })
            .collect();
        for appended in store.append_batch(events).await.expect("batch") {
            tree.push(appended.entry.leaf_hash());
        }
    }
    let size = store.tree_size().await.expect("size");
    assert_eq!(size, 20);
    let proofs = Proofs(store);
    for new in 1..=size {
        let root = tree.root(new).expect("root");
        for index in 0..new {
            let path = proofs.inclusion(index, new).await.expect("inclusion");
            let entry = store.entry(index + 1).await.expect("entry").expect("held");
            verify_inclusion(
                entry.leaf_hash().as_bytes(),
                index,
                new,
                &path,
                root.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("leaf {index} in {new}: {e}"));
        }
        for old in 1..=new {
            let proof = proofs.consistency(old, new).await.expect("consistency");
            verify_consistency(
                old,
                new,
                tree.root(old).expect("root").as_bytes(),
                root.as_bytes(),
                &proof,
            )
            .unwrap_or_else(|e| panic!("{old} → {new}: {e}"));
        }
    }
}

async fn a_replay_returns_the_entry_already_written(store: &dyn AuditLogStore) {
    let first = store
        .append(event("e1", "p1", "one"))
        .await
        .expect("append");
    store
        .append(event("e2", "p1", "two"))
        .await
        .expect("append");
    let again = store
        .append(event("e1", "p1", "one"))
        .await
        .expect("replay");
    assert!(again.duplicate);
    assert_eq!(again.entry, first.entry);
    assert_eq!(verified_size(store).await, 2);
}

async fn the_same_id_with_other_content_is_refused(store: &dyn AuditLogStore) {
    store
        .append(event("e1", "p1", "one"))
        .await
        .expect("append");
    let err = store
        .append(event("e1", "p1", "one, altered"))
        .await
        .expect_err("conflict");
    assert_eq!(err.code, Code::AlreadyExists);
    assert!(err.message.contains("event.event_id"), "{}", err.message);
    // Another patient under the same id is a conflict too.
    let err = store
        .append(event("e1", "p2", "one"))
        .await
        .expect_err("conflict");
    assert_eq!(err.code, Code::AlreadyExists);
    assert_eq!(verified_size(store).await, 1);
}

async fn a_batch_is_appended_in_order(store: &dyn AuditLogStore) {
    store
        .append(event("e0", "p1", "zero"))
        .await
        .expect("append");
    let appended = store
        .append_batch(vec![
            event("e1", "p1", "one"),
            event("e0", "p1", "zero"),
            event("e2", "p2", "two"),
            event("e1", "p1", "one"),
        ])
        .await
        .expect("batch");
    let summary: Vec<(u64, bool)> = appended
        .iter()
        .map(|a| (a.entry.sequence, a.duplicate))
        .collect();
    assert_eq!(summary, vec![(2, false), (1, true), (3, false), (2, true)]);
    assert_eq!(verified_size(store).await, 3);
    assert!(store.append_batch(vec![]).await.expect("empty").is_empty());
}

async fn a_batch_with_a_conflict_writes_nothing(store: &dyn AuditLogStore) {
    store
        .append(event("e0", "p1", "zero"))
        .await
        .expect("append");
    let err = store
        .append_batch(vec![
            event("e1", "p1", "one"),
            event("e2", "p1", "two"),
            event("e0", "p1", "zero, altered"),
        ])
        .await
        .expect_err("conflict");
    assert_eq!(err.code, Code::AlreadyExists);
    assert!(
        err.message.contains("events[2].event_id"),
        "{}",
        err.message
    );
    // A conflict inside the batch itself.
    let err = store
        .append_batch(vec![
            event("e3", "p1", "three"),
            event("e3", "p1", "three?"),
        ])
        .await
        .expect_err("conflict");
    assert!(
        err.message.contains("events[1].event_id"),
        "{}",
        err.message
    );
    assert_eq!(verified_size(store).await, 1);
    // ...and the log goes on from where it was.
    let next = store
        .append(event("e1", "p1", "one"))
        .await
        .expect("append");
    assert_eq!(next.entry.sequence, 2);
}

async fn a_patients_entries_come_in_pages(store: &dyn AuditLogStore) {
    let mut mine = Vec::new();
    for n in 0..7 {
        let appended = store
            .append(event(&format!("a{n}"), "p1", &format!("mine {n}")))
            .await
            .expect("append");
        mine.push(appended.entry.sequence);
        store
            .append(event(&format!("b{n}"), "p2", &format!("theirs {n}")))
            .await
            .expect("append");
    }
    let mut seen = Vec::new();
    let mut token: Option<PageToken> = None;
    let mut pages = 0;
    loop {
        let page = store
            .patient_entries(patient("p1"), token, size(3))
            .await
            .expect("page");
        pages += 1;
        assert!(page.entries.len() <= 3);
        assert!(page.entries.iter().all(|e| e.patient_id == patient("p1")));
        seen.extend(page.entries.iter().map(|e| e.sequence));
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, mine);
    assert_eq!(pages, 3);
    // A page that ends exactly at the last entry says there are no more.
    let exact = store
        .patient_entries(patient("p1"), None, size(7))
        .await
        .expect("page");
    assert_eq!(exact.entries.len(), 7);
    assert_eq!(exact.next, None);
    let nobody = store
        .patient_entries(patient("nobody"), None, size(0))
        .await
        .expect("page");
    assert!(nobody.entries.is_empty());
    assert_eq!(nobody.next, None);
}

/// Break-glass entries are indexed by the acting organisation as they are
/// appended, singly or in batches: each organisation's come back in log
/// order, page by page, everyone's with no organisation named, and
/// unflagged events never.
async fn break_glass_entries_come_in_pages_by_organisation(store: &dyn AuditLogStore) {
    assert_eq!(all_break_glass(store, None, 10).await, (vec![], 1));
    let mut by_a = Vec::new();
    let mut by_b = Vec::new();
    for n in 0..5 {
        store
            .append(event(&format!("plain-{n}"), "p1", "plain"))
            .await
            .expect("append");
        let a = store
            .append(flagged(&format!("a-{n}"), &format!("p{n}"), "RR8"))
            .await
            .expect("append");
        by_a.push(a.entry.sequence);
        if n % 2 == 0 {
            let b = store
                .append_batch(vec![
                    event(&format!("plain-b-{n}"), "p1", "plain"),
                    flagged(&format!("b-{n}"), "p1", "A81001"),
                ])
                .await
                .expect("batch");
            by_b.push(b[1].entry.sequence);
        }
    }
    // A replay of a flagged event is not indexed again.
    let again = store
        .append_batch(vec![
            flagged("a-0", "p0", "RR8"),
            flagged("a-5", "p5", "RR8"),
        ])
        .await
        .expect("batch");
    assert!(again[0].duplicate);
    by_a.push(again[1].entry.sequence);
    // An actor without an organisation (not expected of break-glass) is
    // still listed for everyone, under "".
    let nameless = store
        .append(flagged("nameless", "p1", ""))
        .await
        .expect("append");

    let (a, pages) = all_break_glass(store, Some("RR8"), 2).await;
    assert_eq!(a, by_a);
    assert_eq!(pages, 3, "6 entries, 2 a page, the last page says no more");
    let (b, _) = all_break_glass(store, Some("A81001"), 1).await;
    assert_eq!(b, by_b);
    let mut everyone: Vec<u64> = by_a.iter().chain(&by_b).copied().collect();
    everyone.push(nameless.entry.sequence);
    everyone.sort_unstable();
    for n in [1, 4, 100] {
        assert_eq!(
            all_break_glass(store, None, n).await.0,
            everyone,
            "{n} a page"
        );
    }
    assert_eq!(
        all_break_glass(store, Some(""), 10).await.0,
        vec![nameless.entry.sequence]
    );
    // Exact matches only, and no unflagged entry anywhere.
    assert_eq!(all_break_glass(store, Some("rr8"), 10).await, (vec![], 1));
    assert_eq!(all_break_glass(store, Some("RR"), 10).await, (vec![], 1));
    let page = store
        .break_glass_entries(None, None, size(100))
        .await
        .expect("page");
    assert!(
        page.entries
            .iter()
            .all(|e| !e.event_id.as_str().starts_with("plain"))
    );
    // The entries are those appended, and the tree still matches the log.
    let first = &page.entries[0];
    assert_eq!(
        store.entry(first.sequence).await.expect("entry").as_ref(),
        Some(first)
    );
    verified_size(store).await;
}

/// Several tasks append at once: the log comes out numbered without gaps,
/// every event exactly once, and the tree matches the entries.
async fn concurrent_appends_never_fork_the_log(store: Arc<dyn AuditLogStore>) {
    const TASKS: usize = 8;
    const EACH: usize = 10;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut sequences = Vec::new();
            for n in 0..EACH {
                let id = format!("t{t}-{n}");
                let appended = if n % 3 == 2 {
                    // Some as small batches, with a replay of the previous one.
                    let prev = format!("t{t}-{}", n - 1);
                    store
                        .append_batch(vec![event(&id, "p1", &id), event(&prev, "p1", &prev)])
                        .await
                        .expect("batch")
                        .remove(0)
                } else {
                    store.append(event(&id, "p1", &id)).await.expect("append")
                };
                assert!(!appended.duplicate);
                sequences.push(appended.entry.sequence);
            }
            sequences
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort_unstable();
    let expected: Vec<u64> = (1..=(TASKS * EACH) as u64).collect();
    assert_eq!(all, expected);
    assert_eq!(verified_size(store.as_ref()).await, (TASKS * EACH) as u64);
}

/// One caller's conflicting replay fails that caller only, even when its
/// append shares a transaction with others' (group commit).
async fn a_conflict_fails_only_its_caller(store: Arc<dyn AuditLogStore>) {
    store
        .append(event("first", "p1", "one"))
        .await
        .expect("append");
    let mut tasks = Vec::new();
    for n in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("e{n}");
            store.append(event(&id, "p1", &id)).await.map(|_| ())
        }));
    }
    let conflicting = {
        let store = store.clone();
        tokio::spawn(async move { store.append(event("first", "p1", "other")).await })
    };
    for task in tasks {
        task.await
            .expect("task")
            .expect("an honest append succeeds");
    }
    let err = conflicting.await.expect("task").expect_err("conflict");
    assert_eq!(err.code, Code::AlreadyExists);
    assert!(err.message.contains("event.event_id"), "{}", err.message);
    assert_eq!(verified_size(store.as_ref()).await, 21);
}

/// Two stores on one database stand for two replicas, whose appends the
/// in-process lock cannot serialise: the database's lock (SQLite's write
/// lock, PostgreSQL's advisory lock) makes them take turns, so no append
/// fails and the log neither forks nor gaps.
async fn two_writers_on_one_database_never_fork(
    a: Arc<dyn AuditLogStore>,
    b: Arc<dyn AuditLogStore>,
) {
    const EACH: usize = 15;
    let mut tasks = Vec::new();
    for (name, store) in [("a", a.clone()), ("b", b), ("c", a.clone())] {
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                let id = format!("{name}-{n}");
                if n % 4 == 3 {
                    store
                        .append_batch(vec![
                            event(&format!("{id}x"), "p1", &id),
                            event(&id, "p1", &id),
                        ])
                        .await
                        .unwrap_or_else(|e| panic!("batch {id}: {e}"));
                } else {
                    store
                        .append(event(&id, "p1", &id))
                        .await
                        .unwrap_or_else(|e| panic!("append {id}: {e}"));
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert_eq!(verified_size(a.as_ref()).await, (3 * EACH + 3 * 3) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_database_never_fork_sqlite() {
    let db = TestDatabase::sqlite();
    let a = SqlStore::connect(db.url(), 4).await.expect("connect");
    let b = SqlStore::connect(db.url(), 4).await.expect("connect");
    two_writers_on_one_database_never_fork(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_database_never_fork_postgres() {
    let Some(db) = TestDatabase::postgres("two_writers_on_one_database_never_fork").await else {
        return;
    };
    let a = SqlStore::connect(db.url(), 4).await.expect("connect");
    let b = SqlStore::connect(db.url(), 4).await.expect("connect");
    two_writers_on_one_database_never_fork(Arc::new(a), Arc::new(b)).await;
    db.cleanup().await;
}

/// Runs each behaviour on every backend, on a fresh database each time:
/// bare and behind the group committer (as `open` runs it). `borrowed`
/// behaviours take `&dyn AuditLogStore`; `shared` ones take an `Arc` to
/// hand to several tasks.
macro_rules! conformance {
    (@arg borrowed, $store:ident) => { $store.as_ref() };
    (@arg shared, $store:ident) => { $store.clone() };
    ($($mode:ident $behaviour:ident),* $(,)?) => {
        $(
            mod $behaviour {
                use super::*;

                async fn run(grouped: bool) {
                    on_every_backend(stringify!($behaviour), async |backend| {
                        let store = store::open(backend.backend(), backend.url(), 4)
                            .await
                            .expect("open");
                        let store: Arc<dyn AuditLogStore> = if grouped {
                            Arc::new(GroupCommit::new(store))
                        } else {
                            store
                        };
                        super::$behaviour(conformance!(@arg $mode, store)).await;
                    })
                    .await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn bare() {
                    run(false).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn group_commit() {
                    run(true).await;
                }
            }
        )*
    };
}

conformance!(
    borrowed appends_number_entries_and_grow_the_tree,
    borrowed proofs_from_stored_nodes_verify,
    borrowed a_replay_returns_the_entry_already_written,
    borrowed the_same_id_with_other_content_is_refused,
    borrowed a_batch_is_appended_in_order,
    borrowed a_batch_with_a_conflict_writes_nothing,
    borrowed a_patients_entries_come_in_pages,
    borrowed break_glass_entries_come_in_pages_by_organisation,
    shared concurrent_appends_never_fork_the_log,
    shared a_conflict_fails_only_its_caller,
);

/// `database.backend = "memory"` opens with the log off disk: the data dir
/// holds only the tree-head keys.
#[tokio::test]
async fn open_keeps_the_memory_backends_log_off_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = std::collections::HashMap::from([
        (
            "SHAREDCARE_DATABASE__BACKEND".to_owned(),
            "memory".to_owned(),
        ),
        (
            "SHAREDCARE_DATABASE__DATA_DIR".to_owned(),
            dir.path().display().to_string(),
        ),
    ]);
    let cfg = sharedcare_audit::config::AuditConfig::load(&env).expect("valid");
    sharedcare_audit::open(&cfg).await.expect("opens");
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("data dir")
        .map(|f| f.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            sharedcare_audit::SIGNING_KEY_FILE,
            sharedcare_audit::VERIFIER_KEY_FILE
        ]
    );
}
