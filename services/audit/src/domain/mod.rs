//! The audit log's rules in plain Rust: what a valid event is, how entries
//! become leaves of the Merkle tree, how tree heads are signed, and how
//! pages of a patient's log are addressed. No gRPC and no database here.

pub mod checkpoint;
mod entry;
mod event;
pub mod merkle;
mod page;

pub use entry::{Entry, HASH_LEN, Hash, leaf_hash, leaf_input};
pub use event::{
    ActingApplication, Action, Actor, AuditEvent, EncodedEvent, EventId, MAX_BATCH, MAX_ID_CHARS,
    MAX_TEXT_CHARS, Outcome, PatientId, PrincipalKind, Purpose, optional_text, required_text,
};
pub use page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageSize, PageToken};
