//! The sea-orm store: SQLite (embedded default) or PostgreSQL.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sharedcare_kit::Error;
use tokio::sync::Mutex;

use super::{
    APPENDING, Appended, AuditLogStore, BoxFuture, Migrator, Naming, Page,
    entities::{entry, node},
};
use crate::domain::{
    EncodedEvent, Entry, EventId, Hash, PageSize, PageToken, PatientId,
    merkle::{Frontier, NodeAddr, root_reads},
};

/// Rows per INSERT, well inside SQLite's and PostgreSQL's parameter limits.
const INSERT_CHUNK: usize = 100;
/// Event ids per `IN (...)` lookup.
const LOOKUP_CHUNK: usize = 500;
/// The PostgreSQL advisory lock a batch holds while it appends: one
/// sequencer at a time per log, whichever replica it runs in
/// ("sharedcare audit" in ASCII, truncated to 8 bytes).
const APPEND_LOCK_KEY: i64 = 0x7368_6172_6564_6361;

/// The log in a SQL database.
///
/// One writer at a time appends: within a process, the `frontier` mutex;
/// across processes, SQLite's write lock taken at BEGIN IMMEDIATE, or on
/// PostgreSQL a transaction-scoped advisory lock. So audit replicas sharing
/// one PostgreSQL database take turns batch by batch: each batch reads the
/// tree's size under the lock and writes the entries and nodes that follow
/// it, so the log can neither fork nor gap. The primary keys (entry
/// sequence, node address) are the backstop should anything else write.
pub struct SqlStore {
    db: DatabaseConnection,
    /// The right edge of the tree as this process last wrote it; checked
    /// against the stored size at each batch (another replica may have
    /// appended since) and reloaded when it differs.
    frontier: Mutex<Option<Frontier>>,
}

const READING: &str = "reading the audit log";

impl SqlStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        let db = sharedcare_kit::db::connect::<Migrator>(url, max_connections).await?;
        Ok(Self::from_connection(db))
    }

    /// The store's database connection (a handle on its pool).
    pub fn connection(&self) -> DatabaseConnection {
        self.db.clone()
    }

    /// Wraps a connection whose schema is already up to date.
    pub fn from_connection(db: DatabaseConnection) -> Self {
        SqlStore {
            db,
            frontier: Mutex::new(None),
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
        let mut frontier = self.frontier.lock().await;
        // On SQLite, take the write lock at BEGIN (another process's writer
        // then waits its turn instead of failing when it upgrades a read).
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
            .map_err(|e| Error::internal(APPENDING, e))?;
        let result = async {
            if txn.get_database_backend() == DatabaseBackend::Postgres {
                txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})"))
                    .await
                    .map_err(|e| Error::internal(APPENDING, e))?;
            }
            append_in(&txn, events, naming, frontier.take()).await
        }
        .await;
        match result {
            Ok((appended, after)) => {
                txn.commit()
                    .await
                    .map_err(|e| Error::internal(APPENDING, e))?;
                *frontier = Some(after);
                Ok(appended)
            }
            Err(err) => {
                // Nothing of the batch is kept; the frontier is read again.
                let _ = txn.rollback().await;
                Err(err)
            }
        }
    }
}

impl SqlStore {
    /// A page of the entries matching `filter`, in log order, after `after`.
    fn page_where(
        &self,
        filter: Condition,
        after: Option<PageToken>,
        size: PageSize,
    ) -> BoxFuture<'_, Page> {
        Box::pin(async move {
            let after = after.map_or(0, PageToken::after);
            // One more than asked: whether it comes back says if more follow.
            let rows = entry::Entity::find()
                .filter(filter)
                .filter(entry::Column::Sequence.gt(to_i64(after)))
                .order_by_asc(entry::Column::Sequence)
                .limit(size.get() + 1)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal(READING, e))?;
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
}

/// The tree's size as stored: one more than the highest leaf index.
async fn stored_size<C: ConnectionTrait>(db: &C) -> Result<u64, Error> {
    let top: Option<i64> = node::Entity::find()
        .select_only()
        .column(node::Column::Idx)
        .filter(node::Column::Level.eq(0))
        .order_by_desc(node::Column::Idx)
        .limit(1)
        .into_tuple()
        .one(db)
        .await
        .map_err(|e| Error::internal(READING, e))?;
    match top {
        None => Ok(0),
        Some(idx) => u64::try_from(idx)
            .map(|i| i + 1)
            .map_err(|_| Error::internal(READING, "negative leaf index")),
    }
}

async fn read_nodes<C: ConnectionTrait>(
    db: &C,
    addrs: &[NodeAddr],
) -> Result<HashMap<NodeAddr, Hash>, Error> {
    let mut found = HashMap::with_capacity(addrs.len());
    for chunk in addrs.chunks(LOOKUP_CHUNK / 2) {
        let mut any = Condition::any();
        for addr in chunk {
            any = any.add(
                Condition::all()
                    .add(node::Column::Level.eq(i16::from(addr.level)))
                    .add(node::Column::Idx.eq(to_i64(addr.index))),
            );
        }
        let rows = node::Entity::find()
            .filter(any)
            .all(db)
            .await
            .map_err(|e| Error::internal(READING, e))?;
        for row in rows {
            let addr = NodeAddr::new(
                u8::try_from(row.level).map_err(|_| Error::internal(READING, "bad node level"))?,
                u64::try_from(row.idx).map_err(|_| Error::internal(READING, "bad node index"))?,
            );
            let hash = Hash::from_slice(&row.hash)
                .ok_or_else(|| Error::internal(READING, format!("node {addr} is not 32 bytes")))?;
            found.insert(addr, hash);
        }
    }
    Ok(found)
}

/// Resolves replays, then writes the new entries and the tree nodes they
/// form, all in `txn`. `cached` is the frontier this process last wrote,
/// used only when the stored size still matches it.
async fn append_in(
    txn: &DatabaseTransaction,
    events: Vec<EncodedEvent>,
    naming: Naming,
    cached: Option<Frontier>,
) -> Result<(Vec<Appended>, Frontier), Error> {
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
            .map_err(|e| Error::internal(APPENDING, e))?;
        for row in rows {
            let entry = entry_from_row(row)?;
            known.insert(entry.event_id.clone(), entry);
        }
    }

    let size = stored_size(txn).await?;
    let mut frontier = match cached {
        Some(frontier) if frontier.size() == size => frontier,
        _ => {
            let nodes = read_nodes(txn, &root_reads(size)).await?;
            Frontier::new(size, &nodes).map_err(|e| Error::internal(APPENDING, e))?
        }
    };

    let now = Utc::now();
    let mut appended = Vec::with_capacity(events.len());
    let mut rows = Vec::new();
    let mut leaves = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        if let Some(existing) = known.get(&event.event_id) {
            if event.is_replay_of(existing) {
                appended.push(Appended {
                    entry: existing.clone(),
                    duplicate: true,
                });
                continue;
            }
            return Err(naming.conflict(index));
        }
        let break_glass_by = event.break_glass_by.clone();
        let entry = Entry::new(size + 1 + leaves.len() as u64, event, now);
        leaves.push(entry.leaf_hash());
        known.insert(entry.event_id.clone(), entry.clone());
        rows.push(entry_to_row(&entry, break_glass_by)?);
        appended.push(Appended {
            entry,
            duplicate: false,
        });
    }
    let formed = frontier
        .extend(&leaves)
        .map_err(|e| Error::internal(APPENDING, e))?;

    let conflict = |e: sea_orm::DbErr| {
        if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) {
            // Something else wrote entries or nodes past the size we read
            // under the lock: nothing of ours is kept, and appends are
            // idempotent, so a retry is safe.
            Error::unavailable("the audit log was appended to concurrently; retry")
        } else {
            Error::internal(APPENDING, e)
        }
    };
    for chunk in rows.chunks(INSERT_CHUNK) {
        entry::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await
            .map_err(conflict)?;
    }
    for chunk in formed.chunks(INSERT_CHUNK) {
        node::Entity::insert_many(chunk.iter().map(|(addr, hash)| node::ActiveModel {
            level: Set(i16::from(addr.level)),
            idx: Set(to_i64(addr.index)),
            hash: Set(hash.to_vec()),
        }))
        .exec_without_returning(txn)
        .await
        .map_err(conflict)?;
    }
    Ok((appended, frontier))
}

fn entry_to_row(e: &Entry, break_glass_by: Option<String>) -> Result<entry::ActiveModel, Error> {
    let sequence = i64::try_from(e.sequence)
        .map_err(|_| Error::internal(APPENDING, "sequence out of range"))?;
    Ok(entry::ActiveModel {
        sequence: Set(sequence),
        event_id: Set(e.event_id.as_str().to_owned()),
        patient_id: Set(e.patient_id.as_str().to_owned()),
        record_time_us: Set(e.record_time.timestamp_micros()),
        event: Set(e.event.clone()),
        break_glass_by: Set(break_glass_by),
    })
}

/// Reads a row back. A row that cannot even be read is reported as an
/// internal error naming only its sequence number; one that reads but has
/// been altered is left for an auditor's verification to find.
fn entry_from_row(row: entry::Model) -> Result<Entry, Error> {
    let bad = |what: &str| Error::internal(READING, format!("entry {}: {what}", row.sequence));
    Ok(Entry {
        sequence: u64::try_from(row.sequence).map_err(|_| bad("negative sequence"))?,
        record_time: DateTime::from_timestamp_micros(row.record_time_us)
            .ok_or_else(|| bad("record time out of range"))?,
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
                .ok_or_else(|| Error::internal(APPENDING, "no entry written"))
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
        self.page_where(
            Condition::all().add(entry::Column::PatientId.eq(patient.as_str())),
            after,
            size,
        )
    }

    fn break_glass_entries(
        &self,
        organisation: Option<String>,
        after: Option<PageToken>,
        size: PageSize,
    ) -> BoxFuture<'_, Page> {
        let flagged = match organisation {
            Some(organisation) => entry::Column::BreakGlassBy.eq(organisation),
            None => entry::Column::BreakGlassBy.is_not_null(),
        };
        self.page_where(Condition::all().add(flagged), after, size)
    }

    fn entries(&self, after_sequence: u64, limit: u64) -> BoxFuture<'_, Vec<Entry>> {
        Box::pin(async move {
            entry::Entity::find()
                .filter(entry::Column::Sequence.gt(to_i64(after_sequence)))
                .order_by_asc(entry::Column::Sequence)
                .limit(limit)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal(READING, e))?
                .into_iter()
                .map(entry_from_row)
                .collect()
        })
    }

    fn entry(&self, sequence: u64) -> BoxFuture<'_, Option<Entry>> {
        Box::pin(async move {
            entry::Entity::find_by_id(to_i64(sequence))
                .one(&self.db)
                .await
                .map_err(|e| Error::internal(READING, e))?
                .map(entry_from_row)
                .transpose()
        })
    }

    fn tree_size(&self) -> BoxFuture<'_, u64> {
        Box::pin(stored_size(&self.db))
    }

    fn nodes(&self, addrs: Vec<NodeAddr>) -> BoxFuture<'_, HashMap<NodeAddr, Hash>> {
        Box::pin(async move { read_nodes(&self.db, &addrs).await })
    }
}
