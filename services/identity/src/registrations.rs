//! Where a patient is registered with a GP, carried to consent: a
//! registration or a demographics version that changes the practice queues
//! the patient in the same transaction (the store's `claim_registrations`),
//! and one relay per replica tells consent (`RecordGpRegistration`), which
//! creates the practice's registered-GP relationship and ends any other.
//!
//! Delivery is at least once and idempotent: the relay sends the patient's
//! practice as it stands when sent, leases what it sends so replicas do not
//! send the same patient together, and forgets a patient only when the
//! version it sent is still the latest queued. Until consent has heard,
//! the old practice keeps its relationship and the new one has none: the
//! change is late, never lost, and never grants more than was recorded.

use std::{
    collections::VecDeque,
    sync::{Arc, Weak},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sharedcare_kit::{Error, client::ServiceTokens, peers::BoxFuture, proto_time::to_proto};
use sharedcare_proto::consent::v1::{
    RecordGpRegistrationRequest, consent_service_client::ConsentServiceClient,
};
use tokio::sync::Notify;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::{
    domain::OdsCode,
    store::{IdentityStore, PendingRegistration},
};

/// Patients sent per round before the queue is read again.
const BATCH: u32 = 100;
/// How long a replica holds what it is sending before another may.
const LEASE: Duration = Duration::from_secs(10);
/// How often the relay looks when nothing woke it (another replica's
/// changes, and retries).
const POLL: Duration = Duration::from_secs(1);
/// Longest wait between attempts while consent is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One patient's registration as consent is told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpRegistration {
    pub patient_id: String,
    /// None: registered with no practice.
    pub practice: Option<OdsCode>,
    /// When identity recorded it.
    pub since: DateTime<Utc>,
}

/// Where registrations go: consent's `RecordGpRegistration`.
pub trait RegistrationSink: Send + Sync + 'static {
    fn record(&self, registration: GpRegistration) -> BoxFuture<'_, ()>;
}

/// consent over gRPC, as identity.
pub struct GrpcRegistrations {
    client: ConsentServiceClient<Channel>,
    tokens: Arc<dyn ServiceTokens>,
    timeout: Duration,
}

impl GrpcRegistrations {
    pub fn new(channel: Channel, tokens: Arc<dyn ServiceTokens>, timeout: Duration) -> Self {
        GrpcRegistrations {
            client: ConsentServiceClient::new(channel),
            tokens,
            timeout,
        }
    }
}

impl RegistrationSink for GrpcRegistrations {
    fn record(&self, registration: GpRegistration) -> BoxFuture<'_, ()> {
        Box::pin(
            async move {
                let message = RecordGpRegistrationRequest {
                    patient_id: registration.patient_id,
                    organisation_ods_code: registration
                        .practice
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default(),
                    registered_time: Some(to_proto(registration.since)),
                };
                let request =
                    sharedcare_kit::client::request(message, self.tokens.as_ref(), self.timeout)
                        .await?;
                sharedcare_kit::client::answered(
                    self.client.clone().record_gp_registration(request).await,
                )
                .map_err(Error::from)?;
                Ok(())
            }
            .instrument(sharedcare_kit::client::call_span(
                "sharedcare.consent.v1.ConsentService/RecordGpRegistration",
            )),
        )
    }
}

/// The relay: one per replica, started with the service.
pub struct RegistrationRelay {
    store: Arc<dyn IdentityStore>,
    sink: Arc<dyn RegistrationSink>,
    wake: Arc<Notify>,
    /// Claimed and not yet taken by consent.
    held: tokio::sync::Mutex<VecDeque<PendingRegistration>>,
}

impl RegistrationRelay {
    /// Starts delivering what `store` queues to `sink`, until the relay is
    /// dropped.
    pub fn start(store: Arc<dyn IdentityStore>, sink: Arc<dyn RegistrationSink>) -> Arc<Self> {
        let relay = Arc::new(RegistrationRelay {
            store,
            sink,
            wake: Arc::new(Notify::new()),
            held: tokio::sync::Mutex::new(VecDeque::new()),
        });
        tokio::spawn(run(Arc::downgrade(&relay), relay.wake.clone()));
        relay
    }

    /// A change was queued: deliver it soon.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// One round now: delivers what is queued and free, returns how many.
    /// What consent did not take stays held, and is tried first next time.
    pub async fn deliver(&self) -> Result<u64, Error> {
        let mut held = self.held.lock().await;
        let mut delivered = 0;
        loop {
            let mut full = false;
            if held.is_empty() {
                let lease = Utc::now()
                    + chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(10));
                let claimed = self.store.claim_registrations(BATCH, lease).await?;
                full = claimed.len() as u32 >= BATCH;
                held.extend(claimed);
            }
            while let Some(pending) = held.front() {
                self.deliver_one(pending).await?;
                held.pop_front();
                delivered += 1;
            }
            if !full {
                return Ok(delivered);
            }
        }
    }

    async fn deliver_one(&self, pending: &PendingRegistration) -> Result<(), Error> {
        // Sent as it stands now: a later change sends the later practice,
        // and stays queued until that version is the one delivered.
        if let Some(patient) = self.store.get_patient(&pending.patient_id).await? {
            let sent = self
                .sink
                .record(GpRegistration {
                    patient_id: patient.id,
                    practice: patient.demographics.gp_practice,
                    since: patient.updated_at,
                })
                .await;
            match sent {
                Ok(()) => {}
                // consent refuses what identity validated only if the two
                // disagree on a format: retrying cannot help, and must not
                // hold back every registration queued after it.
                Err(e) if e.code == sharedcare_kit::error::Code::InvalidArgument => {
                    tracing::error!(
                        error = %e.message,
                        "consent refused a GP registration as invalid; it is dropped"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        self.store.registration_delivered(pending).await
    }
}

async fn run(relay: Weak<RegistrationRelay>, wake: Arc<Notify>) {
    let mut backoff = POLL;
    loop {
        let Some(live) = relay.upgrade() else { return };
        let outcome = live.deliver().await;
        drop(live);
        let wait = match outcome {
            Ok(_) => {
                backoff = POLL;
                POLL
            }
            Err(e) => {
                // No patient id here: the code and message say enough.
                tracing::warn!(
                    code = ?e.code,
                    error = %e.message,
                    "GP registrations could not be delivered to consent; retrying"
                );
                backoff = (backoff * 2).min(MAX_BACKOFF);
                backoff
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
