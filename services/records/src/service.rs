//! What records does with an access: consent first, audit always, data last.

use std::{sync::Arc, time::Duration};

use prost::Message;
use sharedcare_kit::{Error, auth::Principal};
use sharedcare_proto::{
    audit::v1::{Action, AuditEvent, Outcome},
    common::v1::Purpose,
};
use tokio::sync::Mutex;

use crate::{
    access::{AccessEvent, AuditSink, ConsentGate, Decision, category_to_pb},
    domain::{Category, PatientId, Record, RecordId, ValidResource},
    store::RecordStore,
};

pub struct Records {
    store: Arc<dyn RecordStore>,
    consent: Arc<dyn ConsentGate>,
    audit: Arc<dyn AuditSink>,
    /// One relay at a time drains the outbox, so events reach audit in order.
    relay: Mutex<()>,
    pub max_resource_bytes: usize,
}

impl Records {
    pub fn new(
        store: Arc<dyn RecordStore>,
        consent: Arc<dyn ConsentGate>,
        audit: Arc<dyn AuditSink>,
        max_resource_bytes: usize,
    ) -> Self {
        Records {
            store,
            consent,
            audit,
            relay: Mutex::new(()),
            max_resource_bytes,
        }
    }

    /// Asks consent; a denial is audited (best effort: the answer is no
    /// either way) and returned as PERMISSION_DENIED with the reason.
    async fn decide(
        &self,
        access: &AccessEvent<'_>,
        category: Category,
    ) -> Result<Decision, Error> {
        let decision = self
            .consent
            .evaluate(
                access.patient_id,
                access.principal.actor(),
                access.purpose,
                category_to_pb(category),
            )
            .await?;
        if decision.permitted {
            return Ok(decision);
        }
        let event = access.event(
            Outcome::Denied,
            &decision.reason_code(),
            &decision.decision_id,
        );
        if let Err(e) = self.audit.append(event).await {
            tracing::warn!(error = %e.message, "a denial could not be audited");
        }
        Err(decision.denial())
    }

    /// Stores a new resource as version 1. The audit event is written in the
    /// same transaction (outbox), then delivered.
    pub async fn create(
        &self,
        principal: &Principal,
        patient: PatientId,
        resource: ValidResource,
        category: Category,
        purpose: Purpose,
    ) -> Result<Record, Error> {
        let id = RecordId::new();
        let resource_type = resource.resource_type().to_owned();
        let access = AccessEvent {
            principal,
            patient_id: patient.as_str(),
            action: Action::Create,
            purpose,
            resource_type: &resource_type,
            record_id: id.as_str(),
            source_service: crate::SERVICE_NAME,
        };
        let decision = self.decide(&access, category).await?;
        let event = access.event(
            Outcome::Success,
            &decision.reason_code(),
            &decision.decision_id,
        );
        let now = chrono::Utc::now();
        let record = Record {
            resource_json: resource.stamp(&id, 1, now),
            id,
            patient_id: patient.clone(),
            resource_type,
            version: 1,
            last_updated: now,
            category,
        };
        self.store
            .create(
                record.clone(),
                event.event_id.clone(),
                event.encode_to_vec(),
            )
            .await?;
        // Durable already; if audit is down the relay delivers it later.
        if let Err(e) = self.deliver_outbox().await {
            tracing::warn!(error = %e.message, "audit outbox not yet delivered");
        }
        Ok(record)
    }

    /// Reads the current version. Served only once consent permits and the
    /// read is in the audit log.
    pub async fn get(
        &self,
        principal: &Principal,
        patient: PatientId,
        id: RecordId,
        purpose: Purpose,
    ) -> Result<Record, Error> {
        let found = self.store.current(&patient, &id).await?;
        let (category, resource_type) = match &found {
            Some(r) => (r.category, r.resource_type.clone()),
            None => (Category::General, String::new()),
        };
        let access = AccessEvent {
            principal,
            patient_id: patient.as_str(),
            action: Action::Read,
            purpose,
            resource_type: &resource_type,
            record_id: id.as_str(),
            source_service: crate::SERVICE_NAME,
        };
        // Consent before NOT_FOUND: whether a record exists is itself data.
        let decision = self.decide(&access, category).await?;
        let record = found.ok_or_else(|| Error::not_found("no such record for this patient"))?;
        self.audit
            .append(access.event(
                Outcome::Success,
                &decision.reason_code(),
                &decision.decision_id,
            ))
            .await?;
        Ok(record)
    }

    /// Sends undelivered audit events in order; stops at the first failure.
    pub async fn deliver_outbox(&self) -> Result<usize, Error> {
        let _one_relay = self.relay.lock().await;
        let mut delivered = 0;
        loop {
            let batch = self.store.pending_outbox(100).await?;
            if batch.is_empty() {
                return Ok(delivered);
            }
            for entry in batch {
                let event = AuditEvent::decode(entry.payload.as_slice())
                    .map_err(|e| Error::internal("decoding an outbox event", e))?;
                self.audit.append(event).await?;
                self.store.mark_delivered(entry.sequence).await?;
                delivered += 1;
            }
        }
    }

    /// Retries outbox delivery for as long as the process runs.
    pub fn spawn_outbox_relay(self: &Arc<Self>, every: Duration) {
        let records = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(records) = records.upgrade() else {
                    return;
                };
                match records.deliver_outbox().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(delivered = n, "audit outbox delivered"),
                    Err(e) => tracing::warn!(error = %e.message, "audit outbox delivery failed"),
                }
            }
        });
    }
}
