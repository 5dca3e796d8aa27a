//! Where consent keeps care relationships and directives.

mod cached;
mod entities;
mod migration;
mod sql;

use std::{future::Future, pin::Pin};

use chrono::{DateTime, Utc};
use sharedcare_kit::Error;

pub use cached::Cached;
pub use migration::Migrator;
pub use sql::SqlStore;

use sharedcare_proto::audit::v1::AuditEvent;

use crate::domain::{CareRelationship, Directive, PatientId};

/// consent's audit outbox table (see `sharedcare_kit::outbox`). Every change
/// is stored with its audit event in one transaction.
pub const OUTBOX_TABLE: &str = "consent_audit_outbox";

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

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
}
