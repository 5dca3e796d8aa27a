//! The RecordStore conformance suite, run unchanged against every backend.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sharedcare_kit::{
    crypto::{Kek, Keyring},
    outbox::{BatchSink, Outbox, OutboxSettings},
    peers::BoxFuture,
    testing::TestDatabase,
};
use sharedcare_proto::audit::v1::AuditEvent;
use sharedcare_records::{
    domain::{Category, PatientId, Record, RecordId},
    store::{OUTBOX_TABLE, RecordStore, SqlStore},
};

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

fn event(id: &str) -> Vec<u8> {
    use prost::Message;
    AuditEvent {
        event_id: id.into(),
        ..AuditEvent::default()
    }
    .encode_to_vec()
}

fn record(patient: &str) -> Record {
    let id = RecordId::new();
    Record {
        resource_json: format!(r#"{{"resourceType":"Observation","id":"{}"}}"#, id.as_str()),
        id,
        patient_id: PatientId::parse("p", patient).expect("id"),
        resource_type: "Observation".into(),
        version: 1,
        last_updated: chrono::Utc::now(),
        category: Category::MentalHealth,
    }
}

async fn conformance(store: &SqlStore) {
    let r = record("patient-1");
    store
        .create(r.clone(), "event-1".into(), event("event-1"))
        .await
        .expect("create");
    let read = store
        .current(&r.patient_id, &r.id)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.resource_json, r.resource_json);
    assert_eq!(read.category, Category::MentalHealth);
    assert_eq!(read.version, 1);

    // A record is found only under its own patient.
    let other = PatientId::parse("p", "patient-2").expect("id");
    assert!(store.current(&other, &r.id).await.expect("read").is_none());

    // Its audit event waits in the outbox, written in the same
    // transaction; the kit's relay delivers the events in order.
    let r2 = record("patient-1");
    store
        .create(r2, "event-2".into(), event("event-2"))
        .await
        .expect("create");
    // A record whose audit event cannot be stored is not stored either:
    // the same event id twice (while it waits) is refused.
    let r3 = record("patient-1");
    assert!(
        store
            .create(r3.clone(), "event-2".into(), vec![])
            .await
            .is_err()
    );
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

    // Concurrent creates are committed together; one that cannot be stored
    // (two share an event id: the second to be stored fails) fails alone
    // and the rest are stored.
    let creates = (0..20).map(|i| {
        let r = record("patient-3");
        let id = if i == 7 || i == 8 {
            "event-twice".to_owned()
        } else {
            format!("event-c{i}")
        };
        async move {
            let result = store.create(r.clone(), id.clone(), event(&id)).await;
            (r, result)
        }
    });
    let mut failed = 0;
    for (r, result) in futures::future::join_all(creates).await {
        let stored = store.current(&r.patient_id, &r.id).await.expect("read");
        match result {
            Ok(()) => assert_eq!(stored.expect("found").resource_json, r.resource_json),
            Err(_) => {
                failed += 1;
                assert!(
                    stored.is_none(),
                    "a record whose create failed is not stored"
                );
            }
        }
    }
    assert_eq!(
        failed, 1,
        "only the second create with the shared event id fails"
    );
}

/// What lands in the database is ciphertext, never the resource.
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
    }
    db.close().await.ok();
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let db = TestDatabase::sqlite();
    let store = SqlStore::connect(db.url(), 2, Keyring::new(Kek::generate(), []))
        .await
        .expect("connect");
    conformance(&store).await;
    assert_encrypted_at_rest(db.url()).await;
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(db) = TestDatabase::postgres("records postgres_store_conforms").await else {
        return;
    };
    let store = SqlStore::connect(db.url(), 2, Keyring::new(Kek::generate(), []))
        .await
        .expect("connect");
    conformance(&store).await;
    assert_encrypted_at_rest(db.url()).await;
    drop(store);
    db.cleanup().await;
}
