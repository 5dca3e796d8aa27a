//! Where identity keeps patients, organisations and principals.

mod entities;
mod memory;
mod migration;
mod sql;

use std::{future::Future, pin::Pin, sync::Arc};

use chrono::{DateTime, Utc};

use sea_orm::DatabaseConnection;
use sharedcare_kit::{
    Error,
    config::StorageBackend,
    crypto::{BlindIndex, Keyring},
    db::WriteGate,
};
use sharedcare_proto::audit::v1::AuditEvent;

pub use memory::MemoryStore;
pub use migration::Migrator;
pub use sql::SqlStore;

/// identity's audit outbox table (see `sharedcare_kit::outbox`).
pub const OUTBOX_TABLE: &str = "identity_audit_outbox";

/// Changes of registered GP practice waiting for consent (`registrations`).
pub const REGISTRATIONS_TABLE: &str = "identity_gp_registrations";

/// A patient whose registered GP practice changed at `version`, waiting to
/// be delivered to consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRegistration {
    pub patient_id: String,
    pub version: i64,
}

use crate::domain::{
    MergeEvent, NhsNumber, NotSamePerson, OdsCode, Organisation, Patient, Principal,
};

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
    fn register_patient(&self, patient: Patient, audit: AuditEvent) -> BoxFuture<'_, Registered> {
        self.register_patient_apart(patient, Vec::new(), audit)
    }
    /// As `register_patient`, recording with the new patient that it is not
    /// the same person as the patients `apart` names (each link's patient
    /// ids: the new patient's and another's).
    fn register_patient_apart(
        &self,
        patient: Patient,
        apart: Vec<NotSamePerson>,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Registered>;
    fn get_patient(&self, id: &str) -> BoxFuture<'_, Option<Patient>>;
    fn find_patient_by_nhs_number(&self, nhs: &NhsNumber) -> BoxFuture<'_, Option<Patient>>;
    /// Stores `patient` as its next version (`patient.version`, one more
    /// than the current), keeping the one it replaces in its history,
    /// re-indexing its blocking keys and queueing a change of GP practice
    /// for consent, with `audit` in the outbox, in one transaction. NOT_FOUND if there is no such patient;
    /// FAILED_PRECONDITION (naming `if_match` and the current version) if
    /// the current version is another, or (naming `patient_id`) if it was
    /// merged into another patient. Nothing stored on any error.
    fn update_patient(&self, patient: Patient, audit: AuditEvent) -> BoxFuture<'_, Patient>;
    /// Up to `limit` patients whose registered GP practice changed and
    /// consent has yet to hear of, oldest change first, each leased to this
    /// caller until `leased_until` (no other replica takes it meanwhile).
    /// Registering a patient with a practice, or a version that changes it,
    /// queues the patient in the same transaction.
    fn claim_registrations(
        &self,
        limit: u32,
        leased_until: DateTime<Utc>,
    ) -> BoxFuture<'_, Vec<PendingRegistration>>;
    /// consent has the registration as it stood at `pending.version`: the
    /// patient leaves the queue, unless a later change queued it again.
    fn registration_delivered(&self, pending: &PendingRegistration) -> BoxFuture<'_, ()>;
    /// The patient's versions, newest first, at most `limit`.
    fn patient_versions(&self, id: &str, limit: usize) -> BoxFuture<'_, Vec<Patient>>;
    /// Patients indexed under at least one of these blocking keys
    /// (`Patient::blocking_keys`), at most `limit` of them: a trace's
    /// candidates, found by index, never by a scan.
    fn candidates(&self, keys: &[String], limit: usize) -> BoxFuture<'_, Vec<Patient>>;
    /// Records the link with `audit` (an event per patient) in the outbox in
    /// the same transaction; false, and nothing stored, if it was recorded
    /// before. The caller checks that both patients exist.
    fn mark_not_same_person(
        &self,
        link: NotSamePerson,
        audit: Vec<AuditEvent>,
    ) -> BoxFuture<'_, bool>;
    /// The links naming this patient.
    fn not_same_person_links(&self, id: &str) -> BoxFuture<'_, Vec<NotSamePerson>>;

    /// Points `merge.superseded` at `merge.surviving`, logs the merge and
    /// puts `audit` in the outbox, in one transaction; the merge as logged.
    /// NOT_FOUND if either patient is unknown; FAILED_PRECONDITION if either
    /// is already superseded or the two are marked as not the same person
    /// (each naming `superseded_patient_id` or `surviving_patient_id`).
    /// Nothing is stored on any error.
    fn merge_patients(
        &self,
        merge: MergeEvent,
        audit: Vec<AuditEvent>,
    ) -> BoxFuture<'_, MergeEvent>;
    /// Undoes `unmerge.superseded`'s merge into `unmerge.surviving`, as
    /// `merge_patients` does a merge. FAILED_PRECONDITION (naming
    /// `superseded_patient_id`) if it is not merged into that patient.
    fn unmerge_patient(
        &self,
        unmerge: MergeEvent,
        audit: Vec<AuditEvent>,
    ) -> BoxFuture<'_, MergeEvent>;
    /// The merge log after `after`, oldest first, at most `limit`.
    fn merges_after(&self, after: u64, limit: u32) -> BoxFuture<'_, Vec<MergeEvent>>;

    /// ALREADY_EXISTS if the ODS code is taken.
    fn create_organisation(&self, org: Organisation) -> BoxFuture<'_, Organisation>;
    fn get_organisation(&self, code: &OdsCode) -> BoxFuture<'_, Option<Organisation>>;

    /// ALREADY_EXISTS if the client id is taken.
    fn create_principal(&self, principal: Principal) -> BoxFuture<'_, Principal>;
    /// Inserts or replaces the principal with this client id (bootstrap).
    fn upsert_principal(&self, principal: Principal) -> BoxFuture<'_, Principal>;
    fn get_principal_by_client_id(&self, client_id: &str) -> BoxFuture<'_, Option<Principal>>;
    fn get_principal(&self, id: &str) -> BoxFuture<'_, Option<Principal>>;

    /// Keeps a token signing key made by a rotation (the SQL store seals its
    /// private half). ALREADY_EXISTS if the key id is taken.
    fn add_signing_key(&self, key: StoredSigningKey) -> BoxFuture<'_, ()>;
    /// Every rotated signing key, oldest first.
    fn signing_keys(&self) -> BoxFuture<'_, Vec<StoredSigningKey>>;

    /// Revokes a principal at `at`, unless it was revoked before; either
    /// way, when it was revoked and whether it was already. The principal
    /// need not be checked here (the caller has).
    fn revoke_principal(
        &self,
        principal_id: &str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'_, (DateTime<Utc>, bool)>;
    /// When the principal was revoked, if it was.
    fn revocation(&self, principal_id: &str) -> BoxFuture<'_, Option<DateTime<Utc>>>;
    /// The principals revoked at or after `since`, with when.
    fn revocations_since(
        &self,
        since: DateTime<Utc>,
    ) -> BoxFuture<'_, Vec<(String, DateTime<Utc>)>>;
}

/// A token signing key made by RotateSigningKey.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    /// The Ed25519 private key as PKCS#8 PEM.
    pub pkcs8_pem: String,
    /// When it began signing (and the key before it stopped).
    pub created_at: DateTime<Utc>,
}

impl std::fmt::Debug for StoredSigningKey {
    // The private key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A store of the configured backend, and where its audit outbox lives.
pub struct Opened {
    pub store: Arc<dyn IdentityStore>,
    /// The outbox's database: the SQL store's own (a registration and its
    /// event commit together), or the memory store's SQLite file.
    pub outbox: DatabaseConnection,
    /// The turn the outbox's relay takes with the store's writes.
    pub writes: WriteGate,
}

/// Opens the `backend` store at `url` (for `memory`, the SQLite file of its
/// outbox). `keys` and `index` seal patients at rest in the SQL store.
pub async fn open(
    backend: StorageBackend,
    url: &str,
    max_connections: u32,
    keys: Keyring,
    index: BlindIndex,
) -> Result<Opened, Error> {
    match backend {
        StorageBackend::Sqlite | StorageBackend::Postgres => {
            let sql = SqlStore::connect(url, max_connections, keys, index).await?;
            let outbox = sql.connection();
            Ok(Opened {
                writes: WriteGate::for_db(&outbox),
                outbox,
                store: Arc::new(sql),
            })
        }
        StorageBackend::Memory => {
            let outbox = sharedcare_kit::db::connect::<Migrator>(url, max_connections).await?;
            let memory = MemoryStore::new(outbox);
            Ok(Opened {
                outbox: memory.connection(),
                writes: memory.write_gate(),
                store: Arc::new(memory),
            })
        }
        other => Err(Error::invalid(
            "database.backend",
            format!("{} is not offered by identity", other.as_str()),
        )),
    }
}

/// The refusals a merge or unmerge may meet, worded once for every backend.
pub(crate) mod refusals {
    use sharedcare_kit::Error;

    pub fn unknown(field: &str) -> Error {
        Error::not_found(format!("{field}: no patient with this id"))
    }

    pub fn already_merged(field: &str) -> Error {
        Error::failed_precondition(format!(
            "{field}: this patient is already merged into another"
        ))
    }

    pub fn kept_apart() -> Error {
        Error::failed_precondition(
            "surviving_patient_id: marked as not the same person as superseded_patient_id",
        )
    }

    pub fn stale(current: i64) -> Error {
        Error::failed_precondition(format!(
            "if_match: the current version is {current}; read the patient again"
        ))
    }

    pub fn merged_away() -> Error {
        Error::failed_precondition(
            "patient_id: this patient was merged into another; update that one",
        )
    }

    pub fn not_merged() -> Error {
        Error::failed_precondition(
            "superseded_patient_id: this patient is not merged into that one",
        )
    }
}
