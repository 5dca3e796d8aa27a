//! What Evaluate reads — a patient's care relationships and directives —
//! kept in memory around any [`ConsentStore`], so a decision costs no
//! database read when the patient's consent has not changed.
//!
//! At most a configured number of patients is held; the least recently used
//! goes first. Every write through this store, and every change another
//! replica logs (`changes`' tail calls [`Memory::forget`]), drops the
//! patient's entries; a read that raced a drop does not keep what it read
//! (a generation counter, bumped by every drop, must be unchanged from
//! before the read to after it).
//!
//! With replicas sharing PostgreSQL the memory is used only while this
//! replica's lease holds (`Memory::leased`): writers wait for leaseholders
//! to have dropped what they change, so a replica that cannot renew reads
//! the database instead, and forgets everything before using memory again.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Instant,
};

use chrono::{DateTime, Utc};
use sharedcare_proto::audit::v1::AuditEvent;

use super::{BoxFuture, ConsentStore, LoggedChange};
use crate::domain::{CareRelationship, Directive, PatientId};

/// Patients held at most unless configured (`consent.cache_max_patients`).
pub const DEFAULT_MAX_PATIENTS: usize = 100_000;

pub struct Cached<S> {
    inner: S,
    memory: Arc<Memory>,
}

/// The cache's contents and whether they may be used, shared with the
/// replica's change-log tail.
pub struct Memory {
    state: Mutex<State>,
}

struct State {
    /// Bumped by every drop: a read that began under another generation
    /// may have read what a write has since changed.
    generation: u64,
    patients: Lru,
    /// `None`: always usable (this process is the one writer). Otherwise
    /// the local instant until which this replica's lease surely holds.
    lease: Option<Option<Instant>>,
    /// The replica has closed: its lease is never renewed again.
    retired: bool,
}

/// A patient's entries; either list may not have been read yet.
#[derive(Default)]
struct Entry {
    relationships: Option<Vec<CareRelationship>>,
    directives: Option<Vec<Directive>>,
    used: u64,
}

/// Patients by recency of use: a map, and the order of last use (a tick
/// per use, so the first key of `order` is the least recently used).
struct Lru {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, Entry>,
    order: BTreeMap<u64, String>,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Lru {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The patient's entry, now the most recently used.
    fn get(&mut self, patient: &str) -> Option<&mut Entry> {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.entries.get_mut(patient)?;
        self.order.remove(&entry.used);
        entry.used = tick;
        self.order.insert(tick, patient.to_owned());
        Some(entry)
    }

    /// The patient's entry, created (evicting the least recently used
    /// patient when full) if absent; now the most recently used.
    fn entry(&mut self, patient: &str) -> &mut Entry {
        if !self.entries.contains_key(patient)
            && self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.entries.remove(&oldest);
        }
        // Ticks start at 1: a new entry's 0 is in no order.
        self.tick += 1;
        let entry = self.entries.entry(patient.to_owned()).or_default();
        self.order.remove(&entry.used);
        entry.used = self.tick;
        self.order.insert(self.tick, patient.to_owned());
        entry
    }

    fn remove(&mut self, patient: &str) {
        if let Some(entry) = self.entries.remove(patient) {
            self.order.remove(&entry.used);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

impl Memory {
    fn new(capacity: usize, leased: bool) -> Self {
        Memory {
            state: Mutex::new(State {
                generation: 0,
                patients: Lru::new(capacity),
                lease: leased.then_some(None),
                retired: false,
            }),
        }
    }

    /// Drops `patient` (every patient when `None`, as after a write whose
    /// outcome is not known).
    pub fn forget(&self, patient: Option<&str>) {
        if let Ok(mut state) = self.state.lock() {
            state.generation += 1;
            match patient {
                Some(p) => state.patients.remove(p),
                None => state.patients.clear(),
            }
        }
    }

    /// The lease was renewed by a request sent at `sent`, holding locally
    /// until `sent + valid_for`. After a lapse the memory may have missed
    /// changes (writers stopped waiting for this replica): it starts empty.
    pub fn leased(&self, sent: Instant, valid_for: std::time::Duration) {
        if let Ok(mut state) = self.state.lock() {
            let Some(lease) = state.lease else {
                return;
            };
            if state.retired {
                return;
            }
            if lease.is_none_or(|until| until <= Instant::now()) {
                state.generation += 1;
                state.patients.clear();
            }
            state.lease = Some(Some(sent + valid_for));
        }
    }

    /// The lease may not hold (not renewed, or the replica is closing):
    /// reads go to the store until it is renewed.
    pub fn lease_lost(&self) {
        if let Ok(mut state) = self.state.lock()
            && state.lease.is_some()
        {
            state.generation += 1;
            state.patients.clear();
            state.lease = Some(None);
        }
    }

    /// The replica has given its lease up for good (at close).
    pub fn retire(&self) {
        self.lease_lost();
        if let Ok(mut state) = self.state.lock() {
            state.retired = true;
        }
    }

    /// Whether the memory may answer now.
    fn usable(state: &State) -> bool {
        match state.lease {
            None => true,
            Some(until) => until.is_some_and(|until| Instant::now() < until),
        }
    }

    /// Patients held now.
    pub fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.patients.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<S: ConsentStore> Cached<S> {
    /// For the one process writing the store (SQLite, memory): always used.
    pub fn new(inner: S, max_patients: usize) -> Self {
        Cached {
            inner,
            memory: Arc::new(Memory::new(max_patients, false)),
        }
    }

    /// For a replica sharing PostgreSQL: used only while `Memory::leased`
    /// says the lease holds.
    pub fn leased(inner: S, max_patients: usize) -> Self {
        Cached {
            inner,
            memory: Arc::new(Memory::new(max_patients, true)),
        }
    }

    /// What the replica's tail and lease keeper act on.
    pub fn memory(&self) -> Arc<Memory> {
        self.memory.clone()
    }
}

impl<S> Cached<S> {
    /// `patient`'s list that `pick` chooses, or what `load` reads (called on
    /// a miss, or whenever the memory may not be used), kept if nothing was
    /// dropped while it was read.
    async fn list<'a, T: Clone>(
        &'a self,
        patient: &'a PatientId,
        pick: fn(&mut Entry) -> &mut Option<Vec<T>>,
        load: impl FnOnce() -> BoxFuture<'a, Vec<T>>,
    ) -> Result<Vec<T>, sharedcare_kit::Error> {
        let key = patient.as_str();
        let read_under = match self.state() {
            Some(mut state) if Memory::usable(&state) => {
                if let Some(hit) = state.patients.get(key).and_then(|e| pick(e).clone()) {
                    return Ok(hit);
                }
                Some(state.generation)
            }
            _ => None,
        };
        let read = load().await?;
        if let Some(mut state) = self.state()
            && Some(state.generation) == read_under
            && Memory::usable(&state)
        {
            *pick(state.patients.entry(key)) = Some(read.clone());
        }
        Ok(read)
    }

    fn state(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        self.memory.state.lock().ok()
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
            self.memory.forget(Some(&patient));
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
            self.memory
                .forget(result.as_ref().ok().map(|r| r.patient_id.as_str()));
            result
        })
    }

    fn list_relationships(&self, patient: &PatientId) -> BoxFuture<'_, Vec<CareRelationship>> {
        let patient = patient.clone();
        Box::pin(async move {
            self.list(
                &patient,
                |e| &mut e.relationships,
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
            self.memory.forget(Some(&patient));
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
            self.memory
                .forget(result.as_ref().ok().map(|d| d.patient_id.as_str()));
            result
        })
    }

    fn list_directives(&self, patient: &PatientId) -> BoxFuture<'_, Vec<Directive>> {
        let patient = patient.clone();
        Box::pin(async move {
            self.list(
                &patient,
                |e| &mut e.directives,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn held(lru: &Lru) -> Vec<&str> {
        lru.order.values().map(String::as_str).collect()
    }

    #[test]
    fn the_least_recently_used_patient_goes_first_and_the_bound_holds() {
        let mut lru = Lru::new(3);
        for p in ["a", "b", "c"] {
            lru.entry(p);
        }
        assert_eq!(held(&lru), ["a", "b", "c"]);
        // Using "a" makes "b" the least recently used.
        assert!(lru.get("a").is_some());
        lru.entry("d");
        assert_eq!(held(&lru), ["c", "a", "d"]);
        assert!(lru.get("b").is_none());
        // Filling an existing patient's other list evicts nobody.
        lru.entry("c");
        assert_eq!(held(&lru), ["a", "d", "c"]);
        for p in ["e", "f", "g", "h"] {
            lru.entry(p);
            assert_eq!(lru.len(), 3);
            assert_eq!(lru.order.len(), 3);
        }
        assert_eq!(held(&lru), ["f", "g", "h"]);
        lru.remove("g");
        assert_eq!(held(&lru), ["f", "h"]);
        lru.entry("i");
        assert_eq!(held(&lru), ["f", "h", "i"]);
    }

    #[test]
    fn one_patient_at_least_is_held() {
        let mut lru = Lru::new(0);
        lru.entry("a");
        lru.entry("b");
        assert_eq!(held(&lru), ["b"]);
    }

    #[test]
    fn leased_memory_is_used_only_while_the_lease_holds_and_starts_empty_after_a_lapse() {
        let memory = Memory::new(10, true);
        let usable = |m: &Memory| m.state.lock().map(|s| Memory::usable(&s)).unwrap_or(false);
        assert!(!usable(&memory), "no lease yet");
        memory.leased(Instant::now(), std::time::Duration::from_secs(60));
        assert!(usable(&memory));
        if let Ok(mut state) = memory.state.lock() {
            state.patients.entry("a");
        }
        // Renewed in time: kept.
        memory.leased(Instant::now(), std::time::Duration::from_secs(60));
        assert_eq!(memory.len(), 1);
        memory.lease_lost();
        assert!(!usable(&memory));
        assert!(memory.is_empty());
        // A lease that lapsed by the clock, too, is a lapse.
        if let Ok(mut state) = memory.state.lock() {
            state.patients.entry("b");
            state.lease = Some(Some(Instant::now()));
        }
        assert!(!usable(&memory));
        memory.leased(Instant::now(), std::time::Duration::from_secs(60));
        assert!(memory.is_empty());
        assert!(
            Memory::new(10, false)
                .state
                .lock()
                .is_ok_and(|s| Memory::usable(&s))
        );
    }
}
