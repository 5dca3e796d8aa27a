//! Encryption at rest as a wrapper around any backend: each version's
//! resource is sealed (AES-256-GCM under a fresh data key wrapped by the
//! current key-encryption key, `kit::crypto`) before the backend sees it,
//! bound to its record id, version and patient, and opened only when the
//! service asks — after consent has permitted the access.

use std::sync::Arc;

use sharedcare_kit::crypto::Keyring;

use super::{
    Body, BoxFuture, Change, Found, IdempotencyRow, RecordMeta, RecordStore, SearchQuery, SortKey,
    Stored, Write,
};
use crate::domain::{PatientId, RecordId};

pub struct Encrypted<S> {
    inner: S,
    keys: Arc<Keyring>,
}

impl<S: RecordStore> Encrypted<S> {
    pub fn new(inner: S, keys: Keyring) -> Self {
        Encrypted {
            inner,
            keys: Arc::new(keys),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn close(&self, stored: Stored) -> Stored {
        let body = match stored.body {
            Body::Clear(bytes) => Body::Sealed {
                aad: associated_data(&stored.meta),
                bytes,
                keys: self.keys.clone(),
            },
            sealed => sealed,
        };
        Stored {
            meta: stored.meta,
            body,
        }
    }
}

/// What a re-wrap did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrapped {
    /// Versions looked at.
    pub examined: u64,
    /// Versions whose data key was re-wrapped under the current KEK.
    pub rewrapped: u64,
}

/// Re-wraps every version's data key under the current KEK of `keys`, in
/// pages, online: a version written meanwhile is sealed under the current
/// KEK already, and versions never change otherwise (a body replaced
/// meanwhile is left to the next run). `progress` hears the running count.
pub async fn rewrap(
    store: &dyn RecordStore,
    keys: &Keyring,
    mut progress: impl FnMut(Rewrapped),
) -> Result<Rewrapped, sharedcare_kit::Error> {
    const PAGE: usize = 500;
    let mut done = Rewrapped::default();
    let mut after: Option<(RecordId, i64)> = None;
    loop {
        let page = store.scan(after.as_ref(), PAGE).await?;
        let full = page.len() == PAGE;
        for stored in page {
            done.examined += 1;
            after = Some((stored.meta.id.clone(), stored.meta.version));
            let Body::Clear(bytes) = stored.body else {
                continue;
            };
            if bytes.is_empty() {
                continue; // a tombstone
            }
            if let Some(body) = keys.rewrap(&bytes)?
                && store
                    .replace_body(&stored.meta.id, stored.meta.version, &bytes, body)
                    .await?
            {
                done.rewrapped += 1;
            }
        }
        progress(done);
        if !full {
            return Ok(done);
        }
    }
}

/// Binds a sealed resource to its place: moved to another record, version
/// or patient, it no longer opens.
fn associated_data(meta: &RecordMeta) -> Vec<u8> {
    format!(
        "sharedcare.records/{}/{}/{}",
        meta.id.as_str(),
        meta.version,
        meta.patient_id.as_str()
    )
    .into_bytes()
}

impl<S: RecordStore> RecordStore for Encrypted<S> {
    fn audit_in_write(&self) -> bool {
        self.inner.audit_in_write()
    }

    fn write(&self, mut write: Write) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // A tombstone has nothing to seal.
            if !write.body.is_empty() {
                write.body = self.keys.seal(&write.body, &associated_data(&write.meta))?;
            }
            self.inner.write(write).await
        })
    }

    fn current(&self, patient: &PatientId, id: &RecordId) -> BoxFuture<'_, Option<Stored>> {
        let read = self.inner.current(patient, id);
        Box::pin(async move { Ok(read.await?.map(|s| self.close(s))) })
    }

    fn version(
        &self,
        patient: &PatientId,
        id: &RecordId,
        version: i64,
    ) -> BoxFuture<'_, Option<Stored>> {
        let read = self.inner.version(patient, id, version);
        Box::pin(async move { Ok(read.await?.map(|s| self.close(s))) })
    }

    fn history(
        &self,
        patient: &PatientId,
        id: &RecordId,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Vec<Stored>> {
        let read = self.inner.history(patient, id, before, limit);
        Box::pin(async move { Ok(read.await?.into_iter().map(|s| self.close(s)).collect()) })
    }

    fn search<'a>(
        &'a self,
        query: &'a SearchQuery,
        after: Option<&'a SortKey>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Found>> {
        Box::pin(async move {
            Ok(self
                .inner
                .search(query, after, limit)
                .await?
                .into_iter()
                .map(|f| Found {
                    stored: self.close(f.stored),
                    key: f.key,
                })
                .collect())
        })
    }

    fn idempotency(&self, key: &str) -> BoxFuture<'_, Option<IdempotencyRow>> {
        self.inner.idempotency(key)
    }

    fn changes(&self, after: i64, limit: usize) -> BoxFuture<'_, Vec<Change>> {
        self.inner.changes(after, limit)
    }

    // Maintenance sees the sealed bodies, as the inner store holds them.
    fn scan<'a>(
        &'a self,
        after: Option<&'a (RecordId, i64)>,
        limit: usize,
    ) -> BoxFuture<'a, Vec<Stored>> {
        self.inner.scan(after, limit)
    }

    fn replace_body<'a>(
        &'a self,
        id: &'a RecordId,
        version: i64,
        expected: &'a [u8],
        body: Vec<u8>,
    ) -> BoxFuture<'a, bool> {
        self.inner.replace_body(id, version, expected, body)
    }
}
