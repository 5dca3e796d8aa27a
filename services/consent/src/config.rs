//! consent's configuration: the sections every service shares, on port 50052.

use serde::Deserialize;
use sharedcare_kit::config::{
    AuthConfig, COMMON_DEFAULTS, ConfigError, DatabaseConfig, EnvSource, ServerConfig,
    TelemetryConfig, Validate,
};
use sharedcare_kit::tls::TlsConfig;

#[derive(Debug, Clone, Deserialize)]
pub struct ConsentConfig {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    /// TLS on this service's port and its outgoing calls (`kit::tls`);
    /// off unless `tls.enabled`.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// The shared defaults with consent's own port.
fn defaults() -> String {
    COMMON_DEFAULTS.replace(r#"listen = "0.0.0.0:50051""#, r#"listen = "0.0.0.0:50052""#)
}

impl ConsentConfig {
    pub fn load(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load(&defaults(), env)
    }
}

impl Validate for ConsentConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.database.validate(crate::SERVICE_NAME)?;
        self.auth.validate()?;
        self.tls.validate()?;
        self.tls
            .check_url("auth.identity_url", &self.auth.identity_url)
    }
}

impl sharedcare_kit::server::ServiceConfig for ConsentConfig {
    fn server(&self) -> &ServerConfig {
        &self.server
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn defaults_load_and_validate_on_consents_port() {
        let cfg = ConsentConfig::load(&HashMap::new()).expect("defaults are valid");
        assert_eq!(cfg.server.listen.port(), 50052);
        assert_eq!(cfg.auth.identity_url, "http://127.0.0.1:50051");
    }

    #[test]
    fn a_bad_database_url_is_named() {
        let env = HashMap::from([(
            "SHAREDCARE_DATABASE__URL__VALUE".to_owned(),
            "mysql://db/consent".to_owned(),
        )]);
        let err = ConsentConfig::load(&env).expect_err("unsupported");
        assert!(err.to_string().contains("database.url"), "{err}");
    }
}
