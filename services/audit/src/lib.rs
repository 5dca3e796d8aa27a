//! audit: a tamper-evident, append-only log of every access to and change of
//! a patient's data.
//!
//! Services append events (idempotently, by the sender's event id); each is
//! numbered from 1 and is a leaf of the log's Merkle tree (RFC 9162), whose
//! nodes are stored as they form. Tree heads are signed as C2SP checkpoints
//! ([`heads`]), so anyone holding the verifier key can check that the log
//! only grows (consistency proofs) and that an entry is in it (inclusion
//! proofs), and an auditor re-deriving the root from ListEntries finds any
//! entry altered, removed or reordered in the database. Patients' logs are
//! read back with Query and, as "who accessed my record", with AccessReport;
//! break-glass accesses across patients, for privacy officers, with
//! ListBreakGlassAccesses.
//!
//! Who may do what is [`policy::ACCESS`]: platform services append (and the
//! appending principal is recorded from their token, not from the event);
//! a patient reads their own access report, an organisation's privacy
//! officer the entries about accesses made by that organisation, and a
//! platform auditor everything.

pub mod auditor;
pub mod config;
pub mod domain;
mod grpc;
pub mod heads;
pub mod policy;
pub mod report;
pub mod store;

use std::sync::Arc;

use sharedcare_kit::{
    auth::Verifier,
    server::{MessageLimits, ServiceSpec},
};
use sharedcare_proto::audit::v1::audit_service_server::AuditServiceServer;

pub use grpc::{SCOPE_APPEND, SCOPE_READ};

pub const SERVICE_NAME: &str = "audit";
/// In the data dir when no key is configured: the tree-head signing key
/// (generated on first start) and its verifier key, for auditors.
pub const SIGNING_KEY_FILE: &str = "audit-log-key.pem";
pub const VERIFIER_KEY_FILE: &str = "audit-log.vkey";

/// Builds the service for its server (main.rs, the all-in-one CLI and tests
/// mount exactly this).
pub fn spec(
    store: Arc<dyn store::AuditLogStore>,
    heads: Arc<heads::TreeHeads>,
    verifier: Arc<Verifier>,
    limits: MessageLimits,
) -> ServiceSpec {
    let server = AuditServiceServer::new(grpc::AuditGrpc { store, heads })
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
    let (store, db) = store::open_with_db(
        cfg.database.backend,
        url.expose(),
        cfg.database.max_connections,
    )
    .await?;
    // Every append goes through one sequencer: many callers, one transaction.
    let store: Arc<dyn store::AuditLogStore> = Arc::new(store::GroupCommit::new(store));
    let tree_size = Arc::new(store::TreeSize(store.clone()));
    let heads = heads::TreeHeads::new(store.clone(), log_signer(cfg)?);
    heads.publish_every(std::time::Duration::from_millis(
        cfg.audit.tree_head_interval_ms,
    ));
    let tls = sharedcare_kit::tls::Tls::from_config(&cfg.tls)?;
    let verifier = sharedcare_kit::tls::remote_verifier(&cfg.auth, tls.as_ref())?;
    let mut spec = spec(store, heads, verifier, MessageLimits::from(&cfg.server))
        .with_tls(tls)
        .with_metrics_addr(cfg.telemetry.metrics_addr)
        .sample(tree_size);
    if let Some(db) = db {
        spec = spec.sample(Arc::new(sharedcare_kit::metrics::PoolSampler(db)));
    }
    Ok(spec)
}

/// The configured tree-head key, or the one kept in the data dir, whose
/// verifier key is then written beside it for auditors.
fn log_signer(
    cfg: &config::AuditConfig,
) -> Result<domain::checkpoint::LogSigner, sharedcare_kit::Error> {
    let dir = &cfg.database.data_dir;
    let key = sharedcare_kit::keys::configured_or_kept(
        &cfg.audit.signing_key,
        "audit.signing_key",
        &dir.join(SIGNING_KEY_FILE),
    )?;
    let signer = domain::checkpoint::LogSigner::new(&cfg.audit.log_name, key)
        .map_err(|e| sharedcare_kit::Error::invalid("audit.log_name", e.to_string()))?;
    let verifier = signer.verifier().to_string();
    if cfg.audit.signing_key.value.is_none() && cfg.audit.signing_key.file.is_none() {
        std::fs::write(dir.join(VERIFIER_KEY_FILE), format!("{verifier}\n"))
            .map_err(|e| sharedcare_kit::Error::internal("writing the verifier key", e))?;
    }
    tracing::info!(verifier_key = %verifier, "tree heads are signed; auditors verify them with this key");
    Ok(signer)
}
