//! The one call a run repeats, with everything it needs prepared once: the
//! request and the `authorization` header. Each call builds its client on
//! the worker's channel (a few reference-count increments) and the echo is
//! built the same way, so the client's own cost is the same on both sides
//! of a ratio.

use sharedcare_proto::{
    audit::v1::{AppendRequest, AuditEvent, audit_service_client::AuditServiceClient},
    identity::v1::{GetPatientRequest, identity_service_client::IdentityServiceClient},
    records::v1::{
        CreateRecordRequest, GetRecordRequest, records_service_client::RecordsServiceClient,
    },
};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// `Bearer <token>`, parsed once.
pub type Authorization = MetadataValue<Ascii>;

#[derive(Debug)]
pub enum Rpc {
    /// `grpc.health.v1.Health/Check` on the bench's own echo server.
    Echo,
    GetRecord {
        auth: Authorization,
        request: GetRecordRequest,
    },
    CreateRecord {
        auth: Authorization,
        request: CreateRecordRequest,
    },
    GetPatient {
        auth: Authorization,
        request: GetPatientRequest,
    },
    /// Each call appends a copy of `event` with a fresh id and time.
    AuditAppend {
        auth: Authorization,
        event: Box<AuditEvent>,
    },
}

impl Rpc {
    /// The full method name, as in the report.
    pub fn method(&self) -> &'static str {
        match self {
            Rpc::Echo => "grpc.health.v1.Health/Check",
            Rpc::GetRecord { .. } => "sharedcare.records.v1.RecordsService/GetRecord",
            Rpc::CreateRecord { .. } => "sharedcare.records.v1.RecordsService/CreateRecord",
            Rpc::GetPatient { .. } => "sharedcare.identity.v1.IdentityService/GetPatient",
            Rpc::AuditAppend { .. } => "sharedcare.audit.v1.AuditService/Append",
        }
    }

    /// Sends the call once on `channel`; the answer itself is dropped.
    pub async fn call(&self, channel: Channel) -> Result<(), Status> {
        match self {
            Rpc::Echo => HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(drop),
            Rpc::GetRecord { auth, request } => RecordsServiceClient::new(channel)
                .get_record(bearer(request.clone(), auth))
                .await
                .map(drop),
            Rpc::CreateRecord { auth, request } => RecordsServiceClient::new(channel)
                .create_record(bearer(request.clone(), auth))
                .await
                .map(drop),
            Rpc::GetPatient { auth, request } => IdentityServiceClient::new(channel)
                .get_patient(bearer(request.clone(), auth))
                .await
                .map(drop),
            Rpc::AuditAppend { auth, event } => {
                let event = AuditEvent {
                    event_id: uuid::Uuid::now_v7().to_string(),
                    occur_time: Some(std::time::SystemTime::now().into()),
                    ..AuditEvent::clone(event)
                };
                AuditServiceClient::new(channel)
                    .append(bearer(AppendRequest { event: Some(event) }, auth))
                    .await
                    .map(drop)
            }
        }
    }
}

fn bearer<T>(message: T, auth: &Authorization) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", auth.clone());
    request
}

/// The header value for `token`.
pub fn authorization(token: &str) -> anyhow::Result<Authorization> {
    format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| anyhow::anyhow!("the access token holds characters a header cannot carry"))
}
