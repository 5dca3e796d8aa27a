//! audit's configuration: the shared sections, with audit's own port.

use serde::Deserialize;
use sharedcare_kit::config::{
    AuthConfig, COMMON_DEFAULTS, ConfigError, DatabaseConfig, EnvSource, SecretSource,
    ServerConfig, TelemetryConfig, Validate,
};
use sharedcare_kit::tls::TlsConfig;

use crate::SERVICE_NAME;

/// Where audit listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:50054";

#[derive(Debug, Clone, Deserialize)]
pub struct AuditConfig {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub audit: AuditSettings,
    /// TLS on this service's port and its outgoing calls (`kit::tls`);
    /// off unless `tls.enabled`.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// The Merkle log's signed tree heads.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditSettings {
    /// The log's name: the first line of every checkpoint and the name of
    /// its key (no spaces or '+'; by convention a host-like path).
    pub log_name: String,
    /// Ed25519 private key (PKCS#8 PEM) that signs tree heads, inline or as
    /// a file; every replica of one log needs the same one. Unset: one is
    /// generated on first start and kept in the data dir, with its verifier
    /// key beside it.
    #[serde(default)]
    pub signing_key: SecretSource,
    /// How often a new tree head is signed and published, when the log grew.
    pub tree_head_interval_ms: u64,
}

impl Validate for AuditConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.database.validate(SERVICE_NAME)?;
        self.auth.validate()?;
        self.tls.validate()?;
        if crate::domain::checkpoint::check_key_name(&self.audit.log_name).is_err() {
            return Err(ConfigError::invalid(
                "audit.log_name",
                "must be non-empty and hold no spaces, newlines or '+'",
            ));
        }
        if !(100..=3_600_000).contains(&self.audit.tree_head_interval_ms) {
            return Err(ConfigError::invalid(
                "audit.tree_head_interval_ms",
                "must be between 100 and 3600000",
            ));
        }
        self.audit.signing_key.resolve("audit.signing_key")?;
        self.tls
            .check_url("auth.identity_url", &self.auth.identity_url)
    }
}

/// The built-in defaults: the common ones with audit's port.
pub fn defaults() -> String {
    COMMON_DEFAULTS.replace(
        r#"listen = "0.0.0.0:50051""#,
        &format!(r#"listen = "{DEFAULT_LISTEN}""#),
    ) + AUDIT_DEFAULTS
}

const AUDIT_DEFAULTS: &str = r#"
[audit]
log_name = "sharedcare.local/audit"
tree_head_interval_ms = 5000
"#;

impl AuditConfig {
    /// Defaults → optional file → `SHAREDCARE_*` environment, validated.
    pub fn load(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load(&defaults(), env)
    }

    /// As `load`, refusing unknown keys (`kit::config::load_strict`).
    pub fn load_strict(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load_strict(&defaults(), env)
    }
}

impl sharedcare_kit::server::ServiceConfig for AuditConfig {
    fn server(&self) -> &sharedcare_kit::config::ServerConfig {
        &self.server
    }

    fn telemetry(&self) -> &sharedcare_kit::config::TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let cfg = AuditConfig::load(&HashMap::new()).expect("defaults are valid");
        assert_eq!(cfg.server.listen.port(), 50054);
        assert_eq!(cfg.auth.identity_url, "http://127.0.0.1:50051");
        let url = cfg.database.resolve_url(SERVICE_NAME).expect("url");
        assert!(url.expose().ends_with("audit.db?mode=rwc"), "{:?}", url);
        assert_eq!(cfg.audit.log_name, "sharedcare.local/audit");
        assert!(cfg.audit.signing_key.value.is_none());
    }

    #[test]
    fn the_memory_backend_is_offered_but_not_over_a_postgres_url() {
        use sharedcare_kit::config::StorageBackend;
        let mut env = HashMap::from([(
            "SHAREDCARE_DATABASE__BACKEND".to_owned(),
            "memory".to_owned(),
        )]);
        let cfg = AuditConfig::load(&env).expect("memory is offered");
        assert_eq!(cfg.database.backend, StorageBackend::Memory);
        env.insert(
            "SHAREDCARE_DATABASE__URL__VALUE".to_owned(),
            "postgres://db/audit".to_owned(),
        );
        let err = AuditConfig::load(&env).expect_err("memory is not on PostgreSQL");
        assert!(err.to_string().contains("database.backend"), "{err}");
    }

    #[test]
    fn the_environment_overrides_and_bad_values_name_their_key() {
        let env: HashMap<String, String> = [(
            "SHAREDCARE_DATABASE__MAX_CONNECTIONS".to_owned(),
            "0".to_owned(),
        )]
        .into();
        let err = AuditConfig::load(&env).expect_err("refused");
        assert!(
            err.to_string().contains("database.max_connections"),
            "{err}"
        );
        for (key, value, named) in [
            ("SHAREDCARE_AUDIT__LOG_NAME", "has space", "audit.log_name"),
            (
                "SHAREDCARE_AUDIT__TREE_HEAD_INTERVAL_MS",
                "0",
                "audit.tree_head_interval_ms",
            ),
            (
                "SHAREDCARE_AUDIT__SIGNING_KEY__FILE",
                "/nonexistent/key.pem",
                "audit.signing_key",
            ),
        ] {
            let env: HashMap<String, String> = [(key.to_owned(), value.to_owned())].into();
            let err = AuditConfig::load(&env).expect_err(key);
            assert!(err.to_string().contains(named), "{key}: {err}");
        }
    }
}
