//! identity's configuration: the shared sections plus `[identity]`.

use std::path::PathBuf;

use serde::Deserialize;
use sharedcare_kit::config::{
    AuthConfig, COMMON_DEFAULTS, ConfigError, DatabaseConfig, EnvSource, SecretSource,
    ServerConfig, TelemetryConfig, Validate,
};
use sharedcare_kit::crypto::decode_key;
use sharedcare_kit::tls::TlsConfig;

#[derive(Debug, Clone, Deserialize)]
pub struct IdentityConfig {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub identity: IdentitySettings,
    /// TLS on this service's port and its outgoing calls (`kit::tls`);
    /// off unless `tls.enabled`.
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdentitySettings {
    /// Lifetime of issued access tokens.
    pub token_ttl_secs: i64,
    /// Ed25519 private key (PKCS#8 PEM), inline or as a file. Unset: one is
    /// generated on first start and kept in the data dir.
    #[serde(default)]
    pub signing_key: SecretSource,
    /// Base64 of the 32-byte AES-256 key-encryption key sealing patient
    /// demographics. Unset: generated on first start and kept in the data dir.
    #[serde(default)]
    pub key_encryption_key: SecretSource,
    /// Base64 of the 32-byte key of the NHS number's blind index. Unset:
    /// generated on first start and kept in the data dir.
    #[serde(default)]
    pub nhs_index_key: SecretSource,
    /// TOML file of organisations and principals to ensure at start
    /// (the platform's admin client and service clients).
    #[serde(default)]
    pub bootstrap_file: Option<PathBuf>,
}

const OWN_DEFAULTS: &str = r#"
[identity]
token_ttl_secs = 900
"#;

impl IdentityConfig {
    pub fn load(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load(&format!("{COMMON_DEFAULTS}{OWN_DEFAULTS}"), env)
    }
}

impl Validate for IdentityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.database.validate(crate::SERVICE_NAME)?;
        self.auth.validate()?;
        self.tls.validate()?;
        if !(60..=86_400).contains(&self.identity.token_ttl_secs) {
            return Err(ConfigError::invalid(
                "identity.token_ttl_secs",
                "must be between 60 and 86400",
            ));
        }
        self.identity.signing_key.resolve("identity.signing_key")?;
        for (key, source) in [
            (
                "identity.key_encryption_key",
                &self.identity.key_encryption_key,
            ),
            ("identity.nhs_index_key", &self.identity.nhs_index_key),
        ] {
            if let Some(text) = source.resolve(key)?
                && decode_key(text.expose()).is_err()
            {
                return Err(ConfigError::invalid(
                    key,
                    "must be the base64 encoding of 32 bytes",
                ));
            }
        }
        if let Some(path) = &self.identity.bootstrap_file
            && !path.is_file()
        {
            return Err(ConfigError::invalid(
                "identity.bootstrap_file",
                format!("{} is not a file", path.display()),
            ));
        }
        Ok(())
    }
}

impl sharedcare_kit::server::ServiceConfig for IdentityConfig {
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
    fn defaults_load_and_validate() {
        let cfg = IdentityConfig::load(&HashMap::new()).expect("defaults are valid");
        assert_eq!(cfg.server.listen.port(), 50051);
        assert_eq!(cfg.identity.token_ttl_secs, 900);
    }

    #[test]
    fn a_bad_ttl_is_named() {
        let env = HashMap::from([(
            "SHAREDCARE_IDENTITY__TOKEN_TTL_SECS".to_owned(),
            "5".to_owned(),
        )]);
        let err = IdentityConfig::load(&env).expect_err("too short");
        assert!(err.to_string().contains("identity.token_ttl_secs"));
    }
}
