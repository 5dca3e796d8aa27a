//! The `sqlite` and `postgres` backends: one sea-orm store for both.
//!
//! Writes are group-committed: concurrent writes queue for one writer task,
//! which checks and stores whatever has queued in one transaction (one
//! fsync) — each version with its index rows, idempotency key and audit
//! event — then answers each caller. A write whose check fails (a stale
//! version, a key already used) is answered alone and the rest go on; when
//! the transaction itself fails, each write is retried alone so one bad
//! write fails only its own caller.

use std::collections::{HashMap, HashSet};

use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, TransactionTrait,
    sea_query::{Expr, ExprTrait, Query},
};
use sharedcare_kit::{Error, db::WriteGate, group::next_group};
use tokio::sync::{mpsc, oneshot};

use super::{
    AuditRow, Body, BoxFuture, Change, Found, IdempotencyRow, Migrator, RecordMeta, RecordStore,
    SearchQuery, SortKey, Stored, Write, entities::*, stale,
};
use crate::domain::{Category, PatientId, RecordId, TokenParam, TokenQuery};

#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    writes: WriteGate,
    queue: mpsc::Sender<Pending>,
}

struct Pending {
    write: Write,
    done: oneshot::Sender<Result<(), Error>>,
}

/// Most writes one transaction stores.
const MAX_GROUP: usize = 256;
/// The advisory lock that orders change-log commits on PostgreSQL ("records"
/// in ASCII, so it does not collide with another service's).
const CHANGE_LOG_LOCK: i64 = 0x0072_6563_6f72_6473;

/// Most rows one INSERT carries (both databases bound their parameters).
const MAX_ROWS_PER_INSERT: usize = 500;

impl SqlStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, Error> {
        let db = sharedcare_kit::db::connect::<Migrator>(url, max_connections).await?;
        let writes = WriteGate::for_db(&db);
        let (queue, queued) = mpsc::channel(4 * MAX_GROUP);
        tokio::spawn(store_writes(db.clone(), writes.clone(), queued));
        Ok(SqlStore { db, writes, queue })
    }

    /// The connection, for the audit outbox that shares the database.
    pub fn connection(&self) -> DatabaseConnection {
        self.db.clone()
    }

    /// The write gate, for the audit outbox that shares the database.
    pub fn write_gate(&self) -> WriteGate {
        self.writes.clone()
    }
}

fn failed(context: &'static str) -> impl Fn(DbErr) -> Error {
    move |e| Error::internal(context, e)
}

/// The writer task: takes whatever writes have queued (up to
/// [`MAX_GROUP`]) and stores them in one transaction.
async fn store_writes(
    db: DatabaseConnection,
    writes: WriteGate,
    mut queued: mpsc::Receiver<Pending>,
) {
    while let Some(group) = next_group(&mut queued, MAX_GROUP, |_| 1).await {
        let _turn = writes.turn().await;
        let (writes, answers): (Vec<Write>, Vec<_>) =
            group.into_iter().map(|p| (p.write, p.done)).unzip();
        match store_group(&db, &writes).await {
            Ok(results) => {
                for (done, result) in answers.into_iter().zip(results) {
                    let _ = done.send(result);
                }
            }
            Err(e) if writes.len() > 1 && retry_alone(&e) => {
                for (write, done) in writes.iter().zip(answers) {
                    let result = store_group(&db, std::slice::from_ref(write))
                        .await
                        .and_then(|mut r| r.pop().unwrap_or(Ok(())));
                    let _ = done.send(result);
                }
            }
            Err(e) => {
                for done in answers {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Whether a group's writes are worth storing one by one after the group
/// failed: yes when one of them may have been what failed it, so that it
/// fails only its own caller; not when the database cannot be reached —
/// each alone would fail the same way, the last caller waiting the
/// connection timeout once per write before it (every write queued behind
/// them too).
fn retry_alone(e: &Error) -> bool {
    e.code != sharedcare_kit::error::Code::Unavailable
}

/// Checks each write against what is stored (and the writes before it in
/// the group), stores those that pass in one transaction, and returns each
/// write's answer. An error here is the transaction's.
async fn store_group(
    db: &DatabaseConnection,
    group: &[Write],
) -> Result<Vec<Result<(), Error>>, Error> {
    let txn = db.begin().await.map_err(failed("storing a record"))?;
    let results = check_group(&txn, group).await?;
    let passing: Vec<&Write> = group
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .map(|(w, _)| w)
        .collect();
    if passing.is_empty() {
        return Ok(results);
    }
    insert_group(&txn, &passing)
        .await
        .map_err(|e| match e.sql_err() {
            // Another replica stored the same version first (PostgreSQL).
            Some(SqlErr::UniqueConstraintViolation(_)) => Error::failed_precondition(
                "the record changed while this change was stored; read it again",
            ),
            _ => Error::internal("storing a record", e),
        })?;
    txn.commit().await.map_err(failed("storing a record"))?;
    Ok(results)
}

async fn check_group(
    txn: &DatabaseTransaction,
    group: &[Write],
) -> Result<Vec<Result<(), Error>>, Error> {
    let updated: Vec<&str> = group.iter().map(|w| w.meta.id.as_str()).collect();
    // record id → (current version, patient); versions are few per record.
    let mut current: HashMap<String, (i64, String)> = HashMap::new();
    {
        let rows: Vec<(String, i64, String)> = version::Entity::find()
            .select_only()
            .column(version::Column::RecordId)
            .column(version::Column::Version)
            .column(version::Column::PatientId)
            .filter(version::Column::RecordId.is_in(updated))
            .into_tuple()
            .all(txn)
            .await
            .map_err(failed("checking a record's version"))?;
        for (id, version, patient) in rows {
            let entry = current.entry(id).or_insert((version, patient.clone()));
            if version > entry.0 {
                *entry = (version, patient);
            }
        }
    }
    let keys: Vec<&str> = group
        .iter()
        .filter_map(|w| w.idempotency.as_ref().map(|i| i.key.as_str()))
        .collect();
    let mut used: HashSet<String> = HashSet::new();
    if !keys.is_empty() {
        used.extend(
            idempotency::Entity::find()
                .select_only()
                .column(idempotency::Column::Key)
                .filter(idempotency::Column::Key.is_in(keys))
                .into_tuple::<String>()
                .all(txn)
                .await
                .map_err(failed("checking an idempotency key"))?,
        );
    }
    let mut results = Vec::with_capacity(group.len());
    for write in group {
        let id = write.meta.id.as_str();
        let patient = write.meta.patient_id.as_str();
        let result = match (write.meta.version, current.get(id)) {
            _ if write
                .idempotency
                .as_ref()
                .is_some_and(|i| used.contains(&i.key)) =>
            {
                Err(Error::already_exists("idempotency_key was already used"))
            }
            (1, Some(_)) => Err(Error::already_exists("a record with this id exists")),
            (1, None) => Ok(()),
            (_, None) => Err(Error::not_found("no such record for this patient")),
            (_, Some((_, owner))) if owner != patient => {
                Err(Error::not_found("no such record for this patient"))
            }
            (n, Some((cur, _))) if *cur != n - 1 => Err(stale(*cur)),
            _ => Ok(()),
        };
        if result.is_ok() {
            current.insert(id.to_owned(), (write.meta.version, patient.to_owned()));
            if let Some(i) = &write.idempotency {
                used.insert(i.key.clone());
            }
        }
        results.push(result);
    }
    Ok(results)
}

async fn insert_group(txn: &DatabaseTransaction, group: &[&Write]) -> Result<(), DbErr> {
    let versions: Vec<version::ActiveModel> = group.iter().map(|w| version_row(w)).collect();
    for chunk in versions.chunks(MAX_ROWS_PER_INSERT) {
        version::Entity::insert_many(chunk.to_vec())
            .exec(txn)
            .await?;
    }
    let replaced: Vec<&str> = group
        .iter()
        .filter(|w| w.meta.version > 1)
        .map(|w| w.meta.id.as_str())
        .collect();
    if !replaced.is_empty() {
        token::Entity::delete_many()
            .filter(token::Column::RecordId.is_in(replaced.clone()))
            .exec(txn)
            .await?;
        index::Entity::delete_many()
            .filter(index::Column::RecordId.is_in(replaced))
            .exec(txn)
            .await?;
    }
    // A record written twice in one group keeps only its last version's index.
    let mut last: HashMap<&str, &Write> = HashMap::new();
    for w in group {
        last.insert(w.meta.id.as_str(), w);
    }
    let indexed: Vec<&Write> = group
        .iter()
        .filter(|w| {
            !w.meta.deleted
                && last
                    .get(w.meta.id.as_str())
                    .is_some_and(|l| std::ptr::eq(*l, **w))
        })
        .copied()
        .collect();
    let index_rows: Vec<index::ActiveModel> = indexed.iter().map(|w| index_row(w)).collect();
    for chunk in index_rows.chunks(MAX_ROWS_PER_INSERT) {
        index::Entity::insert_many(chunk.to_vec()).exec(txn).await?;
    }
    let tokens: Vec<token::ActiveModel> = indexed
        .iter()
        .flat_map(|w| {
            w.index.tokens.iter().map(|t| token::ActiveModel {
                record_id: Set(w.meta.id.as_str().to_owned()),
                param: Set(t.param.as_str().to_owned()),
                system: Set(t.system.clone()),
                code: Set(t.code.clone()),
            })
        })
        .collect();
    for chunk in tokens.chunks(MAX_ROWS_PER_INSERT) {
        token::Entity::insert_many(chunk.to_vec()).exec(txn).await?;
    }
    // The change log's sequence must follow commit order (a watcher that has
    // read up to n must never later find a change below n). On PostgreSQL,
    // where replicas commit concurrently, one lock per transaction, held
    // until commit, orders them; SQLite's writers are one at a time anyway.
    if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CHANGE_LOG_LOCK})"))
            .await?;
    }
    let changes: Vec<change::ActiveModel> = group
        .iter()
        .map(|w| change::ActiveModel {
            sequence: NotSet,
            record_id: Set(w.meta.id.as_str().to_owned()),
            version: Set(w.meta.version),
            patient_id: Set(w.meta.patient_id.as_str().to_owned()),
            resource_type: Set(w.meta.resource_type.clone()),
            category: Set(w.meta.category.as_str().to_owned()),
            deleted: Set(w.meta.deleted),
            last_updated: Set(w.meta.last_updated),
        })
        .collect();
    for chunk in changes.chunks(MAX_ROWS_PER_INSERT) {
        change::Entity::insert_many(chunk.to_vec())
            .exec(txn)
            .await?;
    }
    let keys: Vec<idempotency::ActiveModel> = group
        .iter()
        .filter_map(|w| w.idempotency.as_ref().map(|i| (w, i)))
        .map(|(w, i)| idempotency::ActiveModel {
            key: Set(i.key.clone()),
            request_hash: Set(i.request_hash.clone()),
            record_id: Set(i.record_id.as_str().to_owned()),
            version: Set(i.version),
            created_at: Set(w.meta.last_updated),
        })
        .collect();
    for chunk in keys.chunks(MAX_ROWS_PER_INSERT) {
        idempotency::Entity::insert_many(chunk.to_vec())
            .exec(txn)
            .await?;
    }
    let events: Vec<outbox::ActiveModel> = group
        .iter()
        .filter_map(|w| w.audit.as_ref().map(|a| outbox_row(a, w)))
        .collect();
    for chunk in events.chunks(MAX_ROWS_PER_INSERT) {
        outbox::Entity::insert_many(chunk.to_vec())
            .exec(txn)
            .await?;
    }
    Ok(())
}

fn version_row(w: &Write) -> version::ActiveModel {
    version::ActiveModel {
        record_id: Set(w.meta.id.as_str().to_owned()),
        version: Set(w.meta.version),
        patient_id: Set(w.meta.patient_id.as_str().to_owned()),
        resource_type: Set(w.meta.resource_type.clone()),
        category: Set(w.meta.category.as_str().to_owned()),
        body: Set(w.body.clone()),
        last_updated: Set(w.meta.last_updated),
        deleted: Set(w.meta.deleted),
    }
}

fn index_row(w: &Write) -> index::ActiveModel {
    let key = w.sort_key();
    index::ActiveModel {
        record_id: Set(key.record_id),
        patient_id: Set(w.meta.patient_id.as_str().to_owned()),
        resource_type: Set(w.meta.resource_type.clone()),
        category: Set(w.meta.category.as_str().to_owned()),
        version: Set(w.meta.version),
        sort_at: Set(key.at_micros),
        date_start: Set(w.index.date.as_ref().map(|d| d.start.timestamp_micros())),
        date_end: Set(w.index.date.as_ref().map(|d| d.end.timestamp_micros())),
        updated_at: Set(w.meta.last_updated.timestamp_micros()),
    }
}

fn outbox_row(audit: &AuditRow, w: &Write) -> outbox::ActiveModel {
    outbox::ActiveModel {
        sequence: NotSet,
        event_id: Set(audit.event_id.clone()),
        payload: Set(audit.payload.clone()),
        created_at: Set(w.meta.last_updated),
        delivered_at: Set(None),
        parked_reason: Set(None),
    }
}

fn stored_from_row(row: version::Model) -> Result<Stored, Error> {
    let bad = |e| Error::internal("reading a record", e);
    Ok(Stored {
        meta: RecordMeta {
            id: RecordId::parse("stored record_id", &row.record_id).map_err(bad)?,
            patient_id: PatientId::parse("stored patient_id", &row.patient_id).map_err(bad)?,
            resource_type: row.resource_type,
            version: row.version,
            last_updated: row.last_updated,
            category: Category::from_stored(&row.category)
                .ok_or_else(|| Error::internal("reading a record", "unknown category"))?,
            deleted: row.deleted,
        },
        body: Body::Clear(row.body),
    })
}

fn token_condition(param: TokenParam, wanted: &[TokenQuery]) -> Condition {
    let mut any = Condition::any();
    for w in wanted {
        let mut one = Condition::all().add(token::Column::Code.eq(w.code.as_str()));
        if let Some(system) = &w.system {
            one = one.add(token::Column::System.eq(system.as_str()));
        }
        any = any.add(one);
    }
    Condition::all()
        .add(token::Column::Param.eq(param.as_str()))
        .add(any)
}

fn search_condition(query: &SearchQuery, after: Option<&SortKey>) -> Condition {
    let mut cond = Condition::all()
        .add(index::Column::PatientId.eq(query.patient_id.as_str()))
        .add(index::Column::Category.is_in(query.categories.iter().map(|c| c.as_str())));
    if !query.resource_types.is_empty() {
        cond = cond.add(index::Column::ResourceType.is_in(query.resource_types.iter().cloned()));
    }
    // A record without a clinical date has NULL bounds: no comparison admits it.
    if let Some(from) = query.date_from {
        cond = cond.add(index::Column::DateEnd.gt(from.timestamp_micros()));
    }
    if let Some(to) = query.date_to {
        cond = cond.add(index::Column::DateStart.lt(to.timestamp_micros()));
    }
    if let Some(from) = query.updated_from {
        cond = cond.add(index::Column::UpdatedAt.gte(from.timestamp_micros()));
    }
    if let Some(to) = query.updated_to {
        cond = cond.add(index::Column::UpdatedAt.lt(to.timestamp_micros()));
    }
    for (param, wanted) in [
        (TokenParam::Code, &query.codes),
        (TokenParam::Category, &query.fhir_categories),
    ] {
        if wanted.is_empty() {
            continue;
        }
        cond = cond.add(
            Expr::col(index::Column::RecordId).in_subquery(
                Query::select()
                    .column(token::Column::RecordId)
                    .from(token::Entity)
                    .cond_where(token_condition(param, wanted))
                    .to_owned(),
            ),
        );
    }
    if let Some(after) = after {
        cond = cond.add(
            Condition::any()
                .add(index::Column::SortAt.lt(after.at_micros))
                .add(
                    Condition::all()
                        .add(index::Column::SortAt.eq(after.at_micros))
                        .add(index::Column::RecordId.lt(after.record_id.as_str())),
                ),
        );
    }
    cond
}

/// A page of the index entries a search finds, in result order.
fn search_hits(
    query: &SearchQuery,
    after: Option<&SortKey>,
    limit: usize,
) -> sea_orm::Select<index::Entity> {
    index::Entity::find()
        .select_only()
        .column(index::Column::RecordId)
        .column(index::Column::Version)
        .column(index::Column::SortAt)
        .filter(search_condition(query, after))
        .order_by_desc(index::Column::SortAt)
        .order_by_desc(index::Column::RecordId)
        .limit(limit as u64)
}

impl RecordStore for SqlStore {
    fn audit_in_write(&self) -> bool {
        true
    }

    fn write(&self, write: Write) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (done, stored) = oneshot::channel();
            let closed = || Error::unavailable("records is shutting down");
            self.queue
                .send(Pending { write, done })
                .await
                .map_err(|_| closed())?;
            stored.await.map_err(|_| closed())?
        })
    }

    fn current(&self, patient: &PatientId, id: &RecordId) -> BoxFuture<'_, Option<Stored>> {
        let patient = patient.as_str().to_owned();
        let id = id.as_str().to_owned();
        Box::pin(async move {
            version::Entity::find()
                .filter(version::Column::RecordId.eq(id))
                .filter(version::Column::PatientId.eq(patient))
                .order_by_desc(version::Column::Version)
                .one(&self.db)
                .await
                .map_err(failed("reading a record"))?
                .map(stored_from_row)
                .transpose()
        })
    }

    fn version(
        &self,
        patient: &PatientId,
        id: &RecordId,
        version: i64,
    ) -> BoxFuture<'_, Option<Stored>> {
        let patient = patient.as_str().to_owned();
        let id = id.as_str().to_owned();
        Box::pin(async move {
            version::Entity::find_by_id((id, version))
                .filter(version::Column::PatientId.eq(patient))
                .one(&self.db)
                .await
                .map_err(failed("reading a record"))?
                .map(stored_from_row)
                .transpose()
        })
    }

    fn history(
        &self,
        patient: &PatientId,
        id: &RecordId,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Vec<Stored>> {
        let patient = patient.as_str().to_owned();
        let id = id.as_str().to_owned();
        Box::pin(async move {
            let mut q = version::Entity::find()
                .filter(version::Column::RecordId.eq(id))
                .filter(version::Column::PatientId.eq(patient));
            if let Some(before) = before {
                q = q.filter(version::Column::Version.lt(before));
            }
            q.order_by_desc(version::Column::Version)
                .limit(limit as u64)
                .all(&self.db)
                .await
                .map_err(failed("reading a record's history"))?
                .into_iter()
                .map(stored_from_row)
                .collect()
        })
    }

    fn search<'a>(
        &'a self,
        query: &'a SearchQuery,
        after: Option<&'a SortKey>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Found>> {
        Box::pin(async move {
            if query.categories.is_empty() || limit == 0 {
                return Ok(Vec::new());
            }
            let hits: Vec<(String, i64, i64)> = search_hits(query, after, limit)
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(failed("searching records"))?;
            if hits.is_empty() {
                return Ok(Vec::new());
            }
            let mut wanted = Condition::any();
            for (id, version, _) in &hits {
                wanted = wanted.add(
                    Condition::all()
                        .add(version::Column::RecordId.eq(id.as_str()))
                        .add(version::Column::Version.eq(*version)),
                );
            }
            let mut rows: HashMap<String, version::Model> = version::Entity::find()
                .filter(wanted)
                .all(&self.db)
                .await
                .map_err(failed("searching records"))?
                .into_iter()
                .map(|row| (row.record_id.clone(), row))
                .collect();
            let mut found = Vec::with_capacity(hits.len());
            for (id, _, at_micros) in hits {
                // Versions are never removed, so this holds but for a broken database.
                let Some(row) = rows.remove(&id) else {
                    continue;
                };
                found.push(Found {
                    stored: stored_from_row(row)?,
                    key: SortKey {
                        at_micros,
                        record_id: id,
                    },
                });
            }
            Ok(found)
        })
    }

    fn scan<'a>(
        &'a self,
        after: Option<&'a (RecordId, i64)>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Stored>> {
        Box::pin(async move {
            let mut q = version::Entity::find();
            if let Some((id, v)) = after {
                q = q.filter(
                    Condition::any()
                        .add(version::Column::RecordId.gt(id.as_str()))
                        .add(
                            Condition::all()
                                .add(version::Column::RecordId.eq(id.as_str()))
                                .add(version::Column::Version.gt(*v)),
                        ),
                );
            }
            q.order_by_asc(version::Column::RecordId)
                .order_by_asc(version::Column::Version)
                .limit(limit as u64)
                .all(&self.db)
                .await
                .map_err(failed("scanning records"))?
                .into_iter()
                .map(stored_from_row)
                .collect()
        })
    }

    fn replace_body<'a>(
        &'a self,
        id: &'a RecordId,
        version: i64,
        expected: &'a [u8],
        body: Vec<u8>,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let _turn = self.writes.turn().await;
            let result = version::Entity::update_many()
                .col_expr(version::Column::Body, Expr::value(body))
                .filter(version::Column::RecordId.eq(id.as_str()))
                .filter(version::Column::Version.eq(version))
                .filter(version::Column::Body.eq(expected.to_vec()))
                .exec(&self.db)
                .await
                .map_err(failed("replacing a record's body"))?;
            Ok(result.rows_affected == 1)
        })
    }

    fn changes(&self, after: i64, limit: usize) -> BoxFuture<'_, Vec<Change>> {
        Box::pin(async move {
            let bad = |e| Error::internal("reading the change log", e);
            change::Entity::find()
                .filter(change::Column::Sequence.gt(after))
                .order_by_asc(change::Column::Sequence)
                .limit(limit as u64)
                .all(&self.db)
                .await
                .map_err(failed("reading the change log"))?
                .into_iter()
                .map(|row| {
                    Ok(Change {
                        sequence: row.sequence,
                        meta: RecordMeta {
                            id: RecordId::parse("stored record_id", &row.record_id).map_err(bad)?,
                            patient_id: PatientId::parse("stored patient_id", &row.patient_id)
                                .map_err(bad)?,
                            resource_type: row.resource_type,
                            version: row.version,
                            last_updated: row.last_updated,
                            category: Category::from_stored(&row.category).ok_or_else(|| {
                                Error::internal("reading the change log", "unknown category")
                            })?,
                            deleted: row.deleted,
                        },
                    })
                })
                .collect()
        })
    }

    fn idempotency(&self, key: &str) -> BoxFuture<'_, Option<IdempotencyRow>> {
        let key = key.to_owned();
        Box::pin(async move {
            let Some(row) = idempotency::Entity::find_by_id(key)
                .one(&self.db)
                .await
                .map_err(failed("reading an idempotency key"))?
            else {
                return Ok(None);
            };
            Ok(Some(IdempotencyRow {
                key: row.key,
                request_hash: row.request_hash,
                record_id: RecordId::parse("stored record_id", &row.record_id)
                    .map_err(|e| Error::internal("reading an idempotency key", e))?,
                version: row.version,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnAcquireErr, ConnectionTrait, QueryTrait, Statement};

    use super::*;

    /// Regression (found by the soak): a search for one resource type
    /// walked every record of the patient, newest first, until enough of
    /// that type turned up. It must walk only that type's, in result order,
    /// with no sort of its own.
    #[tokio::test]
    async fn a_search_for_one_type_walks_only_that_types_records_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = sharedcare_kit::db::sqlite_url(&dir.path().join("records.db"));
        let store = SqlStore::connect(&url, 1).await.expect("store");
        let query = SearchQuery {
            patient_id: PatientId::parse("patient_id", "p-1").expect("id"),
            resource_types: vec!["Condition".into()],
            categories: vec![Category::General, Category::MentalHealth],
            date_from: None,
            date_to: None,
            updated_from: None,
            updated_to: None,
            codes: vec![],
            fhir_categories: vec![],
        };
        let after = SortKey {
            at_micros: 1,
            record_id: "r".into(),
        };
        for after in [None, Some(&after)] {
            let db = store.connection();
            let select = search_hits(&query, after, 20).build(db.get_database_backend());
            let plan = db
                .query_all_raw(Statement {
                    sql: format!("EXPLAIN QUERY PLAN {}", select.sql),
                    ..select
                })
                .await
                .expect("plan");
            let plan: Vec<String> = plan
                .iter()
                .map(|row| row.try_get::<String>("", "detail").expect("detail"))
                .collect();
            assert!(
                plan.iter()
                    .any(|step| step.contains(crate::store::migration::SEARCH_BY_TYPE_INDEX)),
                "{plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.contains("TEMP B-TREE")),
                "no sort of its own: {plan:?}"
            );
        }
    }

    /// Regression: with PostgreSQL down, a failed group was stored again
    /// write by write, each waiting out the connection timeout, so the last
    /// caller (and every write queued behind) waited that many times over —
    /// 20 s where the database said so in 2.
    #[test]
    fn a_group_is_stored_write_by_write_only_when_one_write_may_have_failed_it() {
        assert!(retry_alone(&Error::internal(
            "storing a record",
            "CHECK constraint failed"
        )));
        assert!(retry_alone(&Error::failed_precondition("stored first")));
        let unreachable = DbErr::ConnectionAcquire(ConnAcquireErr::Timeout);
        assert!(!retry_alone(&Error::internal(
            "storing a record",
            unreachable
        )));
    }
}
