//! consent's configuration: the sections every service shares, on port 50052.

use serde::Deserialize;
use sharedcare_kit::config::{
    AuthConfig, COMMON_DEFAULTS, ConfigError, DatabaseConfig, EnvSource, ServerConfig,
    TelemetryConfig, Validate, check_url,
};
use sharedcare_kit::tls::TlsConfig;

#[derive(Debug, Clone, Deserialize)]
pub struct ConsentConfig {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    /// Needs `client_id` and `client_secret`: consent audits its changes and
    /// asks identity about organisations as itself.
    pub auth: AuthConfig,
    pub consent: ConsentSettings,
    /// TLS on this service's port and its outgoing calls (`kit::tls`);
    /// off unless `tls.enabled`.
    #[serde(default)]
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsentSettings {
    /// audit's gRPC URL.
    pub audit_url: String,
    /// Deadline on each call to audit or identity.
    pub call_timeout_ms: u64,
    /// Refuse changes and reads once audit has been unreachable this long
    /// (their events wait, durable, in consent's outbox meanwhile).
    pub audit_max_lag_ms: u64,
    /// How often a WatchChanges stream says it is alive (and reads the
    /// change log, in case a wake-up was missed); also how long a change
    /// waits for streams to acknowledge it before ending them.
    pub watch_heartbeat_ms: u64,
    /// Patients whose relationships and directives are kept in memory at
    /// most (the least recently used are dropped first).
    pub cache_max_patients: usize,
    /// What a relationship kind lets its organisation see, replacing the
    /// built-in list for each kind named, e.g.
    /// `care_home_placement = ["general", "social_care"]` (see
    /// docs/consent-rules.md).
    #[serde(default)]
    pub relationship_categories: std::collections::BTreeMap<String, Vec<String>>,
    /// Break-glass (who may use it is the `break_glass` capability of
    /// identity's role map).
    pub break_glass: BreakGlassSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BreakGlassSettings {
    /// How long a break-glass grant lasts, 1–1440 minutes.
    pub grant_minutes: u32,
    /// Whether break-glass overrides the patient's objection.
    pub overrides_patient_deny: bool,
}

impl ConsentSettings {
    /// The decision's configurable rules; the error names the key.
    pub fn rules(&self) -> Result<crate::domain::Rules, ConfigError> {
        let scopes =
            crate::domain::RelationshipScopes::with_overrides(&self.relationship_categories)
                .map_err(|e| ConfigError::invalid("consent.relationship_categories", e))?;
        if !(1..=1440).contains(&self.break_glass.grant_minutes) {
            return Err(ConfigError::invalid(
                "consent.break_glass.grant_minutes",
                "must be between 1 and 1440 (a day)",
            ));
        }
        Ok(crate::domain::Rules {
            scopes,
            break_glass: crate::domain::BreakGlassRules {
                grant_for: chrono::Duration::minutes(i64::from(self.break_glass.grant_minutes)),
                overrides_patient_deny: self.break_glass.overrides_patient_deny,
            },
        })
    }
}

const OWN_DEFAULTS: &str = r#"
[consent]
audit_url = "http://127.0.0.1:50054"
call_timeout_ms = 5000
audit_max_lag_ms = 30000
watch_heartbeat_ms = 500
cache_max_patients = 100000

[consent.break_glass]
grant_minutes = 60
overrides_patient_deny = false
"#;

/// The shared defaults with consent's own port.
fn defaults() -> String {
    let common =
        COMMON_DEFAULTS.replace(r#"listen = "0.0.0.0:50051""#, r#"listen = "0.0.0.0:50052""#);
    format!("{common}{OWN_DEFAULTS}")
}

impl ConsentConfig {
    pub fn load(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load(&defaults(), env)
    }

    /// As `load`, refusing unknown keys (`kit::config::load_strict`).
    pub fn load_strict(env: &dyn EnvSource) -> Result<Self, ConfigError> {
        sharedcare_kit::config::load_strict(&defaults(), env)
    }
}

impl Validate for ConsentConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.database.validate(crate::SERVICE_NAME)?;
        self.auth.validate()?;
        check_url("consent.audit_url", &self.consent.audit_url)?;
        self.consent.rules()?;
        if self.consent.call_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "consent.call_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.consent.watch_heartbeat_ms == 0 || self.consent.watch_heartbeat_ms > 60_000 {
            return Err(ConfigError::invalid(
                "consent.watch_heartbeat_ms",
                "must be between 1 and 60000",
            ));
        }
        if self.consent.cache_max_patients == 0 {
            return Err(ConfigError::invalid(
                "consent.cache_max_patients",
                "must be at least 1",
            ));
        }
        self.auth
            .require_client_credentials("consent audits its changes as itself")?;
        self.tls.validate()?;
        self.tls
            .check_url("auth.identity_url", &self.auth.identity_url)?;
        self.tls
            .check_url("consent.audit_url", &self.consent.audit_url)
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
        let err = ConsentConfig::load(&HashMap::new()).expect_err("no client id");
        assert!(err.to_string().contains("auth.client_id"), "{err}");
        let env = HashMap::from([
            (
                "SHAREDCARE_AUTH__CLIENT_ID".to_owned(),
                "consent".to_owned(),
            ),
            (
                "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".to_owned(),
                "s3cret".to_owned(),
            ),
        ]);
        let cfg = ConsentConfig::load(&env).expect("defaults are valid");
        assert_eq!(cfg.server.listen.port(), 50052);
        assert_eq!(cfg.auth.identity_url, "http://127.0.0.1:50051");
    }

    #[test]
    fn the_memory_backend_is_offered_but_not_over_a_postgres_url() {
        use sharedcare_kit::config::StorageBackend;
        let mut env = HashMap::from([
            (
                "SHAREDCARE_AUTH__CLIENT_ID".to_owned(),
                "consent".to_owned(),
            ),
            (
                "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".to_owned(),
                "s3cret".to_owned(),
            ),
            (
                "SHAREDCARE_DATABASE__BACKEND".to_owned(),
                "memory".to_owned(),
            ),
        ]);
        let cfg = ConsentConfig::load(&env).expect("memory is offered");
        assert_eq!(cfg.database.backend, StorageBackend::Memory);
        env.insert(
            "SHAREDCARE_DATABASE__URL__VALUE".to_owned(),
            "postgres://db/consent".to_owned(),
        );
        let err = ConsentConfig::load(&env).expect_err("memory is not on PostgreSQL");
        assert!(err.to_string().contains("database.backend"), "{err}");
    }

    #[test]
    fn relationship_categories_are_configured_and_checked_by_name() {
        let with = |key: &str, value: &str| {
            let mut env = HashMap::from([
                (
                    "SHAREDCARE_AUTH__CLIENT_ID".to_owned(),
                    "consent".to_owned(),
                ),
                (
                    "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".to_owned(),
                    "s3cret".to_owned(),
                ),
            ]);
            let dir = tempfile::tempdir().expect("dir");
            let file = dir.path().join("consent.toml");
            std::fs::write(
                &file,
                format!("[consent.relationship_categories]\n{key} = {value}\n"),
            )
            .expect("write");
            env.insert(
                "SHAREDCARE_CONFIG_FILE".to_owned(),
                file.to_str().expect("path").to_owned(),
            );
            ConsentConfig::load(&env)
        };
        let cfg =
            with("care_home_placement", r#"["social_care", "mental_health"]"#).expect("valid");
        assert_eq!(
            cfg.consent.relationship_categories["care_home_placement"],
            ["social_care", "mental_health"]
        );
        for (key, value) in [
            ("care_home", r#"["general"]"#),
            ("care_home_placement", r#"["secrets"]"#),
        ] {
            let err = with(key, value).expect_err("refused");
            assert!(
                err.to_string().contains("consent.relationship_categories"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_cache_of_no_patients_is_refused_by_name() {
        let env = |value: &str| {
            HashMap::from([
                (
                    "SHAREDCARE_AUTH__CLIENT_ID".to_owned(),
                    "consent".to_owned(),
                ),
                (
                    "SHAREDCARE_AUTH__CLIENT_SECRET__VALUE".to_owned(),
                    "s3cret".to_owned(),
                ),
                (
                    "SHAREDCARE_CONSENT__CACHE_MAX_PATIENTS".to_owned(),
                    value.to_owned(),
                ),
            ])
        };
        let cfg = ConsentConfig::load(&env("5")).expect("valid");
        assert_eq!(cfg.consent.cache_max_patients, 5);
        let err = ConsentConfig::load(&env("0")).expect_err("refused");
        assert!(
            err.to_string().contains("consent.cache_max_patients"),
            "{err}"
        );
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
