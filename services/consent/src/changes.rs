//! consent's change feed: which patients' relationships or directives have
//! just changed, for services that keep consent's decisions (records drops
//! its cached decisions for the patient; see `kit::decisions`).
//!
//! Every committed change must reach every open stream, or the stream must
//! end — a watcher that misses a change would go on using a decision that no
//! longer holds. So:
//! - on SQLite this process is the one writer: [`Notifying`] publishes each
//!   change once the store (and the cache around it) has returned;
//! - on PostgreSQL every replica writes: the store sends `pg_notify` in the
//!   change's own transaction, and each replica's listener republishes what
//!   the database delivers. While the listener is not connected the replica
//!   refuses new streams, and when it loses the connection (notifications
//!   may have been missed) it ends every open stream.
//!
//! A change applies to the very next request: [`Notifying`] answers the
//! writer only once every stream open on this replica has acknowledged the
//! change (the watcher has dropped what it kept). A stream that has not
//! within a heartbeat interval is ended, and the writer waits until that
//! watcher, hearing nothing, must have stopped using what it kept. Streams
//! on other PostgreSQL replicas hear the change as soon as the database
//! delivers it, without that wait.
//!
//! A stream starts with READY, reports PATIENT changes, sends a HEARTBEAT
//! every interval so a watcher can tell a live stream from a silent dead
//! one, and ends with UNAVAILABLE when it cannot promise it missed nothing.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream::BoxStream};
use sea_orm::sqlx::{PgPool, postgres::PgListener};
use sharedcare_kit::Error;
use sharedcare_proto::{audit::v1::AuditEvent, consent::v1 as pb};
use tokio::sync::{Notify, broadcast};
use tonic::{Status, Streaming};

use crate::{
    domain::{CareRelationship, Directive, PatientId},
    store::{BoxFuture, ConsentStore},
};

/// The PostgreSQL channel the store notifies on (payload: the patient id).
pub const PG_CHANNEL: &str = "sharedcare_consent_changes";

/// Changes a slow stream may fall behind by before it is ended.
const BACKLOG: usize = 4096;

/// Heartbeat intervals of silence after which a watcher gives up on a
/// stream (`kit::decisions` uses the same), plus one for the way there.
const WATCHER_GIVES_UP_AFTER: u32 = 3 + 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This patient's consent changed.
    Patient(String),
    /// Changes may have been missed: every stream ends.
    Lost,
    /// consent is shutting down: every stream ends.
    Closing,
}

/// One open stream, as the writers waiting on acknowledgements see it.
struct Watcher {
    /// Starts at the last sequence published before the stream began: the
    /// stream owes nothing for those.
    acknowledged: AtomicU64,
    cut: Notify,
}

pub struct ChangeFeed {
    changes: broadcast::Sender<(u64, Change)>,
    /// The last sequence published; held while publishing, so sequences go
    /// out in order.
    last: Mutex<u64>,
    /// Whether every committed change reaches `changes` right now.
    hearing: AtomicBool,
    /// Whether this process makes every change itself (SQLite).
    in_process: bool,
    heartbeat: Duration,
    watchers: Mutex<HashMap<u64, Arc<Watcher>>>,
    next_watcher: AtomicU64,
    /// Woken by every acknowledgement and every stream's end.
    progress: Notify,
}

impl ChangeFeed {
    fn new(in_process: bool, heartbeat: Duration) -> Self {
        ChangeFeed {
            changes: broadcast::channel(BACKLOG).0,
            last: Mutex::new(0),
            hearing: AtomicBool::new(in_process),
            in_process,
            heartbeat,
            watchers: Mutex::new(HashMap::new()),
            next_watcher: AtomicU64::new(0),
            progress: Notify::new(),
        }
    }

    /// For a process that makes every change itself (SQLite).
    pub fn in_process(heartbeat: Duration) -> Arc<Self> {
        Arc::new(Self::new(true, heartbeat))
    }

    /// For replicas sharing PostgreSQL: hears the store's notifications on
    /// one connection of `pool`, reconnecting when it drops, until the feed
    /// is dropped or the pool closed.
    pub fn postgres(pool: PgPool, heartbeat: Duration) -> Arc<Self> {
        let feed = Arc::new(Self::new(false, heartbeat));
        tokio::spawn(listen(pool, Arc::downgrade(&feed)));
        feed
    }

    /// Publishes `change` to every stream; returns its sequence.
    pub fn publish(&self, change: Change) -> u64 {
        // A panic elsewhere must not stop changes being reported.
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last += 1;
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send((*last, change));
        *last
    }

    /// Ends every stream (at shutdown): watchers stop using what they kept.
    pub fn close(&self) {
        self.hearing.store(false, Ordering::SeqCst);
        self.publish(Change::Closing);
    }

    fn set_hearing(&self, hearing: bool) {
        self.hearing.store(hearing, Ordering::SeqCst);
        if !hearing {
            self.publish(Change::Lost);
        }
    }

    /// Waits until every stream that was open when change `sequence` was
    /// published has acknowledged it; ends those that do not in time and
    /// waits until their watchers must have given up.
    async fn settle(&self, sequence: u64) {
        let deadline = tokio::time::Instant::now() + self.heartbeat;
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let waiting: Vec<Arc<Watcher>> = self
                .watchers
                .lock()
                .map(|watchers| {
                    watchers
                        .values()
                        .filter(|w| w.acknowledged.load(Ordering::SeqCst) < sequence)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if waiting.is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                tracing::warn!(
                    streams = waiting.len(),
                    "change streams did not acknowledge a change in time; ending them"
                );
                for watcher in waiting {
                    watcher.cut.notify_one();
                }
                tokio::time::sleep(self.heartbeat * WATCHER_GIVES_UP_AFTER).await;
                return;
            }
        }
    }

    /// A new watch stream: READY, then every change, with heartbeats;
    /// `acks` carries the watcher's acknowledgements.
    pub fn watch(
        self: &Arc<Self>,
        mut acks: Streaming<pb::WatchChangesRequest>,
    ) -> Result<BoxStream<'static, Result<pb::WatchChangesResponse, Status>>, Error> {
        // Subscribe and register together, between two publications.
        let (mut changes, id, watcher) = {
            let last = self
                .last
                .lock()
                .map_err(|_| Error::unavailable("the change feed is unusable"))?;
            let watcher = Arc::new(Watcher {
                acknowledged: AtomicU64::new(*last),
                cut: Notify::new(),
            });
            let id = self.next_watcher.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut watchers) = self.watchers.lock() {
                watchers.insert(id, watcher.clone());
            }
            (self.changes.subscribe(), id, watcher)
        };
        let registered = Registered {
            feed: self.clone(),
            id,
        };
        if !self.hearing.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                "consent is not hearing changes from its database right now; watch again shortly",
            ));
        }
        let heartbeat = self.heartbeat;
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let _registered = registered;
            let ready = pb::WatchChangesResponse {
                kind: pb::ChangeKind::Ready as i32,
                heartbeat_interval_ms: u32::try_from(heartbeat.as_millis()).unwrap_or(u32::MAX),
                ..Default::default()
            };
            if sender.send(Ok(ready)).await.is_err() {
                return;
            }
            let mut ticks = tokio::time::interval(heartbeat);
            ticks.reset();
            // The latest sequence this stream has reported: nothing later
            // can have been acted on.
            let mut reported = watcher.acknowledged.load(Ordering::SeqCst);
            let ended = |why: &str| Err(Status::unavailable(why.to_owned()));
            loop {
                let message = tokio::select! {
                    change = changes.recv() => match change {
                        Ok((sequence, Change::Patient(patient_id))) => {
                            reported = sequence;
                            Ok(pb::WatchChangesResponse {
                                kind: pb::ChangeKind::Patient as i32,
                                patient_id,
                                sequence,
                                ..Default::default()
                            })
                        }
                        Ok((_, Change::Lost)) | Err(broadcast::error::RecvError::Lagged(_)) => ended(
                            "consent may have missed changes: drop what you derived from its \
                             decisions and watch again",
                        ),
                        Ok((_, Change::Closing)) => ended("consent is shutting down; watch another replica"),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    ack = acks.next() => match ack {
                        Some(Ok(ack)) if ack.acknowledged_sequence > reported => {
                            Err(Status::invalid_argument(format!(
                                "acknowledged_sequence: {} was never reported on this stream (the \
                                 latest is {reported})",
                                ack.acknowledged_sequence
                            )))
                        }
                        Some(Ok(ack)) => {
                            watcher.acknowledged.fetch_max(ack.acknowledged_sequence, Ordering::SeqCst);
                            _registered.feed.progress.notify_waiters();
                            continue;
                        }
                        // The watcher has gone.
                        Some(Err(_)) | None => return,
                    },
                    _ = ticks.tick() => Ok(pb::WatchChangesResponse {
                        kind: pb::ChangeKind::Heartbeat as i32,
                        ..Default::default()
                    }),
                    () = watcher.cut.notified() => ended(
                        "this stream did not acknowledge a change in time: drop what you derived \
                         from consent's decisions and watch again",
                    ),
                    () = sender.closed() => return,
                };
                let end = message.is_err();
                if sender.send(message).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }
}

/// A stream's place among the watchers, given up when the stream ends.
struct Registered {
    feed: Arc<ChangeFeed>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut watchers) = self.feed.watchers.lock() {
            watchers.remove(&self.id);
        }
        self.feed.progress.notify_waiters();
    }
}

/// Republishes PostgreSQL's notifications while the feed lives.
async fn listen(pool: PgPool, feed: Weak<ChangeFeed>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if feed.strong_count() == 0 || pool.is_closed() {
            return;
        }
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(PG_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "consent's change listener could not connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if let Some(feed) = feed.upgrade() {
            feed.set_hearing(true);
        }
        loop {
            // Wakes now and then to notice the feed has gone.
            let next = tokio::time::timeout(Duration::from_secs(1), listener.try_recv()).await;
            let Some(feed) = feed.upgrade() else {
                return;
            };
            match next {
                Err(_elapsed) => {}
                Ok(Ok(Some(notification))) => {
                    feed.publish(Change::Patient(notification.payload().to_owned()));
                }
                // The connection dropped: what was notified meanwhile is lost.
                Ok(Ok(None)) | Ok(Err(_)) => {
                    feed.set_hearing(false);
                    break;
                }
            }
        }
    }
}

/// The earliest start or end of one of the patient's relationships or
/// directives after `now`: until then, with no change, a decision stands.
pub fn valid_until(
    relationships: &[CareRelationship],
    directives: &[Directive],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let relationship_times = relationships
        .iter()
        .flat_map(|r| [Some(r.period.start), r.period.end]);
    let directive_times = directives
        .iter()
        .flat_map(|d| [Some(d.period.start), d.period.end, d.revoked_at]);
    relationship_times
        .chain(directive_times)
        .flatten()
        .filter(|t| *t > now)
        .min()
}

/// Reports each change made through `inner` on `feed` and answers the
/// writer once every stream on this replica has acknowledged it. On SQLite
/// it publishes the change itself, once `inner` (and every cache beneath)
/// has returned; on PostgreSQL the database delivers it to the feed. A write
/// refused before it was stored is not reported; one whose outcome is not
/// known is.
pub struct Notifying<S> {
    inner: S,
    feed: Arc<ChangeFeed>,
}

impl<S: ConsentStore> Notifying<S> {
    pub fn new(inner: S, feed: Arc<ChangeFeed>) -> Self {
        Notifying { inner, feed }
    }

    async fn publishing<T>(&self, patient: String, write: BoxFuture<'_, T>) -> Result<T, Error> {
        use sharedcare_kit::error::Code;
        // Listening before the write, so its notification cannot slip by.
        let mut heard = self.feed.changes.subscribe();
        let result = write.await;
        let may_have_changed = match &result {
            Ok(_) => true,
            Err(e) => matches!(e.code, Code::Internal | Code::Unavailable),
        };
        if !may_have_changed {
            return result;
        }
        let sequence = if self.feed.in_process {
            Some(self.feed.publish(Change::Patient(patient)))
        } else {
            heard_back(&mut heard, &patient, self.feed.heartbeat).await
        };
        match sequence {
            Some(sequence) => self.feed.settle(sequence).await,
            // Not heard in time: the listener is down (and has ended every
            // stream) or too slow — end them all and wait them out.
            None => {
                self.feed.publish(Change::Lost);
                tokio::time::sleep(self.feed.heartbeat * WATCHER_GIVES_UP_AFTER).await;
            }
        }
        result
    }
}

/// The sequence under which the feed republished a change for `patient`.
async fn heard_back(
    heard: &mut broadcast::Receiver<(u64, Change)>,
    patient: &str,
    within: Duration,
) -> Option<u64> {
    let wait = async {
        loop {
            match heard.recv().await {
                Ok((sequence, Change::Patient(p))) if p == patient => return Some(sequence),
                Ok(_) => {}
                // It may have been among those missed.
                Err(_) => return None,
            }
        }
    };
    tokio::time::timeout(within, wait).await.ok().flatten()
}

impl<S: ConsentStore> ConsentStore for Notifying<S> {
    fn insert_relationship(
        &self,
        relationship: CareRelationship,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship> {
        let patient = audit.patient_id.clone();
        Box::pin(self.publishing(patient, self.inner.insert_relationship(relationship, audit)))
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
        let patient = audit.patient_id.clone();
        let id = id.to_owned();
        let by = by.to_owned();
        Box::pin(async move {
            self.publishing(patient, self.inner.end_relationship(&id, at, &by, audit))
                .await
        })
    }

    fn list_relationships(&self, patient: &PatientId) -> BoxFuture<'_, Vec<CareRelationship>> {
        self.inner.list_relationships(patient)
    }

    fn insert_directive(
        &self,
        directive: Directive,
        audit: AuditEvent,
    ) -> BoxFuture<'_, Directive> {
        let patient = audit.patient_id.clone();
        Box::pin(self.publishing(patient, self.inner.insert_directive(directive, audit)))
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
        let patient = audit.patient_id.clone();
        let id = id.to_owned();
        let by = by.to_owned();
        Box::pin(async move {
            self.publishing(patient, self.inner.revoke_directive(&id, at, &by, audit))
                .await
        })
    }

    fn list_directives(&self, patient: &PatientId) -> BoxFuture<'_, Vec<Directive>> {
        self.inner.list_directives(patient)
    }
}
