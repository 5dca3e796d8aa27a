//! What Evaluate reads — a patient's care relationships and directives —
//! kept in memory around any [`ConsentStore`], so a decision costs no
//! database read when the patient's consent has not changed.
//!
//! A change applies to the very next decision: every write through this
//! store drops the patient's entries once it has returned, and a read that
//! raced a write does not keep what it read (a generation counter, bumped
//! by every write, must be unchanged from before the read to after it).
//! That holds only while this process is the database's one writer, so
//! `open` wraps the store only on SQLite (one replica, as the chart
//! enforces); replicas sharing PostgreSQL read the database every time.

use std::{collections::HashMap, sync::Mutex};

use chrono::{DateTime, Utc};
use sharedcare_proto::audit::v1::AuditEvent;

use super::{BoxFuture, ConsentStore, LoggedChange};
use crate::domain::{CareRelationship, Directive, PatientId};

/// Patients held at most; past this the cache starts again empty.
const MAX_PATIENTS: usize = 100_000;

pub struct Cached<S> {
    inner: S,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every write: a read that began under another generation
    /// may have read what a write has since changed.
    generation: u64,
    relationships: HashMap<String, Vec<CareRelationship>>,
    directives: HashMap<String, Vec<Directive>>,
}

impl<S: ConsentStore> Cached<S> {
    pub fn new(inner: S) -> Self {
        Cached {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// After a write: forget `patient` (every patient when `None`, as after
    /// a write whose outcome is not known).
    fn changed(&self, patient: Option<&str>) {
        if let Ok(mut state) = self.state.lock() {
            state.generation += 1;
            match patient {
                Some(p) => {
                    state.relationships.remove(p);
                    state.directives.remove(p);
                }
                None => {
                    state.relationships.clear();
                    state.directives.clear();
                }
            }
        }
    }
}

impl<S> Cached<S> {
    /// `patient`'s entry in the map `pick` chooses, or what `load` reads
    /// (called only on a miss), kept if no write happened while it was read.
    async fn list<'a, T: Clone>(
        &'a self,
        patient: &'a PatientId,
        pick: fn(&mut State) -> &mut HashMap<String, Vec<T>>,
        load: impl FnOnce() -> BoxFuture<'a, Vec<T>>,
    ) -> Result<Vec<T>, sharedcare_kit::Error> {
        let key = patient.as_str();
        if let Ok(mut state) = self.state.lock()
            && let Some(hit) = pick(&mut state).get(key)
        {
            return Ok(hit.clone());
        }
        let read_under = self.state.lock().ok().map(|s| s.generation);
        let read = load().await?;
        if let Ok(mut state) = self.state.lock()
            && Some(state.generation) == read_under
        {
            let map = pick(&mut state);
            if map.len() >= MAX_PATIENTS {
                map.clear();
            }
            map.insert(key.to_owned(), read.clone());
        }
        Ok(read)
    }
}

impl<S: ConsentStore> ConsentStore for Cached<S> {
    fn insert_relationship(
        &self,
        relationship: CareRelationship,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship> {
        Box::pin(async move {
            let patient = relationship.patient_id.as_str().to_owned();
            let result = self.inner.insert_relationship(relationship, audit).await;
            self.changed(Some(&patient));
            result
        })
    }

    fn get_relationship(&self, id: &str) -> BoxFuture<'_, Option<CareRelationship>> {
        self.inner.get_relationship(id)
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
            let result = self.inner.end_relationship(&id, at, &by, audit).await;
            self.changed(result.as_ref().ok().map(|r| r.patient_id.as_str()));
            result
        })
    }

    fn list_relationships(&self, patient: &PatientId) -> BoxFuture<'_, Vec<CareRelationship>> {
        let patient = patient.clone();
        Box::pin(async move {
            self.list(
                &patient,
                |s| &mut s.relationships,
                || self.inner.list_relationships(&patient),
            )
            .await
        })
    }

    fn insert_directive(
        &self,
        directive: Directive,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Directive> {
        Box::pin(async move {
            let patient = directive.patient_id.as_str().to_owned();
            let result = self.inner.insert_directive(directive, audit).await;
            self.changed(Some(&patient));
            result
        })
    }

    fn get_directive(&self, id: &str) -> BoxFuture<'_, Option<Directive>> {
        self.inner.get_directive(id)
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
            let result = self.inner.revoke_directive(&id, at, &by, audit).await;
            self.changed(result.as_ref().ok().map(|d| d.patient_id.as_str()));
            result
        })
    }

    fn list_directives(&self, patient: &PatientId) -> BoxFuture<'_, Vec<Directive>> {
        let patient = patient.clone();
        Box::pin(async move {
            self.list(
                &patient,
                |s| &mut s.directives,
                || self.inner.list_directives(&patient),
            )
            .await
        })
    }

    fn changes_after(&self, after: u64, limit: u32) -> BoxFuture<'_, Vec<LoggedChange>> {
        self.inner.changes_after(after, limit)
    }

    fn latest_change(&self) -> BoxFuture<'_, u64> {
        self.inner.latest_change()
    }
}
