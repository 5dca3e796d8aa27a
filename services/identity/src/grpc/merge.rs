//! Merges over gRPC: MergePatients, UnmergePatients, WatchPatientMerges,
//! and following a merged id to the patient that stands for it now.

use std::time::Duration;

use futures::StreamExt;
use sharedcare_kit::{Error, access::Grant, proto_time::to_proto};
use sharedcare_proto::{
    audit::v1::{Action, Outcome},
    common::v1::Purpose,
    identity::v1 as pb,
};

use super::{IdentityGrpc, patient_access, patient_to_pb, required_id, two_patient_ids};
use crate::domain::{MAX_MERGE_CHAIN, MergeEvent, MergeKind, Patient};

/// Merges replayed or sent per read of the log.
const MERGE_PAGE: u32 = 500;
/// How often a watch looks at the log when no local merge woke it (another
/// replica's), and how often it says it is alive.
const WATCH_POLL: Duration = Duration::from_millis(250);
const WATCH_HEARTBEAT: Duration = Duration::from_secs(5);

fn merge_event_to_pb(m: &MergeEvent) -> pb::PatientMergeEvent {
    pb::PatientMergeEvent {
        sequence: m.sequence,
        kind: match m.kind {
            MergeKind::Merged => pb::MergeEventKind::Merged,
            MergeKind::Unmerged => pb::MergeEventKind::Unmerged,
        } as i32,
        superseded_patient_id: m.superseded.clone(),
        surviving_patient_id: m.surviving.clone(),
        time: Some(to_proto(m.recorded_at)),
    }
}

fn marker(kind: pb::MergeEventKind, sequence: u64) -> pb::PatientMergeEvent {
    pb::PatientMergeEvent {
        sequence,
        kind: kind as i32,
        ..Default::default()
    }
}

impl IdentityGrpc {
    /// The patient standing for `patient` now: itself, or the end of its
    /// chain of merges; with `patient`'s id when that is another.
    pub(super) async fn current(
        &self,
        patient: Patient,
    ) -> Result<(Patient, Option<String>), Error> {
        let asked = patient.id.clone();
        let mut current = patient;
        for _ in 0..MAX_MERGE_CHAIN {
            let Some(next) = current.superseded_by.clone() else {
                let from = (current.id != asked).then_some(asked);
                return Ok((current, from));
            };
            current = self.store.get_patient(&next).await?.ok_or_else(|| {
                Error::internal("following a merge", "a merge points to no patient")
            })?;
        }
        Err(Error::internal(
            "following a merge",
            "the chain of merges is too long",
        ))
    }

    /// `current` for each of `patients`.
    pub(super) async fn current_of_each(
        &self,
        patients: Vec<Patient>,
    ) -> Result<Vec<(Patient, Option<String>)>, Error> {
        let mut out = Vec::with_capacity(patients.len());
        for p in patients {
            out.push(self.current(p).await?);
        }
        Ok(out)
    }

    fn merge_audit(
        &self,
        grant: &Grant,
        ids: [&str; 2],
        reason: &str,
    ) -> Result<Vec<sharedcare_proto::audit::v1::AuditEvent>, Error> {
        let caller = &grant.principal;
        let purpose = caller.purpose_for("purpose", Purpose::Unspecified as i32)?;
        Ok(ids
            .into_iter()
            .map(|id| {
                patient_access(caller, id, Action::Update, purpose).event(
                    Outcome::Success,
                    reason,
                    "",
                )
            })
            .collect())
    }

    /// After a merge or unmerge committed: the relay and the watchers.
    fn merged(&self) {
        self.peers.outbox.wake();
        self.merges.notify_waiters();
    }

    pub(super) async fn merge(
        &self,
        grant: &Grant,
        req: pb::MergePatientsRequest,
    ) -> Result<pb::MergePatientsResponse, Error> {
        let (superseded, surviving) = two_patient_ids(
            ("superseded_patient_id", &req.superseded_patient_id),
            ("surviving_patient_id", &req.surviving_patient_id),
        )?;
        let audit = self.merge_audit(grant, [&superseded, &surviving], "MERGED")?;
        let logged = self
            .store
            .merge_patients(
                MergeEvent {
                    sequence: 0,
                    kind: MergeKind::Merged,
                    superseded,
                    surviving: surviving.clone(),
                    recorded_by: grant.principal.id.clone(),
                    recorded_at: chrono::Utc::now(),
                },
                audit,
            )
            .await?;
        self.merged();
        let patient = self
            .store
            .get_patient(&surviving)
            .await?
            .ok_or_else(|| Error::internal("merging patients", "the survivor is gone"))?;
        Ok(pb::MergePatientsResponse {
            surviving: Some(patient_to_pb(patient, &grant.principal)),
            sequence: logged.sequence,
        })
    }

    pub(super) async fn unmerge(
        &self,
        grant: &Grant,
        req: pb::UnmergePatientsRequest,
    ) -> Result<pb::UnmergePatientsResponse, Error> {
        let superseded = required_id("superseded_patient_id", &req.superseded_patient_id)?;
        let patient = self
            .store
            .get_patient(&superseded)
            .await?
            .ok_or_else(|| crate::store::refusals::unknown("superseded_patient_id"))?;
        let surviving = patient
            .superseded_by
            .ok_or_else(crate::store::refusals::not_merged)?;
        let audit = self.merge_audit(grant, [&superseded, &surviving], "UNMERGED")?;
        let logged = self
            .store
            .unmerge_patient(
                MergeEvent {
                    sequence: 0,
                    kind: MergeKind::Unmerged,
                    superseded: superseded.clone(),
                    surviving,
                    recorded_by: grant.principal.id.clone(),
                    recorded_at: chrono::Utc::now(),
                },
                audit,
            )
            .await?;
        self.merged();
        let patient = self
            .store
            .get_patient(&superseded)
            .await?
            .ok_or_else(|| Error::internal("unmerging a patient", "the patient is gone"))?;
        Ok(pb::UnmergePatientsResponse {
            patient: Some(patient_to_pb(patient, &grant.principal)),
            sequence: logged.sequence,
        })
    }

    /// The merge log from `after`: the replay, READY, then each merge as it
    /// commits (woken by this replica's merges, polling for others'), with
    /// heartbeats. A read that fails ends the stream with its error.
    pub(super) fn watch_merges(
        &self,
        after: u64,
    ) -> futures::stream::BoxStream<'static, Result<pb::PatientMergeEvent, tonic::Status>> {
        let store = self.store.clone();
        let wake = self.merges.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let send = async |event: Result<pb::PatientMergeEvent, tonic::Status>| {
                tx.send(event).await.is_ok()
            };
            let mut last = after;
            let mut ready = false;
            let mut quiet_since = tokio::time::Instant::now();
            loop {
                // Registered before reading, so a merge committed after the
                // read still wakes the wait below.
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let page = match store.merges_after(last, MERGE_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        send(Err(e.into())).await;
                        return;
                    }
                };
                let full = page.len() == MERGE_PAGE as usize;
                for m in &page {
                    last = m.sequence;
                    if !send(Ok(merge_event_to_pb(m))).await {
                        return;
                    }
                    quiet_since = tokio::time::Instant::now();
                }
                if full {
                    continue;
                }
                if !ready {
                    ready = true;
                    if !send(Ok(marker(pb::MergeEventKind::Ready, last))).await {
                        return;
                    }
                }
                if quiet_since.elapsed() >= WATCH_HEARTBEAT {
                    if !send(Ok(marker(pb::MergeEventKind::Heartbeat, last))).await {
                        return;
                    }
                    quiet_since = tokio::time::Instant::now();
                }
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(WATCH_POLL) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }
}
