//! The sea-orm store: SQLite (embedded default) or PostgreSQL.

use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use sharedcare_kit::{Error, crypto::Keyring, db::WriteGate, group::next_group};
use tokio::sync::{mpsc, oneshot};

use super::{BoxFuture, Migrator, RecordStore, entities::*};
use crate::domain::{Category, PatientId, Record, RecordId};

/// Resources are encrypted at rest: sealed before they reach the database,
/// bound to their record id, version and patient.
///
/// New records are group-committed: concurrent creates queue for one
/// writer task, which stores whatever has queued in one transaction (one
/// fsync), each record with its audit event, then answers each caller.
#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    keys: Keyring,
    writes: WriteGate,
    creates: mpsc::Sender<Create>,
}

/// A sealed record row and its audit event, waiting to be stored.
struct Create {
    row: version::ActiveModel,
    event: outbox::ActiveModel,
    done: oneshot::Sender<Result<(), Error>>,
}

/// Most records one transaction stores.
const MAX_GROUP: usize = 256;

impl SqlStore {
    pub async fn connect(url: &str, max_connections: u32, keys: Keyring) -> Result<Self, Error> {
        let db = sharedcare_kit::db::connect::<Migrator>(url, max_connections).await?;
        let writes = WriteGate::for_db(&db);
        let (creates, queued) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(store_creates(db.clone(), writes.clone(), queued));
        Ok(SqlStore {
            db,
            keys,
            writes,
            creates,
        })
    }

    /// The connection, for the audit outbox that shares the database.
    pub fn connection(&self) -> sea_orm::DatabaseConnection {
        self.db.clone()
    }

    /// The write gate, for the audit outbox that shares the database.
    pub fn write_gate(&self) -> WriteGate {
        self.writes.clone()
    }

    fn record_from_row(&self, row: version::Model) -> Result<Record, Error> {
        let aad = associated_data(&row.record_id, row.version, &row.patient_id);
        let plaintext = self
            .keys
            .open(&row.resource_sealed, &aad)
            .map_err(|e| e.context("reading a record"))?;
        let resource_json =
            String::from_utf8(plaintext).map_err(|e| Error::internal("reading a record", e))?;
        record_from_row(row, resource_json)
    }
}

/// The writer task: takes whatever creates have queued (up to
/// [`MAX_GROUP`]) and stores them in one transaction. When that fails, each
/// is stored alone, so one bad record fails only its own caller.
async fn store_creates(
    db: DatabaseConnection,
    writes: WriteGate,
    mut queued: mpsc::Receiver<Create>,
) {
    while let Some(group) = next_group(&mut queued, MAX_GROUP, |_| 1).await {
        let _turn = writes.turn().await;
        if group.len() > 1 && insert_creates(&db, &group).await.is_ok() {
            for create in group {
                let _ = create.done.send(Ok(()));
            }
            continue;
        }
        for create in group {
            let result = insert_creates(&db, std::slice::from_ref(&create)).await;
            let _ = create.done.send(result);
        }
    }
}

async fn insert_creates(db: &DatabaseConnection, group: &[Create]) -> Result<(), Error> {
    let failed = |e| Error::internal("storing a record", e);
    let txn = db.begin().await.map_err(failed)?;
    version::Entity::insert_many(group.iter().map(|c| c.row.clone()))
        .exec(&txn)
        .await
        .map_err(failed)?;
    outbox::Entity::insert_many(group.iter().map(|c| c.event.clone()))
        .exec(&txn)
        .await
        .map_err(|e| Error::internal("storing a record's audit event", e))?;
    txn.commit().await.map_err(failed)
}

fn associated_data(record_id: &str, version: i64, patient_id: &str) -> Vec<u8> {
    format!("sharedcare.records/{record_id}/{version}/{patient_id}").into_bytes()
}

fn record_from_row(row: version::Model, resource_json: String) -> Result<Record, Error> {
    Ok(Record {
        id: RecordId::parse("stored record_id", &row.record_id)
            .map_err(|e| Error::internal("reading a record", e))?,
        patient_id: PatientId::parse("stored patient_id", &row.patient_id)
            .map_err(|e| Error::internal("reading a record", e))?,
        resource_type: row.resource_type,
        version: row.version,
        last_updated: row.last_updated,
        category: Category::from_stored(&row.category)
            .ok_or_else(|| Error::internal("reading a record", "unknown category"))?,
        resource_json,
    })
}

impl RecordStore for SqlStore {
    fn create(
        &self,
        record: Record,
        audit_event_id: String,
        audit_payload: Vec<u8>,
    ) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let sealed = self.keys.seal(
                record.resource_json.as_bytes(),
                &associated_data(
                    record.id.as_str(),
                    record.version,
                    record.patient_id.as_str(),
                ),
            )?;
            let (done, stored) = oneshot::channel();
            let closed = || Error::unavailable("records is shutting down");
            self.creates
                .send(Create {
                    row: version::ActiveModel {
                        record_id: Set(record.id.as_str().to_owned()),
                        version: Set(record.version),
                        patient_id: Set(record.patient_id.as_str().to_owned()),
                        resource_type: Set(record.resource_type.clone()),
                        category: Set(record.category.as_str().to_owned()),
                        resource_sealed: Set(sealed),
                        last_updated: Set(record.last_updated),
                    },
                    event: outbox::ActiveModel {
                        sequence: NotSet,
                        event_id: Set(audit_event_id),
                        payload: Set(audit_payload),
                        created_at: Set(record.last_updated),
                        delivered_at: Set(None),
                        parked_reason: Set(None),
                    },
                    done,
                })
                .await
                .map_err(|_| closed())?;
            stored.await.map_err(|_| closed())?
        })
    }

    fn current(&self, patient: &PatientId, id: &RecordId) -> BoxFuture<'_, Option<Record>> {
        let patient = patient.as_str().to_owned();
        let id = id.as_str().to_owned();
        Box::pin(async move {
            version::Entity::find()
                .filter(version::Column::RecordId.eq(id))
                .filter(version::Column::PatientId.eq(patient))
                .order_by_desc(version::Column::Version)
                .one(&self.db)
                .await
                .map_err(|e| Error::internal("reading a record", e))?
                .map(|row| self.record_from_row(row))
                .transpose()
        })
    }
}
