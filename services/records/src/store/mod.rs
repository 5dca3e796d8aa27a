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

/// records' audit outbox table (see `sharedcare_kit::outbox`).
pub const OUTBOX_TABLE: &str = "records_audit_outbox";

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
}
