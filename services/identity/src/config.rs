//! identity's configuration: the shared sections plus `[identity]`.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;
use sharedcare_kit::config::{
    AuthConfig, COMMON_DEFAULTS, ConfigError, DatabaseConfig, EnvSource, SecretSource,
    ServerConfig, TelemetryConfig, Validate, check_url,
};
use sharedcare_kit::crypto::decode_key;
use sharedcare_kit::tls::TlsConfig;

use crate::domain::RoleMap;

#[derive(Debug, Clone, Deserialize)]
pub struct IdentityConfig {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub identity: IdentitySettings,
    /// How long consent's decisions are kept (`kit::decisions`).
    #[serde(default)]
    pub consent_cache: sharedcare_kit::decisions::ConsentCacheConfig,
    /// TLS on this service's port and its outgoing calls (`kit::tls`);
    /// off unless `tls.enabled`.
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdentitySettings {
    /// Lifetime of issued access tokens.
    pub token_ttl_secs: i64,
    /// IssueToken calls each client may make per minute (in a burst, then
    /// evenly); past it RESOURCE_EXHAUSTED. Guessing secrets is slowed too.
    pub token_requests_per_minute: u32,
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
    /// consent's gRPC URL: demographic reads are decided like record reads.
    pub consent_url: String,
    /// audit's gRPC URL: demographic reads and registrations are audited.
    pub audit_url: String,
    /// Deadline on each call to consent or audit.
    pub call_timeout_ms: u64,
    /// Refuse demographic reads and registrations once audit has been
    /// unreachable this long (their events wait in identity's outbox).
    pub audit_max_lag_ms: u64,
    /// Staff role code → capability names (`kit::access::Capability`).
    /// Compared without regard to case. A file's table is merged over the
    /// defaults: give a default role `[]` to take its capabilities away.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
}

impl IdentitySettings {
    /// The role map, as validated at start.
    pub fn role_map(&self) -> Result<RoleMap, ConfigError> {
        RoleMap::parse("identity.roles", &self.roles)
            .map_err(|(key, message)| ConfigError::invalid(key, message))
    }
}

// The role map names every role staff may hold (a role it does not name is
// refused at CreatePrincipal) and what each allows. Its defaults are a
// starting point to be reviewed with the information governance lead of each
// deployment, not a national standard: R8000 Clinical Practitioner Access
// Role, R8001 Nurse Access Role, R8003 Health Professional Access Role, R8004
// Healthcare Student Access Role, R8008 Admin/Clinical Support Access Role
// (national RBAC: registration clerks trace patients), and three platform
// roles (merging duplicates is the data-quality team's).
const OWN_DEFAULTS: &str = r#"
[identity]
token_ttl_secs = 900
token_requests_per_minute = 60
consent_url = "http://127.0.0.1:50052"
audit_url = "http://127.0.0.1:50054"
call_timeout_ms = 5000
audit_max_lag_ms = 30000

[identity.roles]
R8000 = ["record_directives", "refer", "break_glass"]
R8001 = ["record_directives", "refer"]
R8003 = ["refer"]
R8004 = []
R8008 = ["assert_relationships", "trace_patients"]
privacy-officer = ["privacy_officer"]
platform-auditor = ["platform_auditor"]
data-quality = ["trace_patients", "merge_patients"]
"#;

impl IdentityConfig {
    pub fn load(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load(&format!("{COMMON_DEFAULTS}{OWN_DEFAULTS}"), env)
    }

    /// As `load`, refusing unknown keys (`kit::config::load_strict`).
    pub fn load_strict(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load_strict(&format!("{COMMON_DEFAULTS}{OWN_DEFAULTS}"), env)
    }
}

impl Validate for IdentityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.database.validate(crate::SERVICE_NAME)?;
        self.auth.validate()?;
        self.tls.validate()?;
        self.consent_cache.validate()?;
        if !(1..=60_000).contains(&self.identity.token_requests_per_minute) {
            return Err(ConfigError::invalid(
                "identity.token_requests_per_minute",
                "must be between 1 and 60000",
            ));
        }
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
        for (key, url) in [
            ("identity.consent_url", &self.identity.consent_url),
            ("identity.audit_url", &self.identity.audit_url),
        ] {
            check_url(key, url)?;
            // https:// with TLS on, http:// with it off.
            self.tls.check_url(key, url)?;
        }
        if self.identity.call_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "identity.call_timeout_ms",
                "must be at least 1",
            ));
        }
        self.identity.role_map()?;
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
        assert_eq!(cfg.identity.token_requests_per_minute, 60);
    }

    #[test]
    fn the_default_role_map_gives_clinicians_and_officers_their_capabilities() {
        use sharedcare_kit::access::Capability;
        let cfg = IdentityConfig::load(&HashMap::new()).expect("defaults are valid");
        let roles = cfg.identity.role_map().expect("valid");
        assert!(roles.capabilities("R8000").contains(&Capability::Refer));
        assert!(
            roles
                .capabilities("R8008")
                .contains(&Capability::AssertRelationships)
        );
        assert!(
            roles
                .capabilities("privacy-officer")
                .contains(&Capability::PrivacyOfficer)
        );
        assert!(roles.capabilities("R9999").is_empty());
        assert_eq!(cfg.identity.consent_url, "http://127.0.0.1:50052");
    }

    #[test]
    fn a_role_map_file_is_merged_and_an_unknown_capability_is_named() {
        use sharedcare_kit::access::Capability;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("identity.toml");
        std::fs::write(
            &path,
            "[identity.roles]\nR8000 = []\nR0001 = [\"trace_patients\"]\n",
        )
        .expect("write");
        let env = HashMap::from([(
            "SHAREDCARE_CONFIG_FILE".to_owned(),
            path.display().to_string(),
        )]);
        let roles = IdentityConfig::load(&env)
            .expect("valid")
            .identity
            .role_map()
            .expect("valid");
        assert!(roles.capabilities("R8000").is_empty());
        assert!(
            roles
                .capabilities("R0001")
                .contains(&Capability::TracePatients)
        );
        assert!(roles.capabilities("R8001").contains(&Capability::Refer));

        std::fs::write(&path, "[identity.roles]\nR8000 = [\"root\"]\n").expect("write");
        let err = IdentityConfig::load(&env).expect_err("unknown capability");
        let message = err.to_string();
        assert!(
            message.to_lowercase().contains("identity.roles.r8000") && message.contains("root"),
            "{message}"
        );
    }

    #[test]
    fn the_memory_backend_is_offered_but_not_over_a_postgres_url() {
        use sharedcare_kit::config::StorageBackend;
        let mut env = HashMap::from([(
            "SHAREDCARE_DATABASE__BACKEND".to_owned(),
            "memory".to_owned(),
        )]);
        let cfg = IdentityConfig::load(&env).expect("memory is offered");
        assert_eq!(cfg.database.backend, StorageBackend::Memory);
        env.insert(
            "SHAREDCARE_DATABASE__URL__VALUE".to_owned(),
            "postgres://db/identity".to_owned(),
        );
        let err = IdentityConfig::load(&env).expect_err("memory is not on PostgreSQL");
        assert!(err.to_string().contains("database.backend"), "{err}");
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

    #[test]
    fn a_bad_token_rate_is_named() {
        let env = HashMap::from([(
            "SHAREDCARE_IDENTITY__TOKEN_REQUESTS_PER_MINUTE".to_owned(),
            "0".to_owned(),
        )]);
        let err = IdentityConfig::load(&env).expect_err("zero");
        assert!(
            err.to_string()
                .contains("identity.token_requests_per_minute")
        );
    }
}
