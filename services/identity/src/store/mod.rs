//! Where identity keeps patients, organisations and principals.

mod entities;
mod migration;
mod sql;

use std::{future::Future, pin::Pin};

use sharedcare_kit::Error;
use sharedcare_proto::audit::v1::AuditEvent;

pub use migration::Migrator;

/// identity's audit outbox table (see `sharedcare_kit::outbox`).
pub const OUTBOX_TABLE: &str = "identity_audit_outbox";
pub use sql::SqlStore;

use crate::domain::{NhsNumber, OdsCode, Organisation, Patient, Principal};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Outcome of registering a patient: details are given once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Created(Patient),
    Existing(Patient),
}

pub trait IdentityStore: Send + Sync + 'static {
    /// Inserts the patient, with `audit` in the outbox in the same
    /// transaction, unless one with the same NHS number exists, in which
    /// case that one is returned (and `audit` is not stored).
    fn register_patient(&self, patient: Patient, audit: AuditEvent) -> BoxFuture<'_, Registered>;
    fn get_patient(&self, id: &str) -> BoxFuture<'_, Option<Patient>>;
    fn find_patient_by_nhs_number(&self, nhs: &NhsNumber) -> BoxFuture<'_, Option<Patient>>;

    /// ALREADY_EXISTS if the ODS code is taken.
    fn create_organisation(&self, org: Organisation) -> BoxFuture<'_, Organisation>;
    fn get_organisation(&self, code: &OdsCode) -> BoxFuture<'_, Option<Organisation>>;

    /// ALREADY_EXISTS if the client id is taken.
    fn create_principal(&self, principal: Principal) -> BoxFuture<'_, Principal>;
    /// Inserts or replaces the principal with this client id (bootstrap).
    fn upsert_principal(&self, principal: Principal) -> BoxFuture<'_, Principal>;
    fn get_principal_by_client_id(&self, client_id: &str) -> BoxFuture<'_, Option<Principal>>;
}
