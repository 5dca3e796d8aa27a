//! Where records keeps resource versions, and the audit outbox written in
//! the same transaction as each change.

mod entities;
mod migration;
mod sql;

use std::{future::Future, pin::Pin};

use sharedcare_kit::Error;

pub use migration::Migrator;
pub use sql::SqlStore;

use crate::domain::{PatientId, Record, RecordId};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// An audit event waiting to be delivered: its id and its encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub sequence: i64,
    pub event_id: String,
    pub payload: Vec<u8>,
}

pub trait RecordStore: Send + Sync + 'static {
    /// Stores version 1 of a new record and its audit event atomically.
    fn create(
        &self,
        record: Record,
        audit_event_id: String,
        audit_payload: Vec<u8>,
    ) -> BoxFuture<'_, ()>;
    /// The current version of a patient's record.
    fn current(&self, patient: &PatientId, id: &RecordId) -> BoxFuture<'_, Option<Record>>;
    /// Undelivered audit events, oldest first.
    fn pending_outbox(&self, limit: u64) -> BoxFuture<'_, Vec<OutboxEntry>>;
    fn mark_delivered(&self, sequence: i64) -> BoxFuture<'_, ()>;
}
