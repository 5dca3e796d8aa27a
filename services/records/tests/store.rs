//! The RecordStore conformance suite, run unchanged against every backend.

use sharedcare_kit::{
    crypto::{Kek, Keyring},
    testing::TestDatabase,
};
use sharedcare_records::{
    domain::{Category, PatientId, Record, RecordId},
    store::{RecordStore, SqlStore},
};

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

async fn conformance(store: &dyn RecordStore) {
    let r = record("patient-1");
    store
        .create(r.clone(), "event-1".into(), vec![1, 2, 3])
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

    // Its audit event waits in the outbox, in order, until delivered.
    let r2 = record("patient-1");
    store
        .create(r2, "event-2".into(), vec![4])
        .await
        .expect("create");
    let pending = store.pending_outbox(10).await.expect("pending");
    let ids: Vec<_> = pending.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["event-1", "event-2"]);
    assert_eq!(pending[0].payload, vec![1, 2, 3]);
    store
        .mark_delivered(pending[0].sequence)
        .await
        .expect("mark");
    let pending = store.pending_outbox(10).await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].event_id, "event-2");

    // The same event id twice is refused and the record is not stored.
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
