//! The two platform services every access to a patient's data passes
//! through: consent (may this actor do this?) and audit (it happened).
//! Traits here, gRPC clients below; a failure of either is UNAVAILABLE and
//! the access does not happen (fail closed).

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use sharedcare_proto::{
    audit::v1::{
        AppendBatchRequest, AppendRequest, AuditEvent, audit_service_client::AuditServiceClient,
    },
    common::v1::{Actor, Purpose, RecordCategory},
    consent::v1::{
        BreakGlass, Decision as PbDecision, EvaluateRequest, EvaluateResponse,
        consent_service_client::ConsentServiceClient,
    },
};
use tonic::transport::Channel;
use tracing::Instrument;

use crate::{Error, client::ServiceTokens};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// consent's answer, reduced to what a service acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub permitted: bool,
    pub decision_id: String,
    /// (code, message) pairs, most important first.
    pub reasons: Vec<(String, String)>,
    /// Unless the patient's consent changes first, the decision stands
    /// until then (None: no time limit known).
    pub valid_until: Option<chrono::DateTime<chrono::Utc>>,
    /// What the caller must do when acting on a permit (obligation codes,
    /// all among [`Decision::OBLIGATIONS`]).
    pub obligations: Vec<String>,
}

impl Decision {
    /// The obligations a service acting on consent's decisions knows how to
    /// meet: audit the access; flag it as break-glass, which is also how the
    /// organisation's privacy officer hears of it (audit's
    /// `ListBreakGlassAccesses` lists their organisation's flagged accesses,
    /// across patients). A permit with any other is refused: an obligation
    /// nobody meets is a condition broken.
    pub const OBLIGATIONS: [&str; 3] = ["AUDIT", "BREAK_GLASS", "NOTIFY_PRIVACY_OFFICER"];

    /// Whether the access must be flagged as break-glass in the audit trail.
    pub fn break_glass(&self) -> bool {
        self.obligations.iter().any(|o| o == "BREAK_GLASS")
    }

    /// The first reason's code, for the audit trail and ErrorInfo.
    pub fn reason_code(&self) -> String {
        self.reasons
            .first()
            .map(|(code, _)| code.clone())
            .unwrap_or_else(|| "NO_REASON_GIVEN".into())
    }

    /// "CODE: message; CODE: message", for a PERMISSION_DENIED message.
    pub fn explain(&self) -> String {
        self.reasons
            .iter()
            .map(|(code, message)| format!("{code}: {message}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// PERMISSION_DENIED carrying the consent reason.
    pub fn denial(&self) -> Error {
        Error::permission_denied(format!("consent denied: {}", self.explain()))
            .with_reason(self.reason_code())
    }
}

pub trait ConsentGate: Send + Sync + 'static {
    fn evaluate(
        &self,
        patient_id: &str,
        actor: Actor,
        purpose: Purpose,
        category: RecordCategory,
    ) -> BoxFuture<'_, Decision>;

    /// Drops anything kept about this patient's decisions (a merge made
    /// them another person's). Nothing to do for a gate that keeps nothing.
    fn forget(&self, _patient_id: &str) {}

    /// As `evaluate`, asking for break-glass with `reason`. Never answered
    /// from a cache: consent records the grant. A gate that cannot ask
    /// refuses.
    fn evaluate_break_glass(
        &self,
        _patient_id: &str,
        _actor: Actor,
        _purpose: Purpose,
        _category: RecordCategory,
        _reason: &str,
    ) -> BoxFuture<'_, Decision> {
        Box::pin(async {
            Err(Error::unavailable(
                "break-glass cannot be asked for through this consent gate",
            ))
        })
    }
}

pub trait AuditSink: Send + Sync + 'static {
    fn append(&self, event: AuditEvent) -> BoxFuture<'_, ()>;
}

/// consent over gRPC, as this service, on the user's behalf.
pub struct GrpcConsent {
    client: ConsentServiceClient<Channel>,
    tokens: Arc<dyn ServiceTokens>,
    timeout: Duration,
}

impl GrpcConsent {
    pub fn new(channel: Channel, tokens: Arc<dyn ServiceTokens>, timeout: Duration) -> Self {
        GrpcConsent {
            client: ConsentServiceClient::new(channel),
            tokens,
            timeout,
        }
    }
}

/// consent's answer as a [`Decision`].
fn decision_from(response: EvaluateResponse) -> Decision {
    let obligations: Vec<String> = response.obligations.into_iter().map(|o| o.code).collect();
    let unmet = obligations
        .iter()
        .any(|o| !Decision::OBLIGATIONS.contains(&o.as_str()));
    Decision {
        // Anything but an explicit permit whose obligations can be met is a
        // denial.
        permitted: response.decision == PbDecision::Permit as i32 && !unmet,
        decision_id: response.decision_id,
        reasons: response
            .reasons
            .into_iter()
            .map(|r| (r.code, r.message))
            .collect(),
        // An unreadable limit is treated as already reached.
        valid_until: crate::proto_time::from_proto("valid_until", response.valid_until.as_ref())
            .unwrap_or_else(|_| Some(chrono::Utc::now())),
        obligations,
    }
}

/// consent could not answer: access is refused (fail closed).
fn unavailable(e: Error) -> Error {
    Error::unavailable(format!(
        "consent could not be asked, so access is refused ({})",
        e.message
    ))
}

impl GrpcConsent {
    /// Asks consent; a status it answers with goes through `refused` (an
    /// outage unless the caller knows better).
    async fn ask(
        &self,
        message: EvaluateRequest,
        refused: fn(tonic::Status) -> Error,
    ) -> Result<Decision, Error> {
        async {
            let request = crate::client::request(message, self.tokens.as_ref(), self.timeout)
                .await
                .map_err(unavailable)?;
            let response = crate::client::answered(self.client.clone().evaluate(request).await)
                .map_err(refused)?
                .into_inner();
            Ok(decision_from(response))
        }
        .instrument(crate::client::call_span(
            "sharedcare.consent.v1.ConsentService/Evaluate",
        ))
        .await
    }
}

impl ConsentGate for GrpcConsent {
    fn evaluate(
        &self,
        patient_id: &str,
        actor: Actor,
        purpose: Purpose,
        category: RecordCategory,
    ) -> BoxFuture<'_, Decision> {
        let message = EvaluateRequest {
            patient_id: patient_id.to_owned(),
            actor: Some(actor),
            purpose: purpose as i32,
            category: category as i32,
            ..Default::default()
        };
        Box::pin(self.ask(message, |s| unavailable(Error::from(s))))
    }

    fn evaluate_break_glass(
        &self,
        patient_id: &str,
        actor: Actor,
        purpose: Purpose,
        category: RecordCategory,
        reason: &str,
    ) -> BoxFuture<'_, Decision> {
        let message = EvaluateRequest {
            patient_id: patient_id.to_owned(),
            actor: Some(actor),
            purpose: purpose as i32,
            category: category as i32,
            break_glass: Some(BreakGlass {
                reason: reason.to_owned(),
            }),
            ..Default::default()
        };
        // consent's refusal of the break-glass request itself (no reason, a
        // role not allowed it, a purpose it is not for) is the caller's to
        // hear, not an outage.
        Box::pin(self.ask(message, |s| {
            match s.code() {
                tonic::Code::InvalidArgument => Error::invalid(
                    "break_glass_reason",
                    s.message()
                        .split_once(": ")
                        .map_or(s.message(), |(_, m)| m)
                        .to_owned(),
                ),
                tonic::Code::PermissionDenied => Error::permission_denied(s.message().to_owned()),
                _ => unavailable(Error::from(s)),
            }
        }))
    }
}

/// audit over gRPC, as this service.
pub struct GrpcAudit {
    client: AuditServiceClient<Channel>,
    tokens: Arc<dyn ServiceTokens>,
    timeout: Duration,
}

impl GrpcAudit {
    pub fn new(channel: Channel, tokens: Arc<dyn ServiceTokens>, timeout: Duration) -> Self {
        GrpcAudit {
            client: AuditServiceClient::new(channel),
            tokens,
            timeout,
        }
    }
}

impl AuditSink for GrpcAudit {
    fn append(&self, event: AuditEvent) -> BoxFuture<'_, ()> {
        Box::pin(
            async move {
                let fail_closed = |e: Error| {
                    Error::unavailable(format!(
                        "the access could not be audited, so it is refused ({})",
                        e.message
                    ))
                };
                let request = crate::client::request(
                    AppendRequest { event: Some(event) },
                    self.tokens.as_ref(),
                    self.timeout,
                )
                .await
                .map_err(fail_closed)?;
                crate::client::answered(self.client.clone().append(request).await)
                    .map_err(|s| fail_closed(Error::from(s)))?;
                Ok(())
            }
            .instrument(crate::client::call_span(
                "sharedcare.audit.v1.AuditService/Append",
            )),
        )
    }
}

impl crate::outbox::BatchSink for GrpcAudit {
    fn append_batch(&self, events: Vec<AuditEvent>) -> BoxFuture<'_, ()> {
        Box::pin(
            async move {
                let request = crate::client::request(
                    AppendBatchRequest { events },
                    self.tokens.as_ref(),
                    self.timeout,
                )
                .await?;
                crate::client::answered(self.client.clone().append_batch(request).await)
                    .map_err(Error::from)?;
                Ok(())
            }
            .instrument(crate::client::call_span(
                "sharedcare.audit.v1.AuditService/AppendBatch",
            )),
        )
    }
}

/// What an audit event says about one access by a verified principal.
pub struct AccessEvent<'a> {
    pub principal: &'a crate::auth::Principal,
    pub patient_id: &'a str,
    pub action: sharedcare_proto::audit::v1::Action,
    pub purpose: Purpose,
    /// e.g. "Observation", "Patient", "Directive".
    pub resource_type: &'a str,
    /// The record, directive or relationship concerned; may be empty.
    pub record_id: &'a str,
    /// The service reporting it, e.g. "records".
    pub source_service: &'static str,
    /// The end user asked for break-glass, with this reason.
    pub break_glass: Option<&'a str>,
}

impl AccessEvent<'_> {
    /// The event of an access consent decided: its reason and id, flagged
    /// break-glass when the decision obliges it.
    pub fn decided(
        &self,
        outcome: sharedcare_proto::audit::v1::Outcome,
        decision: &Decision,
    ) -> AuditEvent {
        let mut event = self.event(outcome, &decision.reason_code(), &decision.decision_id);
        event.break_glass = decision.break_glass();
        event
    }

    pub fn event(
        &self,
        outcome: sharedcare_proto::audit::v1::Outcome,
        reason: &str,
        decision_id: &str,
    ) -> AuditEvent {
        AuditEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            occur_time: Some(crate::proto_time::to_proto(chrono::Utc::now())),
            // Capabilities are for consent's decision, not the trail.
            actor: Some(Actor {
                capabilities: vec![],
                ..self.principal.actor()
            }),
            patient_id: self.patient_id.to_owned(),
            action: self.action as i32,
            resource_type: self.resource_type.to_owned(),
            record_id: self.record_id.to_owned(),
            purpose: self.purpose as i32,
            outcome: outcome as i32,
            outcome_reason: reason.to_owned(),
            break_glass: false,
            source_service: self.source_service.to_owned(),
            decision_id: decision_id.to_owned(),
            trace_id: crate::telemetry::current_trace_id(),
            appended_by: String::new(),
            record_ids: Vec::new(),
            trace_parent: crate::telemetry::current_trace_parent(),
        }
    }
}
