//! Where the log lives: the [`AuditLogStore`] trait and its backends.

mod entities;
mod group;
mod migration;
mod sql;

use std::{future::Future, pin::Pin};

use sharedcare_kit::Error;

use crate::domain::{
    ChainError, ChainHead, ChainVerifier, EncodedEvent, Entry, PageSize, PageToken, PatientId,
};

pub use group::GroupCommit;
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

/// How many entries `verify_chain` reads at a time.
pub const VERIFY_BATCH: u64 = 1000;

/// The append-only audit log.
///
/// Appends are idempotent by event id: an event whose id is already logged
/// with identical bytes is a replay (the earlier entry comes back with
/// `duplicate`); the same id with different bytes is ALREADY_EXISTS and
/// nothing is written. Entries are numbered from 1 without gaps, and each
/// is chained to its predecessor by hash (see [`crate::domain::entry_hash`]).
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

    /// The whole log in order: entries numbered above `after_sequence`, at most `limit`.
    fn entries(&self, after_sequence: u64, limit: u64) -> BoxFuture<'_, Vec<Entry>>;

    /// Reads the whole log and checks its chain from entry 1. The outer
    /// error is a failure to read; the inner one says where the chain breaks.
    fn verify_chain(&self) -> BoxFuture<'_, Result<ChainHead, ChainError>> {
        Box::pin(async move {
            let mut verifier = ChainVerifier::new();
            loop {
                let batch = self.entries(verifier.head().size, VERIFY_BATCH).await?;
                let last = batch.len() < VERIFY_BATCH as usize;
                for entry in &batch {
                    if let Err(broken) = verifier.push(entry) {
                        return Ok(Err(broken));
                    }
                }
                if last {
                    return Ok(Ok(verifier.head()));
                }
            }
        })
    }
}
