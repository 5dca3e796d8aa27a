//! The audit outbox: every audit event a service produces is made durable in
//! its own database before the access it describes is answered, and one
//! relay ships the events to audit in batches, off every request's path.
//!
//! - A write puts its event in the same transaction as the write (the
//!   service's store inserts the row; [`Outbox::wake`] then nudges the relay).
//! - A read or a denial calls [`Outbox::record`]: events from concurrent
//!   requests are group-committed, many in one transaction and one fsync.
//! - The relay sends pending events oldest first with `AppendBatch`, deletes
//!   what audit acknowledged, and parks an event audit refuses as bad (it is
//!   reported, the rest flow). It never stops.
//! - [`Outbox::admit`] fails closed: when audit has been unreachable for
//!   longer than `max_lag`, or more than `max_pending` events wait, new
//!   accesses are refused with UNAVAILABLE until the relay catches up.
//!
//! The table is the service's own (`<service>_audit_outbox`, created by its
//! migrations with [`create_table`]); statements are built for it by name.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use prost::Message;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, TransactionTrait,
    sea_query::{Alias, Expr, ExprTrait, Order, Query, Table, TableCreateStatement},
};
use sharedcare_proto::audit::v1::AuditEvent;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{Error, db::WriteGate, peers::BoxFuture};

/// Where the relay delivers: audit's `AppendBatch`, all or none.
pub trait BatchSink: Send + Sync + 'static {
    fn append_batch(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()>;
}

/// How the outbox behaves.
#[derive(Debug, Clone, Copy)]
pub struct OutboxSettings {
    /// Refuse new accesses once audit has been failing this long.
    pub max_lag: Duration,
    /// Refuse new accesses once this many events wait.
    pub max_pending: u64,
    /// Events per `AppendBatch`.
    pub batch: u64,
    /// How often the relay looks when nothing woke it.
    pub poll: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            max_lag: Duration::from_secs(30),
            max_pending: 100_000,
            batch: 500,
            poll: Duration::from_secs(1),
        }
    }
}

/// The outbox table's definition, for a service's migration.
pub fn create_table(name: &str) -> TableCreateStatement {
    use sea_orm_migration::schema::{
        big_integer, blob, string_uniq, text_null, timestamp_with_time_zone,
    };
    Table::create()
        .table(Alias::new(name))
        .if_not_exists()
        .col(big_integer("sequence").auto_increment().primary_key())
        .col(string_uniq("event_id"))
        .col(blob("payload"))
        .col(timestamp_with_time_zone("created_at"))
        .col(text_null("parked_reason"))
        .to_owned()
}

struct Pending {
    event_id: String,
    payload: Vec<u8>,
    done: oneshot::Sender<Result<(), Error>>,
}

/// What the relay knows about delivery, for admission.
#[derive(Default)]
struct Health {
    /// Since when delivery has been failing (None while it succeeds).
    failing_since: Option<Instant>,
}

/// A service's audit outbox. Cheap to share (`Arc`).
pub struct Outbox {
    table: &'static str,
    db: DatabaseConnection,
    /// Shared with the service's store: SQLite writers take turns.
    writes: WriteGate,
    writer: mpsc::Sender<Pending>,
    wake: Arc<Notify>,
    health: Arc<Mutex<Health>>,
    pending: Arc<AtomicU64>,
    parked: Arc<AtomicU64>,
    settings: OutboxSettings,
}

impl Outbox {
    /// Starts the group-commit writer and the relay to `sink`. `writes` is
    /// the gate of the store that shares `db`, so their writes take turns.
    pub fn start(
        db: DatabaseConnection,
        writes: WriteGate,
        table: &'static str,
        sink: Arc<dyn BatchSink>,
        settings: OutboxSettings,
    ) -> Arc<Self> {
        let (writer, requests) = mpsc::channel(4096);
        let outbox = Arc::new(Outbox {
            table,
            db,
            writes,
            writer,
            wake: Arc::new(Notify::new()),
            health: Arc::new(Mutex::new(Health::default())),
            pending: Arc::new(AtomicU64::new(0)),
            parked: Arc::new(AtomicU64::new(0)),
            settings,
        });
        tokio::spawn(group_commit(
            outbox.db.clone(),
            outbox.writes.clone(),
            table,
            requests,
            outbox.wake.clone(),
            outbox.pending.clone(),
        ));
        tokio::spawn(relay(Arc::downgrade(&outbox), sink));
        outbox
    }

    /// Fails closed when audit has been unreachable too long or too many
    /// events wait: no access that could not be audited in time.
    pub fn admit(&self) -> Result<(), Error> {
        let failing = self
            .health
            .lock()
            .ok()
            .and_then(|h| h.failing_since)
            .is_some_and(|since| since.elapsed() > self.settings.max_lag);
        if failing || self.pending.load(Ordering::Relaxed) > self.settings.max_pending {
            return Err(Error::unavailable(
                "audit has been unreachable too long: accesses are refused until their audit \
                 events are delivered",
            ));
        }
        Ok(())
    }

    /// Makes `event` durable (group-committed with concurrent callers) and
    /// returns once it is.
    pub async fn record(&self, event: &AuditEvent) -> Result<(), Error> {
        let (done, result) = oneshot::channel();
        self.writer
            .send(Pending {
                event_id: event.event_id.clone(),
                payload: event.encode_to_vec(),
                done,
            })
            .await
            .map_err(|_| Error::unavailable("the audit outbox is shutting down"))?;
        result
            .await
            .map_err(|_| Error::unavailable("the audit outbox is shutting down"))?
    }

    /// A write stored its event in its own transaction: deliver it soon.
    pub fn wake(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Events waiting (an estimate between relay rounds).
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Events audit refused as bad, parked since this process started.
    pub fn parked(&self) -> u64 {
        self.parked.load(Ordering::Relaxed)
    }

    /// One relay round now: delivers what is pending, returns how many.
    pub async fn deliver(&self, sink: &dyn BatchSink) -> Result<u64, Error> {
        deliver_round(self, sink).await
    }
}

/// The outbox's gauges, read at each scrape: events waiting, the age of the
/// oldest, and how long delivery has been failing.
impl crate::metrics::Sampler for Outbox {
    fn sample(&self, service: &'static str) -> BoxFuture<'_, ()> {
        use crate::metrics::{OUTBOX_FAILING, OUTBOX_OLDEST_AGE, OUTBOX_PENDING};
        Box::pin(async move {
            let failing = self
                .health
                .lock()
                .ok()
                .and_then(|h| h.failing_since)
                .map_or(0.0, |since| since.elapsed().as_secs_f64());
            metrics::gauge!(OUTBOX_FAILING, "service" => service).set(failing);
            metrics::gauge!(OUTBOX_PENDING, "service" => service).set(self.pending() as f64);
            let age = oldest_pending_age(self).await?;
            metrics::gauge!(OUTBOX_OLDEST_AGE, "service" => service)
                .set(age.map_or(0.0, |age| age.as_secs_f64()));
            Ok(())
        })
    }
}

/// How long the oldest event still to deliver (not parked) has waited.
async fn oldest_pending_age(outbox: &Outbox) -> Result<Option<Duration>, Error> {
    let context = "reading the audit outbox's oldest event";
    let select = Query::select()
        .column(Alias::new("created_at"))
        .from(Alias::new(outbox.table))
        .and_where(Expr::col(Alias::new("parked_reason")).is_null())
        .order_by(Alias::new("sequence"), Order::Asc)
        .limit(1)
        .to_owned();
    let Some(row) = outbox
        .db
        .query_one(&select)
        .await
        .map_err(|e| Error::internal(context, e))?
    else {
        return Ok(None);
    };
    let created: chrono::DateTime<chrono::Utc> = row
        .try_get("", "created_at")
        .map_err(|e| Error::internal(context, e))?;
    Ok(Some(
        (chrono::Utc::now() - created).to_std().unwrap_or_default(),
    ))
}

/// Puts `event` in the outbox table `table` within the caller's own
/// transaction `txn`: a change and its audit event commit together (then
/// call [`Outbox::wake`]).
pub async fn insert_in<C: ConnectionTrait>(
    txn: &C,
    table: &'static str,
    event: &AuditEvent,
) -> Result<(), Error> {
    let insert = Query::insert()
        .into_table(Alias::new(table))
        .columns([
            Alias::new("event_id"),
            Alias::new("payload"),
            Alias::new("created_at"),
        ])
        .values_panic([
            event.event_id.clone().into(),
            event.encode_to_vec().into(),
            chrono::Utc::now().into(),
        ])
        .to_owned();
    txn.execute(&insert)
        .await
        .map_err(|e| Error::internal("recording an audit event in the outbox", e))?;
    Ok(())
}

/// Collects whatever is queued, writes it in one transaction, answers all.
async fn group_commit(
    db: DatabaseConnection,
    writes: WriteGate,
    table: &'static str,
    mut requests: mpsc::Receiver<Pending>,
    wake: Arc<Notify>,
    pending: Arc<AtomicU64>,
) {
    const MAX_GROUP: usize = 512;
    while let Some(group) = crate::group::next_group(&mut requests, MAX_GROUP, |_| 1).await {
        let result = {
            let _turn = writes.turn().await;
            insert_group(&db, table, &group).await
        };
        if result.is_ok() {
            pending.fetch_add(group.len() as u64, Ordering::Relaxed);
            wake.notify_one();
        }
        for request in group {
            let _ = request.done.send(result.clone());
        }
    }
}

async fn insert_group(
    db: &DatabaseConnection,
    table: &'static str,
    group: &[Pending],
) -> Result<(), Error> {
    let context = "recording an audit event in the outbox";
    let now = chrono::Utc::now();
    let mut insert = Query::insert();
    insert.into_table(Alias::new(table)).columns([
        Alias::new("event_id"),
        Alias::new("payload"),
        Alias::new("created_at"),
    ]);
    for p in group {
        insert.values_panic([
            p.event_id.clone().into(),
            p.payload.clone().into(),
            now.into(),
        ]);
    }
    let txn = db.begin().await.map_err(|e| Error::internal(context, e))?;
    txn.execute(&insert)
        .await
        .map_err(|e| Error::internal(context, e))?;
    txn.commit().await.map_err(|e| Error::internal(context, e))
}

/// Delivers for as long as the outbox lives: on a wake-up or every `poll`.
async fn relay(outbox: std::sync::Weak<Outbox>, sink: Arc<dyn BatchSink>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(this) = outbox.upgrade() else {
            return;
        };
        let wake = this.wake.clone();
        let poll = this.settings.poll;
        let result = deliver_round(&this, sink.as_ref()).await;
        drop(this);
        match result {
            Ok(0) => {
                backoff = Duration::from_millis(50);
                let _ = tokio::time::timeout(poll, wake.notified()).await;
            }
            Ok(_) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::warn!(error = %e.message, "audit outbox delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One round: every pending event, in batches, oldest first.
async fn deliver_round(outbox: &Outbox, sink: &dyn BatchSink) -> Result<u64, Error> {
    let mut delivered = 0;
    loop {
        let batch = pending_batch(outbox).await?;
        if batch.is_empty() {
            outbox.pending.store(0, Ordering::Relaxed);
            outbox.set_failing(false);
            return Ok(delivered);
        }
        let full = batch.len() as u64 >= outbox.settings.batch;
        let mut events = Vec::with_capacity(batch.len());
        let mut undecodable = Vec::new();
        for (sequence, payload) in &batch {
            match AuditEvent::decode(payload.as_slice()) {
                Ok(event) => events.push((*sequence, event)),
                Err(_) => undecodable.push(*sequence),
            }
        }
        for sequence in undecodable {
            park(outbox, sequence, "the stored event does not decode").await?;
        }
        match sink
            .append_batch(events.iter().map(|(_, e)| e.clone()).collect())
            .await
        {
            Ok(()) => {
                delete(outbox, events.iter().map(|(s, _)| *s)).await?;
                delivered += events.len() as u64;
            }
            Err(e) if is_bad_event(&e) => {
                // One bad event must not hold the rest back: one at a time,
                // parking those audit refuses.
                for (sequence, event) in events {
                    match sink.append_batch(vec![event]).await {
                        Ok(()) => {
                            delete(outbox, [sequence]).await?;
                            delivered += 1;
                        }
                        Err(e) if is_bad_event(&e) => park(outbox, sequence, &e.message).await?,
                        Err(e) => return Err(outbox.failed(e)),
                    }
                }
            }
            Err(e) => return Err(outbox.failed(e)),
        }
        outbox.set_failing(false);
        if !full {
            outbox.pending.store(0, Ordering::Relaxed);
            return Ok(delivered);
        }
    }
}

/// Audit refused this content (as opposed to being unreachable or busy).
fn is_bad_event(e: &Error) -> bool {
    use crate::error::Code;
    matches!(
        e.code,
        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition
    )
}

impl Outbox {
    fn set_failing(&self, failing: bool) {
        if let Ok(mut health) = self.health.lock() {
            health.failing_since = match (failing, health.failing_since) {
                (false, _) => None,
                (true, Some(since)) => Some(since),
                (true, None) => Some(Instant::now()),
            };
        }
    }

    fn failed(&self, e: Error) -> Error {
        self.set_failing(true);
        e
    }
}

async fn pending_batch(outbox: &Outbox) -> Result<Vec<(i64, Vec<u8>)>, Error> {
    let context = "reading the audit outbox";
    let select = Query::select()
        .columns([Alias::new("sequence"), Alias::new("payload")])
        .from(Alias::new(outbox.table))
        .and_where(Expr::col(Alias::new("parked_reason")).is_null())
        .order_by(Alias::new("sequence"), Order::Asc)
        .limit(outbox.settings.batch)
        .to_owned();
    let rows = outbox
        .db
        .query_all(&select)
        .await
        .map_err(|e| Error::internal(context, e))?;
    rows.into_iter()
        .map(|row| {
            Ok((
                row.try_get::<i64>("", "sequence")
                    .map_err(|e| Error::internal(context, e))?,
                row.try_get::<Vec<u8>>("", "payload")
                    .map_err(|e| Error::internal(context, e))?,
            ))
        })
        .collect()
}

/// Delivered rows are pruned at once.
async fn delete(outbox: &Outbox, sequences: impl IntoIterator<Item = i64>) -> Result<(), Error> {
    let sequences: Vec<i64> = sequences.into_iter().collect();
    if sequences.is_empty() {
        return Ok(());
    }
    let delete = Query::delete()
        .from_table(Alias::new(outbox.table))
        .and_where(Expr::col(Alias::new("sequence")).is_in(sequences))
        .to_owned();
    let _turn = outbox.writes.turn().await;
    outbox
        .db
        .execute(&delete)
        .await
        .map_err(|e| Error::internal("pruning the audit outbox", e))?;
    Ok(())
}

async fn park(outbox: &Outbox, sequence: i64, reason: &str) -> Result<(), Error> {
    // The reason is audit's message about the event's fields: no patient data.
    tracing::error!(sequence, reason, "audit refused an outbox event: parked");
    let update = Query::update()
        .table(Alias::new(outbox.table))
        .value(Alias::new("parked_reason"), reason)
        .and_where(Expr::col(Alias::new("sequence")).eq(sequence))
        .to_owned();
    let _turn = outbox.writes.turn().await;
    outbox
        .db
        .execute(&update)
        .await
        .map_err(|e| Error::internal("parking an audit outbox event", e))?;
    outbox.parked.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use sea_orm::Database;

    use super::*;

    const TABLE: &str = "test_audit_outbox";

    /// audit, in memory: the batches it took; it refuses events whose id
    /// starts with "bad", and everything while `down`.
    #[derive(Default)]
    struct FakeAudit {
        batches: Mutex<Vec<Vec<String>>>,
        down: AtomicBool,
    }

    impl FakeAudit {
        fn delivered(&self) -> Vec<String> {
            self.batches
                .lock()
                .expect("lock")
                .iter()
                .flatten()
                .cloned()
                .collect()
        }
    }

    impl BatchSink for FakeAudit {
        fn append_batch(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(Error::unavailable("audit is down"));
                }
                if events.iter().any(|e| e.event_id.starts_with("bad")) {
                    return Err(Error::invalid("events[0].occur_time", "is required"));
                }
                self.batches
                    .lock()
                    .expect("lock")
                    .push(events.into_iter().map(|e| e.event_id).collect());
                Ok(())
            })
        }
    }

    async fn outbox(
        audit: Arc<FakeAudit>,
        settings: OutboxSettings,
    ) -> (Arc<Outbox>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::db::sqlite_url(&dir.path().join("outbox.db"));
        let db = Database::connect(url.as_str()).await.expect("sqlite");
        db.execute(&create_table(TABLE)).await.expect("table");
        let writes = WriteGate::for_db(&db);
        (Outbox::start(db, writes, TABLE, audit, settings), dir)
    }

    fn event(id: &str) -> AuditEvent {
        AuditEvent {
            event_id: id.to_owned(),
            ..AuditEvent::default()
        }
    }

    async fn rows(outbox: &Outbox) -> Vec<(i64, Option<String>)> {
        let select = Query::select()
            .columns([Alias::new("sequence"), Alias::new("parked_reason")])
            .from(Alias::new(TABLE))
            .to_owned();
        outbox
            .db
            .query_all(&select)
            .await
            .expect("rows")
            .into_iter()
            .map(|r| {
                (
                    r.try_get("", "sequence").expect("sequence"),
                    r.try_get("", "parked_reason").expect("reason"),
                )
            })
            .collect()
    }

    /// Polls `done` for up to five seconds.
    async fn eventually(mut done: impl AsyncFnMut() -> bool) {
        for _ in 0..500 {
            if done().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within five seconds");
    }

    #[tokio::test]
    async fn concurrent_events_are_group_committed_delivered_in_batches_and_pruned() {
        let audit = Arc::new(FakeAudit::default());
        let (outbox, _dir) = outbox(audit.clone(), OutboxSettings::default()).await;
        // All spawned before any is awaited, so that they are concurrent.
        let writes: Vec<_> = (0..100)
            .map(|i| {
                let outbox = outbox.clone();
                tokio::spawn(async move { outbox.record(&event(&format!("e{i:03}"))).await })
            })
            .collect();
        for write in writes {
            write.await.expect("join").expect("durable");
        }
        eventually(async || audit.delivered().len() == 100).await;
        let mut delivered = audit.delivered();
        delivered.sort();
        assert_eq!(
            delivered,
            (0..100).map(|i| format!("e{i:03}")).collect::<Vec<_>>()
        );
        assert!(
            audit.batches.lock().expect("lock").len() < 100,
            "delivered in batches"
        );
        eventually(async || rows(&outbox).await.is_empty()).await;
        assert!(outbox.admit().is_ok());
    }

    #[tokio::test]
    async fn a_bad_event_is_parked_and_the_rest_flow() {
        let audit = Arc::new(FakeAudit::default());
        audit.down.store(true, Ordering::SeqCst);
        let (outbox, _dir) = outbox(audit.clone(), OutboxSettings::default()).await;
        for id in ["a", "bad-1", "b"] {
            outbox.record(&event(id)).await.expect("durable");
        }
        audit.down.store(false, Ordering::SeqCst);
        outbox.wake();
        eventually(async || audit.delivered().len() == 2).await;
        assert_eq!(audit.delivered(), ["a", "b"]);
        eventually(async || rows(&outbox).await.len() == 1).await;
        let rows = rows(&outbox).await;
        assert!(
            rows[0]
                .1
                .as_deref()
                .is_some_and(|r| r.contains("occur_time"))
        );
        assert_eq!(outbox.parked(), 1);
        // A parked event is not retried, and holds nothing back.
        outbox.record(&event("c")).await.expect("durable");
        eventually(async || audit.delivered().len() == 3).await;
    }

    #[tokio::test]
    async fn accesses_are_refused_while_audit_is_down_too_long_then_admitted_again() {
        let audit = Arc::new(FakeAudit::default());
        audit.down.store(true, Ordering::SeqCst);
        let settings = OutboxSettings {
            max_lag: Duration::from_millis(100),
            poll: Duration::from_millis(20),
            ..OutboxSettings::default()
        };
        let (outbox, _dir) = outbox(audit.clone(), settings).await;
        assert!(outbox.admit().is_ok(), "nothing waits yet");
        outbox.record(&event("waiting")).await.expect("durable");
        eventually(async || outbox.admit().is_err()).await;
        let err = outbox.admit().expect_err("fail closed");
        assert_eq!(err.code, crate::error::Code::Unavailable);
        audit.down.store(false, Ordering::SeqCst);
        eventually(async || outbox.admit().is_ok()).await;
        assert_eq!(audit.delivered(), ["waiting"]);
    }

    #[tokio::test]
    async fn too_many_waiting_events_refuse_accesses() {
        let audit = Arc::new(FakeAudit::default());
        audit.down.store(true, Ordering::SeqCst);
        let settings = OutboxSettings {
            max_pending: 3,
            ..OutboxSettings::default()
        };
        let (outbox, _dir) = outbox(audit, settings).await;
        for i in 0..4 {
            outbox
                .record(&event(&format!("e{i}")))
                .await
                .expect("durable");
        }
        assert!(outbox.admit().is_err());
    }
}
