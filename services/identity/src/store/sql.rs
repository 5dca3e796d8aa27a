//! The sea-orm store: SQLite (embedded default) or PostgreSQL.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    SqlErr, TransactionTrait, sea_query::OnConflict,
};
use serde::{Deserialize, Serialize};
use sharedcare_kit::{
    Error, auth,
    crypto::{BlindIndex, Keyring},
    outbox,
};
use sharedcare_proto::audit::v1::AuditEvent;

use super::{
    BoxFuture, IdentityStore, Migrator, OUTBOX_TABLE, Registered, StoredSigningKey, entities::*,
};
use crate::domain::{
    Demographics, Gender, NhsNumber, OdsCode, Organisation, Patient, Principal, default_purposes,
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
}

const NHS_INDEX_DOMAIN: &str = "sharedcare.identity/nhs_number";

fn signing_key_aad(kid: &str) -> Vec<u8> {
    format!("sharedcare.identity/signing-key/{kid}").into_bytes()
}

fn patient_aad(patient_id: &str) -> Vec<u8> {
    format!("sharedcare.identity/patient/{patient_id}").into_bytes()
}

impl SqlStore {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        keys: Keyring,
        index: BlindIndex,
    ) -> Result<Self, Error> {
        let db = sharedcare_kit::db::connect::<Migrator>(url, max_connections).await?;
        Ok(SqlStore { db, keys, index })
    }

    fn nhs_index(&self, nhs: &NhsNumber) -> Result<String, Error> {
        self.index.index(NHS_INDEX_DOMAIN, nhs.as_str().as_bytes())
    }

    fn patient_to_row(&self, p: &Patient) -> Result<patient::ActiveModel, Error> {
        let sealed = SealedPatient {
            nhs_number: p.nhs_number.as_str().to_owned(),
            given_names: p.demographics.given_names.clone(),
            family_name: p.demographics.family_name.clone(),
            birth_date: p.demographics.birth_date,
            gender: p.demographics.gender.as_str().to_owned(),
            postcode: p.demographics.postcode.clone(),
        };
        let plaintext =
            serde_json::to_vec(&sealed).map_err(|e| Error::internal("storing a patient", e))?;
        Ok(patient::ActiveModel {
            patient_id: Set(p.id.clone()),
            nhs_index: Set(self.nhs_index(&p.nhs_number)?),
            sealed: Set(self.keys.seal(&plaintext, &patient_aad(&p.id))?),
            superseded_by: Set(p.superseded_by.clone()),
            created_at: Set(p.created_at),
            updated_at: Set(p.updated_at),
        })
    }

    fn patient_from_row(&self, row: patient::Model) -> Result<Patient, Error> {
        let plaintext = self
            .keys
            .open(&row.sealed, &patient_aad(&row.patient_id))
            .map_err(|e| e.context("reading a patient"))?;
        let sealed: SealedPatient = serde_json::from_slice(&plaintext)
            .map_err(|e| Error::internal("reading a patient", e))?;
        Ok(Patient {
            id: row.patient_id,
            nhs_number: NhsNumber::parse("stored nhs_number", &sealed.nhs_number)
                .map_err(|e| Error::internal("reading a patient", e))?,
            demographics: Demographics {
                given_names: sealed.given_names,
                family_name: sealed.family_name,
                birth_date: sealed.birth_date,
                gender: Gender::from_stored(&sealed.gender),
                postcode: sealed.postcode,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
            superseded_by: row.superseded_by,
        })
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

impl SqlStore {
    /// The connection, for the audit outbox that shares the database.
    pub fn connection(&self) -> DatabaseConnection {
        self.db.clone()
    }
}

impl IdentityStore for SqlStore {
    fn register_patient(&self, p: Patient, audit: AuditEvent) -> BoxFuture<'_, Registered> {
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
                    // The registration and its audit event commit together.
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
