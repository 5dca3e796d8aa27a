//! records: the shared care record. Versioned FHIR R4 resources per patient
//! behind the `RecordStore` trait; every access asks consent first and lands
//! in audit before it is answered (fail closed).
//!
//! Path of an RPC: `grpc.rs` (decode, scopes) → `service.rs` (consent,
//! audit, store) → `store/` (sea-orm) and `access.rs` (consent and audit
//! clients).

pub mod access;
pub mod config;
pub mod domain;
mod grpc;
pub mod policy;
pub mod service;
pub mod store;

use std::{sync::Arc, time::Duration};

use sharedcare_kit::{
    Error,
    auth::Verifier,
    client::TokenSource,
    config::StorageBackend,
    crypto::{Kek, Keyring},
    db::WriteGate,
    merges::PatientMerges,
    metrics::PoolSampler,
    outbox::{Outbox, OutboxSettings},
    paging::CursorKey,
    server::{MessageLimits, ServiceSpec},
};
use sharedcare_proto::records::v1::records_service_server::RecordsServiceServer;

use crate::domain::ClassificationMap;

pub use service::Records;

pub const SERVICE_NAME: &str = "records";

/// The records service around a `Records`, classifying what is written
/// with `classification`.
pub fn spec(
    records: Arc<Records>,
    classification: Arc<ClassificationMap>,
    verifier: Arc<Verifier>,
    limits: MessageLimits,
) -> ServiceSpec {
    let server = RecordsServiceServer::new(grpc::RecordsGrpc::new(records, classification))
        .max_decoding_message_size(limits.max_bytes)
        .max_encoding_message_size(limits.max_bytes);
    ServiceSpec::new(SERVICE_NAME, server, verifier, &policy::ACCESS)
}

/// The configured key-encryption key, or the one kept in the data dir.
fn kek(cfg: &config::RecordsConfig) -> Result<Kek, Error> {
    let kek = match cfg
        .records
        .key_encryption_key
        .resolve("records.key_encryption_key")
        .map_err(|e| Error::invalid("records.key_encryption_key", e.to_string()))?
    {
        Some(text) => Kek::from_base64(text.expose())?,
        None => Kek::load_or_create(&cfg.database.data_dir.join("records-kek.b64"))?,
    };
    Ok(kek)
}

/// The current KEK and the previous ones still needed to open old data.
fn keyring(cfg: &config::RecordsConfig, current: Kek) -> Result<Keyring, Error> {
    let previous = match &cfg.records.previous_key_encryption_keys_file {
        Some(path) => sharedcare_kit::crypto::read_keys(path)?,
        None => Vec::new(),
    };
    Ok(Keyring::new(current, previous))
}

/// Re-wraps every stored version's data key under the current KEK, online
/// (records may keep serving): what `sharedcare records rewrap` runs after
/// a rotation. `progress` hears the running count after each page.
pub async fn rewrap_keys(
    cfg: &config::RecordsConfig,
    progress: impl FnMut(store::Rewrapped),
) -> Result<store::Rewrapped, Error> {
    let keys = keyring(cfg, kek(cfg)?)?;
    let tls = sharedcare_kit::tls::Tls::from_config(&cfg.tls)?;
    let inner: Arc<dyn store::RecordStore> = match cfg.database.backend {
        StorageBackend::Memory => {
            return Err(Error::invalid(
                "database.backend",
                "memory keeps nothing beyond its process: there is nothing to re-wrap",
            ));
        }
        StorageBackend::Remote => Arc::new(remote_store(cfg, tls.as_ref())?),
        StorageBackend::Sqlite | StorageBackend::Postgres => {
            let url = cfg
                .database
                .resolve_url(SERVICE_NAME)
                .map_err(|e| Error::invalid("database.url", e.to_string()))?;
            Arc::new(store::SqlStore::connect(url.expose(), cfg.database.max_connections).await?)
        }
    };
    store::rewrap(inner.as_ref(), &keys, progress).await
}

fn remote_store(
    cfg: &config::RecordsConfig,
    tls: Option<&sharedcare_kit::tls::Tls>,
) -> Result<store::RemoteStore, Error> {
    let url = cfg.records.remote_storage_url.as_deref().ok_or_else(|| {
        Error::invalid(
            "records.remote_storage_url",
            "is required when database.backend is remote",
        )
    })?;
    Ok(store::RemoteStore::new(
        sharedcare_kit::tls::channel(url, tls)?,
        Duration::from_millis(cfg.records.call_timeout_ms),
    ))
}

/// The configured backend, wrapped in encryption, and the database its
/// audit outbox lives in (the store's own when it has one, so a change and
/// its audit event commit together).
async fn open_store(
    cfg: &config::RecordsConfig,
    keys: Keyring,
    tls: Option<&sharedcare_kit::tls::Tls>,
) -> Result<
    (
        Arc<dyn store::RecordStore>,
        sea_orm::DatabaseConnection,
        WriteGate,
    ),
    Error,
> {
    let url = cfg
        .database
        .resolve_url(SERVICE_NAME)
        .map_err(|e| Error::invalid("database.url", e.to_string()))?;
    let max = cfg.database.max_connections;
    Ok(match cfg.database.backend {
        StorageBackend::Sqlite | StorageBackend::Postgres => {
            let sql = store::SqlStore::connect(url.expose(), max).await?;
            let (db, gate) = (sql.connection(), sql.write_gate());
            (Arc::new(store::Encrypted::new(sql, keys)), db, gate)
        }
        StorageBackend::Memory | StorageBackend::Remote => {
            // Only the audit outbox is local.
            let db = sharedcare_kit::db::connect::<store::Migrator>(url.expose(), max).await?;
            let gate = WriteGate::for_db(&db);
            let inner: Arc<dyn store::RecordStore> =
                if cfg.database.backend == StorageBackend::Remote {
                    Arc::new(remote_store(cfg, tls)?)
                } else {
                    Arc::new(store::MemoryStore::new())
                };
            (Arc::new(store::Encrypted::new(inner, keys)), db, gate)
        }
    })
}

/// Opens the store, the clients of identity, consent and audit, starts the
/// outbox relay, and builds the service.
pub async fn open(cfg: &config::RecordsConfig) -> Result<ServiceSpec, Error> {
    let classification = Arc::new(
        cfg.records
            .classification_map()
            .map_err(|e| Error::invalid("records.classification_map", e.to_string()))?,
    );
    tracing::info!(
        map = classification.name(),
        rules = classification.rule_count(),
        "classification map loaded"
    );
    let tls = sharedcare_kit::tls::Tls::from_config(&cfg.tls)?;
    let kek = kek(cfg)?;
    let cursors = CursorKey::new(kek.derive("records.cursor"));
    let (store, outbox_db, outbox_gate) = open_store(cfg, keyring(cfg, kek)?, tls.as_ref()).await?;
    let channel = |url: &str| sharedcare_kit::tls::channel(url, tls.as_ref());
    let identity = channel(&cfg.auth.identity_url)?;
    let tokens = Arc::new(TokenSource::from_config(identity.clone(), &cfg.auth)?);
    let timeout = Duration::from_millis(cfg.records.call_timeout_ms);
    let consent_channel = channel(&cfg.records.consent_url)?;
    let consent = cfg.consent_cache.gate(
        SERVICE_NAME,
        Arc::new(access::GrpcConsent::new(
            consent_channel.clone(),
            tokens.clone(),
            timeout,
        )),
        consent_channel,
        tokens.clone(),
    );
    let audit = Arc::new(access::GrpcAudit::new(
        channel(&cfg.records.audit_url)?,
        tokens.clone(),
        timeout,
    ));
    let pool = PoolSampler(outbox_db.clone());
    let outbox = Outbox::start(
        outbox_db,
        outbox_gate,
        store::OUTBOX_TABLE,
        audit,
        OutboxSettings {
            max_lag: Duration::from_millis(cfg.records.audit_max_lag_ms),
            max_pending: cfg.records.audit_max_pending,
            poll: Duration::from_millis(cfg.records.outbox_retry_ms),
            ..OutboxSettings::default()
        },
    );
    let merges = PatientMerges::follow(identity, tokens);
    let records = Arc::new(
        Records::new(
            store,
            consent,
            outbox.clone(),
            cursors,
            cfg.records.max_resource_bytes,
        )
        .with_merges(merges),
    );
    let verifier = sharedcare_kit::tls::remote_verifier(&cfg.auth, tls.as_ref())?;
    Ok(spec(
        records,
        classification,
        verifier,
        MessageLimits::from(&cfg.server),
    )
    .with_tls(tls)
    .with_metrics_addr(cfg.telemetry.metrics_addr)
    .sample(outbox)
    .sample(Arc::new(pool)))
}
