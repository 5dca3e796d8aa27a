//! The `memory` backend: the patient index, organisations and principals in
//! this process's memory, lost when it stops (tests, demos). Held to the
//! same conformance suite as the SQL store.
//!
//! A registration's audit event still goes to identity's outbox, a SQLite
//! database under the data dir, and goes there before the patient is added
//! (`kit::memory::AuditedState`): there is no transaction to share with
//! the outbox, so a registration is never made unaudited. Patients are not
//! sealed as the SQL store seals them: nothing here is at rest.

use std::collections::{BTreeSet, HashMap};

use sea_orm::DatabaseConnection;
use sharedcare_kit::{Error, db::WriteGate, memory::AuditedState};
use sharedcare_proto::audit::v1::AuditEvent;

use chrono::{DateTime, Utc};

use super::{
    BoxFuture, IdentityStore, OUTBOX_TABLE, PendingRegistration, Registered, StoredSigningKey,
    refusals,
};
use crate::domain::{
    MergeEvent, MergeKind, NhsNumber, NotSamePerson, OdsCode, Organisation, Patient, Principal,
};

pub struct MemoryStore {
    state: AuditedState<Index>,
}

#[derive(Default)]
struct Index {
    /// By patient id.
    patients: HashMap<String, Patient>,
    /// NHS number → patient id: one patient per number.
    by_nhs_number: HashMap<NhsNumber, String>,
    /// Blocking key → patient ids.
    by_blocking_key: HashMap<String, BTreeSet<String>>,
    /// "Not the same person" links, by their ordered pair.
    apart: HashMap<(String, String), NotSamePerson>,
    /// The merge log, in order.
    merges: Vec<MergeEvent>,
    /// Every version of each patient, oldest first.
    versions: HashMap<String, Vec<Patient>>,
    /// By ODS code.
    organisations: HashMap<String, Organisation>,
    /// By client id (principal ids are unique too; there are few).
    principals: HashMap<String, Principal>,
    /// Rotated signing keys, oldest first.
    signing_keys: Vec<StoredSigningKey>,
    /// Principal id → when it was revoked.
    revocations: HashMap<String, DateTime<Utc>>,
    /// GP registrations waiting for consent, by patient id.
    registrations: HashMap<String, QueuedRegistration>,
}

struct QueuedRegistration {
    version: i64,
    queued_at: DateTime<Utc>,
    leased_until: Option<DateTime<Utc>>,
}

impl Index {
    fn by_nhs_number(&self, nhs: &NhsNumber) -> Option<&Patient> {
        self.by_nhs_number
            .get(nhs)
            .and_then(|id| self.patients.get(id))
    }

    fn index_keys(&mut self, p: &Patient) {
        for key in p.blocking_keys() {
            self.by_blocking_key
                .entry(key)
                .or_default()
                .insert(p.id.clone());
        }
    }

    fn unindex_keys(&mut self, p: &Patient) {
        for key in p.blocking_keys() {
            if let Some(ids) = self.by_blocking_key.get_mut(&key) {
                ids.remove(&p.id);
                if ids.is_empty() {
                    self.by_blocking_key.remove(&key);
                }
            }
        }
    }

    fn queue_registration(&mut self, p: &Patient) {
        self.registrations.insert(
            p.id.clone(),
            QueuedRegistration {
                version: p.version,
                queued_at: Utc::now(),
                leased_until: None,
            },
        );
    }

    fn add_patient(&mut self, p: Patient, apart: Vec<NotSamePerson>) {
        if p.demographics.gp_practice.is_some() {
            self.queue_registration(&p);
        }
        self.index_keys(&p);
        self.versions.insert(p.id.clone(), vec![p.clone()]);
        for link in apart {
            self.apart.entry(link.patients.clone()).or_insert(link);
        }
        self.by_nhs_number
            .insert(p.nhs_number.clone(), p.id.clone());
        self.patients.insert(p.id.clone(), p);
    }

    /// Why `merge` may not be made, if it may not.
    fn refuse_merge(&self, merge: &MergeEvent) -> Result<(), Error> {
        for (field, id) in [
            ("superseded_patient_id", &merge.superseded),
            ("surviving_patient_id", &merge.surviving),
        ] {
            match self.patients.get(id) {
                None => return Err(refusals::unknown(field)),
                Some(p) if p.superseded_by.is_some() => {
                    return Err(refusals::already_merged(field));
                }
                Some(_) => {}
            }
        }
        if self
            .apart
            .contains_key(&NotSamePerson::pair(&merge.superseded, &merge.surviving))
        {
            return Err(refusals::kept_apart());
        }
        Ok(())
    }

    /// Logs `event` with the next sequence and points the superseded
    /// patient as it says.
    fn apply_merge(&mut self, mut event: MergeEvent) -> MergeEvent {
        event.sequence = self.merges.len() as u64 + 1;
        if let Some(p) = self.patients.get_mut(&event.superseded) {
            p.superseded_by = match event.kind {
                MergeKind::Merged => Some(event.surviving.clone()),
                MergeKind::Unmerged => None,
            };
            p.updated_at = event.recorded_at;
        }
        self.merges.push(event.clone());
        event
    }

    fn principal_id_taken(&self, id: &str) -> bool {
        self.principals.values().any(|p| p.id == id)
    }
}

impl MemoryStore {
    /// `outbox` is a database migrated by identity's `Migrator`, where
    /// registrations' audit events go.
    pub fn new(outbox: DatabaseConnection) -> Self {
        MemoryStore {
            state: AuditedState::new(Index::default(), outbox, OUTBOX_TABLE),
        }
    }

    /// The outbox's database, for the relay.
    pub fn connection(&self) -> DatabaseConnection {
        self.state.connection()
    }

    /// The turn the relay takes with registrations.
    pub fn write_gate(&self) -> WriteGate {
        self.state.write_gate()
    }
}

impl IdentityStore for MemoryStore {
    fn register_patient_apart(
        &self,
        p: Patient,
        apart: Vec<NotSamePerson>,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Registered> {
        Box::pin(async move {
            let (id, nhs) = (p.id.clone(), p.nhs_number.clone());
            self.state
                .change(
                    &audit,
                    |index| {
                        if let Some(existing) = index.by_nhs_number(&nhs) {
                            return Ok(Some(Registered::Existing(existing.clone())));
                        }
                        if index.patients.contains_key(&id) {
                            // As the SQL store: another number under this id
                            // is a fault, not the caller's.
                            return Err(Error::internal(
                                "registering a patient",
                                "the patient id is taken",
                            ));
                        }
                        Ok(None)
                    },
                    |index| {
                        index.add_patient(p.clone(), apart);
                        Ok(Registered::Created(p))
                    },
                )
                .await
        })
    }

    fn get_patient(&self, id: &str) -> BoxFuture<'_, Option<Patient>> {
        let found = self
            .state
            .lock()
            .map(|index| index.patients.get(id).cloned());
        Box::pin(async move { found })
    }

    fn find_patient_by_nhs_number(&self, nhs: &NhsNumber) -> BoxFuture<'_, Option<Patient>> {
        let found = self
            .state
            .lock()
            .map(|index| index.by_nhs_number(nhs).cloned());
        Box::pin(async move { found })
    }

    fn update_patient(&self, p: Patient, audit: AuditEvent) -> BoxFuture<'_, Patient> {
        Box::pin(async move {
            let checked = p.clone();
            self.state
                .change(
                    &audit,
                    move |index| match index.patients.get(&checked.id) {
                        None => Err(refusals::unknown("patient_id")),
                        Some(current) if current.superseded_by.is_some() => {
                            Err(refusals::merged_away())
                        }
                        Some(current) if current.version != checked.version - 1 => {
                            Err(refusals::stale(current.version))
                        }
                        Some(_) => Ok(None),
                    },
                    |index| {
                        if let Some(old) = index.patients.get(&p.id).cloned() {
                            index.unindex_keys(&old);
                            if old.demographics.gp_practice != p.demographics.gp_practice {
                                index.queue_registration(&p);
                            }
                        }
                        index.index_keys(&p);
                        index
                            .versions
                            .entry(p.id.clone())
                            .or_default()
                            .push(p.clone());
                        index.patients.insert(p.id.clone(), p.clone());
                        Ok(p)
                    },
                )
                .await
        })
    }

    fn claim_registrations(
        &self,
        limit: u32,
        leased_until: DateTime<Utc>,
    ) -> BoxFuture<'_, Vec<PendingRegistration>> {
        let claimed = self.state.lock().map(|mut index| {
            let now = Utc::now();
            let mut free: Vec<(&String, &mut QueuedRegistration)> = index
                .registrations
                .iter_mut()
                .filter(|(_, q)| q.leased_until.is_none_or(|until| until < now))
                .collect();
            free.sort_by_key(|(_, q)| q.queued_at);
            free.into_iter()
                .take(limit as usize)
                .map(|(id, q)| {
                    q.leased_until = Some(leased_until);
                    PendingRegistration {
                        patient_id: id.clone(),
                        version: q.version,
                    }
                })
                .collect()
        });
        Box::pin(async move { claimed })
    }

    fn registration_delivered(&self, pending: &PendingRegistration) -> BoxFuture<'_, ()> {
        let done = self.state.lock().map(|mut index| {
            if index
                .registrations
                .get(&pending.patient_id)
                .is_some_and(|q| q.version == pending.version)
            {
                index.registrations.remove(&pending.patient_id);
            }
        });
        Box::pin(async move { done })
    }

    fn patient_versions(&self, id: &str, limit: usize) -> BoxFuture<'_, Vec<Patient>> {
        let found = self.state.lock().map(|index| {
            index
                .versions
                .get(id)
                .map(|v| v.iter().rev().take(limit).cloned().collect())
                .unwrap_or_default()
        });
        Box::pin(async move { found })
    }

    fn candidates(&self, keys: &[String], limit: usize) -> BoxFuture<'_, Vec<Patient>> {
        let found = self.state.lock().map(|index| {
            let ids: BTreeSet<&String> = keys
                .iter()
                .filter_map(|k| index.by_blocking_key.get(k))
                .flatten()
                .collect();
            ids.into_iter()
                .filter_map(|id| index.patients.get(id).cloned())
                .take(limit)
                .collect()
        });
        Box::pin(async move { found })
    }

    fn mark_not_same_person(
        &self,
        link: NotSamePerson,
        audit: Vec<AuditEvent>,
    ) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let pair = link.patients.clone();
            let check = &pair;
            self.state
                .change_all(
                    &audit,
                    move |index| Ok(index.apart.contains_key(check).then_some(false)),
                    |index| {
                        index.apart.insert(link.patients.clone(), link);
                        Ok(true)
                    },
                )
                .await
        })
    }

    fn not_same_person_links(&self, id: &str) -> BoxFuture<'_, Vec<NotSamePerson>> {
        let found = self.state.lock().map(|index| {
            let mut links: Vec<NotSamePerson> = index
                .apart
                .values()
                .filter(|l| l.other(id).is_some())
                .cloned()
                .collect();
            links.sort_by(|a, b| a.patients.cmp(&b.patients));
            links
        });
        Box::pin(async move { found })
    }

    fn merge_patients(
        &self,
        merge: MergeEvent,
        audit: Vec<AuditEvent>,
    ) -> BoxFuture<'_, MergeEvent> {
        Box::pin(async move {
            let checked = &merge;
            self.state
                .change_all(
                    &audit,
                    move |index| index.refuse_merge(checked).map(|()| None),
                    |index| Ok(index.apply_merge(merge.clone())),
                )
                .await
        })
    }

    fn unmerge_patient(
        &self,
        unmerge: MergeEvent,
        audit: Vec<AuditEvent>,
    ) -> BoxFuture<'_, MergeEvent> {
        Box::pin(async move {
            let checked = &unmerge;
            self.state
                .change_all(
                    &audit,
                    move |index| match index.patients.get(&checked.superseded) {
                        None => Err(refusals::unknown("superseded_patient_id")),
                        Some(p) if p.superseded_by.as_ref() != Some(&checked.surviving) => {
                            Err(refusals::not_merged())
                        }
                        Some(_) => Ok(None),
                    },
                    |index| Ok(index.apply_merge(unmerge.clone())),
                )
                .await
        })
    }

    fn merges_after(&self, after: u64, limit: u32) -> BoxFuture<'_, Vec<MergeEvent>> {
        let found = self.state.lock().map(|index| {
            index
                .merges
                .iter()
                .filter(|m| m.sequence > after)
                .take(limit as usize)
                .cloned()
                .collect()
        });
        Box::pin(async move { found })
    }

    fn create_organisation(&self, org: Organisation) -> BoxFuture<'_, Organisation> {
        let created = self.state.lock().and_then(|mut index| {
            let code = org.ods_code.as_str().to_owned();
            if index.organisations.contains_key(&code) {
                return Err(Error::already_exists(format!(
                    "organisation {} already exists",
                    org.ods_code
                )));
            }
            index.organisations.insert(code, org.clone());
            Ok(org)
        });
        Box::pin(async move { created })
    }

    fn get_organisation(&self, code: &OdsCode) -> BoxFuture<'_, Option<Organisation>> {
        let found = self
            .state
            .lock()
            .map(|index| index.organisations.get(code.as_str()).cloned());
        Box::pin(async move { found })
    }

    fn create_principal(&self, p: Principal) -> BoxFuture<'_, Principal> {
        let created = self.state.lock().and_then(|mut index| {
            if index.principals.contains_key(&p.client_id) || index.principal_id_taken(&p.id) {
                return Err(Error::already_exists(
                    "a principal with this client id exists",
                ));
            }
            index.principals.insert(p.client_id.clone(), p.clone());
            Ok(p)
        });
        Box::pin(async move { created })
    }

    fn upsert_principal(&self, p: Principal) -> BoxFuture<'_, Principal> {
        let stored = self.state.lock().and_then(|mut index| {
            // As the SQL store: the id its tokens already carry and the time
            // it was first created stay; the rest is replaced.
            if let Some(existing) = index.principals.get_mut(&p.client_id) {
                let p = Principal {
                    id: existing.id.clone(),
                    ..p
                };
                *existing = Principal {
                    created_at: existing.created_at,
                    ..p.clone()
                };
                return Ok(p);
            }
            if index.principal_id_taken(&p.id) {
                return Err(Error::internal(
                    "storing a bootstrap principal",
                    "the principal id is taken",
                ));
            }
            index.principals.insert(p.client_id.clone(), p.clone());
            Ok(p)
        });
        Box::pin(async move { stored })
    }

    fn get_principal_by_client_id(&self, client_id: &str) -> BoxFuture<'_, Option<Principal>> {
        let found = self
            .state
            .lock()
            .map(|index| index.principals.get(client_id).cloned());
        Box::pin(async move { found })
    }

    fn get_principal(&self, id: &str) -> BoxFuture<'_, Option<Principal>> {
        let found = self
            .state
            .lock()
            .map(|index| index.principals.values().find(|p| p.id == id).cloned());
        Box::pin(async move { found })
    }

    fn add_signing_key(&self, key: StoredSigningKey) -> BoxFuture<'_, ()> {
        let added = self.state.lock().and_then(|mut index| {
            if index.signing_keys.iter().any(|k| k.kid == key.kid) {
                return Err(Error::already_exists("a signing key with this kid exists"));
            }
            index.signing_keys.push(key);
            index.signing_keys.sort_by_key(|k| k.created_at);
            Ok(())
        });
        Box::pin(async move { added })
    }

    fn signing_keys(&self) -> BoxFuture<'_, Vec<StoredSigningKey>> {
        let keys = self.state.lock().map(|index| index.signing_keys.clone());
        Box::pin(async move { keys })
    }

    fn revoke_principal(
        &self,
        principal_id: &str,
        at: DateTime<Utc>,
    ) -> BoxFuture<'_, (DateTime<Utc>, bool)> {
        let revoked =
            self.state
                .lock()
                .map(|mut index| match index.revocations.get(principal_id) {
                    Some(first) => (*first, true),
                    None => {
                        index.revocations.insert(principal_id.to_owned(), at);
                        (at, false)
                    }
                });
        Box::pin(async move { revoked })
    }

    fn revocation(&self, principal_id: &str) -> BoxFuture<'_, Option<DateTime<Utc>>> {
        let found = self
            .state
            .lock()
            .map(|index| index.revocations.get(principal_id).copied());
        Box::pin(async move { found })
    }

    fn revocations_since(
        &self,
        since: DateTime<Utc>,
    ) -> BoxFuture<'_, Vec<(String, DateTime<Utc>)>> {
        let found = self.state.lock().map(|index| {
            let mut found: Vec<_> = index
                .revocations
                .iter()
                .filter(|(_, at)| **at >= since)
                .map(|(id, at)| (id.clone(), *at))
                .collect();
            found.sort();
            found
        });
        Box::pin(async move { found })
    }
}
