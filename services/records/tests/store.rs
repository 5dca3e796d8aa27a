//! The RecordStore conformance suite: written once, run unchanged against
//! every backend (memory, SQLite, PostgreSQL), bare and wrapped in
//! `Encrypted`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use sharedcare_kit::{
    crypto::{Kek, Keyring},
    error::Code,
    outbox::{BatchSink, Outbox, OutboxSettings},
    peers::BoxFuture,
    testing::TestDatabase,
};
use sharedcare_proto::audit::v1::AuditEvent;
use sharedcare_records::{
    domain::{
        Category, DateRange, PatientId, RecordId, SearchIndex, Token, TokenParam, TokenQuery,
    },
    store::{
        AuditRow, Body, Change, Encrypted, IdempotencyRow, MemoryStore, OUTBOX_TABLE, RecordMeta,
        RecordStore, SearchQuery, SortKey, SqlStore, Write,
    },
};

fn patient(id: &str) -> PatientId {
    PatientId::parse("p", id).expect("id")
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("date")
}

fn meta(patient_id: &str, resource_type: &str, category: Category) -> RecordMeta {
    RecordMeta {
        id: RecordId::new(),
        patient_id: patient(patient_id),
        resource_type: resource_type.into(),
        version: 1,
        last_updated: now(),
        category,
        deleted: false,
    }
}

/// Stores keep time to the microsecond (PostgreSQL's precision); records
/// stamps versions to the millisecond.
fn now() -> DateTime<Utc> {
    use chrono::{DurationRound, TimeDelta};
    Utc::now()
        .duration_trunc(TimeDelta::milliseconds(1))
        .expect("truncate")
}

fn token(param: TokenParam, system: &str, code: &str) -> Token {
    Token {
        param,
        system: system.into(),
        code: code.into(),
    }
}

fn body(meta: &RecordMeta, text: &str) -> Vec<u8> {
    format!(
        r#"{{"resourceType":"{}","id":"{}","valueQuantity":{{"value":1.50}},"note":"{text}"}}"#,
        meta.resource_type,
        meta.id.as_str()
    )
    .into_bytes()
}

fn write(meta: &RecordMeta, text: &str, index: SearchIndex) -> Write {
    Write {
        meta: meta.clone(),
        body: body(meta, text),
        index,
        idempotency: None,
        audit: None,
    }
}

fn dated(start: DateTime<Utc>, tokens: Vec<Token>) -> SearchIndex {
    SearchIndex {
        date: Some(DateRange {
            start,
            end: start + chrono::Duration::days(1),
        }),
        tokens,
    }
}

fn query(patient_id: &str) -> SearchQuery {
    SearchQuery {
        patient_id: patient(patient_id),
        resource_types: vec![],
        categories: Category::ALL.to_vec(),
        date_from: None,
        date_to: None,
        updated_from: None,
        updated_to: None,
        codes: vec![],
        fhir_categories: vec![],
    }
}

async fn ids(store: &dyn RecordStore, q: &SearchQuery) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<SortKey> = None;
    loop {
        let page = store.search(q, after.as_ref(), 2).await.expect("search");
        let done = page.len() < 2;
        for found in page {
            after = Some(found.key.clone());
            out.push(found.stored.meta.id.as_str().to_owned());
        }
        if done {
            return out;
        }
    }
}

/// Everything a RecordStore promises.
async fn conformance(store: &dyn RecordStore) {
    let code = |c: &str| token(TokenParam::Code, "http://loinc.org", c);
    let vital = token(
        TokenParam::Category,
        "http://terminology.hl7.org/CodeSystem/observation-category",
        "vital-signs",
    );

    // Version 1, read back as given (the body is opened on request).
    let a = meta("patient-1", "Observation", Category::General);
    store
        .write(write(
            &a,
            "first",
            dated(at(2020, 5, 1), vec![code("8867-4"), vital.clone()]),
        ))
        .await
        .expect("create");
    let read = store
        .current(&a.patient_id, &a.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.meta, a);
    assert_eq!(
        read.body.open().expect("open").into_bytes(),
        body(&a, "first")
    );
    // Only under its own patient.
    assert!(
        store
            .current(&patient("patient-2"), &a.id)
            .await
            .expect("read")
            .is_none()
    );
    // Version 1 twice: ALREADY_EXISTS, nothing changed.
    let err = store
        .write(write(&a, "again", SearchIndex::default()))
        .await
        .expect_err("duplicate id");
    assert_eq!(err.code, Code::AlreadyExists);

    // Versions: n+1 only on n; stale and skipped versions refused naming
    // the current one; another patient's record is not found.
    let a2 = RecordMeta {
        version: 2,
        last_updated: now(),
        category: Category::SexualHealth,
        ..a.clone()
    };
    store
        .write(write(
            &a2,
            "second",
            dated(at(2021, 1, 1), vec![code("1234-5")]),
        ))
        .await
        .expect("update");
    for version in [2, 4] {
        let stale = RecordMeta {
            version,
            ..a2.clone()
        };
        let err = store
            .write(write(&stale, "stale", SearchIndex::default()))
            .await
            .expect_err("stale");
        assert_eq!(err.code, Code::FailedPrecondition, "{version}");
        assert!(
            err.message.contains("version 2 is current"),
            "{}",
            err.message
        );
    }
    let foreign = RecordMeta {
        version: 3,
        patient_id: patient("patient-2"),
        ..a2.clone()
    };
    assert_eq!(
        store
            .write(write(&foreign, "x", SearchIndex::default()))
            .await
            .expect_err("other patient")
            .code,
        Code::NotFound
    );
    let current = store
        .current(&a.patient_id, &a.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(current.meta, a2);
    let v1 = store
        .version(&a.patient_id, &a.id, 1)
        .await
        .expect("read")
        .expect("v1");
    assert_eq!(
        v1.body.open().expect("open").into_bytes(),
        body(&a, "first")
    );
    assert!(
        store
            .version(&a.patient_id, &a.id, 9)
            .await
            .expect("read")
            .is_none()
    );

    // The index follows the current version.
    let mut q = query("patient-1");
    q.codes = vec![TokenQuery::parse("codes", "http://loinc.org|8867-4").expect("q")];
    assert!(ids(store, &q).await.is_empty(), "version 1's code is gone");
    q.codes = vec![TokenQuery::parse("codes", "1234-5").expect("q")];
    assert_eq!(ids(store, &q).await, [a.id.as_str()]);

    // A tombstone: current says deleted, search no longer finds it, history
    // keeps every version newest first.
    let a3 = RecordMeta {
        version: 3,
        deleted: true,
        last_updated: now(),
        ..a2.clone()
    };
    store
        .write(Write {
            meta: a3.clone(),
            body: vec![],
            index: SearchIndex::default(),
            idempotency: None,
            audit: None,
        })
        .await
        .expect("delete");
    let current = store
        .current(&a.patient_id, &a.id)
        .await
        .expect("read")
        .expect("found");
    assert!(current.meta.deleted);
    assert_eq!(current.body.open().expect("open"), "");
    assert!(ids(store, &query("patient-1")).await.is_empty());
    let history = store
        .history(&a.patient_id, &a.id, None, 10)
        .await
        .expect("history");
    let versions: Vec<i64> = history.iter().map(|s| s.meta.version).collect();
    assert_eq!(versions, [3, 2, 1]);
    let older = store
        .history(&a.patient_id, &a.id, Some(3), 1)
        .await
        .expect("history");
    assert_eq!(
        older.iter().map(|s| s.meta.version).collect::<Vec<_>>(),
        [2]
    );
    assert!(
        store
            .history(&patient("patient-2"), &a.id, None, 10)
            .await
            .expect("h")
            .is_empty()
    );

    // Search: newest clinical date first, paged by key; filters by type,
    // category, date overlap, code (any system or exact), FHIR category and
    // last-updated; never another patient's records.
    let p = "patient-search";
    let mut made = Vec::new();
    for (i, (rtype, category, day)) in [
        ("Observation", Category::General, at(2019, 1, 1)),
        ("Observation", Category::MentalHealth, at(2020, 1, 1)),
        ("Condition", Category::General, at(2021, 1, 1)),
        ("Observation", Category::General, at(2022, 1, 1)),
        ("Procedure", Category::General, at(2023, 1, 1)),
    ]
    .into_iter()
    .enumerate()
    {
        let m = meta(p, rtype, category);
        let tokens = if rtype == "Observation" {
            vec![code(&format!("code-{i}")), vital.clone()]
        } else {
            vec![token(
                TokenParam::Code,
                "http://snomed.info/sct",
                &format!("code-{i}"),
            )]
        };
        store
            .write(write(&m, "s", dated(day, tokens)))
            .await
            .expect("create");
        made.push(m);
    }
    let undated = meta(p, "Observation", Category::General);
    store
        .write(write(&undated, "u", SearchIndex::default()))
        .await
        .expect("create");
    let other = meta("patient-other", "Observation", Category::General);
    store
        .write(write(
            &other,
            "o",
            dated(at(2024, 1, 1), vec![code("code-0")]),
        ))
        .await
        .expect("create");
    let id = |i: usize| made[i].id.as_str().to_owned();
    // The undated one sorts by its last-updated time: now, so first.
    assert_eq!(
        ids(store, &query(p)).await,
        [
            undated.id.as_str().to_owned(),
            id(4),
            id(3),
            id(2),
            id(1),
            id(0)
        ]
    );
    let mut q = query(p);
    q.resource_types = vec!["Observation".into()];
    q.categories = vec![Category::General];
    assert_eq!(
        ids(store, &q).await,
        [undated.id.as_str().to_owned(), id(3), id(0)]
    );
    let mut q = query(p);
    q.date_from = Some(at(2020, 1, 1));
    q.date_to = Some(at(2022, 1, 1));
    assert_eq!(ids(store, &q).await, [id(2), id(1)]);
    let mut q = query(p);
    q.date_from = Some(at(2022, 1, 1) + chrono::Duration::hours(12));
    assert_eq!(ids(store, &q).await, [id(4), id(3)], "overlap, not start");
    let mut q = query(p);
    q.codes = vec![
        TokenQuery::parse("codes", "code-2").expect("q"),
        TokenQuery::parse("codes", "http://loinc.org|code-0").expect("q"),
        TokenQuery::parse("codes", "http://loinc.org|code-4").expect("q"),
    ];
    assert_eq!(
        ids(store, &q).await,
        [id(2), id(0)],
        "system must match when given"
    );
    let mut q = query(p);
    q.fhir_categories = vec![TokenQuery::parse("fhir_categories", "vital-signs").expect("q")];
    assert_eq!(ids(store, &q).await, [id(3), id(1), id(0)]);
    let mut q = query(p);
    q.updated_from = Some(Utc::now() + chrono::Duration::hours(1));
    assert!(ids(store, &q).await.is_empty());
    q.updated_from = Some(at(2000, 1, 1));
    q.updated_to = Some(Utc::now() + chrono::Duration::hours(1));
    assert_eq!(ids(store, &q).await.len(), 6);
    let mut q = query(p);
    q.categories = vec![Category::SexualHealth];
    assert!(ids(store, &q).await.is_empty());

    // Idempotency keys: stored with the write, looked up, never reused.
    let k = meta("patient-1", "Observation", Category::General);
    let row = IdempotencyRow {
        key: "caller-key-1".into(),
        request_hash: "hash-1".into(),
        record_id: k.id.clone(),
        version: 1,
    };
    assert!(
        store
            .idempotency("caller-key-1")
            .await
            .expect("key")
            .is_none()
    );
    store
        .write(Write {
            idempotency: Some(row.clone()),
            ..write(&k, "k", SearchIndex::default())
        })
        .await
        .expect("create");
    assert_eq!(
        store.idempotency("caller-key-1").await.expect("key"),
        Some(row.clone())
    );
    let k2 = meta("patient-1", "Observation", Category::General);
    let err = store
        .write(Write {
            idempotency: Some(IdempotencyRow {
                record_id: k2.id.clone(),
                ..row.clone()
            }),
            ..write(&k2, "k2", SearchIndex::default())
        })
        .await
        .expect_err("key reused");
    assert_eq!(err.code, Code::AlreadyExists);
    assert!(
        store
            .current(&k2.patient_id, &k2.id)
            .await
            .expect("read")
            .is_none()
    );

    // Concurrent writes: each answered on its own; two updates racing for
    // the same version — exactly one wins.
    let base = meta("patient-race", "Observation", Category::General);
    store
        .write(write(&base, "v1", SearchIndex::default()))
        .await
        .expect("create");
    let next = RecordMeta {
        version: 2,
        ..base.clone()
    };
    let creates = (0..20).map(|_| {
        let m = meta("patient-race", "Observation", Category::General);
        async move { store.write(write(&m, "c", SearchIndex::default())).await }
    });
    let races = (0..2).map(|i| {
        let w = write(&next, &format!("race-{i}"), SearchIndex::default());
        async move { store.write(w).await }
    });
    let (created, raced) = futures::future::join(
        futures::future::join_all(creates),
        futures::future::join_all(races),
    )
    .await;
    assert!(created.iter().all(Result::is_ok));
    assert_eq!(raced.iter().filter(|r| r.is_ok()).count(), 1);
    assert_eq!(ids(store, &query("patient-race")).await.len(), 21);

    // The change log: every stored version once, in order, paged by sequence.
    let log = all_changes(store, 0).await;
    let sequences: Vec<i64> = log.iter().map(|c| c.sequence).collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    let mut seen = std::collections::HashSet::new();
    assert!(
        log.iter()
            .all(|c| seen.insert((c.meta.id.clone(), c.meta.version)))
    );
    let of_a: Vec<(i64, bool)> = log
        .iter()
        .filter(|c| c.meta.id == a.id)
        .map(|c| (c.meta.version, c.meta.deleted))
        .collect();
    assert_eq!(of_a, [(1, false), (2, false), (3, true)]);
    assert_eq!(
        log.iter()
            .filter(|c| c.meta.patient_id.as_str() == "patient-race")
            .count(),
        22
    );
    for m in &made {
        assert!(log.iter().any(|c| c.meta.id == m.id));
    }
    // Maintenance: a scan of every version in (id, version) order, and a
    // body replaced only if it is still what was read.
    let mut scanned = Vec::new();
    let mut after: Option<(RecordId, i64)> = None;
    loop {
        let page = store.scan(after.as_ref(), 5).await.expect("scan");
        let Some(last) = page.last() else { break };
        after = Some((last.meta.id.clone(), last.meta.version));
        scanned.extend(
            page.into_iter()
                .map(|s| (s.meta.id.as_str().to_owned(), s.meta.version)),
        );
    }
    assert_eq!(scanned.len(), log.len(), "every version once");
    assert!(scanned.windows(2).all(|w| w[0] < w[1]));
    // Bodies as held: what a scan returns, even through a wrapper.
    let raw = |version: i64| {
        let after = (a.id.clone(), version - 1);
        async move {
            let page = store.scan(Some(&after), 1).await.expect("scan");
            match page.into_iter().next().map(|s| s.body) {
                Some(Body::Clear(bytes)) => bytes,
                other => panic!("a scan returns bodies as held: {other:?}"),
            }
        }
    };
    let held = raw(1).await;
    let held2 = raw(2).await;
    assert!(
        !store
            .replace_body(&a.id, 1, &held2, b"x".to_vec())
            .await
            .expect("cas")
    );
    assert!(
        store
            .replace_body(&a.id, 1, &held, held.clone())
            .await
            .expect("cas")
    );

    let last = *sequences.last().expect("changes");
    assert!(store.changes(last, 10).await.expect("changes").is_empty());
    assert_eq!(all_changes(store, sequences[3]).await, log[4..]);
}

/// The change log after `after`, read in small pages.
async fn all_changes(store: &dyn RecordStore, mut after: i64) -> Vec<Change> {
    let mut out = Vec::new();
    loop {
        let page = store.changes(after, 7).await.expect("changes");
        let Some(last) = page.last() else {
            return out;
        };
        after = last.sequence;
        out.extend(page);
    }
}

/// Two replicas writing at once on PostgreSQL: a watcher reading the change
/// log while they commit never skips a change (a later sequence number
/// committing before an earlier one would make it).
#[tokio::test]
async fn postgres_change_log_follows_commit_order_across_replicas() {
    let Some(db) = TestDatabase::postgres("records change log order").await else {
        return;
    };
    let replicas = [
        SqlStore::connect(db.url(), 4).await.expect("connect"),
        SqlStore::connect(db.url(), 4).await.expect("connect"),
    ];
    let done = std::sync::atomic::AtomicBool::new(false);
    let writers = (0..8).map(|w| {
        let store = &replicas[w % 2];
        async move {
            for _ in 0..40 {
                let m = meta("patient-order", "Observation", Category::General);
                store
                    .write(write(&m, "w", SearchIndex::default()))
                    .await
                    .expect("write");
            }
        }
    });
    let watcher = async {
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let finished = done.load(std::sync::atomic::Ordering::SeqCst);
            let page = replicas[0].changes(after, 50).await.expect("changes");
            if let Some(last) = page.last() {
                after = last.sequence;
            }
            let empty = page.is_empty();
            seen.extend(page.into_iter().map(|c| c.sequence));
            if finished && empty {
                return seen;
            }
        }
    };
    let writing = async {
        futures::future::join_all(writers).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let (seen, ()) = futures::future::join(watcher, writing).await;
    let all: Vec<i64> = all_changes(&replicas[1], 0)
        .await
        .iter()
        .map(|c| c.sequence)
        .collect();
    assert_eq!(all.len(), 320);
    assert_eq!(seen, all, "the watcher saw every change, in order");
    drop(replicas);
    db.cleanup().await;
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(&MemoryStore::new()).await;
    conformance(&Encrypted::new(MemoryStore::new(), keyring())).await;
}

fn keyring() -> Keyring {
    Keyring::new(Kek::generate(), [])
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let db = TestDatabase::sqlite();
    let store = SqlStore::connect(db.url(), 2).await.expect("connect");
    conformance(&store).await;
    let db = TestDatabase::sqlite();
    let store = Encrypted::new(
        SqlStore::connect(db.url(), 2).await.expect("connect"),
        keyring(),
    );
    conformance(&store).await;
    assert_encrypted_at_rest(db.url()).await;
    audit_in_write(store.inner()).await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(db) = TestDatabase::postgres("records postgres_store_conforms").await else {
        return;
    };
    let store = Encrypted::new(
        SqlStore::connect(db.url(), 4).await.expect("connect"),
        keyring(),
    );
    conformance(&store).await;
    assert_encrypted_at_rest(db.url()).await;
    audit_in_write(store.inner()).await;
    drop(store);
    db.cleanup().await;
}

/// What lands in the database is ciphertext, never the resource; only the
/// index fields are in clear.
async fn assert_encrypted_at_rest(url: &str) {
    use sea_orm::{ConnectionTrait, Statement};
    let db = sea_orm::Database::connect(url).await.expect("connect");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT resource_sealed FROM records_resource_versions",
        ))
        .await
        .expect("rows");
    assert!(!rows.is_empty());
    for row in rows {
        let sealed: Vec<u8> = row.try_get("", "resource_sealed").expect("blob");
        assert!(!sealed.windows(11).any(|w| w == b"Observation"));
        assert!(!sealed.windows(4).any(|w| w == b"1.50"));
    }
    db.close().await.ok();
}

/// audit, in memory: the ids of the events delivered, in order.
#[derive(Default)]
struct Delivered(Mutex<Vec<String>>, std::sync::atomic::AtomicBool);

impl Delivered {
    /// From now on audit is unreachable: events stay in the outbox.
    fn go_down(&self) {
        self.1.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl BatchSink for Delivered {
    fn append_batch(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(async { Err(sharedcare_kit::Error::unavailable("audit is down")) });
        }
        self.0
            .lock()
            .expect("lock")
            .extend(events.into_iter().map(|e| e.event_id));
        Box::pin(async { Ok(()) })
    }
}

fn event(id: &str) -> AuditRow {
    use prost::Message;
    AuditRow {
        event_id: id.into(),
        payload: AuditEvent {
            event_id: id.into(),
            ..AuditEvent::default()
        }
        .encode_to_vec(),
    }
}

/// The SQL store keeps each change's audit event in the change's own
/// transaction: the kit's relay delivers them in order, and a change whose
/// event cannot be stored is not stored either.
async fn audit_in_write(store: &SqlStore) {
    assert!(store.audit_in_write());
    let audited = |m: &RecordMeta, id: &str| Write {
        audit: Some(event(id)),
        ..write(m, "audited", SearchIndex::default())
    };
    let r1 = meta("patient-audit", "Observation", Category::General);
    store.write(audited(&r1, "event-1")).await.expect("create");
    let r2 = meta("patient-audit", "Observation", Category::General);
    store.write(audited(&r2, "event-2")).await.expect("create");
    let r3 = meta("patient-audit", "Observation", Category::General);
    assert!(store.write(audited(&r3, "event-2")).await.is_err());
    assert!(
        store
            .current(&r3.patient_id, &r3.id)
            .await
            .expect("read")
            .is_none()
    );

    let delivered = Arc::new(Delivered::default());
    let outbox = Outbox::start(
        store.connection(),
        store.write_gate(),
        OUTBOX_TABLE,
        delivered.clone(),
        OutboxSettings {
            poll: Duration::from_millis(10),
            ..OutboxSettings::default()
        },
    );
    outbox.wake();
    for _ in 0..500 {
        if delivered.0.lock().expect("lock").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*delivered.0.lock().expect("lock"), ["event-1", "event-2"]);
    // Events now wait in the outbox (a delivered one's id could be reused).
    delivered.go_down();

    // Concurrent writes are committed together; one that cannot be stored
    // (two share an event id: the second to be stored fails) fails alone.
    let writes = (0..20).map(|i| {
        let m = meta("patient-audit-3", "Observation", Category::General);
        let id = if i == 7 || i == 8 {
            "event-twice".to_owned()
        } else {
            format!("event-c{i}")
        };
        async move {
            let result = store.write(audited(&m, &id)).await;
            (m, result)
        }
    });
    let mut failed = 0;
    for (m, result) in futures::future::join_all(writes).await {
        let stored = store.current(&m.patient_id, &m.id).await.expect("read");
        match result {
            Ok(()) => assert!(stored.is_some()),
            Err(_) => {
                failed += 1;
                assert!(stored.is_none(), "a write that failed is not stored");
            }
        }
    }
    assert_eq!(
        failed, 1,
        "only the second write with the shared event id fails"
    );
}

/// The `remote` backend against the reference storage server (over SQLite)
/// on a real socket: the same promises, bare and encrypted, and what lands
/// in the server's database is ciphertext.
#[tokio::test]
async fn remote_store_conforms() {
    use sharedcare_records::store::{RemoteStore, storage_server::storage_service};

    /// A reference server over a fresh SQLite store, and a client of it.
    async fn serve() -> (TestDatabase, RemoteStore) {
        let db = TestDatabase::sqlite();
        let backend = SqlStore::connect(db.url(), 2).await.expect("connect");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(storage_service(backend))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        (db, RemoteStore::new(channel, Duration::from_secs(10)))
    }

    let (_bare_db, remote) = serve().await;
    assert!(!remote.audit_in_write());
    conformance(&remote).await;

    let (db, remote) = serve().await;
    conformance(&Encrypted::new(remote, keyring())).await;
    assert_encrypted_at_rest(db.url()).await;

    // A key rotation over the protocol (scan and replace_body).
    let (_rotation_db, remote) = serve().await;
    key_rotation(std::sync::Arc::new(remote)).await;
}

/// A KEK rotation: data sealed under the old key stays readable with the
/// old key kept as a previous one, `rewrap` moves every data key to the new
/// KEK online, and then the new key alone opens everything.
async fn key_rotation(inner: std::sync::Arc<dyn RecordStore>) {
    let old = Kek::generate();
    let before = Encrypted::new(inner.clone(), Keyring::new(old.clone(), []));
    let mut written = Vec::new();
    for i in 0..7 {
        let m = meta("patient-rotation", "Observation", Category::General);
        before
            .write(write(&m, &format!("r{i}"), SearchIndex::default()))
            .await
            .expect("write");
        written.push(m);
    }
    let new = Kek::generate();
    let rotated = Keyring::new(new.clone(), [old]);
    let during = Encrypted::new(inner.clone(), rotated.clone());
    let fresh = meta("patient-rotation", "Observation", Category::General);
    during
        .write(write(&fresh, "new", SearchIndex::default()))
        .await
        .expect("write");
    written.push(fresh);
    let mut heard = Vec::new();
    let done = sharedcare_records::store::rewrap(inner.as_ref(), &rotated, |p| heard.push(p))
        .await
        .expect("rewrap");
    assert_eq!(done.rewrapped, 7, "only the versions under the old key");
    assert!(done.examined >= 8);
    assert_eq!(heard.last(), Some(&done));
    let again = sharedcare_records::store::rewrap(inner.as_ref(), &rotated, |_| {})
        .await
        .expect("rewrap");
    assert_eq!(again.rewrapped, 0, "a second run has nothing to do");
    let after = Encrypted::new(inner, Keyring::new(new, []));
    for (i, m) in written.iter().enumerate() {
        let text = if i == 7 {
            "new".to_owned()
        } else {
            format!("r{i}")
        };
        let read = after
            .current(&m.patient_id, &m.id)
            .await
            .expect("read")
            .expect("found");
        assert_eq!(
            read.body
                .open()
                .expect("opens with the new key alone")
                .into_bytes(),
            body(m, &text)
        );
    }
}

#[tokio::test]
async fn key_rotation_on_every_backend() {
    key_rotation(std::sync::Arc::new(MemoryStore::new())).await;
    let db = TestDatabase::sqlite();
    key_rotation(std::sync::Arc::new(
        SqlStore::connect(db.url(), 2).await.expect("connect"),
    ))
    .await;
    if let Some(pg) = TestDatabase::postgres("records key rotation").await {
        key_rotation(std::sync::Arc::new(
            SqlStore::connect(pg.url(), 2).await.expect("connect"),
        ))
        .await;
        pg.cleanup().await;
    }
}
