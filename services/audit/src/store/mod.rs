//! Where the log lives: the [`AuditLogStore`] trait and its backends.

mod entities;
mod group;
mod memory;
mod migration;
mod sql;

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use sharedcare_kit::{Error, config::StorageBackend};

use crate::domain::{
    EncodedEvent, Entry, Hash, PageSize, PageToken, PatientId,
    merkle::{self, NodeAddr, RangeError, TreeError},
};

pub use group::{GroupCommit, TreeSize};
pub use memory::MemoryStore;
pub use migration::Migrator;
pub use sql::SqlStore;

/// What every store method returns: a boxed future of a result (object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The outcome of appending one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The entry that records the event (the earlier one for a replay).
    pub entry: Entry,
    /// The event had been appended before with identical content.
    pub duplicate: bool,
}

/// One page of entries and, when more follow, where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub next: Option<PageToken>,
}

/// The append-only audit log and its Merkle tree.
///
/// Appends are idempotent by event id: an event whose id is already logged
/// with identical bytes is a replay (the earlier entry comes back with
/// `duplicate`); the same id with different bytes is ALREADY_EXISTS and
/// nothing is written. Entries are numbered from 1 without gaps; entry n is
/// leaf n - 1 of the tree, and the tree's nodes are written in the same
/// transaction as the entries they cover, so the tree's size is always the
/// log's.
pub trait AuditLogStore: Send + Sync + 'static {
    /// Appends one event (errors name the field `event.event_id`).
    fn append(&self, event: EncodedEvent) -> BoxFuture<'_, Appended>;

    /// Appends events in order, all or none: replays within the batch or of
    /// earlier entries are duplicates, a conflict anywhere writes nothing
    /// (errors name the item as `events[i].event_id`). An empty batch
    /// writes nothing.
    fn append_batch(&self, events: Vec<EncodedEvent>) -> BoxFuture<'_, Vec<Appended>>;

    /// A patient's entries in log order, after `after`, at most `size` of them.
    fn patient_entries(
        &self,
        patient: PatientId,
        after: Option<PageToken>,
        size: PageSize,
    ) -> BoxFuture<'_, Page>;

    /// Entries of events flagged break-glass in log order, after `after`, at
    /// most `size` of them: those by `organisation`'s actors (matched
    /// exactly), or by anyone's when `None`. Unflagged events never appear.
    fn break_glass_entries(
        &self,
        organisation: Option<String>,
        after: Option<PageToken>,
        size: PageSize,
    ) -> BoxFuture<'_, Page>;

    /// The whole log in order: entries numbered above `after_sequence`, at most `limit`.
    fn entries(&self, after_sequence: u64, limit: u64) -> BoxFuture<'_, Vec<Entry>>;

    /// Entry `sequence`, if the log has it.
    fn entry(&self, sequence: u64) -> BoxFuture<'_, Option<Entry>>;

    /// How many leaves the tree has (= entries in the log).
    fn tree_size(&self) -> BoxFuture<'_, u64>;

    /// The stored nodes at `addrs` (those that exist).
    fn nodes(&self, addrs: Vec<NodeAddr>) -> BoxFuture<'_, HashMap<NodeAddr, Hash>>;
}

/// Proofs and roots of any tree size up to the current one, each from the
/// O(log n) stored nodes it needs, read in one query.
pub struct Proofs<'a>(pub &'a dyn AuditLogStore);

impl Proofs<'_> {
    /// The root of the first `size` leaves.
    pub async fn root(&self, size: u64) -> Result<Hash, Error> {
        let nodes = self.0.nodes(merkle::root_reads(size)).await?;
        merkle::root(size, &nodes).map_err(missing)
    }

    /// The audit path of leaf `index` in the tree of `size` leaves.
    pub async fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, Error> {
        let reads = merkle::inclusion_reads(index, size).map_err(range)?;
        let nodes = self.0.nodes(reads).await?;
        merkle::inclusion_proof(index, size, &nodes).map_err(missing)
    }

    /// The proof that the tree of `new` leaves extends that of `old`.
    pub async fn consistency(&self, old: u64, new: u64) -> Result<Vec<Hash>, Error> {
        let reads = merkle::consistency_reads(old, new).map_err(range)?;
        let nodes = self.0.nodes(reads).await?;
        merkle::consistency_proof(old, new, &nodes).map_err(missing)
    }
}

/// Opens the `backend` store at `url` (unused by `memory`, which keeps
/// nothing on disk).
pub async fn open(
    backend: StorageBackend,
    url: &str,
    max_connections: u32,
) -> Result<Arc<dyn AuditLogStore>, Error> {
    Ok(open_with_db(backend, url, max_connections).await?.0)
}

/// As [`open`], with the store's database connection when it has one (for
/// its pool's metrics).
pub async fn open_with_db(
    backend: StorageBackend,
    url: &str,
    max_connections: u32,
) -> Result<(Arc<dyn AuditLogStore>, Option<sea_orm::DatabaseConnection>), Error> {
    match backend {
        StorageBackend::Sqlite | StorageBackend::Postgres => {
            let sql = SqlStore::connect(url, max_connections).await?;
            let db = sql.connection();
            Ok((Arc::new(sql), Some(db)))
        }
        StorageBackend::Memory => Ok((Arc::new(MemoryStore::new()), None)),
        other => Err(Error::invalid(
            "database.backend",
            format!("{} is not offered by audit", other.as_str()),
        )),
    }
}

const APPENDING: &str = "appending to the audit log";

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

    /// Event `index` reuses a logged id with other content.
    fn conflict(self, index: usize) -> Error {
        Error::already_exists(format!(
            "{}: an event with this id is already in the log with different content",
            self.field(index, "event_id")
        ))
        .with_reason("EVENT_ID_CONFLICT")
    }
}

/// The gRPC layer checks sizes first; one that slips through is a bug.
fn range(e: RangeError) -> Error {
    Error::internal("proving from the audit log", e)
}

/// A node the tree should hold is not stored: the store is damaged.
fn missing(e: TreeError<merkle::MissingNode>) -> Error {
    Error::internal("proving from the audit log", e.to_string())
}
