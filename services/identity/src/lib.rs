//! identity: who is who. The patient index (NHS number, demographics),
//! organisations, staff/application/service/patient principals with their
//! permitted purposes, the role → capabilities map, and the Ed25519 keys
//! that sign their tokens. Demographic reads are decided by consent and
//! audited, like record reads.
//!
//! `spec` builds the service that `main.rs`, the all-in-one CLI and the
//! tests all serve; `open` wires it to configuration.

pub mod bootstrap;
pub mod config;
pub mod domain;
mod grpc;
pub mod policy;
pub mod registrations;
pub mod store;
pub mod synthetic;
pub mod tokens;

use std::{sync::Arc, time::Duration};

use sharedcare_kit::{
    Error,
    auth::Verifier,
    crypto::{BlindIndex, Kek, Keyring},
    db::WriteGate,
    keys::SigningKey,
    metrics::PoolSampler,
    outbox::{Outbox, OutboxSettings},
    peers::{ConsentGate, GrpcAudit, GrpcConsent},
    server::{MessageLimits, ServiceSpec},
};
use sharedcare_proto::identity::v1::identity_service_server::IdentityServiceServer;

pub use domain::RoleMap;
pub use tokens::{SelfTokens, TokenIssuer};

pub const SERVICE_NAME: &str = "identity";

/// The services identity asks before it answers a demographic read:
/// consent (may this actor see this patient?) and audit (it happened).
#[derive(Clone)]
pub struct Peers {
    pub consent: Arc<dyn ConsentGate>,
    /// identity's audit outbox, delivered to audit by its relay.
    pub outbox: Arc<Outbox>,
    /// Where changes of registered GP practice go: consent.
    pub registrations: Arc<dyn registrations::RegistrationSink>,
}

impl Peers {
    /// consent and audit over gRPC as `cfg` says, calling as identity with a
    /// token it signs itself; the outbox in `db`, its relay taking `writes`'
    /// turns with the store's.
    pub fn grpc(
        cfg: &config::IdentityConfig,
        tokens: Arc<TokenIssuer>,
        tls: Option<&sharedcare_kit::tls::Tls>,
        db: sea_orm::DatabaseConnection,
        writes: WriteGate,
    ) -> Result<Self, Error> {
        let settings = &cfg.identity;
        let timeout = Duration::from_millis(settings.call_timeout_ms);
        let own = Arc::new(SelfTokens::new(tokens));
        let lazy_channel = |url: &str| sharedcare_kit::tls::channel(url, tls);
        let consent_channel =
            lazy_channel(&settings.consent_url).map_err(|e| e.context("identity.consent_url"))?;
        Ok(Peers {
            registrations: Arc::new(registrations::GrpcRegistrations::new(
                consent_channel.clone(),
                own.clone(),
                timeout,
            )),
            consent: cfg.consent_cache.gate(
                SERVICE_NAME,
                Arc::new(GrpcConsent::new(
                    consent_channel.clone(),
                    own.clone(),
                    timeout,
                )),
                consent_channel,
                own.clone(),
            ),
            outbox: Outbox::start(
                db,
                writes,
                store::OUTBOX_TABLE,
                Arc::new(GrpcAudit::new(
                    lazy_channel(&settings.audit_url)
                        .map_err(|e| e.context("identity.audit_url"))?,
                    own,
                    timeout,
                )),
                OutboxSettings {
                    max_lag: Duration::from_millis(settings.audit_max_lag_ms),
                    ..OutboxSettings::default()
                },
            ),
        })
    }
}

/// The identity service over a store, signing with `tokens`, giving staff
/// the capabilities of their role in `roles`, asking `peers`. identity
/// verifies tokens with its own public key: no network hop.
pub fn spec(
    store: Arc<dyn store::IdentityStore>,
    tokens: Arc<TokenIssuer>,
    roles: RoleMap,
    peers: Peers,
    limits: MessageLimits,
) -> ServiceSpec {
    // Its own keys, re-read from the store for a key id another replica
    // rotated in; its own revocations, read from the store on every request.
    let verifier = Arc::new(
        Verifier::new(
            Arc::new(tokens::IssuerKeys {
                issuer: tokens.clone(),
                store: store.clone(),
            }),
            tokens.issuer(),
            tokens.audience(),
            Duration::from_secs(1),
        )
        .with_revocations(
            Arc::new(tokens::StoreRevocations {
                store: store.clone(),
                ttl_secs: tokens.ttl_secs(),
            }),
            Duration::ZERO,
            Duration::from_secs(60),
        ),
    );
    let server = IdentityServiceServer::new(grpc::IdentityGrpc::new(
        store,
        tokens,
        roles,
        peers,
        verifier.clone(),
    ))
    .max_decoding_message_size(limits.max_bytes)
    .max_encoding_message_size(limits.max_bytes);
    ServiceSpec::new(SERVICE_NAME, server, verifier, &policy::ACCESS)
}

/// Opens the configured store and signing key, applies the bootstrap file,
/// connects (lazily) to consent and audit, and builds the service.
pub async fn open(cfg: &config::IdentityConfig) -> Result<ServiceSpec, Error> {
    let url = cfg
        .database
        .resolve_url(SERVICE_NAME)
        .map_err(|e| Error::invalid("database.url", e.to_string()))?;
    let (keys, index) = patient_keys(cfg)?;
    let store::Opened {
        store,
        outbox,
        writes,
    } = store::open(
        cfg.database.backend,
        url.expose(),
        cfg.database.max_connections,
        keys,
        index,
    )
    .await?;
    if let Some(path) = &cfg.identity.bootstrap_file {
        bootstrap::apply(store.as_ref(), bootstrap::BootstrapFile::read(path)?).await?;
    }
    let key = load_signing_key(cfg)?;
    let tokens = Arc::new(
        TokenIssuer::new(
            key,
            &cfg.auth.issuer,
            &cfg.auth.audience,
            cfg.identity.token_ttl_secs,
        )
        .with_issue_limit(cfg.identity.token_requests_per_minute),
    );
    // Keys made by rotations before this start sign and verify again.
    tokens.load(store.as_ref()).await?;
    let tls = sharedcare_kit::tls::Tls::from_config(&cfg.tls)?;
    let roles = cfg
        .identity
        .role_map()
        .map_err(|e| Error::invalid("identity.roles", e.to_string()))?;
    let pool = PoolSampler(outbox.clone());
    let peers = Peers::grpc(cfg, tokens.clone(), tls.as_ref(), outbox, writes)?;
    let outbox = peers.outbox.clone();
    Ok(spec(
        store,
        tokens,
        roles,
        peers,
        MessageLimits::from(&cfg.server),
    )
    .with_tls(tls)
    .with_metrics_addr(cfg.telemetry.metrics_addr)
    .sample(outbox)
    .sample(Arc::new(pool)))
}

/// The keys that protect patients at rest: configured, or kept in the data dir.
fn patient_keys(cfg: &config::IdentityConfig) -> Result<(Keyring, BlindIndex), Error> {
    let resolve = |key: &str, source: &sharedcare_kit::config::SecretSource| {
        source
            .resolve(key)
            .map_err(|e| Error::invalid(key, e.to_string()))
    };
    let dir = &cfg.database.data_dir;
    let kek = match resolve(
        "identity.key_encryption_key",
        &cfg.identity.key_encryption_key,
    )? {
        Some(text) => Kek::from_base64(text.expose())?,
        None => Kek::load_or_create(&dir.join("identity-kek.b64"))?,
    };
    let index = match resolve("identity.nhs_index_key", &cfg.identity.nhs_index_key)? {
        Some(text) => BlindIndex::from_base64(text.expose())?,
        None => BlindIndex::load_or_create(&dir.join("identity-nhs-index-key.b64"))?,
    };
    Ok((Keyring::new(kek, []), index))
}

/// The configured key, or the one kept in the data dir (generated on first
/// start, readable by this user only).
fn load_signing_key(cfg: &config::IdentityConfig) -> Result<SigningKey, Error> {
    let path = cfg.database.data_dir.join("identity-signing-key.pem");
    let key =
        SigningKey::configured_or_kept(&cfg.identity.signing_key, "identity.signing_key", &path)?;
    tracing::debug!(kid = key.kid(), "token signing key loaded");
    Ok(key)
}
