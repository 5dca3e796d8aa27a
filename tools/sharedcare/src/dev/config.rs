//! Each service's configuration for `dev`, loaded and validated by that
//! service's own `load` from an environment map: the very path its
//! `main.rs` takes, with loopback ports, the data dir and dev's credentials.
//! No TLS: dev serves plaintext on loopback only (`tls.enabled` stays off).
//! One addition to identity's defaults: a `patient-tracer` staff role with
//! `trace_patients` (none of the default roles has it), so patient tracing
//! can be tried and benchmarked on dev.

use std::{collections::HashMap, path::PathBuf};

use anyhow::anyhow;
use sharedcare_audit::config::AuditConfig;
use sharedcare_consent::config::ConsentConfig;
use sharedcare_identity::config::IdentityConfig;
use sharedcare_kit::config::Validate;
use sharedcare_records::config::RecordsConfig;

use crate::{
    bootstrap::{CONSENT_CLIENT_ID, RECORDS_CLIENT_ID},
    ports::Ports,
};

/// The staff role dev adds, with the `trace_patients` capability.
pub const TRACER_ROLE: &str = "patient-tracer";

/// What `dev` decides for every service.
#[derive(Debug, Clone)]
pub struct DevSettings {
    pub ports: Ports,
    /// Absolute; every service keeps its SQLite file here.
    pub data_dir: PathBuf,
    pub bootstrap_file: PathBuf,
    pub records_secret: String,
    pub consent_secret: String,
    /// An `EnvFilter` directive; unset, the shell's or `info`.
    pub log_level: Option<String>,
    /// "pretty" or "json"; unset, the shell's or "pretty".
    pub log_format: Option<&'static str>,
    /// The `SHAREDCARE_*` settings dev was started with, given to every
    /// service as its own `main.rs` would take them from its environment
    /// (a database URL, telemetry, cache sizes...); dev's own wiring
    /// (ports, peers, data dir, credentials) is laid over them.
    pub shell: Env,
    /// `consent_cache.max_age_ms` for records and identity, when given.
    pub decision_cache_ms: Option<u64>,
}

/// The four configurations, validated.
#[derive(Debug, Clone)]
pub struct Configs {
    pub identity: IdentityConfig,
    pub consent: ConsentConfig,
    pub records: RecordsConfig,
    pub audit: AuditConfig,
}

type Env = HashMap<String, String>;

impl DevSettings {
    /// Loads all four, naming the service whose configuration is wrong.
    pub fn load(&self) -> anyhow::Result<Configs> {
        let named = |service: &str| {
            let service = service.to_owned();
            move |e| anyhow!("{service} configuration: {e}")
        };
        let mut identity =
            IdentityConfig::load(&self.identity_env()?).map_err(named("identity"))?;
        // Added to the loaded map rather than through the environment, which
        // cannot carry a list.
        identity
            .identity
            .roles
            .entry(TRACER_ROLE.into())
            .or_insert_with(|| vec!["trace_patients".into()]);
        identity.validate().map_err(named("identity"))?;
        Ok(Configs {
            identity,
            consent: ConsentConfig::load(&self.consent_env()?).map_err(named("consent"))?,
            records: RecordsConfig::load(&self.records_env()?).map_err(named("records"))?,
            audit: AuditConfig::load(&self.audit_env()?).map_err(named("audit"))?,
        })
    }

    pub fn identity_env(&self) -> anyhow::Result<Env> {
        let mut env = self.common(self.ports.identity)?;
        env.extend([
            (
                "SHAREDCARE_IDENTITY__BOOTSTRAP_FILE".into(),
                utf8(&self.bootstrap_file)?,
            ),
            // identity asks consent before serving demographics, and
            // audits them.
            (
                "SHAREDCARE_IDENTITY__CONSENT_URL".into(),
                Ports::url(self.ports.consent),
            ),
            (
                "SHAREDCARE_IDENTITY__AUDIT_URL".into(),
                Ports::url(self.ports.audit),
            ),
        ]);
        env.extend(self.decision_cache());
        Ok(env)
    }

    /// consent audits its own changes and asks identity about
    /// organisations, as its own client.
    pub fn consent_env(&self) -> anyhow::Result<Env> {
        let mut env = self.common(self.ports.consent)?;
        env.extend([
            (
                "SHAREDCARE_AUTH__CLIENT_ID".into(),
                CONSENT_CLIENT_ID.into(),
            ),
            (
                "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".into(),
                self.consent_secret.clone(),
            ),
            (
                "SHAREDCARE_CONSENT__AUDIT_URL".into(),
                Ports::url(self.ports.audit),
            ),
        ]);
        Ok(env)
    }

    pub fn records_env(&self) -> anyhow::Result<Env> {
        let mut env = self.common(self.ports.records)?;
        env.extend([
            (
                "SHAREDCARE_AUTH__CLIENT_ID".into(),
                RECORDS_CLIENT_ID.into(),
            ),
            (
                "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".into(),
                self.records_secret.clone(),
            ),
            (
                "SHAREDCARE_RECORDS__CONSENT_URL".into(),
                Ports::url(self.ports.consent),
            ),
            (
                "SHAREDCARE_RECORDS__AUDIT_URL".into(),
                Ports::url(self.ports.audit),
            ),
        ]);
        env.extend(self.decision_cache());
        Ok(env)
    }

    fn decision_cache(&self) -> Option<(String, String)> {
        self.decision_cache_ms.map(|ms| {
            (
                "SHAREDCARE_CONSENT_CACHE__MAX_AGE_MS".into(),
                ms.to_string(),
            )
        })
    }

    pub fn audit_env(&self) -> anyhow::Result<Env> {
        self.common(self.ports.audit)
    }

    /// What every service gets: the shell's settings, then its loopback
    /// port, no shutdown drain (no load balancer to wait for), the data
    /// dir, identity's URL, the logs, no per-client rate limit (unless the
    /// shell sets one).
    fn common(&self, port: u16) -> anyhow::Result<Env> {
        let mut env = self.shell.clone();
        let logs = [
            (
                "SHAREDCARE_TELEMETRY__LOG_LEVEL",
                self.log_level.clone(),
                "info",
            ),
            (
                "SHAREDCARE_TELEMETRY__LOG_FORMAT",
                self.log_format.map(str::to_owned),
                "pretty",
            ),
        ];
        // No per-client rate limit unless the shell sets one: a developer's
        // one bench client must be able to reach the platform's capacity.
        env.entry("SHAREDCARE_SERVER__CLIENT_REQUESTS_PER_SECOND".into())
            .or_insert_with(|| "0".into());
        for (key, given, default) in logs {
            match given {
                Some(value) => {
                    env.insert(key.into(), value);
                }
                None => {
                    env.entry(key.into()).or_insert_with(|| default.into());
                }
            }
        }
        env.extend(HashMap::from([
            (
                "SHAREDCARE_SERVER__LISTEN".into(),
                format!("127.0.0.1:{port}"),
            ),
            ("SHAREDCARE_SERVER__SHUTDOWN_DRAIN_MS".into(), "0".into()),
            (
                "SHAREDCARE_DATABASE__DATA_DIR".into(),
                utf8(&self.data_dir)?,
            ),
            (
                "SHAREDCARE_AUTH__IDENTITY_URL".into(),
                Ports::url(self.ports.identity),
            ),
        ]));
        Ok(env)
    }
}

fn utf8(path: &std::path::Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} is not UTF-8: choose another path", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &std::path::Path) -> DevSettings {
        let credentials = crate::bootstrap::ensure(dir).expect("bootstrap file");
        DevSettings {
            ports: Ports::from_base(41000),
            data_dir: dir.to_owned(),
            bootstrap_file: credentials.path,
            records_secret: credentials.records_secret,
            consent_secret: credentials.consent_secret,
            log_level: Some("info".into()),
            log_format: Some("pretty"),
            shell: Env::new(),
            decision_cache_ms: None,
        }
    }

    #[test]
    fn every_service_loads_and_validates_its_dev_configuration() {
        let dir = tempfile::tempdir().expect("temp dir");
        let s = settings(dir.path());
        let configs = s.load().expect("valid");
        assert_eq!(
            configs.identity.server.listen.to_string(),
            "127.0.0.1:41000"
        );
        assert_eq!(configs.consent.server.listen.port(), 41001);
        let roles = configs.identity.identity.role_map().expect("role map");
        assert!(
            roles
                .capabilities(TRACER_ROLE)
                .contains(&sharedcare_kit::access::Capability::TracePatients),
            "dev has a role that traces patients"
        );
        assert_eq!(configs.records.server.listen.port(), 41002);
        assert_eq!(configs.audit.server.listen.port(), 41003);
        assert_eq!(
            configs.records.records.consent_url,
            "http://127.0.0.1:41001"
        );
        assert_eq!(configs.records.records.audit_url, "http://127.0.0.1:41003");
        assert_eq!(configs.records.auth.client_id.as_deref(), Some("records"));
        assert_eq!(configs.audit.auth.identity_url, "http://127.0.0.1:41000");
        assert_eq!(configs.consent.auth.client_id.as_deref(), Some("consent"));
        assert_eq!(configs.consent.auth.identity_url, "http://127.0.0.1:41000");
        assert_eq!(configs.consent.consent.audit_url, "http://127.0.0.1:41003");
        let consent_secret = configs
            .consent
            .auth
            .client_secret
            .resolve("auth.client_secret")
            .expect("resolves")
            .expect("set");
        assert_eq!(consent_secret.expose(), s.consent_secret);
        assert_ne!(s.consent_secret, s.records_secret);
        assert_eq!(
            configs.identity.identity.consent_url,
            "http://127.0.0.1:41001"
        );
        assert_eq!(
            configs.identity.identity.audit_url,
            "http://127.0.0.1:41003"
        );
        assert_eq!(configs.identity.server.shutdown_drain_ms, 0);
        assert_eq!(configs.records.server.client_requests_per_second, 0);
        // dev is plaintext on loopback: no TLS anywhere.
        assert!(!configs.identity.tls.enabled && !configs.consent.tls.enabled);
        assert!(!configs.records.tls.enabled && !configs.audit.tls.enabled);
        assert_eq!(
            configs.identity.identity.bootstrap_file.as_deref(),
            Some(s.bootstrap_file.as_path())
        );
        let url = configs
            .consent
            .database
            .resolve_url("consent")
            .expect("url");
        assert!(url.expose().contains(dir.path().to_str().expect("utf-8")));
    }

    #[test]
    fn the_decision_cache_can_be_turned_off_for_records_and_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let configs = settings(dir.path()).load().expect("defaults");
        assert!(configs.records.consent_cache.max_age_ms > 0);
        let off = DevSettings {
            decision_cache_ms: Some(0),
            ..settings(dir.path())
        };
        let configs = off.load().expect("valid");
        assert_eq!(configs.records.consent_cache.max_age_ms, 0);
        assert_eq!(configs.identity.consent_cache.max_age_ms, 0);
    }

    #[test]
    fn the_shells_settings_reach_every_service_under_devs_wiring() {
        let dir = tempfile::tempdir().expect("temp dir");
        let shell = Env::from([
            ("SHAREDCARE_DATABASE__BACKEND".into(), "postgres".into()),
            (
                "SHAREDCARE_DATABASE__URL__VALUE".into(),
                "postgres://postgres@127.0.0.1:5432/sharedcare".into(),
            ),
            ("SHAREDCARE_TELEMETRY__LOG_LEVEL".into(), "debug".into()),
            (
                "SHAREDCARE_TELEMETRY__METRICS_ADDR".into(),
                "127.0.0.1:9999".into(),
            ),
            // dev's own wiring wins: its ports are what its banner prints.
            ("SHAREDCARE_SERVER__LISTEN".into(), "0.0.0.0:1".into()),
            // dev's defaults don't: a rate limit can be tried under dev.
            (
                "SHAREDCARE_SERVER__CLIENT_REQUESTS_PER_SECOND".into(),
                "5".into(),
            ),
        ]);
        let configs = DevSettings {
            log_level: None,
            log_format: None,
            shell,
            ..settings(dir.path())
        }
        .load()
        .expect("valid");
        for (name, database, telemetry, server) in [
            (
                "identity",
                &configs.identity.database,
                &configs.identity.telemetry,
                &configs.identity.server,
            ),
            (
                "consent",
                &configs.consent.database,
                &configs.consent.telemetry,
                &configs.consent.server,
            ),
            (
                "records",
                &configs.records.database,
                &configs.records.telemetry,
                &configs.records.server,
            ),
            (
                "audit",
                &configs.audit.database,
                &configs.audit.telemetry,
                &configs.audit.server,
            ),
        ] {
            assert_eq!(
                database.backend,
                sharedcare_kit::config::StorageBackend::Postgres,
                "{name}"
            );
            let url = database.resolve_url(name).expect("url");
            assert!(url.expose().starts_with("postgres://"), "{name}");
            assert_eq!(telemetry.log_level, "debug", "{name}");
            assert_eq!(server.client_requests_per_second, 5, "{name}");
            assert_eq!(
                telemetry.log_format,
                sharedcare_kit::config::LogFormat::Pretty
            );
            let listen = server.listen;
            assert_eq!(listen.ip().to_string(), "127.0.0.1", "{name}: {listen}");
            assert_ne!(listen.port(), 1, "{name}: dev's port, not the shell's");
        }
    }

    #[test]
    fn a_bad_log_level_names_the_service_and_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = settings(dir.path());
        s.log_level = Some("[".into());
        let err = s.load().expect_err("invalid filter");
        let text = err.to_string();
        assert!(text.contains("identity configuration"), "{text}");
        assert!(text.contains("telemetry.log_level"), "{text}");
    }
}
