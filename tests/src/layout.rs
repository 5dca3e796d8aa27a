//! How one platform's four services are configured: a data dir holding the
//! bootstrap file (the admin client and the records and consent service
//! clients), a backend, and each service's `SHAREDCARE_*` environment as
//! its `main.rs` reads it. Running them in this process
//! ([`crate::Platform`]) or as the real binaries
//! ([`crate::processes::Processes`]) starts from the same environment.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use sharedcare_kit::{testing::TestDatabase, tls::test_pki::TestPki};

use crate::{ADMIN_CLIENT_ID, ADMIN_SECRET, CONSENT_SECRET, RECORDS_SECRET, REVOCATION_REFRESH_MS};

/// Where the services keep their data for one test run.
pub enum Backend {
    /// A SQLite file per service in the data dir.
    Sqlite,
    /// A fresh database on `SHAREDCARE_TEST_DATABASE_URL`'s server, dropped
    /// at the end.
    Postgres(TestDatabase),
    /// A PostgreSQL database the test looks after itself (e.g. on a server
    /// of its own).
    PostgresAt(String),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) | Backend::PostgresAt(_) => "postgres",
        }
    }

    fn postgres_url(&self) -> Option<&str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres(db) => Some(db.url()),
            Backend::PostgresAt(url) => Some(url),
        }
    }

    /// Drops a database made for the test.
    pub async fn cleanup(self) {
        if let Backend::Postgres(db) = self {
            db.cleanup().await;
        }
    }
}

/// The four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Identity,
    Consent,
    Records,
    Audit,
}

impl Service {
    /// In the order they start (each finds the ones it calls up already)
    /// and, from a base port, the order of their ports (as `sharedcare
    /// --base-port` reads them: identity, consent, records, audit).
    pub const ALL: [Service; 4] = [
        Service::Identity,
        Service::Consent,
        Service::Records,
        Service::Audit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Consent => "consent",
            Service::Records => "records",
            Service::Audit => "audit",
        }
    }

    /// Its binary's name.
    pub fn binary(self) -> String {
        format!("sharedcare-{}", self.name())
    }

    /// Its offset from the base port.
    pub fn port_offset(self) -> u16 {
        match self {
            Service::Identity => 0,
            Service::Consent => 1,
            Service::Records => 2,
            Service::Audit => 3,
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the services that others call are found.
#[derive(Debug, Clone)]
pub struct Urls {
    pub identity: String,
    pub consent: String,
    pub audit: String,
}

/// One platform's configuration.
pub struct Layout {
    data_dir: tempfile::TempDir,
    backend: Backend,
    pki: Option<TestPki>,
    base: HashMap<String, String>,
}

impl Layout {
    /// A fresh data dir with the bootstrap file, for `backend`; with `pki`
    /// the services serve mutual TLS with its certificates.
    pub fn new(backend: Backend, pki: Option<TestPki>) -> Self {
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
        if let Some(url) = backend.postgres_url() {
            // All four share one database: their tables and migration
            // ledgers are prefixed by service.
            base.insert("SHAREDCARE_DATABASE__URL__VALUE".into(), url.to_owned());
            base.insert("SHAREDCARE_DATABASE__BACKEND".into(), "postgres".into());
        }
        Layout {
            data_dir,
            backend,
            pki,
            base,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn bootstrap_file(&self) -> PathBuf {
        self.data_dir().join("bootstrap.toml")
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn pki(&self) -> Option<&TestPki> {
        self.pki.as_ref()
    }

    /// `http` or, with TLS, `https`.
    pub fn scheme(&self) -> &'static str {
        if self.pki.is_some() { "https" } else { "http" }
    }

    /// Sets `key` for every service from now on.
    pub fn set(&mut self, key: &str, value: &str) {
        self.base.insert(key.to_owned(), value.to_owned());
    }

    /// The database `service` keeps its data in.
    pub fn db_url(&self, service: Service) -> String {
        match self.backend.postgres_url() {
            Some(url) => url.to_owned(),
            None => sharedcare_kit::db::sqlite_url(
                &self.data_dir().join(format!("{}.db", service.name())),
            ),
        }
    }

    /// `service`'s environment, given where the services it calls are.
    pub fn env(&self, service: Service, urls: &Urls) -> HashMap<String, String> {
        let mut env = self.base.clone();
        if let Some(pki) = &self.pki {
            env.extend(pki.env(service.name()));
        }
        let set = |env: &mut HashMap<String, String>, pairs: &[(&str, &str)]| {
            env.extend(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
        };
        if service != Service::Identity {
            set(
                &mut env,
                &[("SHAREDCARE_AUTH__IDENTITY_URL", &urls.identity)],
            );
        }
        match service {
            Service::Identity => set(
                &mut env,
                &[
                    (
                        "SHAREDCARE_IDENTITY__BOOTSTRAP_FILE",
                        &self.bootstrap_file().display().to_string(),
                    ),
                    ("SHAREDCARE_IDENTITY__CONSENT_URL", &urls.consent),
                    ("SHAREDCARE_IDENTITY__AUDIT_URL", &urls.audit),
                ],
            ),
            Service::Audit => {}
            Service::Consent => set(
                &mut env,
                &[
                    ("SHAREDCARE_AUTH__CLIENT_ID", "consent"),
                    ("SHAREDCARE_AUTH__CLIENT_SECRET__VALUE", CONSENT_SECRET),
                    ("SHAREDCARE_CONSENT__AUDIT_URL", &urls.audit),
                ],
            ),
            Service::Records => set(
                &mut env,
                &[
                    ("SHAREDCARE_AUTH__CLIENT_ID", "records"),
                    ("SHAREDCARE_AUTH__CLIENT_SECRET__VALUE", RECORDS_SECRET),
                    ("SHAREDCARE_RECORDS__CONSENT_URL", &urls.consent),
                    ("SHAREDCARE_RECORDS__AUDIT_URL", &urls.audit),
                    ("SHAREDCARE_RECORDS__MAX_RESOURCE_BYTES", "131072"),
                    ("SHAREDCARE_RECORDS__CALL_TIMEOUT_MS", "3000"),
                    // Tests see audit's absence fail closed quickly.
                    ("SHAREDCARE_RECORDS__AUDIT_MAX_LAG_MS", "300"),
                    ("SHAREDCARE_RECORDS__OUTBOX_RETRY_MS", "100"),
                ],
            ),
        }
        env
    }

    /// Removes the data dir and drops a database made for the test.
    pub async fn cleanup(self) {
        drop(self.data_dir);
        self.backend.cleanup().await;
    }
}
