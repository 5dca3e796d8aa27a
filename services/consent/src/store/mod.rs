//! Where consent keeps care relationships and directives.

mod cached;
mod change_log;
mod entities;
mod memory;
mod migration;
pub mod replicas;
mod sql;

use std::{future::Future, pin::Pin};

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use sharedcare_kit::{Error, config::StorageBackend, db::WriteGate};

pub use cached::{Cached, DEFAULT_MAX_PATIENTS, Memory};
pub use memory::MemoryStore;
pub use migration::Migrator;
pub use sql::SqlStore;

use sharedcare_proto::audit::v1::AuditEvent;

use crate::domain::{CareRelationship, Directive, PatientId};

/// consent's audit outbox table (see `sharedcare_kit::outbox`). Every change
/// is stored with its audit event in one transaction.
pub const OUTBOX_TABLE: &str = "consent_audit_outbox";

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// One entry of the change log: this patient's consent changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    /// Its place in the log: increasing in commit order, across replicas.
    pub sequence: u64,
    pub patient_id: PatientId,
    pub committed_at: DateTime<Utc>,
}

pub trait ConsentStore: Send + Sync + 'static {
    fn insert_relationship(
        &self,
        relationship: CareRelationship,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship>;
    fn get_relationship(&self, id: &str) -> BoxFuture<'_, Option<CareRelationship>>;
    /// Ends the relationship at `at`, by principal `by`. NOT_FOUND if
    /// unknown; FAILED_PRECONDITION if it has already ended by then.
    fn end_relationship(
        &self,
        id: &str,
        at: DateTime<Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship>;
    /// The patient's relationships, newest (latest start) first.
    fn list_relationships(&self, patient: &PatientId) -> BoxFuture<'_, Vec<CareRelationship>>;

    fn insert_directive(&self, directive: Directive, audit: AuditEvent)
    -> BoxFuture<'_, Directive>;
    fn get_directive(&self, id: &str) -> BoxFuture<'_, Option<Directive>>;
    /// Marks the directive revoked at `at` by principal `by`. NOT_FOUND if
    /// unknown; FAILED_PRECONDITION if it is already revoked.
    fn revoke_directive(
        &self,
        id: &str,
        at: DateTime<Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Directive>;
    /// The patient's directives, revoked ones included, newest (latest
    /// recorded) first.
    fn list_directives(&self, patient: &PatientId) -> BoxFuture<'_, Vec<Directive>>;

    /// The change log (WatchChanges replays it): every write above appends
    /// one entry for its patient in the write's own transaction, and a write
    /// refused appends nothing. Up to `limit` entries after sequence
    /// `after`, oldest first; a sequence, once read, is never followed by a
    /// smaller one committing later.
    fn changes_after(&self, after: u64, limit: u32) -> BoxFuture<'_, Vec<LoggedChange>>;
    /// The log's latest sequence (0 while it is empty).
    fn latest_change(&self) -> BoxFuture<'_, u64>;
}

/// A shared store is a store (the change feed reads the log of the store
/// the service writes through).
impl<S: ConsentStore + ?Sized> ConsentStore for std::sync::Arc<S> {
    fn insert_relationship(
        &self,
        relationship: CareRelationship,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship> {
        (**self).insert_relationship(relationship, audit)
    }

    fn get_relationship(&self, id: &str) -> BoxFuture<'_, Option<CareRelationship>> {
        (**self).get_relationship(id)
    }

    fn end_relationship(
        &self,
        id: &str,
        at: DateTime<Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship> {
        (**self).end_relationship(id, at, by, audit)
    }

    fn list_relationships(&self, patient: &PatientId) -> BoxFuture<'_, Vec<CareRelationship>> {
        (**self).list_relationships(patient)
    }

    fn insert_directive(
        &self,
        directive: Directive,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Directive> {
        (**self).insert_directive(directive, audit)
    }

    fn get_directive(&self, id: &str) -> BoxFuture<'_, Option<Directive>> {
        (**self).get_directive(id)
    }

    fn revoke_directive(
        &self,
        id: &str,
        at: DateTime<Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Directive> {
        (**self).revoke_directive(id, at, by, audit)
    }

    fn list_directives(&self, patient: &PatientId) -> BoxFuture<'_, Vec<Directive>> {
        (**self).list_directives(patient)
    }

    fn changes_after(&self, after: u64, limit: u32) -> BoxFuture<'_, Vec<LoggedChange>> {
        (**self).changes_after(after, limit)
    }

    fn latest_change(&self) -> BoxFuture<'_, u64> {
        (**self).latest_change()
    }
}

/// The configured backend, as itself: `crate::layered` wraps each kind as
/// it needs.
pub enum Backend {
    Sql(SqlStore),
    Memory(Box<MemoryStore>),
}

impl From<SqlStore> for Backend {
    fn from(sql: SqlStore) -> Self {
        Backend::Sql(sql)
    }
}

impl From<MemoryStore> for Backend {
    fn from(memory: MemoryStore) -> Self {
        Backend::Memory(Box::new(memory))
    }
}

impl Backend {
    /// The outbox's database (the SQL store's own, so a change and its
    /// event commit together; the memory store's SQLite file), and the turn
    /// its relay takes with the store's writes.
    pub fn outbox(&self) -> (DatabaseConnection, WriteGate) {
        match self {
            Backend::Sql(sql) => {
                let db = sql.connection();
                let writes = WriteGate::for_db(&db);
                (db, writes)
            }
            Backend::Memory(memory) => (memory.connection(), memory.write_gate()),
        }
    }
}

/// Opens the `backend` store at `url` (for `memory`, the SQLite file of its
/// outbox).
pub async fn open(
    backend: StorageBackend,
    url: &str,
    max_connections: u32,
) -> Result<Backend, Error> {
    match backend {
        StorageBackend::Sqlite | StorageBackend::Postgres => {
            Ok(SqlStore::connect(url, max_connections).await?.into())
        }
        StorageBackend::Memory => {
            let outbox = sharedcare_kit::db::connect::<Migrator>(url, max_connections).await?;
            Ok(MemoryStore::new(outbox).into())
        }
        other => Err(Error::invalid(
            "database.backend",
            format!("{} is not offered by consent", other.as_str()),
        )),
    }
}
