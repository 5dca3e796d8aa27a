//! The `memory` backend: everything in one process's memory, lost when it
//! stops. A real backend for tests and demos, held to the same conformance
//! suite as the others.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Mutex, MutexGuard},
};

use sharedcare_kit::Error;

use super::{
    Body, BoxFuture, Change, Found, IdempotencyRow, RecordMeta, RecordStore, SearchQuery, SortKey,
    Stored, Write, stale, within,
};
use crate::domain::{PatientId, RecordId, SearchIndex, TokenParam};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every version of every record, oldest first.
    versions: HashMap<String, Vec<(RecordMeta, Vec<u8>)>>,
    /// The current version's index, for records not deleted.
    current: HashMap<String, Indexed>,
    /// Per patient, the current records in result order.
    by_patient: HashMap<String, BTreeSet<SortKey>>,
    idempotency: HashMap<String, IdempotencyRow>,
    changes: Vec<Change>,
}

struct Indexed {
    meta: RecordMeta,
    index: SearchIndex,
    key: SortKey,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, Error> {
        self.inner
            .lock()
            .map_err(|_| Error::internal("the memory store", "a writer panicked"))
    }
}

fn stored(meta: &RecordMeta, body: &[u8]) -> Stored {
    Stored {
        meta: meta.clone(),
        body: Body::Clear(body.to_vec()),
    }
}

impl Inner {
    fn of_patient(
        &self,
        patient: &PatientId,
        id: &RecordId,
    ) -> Option<&Vec<(RecordMeta, Vec<u8>)>> {
        self.versions
            .get(id.as_str())
            .filter(|v| v.first().is_some_and(|(m, _)| &m.patient_id == patient))
    }

    fn check(&self, write: &Write) -> Result<(), Error> {
        if let Some(row) = &write.idempotency
            && self.idempotency.contains_key(&row.key)
        {
            return Err(Error::already_exists("idempotency_key was already used"));
        }
        let existing = self.versions.get(write.meta.id.as_str());
        match (write.meta.version, existing) {
            (1, None) => Ok(()),
            (1, Some(_)) => Err(Error::already_exists("a record with this id exists")),
            (_, None) => Err(Error::not_found("no such record for this patient")),
            (n, Some(versions)) => {
                let Some((current, _)) = versions.last() else {
                    return Err(Error::not_found("no such record for this patient"));
                };
                if current.patient_id != write.meta.patient_id {
                    return Err(Error::not_found("no such record for this patient"));
                }
                if current.version != n - 1 {
                    return Err(stale(current.version));
                }
                Ok(())
            }
        }
    }
}

impl RecordStore for MemoryStore {
    fn audit_in_write(&self) -> bool {
        false
    }

    fn write(&self, write: Write) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut inner = self.lock()?;
            inner.check(&write)?;
            let key = write.sort_key();
            let id = write.meta.id.as_str().to_owned();
            let patient = write.meta.patient_id.as_str().to_owned();
            if let Some(old) = inner.current.remove(&id)
                && let Some(keys) = inner.by_patient.get_mut(&patient)
            {
                keys.remove(&old.key);
            }
            if !write.meta.deleted {
                inner
                    .by_patient
                    .entry(patient)
                    .or_default()
                    .insert(key.clone());
                inner.current.insert(
                    id.clone(),
                    Indexed {
                        meta: write.meta.clone(),
                        index: write.index,
                        key,
                    },
                );
            }
            if let Some(row) = write.idempotency {
                inner.idempotency.insert(row.key.clone(), row);
            }
            let sequence = inner.changes.len() as i64 + 1;
            inner.changes.push(Change {
                sequence,
                meta: write.meta.clone(),
            });
            inner
                .versions
                .entry(id)
                .or_default()
                .push((write.meta, write.body));
            Ok(())
        })
    }

    fn current(&self, patient: &PatientId, id: &RecordId) -> BoxFuture<'_, Option<Stored>> {
        let found = self.lock().map(|inner| {
            inner
                .of_patient(patient, id)
                .and_then(|v| v.last())
                .map(|(m, b)| stored(m, b))
        });
        Box::pin(async move { found })
    }

    fn version(
        &self,
        patient: &PatientId,
        id: &RecordId,
        version: i64,
    ) -> BoxFuture<'_, Option<Stored>> {
        let found = self.lock().map(|inner| {
            inner
                .of_patient(patient, id)
                .and_then(|v| v.iter().find(|(m, _)| m.version == version))
                .map(|(m, b)| stored(m, b))
        });
        Box::pin(async move { found })
    }

    fn history(
        &self,
        patient: &PatientId,
        id: &RecordId,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Vec<Stored>> {
        let found = self.lock().map(|inner| {
            inner
                .of_patient(patient, id)
                .map(|versions| {
                    versions
                        .iter()
                        .rev()
                        .filter(|(m, _)| before.is_none_or(|b| m.version < b))
                        .take(limit)
                        .map(|(m, b)| stored(m, b))
                        .collect()
                })
                .unwrap_or_default()
        });
        Box::pin(async move { found })
    }

    fn search<'a>(
        &'a self,
        query: &'a SearchQuery,
        after: Option<&'a SortKey>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Found>> {
        Box::pin(async move {
            let inner = self.lock()?;
            let Some(keys) = inner.by_patient.get(query.patient_id.as_str()) else {
                return Ok(Vec::new());
            };
            let mut found = Vec::new();
            for key in keys.iter().rev() {
                if found.len() == limit {
                    break;
                }
                if after.is_some_and(|a| key >= a) {
                    continue;
                }
                let Some(indexed) = inner.current.get(&key.record_id) else {
                    continue;
                };
                if !matches(query, indexed) {
                    continue;
                }
                let Some((meta, body)) = inner.versions.get(&key.record_id).and_then(|v| v.last())
                else {
                    continue;
                };
                found.push(Found {
                    stored: stored(meta, body),
                    key: key.clone(),
                });
            }
            Ok(found)
        })
    }

    fn idempotency(&self, key: &str) -> BoxFuture<'_, Option<IdempotencyRow>> {
        let found = self.lock().map(|inner| inner.idempotency.get(key).cloned());
        Box::pin(async move { found })
    }

    fn scan<'a>(
        &'a self,
        after: Option<&'a (RecordId, i64)>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Stored>> {
        let found = self.lock().map(|inner| {
            let mut ids: Vec<&String> = inner.versions.keys().collect();
            ids.sort();
            let mut out = Vec::new();
            for id in ids {
                for (meta, body) in &inner.versions[id] {
                    let key = (meta.id.clone(), meta.version);
                    if after.is_some_and(|a| (&key.0.as_str(), key.1) <= (&a.0.as_str(), a.1)) {
                        continue;
                    }
                    if out.len() == limit {
                        return out;
                    }
                    out.push(stored(meta, body));
                }
            }
            out
        });
        Box::pin(async move { found })
    }

    fn replace_body<'a>(
        &'a self,
        id: &'a RecordId,
        version: i64,
        expected: &'a [u8],
        body: Vec<u8>,
    ) -> BoxFuture<'a, bool> {
        let replaced = self.lock().map(|mut inner| {
            let Some(slot) = inner
                .versions
                .get_mut(id.as_str())
                .and_then(|v| v.iter_mut().find(|(m, _)| m.version == version))
            else {
                return false;
            };
            if slot.1 != expected {
                return false;
            }
            slot.1 = body;
            true
        });
        Box::pin(async move { replaced })
    }

    fn changes(&self, after: i64, limit: usize) -> BoxFuture<'_, Vec<Change>> {
        let found = self.lock().map(|inner| {
            // Sequences are 1.. in order: the entry after `after` is at `after`.
            let start = usize::try_from(after.max(0)).unwrap_or(usize::MAX);
            inner
                .changes
                .iter()
                .skip(start)
                .take(limit)
                .cloned()
                .collect()
        });
        Box::pin(async move { found })
    }
}

fn matches(query: &SearchQuery, indexed: &Indexed) -> bool {
    let meta = &indexed.meta;
    let any_token = |param: TokenParam, wanted: &[crate::domain::TokenQuery]| {
        wanted.is_empty()
            || indexed
                .index
                .tokens
                .iter()
                .any(|t| t.param == param && wanted.iter().any(|w| w.matches(t)))
    };
    (query.resource_types.is_empty() || query.resource_types.contains(&meta.resource_type))
        && query.categories.contains(&meta.category)
        && within(
            query,
            indexed
                .index
                .date
                .as_ref()
                .map(|d| (d.start.timestamp_micros(), d.end.timestamp_micros())),
            meta.last_updated.timestamp_micros(),
        )
        && any_token(TokenParam::Code, &query.codes)
        && any_token(TokenParam::Category, &query.fhir_categories)
}
