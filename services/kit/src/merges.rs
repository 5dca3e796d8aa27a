//! Following identity's patient merges: which ids stand for the same person.
//!
//! identity merges a duplicate patient into the one that remains and logs
//! it (WatchPatientMerges). Services that keep data by patient id (records,
//! consent) follow that log so that reads and decisions for either id reach
//! the survivor's data: [`PatientMerges::family`] gives every id standing
//! for the person, the current one first.
//!
//! Fail closed: until the log has been replayed, or once the stream has
//! been silent for three heartbeats, `family` is UNAVAILABLE — a decision
//! that missed a merge could miss the patient's objection recorded under
//! the other id.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use sharedcare_proto::identity::v1::{
    MergeEventKind, PatientMergeEvent, WatchPatientMergesRequest,
    identity_service_client::IdentityServiceClient,
};
use tokio::sync::broadcast;
use tonic::transport::Channel;

use crate::{Error, client::ServiceTokens, ids::PatientId};

/// identity says it is alive at least this often (its watch heartbeat is
/// 5 s); three missed and the merges known here are not vouched for.
pub(crate) const SILENT_LIMIT: Duration = Duration::from_secs(15);
/// How long a question waits for merges to become known before it is
/// refused: a service that has just started (or lost its stream) is
/// usually caught up within milliseconds.
pub const READY_WAIT: Duration = Duration::from_secs(3);
/// The most merges followed from one id: a survivor is never superseded,
/// so a longer chain is a fault.
const MAX_CHAIN: usize = 32;

/// A merge or unmerge heard live (after the replay), for whoever keeps
/// anything by patient id: every id of `family` may now mean another
/// person's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeNotice {
    pub family: Vec<String>,
}

#[derive(Default)]
struct State {
    /// superseded → surviving, as merged now.
    surviving: HashMap<String, String>,
    /// surviving → the ids merged directly into it.
    merged_into: HashMap<String, BTreeSet<String>>,
    /// The last sequence applied.
    sequence: u64,
    /// The replay has been received at least once.
    ready: bool,
    last_heard: Option<Instant>,
}

impl State {
    fn apply(&mut self, event: &PatientMergeEvent) {
        let (old, new) = (
            event.superseded_patient_id.clone(),
            event.surviving_patient_id.clone(),
        );
        match MergeEventKind::try_from(event.kind) {
            Ok(MergeEventKind::Merged) => {
                self.merged_into
                    .entry(new.clone())
                    .or_default()
                    .insert(old.clone());
                self.surviving.insert(old, new);
            }
            Ok(MergeEventKind::Unmerged) => {
                if let Some(set) = self.merged_into.get_mut(&new) {
                    set.remove(&old);
                    if set.is_empty() {
                        self.merged_into.remove(&new);
                    }
                }
                self.surviving.remove(&old);
            }
            _ => return,
        }
        self.sequence = self.sequence.max(event.sequence);
    }

    fn current(&self, id: &str) -> Result<String, Error> {
        let mut current = id;
        for _ in 0..MAX_CHAIN {
            match self.surviving.get(current) {
                Some(next) => current = next,
                None => return Ok(current.to_owned()),
            }
        }
        Err(Error::internal(
            "following patient merges",
            "the chain of merges is too long",
        ))
    }

    fn family(&self, id: &str) -> Result<Vec<String>, Error> {
        let current = self.current(id)?;
        let mut family = vec![current.clone()];
        let mut next = vec![current];
        while let Some(id) = next.pop() {
            for merged in self.merged_into.get(&id).into_iter().flatten() {
                if family.len() > MAX_CHAIN * MAX_CHAIN {
                    return Err(Error::internal(
                        "following patient merges",
                        "too many patients merged into one",
                    ));
                }
                family.push(merged.clone());
                next.push(merged.clone());
            }
        }
        Ok(family)
    }
}

/// The patient merges known to this service.
#[derive(Clone)]
pub struct PatientMerges {
    /// `None`: merges are not followed; every id stands for itself.
    state: Option<Arc<Mutex<State>>>,
    notices: broadcast::Sender<MergeNotice>,
}

impl PatientMerges {
    /// Not following merges: every id stands for itself alone (a service
    /// run without identity, or a test of one service).
    pub fn none() -> Self {
        PatientMerges {
            state: None,
            notices: broadcast::channel(1).0,
        }
    }

    /// Follows identity's merge log over `identity` as this service
    /// (`tokens`), reconnecting and resuming whenever the stream ends, for
    /// as long as any clone of the result lives.
    pub fn follow(identity: Channel, tokens: Arc<dyn ServiceTokens>) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (notices, _) = broadcast::channel(256);
        tokio::spawn(watch(
            IdentityServiceClient::new(identity),
            tokens,
            Arc::downgrade(&state),
            notices.clone(),
        ));
        PatientMerges {
            state: Some(state),
            notices,
        }
    }

    fn fresh(&self) -> Result<Option<std::sync::MutexGuard<'_, State>>, Error> {
        let Some(state) = &self.state else {
            return Ok(None);
        };
        let state = state
            .lock()
            .map_err(|_| Error::internal("following patient merges", "a writer panicked"))?;
        let heard = state.last_heard.is_some_and(|t| t.elapsed() < SILENT_LIMIT);
        if !state.ready || !heard {
            return Err(Error::unavailable(
                "identity's patient merges are not known right now, so patients cannot be \
                 told apart safely; try again shortly",
            ));
        }
        Ok(Some(state))
    }

    /// Every id standing for the same person as `id`: the current one
    /// first, then each merged into it. Waits up to [`READY_WAIT`] for
    /// merges to become known (a service just started, a stream just
    /// resumed), then UNAVAILABLE.
    pub async fn family(&self, id: &PatientId) -> Result<Vec<PatientId>, Error> {
        self.known(|state| state.family(id.as_str()))
            .await?
            .iter()
            .map(|id| {
                PatientId::parse("patient_id", id)
                    .map_err(|e| Error::internal("following patient merges", e))
            })
            .collect()
    }

    async fn known<T>(&self, answer: impl Fn(&State) -> Result<T, Error>) -> Result<T, Error> {
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let unknown = match self.fresh() {
                Ok(Some(state)) => return answer(&state),
                // Not following: every id alone.
                Ok(None) => return answer(&State::default()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(unknown);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Merges heard from now on, as they arrive.
    pub fn subscribe(&self) -> broadcast::Receiver<MergeNotice> {
        self.notices.subscribe()
    }

    /// Waits (up to `limit`) until the merge log has been replayed: for
    /// start-up and tests.
    pub async fn wait_ready(&self, limit: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        loop {
            if self.fresh().is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::unavailable(
                    "identity's patient merges could not be read in time",
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn watch(
    client: IdentityServiceClient<Channel>,
    tokens: Arc<dyn ServiceTokens>,
    state: Weak<Mutex<State>>,
    notices: broadcast::Sender<MergeNotice>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if state.strong_count() == 0 {
            return;
        }
        match follow(client.clone(), tokens.as_ref(), &state, &notices).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::debug!(error = %e.message, "identity's merge stream is down");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One stream, resumed after the last sequence applied, until it ends,
/// errs or falls silent.
async fn follow(
    mut client: IdentityServiceClient<Channel>,
    tokens: &dyn ServiceTokens,
    state: &Weak<Mutex<State>>,
    notices: &broadcast::Sender<MergeNotice>,
) -> Result<(), Error> {
    let after = state
        .upgrade()
        .and_then(|held| held.lock().ok().map(|s| s.sequence))
        .unwrap_or(0);
    let request = crate::client::stream_request(
        WatchPatientMergesRequest {
            resume_after_sequence: after,
        },
        tokens,
    )
    .await?;
    let mut stream = client
        .watch_patient_merges(request)
        .await
        .map_err(Error::from)?
        .into_inner();
    // Merges replayed on a first start are history; on a resume they are
    // news (they happened while the stream was down).
    let mut announce = after > 0;
    loop {
        let message = match tokio::time::timeout(SILENT_LIMIT, stream.message()).await {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(status)) => return Err(status.into()),
        };
        let Some(held) = state.upgrade() else {
            return Ok(());
        };
        let notice = {
            let Ok(mut s) = held.lock() else {
                return Ok(());
            };
            s.last_heard = Some(Instant::now());
            match MergeEventKind::try_from(message.kind) {
                Ok(MergeEventKind::Ready) => {
                    s.ready = true;
                    announce = true;
                    None
                }
                Ok(MergeEventKind::Merged | MergeEventKind::Unmerged) => {
                    // The family before and after: both may now mean
                    // other data.
                    let mut family = s.family(&message.surviving_patient_id)?;
                    family.push(message.superseded_patient_id.clone());
                    s.apply(&message);
                    family.extend(s.family(&message.superseded_patient_id)?);
                    family.sort();
                    family.dedup();
                    announce.then_some(MergeNotice { family })
                }
                _ => None,
            }
        };
        if let Some(notice) = notice {
            // No subscribers is fine.
            let _ = notices.send(notice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: MergeEventKind, sequence: u64, old: &str, new: &str) -> PatientMergeEvent {
        PatientMergeEvent {
            sequence,
            kind: kind as i32,
            superseded_patient_id: old.into(),
            surviving_patient_id: new.into(),
            time: None,
        }
    }

    #[test]
    fn families_follow_chains_of_merges_and_unmerges() {
        let mut s = State::default();
        s.apply(&event(MergeEventKind::Merged, 1, "a", "b"));
        s.apply(&event(MergeEventKind::Merged, 2, "b", "c"));
        s.apply(&event(MergeEventKind::Merged, 3, "d", "c"));
        assert_eq!(s.current("a").expect("current"), "c");
        let mut family = s.family("a").expect("family");
        assert_eq!(family[0], "c");
        family.sort();
        assert_eq!(family, ["a", "b", "c", "d"]);
        assert_eq!(s.family("e").expect("family"), ["e"]);
        s.apply(&event(MergeEventKind::Unmerged, 4, "b", "c"));
        assert_eq!(s.current("a").expect("current"), "b");
        let mut family = s.family("b").expect("family");
        family.sort();
        assert_eq!(family, ["a", "b"]);
        assert_eq!(s.family("d").expect("family"), ["c", "d"]);
        assert_eq!(s.sequence, 4);
    }

    fn id(s: &str) -> PatientId {
        PatientId::parse("patient_id", s).expect("valid")
    }

    #[tokio::test]
    async fn not_following_merges_every_id_stands_for_itself() {
        let merges = PatientMerges::none();
        assert_eq!(merges.family(&id("a")).await.expect("family"), [id("a")]);
    }

    #[tokio::test]
    async fn merges_not_known_in_time_are_unavailable() {
        let merges = PatientMerges {
            state: Some(Arc::new(Mutex::new(State::default()))),
            notices: broadcast::channel(1).0,
        };
        let err = merges.family(&id("a")).await.expect_err("not ready");
        assert_eq!(err.code, crate::error::Code::Unavailable);
    }
}
