//! The whole platform for cross-service tests: all four real services, each
//! on its own loopback socket, configured the way `main.rs` configures them
//! (from `SHAREDCARE_*` variables, see [`layout`]), on SQLite or
//! PostgreSQL — in this process ([`Platform`]) or as the real binaries,
//! one process each ([`processes::Processes`]), for tests that kill them.

pub mod clients;
pub mod crash;
pub mod layout;
pub mod load;
pub mod postgres;
pub mod processes;

use std::collections::HashMap;

use sharedcare_kit::{
    config::ServerConfig,
    testing::{TestServer, reserve_port, spawn_on},
    tls::test_pki::TestPki,
};
use sharedcare_proto::records::v1 as records;

pub use clients::Clients;
pub use layout::{Backend, Layout, Service, Urls};

pub const ADMIN_CLIENT_ID: &str = "admin";
pub const ADMIN_SECRET: &str = "e2e-admin-secret-0123456789abcdef0123456789abcdef";
/// How often the services refresh identity's revocation list in tests.
pub const REVOCATION_REFRESH_MS: u64 = 300;
pub const RECORDS_SECRET: &str = "e2e-records-secret-0123456789abcdef0123456789abcd";
const CONSENT_SECRET: &str = "e2e-consent-secret-0123456789abcdef0123456789abcd";

/// The four services in this process. Calls through [`Clients`] (its
/// `Deref` target) reach them.
pub struct Platform {
    pub identity: TestServer,
    pub consent: TestServer,
    pub audit: TestServer,
    pub records: TestServer,
    /// The database URL records writes to, for checking what was stored.
    pub records_db_url: String,
    /// consent's database URL, likewise.
    pub consent_db_url: String,
    clients: Clients,
    urls: Urls,
    layout: Layout,
}

impl std::ops::Deref for Platform {
    type Target = Clients;

    fn deref(&self) -> &Clients {
        &self.clients
    }
}

impl Platform {
    /// Starts identity, audit, consent, then records, each on a port reserved
    /// up front so each knows the others' URLs.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, None).await
    }

    /// The same over mutual TLS: a fresh CA, a certificate per service
    /// (`<service>.crt`/`.key` in `pki.dir()`, checked for a change every
    /// 100 ms), https:// URLs between them. Each `TestServer.channel`
    /// presents that service's certificate.
    pub async fn start_tls(backend: Backend) -> Self {
        Self::start_with(backend, Some(TestPki::new())).await
    }

    async fn start_with(backend: Backend, pki: Option<TestPki>) -> Self {
        let layout = Layout::new(backend, pki);
        let (records_db_url, consent_db_url) = (
            layout.db_url(Service::Records),
            layout.db_url(Service::Consent),
        );
        // Every port first: the services call each other.
        let listeners = [
            reserve_port().await,
            reserve_port().await,
            reserve_port().await,
            reserve_port().await,
        ];
        let scheme = layout.scheme();
        let [identity_url, consent_url, audit_url] = [&listeners[0], &listeners[1], &listeners[2]]
            .map(|l| format!("{scheme}://{}", l.local_addr().expect("local addr")));
        let urls = Urls {
            identity: identity_url,
            consent: consent_url,
            audit: audit_url,
        };
        let [identity_port, consent_port, audit_port, records_port] = listeners;
        let server = ServerConfig::loopback;

        let env = layout.env(Service::Identity, &urls);
        let cfg = sharedcare_identity::config::IdentityConfig::load(&env).expect("identity config");
        let identity = spawn_on(
            sharedcare_identity::open(&cfg)
                .await
                .expect("identity opens"),
            server(),
            identity_port,
        )
        .await;

        let audit = spawn_audit(&layout.env(Service::Audit, &urls), audit_port).await;

        let env = layout.env(Service::Consent, &urls);
        let cfg = sharedcare_consent::config::ConsentConfig::load(&env).expect("consent config");
        let consent = spawn_on(
            sharedcare_consent::open(&cfg).await.expect("consent opens"),
            server(),
            consent_port,
        )
        .await;

        let env = layout.env(Service::Records, &urls);
        let cfg = sharedcare_records::config::RecordsConfig::load(&env).expect("records config");
        let records = spawn_on(
            sharedcare_records::open(&cfg).await.expect("records opens"),
            server(),
            records_port,
        )
        .await;

        Platform {
            clients: Clients {
                identity: identity.channel.clone(),
                consent: consent.channel.clone(),
                records: records.channel.clone(),
                audit: audit.channel.clone(),
            },
            identity,
            consent,
            audit,
            records,
            records_db_url,
            consent_db_url,
            urls,
            layout,
        }
    }

    /// The CA and the services' certificates when started with TLS.
    pub fn pki(&self) -> Option<&TestPki> {
        self.layout.pki()
    }

    /// Another audit replica of the platform's log, on a new port: a
    /// separate server (its own store, connection pool, sequencer and tree
    /// heads) configured exactly as `audit` is, so it appends to the same
    /// database and signs with the same log key (kept in the shared data
    /// dir). The caller stops it before [`Platform::stop`].
    pub async fn spawn_audit_replica(&self) -> TestServer {
        spawn_audit(
            &self.layout.env(Service::Audit, &self.urls),
            reserve_port().await,
        )
        .await
    }

    /// The audit log's verifier key, as audit wrote it beside its signing
    /// key in the data dir for auditors.
    pub fn audit_verifier_key(&self) -> String {
        std::fs::read_to_string(
            self.layout
                .data_dir()
                .join(sharedcare_audit::VERIFIER_KEY_FILE),
        )
        .expect("audit wrote its verifier key")
    }

    /// identity's own service token, signed with the key identity keeps in
    /// the data dir: what identity presents when it calls consent.
    pub async fn identity_self_token(&self) -> String {
        let env = HashMap::from([(
            "SHAREDCARE_DATABASE__DATA_DIR".to_owned(),
            self.layout.data_dir().display().to_string(),
        )]);
        let cfg = sharedcare_identity::config::IdentityConfig::load(&env).expect("identity config");
        let key = sharedcare_kit::keys::SigningKey::configured_or_kept(
            &Default::default(),
            "identity.signing_key",
            &self.layout.data_dir().join("identity-signing-key.pem"),
        )
        .expect("identity's signing key");
        let issuer = sharedcare_identity::TokenIssuer::new(
            key,
            &cfg.auth.issuer,
            &cfg.auth.audience,
            cfg.identity.token_ttl_secs,
        );
        sharedcare_identity::SelfTokens::new(std::sync::Arc::new(issuer))
            .token()
            .await
            .expect("identity's own token")
    }

    /// How many resource versions records has stored.
    pub async fn stored_record_count(&self) -> i64 {
        use sea_orm::{ConnectionTrait, Statement};
        let db = sea_orm::Database::connect(self.records_db_url.as_str())
            .await
            .expect("connect to records' database");
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM records_resource_versions",
            ))
            .await
            .expect("count")
            .expect("a row");
        let n: i64 = row.try_get("", "n").expect("n");
        db.close().await.ok();
        n
    }

    /// Stops every service and drops a PostgreSQL database.
    pub async fn stop(self) {
        self.records.stop().await;
        self.audit.stop().await;
        self.consent.stop().await;
        self.identity.stop().await;
        self.layout.cleanup().await;
    }
}

/// Starts audit from its `SHAREDCARE_*` environment on a reserved port, as
/// `main.rs` would.
async fn spawn_audit(
    env: &HashMap<String, String>,
    listener: tokio::net::TcpListener,
) -> TestServer {
    let cfg = sharedcare_audit::config::AuditConfig::load(env).expect("audit config");
    spawn_on(
        sharedcare_audit::open(&cfg).await.expect("audit opens"),
        ServerConfig::loopback(),
        listener,
    )
    .await
}

/// A penicillin allergy for the patient (general category).
pub fn allergy(patient_id: &str) -> records::CreateRecordRequest {
    records::CreateRecordRequest {
        patient_id: patient_id.into(),
        resource_json: serde_json::json!({
            "resourceType": "AllergyIntolerance",
            "patient": {"reference": format!("Patient/{patient_id}")},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005", "display": "Allergy to penicillin"}]}
        })
        .to_string(),
        ..Default::default()
    }
}

/// The first page of everything on the patient's record.
pub fn search(patient_id: &str) -> records::SearchRequest {
    records::SearchRequest {
        patient_id: patient_id.into(),
        ..Default::default()
    }
}

/// Retries `attempt` until it gives `Some` (what one service does reaches
/// another a moment later), for up to 10 s.
pub async fn eventually<T, F: AsyncFnMut() -> Option<T>>(what: &str, mut attempt: F) -> T {
    for _ in 0..200 {
        if let Some(done) = attempt().await {
            return done;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 10 s");
}
