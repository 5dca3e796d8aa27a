//! consent's decisions, kept by the service that asked, for as long as they
//! hold: the same actor, patient, purpose and category get the same answer
//! until the patient's consent changes or a period in it begins or ends.
//!
//! The cache is used only while consent's change stream (`WatchChanges`) is
//! live: READY received, a message heard within a few heartbeat intervals.
//! A PATIENT change drops the patient's decisions at once. The watcher
//! remembers the sequence of the last change it acted on; when the stream
//! is lost the cache goes unused (fail closed) and the watcher reconnects,
//! resuming after that sequence: consent replays what was missed before
//! READY, so the replayed patients' decisions are dropped and the others
//! kept. If consent refuses the cursor (or cannot resume) everything is
//! dropped and the watch starts from now. A decision is kept only if
//! nothing was dropped, nor the stream lost, while it was being asked for
//! (an epoch counter, bumped by each, must be the same before and after),
//! so an answer that raced a change is used once and not kept. Each entry
//! also lapses at the decision's `valid_until` and at `max_age`, whichever
//! is sooner.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use prost::Message;
use sharedcare_proto::{
    common::v1::{Actor, Purpose, RecordCategory},
    consent::v1::{ChangeKind, WatchChangesRequest, consent_service_client::ConsentServiceClient},
};
use tonic::transport::Channel;

use crate::{
    Error,
    client::ServiceTokens,
    peers::{BoxFuture, ConsentGate, Decision},
};

/// The `[consent_cache]` section of records' and identity's configuration.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(default)]
pub struct ConsentCacheConfig {
    /// Keep a decision this long at most (while consent's change stream is
    /// live, and never past the decision's own limit); 0 asks consent every
    /// time.
    pub max_age_ms: u64,
    /// Decisions kept at most.
    pub max_entries: usize,
}

impl Default for ConsentCacheConfig {
    fn default() -> Self {
        ConsentCacheConfig {
            max_age_ms: 60_000,
            max_entries: 100_000,
        }
    }
}

impl ConsentCacheConfig {
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        use crate::config::ConfigError;
        if self.max_age_ms > 3_600_000 {
            return Err(ConfigError::invalid(
                "consent_cache.max_age_ms",
                "must be at most 3600000 (an hour)",
            ));
        }
        if self.max_entries == 0 {
            return Err(ConfigError::invalid(
                "consent_cache.max_entries",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// `inner`, keeping its decisions as configured (unless `max_age_ms` is
    /// 0), watching consent's changes over `channel`; `service` (the one
    /// asking) labels the cache's metrics.
    pub fn gate(
        &self,
        service: &'static str,
        inner: Arc<dyn ConsentGate>,
        channel: Channel,
        tokens: Arc<dyn ServiceTokens>,
    ) -> Arc<dyn ConsentGate> {
        if self.max_age_ms == 0 {
            return inner;
        }
        CachedConsent::start(
            service,
            inner,
            channel,
            tokens,
            DecisionCacheSettings {
                max_age: Duration::from_millis(self.max_age_ms),
                max_entries: self.max_entries,
            },
        )
    }
}

/// How long and how much to keep.
#[derive(Debug, Clone, Copy)]
pub struct DecisionCacheSettings {
    /// A decision is asked again after this long at most.
    pub max_age: Duration,
    /// Decisions held at most; past this the cache starts again empty.
    pub max_entries: usize,
}

/// After a merge, how long a patient's answers are asked afresh every time:
/// as long as a service may go on not knowing of a merge before it counts
/// its merge stream as stale (`kit::merges`).
const MERGE_SETTLING: Duration = crate::merges::SILENT_LIMIT;

/// Heartbeat intervals of silence after which the stream counts as lost
/// (consent's change feed counts on it).
const SILENT_INTERVALS: u32 = 3;

/// Which answer: everything in the actor (all of it may matter to a rule),
/// the purpose and the category. The patient is the outer map's key.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Question {
    actor: Vec<u8>,
    purpose: i32,
    category: i32,
}

struct Entry {
    decision: Decision,
    expires: Instant,
}

struct State {
    /// READY heard on the current stream, and the stream not lost since.
    live: bool,
    last_heard: Instant,
    silent_limit: Duration,
    /// Bumped by every drop and every lost stream: a decision asked for
    /// under an older epoch may predate a change.
    epoch: u64,
    /// The sequence of the latest change acted on, to resume after (0:
    /// none, watch from now).
    cursor: u64,
    entries: usize,
    patients: HashMap<String, HashMap<Question, Entry>>,
    /// Patients forgotten for a merge, with when their answers may be kept
    /// again: consent hears of the merge on its own stream, a moment later,
    /// and an answer it gives before then must not be kept.
    unsettled: HashMap<String, Instant>,
}

impl State {
    fn usable(&self, now: Instant) -> bool {
        self.live && now.duration_since(self.last_heard) <= self.silent_limit
    }

    fn drop_patient(&mut self, patient: &str) {
        self.epoch += 1;
        if let Some(gone) = self.patients.remove(patient) {
            self.entries -= gone.len();
        }
    }

    fn drop_all(&mut self) {
        self.epoch += 1;
        self.patients.clear();
        self.entries = 0;
    }

    /// The stream is gone: nothing is used until a stream is live again, and
    /// what is kept stays only if the next stream resumes.
    fn lost(&mut self) {
        self.live = false;
        self.epoch += 1;
    }
}

/// A [`ConsentGate`] that keeps `inner`'s decisions while consent's change
/// stream says they still hold.
pub struct CachedConsent {
    /// The service asking: the label of its lookups' metric.
    service: &'static str,
    inner: Arc<dyn ConsentGate>,
    state: Arc<Mutex<State>>,
    settings: DecisionCacheSettings,
}

impl CachedConsent {
    /// Wraps `inner` and starts watching consent's changes over `channel`
    /// (as this service, with `tokens`), until the gate is dropped.
    pub fn start(
        service: &'static str,
        inner: Arc<dyn ConsentGate>,
        channel: Channel,
        tokens: Arc<dyn ServiceTokens>,
        settings: DecisionCacheSettings,
    ) -> Arc<Self> {
        let state = Arc::new(Mutex::new(State {
            live: false,
            last_heard: Instant::now(),
            silent_limit: Duration::ZERO,
            epoch: 0,
            cursor: 0,
            entries: 0,
            patients: HashMap::new(),
            unsettled: HashMap::new(),
        }));
        tokio::spawn(watch(
            ConsentServiceClient::new(channel),
            tokens,
            Arc::downgrade(&state),
        ));
        Arc::new(CachedConsent {
            service,
            inner,
            state,
            settings,
        })
    }

    /// Whether decisions are being kept right now (the stream is live).
    pub fn is_live(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|state| state.usable(Instant::now()))
    }

    /// A kept answer, or the epoch to keep a fresh one under (None when the
    /// cache is not usable).
    fn lookup(&self, patient_id: &str, question: &Question) -> Result<Decision, Option<u64>> {
        let now = Instant::now();
        let Ok(state) = self.state.lock() else {
            return Err(None);
        };
        if !state.usable(now) {
            return Err(None);
        }
        match state
            .patients
            .get(patient_id)
            .and_then(|answers| answers.get(question))
        {
            Some(entry) if entry.expires > now => Ok(entry.decision.clone()),
            _ => Err(Some(state.epoch)),
        }
    }

    fn keep(&self, epoch: u64, patient_id: &str, question: Question, decision: &Decision) {
        let now = Instant::now();
        let mut lifetime = self.settings.max_age;
        if let Some(until) = decision.valid_until {
            let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
            lifetime = lifetime.min(left);
        }
        if lifetime.is_zero() {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.epoch != epoch || !state.usable(now) {
            return;
        }
        state.unsettled.retain(|_, until| *until > now);
        if state.unsettled.contains_key(patient_id) {
            return;
        }
        if state.entries >= self.settings.max_entries {
            state.patients.clear();
            state.entries = 0;
        }
        let entry = Entry {
            decision: decision.clone(),
            expires: now + lifetime,
        };
        if state
            .patients
            .entry(patient_id.to_owned())
            .or_default()
            .insert(question, entry)
            .is_none()
        {
            state.entries += 1;
        }
    }
}

impl ConsentGate for CachedConsent {
    fn evaluate(
        &self,
        patient_id: &str,
        actor: Actor,
        purpose: Purpose,
        category: RecordCategory,
    ) -> BoxFuture<'_, Decision> {
        let question = Question {
            actor: actor.encode_to_vec(),
            purpose: purpose as i32,
            category: category as i32,
        };
        let epoch = match self.lookup(patient_id, &question) {
            Ok(kept) => {
                crate::metrics::consent_cache_lookup(self.service, true);
                return Box::pin(async move { Ok(kept) });
            }
            Err(epoch) => epoch,
        };
        // Asked of consent, whether or not the cache was usable.
        crate::metrics::consent_cache_lookup(self.service, false);
        let patient_id = patient_id.to_owned();
        Box::pin(async move {
            let decision = self
                .inner
                .evaluate(&patient_id, actor, purpose, category)
                .await?;
            if let Some(epoch) = epoch {
                self.keep(epoch, &patient_id, question, &decision);
            }
            Ok(decision)
        })
    }

    fn forget(&self, patient_id: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.drop_patient(patient_id);
            // An answer already on its way was asked before: not kept; nor
            // one consent gives before it too has heard of the merge.
            state.epoch += 1;
            state
                .unsettled
                .insert(patient_id.to_owned(), Instant::now() + MERGE_SETTLING);
        }
    }

    fn evaluate_break_glass(
        &self,
        patient_id: &str,
        actor: Actor,
        purpose: Purpose,
        category: RecordCategory,
        reason: &str,
    ) -> BoxFuture<'_, Decision> {
        // Straight to consent, which records the grant; the grant itself
        // reaches the cache as a change of the patient's consent.
        self.inner
            .evaluate_break_glass(patient_id, actor, purpose, category, reason)
    }
}

/// Follows consent's change stream for as long as the cache lives,
/// reconnecting (with backoff) whenever it ends, resuming where it left off.
async fn watch(
    client: ConsentServiceClient<Channel>,
    tokens: Arc<dyn ServiceTokens>,
    state: Weak<Mutex<State>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if state.strong_count() == 0 {
            return;
        }
        let outcome = follow(client.clone(), tokens.as_ref(), &state).await;
        let Some(held) = state.upgrade() else {
            return;
        };
        if let Ok(mut s) = held.lock() {
            s.lost();
        }
        drop(held);
        match outcome {
            // It had been live: try again at once.
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::debug!(error = %e.message, "consent's change stream is down; decisions are not kept");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One stream, until it ends, errs or falls silent. Ok if it was live (or
/// consent refused the cursor: watch again at once, from now).
async fn follow(
    mut client: ConsentServiceClient<Channel>,
    tokens: &dyn ServiceTokens,
    state: &Weak<Mutex<State>>,
) -> Result<(), Error> {
    let cursor = state
        .upgrade()
        .and_then(|held| held.lock().ok().map(|s| s.cursor))
        .unwrap_or(0);
    // The first message carries the cursor; then each PATIENT change is
    // acknowledged once its decisions are dropped: consent answers the
    // change's writer only then.
    let (acks, to_send) = tokio::sync::mpsc::unbounded_channel::<WatchChangesRequest>();
    let _ = acks.send(WatchChangesRequest {
        resume_after_sequence: cursor,
        ..Default::default()
    });
    let request = crate::client::stream_request(
        tokio_stream::wrappers::UnboundedReceiverStream::new(to_send),
        tokens,
    )
    .await?;
    let mut stream = client
        .watch_changes(request)
        .await
        .map_err(Error::from)?
        .into_inner();
    // Until READY says how often heartbeats come.
    let mut silent_limit = Duration::from_secs(10);
    let mut was_live = false;
    loop {
        let message = match tokio::time::timeout(silent_limit, stream.message()).await {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                // The cursor (or an acknowledgement) does not fit consent's
                // log: nothing kept can be vouched for.
                tracing::warn!(error = %status.message(), "consent refused this change stream; watching from now");
                if let Some(held) = state.upgrade()
                    && let Ok(mut s) = held.lock()
                {
                    s.cursor = 0;
                    s.drop_all();
                }
                return if cursor > 0 {
                    Ok(())
                } else {
                    Err(status.into())
                };
            }
            Ok(Err(status)) => {
                return if was_live { Ok(()) } else { Err(status.into()) };
            }
        };
        let Some(held) = state.upgrade() else {
            return Ok(());
        };
        let Ok(mut s) = held.lock() else {
            return Ok(());
        };
        s.last_heard = Instant::now();
        match ChangeKind::try_from(message.kind) {
            Ok(ChangeKind::Ready) => {
                let interval =
                    Duration::from_millis(u64::from(message.heartbeat_interval_ms.max(1)));
                silent_limit = interval * SILENT_INTERVALS;
                s.silent_limit = silent_limit;
                // Resumed: what was missed has been replayed (and dropped)
                // before READY. Otherwise (no cursor, or a consent that
                // does not resume and says 0) changes may have been missed.
                let resumed = cursor > 0 && message.sequence >= cursor;
                if !resumed {
                    s.drop_all();
                }
                s.cursor = message.sequence;
                s.live = true;
                was_live = true;
            }
            Ok(ChangeKind::Heartbeat) => {}
            Ok(ChangeKind::Patient) => {
                s.drop_patient(&message.patient_id);
                s.cursor = s.cursor.max(message.sequence);
                let _ = acks.send(WatchChangesRequest {
                    acknowledged_sequence: message.sequence,
                    ..Default::default()
                });
            }
            // Something this build does not understand may be a change.
            Ok(ChangeKind::Unspecified) | Err(_) => s.drop_all(),
        }
    }
    if was_live {
        Ok(())
    } else {
        Err(Error::unavailable(
            "consent's change stream ended before it was ready",
        ))
    }
}
