//! The `memory` backend: the log and its Merkle tree in this process's
//! memory, lost when it stops (tests, demos). Held to the same conformance
//! suite as the SQL store, and put behind the same group committer.
//!
//! The tree grows as the SQL store grows it, through the domain's
//! [`Frontier`], and keeps exactly the nodes that store keeps: the same
//! entries give the same leaves, roots and proofs.

use std::collections::HashMap;

use chrono::Utc;
use sharedcare_kit::{Error, memory::MemoryState};

use super::{APPENDING, Appended, AuditLogStore, BoxFuture, Naming, Page};
use crate::domain::{
    EncodedEvent, Entry, EventId, Hash, PageSize, PageToken, PatientId,
    merkle::{Frontier, NodeAddr},
};

#[derive(Default)]
pub struct MemoryStore {
    log: MemoryState<Log>,
}

struct Log {
    /// Entry n at index n - 1.
    entries: Vec<Entry>,
    /// Event id → its entry's sequence.
    by_event_id: HashMap<EventId, u64>,
    /// Patient id → their entries' sequences, ascending.
    by_patient: HashMap<PatientId, Vec<u64>>,
    /// Acting organisation → its break-glass entries' sequences, ascending.
    break_glass_by: HashMap<String, Vec<u64>>,
    /// Every break-glass entry's sequence, ascending.
    break_glass: Vec<u64>,
    /// Every node formed so far, leaves included.
    nodes: HashMap<NodeAddr, Hash>,
    frontier: Frontier,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            entries: Vec::new(),
            by_event_id: HashMap::new(),
            by_patient: HashMap::new(),
            break_glass_by: HashMap::new(),
            break_glass: Vec::new(),
            nodes: HashMap::new(),
            frontier: Frontier::empty(),
        }
    }
}

impl Log {
    fn entry(&self, sequence: u64) -> Option<&Entry> {
        let index = usize::try_from(sequence.checked_sub(1)?).ok()?;
        self.entries.get(index)
    }

    /// Appends `events`, all or none, as the SQL store does: replays of
    /// logged or earlier-in-the-batch events are duplicates, a reused id
    /// with other content refuses the whole batch.
    fn append(
        &mut self,
        events: Vec<EncodedEvent>,
        naming: Naming,
    ) -> Result<Vec<Appended>, Error> {
        let size = self.entries.len() as u64;
        let now = Utc::now();
        let mut appended = Vec::with_capacity(events.len());
        let mut new: Vec<(Entry, Option<String>)> = Vec::new();
        let mut in_batch: HashMap<EventId, usize> = HashMap::new();
        for (index, event) in events.into_iter().enumerate() {
            let existing = match in_batch.get(&event.event_id) {
                Some(&i) => new.get(i).map(|(entry, _)| entry),
                None => self
                    .by_event_id
                    .get(&event.event_id)
                    .and_then(|&sequence| self.entry(sequence)),
            };
            if let Some(existing) = existing {
                if !event.is_replay_of(existing) {
                    return Err(naming.conflict(index));
                }
                appended.push(Appended {
                    entry: existing.clone(),
                    duplicate: true,
                });
                continue;
            }
            let break_glass_by = event.break_glass_by.clone();
            let entry = Entry::new(size + 1 + new.len() as u64, event, now);
            in_batch.insert(entry.event_id.clone(), new.len());
            appended.push(Appended {
                entry: entry.clone(),
                duplicate: false,
            });
            new.push((entry, break_glass_by));
        }
        // Extending a copy: a failure leaves the log as it was.
        let mut frontier = self.frontier.clone();
        let leaves: Vec<Hash> = new.iter().map(|(entry, _)| entry.leaf_hash()).collect();
        let formed = frontier
            .extend(&leaves)
            .map_err(|e| Error::internal(APPENDING, e))?;
        self.frontier = frontier;
        self.nodes.extend(formed);
        for (entry, break_glass_by) in new {
            if let Some(organisation) = break_glass_by {
                self.break_glass_by
                    .entry(organisation)
                    .or_default()
                    .push(entry.sequence);
                self.break_glass.push(entry.sequence);
            }
            self.by_event_id
                .insert(entry.event_id.clone(), entry.sequence);
            self.by_patient
                .entry(entry.patient_id.clone())
                .or_default()
                .push(entry.sequence);
            self.entries.push(entry);
        }
        Ok(appended)
    }

    /// A page of the entries numbered `sequences` (ascending), after `after`.
    fn page(&self, sequences: &[u64], after: Option<PageToken>, size: PageSize) -> Page {
        let after = after.map_or(0, PageToken::after);
        let start = sequences.partition_point(|&s| s <= after);
        let size = usize::try_from(size.get()).unwrap_or(usize::MAX);
        let rest = &sequences[start..];
        let entries: Vec<Entry> = rest
            .iter()
            .take(size)
            .filter_map(|&s| self.entry(s).cloned())
            .collect();
        let next = match (rest.len() > size, entries.last()) {
            (true, Some(last)) => Some(PageToken::after_sequence(last.sequence)),
            _ => None,
        };
        Page { entries, next }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

impl AuditLogStore for MemoryStore {
    fn append(&self, event: EncodedEvent) -> BoxFuture<'_, Appended> {
        let appended = self.log.lock().and_then(|mut log| {
            log.append(vec![event], Naming::Single)?
                .pop()
                .ok_or_else(|| Error::internal(APPENDING, "no entry written"))
        });
        Box::pin(async move { appended })
    }

    fn append_batch(&self, events: Vec<EncodedEvent>) -> BoxFuture<'_, Vec<Appended>> {
        let appended = self
            .log
            .lock()
            .and_then(|mut log| log.append(events, Naming::Batch));
        Box::pin(async move { appended })
    }

    fn patient_entries(
        &self,
        patient: PatientId,
        after: Option<PageToken>,
        size: PageSize,
    ) -> BoxFuture<'_, Page> {
        let page = self.log.lock().map(|log| {
            let sequences = log.by_patient.get(&patient).map_or(&[][..], Vec::as_slice);
            log.page(sequences, after, size)
        });
        Box::pin(async move { page })
    }

    fn break_glass_entries(
        &self,
        organisation: Option<String>,
        after: Option<PageToken>,
        size: PageSize,
    ) -> BoxFuture<'_, Page> {
        let page = self.log.lock().map(|log| {
            let sequences = match &organisation {
                Some(organisation) => log
                    .break_glass_by
                    .get(organisation)
                    .map_or(&[][..], Vec::as_slice),
                None => log.break_glass.as_slice(),
            };
            log.page(sequences, after, size)
        });
        Box::pin(async move { page })
    }

    fn entries(&self, after_sequence: u64, limit: u64) -> BoxFuture<'_, Vec<Entry>> {
        let entries = self.log.lock().map(|log| {
            let skip = usize::try_from(after_sequence).unwrap_or(usize::MAX);
            let take = usize::try_from(limit).unwrap_or(usize::MAX);
            log.entries.iter().skip(skip).take(take).cloned().collect()
        });
        Box::pin(async move { entries })
    }

    fn entry(&self, sequence: u64) -> BoxFuture<'_, Option<Entry>> {
        let entry = self.log.lock().map(|log| log.entry(sequence).cloned());
        Box::pin(async move { entry })
    }

    fn tree_size(&self) -> BoxFuture<'_, u64> {
        let size = self.log.lock().map(|log| log.frontier.size());
        Box::pin(async move { size })
    }

    fn nodes(&self, addrs: Vec<NodeAddr>) -> BoxFuture<'_, HashMap<NodeAddr, Hash>> {
        let nodes = self.log.lock().map(|log| {
            addrs
                .into_iter()
                .filter_map(|addr| log.nodes.get(&addr).map(|hash| (addr, *hash)))
                .collect()
        });
        Box::pin(async move { nodes })
    }
}
