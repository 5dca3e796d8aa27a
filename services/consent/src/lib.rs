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

pub mod changes;
pub mod config;
pub mod domain;
mod grpc;
pub mod policy;
pub mod store;

use std::{sync::Arc, time::Duration};

use sharedcare_kit::{
    Error,
    auth::Verifier,
    client::{ServiceTokens, TokenSource},
    merges::PatientMerges,
    metrics::PoolSampler,
    outbox::{Outbox, OutboxSettings},
    peers::{BoxFuture, GrpcAudit},
    server::{MessageLimits, ServiceSpec},
};
use sharedcare_proto::{
    consent::v1::consent_service_server::ConsentServiceServer,
    identity::v1::{
        GetOrganisationRequest, ResolvePatientRequest,
        identity_service_client::IdentityServiceClient,
    },
};
use tonic::transport::Channel;
use tracing::Instrument;

use crate::domain::{OdsCode, PatientId};

pub const SERVICE_NAME: &str = "consent";

/// What identity knows that consent must check: a relationship is recorded
/// only for a patient in the index, a referral only to an organisation that
/// exists.
pub trait Directory: Send + Sync + 'static {
    fn organisation_exists(&self, code: &OdsCode) -> BoxFuture<'_, bool>;
    fn patient_exists(&self, patient: &PatientId) -> BoxFuture<'_, bool>;

    /// Every id standing for the same person as `patient` (identity's
    /// merges), the current one first: a decision weighs the consent
    /// recorded under any of them. UNAVAILABLE while merges are not known.
    /// Without merges followed, the patient alone.
    fn family(&self, patient: &PatientId) -> BoxFuture<'_, Vec<PatientId>> {
        let alone = vec![patient.clone()];
        Box::pin(async move { Ok(alone) })
    }
}

/// identity over gRPC, as this service.
pub struct IdentityDirectory {
    client: IdentityServiceClient<Channel>,
    tokens: Arc<dyn ServiceTokens>,
    timeout: Duration,
    /// identity's merge log, followed for as long as this lives.
    merges: PatientMerges,
}

impl IdentityDirectory {
    /// identity over `channel`, as this service; starts following its
    /// patient merges.
    pub fn new(channel: Channel, tokens: Arc<dyn ServiceTokens>, timeout: Duration) -> Self {
        IdentityDirectory {
            client: IdentityServiceClient::new(channel.clone()),
            merges: PatientMerges::follow(channel, tokens.clone()),
            tokens,
            timeout,
        }
    }

    /// NOT_FOUND is a "no"; anything else means identity could not answer.
    fn found<T>(result: Result<T, tonic::Status>, what: &str) -> Result<bool, Error> {
        match result {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::unavailable(format!(
                "identity could not be asked whether the {what} exists ({})",
                s.message()
            ))),
        }
    }
}

impl Directory for IdentityDirectory {
    fn family(&self, patient: &PatientId) -> BoxFuture<'_, Vec<PatientId>> {
        let patient = patient.clone();
        Box::pin(async move { self.merges.family(&patient).await })
    }

    fn organisation_exists(&self, code: &OdsCode) -> BoxFuture<'_, bool> {
        let message = GetOrganisationRequest {
            ods_code: code.as_str().to_owned(),
        };
        Box::pin(
            async move {
                let request =
                    sharedcare_kit::client::request(message, self.tokens.as_ref(), self.timeout)
                        .await?;
                Self::found(
                    sharedcare_kit::client::answered(
                        self.client.clone().get_organisation(request).await,
                    ),
                    "organisation",
                )
            }
            .instrument(sharedcare_kit::client::call_span(
                "sharedcare.identity.v1.IdentityService/GetOrganisation",
            )),
        )
    }

    fn patient_exists(&self, patient: &PatientId) -> BoxFuture<'_, bool> {
        let message = ResolvePatientRequest {
            patient_id: patient.as_str().to_owned(),
        };
        Box::pin(
            async move {
                let request =
                    sharedcare_kit::client::request(message, self.tokens.as_ref(), self.timeout)
                        .await?;
                Self::found(
                    sharedcare_kit::client::answered(
                        self.client.clone().resolve_patient(request).await,
                    ),
                    "patient",
                )
            }
            .instrument(sharedcare_kit::client::call_span(
                "sharedcare.identity.v1.IdentityService/ResolvePatient",
            )),
        )
    }
}

/// Builds the service for its server (main.rs, the all-in-one CLI and tests
/// mount exactly this).
pub fn spec(
    store: Arc<dyn store::ConsentStore>,
    changes: Arc<changes::ChangeFeed>,
    outbox: Arc<Outbox>,
    directory: Arc<dyn Directory>,
    verifier: Arc<Verifier>,
    limits: MessageLimits,
) -> ServiceSpec {
    spec_with_rules(
        store,
        changes,
        outbox,
        directory,
        verifier,
        limits,
        domain::Rules::default(),
    )
}

/// As `spec`, with the decision's rules configured (what each relationship
/// kind may see, break-glass).
pub fn spec_with_rules(
    store: Arc<dyn store::ConsentStore>,
    changes: Arc<changes::ChangeFeed>,
    outbox: Arc<Outbox>,
    directory: Arc<dyn Directory>,
    verifier: Arc<Verifier>,
    limits: MessageLimits,
    rules: domain::Rules,
) -> ServiceSpec {
    let closing = changes.clone();
    let server = ConsentServiceServer::new(grpc::ConsentGrpc {
        store,
        changes,
        outbox,
        directory,
        rules: Arc::new(rules),
    })
    .max_decoding_message_size(limits.max_bytes)
    .max_encoding_message_size(limits.max_bytes);
    ServiceSpec::new(SERVICE_NAME, server, verifier, &policy::ACCESS)
        .on_shutdown(move || closing.close())
}

/// How `layered` layers the store.
#[derive(Debug, Clone, Copy)]
pub struct Layering {
    /// The change streams' heartbeat; on PostgreSQL also how often each
    /// replica renews its lease (which runs for three).
    pub heartbeat: Duration,
    /// Patients whose consent is kept in memory at most.
    pub cache_max_patients: usize,
}

impl Layering {
    pub fn new(heartbeat: Duration) -> Self {
        Layering {
            heartbeat,
            cache_max_patients: store::DEFAULT_MAX_PATIENTS,
        }
    }
}

/// The store as the service uses it, with its change feed: what Evaluate
/// reads is kept in memory (store::Cached, least recently used patients
/// evicted) and the feed streams the store's change log; a change is
/// answered once it applies everywhere (see `changes`).
///
/// On SQLite (and in memory) this process is the one writer: its writes
/// drop what they change. On PostgreSQL each replica tails the log into its
/// memory and uses the memory only while its lease in the database holds;
/// a writer waits until every leaseholder has applied its change.
pub fn layered(
    store: impl Into<store::Backend>,
    heartbeat: Duration,
) -> (Arc<dyn store::ConsentStore>, Arc<changes::ChangeFeed>) {
    layered_with(store, Layering::new(heartbeat))
}

/// As `layered`, configured.
pub fn layered_with(
    store: impl Into<store::Backend>,
    layering: Layering,
) -> (Arc<dyn store::ConsentStore>, Arc<changes::ChangeFeed>) {
    fn in_process<S: store::ConsentStore>(
        store: S,
        layering: Layering,
    ) -> (Arc<dyn store::ConsentStore>, Arc<changes::ChangeFeed>) {
        let store = Arc::new(store);
        let changes = changes::ChangeFeed::in_process(store.clone(), layering.heartbeat);
        let store = changes::Notifying::new(
            store::Cached::new(store, layering.cache_max_patients),
            changes.clone(),
        );
        (Arc::new(store), changes)
    }
    match store.into() {
        store::Backend::Memory(memory) => in_process(*memory, layering),
        store::Backend::Sql(sql) => {
            let connection = sql.connection();
            if connection.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
                return in_process(sql, layering);
            }
            replicated(Arc::new(sql), connection, layering)
        }
    }
}

/// A replica sharing PostgreSQL (`db`, the database `store` is on): the
/// store in leased memory, tailing the change log (what `layered` does on
/// PostgreSQL; tests layer a store of their own).
pub fn replicated(
    store: Arc<dyn store::ConsentStore>,
    db: sea_orm::DatabaseConnection,
    layering: Layering,
) -> (Arc<dyn store::ConsentStore>, Arc<changes::ChangeFeed>) {
    let cached = store::Cached::leased(store.clone(), layering.cache_max_patients);
    let changes = changes::ChangeFeed::postgres(store, db, cached.memory(), layering.heartbeat);
    let store = changes::Notifying::new(cached, changes.clone());
    (Arc::new(store), changes)
}

/// Opens the configured store and identity's key source: what main.rs runs.
pub async fn open(cfg: &config::ConsentConfig) -> Result<ServiceSpec, Error> {
    let url = cfg
        .database
        .resolve_url(SERVICE_NAME)
        .map_err(|e| Error::invalid("database.url", e.to_string()))?;
    if !url.expose().starts_with("sqlite:") && cfg.database.max_connections < 2 {
        return Err(Error::invalid(
            "database.max_connections",
            "must be at least 2 on PostgreSQL: consent keeps one connection listening for changes",
        ));
    }
    let backend = store::open(
        cfg.database.backend,
        url.expose(),
        cfg.database.max_connections,
    )
    .await?;
    let (outbox_db, outbox_writes) = backend.outbox();
    let pool = PoolSampler(outbox_db.clone());
    let (store, changes) = layered_with(
        backend,
        Layering {
            heartbeat: Duration::from_millis(cfg.consent.watch_heartbeat_ms),
            cache_max_patients: cfg.consent.cache_max_patients,
        },
    );
    let tls = sharedcare_kit::tls::Tls::from_config(&cfg.tls)?;
    let channel = |url: &str| sharedcare_kit::tls::channel(url, tls.as_ref());
    let identity = channel(&cfg.auth.identity_url)?;
    let tokens: Arc<dyn ServiceTokens> =
        Arc::new(TokenSource::from_config(identity.clone(), &cfg.auth)?);
    let timeout = Duration::from_millis(cfg.consent.call_timeout_ms);
    let audit = Arc::new(GrpcAudit::new(
        channel(&cfg.consent.audit_url)?,
        tokens.clone(),
        timeout,
    ));
    let directory = Arc::new(IdentityDirectory::new(identity, tokens, timeout));
    let verifier = sharedcare_kit::tls::remote_verifier(&cfg.auth, tls.as_ref())?;
    let outbox = Outbox::start(
        outbox_db,
        outbox_writes,
        store::OUTBOX_TABLE,
        audit,
        OutboxSettings {
            max_lag: Duration::from_millis(cfg.consent.audit_max_lag_ms),
            ..OutboxSettings::default()
        },
    );
    let rules = cfg
        .consent
        .rules()
        .map_err(|e| Error::invalid("consent", e.to_string()))?;
    Ok(spec_with_rules(
        store,
        changes,
        outbox.clone(),
        directory,
        verifier,
        MessageLimits::from(&cfg.server),
        rules,
    )
    .with_tls(tls)
    .with_metrics_addr(cfg.telemetry.metrics_addr)
    .sample(outbox)
    .sample(Arc::new(pool)))
}
