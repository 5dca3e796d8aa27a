//! audit: a tamper-evident, append-only log of every access to and change of
//! a patient's data.
//!
//! Services append events (idempotently, by the sender's event id); each is
//! numbered from 1 and chained to its predecessor by SHA-256, so altering,
//! removing or reordering a stored entry is found by [`store::AuditLogStore::verify_chain`].
//! Patients' logs are read back with Query and, as "who accessed my record",
//! with AccessReport. The signed Merkle tree head and its proofs come with a
//! later issue; until then those RPCs answer UNIMPLEMENTED.
//!
//! Who may do what is [`policy::ACCESS`]: platform services append (and the
//! appending principal is recorded from their token, not from the event);
//! a patient reads their own access report, an organisation's privacy
//! officer the entries about accesses made by that organisation, and a
//! platform auditor everything.

pub mod config;
pub mod domain;
mod grpc;
pub mod policy;
pub mod store;

use std::sync::Arc;

use sharedcare_kit::{
    auth::Verifier,
    server::{MessageLimits, ServiceSpec},
};
use sharedcare_proto::audit::v1::audit_service_server::AuditServiceServer;

pub use grpc::{SCOPE_APPEND, SCOPE_READ};

pub const SERVICE_NAME: &str = "audit";

/// Builds the service for its server (main.rs, the all-in-one CLI and tests
/// mount exactly this).
pub fn spec(
    store: Arc<dyn store::AuditLogStore>,
    verifier: Arc<Verifier>,
    limits: MessageLimits,
) -> ServiceSpec {
    let server = AuditServiceServer::new(grpc::AuditGrpc { store })
        .max_decoding_message_size(limits.max_bytes)
        .max_encoding_message_size(limits.max_bytes);
    ServiceSpec::new(SERVICE_NAME, server, verifier, &policy::ACCESS)
}

/// Opens the configured store and identity's key source: what main.rs runs.
pub async fn open(cfg: &config::AuditConfig) -> Result<ServiceSpec, sharedcare_kit::Error> {
    let url = cfg
        .database
        .resolve_url(SERVICE_NAME)
        .map_err(|e| sharedcare_kit::Error::invalid("database.url", e.to_string()))?;
    let store = store::SqlStore::connect(url.expose(), cfg.database.max_connections).await?;
    // Every append goes through one sequencer: many callers, one transaction.
    let store = store::GroupCommit::new(Arc::new(store));
    let tls = sharedcare_kit::tls::Tls::from_config(&cfg.tls)?;
    let verifier = sharedcare_kit::tls::remote_verifier(&cfg.auth, tls.as_ref())?;
    Ok(spec(Arc::new(store), verifier, MessageLimits::from(&cfg.server)).with_tls(tls))
}
