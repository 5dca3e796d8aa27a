//! audit's configuration: the shared sections, with audit's own port.

use serde::Deserialize;
use sharedcare_kit::config::{
    AuthConfig, COMMON_DEFAULTS, ConfigError, DatabaseConfig, EnvSource, ServerConfig,
    TelemetryConfig, Validate,
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
    /// TLS on this service's port and its outgoing calls (`kit::tls`);
    /// off unless `tls.enabled`.
    #[serde(default)]
    pub tls: TlsConfig,
}

impl Validate for AuditConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.database.validate(SERVICE_NAME)?;
        self.auth.validate()?;
        self.tls.validate()?;
        self.tls
            .check_url("auth.identity_url", &self.auth.identity_url)
    }
}

/// The built-in defaults: the common ones with audit's port.
pub fn defaults() -> String {
    COMMON_DEFAULTS.replace(
        r#"listen = "0.0.0.0:50051""#,
        &format!(r#"listen = "{DEFAULT_LISTEN}""#),
    )
}

impl AuditConfig {
    /// Defaults → optional file → `SHAREDCARE_*` environment, validated.
    pub fn load(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load(&defaults(), env)
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
    }
}
