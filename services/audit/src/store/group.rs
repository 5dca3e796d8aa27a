//! Group commit: appends from every caller go through one sequencer task,
//! which takes whatever is queued, appends it to the inner store as one batch
//! (one transaction, one fsync), then answers each caller with its own part.
//! A decorator: it wraps any [`AuditLogStore`] and is one itself.

use std::{collections::HashMap, sync::Arc, time::Instant};

use sharedcare_kit::{Error, error::Code, group::next_group};
use tokio::sync::{mpsc, oneshot};

use super::{Appended, AuditLogStore, BoxFuture, Page};
use crate::domain::{EncodedEvent, Entry, Hash, PageSize, PageToken, PatientId, merkle::NodeAddr};

/// Most events committed in one transaction (the store chunks its inserts).
const MAX_GROUP_EVENTS: usize = 2000;

struct Request {
    events: Vec<EncodedEvent>,
    /// A single Append (its errors name `event`), not an AppendBatch.
    single: bool,
    done: oneshot::Sender<Result<Vec<Appended>, Error>>,
}

/// The sequencer in front of a store.
pub struct GroupCommit {
    inner: Arc<dyn AuditLogStore>,
    requests: mpsc::Sender<Request>,
}

impl GroupCommit {
    pub fn new(inner: Arc<dyn AuditLogStore>) -> Self {
        let (requests, queue) = mpsc::channel(8192);
        tokio::spawn(sequencer(inner.clone(), queue));
        GroupCommit { inner, requests }
    }

    async fn submit(
        &self,
        events: Vec<EncodedEvent>,
        single: bool,
    ) -> Result<Vec<Appended>, Error> {
        let (done, answer) = oneshot::channel();
        self.requests
            .send(Request {
                events,
                single,
                done,
            })
            .await
            .map_err(|_| Error::unavailable("the audit log is shutting down"))?;
        answer
            .await
            .map_err(|_| Error::unavailable("the audit log is shutting down"))?
    }
}

async fn sequencer(inner: Arc<dyn AuditLogStore>, mut queue: mpsc::Receiver<Request>) {
    while let Some(group) =
        next_group(&mut queue, MAX_GROUP_EVENTS, |r: &Request| r.events.len()).await
    {
        commit(inner.as_ref(), group).await;
    }
}

/// One transaction for the whole group; should one caller's events be
/// refused (a conflicting replay), each caller is appended on its own so
/// nobody else's append fails with it.
async fn commit(inner: &dyn AuditLogStore, group: Vec<Request>) {
    let inner = &Measured(inner);
    if group.len() == 1 {
        for request in group {
            let result = alone(inner, request.events, request.single).await;
            let _ = request.done.send(result);
        }
        return;
    }
    let sizes: Vec<usize> = group.iter().map(|r| r.events.len()).collect();
    let all: Vec<EncodedEvent> = group.iter().flat_map(|r| r.events.clone()).collect();
    match inner.append_batch(all).await {
        Ok(mut appended) => {
            for (request, size) in group.into_iter().zip(sizes) {
                let rest = appended.split_off(size);
                let _ = request.done.send(Ok(appended));
                appended = rest;
            }
        }
        Err(e) if matches!(e.code, Code::AlreadyExists | Code::InvalidArgument) => {
            for request in group {
                let result = alone(inner, request.events, request.single).await;
                let _ = request.done.send(result);
            }
        }
        Err(e) => {
            for request in group {
                let _ = request.done.send(Err(e.clone()));
            }
        }
    }
}

async fn alone(
    inner: &Measured<'_>,
    mut events: Vec<EncodedEvent>,
    single: bool,
) -> Result<Vec<Appended>, Error> {
    match (single, events.pop()) {
        (true, Some(event)) if events.is_empty() => Ok(vec![inner.append(event).await?]),
        (_, last) => {
            events.extend(last);
            inner.append_batch(events).await
        }
    }
}

/// The inner store's appends, each one commit, timed and counted:
/// `sharedcare_audit_commit_duration_seconds` and
/// `sharedcare_audit_batch_size` (events per commit).
struct Measured<'a>(&'a dyn AuditLogStore);

impl Measured<'_> {
    async fn append(&self, event: EncodedEvent) -> Result<Appended, Error> {
        let started = Instant::now();
        let appended = self.0.append(event).await;
        committed(appended.is_ok(), 1, started);
        appended
    }

    async fn append_batch(&self, events: Vec<EncodedEvent>) -> Result<Vec<Appended>, Error> {
        let started = Instant::now();
        let count = events.len();
        let appended = self.0.append_batch(events).await;
        committed(appended.is_ok(), count, started);
        appended
    }
}

/// Records a commit that succeeded (a refused one committed nothing).
fn committed(ok: bool, events: usize, started: Instant) {
    use sharedcare_kit::metrics::{AUDIT_BATCH_SIZE, AUDIT_COMMIT_DURATION};
    if ok {
        let service = crate::SERVICE_NAME;
        metrics::histogram!(AUDIT_COMMIT_DURATION, "service" => service)
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!(AUDIT_BATCH_SIZE, "service" => service).record(events as f64);
    }
}

/// The log's size, read at each scrape: `sharedcare_audit_tree_size`.
pub struct TreeSize(pub Arc<dyn AuditLogStore>);

impl sharedcare_kit::metrics::Sampler for TreeSize {
    fn sample(&self, service: &'static str) -> sharedcare_kit::peers::BoxFuture<'_, ()> {
        Box::pin(async move {
            let size = self.0.tree_size().await?;
            metrics::gauge!(sharedcare_kit::metrics::AUDIT_TREE_SIZE, "service" => service)
                .set(size as f64);
            Ok(())
        })
    }
}

impl AuditLogStore for GroupCommit {
    fn append(&self, event: EncodedEvent) -> BoxFuture<'_, Appended> {
        Box::pin(async move {
            self.submit(vec![event], true)
                .await?
                .pop()
                .ok_or_else(|| Error::internal("appending to the audit log", "no entry"))
        })
    }

    fn append_batch(&self, events: Vec<EncodedEvent>) -> BoxFuture<'_, Vec<Appended>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            self.submit(events, false).await
        })
    }

    fn patient_entries(
        &self,
        patient: PatientId,
        after: Option<PageToken>,
        size: PageSize,
    ) -> BoxFuture<'_, Page> {
        self.inner.patient_entries(patient, after, size)
    }

    fn break_glass_entries(
        &self,
        organisation: Option<String>,
        after: Option<PageToken>,
        size: PageSize,
    ) -> BoxFuture<'_, Page> {
        self.inner.break_glass_entries(organisation, after, size)
    }

    fn entries(&self, after_sequence: u64, limit: u64) -> BoxFuture<'_, Vec<Entry>> {
        self.inner.entries(after_sequence, limit)
    }

    fn entry(&self, sequence: u64) -> BoxFuture<'_, Option<Entry>> {
        self.inner.entry(sequence)
    }

    fn tree_size(&self) -> BoxFuture<'_, u64> {
        self.inner.tree_size()
    }

    fn nodes(&self, addrs: Vec<NodeAddr>) -> BoxFuture<'_, HashMap<NodeAddr, Hash>> {
        self.inner.nodes(addrs)
    }
}
