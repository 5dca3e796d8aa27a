//! The sea-orm store: SQLite (embedded default) or PostgreSQL.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, SqlErr, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use sharedcare_kit::Error;
use tokio::sync::Mutex;

use super::{Appended, AuditLogStore, BoxFuture, Migrator, Page, entities::entry};
use crate::domain::{
    ChainHead, EncodedEvent, Entry, EventId, Hash, PageSize, PageToken, PatientId,
};

/// Rows per INSERT, well inside SQLite's and PostgreSQL's parameter limits.
const INSERT_CHUNK: usize = 100;
/// Event ids per `IN (...)` lookup.
const LOOKUP_CHUNK: usize = 500;

/// The log in a SQL database.
///
/// Appends are serialised by `append_lock`: reading the head and inserting
/// the entries that follow it happen under the lock, in one transaction, so
/// within this process the chain cannot fork. The unique `sequence` key is
/// the backstop should another writer slip in (a second replica): its
/// insert fails rather than forking the chain, and the caller is told to
/// retry. Several replicas writing one log need the design of the Merkle log
/// issue (a single sequencer or a database-side lock); until then, run one
/// audit writer per database.
pub struct SqlStore {
    db: DatabaseConnection,
    append_lock: Mutex<()>,
}

/// How errors about an event name it: the single `event` or `events[i]`.
#[derive(Clone, Copy)]
enum Naming {
    Single,
    Batch,
}

impl Naming {
    fn field(self, index: usize, name: &str) -> String {
        match self {
            Naming::Single => format!("event.{name}"),
            Naming::Batch => format!("events[{index}].{name}"),
        }
    }
}

impl SqlStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        let db = sharedcare_kit::db::connect::<Migrator>(url, max_connections).await?;
        Ok(Self::from_connection(db))
    }

    /// Wraps a connection whose schema is already up to date.
    pub fn from_connection(db: DatabaseConnection) -> Self {
        SqlStore {
            db,
            append_lock: Mutex::new(()),
        }
    }

    async fn append_all(
        &self,
        events: Vec<EncodedEvent>,
        naming: Naming,
    ) -> Result<Vec<Appended>, Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let _serialised = self.append_lock.lock().await;
        // On SQLite, take the write lock at BEGIN (another process's writer
        // then waits its turn instead of failing when it upgrades a read).
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(|e| Error::internal("appending to the audit log", e))?;
        match append_in(&txn, events, naming).await {
            Ok(appended) => {
                txn.commit()
                    .await
                    .map_err(|e| Error::internal("appending to the audit log", e))?;
                Ok(appended)
            }
            Err(err) => {
                // Nothing of the batch is kept.
                let _ = txn.rollback().await;
                Err(err)
            }
        }
    }
}

/// Reads the head, resolves replays, and inserts the new entries, all in `txn`.
async fn append_in(
    txn: &DatabaseTransaction,
    events: Vec<EncodedEvent>,
    naming: Naming,
) -> Result<Vec<Appended>, Error> {
    let context = "appending to the audit log";
    let mut ids: Vec<String> = events
        .iter()
        .map(|e| e.event_id.as_str().to_owned())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut known: HashMap<EventId, Entry> = HashMap::new();
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        let rows = entry::Entity::find()
            .filter(entry::Column::EventId.is_in(chunk.iter().cloned()))
            .all(txn)
            .await
            .map_err(|e| Error::internal(context, e))?;
        for row in rows {
            let entry = entry_from_row(row)?;
            known.insert(entry.event_id.clone(), entry);
        }
    }

    let mut head = match entry::Entity::find()
        .order_by_desc(entry::Column::Sequence)
        .one(txn)
        .await
        .map_err(|e| Error::internal(context, e))?
    {
        Some(row) => ChainHead::after(&entry_from_row(row)?),
        None => ChainHead::EMPTY,
    };

    let now = Utc::now();
    let mut appended = Vec::with_capacity(events.len());
    let mut rows = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        if let Some(existing) = known.get(&event.event_id) {
            if event.is_replay_of(existing) {
                appended.push(Appended {
                    entry: existing.clone(),
                    duplicate: true,
                });
                continue;
            }
            return Err(Error::already_exists(format!(
                "{}: an event with this id is already in the log with different content",
                naming.field(index, "event_id")
            ))
            .with_reason("EVENT_ID_CONFLICT"));
        }
        let entry = head.append(event, now);
        known.insert(entry.event_id.clone(), entry.clone());
        rows.push(entry_to_row(&entry)?);
        appended.push(Appended {
            entry,
            duplicate: false,
        });
    }

    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<entry::ActiveModel> = rows.by_ref().take(INSERT_CHUNK).collect();
        entry::Entity::insert_many(chunk)
            .exec_without_returning(txn)
            .await
            .map_err(|e| {
                if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
                    // Another writer appended (or logged one of these event
                    // ids) since we read the head: nothing of ours is kept,
                    // and a retry is safe because appends are idempotent.
                    Error::unavailable("the audit log was appended to concurrently; retry")
                } else {
                    Error::internal(context, e)
                }
            })?;
    }
    Ok(appended)
}

fn entry_to_row(e: &Entry) -> Result<entry::ActiveModel, Error> {
    let sequence = i64::try_from(e.sequence)
        .map_err(|_| Error::internal("appending to the audit log", "sequence out of range"))?;
    Ok(entry::ActiveModel {
        sequence: Set(sequence),
        event_id: Set(e.event_id.as_str().to_owned()),
        patient_id: Set(e.patient_id.as_str().to_owned()),
        record_time_us: Set(e.record_time.timestamp_micros()),
        previous_hash: Set(e.previous_hash.to_vec()),
        entry_hash: Set(e.entry_hash.to_vec()),
        event: Set(e.event.clone()),
    })
}

/// Reads a row back. A row that cannot even be read is reported as an
/// internal error naming only its sequence number; one that reads but has
/// been altered is left for chain verification to find.
fn entry_from_row(row: entry::Model) -> Result<Entry, Error> {
    let bad = |what: &str| {
        Error::internal(
            "reading the audit log",
            format!("entry {}: {what}", row.sequence),
        )
    };
    Ok(Entry {
        sequence: u64::try_from(row.sequence).map_err(|_| bad("negative sequence"))?,
        record_time: DateTime::from_timestamp_micros(row.record_time_us)
            .ok_or_else(|| bad("record time out of range"))?,
        previous_hash: Hash::from_slice(&row.previous_hash)
            .ok_or_else(|| bad("previous hash is not 32 bytes"))?,
        entry_hash: Hash::from_slice(&row.entry_hash)
            .ok_or_else(|| bad("entry hash is not 32 bytes"))?,
        event_id: EventId::parse("event_id", &row.event_id).map_err(|_| bad("bad event id"))?,
        patient_id: PatientId::parse("patient_id", &row.patient_id)
            .map_err(|_| bad("bad patient id"))?,
        event: row.event,
    })
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl AuditLogStore for SqlStore {
    fn append(&self, event: EncodedEvent) -> BoxFuture<'_, Appended> {
        Box::pin(async move {
            self.append_all(vec![event], Naming::Single)
                .await?
                .pop()
                .ok_or_else(|| Error::internal("appending to the audit log", "no entry written"))
        })
    }

    fn append_batch(&self, events: Vec<EncodedEvent>) -> BoxFuture<'_, Vec<Appended>> {
        Box::pin(self.append_all(events, Naming::Batch))
    }

    fn patient_entries(
        &self,
        patient: PatientId,
        after: Option<PageToken>,
        size: PageSize,
    ) -> BoxFuture<'_, Page> {
        Box::pin(async move {
            let after = after.map_or(0, PageToken::after);
            // One more than asked: whether it comes back says if more follow.
            let rows = entry::Entity::find()
                .filter(entry::Column::PatientId.eq(patient.as_str()))
                .filter(entry::Column::Sequence.gt(to_i64(after)))
                .order_by_asc(entry::Column::Sequence)
                .limit(size.get() + 1)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal("reading the audit log", e))?;
            let mut entries = rows
                .into_iter()
                .map(entry_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let more = entries.len() as u64 > size.get();
            entries.truncate(usize::try_from(size.get()).unwrap_or(usize::MAX));
            let next = match (more, entries.last()) {
                (true, Some(last)) => Some(PageToken::after_sequence(last.sequence)),
                _ => None,
            };
            Ok(Page { entries, next })
        })
    }

    fn entries(&self, after_sequence: u64, limit: u64) -> BoxFuture<'_, Vec<Entry>> {
        Box::pin(async move {
            entry::Entity::find()
                .filter(entry::Column::Sequence.gt(to_i64(after_sequence)))
                .order_by_asc(entry::Column::Sequence)
                .limit(limit)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal("reading the audit log", e))?
                .into_iter()
                .map(entry_from_row)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    //! Tampering with the stored rows themselves (the conformance suite in
    //! tests/store.rs sees the store only through its trait).

    use sea_orm::{ConnectionTrait, Statement};
    use sharedcare_kit::testing::TestDatabase;

    use super::*;
    use crate::domain::ChainError;

    fn event(n: u32) -> EncodedEvent {
        EncodedEvent {
            event_id: EventId::parse("event_id", &format!("ev-{n}")).expect("id"),
            patient_id: PatientId::parse("patient_id", "patient-1").expect("patient"),
            bytes: format!("event {n}").into_bytes(),
        }
    }

    async fn tampering_is_found(url: &str) {
        let store = SqlStore::connect(url, 2).await.expect("connect");
        for n in 1..=3 {
            store.append(event(n)).await.expect("append");
        }
        assert_eq!(
            store
                .verify_chain()
                .await
                .expect("read")
                .expect("verifies")
                .size,
            3
        );
        let backend = store.db.get_database_backend();
        let tamper = [
            "UPDATE audit_entries SET patient_id = 'patient-2' WHERE sequence = 2",
            "UPDATE audit_entries SET record_time_us = record_time_us + 1 WHERE sequence = 2",
            "UPDATE audit_entries SET event_id = 'ev-x' WHERE sequence = 2",
        ];
        for sql in tamper {
            // Work on a copy of the chain each time: re-append from scratch.
            store
                .db
                .execute_unprepared("DELETE FROM audit_entries")
                .await
                .expect("reset");
            for n in 1..=3 {
                store.append(event(n)).await.expect("append");
            }
            store.db.execute_unprepared(sql).await.expect("tamper");
            assert_eq!(
                store.verify_chain().await.expect("read"),
                Err(ChainError::HashMismatch { sequence: 2 }),
                "{sql}"
            );
        }
        // The event bytes themselves.
        store
            .db
            .execute_unprepared("DELETE FROM audit_entries")
            .await
            .expect("reset");
        for n in 1..=3 {
            store.append(event(n)).await.expect("append");
        }
        let param = match backend {
            sea_orm::DatabaseBackend::Postgres => "$1",
            _ => "?",
        };
        store
            .db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                format!("UPDATE audit_entries SET event = {param} WHERE sequence = 3"),
                [b"event 9".to_vec().into()],
            ))
            .await
            .expect("tamper");
        assert_eq!(
            store.verify_chain().await.expect("read"),
            Err(ChainError::HashMismatch { sequence: 3 })
        );
        // A deleted entry is a gap.
        store
            .db
            .execute_unprepared("DELETE FROM audit_entries WHERE sequence = 2")
            .await
            .expect("delete");
        assert_eq!(
            store.verify_chain().await.expect("read"),
            Err(ChainError::SequenceGap {
                expected: 2,
                found: 3
            })
        );
        store.db.close_by_ref().await.ok();
    }

    #[tokio::test]
    async fn tampering_is_found_sqlite() {
        let db = TestDatabase::sqlite();
        tampering_is_found(db.url()).await;
    }

    #[tokio::test]
    async fn tampering_is_found_postgres() {
        let Some(db) = TestDatabase::postgres("tampering_is_found").await else {
            return;
        };
        tampering_is_found(db.url()).await;
        db.cleanup().await;
    }
}
