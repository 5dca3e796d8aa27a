//! The two services every access passes through: consent (may this actor
//! see this?) and audit (it happened). Traits here, gRPC clients below; a
//! failure of either is UNAVAILABLE and the access does not happen.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use sharedcare_kit::{Error, client::TokenSource};
use sharedcare_proto::{
    audit::v1::{AppendRequest, AuditEvent, audit_service_client::AuditServiceClient},
    common::v1::{Actor, Purpose, RecordCategory},
    consent::v1::{
        Decision as PbDecision, EvaluateRequest, consent_service_client::ConsentServiceClient,
    },
};
use tonic::transport::Channel;

use crate::domain::{Category, PatientId};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// consent's answer, reduced to what records acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub permitted: bool,
    pub decision_id: String,
    /// (code, message) pairs, most important first.
    pub reasons: Vec<(String, String)>,
}

impl Decision {
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
}

pub trait ConsentGate: Send + Sync + 'static {
    fn evaluate(
        &self,
        patient: &PatientId,
        actor: Actor,
        purpose: Purpose,
        category: Category,
    ) -> BoxFuture<'_, Decision>;
}

pub trait AuditSink: Send + Sync + 'static {
    fn append(&self, event: AuditEvent) -> BoxFuture<'_, ()>;
}

pub fn category_to_pb(category: Category) -> RecordCategory {
    match category {
        Category::General => RecordCategory::General,
        Category::SexualHealth => RecordCategory::SexualHealth,
        Category::MentalHealth => RecordCategory::MentalHealth,
        Category::Safeguarding => RecordCategory::Safeguarding,
        Category::SocialCare => RecordCategory::SocialCare,
    }
}

/// consent over gRPC, as this service, on the user's behalf.
pub struct GrpcConsent {
    client: ConsentServiceClient<Channel>,
    tokens: Arc<TokenSource>,
    timeout: Duration,
}

impl GrpcConsent {
    pub fn new(channel: Channel, tokens: Arc<TokenSource>, timeout: Duration) -> Self {
        GrpcConsent {
            client: ConsentServiceClient::new(channel),
            tokens,
            timeout,
        }
    }
}

impl ConsentGate for GrpcConsent {
    fn evaluate(
        &self,
        patient: &PatientId,
        actor: Actor,
        purpose: Purpose,
        category: Category,
    ) -> BoxFuture<'_, Decision> {
        let message = EvaluateRequest {
            patient_id: patient.as_str().to_owned(),
            actor: Some(actor),
            purpose: purpose as i32,
            category: category_to_pb(category) as i32,
            break_glass: None,
        };
        Box::pin(async move {
            let fail_closed = |e: Error| {
                Error::unavailable(format!(
                    "consent could not be asked, so access is refused ({})",
                    e.message
                ))
            };
            let request = sharedcare_kit::client::request(message, &self.tokens, self.timeout)
                .await
                .map_err(fail_closed)?;
            let response = self
                .client
                .clone()
                .evaluate(request)
                .await
                .map_err(|s| fail_closed(Error::from(s)))?
                .into_inner();
            Ok(Decision {
                // Anything but an explicit permit is a denial.
                permitted: response.decision == PbDecision::Permit as i32,
                decision_id: response.decision_id,
                reasons: response
                    .reasons
                    .into_iter()
                    .map(|r| (r.code, r.message))
                    .collect(),
            })
        })
    }
}

/// audit over gRPC, as this service.
pub struct GrpcAudit {
    client: AuditServiceClient<Channel>,
    tokens: Arc<TokenSource>,
    timeout: Duration,
}

impl GrpcAudit {
    pub fn new(channel: Channel, tokens: Arc<TokenSource>, timeout: Duration) -> Self {
        GrpcAudit {
            client: AuditServiceClient::new(channel),
            tokens,
            timeout,
        }
    }
}

impl AuditSink for GrpcAudit {
    fn append(&self, event: AuditEvent) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let fail_closed = |e: Error| {
                Error::unavailable(format!(
                    "the access could not be audited, so it is refused ({})",
                    e.message
                ))
            };
            let request = sharedcare_kit::client::request(
                AppendRequest { event: Some(event) },
                &self.tokens,
                self.timeout,
            )
            .await
            .map_err(fail_closed)?;
            self.client
                .clone()
                .append(request)
                .await
                .map_err(|s| fail_closed(Error::from(s)))?;
            Ok(())
        })
    }
}
