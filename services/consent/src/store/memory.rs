//! The `memory` backend: care relationships and directives in this
//! process's memory, lost when it stops (tests, demos). Held to the same
//! conformance suite as the SQL store, and wrapped as SQLite is (this
//! process makes every change, so the change feed is in-process).
//!
//! Each change's audit event still goes to consent's outbox, a SQLite
//! database under the data dir, and goes there before the change is made
//! (`kit::memory::AuditedState`): there is no transaction to share with
//! the outbox, so a change is never made unaudited.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use sharedcare_kit::{Error, db::WriteGate, memory::AuditedState};
use sharedcare_proto::audit::v1::AuditEvent;

use super::{BoxFuture, ConsentStore, LoggedChange, OUTBOX_TABLE};
use crate::domain::{CareRelationship, Directive, PatientId};

pub struct MemoryStore {
    state: AuditedState<Consents>,
}

#[derive(Default)]
struct Consents {
    relationships: Rows<CareRelationship>,
    directives: Rows<Directive>,
    /// The change log: entry n has sequence n + 1 (nothing is removed).
    log: Vec<LoggedChange>,
}

impl Consents {
    /// Appends `patient`'s change, with the change itself (under one lock).
    fn logged(&mut self, patient: &PatientId) {
        let sequence = self.log.len() as u64 + 1;
        self.log.push(LoggedChange {
            sequence,
            patient_id: patient.clone(),
            committed_at: Utc::now(),
        });
    }
}

/// One kind of row, by id and by patient.
struct Rows<T> {
    by_id: HashMap<String, T>,
    /// Patient id → ids of their rows.
    of_patient: HashMap<String, Vec<String>>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows {
            by_id: HashMap::new(),
            of_patient: HashMap::new(),
        }
    }
}

impl<T: Clone> Rows<T> {
    fn insert(&mut self, id: &str, patient: &PatientId, row: T) {
        self.by_id.insert(id.to_owned(), row);
        self.of_patient
            .entry(patient.as_str().to_owned())
            .or_default()
            .push(id.to_owned());
    }

    /// A patient's rows, newest first by `key` (then id, as the SQL store
    /// orders them).
    fn of<K: Ord>(&self, patient: &PatientId, key: impl Fn(&T) -> K) -> Vec<T> {
        let mut rows: Vec<(&String, &T)> = self
            .of_patient
            .get(patient.as_str())
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id).map(|row| (id, row)))
            .collect();
        rows.sort_by(|(a_id, a), (b_id, b)| (key(b), b_id).cmp(&(key(a), a_id)));
        rows.into_iter().map(|(_, row)| row.clone()).collect()
    }
}

/// A duplicate id is a fault (ids are generated), reported as the SQL store
/// reports its primary key's refusal.
fn taken(context: &'static str) -> Error {
    Error::internal(context, "the id is taken")
}

fn no_relationship() -> Error {
    Error::not_found("no care relationship with this relationship_id")
}

fn no_directive() -> Error {
    Error::not_found("no directive with this directive_id")
}

impl MemoryStore {
    /// `outbox` is a database migrated by consent's `Migrator`, where each
    /// change's audit event goes.
    pub fn new(outbox: DatabaseConnection) -> Self {
        MemoryStore {
            state: AuditedState::new(Consents::default(), outbox, OUTBOX_TABLE),
        }
    }

    /// The outbox's database, for the relay.
    pub fn connection(&self) -> DatabaseConnection {
        self.state.connection()
    }

    /// The turn the relay takes with changes.
    pub fn write_gate(&self) -> WriteGate {
        self.state.write_gate()
    }
}

impl ConsentStore for MemoryStore {
    fn insert_relationship(
        &self,
        r: CareRelationship,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship> {
        Box::pin(async move {
            const CONTEXT: &str = "storing a care relationship";
            let id = r.id.clone();
            self.state
                .change(
                    &audit,
                    |c| {
                        if c.relationships.by_id.contains_key(&id) {
                            return Err(taken(CONTEXT));
                        }
                        Ok(None)
                    },
                    |c| {
                        c.relationships.insert(&r.id, &r.patient_id, r.clone());
                        c.logged(&r.patient_id);
                        Ok(r)
                    },
                )
                .await
        })
    }

    fn get_relationship(&self, id: &str) -> BoxFuture<'_, Option<CareRelationship>> {
        let found = self
            .state
            .lock()
            .map(|c| c.relationships.by_id.get(id).cloned());
        Box::pin(async move { found })
    }

    fn end_relationship(
        &self,
        id: &str,
        at: DateTime<Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship> {
        let id = id.to_owned();
        let by = by.to_owned();
        Box::pin(async move {
            self.state
                .change(
                    &audit,
                    |c| match c.relationships.by_id.get(&id) {
                        None => Err(no_relationship()),
                        // Only one still open at `at` ends (as the SQL
                        // store's conditional update).
                        Some(r) if r.period.end.is_some_and(|end| end <= at) => Err(
                            Error::failed_precondition("the care relationship has already ended"),
                        ),
                        Some(_) => Ok(None),
                    },
                    |c| {
                        let r = c
                            .relationships
                            .by_id
                            .get_mut(&id)
                            .ok_or_else(no_relationship)?;
                        r.period.end = Some(at);
                        r.ended_by = Some(by);
                        let r = r.clone();
                        c.logged(&r.patient_id);
                        Ok(r)
                    },
                )
                .await
        })
    }

    fn list_relationships(&self, patient: &PatientId) -> BoxFuture<'_, Vec<CareRelationship>> {
        let found = self
            .state
            .lock()
            .map(|c| c.relationships.of(patient, |r| r.period.start));
        Box::pin(async move { found })
    }

    fn insert_directive(&self, d: Directive, audit: AuditEvent) -> BoxFuture<'_, Directive> {
        Box::pin(async move {
            const CONTEXT: &str = "storing a directive";
            let id = d.id.clone();
            self.state
                .change(
                    &audit,
                    |c| {
                        if c.directives.by_id.contains_key(&id) {
                            return Err(taken(CONTEXT));
                        }
                        Ok(None)
                    },
                    |c| {
                        c.directives.insert(&d.id, &d.patient_id, d.clone());
                        c.logged(&d.patient_id);
                        Ok(d)
                    },
                )
                .await
        })
    }

    fn get_directive(&self, id: &str) -> BoxFuture<'_, Option<Directive>> {
        let found = self
            .state
            .lock()
            .map(|c| c.directives.by_id.get(id).cloned());
        Box::pin(async move { found })
    }

    fn revoke_directive(
        &self,
        id: &str,
        at: DateTime<Utc>,
        by: &str,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Directive> {
        let id = id.to_owned();
        let by = by.to_owned();
        Box::pin(async move {
            self.state
                .change(
                    &audit,
                    |c| match c.directives.by_id.get(&id) {
                        None => Err(no_directive()),
                        Some(d) if d.revoked_at.is_some() => Err(Error::failed_precondition(
                            "the directive is already revoked",
                        )),
                        Some(_) => Ok(None),
                    },
                    |c| {
                        let d = c.directives.by_id.get_mut(&id).ok_or_else(no_directive)?;
                        d.revoked_at = Some(at);
                        d.revoked_by = Some(by);
                        let d = d.clone();
                        c.logged(&d.patient_id);
                        Ok(d)
                    },
                )
                .await
        })
    }

    fn list_directives(&self, patient: &PatientId) -> BoxFuture<'_, Vec<Directive>> {
        let found = self
            .state
            .lock()
            .map(|c| c.directives.of(patient, |d| d.created_at));
        Box::pin(async move { found })
    }

    fn changes_after(&self, after: u64, limit: u32) -> BoxFuture<'_, Vec<LoggedChange>> {
        let found = self.state.lock().map(|c| {
            let from = usize::try_from(after)
                .unwrap_or(usize::MAX)
                .min(c.log.len());
            let to = from
                .saturating_add(usize::try_from(limit).unwrap_or(usize::MAX))
                .min(c.log.len());
            c.log[from..to].to_vec()
        });
        Box::pin(async move { found })
    }

    fn latest_change(&self) -> BoxFuture<'_, u64> {
        let latest = self.state.lock().map(|c| c.log.len() as u64);
        Box::pin(async move { latest })
    }
}
