//! The whole platform for cross-service tests: all four real services, each
//! on its own loopback socket, configured the way `main.rs` configures them
//! (from `SHAREDCARE_*` variables), on SQLite or PostgreSQL.

use std::collections::HashMap;

use sharedcare_kit::{
    config::ServerConfig,
    testing::{TestDatabase, TestServer, reserve_port, spawn_on, with_token},
    tls::test_pki::TestPki,
};
use sharedcare_proto::{
    common::v1::{PrincipalKind, Purpose},
    consent::v1::{self as consent, consent_service_client::ConsentServiceClient},
    identity::v1::{
        self as identity, CreateOrganisationRequest, CreatePrincipalRequest, IssueTokenRequest,
        identity_service_client::IdentityServiceClient,
    },
    records::v1::{self as records, records_service_client::RecordsServiceClient},
};

pub const ADMIN_CLIENT_ID: &str = "admin";
pub const ADMIN_SECRET: &str = "e2e-admin-secret-0123456789abcdef0123456789abcdef";
/// How often the services refresh identity's revocation list in tests.
pub const REVOCATION_REFRESH_MS: u64 = 300;
pub const RECORDS_SECRET: &str = "e2e-records-secret-0123456789abcdef0123456789abcd";
const CONSENT_SECRET: &str = "e2e-consent-secret-0123456789abcdef0123456789abcd";

/// Where the services keep their data for one test run.
pub enum Backend {
    Sqlite,
    Postgres(TestDatabase),
}

pub struct Platform {
    pub identity: TestServer,
    pub consent: TestServer,
    pub audit: TestServer,
    pub records: TestServer,
    /// The database URL records writes to, for checking what was stored.
    pub records_db_url: String,
    /// consent's database URL, likewise.
    pub consent_db_url: String,
    /// The CA and the services' certificates when started with TLS.
    pub pki: Option<TestPki>,
    /// audit's environment, for starting replicas of it.
    audit_env: HashMap<String, String>,
    data_dir: tempfile::TempDir,
    backend: Backend,
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
        let tls_env = |service: &str| pki.as_ref().map(|p| p.env(service)).unwrap_or_default();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let bootstrap = data_dir.path().join("bootstrap.toml");
        std::fs::write(
            &bootstrap,
            format!(
                r#"
[[organisations]]
ods_code = "X26"
name = "sharedcare platform"

[[principals]]
client_id = "{ADMIN_CLIENT_ID}"
client_secret = "{ADMIN_SECRET}"
kind = "admin"
display_name = "Platform administrator"
organisation = "X26"
role = "admin"

[[principals]]
client_id = "records"
client_secret = "{RECORDS_SECRET}"
kind = "service"
display_name = "records service"
organisation = "X26"
role = "service"

[[principals]]
client_id = "consent"
client_secret = "{CONSENT_SECRET}"
kind = "service"
display_name = "consent service"
organisation = "X26"
role = "service"
"#
            ),
        )
        .expect("write bootstrap file");

        let mut base: HashMap<String, String> = HashMap::from([
            (
                "SHAREDCARE_DATABASE__DATA_DIR".into(),
                data_dir.path().display().to_string(),
            ),
            ("SHAREDCARE_SERVER__SHUTDOWN_DRAIN_MS".into(), "0".into()),
            (
                "SHAREDCARE_SERVER__MAX_MESSAGE_BYTES".into(),
                "262144".into(),
            ),
            ("SHAREDCARE_TELEMETRY__LOG_LEVEL".into(), "warn".into()),
            // Each service serves its metrics on a port of its own
            // (`TestServer::metrics_addr`), as a deployment configures it.
            (
                "SHAREDCARE_TELEMETRY__METRICS_ADDR".into(),
                "127.0.0.1:0".into(),
            ),
            // A revocation reaches every service within this (tests show
            // the bound); a rotated key is fetched on its first token.
            (
                "SHAREDCARE_AUTH__REVOCATION_REFRESH_MS".into(),
                REVOCATION_REFRESH_MS.to_string(),
            ),
            ("SHAREDCARE_AUTH__JWKS_MIN_REFRESH_MS".into(), "100".into()),
        ]);
        if let Backend::Postgres(db) = &backend {
            // All four share one fresh database: their tables and migration
            // ledgers are prefixed by service.
            base.insert(
                "SHAREDCARE_DATABASE__URL__VALUE".into(),
                db.url().to_owned(),
            );
            base.insert("SHAREDCARE_DATABASE__BACKEND".into(), "postgres".into());
        }
        let db_url = |service: &str| match &backend {
            Backend::Postgres(db) => db.url().to_owned(),
            Backend::Sqlite => {
                sharedcare_kit::db::sqlite_url(&data_dir.path().join(format!("{service}.db")))
            }
        };
        let (records_db_url, consent_db_url) = (db_url("records"), db_url("consent"));

        // Every port first: the services call each other.
        let listeners = [
            reserve_port().await,
            reserve_port().await,
            reserve_port().await,
            reserve_port().await,
        ];
        let scheme = if pki.is_some() { "https" } else { "http" };
        let [identity_url, consent_url, audit_url] = [&listeners[0], &listeners[1], &listeners[2]]
            .map(|l| format!("{scheme}://{}", l.local_addr().expect("local addr")));
        let [identity_port, consent_port, audit_port, records_port] = listeners;
        let server = ServerConfig::loopback;

        let mut env = base.clone();
        env.extend(tls_env("identity"));
        env.extend([
            (
                "SHAREDCARE_IDENTITY__BOOTSTRAP_FILE".to_owned(),
                bootstrap.display().to_string(),
            ),
            (
                "SHAREDCARE_IDENTITY__CONSENT_URL".to_owned(),
                consent_url.clone(),
            ),
            (
                "SHAREDCARE_IDENTITY__AUDIT_URL".to_owned(),
                audit_url.clone(),
            ),
        ]);
        let cfg = sharedcare_identity::config::IdentityConfig::load(&env).expect("identity config");
        let identity = spawn_on(
            sharedcare_identity::open(&cfg)
                .await
                .expect("identity opens"),
            server(),
            identity_port,
        )
        .await;

        let mut base = base.clone();
        base.insert("SHAREDCARE_AUTH__IDENTITY_URL".into(), identity_url);
        let mut audit_env = base.clone();
        audit_env.extend(tls_env("audit"));
        let audit = spawn_audit(&audit_env, audit_port).await;

        let mut env = base.clone();
        env.extend(tls_env("consent"));
        env.extend([
            (
                "SHAREDCARE_AUTH__CLIENT_ID".to_owned(),
                "consent".to_owned(),
            ),
            (
                "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".to_owned(),
                CONSENT_SECRET.to_owned(),
            ),
            (
                "SHAREDCARE_CONSENT__AUDIT_URL".to_owned(),
                audit_url.clone(),
            ),
        ]);
        let cfg = sharedcare_consent::config::ConsentConfig::load(&env).expect("consent config");
        let consent = spawn_on(
            sharedcare_consent::open(&cfg).await.expect("consent opens"),
            server(),
            consent_port,
        )
        .await;

        let mut env = base;
        env.extend(tls_env("records"));
        env.extend([
            (
                "SHAREDCARE_AUTH__CLIENT_ID".to_owned(),
                "records".to_owned(),
            ),
            (
                "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".to_owned(),
                RECORDS_SECRET.to_owned(),
            ),
            ("SHAREDCARE_RECORDS__CONSENT_URL".to_owned(), consent_url),
            ("SHAREDCARE_RECORDS__AUDIT_URL".to_owned(), audit_url),
            (
                "SHAREDCARE_RECORDS__MAX_RESOURCE_BYTES".to_owned(),
                "131072".to_owned(),
            ),
            (
                "SHAREDCARE_RECORDS__CALL_TIMEOUT_MS".to_owned(),
                "3000".to_owned(),
            ),
            // Tests see audit's absence fail closed quickly.
            (
                "SHAREDCARE_RECORDS__AUDIT_MAX_LAG_MS".to_owned(),
                "300".to_owned(),
            ),
            (
                "SHAREDCARE_RECORDS__OUTBOX_RETRY_MS".to_owned(),
                "100".to_owned(),
            ),
        ]);
        let cfg = sharedcare_records::config::RecordsConfig::load(&env).expect("records config");
        let records = spawn_on(
            sharedcare_records::open(&cfg).await.expect("records opens"),
            server(),
            records_port,
        )
        .await;

        Platform {
            identity,
            consent,
            audit,
            records,
            records_db_url,
            consent_db_url,
            pki,
            audit_env,
            data_dir,
            backend,
        }
    }

    /// Another audit replica of the platform's log, on a new port: a
    /// separate server (its own store, connection pool, sequencer and tree
    /// heads) configured exactly as `audit` is, so it appends to the same
    /// database and signs with the same log key (kept in the shared data
    /// dir). The caller stops it before [`Platform::stop`].
    pub async fn spawn_audit_replica(&self) -> TestServer {
        spawn_audit(&self.audit_env, reserve_port().await).await
    }

    /// The audit log's verifier key, as audit wrote it beside its signing
    /// key in the data dir for auditors.
    pub fn audit_verifier_key(&self) -> String {
        std::fs::read_to_string(
            self.data_dir
                .path()
                .join(sharedcare_audit::VERIFIER_KEY_FILE),
        )
        .expect("audit wrote its verifier key")
    }

    /// identity's own service token, signed with the key identity keeps in
    /// the data dir: what identity presents when it calls consent.
    pub async fn identity_self_token(&self) -> String {
        let env = HashMap::from([(
            "SHAREDCARE_DATABASE__DATA_DIR".to_owned(),
            self.data_dir.path().display().to_string(),
        )]);
        let cfg = sharedcare_identity::config::IdentityConfig::load(&env).expect("identity config");
        let key = sharedcare_kit::keys::SigningKey::configured_or_kept(
            &Default::default(),
            "identity.signing_key",
            &self.data_dir.path().join("identity-signing-key.pem"),
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

    /// Siân O'Brien (NHS number 999 000 0018), registered by the GP
    /// practice A81001's PAS `gp_pas`, which asserts it is her registered
    /// GP; `gp` writes her an AllergyIntolerance. Her patient id and the
    /// record.
    pub async fn cared_for_patient(&self, gp_pas: &str, gp: &str) -> (String, records::Record) {
        let patient_id = IdentityServiceClient::new(self.identity.channel.clone())
            .register_patient(with_token(
                identity::RegisterPatientRequest {
                    confirm_new_patient: false,
                    nhs_number: "999 000 0018".into(),
                    demographics: Some(identity::Demographics {
                        given_names: vec!["Siân".into()],
                        family_name: "O'Brien".into(),
                        birth_date: "1961-07-14".into(),
                        gender: identity::Gender::Female as i32,
                        postcode: "LS1 4AP".into(),
                        ..Default::default()
                    }),
                },
                gp_pas,
            ))
            .await
            .expect("registered")
            .into_inner()
            .patient
            .expect("patient")
            .patient_id;
        ConsentServiceClient::new(self.consent.channel.clone())
            .record_care_relationship(with_token(
                consent::RecordCareRelationshipRequest {
                    patient_id: patient_id.clone(),
                    organisation_ods_code: "A81001".into(),
                    kind: consent::CareRelationshipKind::RegisteredGp as i32,
                    ..Default::default()
                },
                gp_pas,
            ))
            .await
            .expect("the GP cares for the patient");
        let created = RecordsServiceClient::new(self.records.channel.clone())
            .create_record(with_token(allergy(&patient_id), gp))
            .await
            .expect("created")
            .into_inner()
            .record
            .expect("record");
        (patient_id, created)
    }

    /// A token for a client, from identity.
    pub async fn token(&self, client_id: &str, secret: &str) -> String {
        IdentityServiceClient::new(self.identity.channel.clone())
            .issue_token(IssueTokenRequest {
                client_id: client_id.into(),
                client_secret: secret.into(),
                scopes: vec![],
                purpose: 0,
                ..Default::default()
            })
            .await
            .expect("token issued")
            .into_inner()
            .access_token
    }

    pub async fn admin_token(&self) -> String {
        self.token(ADMIN_CLIENT_ID, ADMIN_SECRET).await
    }

    /// Adds an organisation (as admin).
    pub async fn organisation(&self, admin: &str, ods: &str) {
        IdentityServiceClient::new(self.identity.channel.clone())
            .create_organisation(with_token(
                CreateOrganisationRequest {
                    ods_code: ods.into(),
                    name: format!("Organisation {ods}"),
                },
                admin,
            ))
            .await
            .expect("organisation created");
    }

    /// Creates a principal (as admin) and returns a token for it.
    pub async fn principal(&self, admin: &str, request: CreatePrincipalRequest) -> String {
        self.principal_with_purpose(admin, request, Purpose::Unspecified)
            .await
    }

    /// Creates a principal and returns a token for `purpose`.
    pub async fn principal_with_purpose(
        &self,
        admin: &str,
        request: CreatePrincipalRequest,
        purpose: Purpose,
    ) -> String {
        let created = IdentityServiceClient::new(self.identity.channel.clone())
            .create_principal(with_token(request, admin))
            .await
            .expect("principal created")
            .into_inner();
        let client_id = created.principal.expect("principal").client_id;
        IdentityServiceClient::new(self.identity.channel.clone())
            .issue_token(IssueTokenRequest {
                client_id,
                client_secret: created.client_secret,
                scopes: vec![],
                purpose: purpose as i32,
                ..Default::default()
            })
            .await
            .expect("token issued")
            .into_inner()
            .access_token
    }

    /// Creates a principal (as admin): its id, client id and secret.
    pub async fn credentials(
        &self,
        admin: &str,
        request: CreatePrincipalRequest,
    ) -> (String, String, String) {
        let created = IdentityServiceClient::new(self.identity.channel.clone())
            .create_principal(with_token(request, admin))
            .await
            .expect("principal created")
            .into_inner();
        let principal = created.principal.expect("principal");
        (
            principal.principal_id,
            principal.client_id,
            created.client_secret,
        )
    }

    /// A member of staff at `ods` in `role` (default scopes; capabilities
    /// from identity's role map).
    pub async fn staff(&self, admin: &str, ods: &str, role: &str) -> String {
        self.principal(
            admin,
            CreatePrincipalRequest {
                kind: PrincipalKind::Staff as i32,
                display_name: format!("{role} at {ods}"),
                organisation_ods_code: ods.into(),
                role: role.into(),
                ..Default::default()
            },
        )
        .await
    }

    /// The organisation's patient administration system: an application
    /// that registers patients and asserts its organisation's relationships.
    pub async fn pas(&self, admin: &str, ods: &str) -> String {
        self.principal(
            admin,
            CreatePrincipalRequest {
                kind: PrincipalKind::Application as i32,
                display_name: format!("PAS at {ods}"),
                organisation_ods_code: ods.into(),
                scopes: [
                    "patients.read",
                    "patients.write",
                    "records.read",
                    "records.write",
                    "consent.read",
                    "consent.write",
                ]
                .map(str::to_owned)
                .to_vec(),
                ..Default::default()
            },
        )
        .await
    }

    /// The patient, signed in for themselves.
    pub async fn patient(&self, admin: &str, patient_id: &str) -> String {
        self.principal(
            admin,
            CreatePrincipalRequest {
                kind: PrincipalKind::Patient as i32,
                display_name: "the patient".into(),
                patient_id: patient_id.into(),
                ..Default::default()
            },
        )
        .await
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
        drop(self.data_dir);
        if let Backend::Postgres(db) = self.backend {
            db.cleanup().await;
        }
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
