//! What records does with an access: consent first, audit always, data last.
//!
//! Every audit event goes into records' own outbox (kit::outbox) before the
//! access is answered — a write's in the write's transaction, a read's or a
//! denial's group-committed with its neighbours' — and the outbox's relay
//! ships them to audit in batches. When audit has been unreachable too long
//! the outbox refuses new accesses (fail closed).

use std::sync::Arc;

use prost::Message;
use sharedcare_kit::{Error, auth::Principal, outbox::Outbox};
use sharedcare_proto::{
    audit::v1::{Action, Outcome},
    common::v1::Purpose,
};

use crate::{
    access::{AccessEvent, ConsentGate, Decision, category_to_pb},
    domain::{Category, PatientId, Record, RecordId, ValidResource},
    store::RecordStore,
};

pub struct Records {
    store: Arc<dyn RecordStore>,
    consent: Arc<dyn ConsentGate>,
    outbox: Arc<Outbox>,
    pub max_resource_bytes: usize,
}

impl Records {
    pub fn new(
        store: Arc<dyn RecordStore>,
        consent: Arc<dyn ConsentGate>,
        outbox: Arc<Outbox>,
        max_resource_bytes: usize,
    ) -> Self {
        Records {
            store,
            consent,
            outbox,
            max_resource_bytes,
        }
    }

    /// The outbox that holds this service's audit events.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Asks consent; a denial is recorded in the outbox (the answer is no
    /// even if that fails) and returned as PERMISSION_DENIED with the reason.
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
        if let Err(e) = self.outbox.record(&event).await {
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
        self.outbox.admit()?;
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
        // Durable already; the relay delivers it.
        self.outbox.wake();
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
        self.outbox.admit()?;
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
        self.outbox
            .record(&access.event(
                Outcome::Success,
                &decision.reason_code(),
                &decision.decision_id,
            ))
            .await?;
        Ok(record)
    }
}
