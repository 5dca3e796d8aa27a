//! The audit log's rules in plain Rust: what a valid event is, how entries
//! are numbered and chained by hash, and how pages of a patient's log are
//! addressed. No gRPC and no database here.

mod chain;
mod event;
pub mod merkle;
mod page;

pub use chain::{
    ChainError, ChainHead, ChainVerifier, ENTRY_DOMAIN, Entry, HASH_LEN, Hash, entry_hash,
    verify_chain, verify_run,
};
pub use event::{
    Action, Actor, AuditEvent, EncodedEvent, EventId, MAX_BATCH, MAX_ID_CHARS, MAX_TEXT_CHARS,
    Outcome, PatientId, PrincipalKind, Purpose, optional_text, required_text,
};
pub use page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageSize, PageToken};
