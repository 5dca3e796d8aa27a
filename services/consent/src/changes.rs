//! consent's change feed: which patients' relationships or directives have
//! just changed, for services that keep consent's decisions (records drops
//! its cached decisions for the patient; see `kit::decisions`).
//!
//! Every write appends to the store's change log in its own transaction
//! (`ConsentStore::changes_after`), numbered in commit order across
//! replicas. A stream reads the log from its position: it replays what a
//! resuming watcher missed, says READY, then reads again whenever woken —
//! by this replica's own writes ([`Notifying`]), by PostgreSQL's
//! notification of another replica's (a hint: a lost listener only delays
//! things), and every heartbeat interval as a safety net. It subscribes to
//! wake-ups before it first reads, so nothing falls between.
//!
//! A change applies to the very next request: [`Notifying`] answers the
//! writer only once every stream open on this replica has acknowledged the
//! change's sequence (the watcher has dropped what it kept). A stream that
//! has not within a heartbeat interval is ended, and every writer waits
//! until that watcher, hearing nothing, must have stopped using what it kept.
//!
//! On PostgreSQL each replica also tails the log (woken as the streams are,
//! and every heartbeat): for each change it drops the patient from its
//! memory (`store::Cached`), waits for its own streams' acknowledgements as
//! above, and only then counts the change applied, in `consent_replicas`.
//! Every heartbeat, while it keeps up, it renews its lease there (three
//! intervals by the database's clock) and uses its memory only until its
//! own conservative reckoning of that lease ends; it drops the lease at
//! close. A writer waits until every replica whose lease runs, its own
//! included, has applied its change; one that cannot (lost the database,
//! fell behind) stops renewing and is waited out within its lease.
//!
//! A stream sends PATIENT changes, READY once caught up, a HEARTBEAT every
//! interval so a watcher can tell a live stream from a silent dead one, and
//! ends with UNAVAILABLE when it cannot go on (the watcher resumes).

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
use sea_orm::{
    DatabaseConnection,
    sqlx::{PgPool, postgres::PgListener},
};
use sharedcare_kit::Error;
use sharedcare_proto::{audit::v1::AuditEvent, consent::v1 as pb};
use tokio::sync::{Notify, mpsc, watch};
use tonic::{Status, Streaming};

use crate::{
    domain::{CareRelationship, Directive, PatientId},
    store::{BoxFuture, ConsentStore, LoggedChange, Memory, replicas},
};

/// The PostgreSQL channel the store notifies on (payload: the sequence, a
/// hint only).
pub const PG_CHANNEL: &str = "sharedcare_consent_changes";

/// Log entries a stream reads at a time.
const PAGE: u32 = 256;

/// Heartbeat intervals of silence after which a watcher gives up on a
/// stream (`kit::decisions` uses the same), plus one for the way there.
const WATCHER_GIVES_UP_AFTER: u32 = 3 + 1;

/// How long a replica's lease runs, in heartbeat intervals (it is renewed
/// every interval).
const LEASE_HEARTBEATS: u32 = 3;

/// How often a writer looks again at how far the replicas have applied.
const REPLICA_POLL: Duration = Duration::from_millis(3);

/// This process's part among replicas sharing PostgreSQL.
struct Replica {
    id: String,
    db: DatabaseConnection,
    /// The memory Evaluate reads from, dropped from as the log grows.
    memory: Arc<Memory>,
    /// The last change this replica has acted on: dropped from its memory
    /// and acknowledged by its streams.
    applied: AtomicU64,
    /// Set once `applied` starts at the log's head.
    tailing: AtomicBool,
    lease: Duration,
    /// Wakes the lease keeper at close, to give the lease up.
    closed: Notify,
}

/// One open stream, as the writers waiting on acknowledgements see it.
struct Watcher {
    /// Starts at the log's latest sequence when the stream began: the
    /// stream owes nothing for those (a resuming watcher is not live until
    /// it has replayed them).
    acknowledged: AtomicU64,
    cut: Notify,
}

pub struct ChangeFeed {
    /// The store whose change log the streams read.
    log: Arc<dyn ConsentStore>,
    /// Bumped whenever the log may have grown.
    wake: watch::Sender<u64>,
    closing: AtomicBool,
    heartbeat: Duration,
    watchers: Mutex<HashMap<u64, Arc<Watcher>>>,
    next_watcher: AtomicU64,
    /// Woken by every acknowledgement and every stream's end.
    progress: Notify,
    /// Until when a watcher whose stream was cut may still use what it
    /// kept: every writer then waits, not only the one that cut it (the
    /// tail and a writer may wait on the same stream).
    cut_until: Mutex<Option<tokio::time::Instant>>,
    /// `None` for the one process writing the store (SQLite, memory).
    replica: Option<Replica>,
}

impl ChangeFeed {
    fn new(log: Arc<dyn ConsentStore>, heartbeat: Duration) -> Self {
        ChangeFeed {
            log,
            wake: watch::channel(0).0,
            closing: AtomicBool::new(false),
            heartbeat,
            watchers: Mutex::new(HashMap::new()),
            next_watcher: AtomicU64::new(0),
            progress: Notify::new(),
            cut_until: Mutex::new(None),
            replica: None,
        }
    }

    /// For a process that makes every change itself (SQLite, memory):
    /// its own writes wake the streams.
    pub fn in_process(log: Arc<dyn ConsentStore>, heartbeat: Duration) -> Arc<Self> {
        Arc::new(Self::new(log, heartbeat))
    }

    /// For replicas sharing PostgreSQL: also woken by the store's
    /// notifications, heard on one connection of `pool` (reconnecting when
    /// it drops) until the feed is dropped or the pool closed. The replica
    /// tails the log into `memory` and keeps its lease in `db`.
    pub fn postgres(
        log: Arc<dyn ConsentStore>,
        db: DatabaseConnection,
        memory: Arc<Memory>,
        heartbeat: Duration,
    ) -> Arc<Self> {
        let pool = db.get_postgres_connection_pool().clone();
        let mut feed = Self::new(log, heartbeat);
        feed.replica = Some(Replica {
            id: uuid::Uuid::now_v7().to_string(),
            db,
            memory,
            applied: AtomicU64::new(0),
            tailing: AtomicBool::new(false),
            lease: heartbeat * LEASE_HEARTBEATS,
            closed: Notify::new(),
        });
        let feed = Arc::new(feed);
        // Subscribed before the tail first reads the log.
        let wake = feed.wake.subscribe();
        tokio::spawn(listen(pool, Arc::downgrade(&feed)));
        tokio::spawn(tail(Arc::downgrade(&feed), wake, heartbeat));
        tokio::spawn(keep_lease(Arc::downgrade(&feed)));
        feed
    }

    /// Tells every stream to read the log: it may have grown.
    pub fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Ends every stream (at shutdown): watchers stop using what they kept,
    /// and resume elsewhere.
    pub fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        if let Some(replica) = &self.replica {
            // Writers stop waiting for this replica once its row is gone:
            // its memory must not be used from now on.
            replica.memory.retire();
            replica.closed.notify_one();
        }
        self.wake();
    }

    /// Waits until every stream here, and on PostgreSQL every replica whose
    /// lease runs, has acted on change `sequence`.
    async fn publish(&self, sequence: u64) {
        self.settle(sequence).await;
        let Some(replica) = &self.replica else {
            return;
        };
        loop {
            match replicas::lagging(&replica.db, sequence).await {
                Ok(false) => return,
                Ok(true) => tokio::time::sleep(REPLICA_POLL).await,
                Err(e) => {
                    tracing::warn!(error = %e.message, "could not read how far consent's replicas have applied a change; waiting their leases out");
                    self.wait_out_leases(replica).await;
                    return;
                }
            }
        }
    }

    /// Long enough that any replica's lease running now has ended, or been
    /// renewed by a replica that has applied what was committed before.
    async fn wait_out_leases(&self, replica: &Replica) {
        tokio::time::sleep(replica.lease + self.heartbeat * 2).await;
    }

    /// The tail's step: drops each logged change's patient from memory,
    /// lets this replica's streams acknowledge it, then counts it applied.
    async fn apply(&self, replica: &Replica) -> Result<(), Error> {
        loop {
            let after = replica.applied.load(Ordering::SeqCst);
            let page = self.log.changes_after(after, PAGE).await?;
            let Some(last) = page.last().map(|c| c.sequence) else {
                return Ok(());
            };
            for change in &page {
                replica.memory.forget(Some(change.patient_id.as_str()));
            }
            self.settle(last).await;
            replica.applied.fetch_max(last, Ordering::SeqCst);
            replicas::applied(&replica.db, &replica.id, last).await?;
            if page.len() < PAGE as usize {
                return Ok(());
            }
        }
    }

    /// Waits until every stream that was open when change `sequence` was
    /// written has acknowledged it; ends those that do not in time and
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
                self.wait_out_cuts().await;
                return;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                tracing::warn!(
                    streams = waiting.len(),
                    "change streams did not acknowledge a change in time; ending them"
                );
                self.cut(waiting.iter());
                self.wait_out_cuts().await;
                return;
            }
        }
    }

    /// Ends `watchers`' streams; their watchers give up on what they kept
    /// within `WATCHER_GIVES_UP_AFTER` intervals.
    fn cut<'a>(&self, watchers: impl Iterator<Item = &'a Arc<Watcher>>) {
        let given_up = tokio::time::Instant::now() + self.heartbeat * WATCHER_GIVES_UP_AFTER;
        if let Ok(mut until) = self.cut_until.lock() {
            *until = Some(until.map_or(given_up, |u| u.max(given_up)));
        }
        for watcher in watchers {
            watcher.cut.notify_one();
        }
    }

    /// Waits until every watcher whose stream was cut must have given up.
    async fn wait_out_cuts(&self) {
        let until = self.cut_until.lock().ok().and_then(|until| *until);
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    /// Ends every stream on this replica and waits until their watchers
    /// must have given up (when a write's sequence cannot be known).
    async fn cut_all(&self) {
        let watchers: Vec<Arc<Watcher>> = self
            .watchers
            .lock()
            .map(|watchers| watchers.values().cloned().collect())
            .unwrap_or_default();
        self.cut(watchers.iter());
        self.wait_out_cuts().await;
    }

    /// A new watch stream: replays from the watcher's cursor, READY, then
    /// every change, with heartbeats; `acks` carries the cursor (first
    /// message) and the watcher's acknowledgements.
    pub fn watch(
        self: &Arc<Self>,
        acks: Streaming<pb::WatchChangesRequest>,
    ) -> Result<BoxStream<'static, Result<pb::WatchChangesResponse, Status>>, Error> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(Error::unavailable(
                "consent is shutting down; watch another replica",
            ));
        }
        let (sender, receiver) = mpsc::channel(64);
        tokio::spawn(self.clone().stream(acks, sender));
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(
            receiver,
        )))
    }

    async fn stream(
        self: Arc<Self>,
        mut acks: Streaming<pb::WatchChangesRequest>,
        sender: mpsc::Sender<Result<pb::WatchChangesResponse, Status>>,
    ) {
        let ended = |why: &str| Err(Status::unavailable(why.to_owned()));
        // Watchers that predate resuming send nothing before a change:
        // without a first message soon, the stream starts from now.
        let first = match tokio::time::timeout(self.heartbeat, acks.next()).await {
            Ok(Some(Ok(first))) => Some(first),
            // The watcher has gone.
            Ok(Some(Err(_)) | None) => return,
            Err(_elapsed) => None,
        };
        // Subscribed before the log is first read: a change committed after
        // that read wakes the stream.
        let mut wake = self.wake.subscribe();
        wake.borrow_and_update();
        // Closed before it subscribed: that wake-up is not its to hear.
        if self.closing.load(Ordering::SeqCst) {
            let _ = sender
                .send(ended("consent is shutting down; watch another replica"))
                .await;
            return;
        }
        let head = match self.log.latest_change().await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e.message, "could not read consent's change log");
                let _ = sender
                    .send(ended("consent could not read its change log; watch again"))
                    .await;
                return;
            }
        };
        let resume = first.as_ref().map_or(0, |f| f.resume_after_sequence);
        if resume > head {
            let _ = sender
                .send(Err(Status::invalid_argument(format!(
                    "resume_after_sequence: {resume} is beyond the latest change ({head}); \
                     drop what you derived from consent's decisions and watch from now"
                ))))
                .await;
            return;
        }
        let watcher = Arc::new(Watcher {
            acknowledged: AtomicU64::new(head),
            cut: Notify::new(),
        });
        let id = self.next_watcher.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut watchers) = self.watchers.lock() {
            watchers.insert(id, watcher.clone());
        }
        let _registered = Registered {
            feed: self.clone(),
            id,
        };
        // The latest sequence this stream has reported (or started after):
        // nothing later can have been acted on.
        let mut reported = if resume == 0 { head } else { resume };
        if !self.deliver(&mut reported, &sender).await {
            return;
        }
        let ready = pb::WatchChangesResponse {
            kind: pb::ChangeKind::Ready as i32,
            heartbeat_interval_ms: u32::try_from(self.heartbeat.as_millis()).unwrap_or(u32::MAX),
            sequence: reported,
            ..Default::default()
        };
        if sender.send(Ok(ready)).await.is_err() {
            return;
        }
        let mut ack = first.map(|f| f.acknowledged_sequence).filter(|a| *a > 0);
        let mut ticks = tokio::time::interval(self.heartbeat);
        ticks.reset();
        loop {
            if let Some(acknowledged) = ack.take() {
                if acknowledged > reported {
                    let _ = sender
                        .send(Err(Status::invalid_argument(format!(
                            "acknowledged_sequence: {acknowledged} was never reported on this \
                             stream (the latest is {reported})"
                        ))))
                        .await;
                    return;
                }
                watcher
                    .acknowledged
                    .fetch_max(acknowledged, Ordering::SeqCst);
                self.progress.notify_waiters();
            }
            let message = tokio::select! {
                woken = wake.changed() => {
                    if woken.is_err() || self.closing.load(Ordering::SeqCst) {
                        ended("consent is shutting down; watch another replica")
                    } else if self.deliver(&mut reported, &sender).await {
                        continue;
                    } else {
                        return;
                    }
                }
                next = acks.next() => match next {
                    Some(Ok(next)) => {
                        ack = Some(next.acknowledged_sequence);
                        continue;
                    }
                    // The watcher has gone.
                    Some(Err(_)) | None => return,
                },
                _ = ticks.tick() => {
                    // The safety net: a wake-up may have been lost (another
                    // replica's, while the listener was down).
                    if !self.deliver(&mut reported, &sender).await {
                        return;
                    }
                    Ok(pb::WatchChangesResponse {
                        kind: pb::ChangeKind::Heartbeat as i32,
                        ..Default::default()
                    })
                }
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
    }

    /// Sends every change in the log after `reported`, moving it on; false
    /// when the stream has ended (the watcher gone, or the log unreadable).
    async fn deliver(
        &self,
        reported: &mut u64,
        sender: &mpsc::Sender<Result<pb::WatchChangesResponse, Status>>,
    ) -> bool {
        loop {
            let page = match self.log.changes_after(*reported, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e.message, "could not read consent's change log");
                    let _ = sender
                        .send(Err(Status::unavailable(
                            "consent could not read its change log; watch again, resuming",
                        )))
                        .await;
                    return false;
                }
            };
            let full = page.len() >= PAGE as usize;
            for LoggedChange {
                sequence,
                patient_id,
                ..
            } in page
            {
                let change = pb::WatchChangesResponse {
                    kind: pb::ChangeKind::Patient as i32,
                    patient_id: patient_id.as_str().to_owned(),
                    sequence,
                    ..Default::default()
                };
                if sender.send(Ok(change)).await.is_err() {
                    return false;
                }
                *reported = sequence;
            }
            if !full {
                return true;
            }
        }
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

/// Wakes the feed at each PostgreSQL notification while the feed lives.
/// While the listener is down the streams' polling still finds every change.
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
        // What was committed while it was down.
        if let Some(feed) = feed.upgrade() {
            feed.wake();
        }
        loop {
            // Wakes now and then to notice the feed has gone.
            let next = tokio::time::timeout(Duration::from_secs(1), listener.try_recv()).await;
            let Some(feed) = feed.upgrade() else {
                return;
            };
            match next {
                Err(_elapsed) => {}
                Ok(Ok(Some(_notification))) => feed.wake(),
                Ok(Ok(None)) | Ok(Err(_)) => {
                    tracing::warn!("consent's change listener lost its connection; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Applies the log as it grows (woken with the streams, and every heartbeat
/// interval in case a wake-up was lost) from its head when the replica
/// started: memory starts empty, so nothing before needs dropping.
async fn tail(feed: Weak<ChangeFeed>, mut wake: watch::Receiver<u64>, heartbeat: Duration) {
    loop {
        {
            let Some(feed) = feed.upgrade() else {
                return;
            };
            let Some(replica) = &feed.replica else {
                return;
            };
            if feed.closing.load(Ordering::SeqCst) {
                return;
            }
            wake.borrow_and_update();
            let step = if replica.tailing.load(Ordering::SeqCst) {
                feed.apply(replica).await
            } else {
                feed.log.latest_change().await.map(|head| {
                    replica.applied.fetch_max(head, Ordering::SeqCst);
                    replica.tailing.store(true, Ordering::SeqCst);
                })
            };
            if let Err(e) = step {
                tracing::warn!(error = %e.message, "consent could not apply its change log; its memory lapses with its lease");
            }
        }
        tokio::select! {
            woken = wake.changed() => if woken.is_err() { return },
            () = tokio::time::sleep(heartbeat) => {}
        }
    }
}

/// Renews this replica's lease every heartbeat interval while it keeps up
/// with the log (it has applied what was the head an interval ago), so a
/// replica that falls behind or loses the database stops using its memory
/// and writers stop waiting for it within a lease; gives the lease up at
/// close.
async fn keep_lease(feed: Weak<ChangeFeed>) {
    // The log's head at the last look: applied by the next one, or behind.
    let mut head: Option<u64> = None;
    let mut ticks = match feed.upgrade() {
        Some(feed) => tokio::time::interval(feed.heartbeat),
        None => return,
    };
    loop {
        let closed = {
            let Some(feed) = feed.upgrade() else {
                return;
            };
            let Some(replica) = &feed.replica else {
                return;
            };
            let closed = replica.closed.notified();
            tokio::pin!(closed);
            if !feed.closing.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = closed.as_mut() => {}
                }
            }
            feed.closing.load(Ordering::SeqCst)
        };
        let Some(feed) = feed.upgrade() else {
            return;
        };
        let Some(replica) = &feed.replica else {
            return;
        };
        if closed {
            if let Err(e) = replicas::remove(&replica.db, &replica.id).await {
                tracing::warn!(error = %e.message, "consent could not give up its lease; writers wait it out");
            }
            return;
        }
        // The lease surely holds from before the request is sent.
        let sent = std::time::Instant::now();
        let applied = replica.applied.load(Ordering::SeqCst);
        let keeping_up =
            replica.tailing.load(Ordering::SeqCst) && head.is_some_and(|h| applied >= h);
        head = feed.log.latest_change().await.ok();
        if !keeping_up {
            continue;
        }
        match replicas::renew(&replica.db, &replica.id, applied, replica.lease).await {
            // A margin of one interval for the way there and clock drift.
            Ok(()) => replica
                .memory
                .leased(sent, replica.lease.saturating_sub(feed.heartbeat)),
            Err(e) => {
                tracing::warn!(error = %e.message, "consent could not renew its lease; reading the database until it does");
                replica.memory.lease_lost();
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

/// Wakes `feed`'s streams after each write through `inner` (once `inner`,
/// and every cache beneath, has returned) and answers the writer once every
/// stream on this replica has acknowledged it. A write refused before it was
/// stored is not waited for; one whose outcome is not known is.
pub struct Notifying<S> {
    inner: S,
    feed: Arc<ChangeFeed>,
}

impl<S: ConsentStore> Notifying<S> {
    pub fn new(inner: S, feed: Arc<ChangeFeed>) -> Self {
        Notifying { inner, feed }
    }

    async fn publishing<T>(&self, write: BoxFuture<'_, T>) -> Result<T, Error> {
        use sharedcare_kit::error::Code;
        let result = write.await;
        let may_have_changed = match &result {
            Ok(_) => true,
            Err(e) => matches!(e.code, Code::Internal | Code::Unavailable),
        };
        if !may_have_changed {
            return result;
        }
        self.feed.wake();
        // The log's head now is this write's sequence or a later one: once
        // a stream has acknowledged it, it has acted on this write too.
        match self.inner.latest_change().await {
            Ok(sequence) => self.feed.publish(sequence).await,
            Err(e) => {
                tracing::warn!(error = %e.message, "could not read consent's change log after a write; ending this replica's change streams");
                self.feed.cut_all().await;
                if let Some(replica) = &self.feed.replica {
                    self.feed.wait_out_leases(replica).await;
                }
            }
        }
        result
    }
}

impl<S: ConsentStore> ConsentStore for Notifying<S> {
    fn insert_relationship(
        &self,
        relationship: CareRelationship,
        audit: AuditEvent,
    ) -> BoxFuture<'_, CareRelationship> {
        Box::pin(self.publishing(self.inner.insert_relationship(relationship, audit)))
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
            self.publishing(self.inner.end_relationship(&id, at, &by, audit))
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
        Box::pin(self.publishing(self.inner.insert_directive(directive, audit)))
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
            self.publishing(self.inner.revoke_directive(&id, at, &by, audit))
                .await
        })
    }

    fn list_directives(&self, patient: &PatientId) -> BoxFuture<'_, Vec<Directive>> {
        self.inner.list_directives(patient)
    }

    fn changes_after(&self, after: u64, limit: u32) -> BoxFuture<'_, Vec<LoggedChange>> {
        self.inner.changes_after(after, limit)
    }

    fn latest_change(&self) -> BoxFuture<'_, u64> {
        self.inner.latest_change()
    }
}
