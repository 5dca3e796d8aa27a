//! consent: what the patient allows, and the decision "may this actor use
//! this patient's data, for this purpose?" with its reasons.
//!
//! Care relationships (the legitimate relationship behind direct care) and
//! patient directives (permit or deny, by purpose, organisation, staff role,
//! record category and period) are stored behind [`store::ConsentStore`];
//! the decision itself is the pure function [`domain::evaluate`].
//!
//! `spec` builds the service that `main.rs`, the all-in-one CLI and the
//! tests all serve; `open` wires it to configuration.

pub mod config;
pub mod domain;
mod grpc;
pub mod store;

use std::sync::Arc;

use sharedcare_kit::{
    Error,
    auth::Verifier,
    server::{MessageLimits, ServiceSpec},
};
use sharedcare_proto::consent::v1::consent_service_server::ConsentServiceServer;

pub const SERVICE_NAME: &str = "consent";

/// Builds the service for its server (main.rs, the all-in-one CLI and tests
/// mount exactly this).
pub fn spec(
    store: Arc<dyn store::ConsentStore>,
    verifier: Arc<Verifier>,
    limits: MessageLimits,
) -> ServiceSpec {
    let server = ConsentServiceServer::new(grpc::ConsentGrpc { store })
        .max_decoding_message_size(limits.max_bytes)
        .max_encoding_message_size(limits.max_bytes);
    ServiceSpec::new(SERVICE_NAME, server, verifier)
}

/// Opens the configured store and identity's key source: what main.rs runs.
pub async fn open(cfg: &config::ConsentConfig) -> Result<ServiceSpec, Error> {
    let url = cfg
        .database
        .resolve_url(SERVICE_NAME)
        .map_err(|e| Error::invalid("database.url", e.to_string()))?;
    let store =
        Arc::new(store::SqlStore::connect(url.expose(), cfg.database.max_connections).await?);
    let tls = sharedcare_kit::tls::Tls::from_config(&cfg.tls)?;
    let verifier = sharedcare_kit::tls::remote_verifier(&cfg.auth, tls.as_ref())?;
    Ok(spec(store, verifier, MessageLimits::from(&cfg.server)).with_tls(tls))
}
