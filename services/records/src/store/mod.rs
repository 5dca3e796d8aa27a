//! Where records keeps resource versions and their search index, behind one
//! trait. Backends (`memory`, `sql` for SQLite and PostgreSQL) hold the
//! resource as opaque bytes; `Encrypted<S>` wraps any of them so that what
//! reaches a backend is ciphertext and only the index fields are in clear.
//!
//! A read hands back the version's metadata with its body still closed: the
//! service asks consent about the metadata and opens the body only once
//! permitted.

mod encrypted;
mod entities;
mod memory;
pub(crate) mod migration;
mod remote;
mod sql;
pub mod storage_server;

use std::{future::Future, pin::Pin, sync::Arc};

use chrono::{DateTime, Utc};
use sharedcare_kit::{Error, crypto::Keyring};

pub use encrypted::{Encrypted, Rewrapped, rewrap};
pub use memory::MemoryStore;
pub use migration::Migrator;
pub use remote::RemoteStore;
pub use sql::SqlStore;

use crate::domain::{Category, PatientId, RecordId, SearchIndex, TokenQuery};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// records' audit outbox table (see `sharedcare_kit::outbox`).
pub const OUTBOX_TABLE: &str = "records_audit_outbox";

/// What a version says about itself, in clear: enough for consent to decide
/// before anything is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    pub id: RecordId,
    pub patient_id: PatientId,
    pub resource_type: String,
    pub version: i64,
    pub last_updated: DateTime<Utc>,
    pub category: Category,
    /// A tombstone: the record was deleted at this version.
    pub deleted: bool,
}

/// A version's resource as a backend holds it; opened only after consent.
pub enum Body {
    Clear(Vec<u8>),
    Sealed {
        bytes: Vec<u8>,
        keys: Arc<Keyring>,
        aad: Vec<u8>,
    },
}

impl Body {
    /// The resource JSON (empty for a tombstone).
    pub fn open(self) -> Result<String, Error> {
        let bytes = match self {
            Body::Clear(bytes) => bytes,
            Body::Sealed { bytes, .. } if bytes.is_empty() => bytes,
            Body::Sealed { bytes, keys, aad } => keys
                .open(&bytes, &aad)
                .map_err(|e| e.context("reading a record"))?,
        };
        String::from_utf8(bytes).map_err(|e| Error::internal("reading a record", e))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the content: it is clinical data.
        match self {
            Body::Clear(b) => write!(f, "Body::Clear({} bytes)", b.len()),
            Body::Sealed { bytes, .. } => write!(f, "Body::Sealed({} bytes)", bytes.len()),
        }
    }
}

/// One stored version: metadata in clear, body closed.
#[derive(Debug)]
pub struct Stored {
    pub meta: RecordMeta,
    pub body: Body,
}

/// A search hit and where it sits in the result order.
#[derive(Debug)]
pub struct Found {
    pub stored: Stored,
    pub key: SortKey,
}

/// The result order: newest clinical date first (the last-updated time for
/// a resource without one), then record id, both descending.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SortKey {
    pub at_micros: i64,
    pub record_id: String,
}

/// One entry of the change log: a version was stored. Sequences grow in
/// commit order, so a reader that has seen every change up to `sequence`
/// never later finds one below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub sequence: i64,
    pub meta: RecordMeta,
}

/// The audit event written with a change (backends that share the outbox's
/// database store it in the change's transaction).
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub event_id: String,
    pub payload: Vec<u8>,
}

/// A create's idempotency key as stored: scoped to its caller, and the
/// digest of the request it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRow {
    pub key: String,
    pub request_hash: String,
    pub record_id: RecordId,
    pub version: i64,
}

/// A new version to store. Version 1 creates the record; version n > 1 is
/// stored only if version n-1 is current (else FAILED_PRECONDITION naming
/// the current version).
#[derive(Debug)]
pub struct Write {
    pub meta: RecordMeta,
    /// The resource JSON (sealed by `Encrypted`); empty for a tombstone.
    pub body: Vec<u8>,
    pub index: SearchIndex,
    pub idempotency: Option<IdempotencyRow>,
    /// Given only to a store whose `audit_in_write` is true.
    pub audit: Option<AuditRow>,
}

impl Write {
    /// Where this version sorts in search results.
    pub fn sort_key(&self) -> SortKey {
        SortKey {
            at_micros: self
                .index
                .date
                .as_ref()
                .map_or(self.meta.last_updated, |d| d.start)
                .timestamp_micros(),
            record_id: self.meta.id.as_str().to_owned(),
        }
    }
}

/// A search of one patient's current records. Empty lists mean "any";
/// `categories` is what consent permits intersected with what was asked,
/// and is never empty (a search with nothing permitted is not run).
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub patient_id: PatientId,
    pub resource_types: Vec<String>,
    pub categories: Vec<Category>,
    /// Clinical date overlaps `[from, to)`.
    pub date_from: Option<DateTime<Utc>>,
    pub date_to: Option<DateTime<Utc>>,
    /// Last updated within `[from, to)`.
    pub updated_from: Option<DateTime<Utc>>,
    pub updated_to: Option<DateTime<Utc>>,
    /// Any of these codes (`code` tokens).
    pub codes: Vec<TokenQuery>,
    /// Any of these FHIR categories (`category` tokens).
    pub fhir_categories: Vec<TokenQuery>,
}

pub trait RecordStore: Send + Sync + 'static {
    /// True when `Write::audit` is stored in the change's own transaction;
    /// otherwise the service puts the audit event in its outbox first.
    fn audit_in_write(&self) -> bool;

    /// Stores a new version, its index and (if given) its idempotency key
    /// and audit event atomically. ALREADY_EXISTS when version 1's record id
    /// or the idempotency key is taken; FAILED_PRECONDITION when version n-1
    /// is not current; NOT_FOUND when there is no such record.
    fn write(&self, write: Write) -> BoxFuture<'_, ()>;

    /// The current version (a tombstone if deleted) of a patient's record.
    fn current(&self, patient: &PatientId, id: &RecordId) -> BoxFuture<'_, Option<Stored>>;

    /// One version of a patient's record.
    fn version(
        &self,
        patient: &PatientId,
        id: &RecordId,
        version: i64,
    ) -> BoxFuture<'_, Option<Stored>>;

    /// Versions newest first, those below `before` (all when `None`), at
    /// most `limit`.
    fn history(
        &self,
        patient: &PatientId,
        id: &RecordId,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Vec<Stored>>;

    /// Current, not deleted records matching `query`, in `SortKey` order
    /// (descending), those after `after`, at most `limit`. Served from the
    /// index alone.
    fn search<'a>(
        &'a self,
        query: &'a SearchQuery,
        after: Option<&'a SortKey>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Found>>;

    /// What an idempotency key answered, if it was used.
    fn idempotency(&self, key: &str) -> BoxFuture<'_, Option<IdempotencyRow>>;

    /// The change log after `after` (0: from the start), oldest first, at
    /// most `limit`. Every stored version appears once, in commit order.
    fn changes(&self, after: i64, limit: usize) -> BoxFuture<'_, Vec<Change>>;

    /// Maintenance (key rotation): every version, tombstones included, in
    /// (record id, version) order, those after `after`, at most `limit`;
    /// bodies exactly as this store holds them.
    fn scan<'a>(
        &'a self,
        after: Option<&'a (RecordId, i64)>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Stored>>;

    /// Maintenance: replaces a version's body as this store holds it, only
    /// if it is still `expected`; false when it was not (nothing changed).
    fn replace_body<'a>(
        &'a self,
        id: &'a RecordId,
        version: i64,
        expected: &'a [u8],
        body: Vec<u8>,
    ) -> BoxFuture<'a, bool>;
}

impl<S: RecordStore + ?Sized> RecordStore for Arc<S> {
    fn audit_in_write(&self) -> bool {
        (**self).audit_in_write()
    }
    fn write(&self, write: Write) -> BoxFuture<'_, ()> {
        (**self).write(write)
    }
    fn current(&self, patient: &PatientId, id: &RecordId) -> BoxFuture<'_, Option<Stored>> {
        (**self).current(patient, id)
    }
    fn version(
        &self,
        patient: &PatientId,
        id: &RecordId,
        version: i64,
    ) -> BoxFuture<'_, Option<Stored>> {
        (**self).version(patient, id, version)
    }
    fn history(
        &self,
        patient: &PatientId,
        id: &RecordId,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Vec<Stored>> {
        (**self).history(patient, id, before, limit)
    }
    fn search<'a>(
        &'a self,
        query: &'a SearchQuery,
        after: Option<&'a SortKey>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Found>> {
        (**self).search(query, after, limit)
    }
    fn idempotency(&self, key: &str) -> BoxFuture<'_, Option<IdempotencyRow>> {
        (**self).idempotency(key)
    }
    fn changes(&self, after: i64, limit: usize) -> BoxFuture<'_, Vec<Change>> {
        (**self).changes(after, limit)
    }
    fn scan<'a>(
        &'a self,
        after: Option<&'a (RecordId, i64)>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Stored>> {
        (**self).scan(after, limit)
    }
    fn replace_body<'a>(
        &'a self,
        id: &'a RecordId,
        version: i64,
        expected: &'a [u8],
        body: Vec<u8>,
    ) -> BoxFuture<'a, bool> {
        (**self).replace_body(id, version, expected, body)
    }
}

/// The error for a write whose expected version is not current.
pub(crate) fn stale(current: i64) -> Error {
    Error::failed_precondition(format!(
        "version {current} is current; read it and apply the change to it"
    ))
}

/// Whether a search's clinical-date and last-updated bounds admit a record
/// (shared by the backends that filter in Rust).
pub(crate) fn within(
    query: &SearchQuery,
    date: Option<(i64, i64)>,
    last_updated_micros: i64,
) -> bool {
    let micros = |t: &DateTime<Utc>| t.timestamp_micros();
    if query.date_from.is_some() || query.date_to.is_some() {
        let Some((start, end)) = date else {
            return false;
        };
        if query.date_from.as_ref().is_some_and(|f| end <= micros(f))
            || query.date_to.as_ref().is_some_and(|t| start >= micros(t))
        {
            return false;
        }
    }
    !(query
        .updated_from
        .as_ref()
        .is_some_and(|f| last_updated_micros < micros(f))
        || query
            .updated_to
            .as_ref()
            .is_some_and(|t| last_updated_micros >= micros(t)))
}
