//! records' configuration: the shared sections plus `[records]`.

use std::path::PathBuf;

use serde::Deserialize;
use sharedcare_kit::config::{
    AuthConfig, COMMON_DEFAULTS, ConfigError, DatabaseConfig, EnvSource, SecretSource,
    ServerConfig, TelemetryConfig, Validate, check_url,
};
use sharedcare_kit::tls::TlsConfig;

use crate::domain::{ClassificationMap, MapError};

#[derive(Debug, Clone, Deserialize)]
pub struct RecordsConfig {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    /// Needs `client_id` and `client_secret`: records calls consent and audit.
    pub auth: AuthConfig,
    pub records: RecordsSettings,
    /// How long consent's decisions are kept (`kit::decisions`).
    #[serde(default)]
    pub consent_cache: sharedcare_kit::decisions::ConsentCacheConfig,
    /// TLS on this service's port and its outgoing calls (`kit::tls`);
    /// off unless `tls.enabled`.
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordsSettings {
    /// consent's gRPC URL.
    pub consent_url: String,
    /// audit's gRPC URL.
    pub audit_url: String,
    /// Largest FHIR resource accepted, in bytes.
    pub max_resource_bytes: usize,
    /// Deadline on each call to consent or audit.
    pub call_timeout_ms: u64,
    /// How often the audit outbox's relay looks for events when nothing
    /// woke it (and the longest it waits before retrying a failed delivery).
    pub outbox_retry_ms: u64,
    /// Refuse new accesses once audit has been unreachable this long.
    pub audit_max_lag_ms: u64,
    /// Refuse new accesses once this many audit events wait for delivery.
    pub audit_max_pending: u64,
    /// Base64 of the 32-byte AES-256 key-encryption key, inline or as a
    /// file. Unset: generated on first start and kept in the data dir.
    #[serde(default)]
    pub key_encryption_key: SecretSource,
    /// A file of earlier key-encryption keys, one base64 key per line, kept
    /// after a rotation so data sealed under them stays readable until
    /// `sharedcare records rewrap` has moved it to the current key.
    #[serde(default)]
    pub previous_key_encryption_keys_file: Option<PathBuf>,
    /// The storage server's gRPC URL when `database.backend` is `remote`
    /// (`sharedcare.records.storage.v1`; `sharedcare storage-server` is the
    /// reference one).
    #[serde(default)]
    pub remote_storage_url: Option<String>,
    /// A classification map (TOML) that replaces the built-in one, which is
    /// `services/records/classification.toml`. Unset: the built-in map.
    #[serde(default)]
    pub classification_map: Option<PathBuf>,
}

impl RecordsSettings {
    /// The classification map: the file named by `classification_map`, or
    /// the built-in one. Errors name the file and the line.
    pub fn classification_map(&self) -> Result<ClassificationMap, MapError> {
        match &self.classification_map {
            Some(path) => ClassificationMap::load(path),
            None => ClassificationMap::builtin(),
        }
    }
}

const OWN_DEFAULTS: &str = r#"
[records]
consent_url = "http://127.0.0.1:50052"
audit_url = "http://127.0.0.1:50054"
max_resource_bytes = 1048576
call_timeout_ms = 5000
outbox_retry_ms = 2000
audit_max_lag_ms = 30000
audit_max_pending = 100000
"#;

/// The shared defaults with records' own port and section.
fn defaults() -> String {
    let common = COMMON_DEFAULTS.replace("0.0.0.0:50051", "0.0.0.0:50053");
    format!("{common}{OWN_DEFAULTS}")
}

impl RecordsConfig {
    pub fn load(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load(&defaults(), env)
    }

    /// As `load`, refusing unknown keys (`kit::config::load_strict`).
    pub fn load_strict(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load_strict(&defaults(), env)
    }
}

impl Validate for RecordsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.database
            .validate_allowing_remote(crate::SERVICE_NAME)?;
        match (&self.database.backend, &self.records.remote_storage_url) {
            (sharedcare_kit::config::StorageBackend::Remote, None) => {
                return Err(ConfigError::invalid(
                    "records.remote_storage_url",
                    "is required when database.backend is remote",
                ));
            }
            (_, Some(url)) => {
                check_url("records.remote_storage_url", url)?;
                self.tls.check_url("records.remote_storage_url", url)?;
            }
            _ => {}
        }
        self.auth.validate()?;
        self.auth
            .require_client_credentials("records calls consent and audit as itself")?;
        check_url("records.consent_url", &self.records.consent_url)?;
        check_url("records.audit_url", &self.records.audit_url)?;
        self.tls.validate()?;
        for (key, url) in [
            ("auth.identity_url", &self.auth.identity_url),
            ("records.consent_url", &self.records.consent_url),
            ("records.audit_url", &self.records.audit_url),
        ] {
            self.tls.check_url(key, url)?;
        }
        if self.records.max_resource_bytes == 0
            || self.records.max_resource_bytes >= self.server.max_message_bytes
        {
            return Err(ConfigError::invalid(
                "records.max_resource_bytes",
                "must be above 0 and below server.max_message_bytes",
            ));
        }
        if let Some(kek) = self
            .records
            .key_encryption_key
            .resolve("records.key_encryption_key")?
        {
            sharedcare_kit::crypto::decode_key(kek.expose()).map_err(|_| {
                ConfigError::invalid(
                    "records.key_encryption_key",
                    "must be the base64 encoding of 32 bytes",
                )
            })?;
        }
        if let Some(path) = &self.records.previous_key_encryption_keys_file {
            sharedcare_kit::crypto::read_keys(path).map_err(|e| {
                ConfigError::invalid("records.previous_key_encryption_keys_file", e.message)
            })?;
        }
        if self.records.call_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "records.call_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.records.outbox_retry_ms < 100 {
            return Err(ConfigError::invalid(
                "records.outbox_retry_ms",
                "must be at least 100",
            ));
        }
        self.consent_cache.validate()?;
        if self.records.audit_max_pending == 0 {
            return Err(ConfigError::invalid(
                "records.audit_max_pending",
                "must be at least 1",
            ));
        }
        // A map that does not load stops the service here, before it starts.
        self.records
            .classification_map()
            .map_err(|e| ConfigError::invalid("records.classification_map", e.to_string()))?;
        Ok(())
    }
}

impl sharedcare_kit::server::ServiceConfig for RecordsConfig {
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

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn client_credentials_are_required() {
        let err = RecordsConfig::load(&HashMap::new()).expect_err("no client id");
        assert!(err.to_string().contains("auth.client_id"), "{err}");
    }

    #[test]
    fn tls_keys_are_checked_by_name() {
        let creds = [
            ("SHAREDCARE_AUTH__CLIENT_ID", "records"),
            ("SHAREDCARE_AUTH__CLIENT_SECRET__VALUE", "s3cret"),
        ];
        let mut pairs = creds.to_vec();
        pairs.push(("SHAREDCARE_TLS__ENABLED", "true"));
        let err = RecordsConfig::load(&env(&pairs)).expect_err("no certificate");
        assert!(err.to_string().contains("tls.cert_file"), "{err}");

        // The files are good but the URLs are still http://.
        let dir = tempfile::tempdir().expect("dir");
        let pki = sharedcare_kit::tls::test_pki::TestPki::new();
        let tls = pki.env("records");
        let mut pairs = creds.to_vec();
        pairs.extend(tls.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let data_dir = dir.path().display().to_string();
        pairs.push(("SHAREDCARE_DATABASE__DATA_DIR", &data_dir));
        let err = RecordsConfig::load(&env(&pairs)).expect_err("plaintext URL");
        assert!(err.to_string().contains("auth.identity_url"), "{err}");
        pairs.extend([
            ("SHAREDCARE_AUTH__IDENTITY_URL", "https://identity:50051"),
            ("SHAREDCARE_RECORDS__CONSENT_URL", "https://consent:50052"),
        ]);
        let err = RecordsConfig::load(&env(&pairs)).expect_err("plaintext audit URL");
        assert!(err.to_string().contains("records.audit_url"), "{err}");
        pairs.push(("SHAREDCARE_RECORDS__AUDIT_URL", "https://audit:50054"));
        let cfg = RecordsConfig::load(&env(&pairs)).expect("valid over TLS");
        assert!(cfg.tls.enabled);
    }

    #[test]
    fn the_storage_backend_is_chosen_by_name_and_checked() {
        let creds = [
            ("SHAREDCARE_AUTH__CLIENT_ID", "records"),
            ("SHAREDCARE_AUTH__CLIENT_SECRET__VALUE", "s3cret"),
        ];
        let load =
            |extra: &[(&str, &str)]| RecordsConfig::load(&env(&[creds.as_slice(), extra].concat()));
        let err = load(&[("SHAREDCARE_DATABASE__BACKEND", "remote")]).expect_err("no url");
        assert!(
            err.to_string().contains("records.remote_storage_url"),
            "{err}"
        );
        let cfg = load(&[
            ("SHAREDCARE_DATABASE__BACKEND", "remote"),
            (
                "SHAREDCARE_RECORDS__REMOTE_STORAGE_URL",
                "http://127.0.0.1:50060",
            ),
        ])
        .expect("remote");
        assert_eq!(
            cfg.database.backend,
            sharedcare_kit::config::StorageBackend::Remote
        );
        let err = load(&[
            ("SHAREDCARE_DATABASE__BACKEND", "memory"),
            ("SHAREDCARE_DATABASE__URL__VALUE", "postgres://db/records"),
        ])
        .expect_err("memory with a PostgreSQL URL");
        assert!(err.to_string().contains("database.backend"), "{err}");
        let err = load(&[("SHAREDCARE_DATABASE__BACKEND", "postgres")]).expect_err("no URL");
        assert!(err.to_string().contains("database.url"), "{err}");
        let err = load(&[("SHAREDCARE_DATABASE__BACKEND", "mongo")]).expect_err("unknown");
        assert!(err.to_string().contains("backend"), "{err}");
        let dir = tempfile::tempdir().expect("dir");
        let keys = dir.path().join("previous");
        std::fs::write(&keys, "# old keys\nnot-a-key\n").expect("write");
        let err = load(&[(
            "SHAREDCARE_RECORDS__PREVIOUS_KEY_ENCRYPTION_KEYS_FILE",
            keys.to_str().expect("path"),
        )])
        .expect_err("bad key");
        assert!(
            err.to_string()
                .contains("records.previous_key_encryption_keys_file"),
            "{err}"
        );
    }

    #[test]
    fn defaults_load_with_credentials() {
        let cfg = RecordsConfig::load(&env(&[
            ("SHAREDCARE_AUTH__CLIENT_ID", "records"),
            ("SHAREDCARE_AUTH__CLIENT_SECRET__VALUE", "s3cret"),
        ]))
        .expect("valid");
        assert_eq!(cfg.server.listen.port(), 50053);
        assert_eq!(cfg.records.max_resource_bytes, 1 << 20);
        assert_eq!(cfg.records.classification_map, None);
        let map = cfg.records.classification_map().expect("built-in map");
        assert_eq!(map.name(), crate::domain::DEFAULT_MAP_NAME);
        assert_eq!(cfg.consent_cache.max_age_ms, 60_000);
    }

    #[test]
    fn the_consent_cache_is_configured_and_checked_by_name() {
        let creds = [
            ("SHAREDCARE_AUTH__CLIENT_ID", "records"),
            ("SHAREDCARE_AUTH__CLIENT_SECRET__VALUE", "s3cret"),
        ];
        let off = [
            creds[0],
            creds[1],
            ("SHAREDCARE_CONSENT_CACHE__MAX_AGE_MS", "0"),
        ];
        let cfg = RecordsConfig::load(&env(&off)).expect("valid");
        assert_eq!(cfg.consent_cache.max_age_ms, 0);
        assert_eq!(cfg.consent_cache.max_entries, 100_000);
        let bad = [
            creds[0],
            creds[1],
            ("SHAREDCARE_CONSENT_CACHE__MAX_ENTRIES", "0"),
        ];
        let err = RecordsConfig::load(&env(&bad)).expect_err("no room");
        assert!(
            err.to_string().contains("consent_cache.max_entries"),
            "{err}"
        );
    }

    #[test]
    fn a_classification_map_that_does_not_load_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("classification.toml");
        std::fs::write(
            &path,
            "# local map\n\n[[rule]]\ncategory = \"sexual_health\"\nlabel = \"HIV\"\n\
             system = \"http://snomed.info/sct\"\ncodes = [\"86406 008\"]\n",
        )
        .expect("write");
        let path_text = path.display().to_string();
        let vars = [
            ("SHAREDCARE_AUTH__CLIENT_ID", "records"),
            ("SHAREDCARE_AUTH__CLIENT_SECRET__VALUE", "s3cret"),
            ("SHAREDCARE_RECORDS__CLASSIFICATION_MAP", path_text.as_str()),
        ];
        let err = RecordsConfig::load(&env(&vars)).expect_err("bad map");
        let message = err.to_string();
        assert!(message.contains("records.classification_map"), "{message}");
        assert!(
            message.contains(&format!("{path_text}, line 3: rule 1")),
            "{message}"
        );
        assert!(message.contains("`86406 008` contains spaces"), "{message}");

        std::fs::write(
            &path,
            "[[rule]]\ncategory = \"sexual_health\"\nlabel = \"HIV\"\n\
             system = \"http://snomed.info/sct\"\ncodes = [\"86406008\"]\n",
        )
        .expect("write");
        let cfg = RecordsConfig::load(&env(&vars)).expect("good map");
        let map = cfg.records.classification_map().expect("loads");
        assert_eq!(map.name(), path_text);
        assert_eq!(map.rule_count(), 1);
    }
}
