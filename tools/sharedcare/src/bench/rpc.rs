//! The one call a run repeats, with everything it needs prepared once: the
//! request and the `authorization` header. Each call builds its client on
//! the worker's channel (a few reference-count increments) and the echo is
//! built the same way, so the client's own cost is the same on both sides
//! of a ratio.

use sharedcare_proto::{
    audit::v1::{
        AppendBatchRequest, AppendRequest, AuditEvent, audit_service_client::AuditServiceClient,
    },
    identity::v1::{
        GetPatientRequest, TracePatientRequest, identity_service_client::IdentityServiceClient,
    },
    records::v1::{
        CreateRecordRequest, GetRecordRequest, Record, SearchRequest,
        records_service_client::RecordsServiceClient,
    },
};
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use std::{
    path::Path,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use anyhow::{Context, anyhow};
use sea_orm::sqlx;

/// `Bearer <token>`, parsed once.
pub type Authorization = MetadataValue<Ascii>;

/// What a call answered that `--acks` keeps: the record CreateRecord or
/// GetRecord returned; nothing for the other calls.
pub type Answer = Option<Record>;

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
    Search {
        auth: Authorization,
        request: SearchRequest,
    },
    /// Each call sends the next of `requests`, round the list, so the
    /// traces ask about many people rather than one.
    TracePatient {
        auth: Authorization,
        requests: Arc<[TracePatientRequest]>,
        next: AtomicUsize,
    },
    /// Each call appends a copy of `event` with a fresh id and time.
    AuditAppend {
        auth: Authorization,
        event: Box<AuditEvent>,
    },
    /// Each call appends `events` copies of `event`, each with a fresh id
    /// and time, in one AppendBatch.
    AuditAppendBatch {
        auth: Authorization,
        event: Box<AuditEvent>,
        events: usize,
    },
    /// Not a call: one raw transaction on a SQLite file (create-record's
    /// yardstick).
    SqliteInsert(Arc<RawInsert>),
}

/// A record row and its outbox row per transaction, by plain sqlx on one
/// connection, into records' own schema in a fresh SQLite file with the
/// durability records runs with (WAL, synchronous FULL): what CreateRecord
/// stores, without gRPC, tokens, consent, encryption or batching.
#[derive(Debug)]
pub struct RawInsert {
    connection: tokio::sync::Mutex<sqlx::SqliteConnection>,
    patient_id: String,
    /// As large as the sealed resource records stores (its nonce and tag
    /// included).
    resource: Vec<u8>,
    event: AuditEvent,
    _dir: tempfile::TempDir,
}

impl RawInsert {
    pub async fn open(
        beside: &Path,
        patient_id: &str,
        resource_json: Vec<u8>,
        event: AuditEvent,
    ) -> anyhow::Result<Self> {
        let parent = beside
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("sharedcare-bench-sqlite-")
            .tempdir_in(parent)
            .context("making the sqlite-insert directory")?;
        let url = sharedcare_kit::db::sqlite_url(&dir.path().join("records.db"));
        // records' schema, made by records' own migrations.
        sharedcare_kit::db::connect::<sharedcare_records::store::Migrator>(&url, 1)
            .await
            .map_err(|e| anyhow!("{}", e.message))?
            .close()
            .await?;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
        let connection = sqlx::ConnectOptions::connect(&options).await?;
        let mut resource = resource_json;
        resource.extend_from_slice(&[0; 28]);
        Ok(RawInsert {
            connection: tokio::sync::Mutex::new(connection),
            patient_id: patient_id.to_owned(),
            resource,
            event,
            _dir: dir,
        })
    }

    async fn insert(&self) -> Result<(), sqlx::Error> {
        self.insert_row("Observation", &self.resource).await
    }

    /// One row as `insert` stores it, with this resource type and body.
    pub async fn insert_row(&self, resource_type: &str, body: &[u8]) -> Result<(), sqlx::Error> {
        let now = chrono::Utc::now();
        let event = AuditEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            occur_time: Some(std::time::SystemTime::now().into()),
            ..self.event.clone()
        };
        let mut connection = self.connection.lock().await;
        let mut txn = sqlx::Connection::begin(&mut *connection).await?;
        sqlx::query(
            "INSERT INTO records_resource_versions \
             (record_id, version, patient_id, resource_type, category, resource_sealed, last_updated) \
             VALUES (?, 1, ?, ?, 'general', ?, ?)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(&self.patient_id)
        .bind(resource_type)
        .bind(body)
        .bind(now)
        .execute(&mut *txn)
        .await?;
        sqlx::query(
            "INSERT INTO records_audit_outbox (event_id, payload, created_at) VALUES (?, ?, ?)",
        )
        .bind(&event.event_id)
        .bind(prost::Message::encode_to_vec(&event))
        .bind(now)
        .execute(&mut *txn)
        .await?;
        txn.commit().await
    }
}

impl Rpc {
    /// The full method name, as in the report.
    pub fn method(&self) -> &'static str {
        match self {
            Rpc::Echo => "grpc.health.v1.Health/Check",
            Rpc::GetRecord { .. } => "sharedcare.records.v1.RecordsService/GetRecord",
            Rpc::CreateRecord { .. } => "sharedcare.records.v1.RecordsService/CreateRecord",
            Rpc::GetPatient { .. } => "sharedcare.identity.v1.IdentityService/GetPatient",
            Rpc::Search { .. } => "sharedcare.records.v1.RecordsService/Search",
            Rpc::TracePatient { .. } => "sharedcare.identity.v1.IdentityService/TracePatient",
            Rpc::AuditAppend { .. } => "sharedcare.audit.v1.AuditService/Append",
            Rpc::AuditAppendBatch { .. } => "sharedcare.audit.v1.AuditService/AppendBatch",
            Rpc::SqliteInsert(_) => "sqlx INSERT record + outbox row, COMMIT",
        }
    }

    /// Sends the call once on `channel`; of the answer, only the record a
    /// CreateRecord or GetRecord returned is kept.
    pub async fn call(&self, channel: Channel) -> Result<Answer, Status> {
        match self {
            Rpc::Echo => HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| None),
            Rpc::GetRecord { auth, request } => RecordsServiceClient::new(channel)
                .get_record(bearer(request.clone(), auth))
                .await
                .map(|answer| answer.into_inner().record),
            Rpc::CreateRecord { auth, request } => RecordsServiceClient::new(channel)
                .create_record(bearer(request.clone(), auth))
                .await
                .map(|answer| answer.into_inner().record),
            Rpc::Search { auth, request } => RecordsServiceClient::new(channel)
                .search(bearer(request.clone(), auth))
                .await
                .map(|_| None),
            Rpc::GetPatient { auth, request } => IdentityServiceClient::new(channel)
                .get_patient(bearer(request.clone(), auth))
                .await
                .map(|_| None),
            Rpc::TracePatient {
                auth,
                requests,
                next,
            } => {
                let Some(request) =
                    requests.get(next.fetch_add(1, Ordering::Relaxed) % requests.len().max(1))
                else {
                    return Err(Status::failed_precondition(
                        "trace-patient: no traces to send",
                    ));
                };
                IdentityServiceClient::new(channel)
                    .trace_patient(bearer(request.clone(), auth))
                    .await
                    .map(|_| None)
            }
            Rpc::AuditAppend { auth, event } => AuditServiceClient::new(channel)
                .append(bearer(
                    AppendRequest {
                        event: Some(fresh(event)),
                    },
                    auth,
                ))
                .await
                .map(|_| None),
            Rpc::AuditAppendBatch {
                auth,
                event,
                events,
            } => AuditServiceClient::new(channel)
                .append_batch(bearer(
                    AppendBatchRequest {
                        events: (0..*events).map(|_| fresh(event)).collect(),
                    },
                    auth,
                ))
                .await
                .map(|_| None),
            Rpc::SqliteInsert(raw) => raw
                .insert()
                .await
                .map(|()| None)
                .map_err(|e| Status::internal(format!("sqlite-insert: {e}"))),
        }
    }
}

/// A copy of `event` with a fresh id and time.
fn fresh(event: &AuditEvent) -> AuditEvent {
    AuditEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        occur_time: Some(std::time::SystemTime::now().into()),
        ..event.clone()
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
