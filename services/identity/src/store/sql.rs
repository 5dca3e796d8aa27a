//! The sea-orm store: SQLite (embedded default) or PostgreSQL.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, TransactionTrait,
    sea_query::{Alias, Expr, ExprTrait, OnConflict, Order, Query},
};
use serde::{Deserialize, Serialize};
use sharedcare_kit::{
    Error, auth,
    crypto::{BlindIndex, Keyring},
    outbox,
};
use sharedcare_proto::audit::v1::AuditEvent;

use super::{
    BoxFuture, IdentityStore, Migrator, OUTBOX_TABLE, PendingRegistration, REGISTRATIONS_TABLE,
    Registered, StoredSigningKey, entities::*, refusals,
};
use crate::domain::{
    ContactPoint, Demographics, Gender, LocalIdentifier, MergeEvent, MergeKind, NhsNumber,
    NotSamePerson, OdsCode, Organisation, Patient, Principal, default_purposes,
};

/// Patients are encrypted at rest: NHS number and demographics sealed in one
/// value bound to the patient id, found by a blind index of the NHS number.
#[derive(Clone)]
pub struct SqlStore {
    db: DatabaseConnection,
    keys: Keyring,
    index: BlindIndex,
}

/// The sealed part of a patient row.
#[derive(Serialize, Deserialize)]
struct SealedPatient {
    nhs_number: String,
    given_names: Vec<String>,
    family_name: String,
    birth_date: chrono::NaiveDate,
    gender: String,
    postcode: Option<String>,
    // Added with UpdateDemographics; rows from before read as empty.
    #[serde(default)]
    previous_family_names: Vec<String>,
    #[serde(default)]
    death_date: Option<chrono::NaiveDate>,
    #[serde(default)]
    address_lines: Vec<String>,
    #[serde(default)]
    telecom: Vec<ContactPoint>,
    #[serde(default)]
    gp_practice: Option<String>,
    #[serde(default)]
    identifiers: Vec<LocalIdentifier>,
    #[serde(default)]
    restricted: bool,
}

const NHS_INDEX_DOMAIN: &str = "sharedcare.identity/nhs_number";
const BLOCKING_INDEX_DOMAIN: &str = "sharedcare.identity/blocking";

fn signing_key_aad(kid: &str) -> Vec<u8> {
    format!("sharedcare.identity/signing-key/{kid}").into_bytes()
}

fn patient_aad(patient_id: &str) -> Vec<u8> {
    format!("sharedcare.identity/patient/{patient_id}").into_bytes()
}

fn version_aad(patient_id: &str, version: i64) -> Vec<u8> {
    format!("sharedcare.identity/patient/{patient_id}/version/{version}").into_bytes()
}

fn link_aad(a: &str, b: &str) -> Vec<u8> {
    format!("sharedcare.identity/not-same-person/{a}/{b}").into_bytes()
}

/// The advisory lock that makes merges take turns on PostgreSQL, so the
/// merge log's sequence follows commit order ("idmerge" in ASCII).
const MERGE_LOCK: i64 = 0x0069_646d_6572_6765;

/// Patients whose blocking keys are added in one statement when the store
/// opens (the bind parameters stay well under SQLite's limit).
const BACKFILL_BATCH: u64 = 500;

impl SqlStore {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        keys: Keyring,
        index: BlindIndex,
    ) -> Result<Self, Error> {
        let db = sharedcare_kit::db::connect::<Migrator>(url, max_connections).await?;
        let store = SqlStore { db, keys, index };
        store.index_unindexed_patients().await?;
        Ok(store)
    }

    /// Adds the blocking keys of patients registered before they were kept
    /// (M0004), a batch at a time.
    async fn index_unindexed_patients(&self) -> Result<(), Error> {
        const CONTEXT: &str = "indexing patients for matching";
        loop {
            let rows = patient::Entity::find()
                .filter(
                    patient::Column::PatientId.not_in_subquery(
                        Query::select()
                            .column(patient_key::Column::PatientId)
                            .from(patient_key::Entity)
                            .to_owned(),
                    ),
                )
                .limit(BACKFILL_BATCH)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut keys = Vec::new();
            for row in rows {
                keys.extend(self.key_rows(&self.patient_from_row(row)?)?);
            }
            if keys.is_empty() {
                return Ok(());
            }
            self.insert_keys(&self.db, keys).await?;
        }
    }

    fn key_rows(&self, p: &Patient) -> Result<Vec<patient_key::ActiveModel>, Error> {
        p.blocking_keys()
            .iter()
            .map(|key| {
                Ok(patient_key::ActiveModel {
                    key_index: Set(self.index.index(BLOCKING_INDEX_DOMAIN, key.as_bytes())?),
                    patient_id: Set(p.id.clone()),
                })
            })
            .collect()
    }

    async fn insert_keys<C: ConnectionTrait>(
        &self,
        db: &C,
        keys: Vec<patient_key::ActiveModel>,
    ) -> Result<(), Error> {
        patient_key::Entity::insert_many(keys)
            .on_conflict(
                OnConflict::columns([
                    patient_key::Column::KeyIndex,
                    patient_key::Column::PatientId,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(db)
            .await
            .map_err(|e| Error::internal("indexing a patient for matching", e))?;
        Ok(())
    }

    fn link_to_row(&self, link: &NotSamePerson) -> Result<not_same_person::ActiveModel, Error> {
        let (a, b) = &link.patients;
        Ok(not_same_person::ActiveModel {
            patient_a: Set(a.clone()),
            patient_b: Set(b.clone()),
            sealed_reason: Set(self.keys.seal(link.reason.as_bytes(), &link_aad(a, b))?),
            recorded_by: Set(link.recorded_by.clone()),
            created_at: Set(link.recorded_at),
        })
    }

    fn link_from_row(&self, row: not_same_person::Model) -> Result<NotSamePerson, Error> {
        let reason = self
            .keys
            .open(
                &row.sealed_reason,
                &link_aad(&row.patient_a, &row.patient_b),
            )
            .map_err(|e| e.context("reading a not-the-same-person link"))?;
        Ok(NotSamePerson {
            reason: String::from_utf8_lossy(&reason).into_owned(),
            patients: (row.patient_a, row.patient_b),
            recorded_by: row.recorded_by,
            recorded_at: row.created_at,
        })
    }

    fn nhs_index(&self, nhs: &NhsNumber) -> Result<String, Error> {
        self.index.index(NHS_INDEX_DOMAIN, nhs.as_str().as_bytes())
    }

    /// The patient's NHS number and demographics sealed, bound to `aad`.
    fn seal_patient(&self, p: &Patient, aad: &[u8]) -> Result<Vec<u8>, Error> {
        let d = &p.demographics;
        let sealed = SealedPatient {
            nhs_number: p.nhs_number.as_str().to_owned(),
            given_names: d.given_names.clone(),
            family_name: d.family_name.clone(),
            birth_date: d.birth_date,
            gender: d.gender.as_str().to_owned(),
            postcode: d.postcode.clone(),
            previous_family_names: d.previous_family_names.clone(),
            death_date: d.death_date,
            address_lines: d.address_lines.clone(),
            telecom: d.telecom.clone(),
            gp_practice: d.gp_practice.as_ref().map(|o| o.as_str().to_owned()),
            identifiers: d.identifiers.clone(),
            restricted: d.restricted,
        };
        let plaintext =
            serde_json::to_vec(&sealed).map_err(|e| Error::internal("storing a patient", e))?;
        self.keys.seal(&plaintext, aad)
    }

    fn patient_to_row(&self, p: &Patient) -> Result<patient::ActiveModel, Error> {
        Ok(patient::ActiveModel {
            patient_id: Set(p.id.clone()),
            nhs_index: Set(self.nhs_index(&p.nhs_number)?),
            sealed: Set(self.seal_patient(p, &patient_aad(&p.id))?),
            superseded_by: Set(p.superseded_by.clone()),
            created_at: Set(p.created_at),
            updated_at: Set(p.updated_at),
            version: Set(p.version),
        })
    }

    fn version_to_row(&self, p: &Patient) -> Result<patient_version::ActiveModel, Error> {
        Ok(patient_version::ActiveModel {
            patient_id: Set(p.id.clone()),
            version: Set(p.version),
            sealed: Set(self.seal_patient(p, &version_aad(&p.id, p.version))?),
            superseded_by: Set(p.superseded_by.clone()),
            created_at: Set(p.created_at),
            updated_at: Set(p.updated_at),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn open_patient(
        &self,
        id: String,
        sealed: &[u8],
        aad: &[u8],
        created_at: chrono::DateTime<chrono::Utc>,
        updated_at: chrono::DateTime<chrono::Utc>,
        superseded_by: Option<String>,
        version: i64,
    ) -> Result<Patient, Error> {
        const CONTEXT: &str = "reading a patient";
        let plaintext = self
            .keys
            .open(sealed, aad)
            .map_err(|e| e.context(CONTEXT))?;
        let sealed: SealedPatient =
            serde_json::from_slice(&plaintext).map_err(|e| Error::internal(CONTEXT, e))?;
        Ok(Patient {
            id,
            nhs_number: NhsNumber::parse("stored nhs_number", &sealed.nhs_number)
                .map_err(|e| Error::internal(CONTEXT, e))?,
            demographics: Demographics {
                given_names: sealed.given_names,
                family_name: sealed.family_name,
                birth_date: sealed.birth_date,
                gender: Gender::from_stored(&sealed.gender),
                postcode: sealed.postcode,
                previous_family_names: sealed.previous_family_names,
                death_date: sealed.death_date,
                address_lines: sealed.address_lines,
                telecom: sealed.telecom,
                gp_practice: sealed
                    .gp_practice
                    .map(|o| OdsCode::parse("stored gp_practice", &o))
                    .transpose()
                    .map_err(|e| Error::internal(CONTEXT, e))?,
                identifiers: sealed.identifiers,
                restricted: sealed.restricted,
            },
            created_at,
            updated_at,
            superseded_by,
            version,
        })
    }

    fn patient_from_row(&self, row: patient::Model) -> Result<Patient, Error> {
        let aad = patient_aad(&row.patient_id);
        self.open_patient(
            row.patient_id,
            &row.sealed,
            &aad,
            row.created_at,
            row.updated_at,
            row.superseded_by,
            row.version,
        )
    }

    fn version_from_row(&self, row: patient_version::Model) -> Result<Patient, Error> {
        let aad = version_aad(&row.patient_id, row.version);
        self.open_patient(
            row.patient_id,
            &row.sealed,
            &aad,
            row.created_at,
            row.updated_at,
            row.superseded_by,
            row.version,
        )
    }
}

fn is_unique_violation(err: &sea_orm::DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

fn organisation_from_row(row: organisation::Model) -> Result<Organisation, Error> {
    Ok(Organisation {
        ods_code: OdsCode::parse("stored ods_code", &row.ods_code)
            .map_err(|e| Error::internal("reading an organisation", e))?,
        name: row.name,
        created_at: row.created_at,
    })
}

fn principal_to_row(p: &Principal) -> principal::ActiveModel {
    principal::ActiveModel {
        principal_id: Set(p.id.clone()),
        client_id: Set(p.client_id.clone()),
        kind: Set(auth::kind_to_str(p.kind).to_owned()),
        display_name: Set(p.display_name.clone()),
        // Patients act for no organisation: stored as "".
        ods_code: Set(p
            .organisation
            .as_ref()
            .map(|o| o.as_str().to_owned())
            .unwrap_or_default()),
        role: Set(p.role.clone()),
        scopes: Set(p.scopes.join(" ")),
        secret_hash: Set(p.secret_hash.clone()),
        created_at: Set(p.created_at),
        patient_id: Set(p.patient_id.clone()),
        purposes: Set(Some(
            p.purposes
                .iter()
                .map(|p| auth::purpose_to_str(*p))
                .collect::<Vec<_>>()
                .join(" "),
        )),
    }
}

fn principal_from_row(row: principal::Model) -> Result<Principal, Error> {
    let kind = auth::kind_from_str(&row.kind)
        .ok_or_else(|| Error::internal("reading a principal", "unknown kind"))?;
    let purposes = match &row.purposes {
        Some(names) => names
            .split_whitespace()
            .map(|n| {
                auth::purpose_from_str(n)
                    .ok_or_else(|| Error::internal("reading a principal", "unknown purpose"))
            })
            .collect::<Result<_, _>>()?,
        None => default_purposes(kind),
    };
    Ok(Principal {
        id: row.principal_id,
        kind,
        display_name: row.display_name,
        organisation: OdsCode::parse_optional("stored ods_code", &row.ods_code)
            .map_err(|e| Error::internal("reading a principal", e))?,
        role: row.role,
        scopes: row.scopes.split_whitespace().map(str::to_owned).collect(),
        purposes,
        patient_id: row.patient_id.filter(|p| !p.is_empty()),
        client_id: row.client_id,
        secret_hash: row.secret_hash,
        created_at: row.created_at,
    })
}

/// Runs `change` in a transaction that merges take turns in, then logs
/// `event` and stores `audit`; nothing is stored if `change` fails.
async fn logged_merge<F>(
    db: &DatabaseConnection,
    event: MergeEvent,
    audit: &[AuditEvent],
    change: F,
) -> Result<MergeEvent, Error>
where
    F: for<'t> FnOnce(
        &'t DatabaseTransaction,
        &'t MergeEvent,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), Error>> + Send + 't>,
    >,
{
    const CONTEXT: &str = "merging patients";
    let txn = db.begin().await.map_err(|e| Error::internal(CONTEXT, e))?;
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MERGE_LOCK})"))
            .await
            .map_err(|e| Error::internal(CONTEXT, e))?;
    }
    if let Err(e) = change(&txn, &event).await {
        let _ = txn.rollback().await;
        return Err(e);
    }
    let inserted = patient_merge::Entity::insert(patient_merge::ActiveModel {
        sequence: NotSet,
        kind: Set(event.kind.as_str().to_owned()),
        superseded_patient_id: Set(event.superseded.clone()),
        surviving_patient_id: Set(event.surviving.clone()),
        recorded_by: Set(event.recorded_by.clone()),
        recorded_at: Set(event.recorded_at),
    })
    .exec(&txn)
    .await
    .map_err(|e| Error::internal(CONTEXT, e))?;
    for e in audit {
        outbox::insert_in(&txn, OUTBOX_TABLE, e).await?;
    }
    txn.commit()
        .await
        .map_err(|e| Error::internal(CONTEXT, e))?;
    Ok(MergeEvent {
        sequence: u64::try_from(inserted.last_insert_id)
            .map_err(|_| Error::internal(CONTEXT, "a negative merge sequence"))?,
        ..event
    })
}

/// Sets `superseded_by` on `id` from `from` to `to`, if it is `from` now;
/// whether it was.
async fn repoint(
    txn: &DatabaseTransaction,
    id: &str,
    from: Option<&str>,
    to: Option<&str>,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<bool, Error> {
    let current = match from {
        Some(from) => patient::Column::SupersededBy.eq(from),
        None => patient::Column::SupersededBy.is_null(),
    };
    let updated = patient::Entity::update_many()
        .col_expr(
            patient::Column::SupersededBy,
            Expr::value(to.map(str::to_owned)),
        )
        .col_expr(patient::Column::UpdatedAt, Expr::value(at))
        .filter(patient::Column::PatientId.eq(id))
        .filter(current)
        .exec(txn)
        .await
        .map_err(|e| Error::internal("merging patients", e))?;
    Ok(updated.rows_affected == 1)
}

/// `id`'s `superseded_by`, or `None` if there is no such patient.
async fn superseded_by(
    txn: &DatabaseTransaction,
    id: &str,
) -> Result<Option<Option<String>>, Error> {
    patient::Entity::find_by_id(id.to_owned())
        .select_only()
        .column(patient::Column::SupersededBy)
        .into_tuple::<Option<String>>()
        .one(txn)
        .await
        .map_err(|e| Error::internal("merging patients", e))
}

fn merge_from_row(row: patient_merge::Model) -> Result<MergeEvent, Error> {
    const CONTEXT: &str = "reading the merge log";
    Ok(MergeEvent {
        sequence: u64::try_from(row.sequence)
            .map_err(|_| Error::internal(CONTEXT, "a negative sequence"))?,
        kind: MergeKind::from_stored(&row.kind)
            .ok_or_else(|| Error::internal(CONTEXT, "an unknown kind"))?,
        superseded: row.superseded_patient_id,
        surviving: row.surviving_patient_id,
        recorded_by: row.recorded_by,
        recorded_at: row.recorded_at,
    })
}

/// Queues the patient's registration at `version` for consent, within the
/// change's own transaction (a later change replaces an earlier one).
async fn queue_registration<C: ConnectionTrait>(
    txn: &C,
    patient_id: &str,
    version: i64,
) -> Result<(), Error> {
    let insert = Query::insert()
        .into_table(Alias::new(REGISTRATIONS_TABLE))
        .columns([
            Alias::new("patient_id"),
            Alias::new("version"),
            Alias::new("queued_at"),
        ])
        .values_panic([patient_id.into(), version.into(), Utc::now().into()])
        .on_conflict(
            OnConflict::column(Alias::new("patient_id"))
                .update_columns([Alias::new("version"), Alias::new("queued_at")])
                .value(
                    Alias::new("leased_until"),
                    Expr::value(None::<DateTime<Utc>>),
                )
                .to_owned(),
        )
        .to_owned();
    txn.execute(&insert)
        .await
        .map_err(|e| Error::internal("queueing a GP registration for consent", e))?;
    Ok(())
}

impl SqlStore {
    /// The connection, for the audit outbox that shares the database.
    pub fn connection(&self) -> DatabaseConnection {
        self.db.clone()
    }
}

impl IdentityStore for SqlStore {
    fn register_patient_apart(
        &self,
        p: Patient,
        apart: Vec<NotSamePerson>,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Registered> {
        Box::pin(async move {
            const CONTEXT: &str = "registering a patient";
            if let Some(existing) = self.find_patient_by_nhs_number(&p.nhs_number).await? {
                return Ok(Registered::Existing(existing));
            }
            let txn = self
                .db
                .begin()
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            match patient::Entity::insert(self.patient_to_row(&p)?)
                .exec(&txn)
                .await
            {
                Ok(_) => {
                    // The registration, its first version, its keys, its
                    // links and its audit event commit together.
                    patient_version::Entity::insert(self.version_to_row(&p)?)
                        .exec_without_returning(&txn)
                        .await
                        .map_err(|e| Error::internal(CONTEXT, e))?;
                    self.insert_keys(&txn, self.key_rows(&p)?).await?;
                    if !apart.is_empty() {
                        let links = apart
                            .iter()
                            .map(|l| self.link_to_row(l))
                            .collect::<Result<Vec<_>, _>>()?;
                        not_same_person::Entity::insert_many(links)
                            .on_conflict(
                                OnConflict::columns([
                                    not_same_person::Column::PatientA,
                                    not_same_person::Column::PatientB,
                                ])
                                .do_nothing()
                                .to_owned(),
                            )
                            .exec_without_returning(&txn)
                            .await
                            .map_err(|e| Error::internal(CONTEXT, e))?;
                    }
                    if p.demographics.gp_practice.is_some() {
                        queue_registration(&txn, &p.id, p.version).await?;
                    }
                    outbox::insert_in(&txn, OUTBOX_TABLE, &audit).await?;
                    txn.commit()
                        .await
                        .map_err(|e| Error::internal(CONTEXT, e))?;
                    Ok(Registered::Created(p))
                }
                // Registered concurrently by someone else: theirs stands.
                Err(e) if is_unique_violation(&e) => {
                    let _ = txn.rollback().await;
                    self.find_patient_by_nhs_number(&p.nhs_number)
                        .await?
                        .map(Registered::Existing)
                        .ok_or_else(|| Error::internal(CONTEXT, e))
                }
                Err(e) => Err(Error::internal(CONTEXT, e)),
            }
        })
    }

    fn get_patient(&self, id: &str) -> BoxFuture<'_, Option<Patient>> {
        let id = id.to_owned();
        Box::pin(async move {
            patient::Entity::find_by_id(id)
                .one(&self.db)
                .await
                .map_err(|e| Error::internal("reading a patient", e))?
                .map(|row| self.patient_from_row(row))
                .transpose()
        })
    }

    fn find_patient_by_nhs_number(&self, nhs: &NhsNumber) -> BoxFuture<'_, Option<Patient>> {
        let nhs_index = self.nhs_index(nhs);
        Box::pin(async move {
            let nhs_index = nhs_index?;
            patient::Entity::find()
                .filter(patient::Column::NhsIndex.eq(nhs_index))
                .one(&self.db)
                .await
                .map_err(|e| Error::internal("reading a patient", e))?
                .map(|row| self.patient_from_row(row))
                .transpose()
        })
    }

    fn update_patient(&self, p: Patient, audit: AuditEvent) -> BoxFuture<'_, Patient> {
        Box::pin(async move {
            const CONTEXT: &str = "updating a patient";
            let sealed = self.seal_patient(&p, &patient_aad(&p.id))?;
            let txn = self
                .db
                .begin()
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            // The write first (SQLite's write lock), conditional on the
            // version being replaced and on the patient standing alone.
            let updated = patient::Entity::update_many()
                .col_expr(patient::Column::Sealed, Expr::value(sealed))
                .col_expr(patient::Column::UpdatedAt, Expr::value(p.updated_at))
                .col_expr(patient::Column::Version, Expr::value(p.version))
                .filter(patient::Column::PatientId.eq(p.id.clone()))
                .filter(patient::Column::Version.eq(p.version - 1))
                .filter(patient::Column::SupersededBy.is_null())
                .exec(&txn)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            if updated.rows_affected != 1 {
                let current = patient::Entity::find_by_id(p.id.clone())
                    .one(&txn)
                    .await
                    .map_err(|e| Error::internal(CONTEXT, e))?;
                let _ = txn.rollback().await;
                return Err(match current {
                    None => refusals::unknown("patient_id"),
                    Some(c) if c.superseded_by.is_some() => refusals::merged_away(),
                    Some(c) => refusals::stale(c.version),
                });
            }
            let before = patient_version::Entity::find_by_id((p.id.clone(), p.version - 1))
                .one(&txn)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            // A patient from before versions were kept has its first one
            // kept now, from what it was.
            if p.version == 2 && before.is_none() {
                let _ = txn.rollback().await;
                let old = self
                    .get_patient(&p.id)
                    .await?
                    .ok_or_else(|| Error::internal(CONTEXT, "the patient is gone"))?;
                patient_version::Entity::insert(self.version_to_row(&old)?)
                    .on_conflict(
                        OnConflict::columns([
                            patient_version::Column::PatientId,
                            patient_version::Column::Version,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(&self.db)
                    .await
                    .map_err(|e| Error::internal(CONTEXT, e))?;
                return self.update_patient(p, audit).await;
            }
            patient_version::Entity::insert(self.version_to_row(&p)?)
                .exec_without_returning(&txn)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            patient_key::Entity::delete_many()
                .filter(patient_key::Column::PatientId.eq(p.id.clone()))
                .exec(&txn)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            self.insert_keys(&txn, self.key_rows(&p)?).await?;
            let practice_before = match before {
                Some(row) => self.version_from_row(row)?.demographics.gp_practice,
                None => None,
            };
            if practice_before != p.demographics.gp_practice {
                queue_registration(&txn, &p.id, p.version).await?;
            }
            outbox::insert_in(&txn, OUTBOX_TABLE, &audit).await?;
            txn.commit()
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            Ok(p)
        })
    }

    fn claim_registrations(
        &self,
        limit: u32,
        leased_until: DateTime<Utc>,
    ) -> BoxFuture<'_, Vec<PendingRegistration>> {
        Box::pin(async move {
            const CONTEXT: &str = "claiming GP registrations for consent";
            let now = Utc::now();
            let free = || {
                Expr::col(Alias::new("leased_until"))
                    .is_null()
                    .or(Expr::col(Alias::new("leased_until")).lt(now))
            };
            let select = Query::select()
                .columns([Alias::new("patient_id"), Alias::new("version")])
                .from(Alias::new(REGISTRATIONS_TABLE))
                .and_where(free())
                .order_by(Alias::new("queued_at"), Order::Asc)
                .limit(u64::from(limit))
                .to_owned();
            let rows = self
                .db
                .query_all(&select)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in rows {
                let pending = PendingRegistration {
                    patient_id: row
                        .try_get("", "patient_id")
                        .map_err(|e| Error::internal(CONTEXT, e))?,
                    version: row
                        .try_get("", "version")
                        .map_err(|e| Error::internal(CONTEXT, e))?,
                };
                // Taken only if no other replica took it meanwhile.
                let lease = Query::update()
                    .table(Alias::new(REGISTRATIONS_TABLE))
                    .value(Alias::new("leased_until"), leased_until)
                    .and_where(Expr::col(Alias::new("patient_id")).eq(pending.patient_id.clone()))
                    .and_where(Expr::col(Alias::new("version")).eq(pending.version))
                    .and_where(free())
                    .to_owned();
                let leased = self
                    .db
                    .execute(&lease)
                    .await
                    .map_err(|e| Error::internal(CONTEXT, e))?;
                if leased.rows_affected() == 1 {
                    claimed.push(pending);
                }
            }
            Ok(claimed)
        })
    }

    fn registration_delivered(&self, pending: &PendingRegistration) -> BoxFuture<'_, ()> {
        let pending = pending.clone();
        Box::pin(async move {
            let delete = Query::delete()
                .from_table(Alias::new(REGISTRATIONS_TABLE))
                .and_where(Expr::col(Alias::new("patient_id")).eq(pending.patient_id))
                .and_where(Expr::col(Alias::new("version")).eq(pending.version))
                .to_owned();
            self.db
                .execute(&delete)
                .await
                .map_err(|e| Error::internal("forgetting a delivered GP registration", e))?;
            Ok(())
        })
    }

    fn patient_versions(&self, id: &str, limit: usize) -> BoxFuture<'_, Vec<Patient>> {
        let id = id.to_owned();
        Box::pin(async move {
            const CONTEXT: &str = "reading a patient's versions";
            let rows = patient_version::Entity::find()
                .filter(patient_version::Column::PatientId.eq(id.clone()))
                .order_by_desc(patient_version::Column::Version)
                .limit(limit as u64)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            if rows.is_empty() {
                // Registered before versions were kept: its one version.
                return Ok(self.get_patient(&id).await?.into_iter().collect());
            }
            rows.into_iter()
                .map(|row| self.version_from_row(row))
                .collect()
        })
    }

    fn candidates(&self, keys: &[String], limit: usize) -> BoxFuture<'_, Vec<Patient>> {
        let indexes: Result<Vec<String>, Error> = keys
            .iter()
            .map(|k| self.index.index(BLOCKING_INDEX_DOMAIN, k.as_bytes()))
            .collect();
        Box::pin(async move {
            const CONTEXT: &str = "finding candidate patients";
            let indexes = indexes?;
            if indexes.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<String> = patient_key::Entity::find()
                .select_only()
                .column(patient_key::Column::PatientId)
                .distinct()
                .filter(patient_key::Column::KeyIndex.is_in(indexes))
                .limit(limit as u64)
                .into_tuple()
                .all(&self.db)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            patient::Entity::find()
                .filter(patient::Column::PatientId.is_in(ids))
                .all(&self.db)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?
                .into_iter()
                .map(|row| self.patient_from_row(row))
                .collect()
        })
    }

    fn mark_not_same_person(
        &self,
        link: NotSamePerson,
        audit: Vec<AuditEvent>,
    ) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            const CONTEXT: &str = "recording that two patients are not the same person";
            let row = self.link_to_row(&link)?;
            let txn = self
                .db
                .begin()
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?;
            match not_same_person::Entity::insert(row).exec(&txn).await {
                Ok(_) => {
                    for event in &audit {
                        outbox::insert_in(&txn, OUTBOX_TABLE, event).await?;
                    }
                    txn.commit()
                        .await
                        .map_err(|e| Error::internal(CONTEXT, e))?;
                    Ok(true)
                }
                Err(e) if is_unique_violation(&e) => {
                    let _ = txn.rollback().await;
                    Ok(false)
                }
                Err(e) => Err(Error::internal(CONTEXT, e)),
            }
        })
    }

    fn not_same_person_links(&self, id: &str) -> BoxFuture<'_, Vec<NotSamePerson>> {
        let id = id.to_owned();
        Box::pin(async move {
            not_same_person::Entity::find()
                .filter(
                    Condition::any()
                        .add(not_same_person::Column::PatientA.eq(id.clone()))
                        .add(not_same_person::Column::PatientB.eq(id)),
                )
                .all(&self.db)
                .await
                .map_err(|e| Error::internal("reading not-the-same-person links", e))?
                .into_iter()
                .map(|row| self.link_from_row(row))
                .collect::<Result<Vec<_>, _>>()
                .map(|mut links| {
                    links.sort_by(|a, b| a.patients.cmp(&b.patients));
                    links
                })
        })
    }

    fn merge_patients(
        &self,
        merge: MergeEvent,
        audit: Vec<AuditEvent>,
    ) -> BoxFuture<'_, MergeEvent> {
        Box::pin(async move {
            logged_merge(&self.db, merge, &audit, |txn, m| {
                Box::pin(async move {
                    // The write first: on SQLite it takes the write lock, so
                    // what is read next holds until commit.
                    let at = m.recorded_at;
                    if !repoint(txn, &m.superseded, None, Some(&m.surviving), at).await? {
                        return Err(match superseded_by(txn, &m.superseded).await? {
                            None => refusals::unknown("superseded_patient_id"),
                            Some(_) => refusals::already_merged("superseded_patient_id"),
                        });
                    }
                    match superseded_by(txn, &m.surviving).await? {
                        None => return Err(refusals::unknown("surviving_patient_id")),
                        Some(Some(_)) => {
                            return Err(refusals::already_merged("surviving_patient_id"));
                        }
                        Some(None) => {}
                    }
                    let pair = NotSamePerson::pair(&m.superseded, &m.surviving);
                    let apart = not_same_person::Entity::find_by_id(pair)
                        .one(txn)
                        .await
                        .map_err(|e| Error::internal("merging patients", e))?;
                    if apart.is_some() {
                        return Err(refusals::kept_apart());
                    }
                    Ok(())
                })
            })
            .await
        })
    }

    fn unmerge_patient(
        &self,
        unmerge: MergeEvent,
        audit: Vec<AuditEvent>,
    ) -> BoxFuture<'_, MergeEvent> {
        Box::pin(async move {
            logged_merge(&self.db, unmerge, &audit, |txn, m| {
                Box::pin(async move {
                    let at = m.recorded_at;
                    if !repoint(txn, &m.superseded, Some(&m.surviving), None, at).await? {
                        return Err(match superseded_by(txn, &m.superseded).await? {
                            None => refusals::unknown("superseded_patient_id"),
                            Some(_) => refusals::not_merged(),
                        });
                    }
                    Ok(())
                })
            })
            .await
        })
    }

    fn merges_after(&self, after: u64, limit: u32) -> BoxFuture<'_, Vec<MergeEvent>> {
        Box::pin(async move {
            patient_merge::Entity::find()
                .filter(
                    patient_merge::Column::Sequence.gt(i64::try_from(after).unwrap_or(i64::MAX)),
                )
                .order_by_asc(patient_merge::Column::Sequence)
                .limit(u64::from(limit))
                .all(&self.db)
                .await
                .map_err(|e| Error::internal("reading the merge log", e))?
                .into_iter()
                .map(merge_from_row)
                .collect()
        })
    }

    fn create_organisation(&self, org: Organisation) -> BoxFuture<'_, Organisation> {
        Box::pin(async move {
            let row = organisation::ActiveModel {
                ods_code: Set(org.ods_code.as_str().to_owned()),
                name: Set(org.name.clone()),
                created_at: Set(org.created_at),
            };
            match organisation::Entity::insert(row).exec(&self.db).await {
                Ok(_) => Ok(org),
                Err(e) if is_unique_violation(&e) => Err(Error::already_exists(format!(
                    "organisation {} already exists",
                    org.ods_code
                ))),
                Err(e) => Err(Error::internal("creating an organisation", e)),
            }
        })
    }

    fn get_organisation(&self, code: &OdsCode) -> BoxFuture<'_, Option<Organisation>> {
        let code = code.as_str().to_owned();
        Box::pin(async move {
            organisation::Entity::find_by_id(code)
                .one(&self.db)
                .await
                .map_err(|e| Error::internal("reading an organisation", e))?
                .map(organisation_from_row)
                .transpose()
        })
    }

    fn create_principal(&self, p: Principal) -> BoxFuture<'_, Principal> {
        Box::pin(async move {
            match principal::Entity::insert(principal_to_row(&p))
                .exec(&self.db)
                .await
            {
                Ok(_) => Ok(p),
                Err(e) if is_unique_violation(&e) => Err(Error::already_exists(
                    "a principal with this client id exists",
                )),
                Err(e) => Err(Error::internal("creating a principal", e)),
            }
        })
    }

    fn upsert_principal(&self, p: Principal) -> BoxFuture<'_, Principal> {
        Box::pin(async move {
            let existing = self.get_principal_by_client_id(&p.client_id).await?;
            // Keep the id its tokens already carry.
            let p = Principal {
                id: existing.map(|e| e.id).unwrap_or(p.id.clone()),
                ..p
            };
            principal::Entity::insert(principal_to_row(&p))
                .on_conflict(
                    OnConflict::column(principal::Column::ClientId)
                        .update_columns([
                            principal::Column::Kind,
                            principal::Column::DisplayName,
                            principal::Column::OdsCode,
                            principal::Column::Role,
                            principal::Column::Scopes,
                            principal::Column::SecretHash,
                            principal::Column::PatientId,
                            principal::Column::Purposes,
                        ])
                        .to_owned(),
                )
                .exec(&self.db)
                .await
                .map_err(|e| Error::internal("storing a bootstrap principal", e))?;
            Ok(p)
        })
    }

    fn get_principal_by_client_id(&self, client_id: &str) -> BoxFuture<'_, Option<Principal>> {
        let client_id = client_id.to_owned();
        Box::pin(async move {
            principal::Entity::find()
                .filter(principal::Column::ClientId.eq(client_id))
                .one(&self.db)
                .await
                .map_err(|e| Error::internal("reading a principal", e))?
                .map(principal_from_row)
                .transpose()
        })
    }

    fn get_principal(&self, id: &str) -> BoxFuture<'_, Option<Principal>> {
        let id = id.to_owned();
        Box::pin(async move {
            principal::Entity::find_by_id(id)
                .one(&self.db)
                .await
                .map_err(|e| Error::internal("reading a principal", e))?
                .map(principal_from_row)
                .transpose()
        })
    }

    fn add_signing_key(&self, key: StoredSigningKey) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let row = signing_key::ActiveModel {
                kid: Set(key.kid.clone()),
                sealed: Set(self
                    .keys
                    .seal(key.pkcs8_pem.as_bytes(), &signing_key_aad(&key.kid))?),
                created_at: Set(key.created_at),
            };
            match signing_key::Entity::insert(row).exec(&self.db).await {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => {
                    Err(Error::already_exists("a signing key with this kid exists"))
                }
                Err(e) => Err(Error::internal("storing a signing key", e)),
            }
        })
    }

    fn signing_keys(&self) -> BoxFuture<'_, Vec<StoredSigningKey>> {
        Box::pin(async move {
            const CONTEXT: &str = "reading the signing keys";
            signing_key::Entity::find()
                .order_by_asc(signing_key::Column::CreatedAt)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal(CONTEXT, e))?
                .into_iter()
                .map(|row| {
                    let pem = self
                        .keys
                        .open(&row.sealed, &signing_key_aad(&row.kid))
                        .map_err(|e| e.context(CONTEXT))?;
                    Ok(StoredSigningKey {
                        pkcs8_pem: String::from_utf8(pem)
                            .map_err(|e| Error::internal(CONTEXT, e))?,
                        kid: row.kid,
                        created_at: row.created_at,
                    })
                })
                .collect()
        })
    }

    fn revoke_principal(
        &self,
        principal_id: &str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'_, (DateTime<Utc>, bool)> {
        let principal_id = principal_id.to_owned();
        Box::pin(async move {
            let row = revocation::ActiveModel {
                principal_id: Set(principal_id.clone()),
                revoked_at: Set(at),
            };
            // The first revocation stands: a second changes nothing.
            let inserted = revocation::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(revocation::Column::PrincipalId)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&self.db)
                .await
                .map_err(|e| Error::internal("revoking a principal", e))?;
            if inserted == 1 {
                return Ok((at, false));
            }
            let first = self.revocation(&principal_id).await?.ok_or_else(|| {
                Error::internal("revoking a principal", "the revocation is missing")
            })?;
            Ok((first, true))
        })
    }

    fn revocation(&self, principal_id: &str) -> BoxFuture<'_, Option<DateTime<Utc>>> {
        let principal_id = principal_id.to_owned();
        Box::pin(async move {
            Ok(revocation::Entity::find_by_id(principal_id)
                .one(&self.db)
                .await
                .map_err(|e| Error::internal("reading a revocation", e))?
                .map(|row| row.revoked_at))
        })
    }

    fn revocations_since(
        &self,
        since: DateTime<Utc>,
    ) -> BoxFuture<'_, Vec<(String, DateTime<Utc>)>> {
        Box::pin(async move {
            Ok(revocation::Entity::find()
                .filter(revocation::Column::RevokedAt.gte(since))
                .order_by_asc(revocation::Column::PrincipalId)
                .all(&self.db)
                .await
                .map_err(|e| Error::internal("reading revocations", e))?
                .into_iter()
                .map(|row| (row.principal_id, row.revoked_at))
                .collect())
        })
    }
}
