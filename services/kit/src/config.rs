//! Layered configuration: built-in defaults → optional file → environment
//! (`SHAREDCARE_<SECTION>__<KEY>`), validated at start with errors that name
//! the key. The environment is read through [`EnvSource`] so tests inject
//! their own instead of setting process-wide variables.

use std::{collections::HashMap, fmt, net::SocketAddr, path::PathBuf};

use serde::{Deserialize, de::DeserializeOwned};

/// Environment variable naming an optional config file (TOML).
pub const CONFIG_FILE_VAR: &str = "SHAREDCARE_CONFIG_FILE";

/// Where configuration variables come from.
pub trait EnvSource {
    fn vars(&self) -> HashMap<String, String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> HashMap<String, String> {
        std::env::vars().collect()
    }
}

/// A fixed set of variables, for tests and the all-in-one binary.
impl EnvSource for HashMap<String, String> {
    fn vars(&self) -> HashMap<String, String> {
        self.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("configuration key `{key}`: reading {path}: {source}")]
    File {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Checks a loaded configuration, naming the key that is wrong.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads `T` from `defaults` (TOML), then the file named by
/// `SHAREDCARE_CONFIG_FILE` if set, then `SHAREDCARE_*` variables.
pub fn load<T: DeserializeOwned + Validate>(
    defaults: &str,
    env: &dyn EnvSource,
) -> Result<T, ConfigError> {
    let value: T = sources(defaults, env)?.try_deserialize()?;
    value.validate()?;
    Ok(value)
}

/// As [`load`], refusing keys `T` does not know (a misspelt key would
/// otherwise be ignored, its default silently used), naming them.
pub fn load_strict<T: DeserializeOwned + Validate>(
    defaults: &str,
    env: &dyn EnvSource,
) -> Result<T, ConfigError> {
    let mut unknown = Vec::new();
    let value: T = serde_ignored::deserialize(sources(defaults, env)?, |path| {
        unknown.push(path.to_string())
    })?;
    if let Some(first) = unknown.first() {
        return Err(ConfigError::invalid(
            first.clone(),
            format!(
                "is not a configuration key (unknown: {})",
                unknown.join(", ")
            ),
        ));
    }
    value.validate()?;
    Ok(value)
}

/// The defaults, the file named by `SHAREDCARE_CONFIG_FILE`, then the
/// `SHAREDCARE_*` variables, in that order of precedence.
fn sources(defaults: &str, env: &dyn EnvSource) -> Result<config::Config, ConfigError> {
    let vars = env.vars();
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(defaults, config::FileFormat::Toml));
    if let Some(path) = vars.get(CONFIG_FILE_VAR) {
        builder = builder.add_source(config::File::new(path, config::FileFormat::Toml));
    }
    let env_vars: HashMap<String, String> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("SHAREDCARE_") && k != CONFIG_FILE_VAR)
        .collect();
    Ok(builder
        .add_source(
            config::Environment::with_prefix("SHAREDCARE")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env_vars)),
        )
        .build()?)
}

/// A value that must never be printed: Debug and Display show `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A secret given inline (env) or as a file (a mounted Kubernetes Secret).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SecretSource {
    pub value: Option<Secret>,
    pub file: Option<PathBuf>,
}

impl SecretSource {
    pub fn inline(value: impl Into<String>) -> Self {
        SecretSource {
            value: Some(Secret::new(value)),
            file: None,
        }
    }

    /// Resolves the secret; `key` names it in errors. `None` when neither is set.
    pub fn resolve(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        match (&self.value, &self.file) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                key,
                "set either the value or the file, not both",
            )),
            (Some(v), None) => Ok(Some(v.clone())),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| Some(Secret::new(s.trim().to_owned())))
                .map_err(|source| ConfigError::File {
                    key: format!("{key}.file"),
                    path: path.clone(),
                    source,
                }),
            (None, None) => Ok(None),
        }
    }
}

/// How a service serves gRPC.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Requests in flight across all connections; beyond it, RESOURCE_EXHAUSTED.
    pub concurrency_limit: usize,
    /// Requests per second one client (principal) may make of this replica,
    /// sustained; beyond it, RESOURCE_EXHAUSTED. 0: no limit. The platform's
    /// own service principals are exempt.
    pub client_requests_per_second: u32,
    /// How many requests a client may make at once above its rate (the
    /// bucket's size); 0 means the same as the rate.
    pub client_burst: u32,
    /// Longest a request may take before it is cancelled.
    pub request_timeout_ms: u64,
    /// After SIGTERM: how long health reports NOT_SERVING before we stop
    /// accepting, so load balancers move away first.
    pub shutdown_drain_ms: u64,
}

impl ServerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::invalid(
                "server.max_message_bytes",
                "must be at least 1024",
            ));
        }
        if self.concurrency_limit == 0 {
            return Err(ConfigError::invalid(
                "server.concurrency_limit",
                "must be at least 1",
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.request_timeout_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Defaults for a server on an ephemeral loopback port (tests, dev).
    pub fn loopback() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_message_bytes: 4 * 1024 * 1024,
            concurrency_limit: 256,
            client_requests_per_second: 1000,
            client_burst: 2000,
            request_timeout_ms: 30_000,
            shutdown_drain_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Logs and traces.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetryConfig {
    /// An `EnvFilter` directive, e.g. "info" or "info,sqlx=warn".
    pub log_level: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector, e.g. "http://otel-collector:4317". Unset: no export.
    pub otlp_endpoint: Option<String>,
    /// Where Prometheus scrapes this service's metrics (`GET /metrics`),
    /// e.g. "0.0.0.0:9464". Unset: no metrics are served (nor recorded).
    pub metrics_addr: Option<SocketAddr>,
}

impl TelemetryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| ConfigError::invalid("telemetry.log_level", e.to_string()))?;
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }
}

/// Which storage backend a service uses: chosen here, never guessed from
/// the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// An embedded SQLite file (`url` unset: `<data_dir>/<service>.db`).
    #[default]
    Sqlite,
    /// A PostgreSQL server at `url`.
    Postgres,
    /// Process memory: nothing survives a restart (tests, demos). Local
    /// state such as an audit outbox still lives in SQLite under `data_dir`.
    Memory,
    /// records only: a provider's own store behind the storage protocol
    /// (`sharedcare.records.storage.v1`); local state as for `memory`.
    Remote,
}

impl StorageBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageBackend::Sqlite => "sqlite",
            StorageBackend::Postgres => "postgres",
            StorageBackend::Memory => "memory",
            StorageBackend::Remote => "remote",
        }
    }
}

/// Where a service keeps its data.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// `sqlite` (default), `postgres`, `memory` or (records) `remote`.
    #[serde(default)]
    pub backend: StorageBackend,
    /// Database URL (`sqlite://...` or `postgres://...`). Unset: a SQLite file
    /// under `data_dir`. Give it as `url.value` (env) or `url.file` (Secret).
    #[serde(default)]
    pub url: SecretSource,
    /// Directory for the embedded SQLite file and other local state.
    pub data_dir: PathBuf,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl DatabaseConfig {
    /// The URL to connect to, defaulting to `<data_dir>/<service>.db`.
    pub fn resolve_url(&self, service: &str) -> Result<Secret, ConfigError> {
        match self.url.resolve("database.url")? {
            Some(url) => {
                let u = url.expose();
                if !(u.starts_with("sqlite:")
                    || u.starts_with("postgres://")
                    || u.starts_with("postgresql://"))
                {
                    return Err(ConfigError::invalid(
                        "database.url",
                        "must start with sqlite: or postgres://",
                    ));
                }
                Ok(url)
            }
            None => Ok(Secret::new(crate::db::sqlite_url(
                &self.data_dir.join(format!("{service}.db")),
            ))),
        }
    }

    pub fn validate(&self, service: &str) -> Result<(), ConfigError> {
        if self.backend == StorageBackend::Remote {
            return Err(ConfigError::invalid(
                "database.backend",
                "remote is offered by records only",
            ));
        }
        self.validate_local(service)
    }

    /// As `validate`, also accepting `remote` (records).
    pub fn validate_allowing_remote(&self, service: &str) -> Result<(), ConfigError> {
        self.validate_local(service)
    }

    fn validate_local(&self, service: &str) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        let url = self.resolve_url(service)?;
        let postgres = !url.expose().starts_with("sqlite:");
        match (self.backend, postgres) {
            (StorageBackend::Postgres, false) => Err(ConfigError::invalid(
                "database.url",
                "must be a postgres:// URL when database.backend is postgres",
            )),
            (StorageBackend::Sqlite | StorageBackend::Memory | StorageBackend::Remote, true) => {
                Err(ConfigError::invalid(
                    "database.backend",
                    format!(
                        "is {}, but database.url is a PostgreSQL URL: set database.backend = \"postgres\"",
                        self.backend.as_str()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Refuses a backend this service does not offer.
    pub fn require_backend(&self, offered: &[StorageBackend]) -> Result<(), ConfigError> {
        if offered.contains(&self.backend) {
            return Ok(());
        }
        let names: Vec<&str> = offered.iter().map(|b| b.as_str()).collect();
        Err(ConfigError::invalid(
            "database.backend",
            format!(
                "{} is not offered by this service (offered: {})",
                self.backend.as_str(),
                names.join(", ")
            ),
        ))
    }
}

/// How a service verifies tokens, and how it gets its own.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthConfig {
    /// Expected `iss` of every token.
    pub issuer: String,
    /// Expected `aud` of every token.
    pub audience: String,
    /// identity's gRPC URL, for the JWKS and this service's own tokens.
    pub identity_url: String,
    /// Least time between two JWKS fetches triggered by unknown key ids; a
    /// token with a new key id waits at most this long for its key.
    pub jwks_min_refresh_ms: u64,
    /// How often the list of revoked principals is refreshed from identity:
    /// a revoked principal's token is refused by this service at most this
    /// long (plus a 5 s call timeout) after the revocation.
    #[serde(default = "default_revocation_refresh_ms")]
    pub revocation_refresh_ms: u64,
    /// Past this age without a fresh revocation list (identity unreachable)
    /// every token is refused, UNAVAILABLE: fail closed.
    #[serde(default = "default_revocation_max_stale_ms")]
    pub revocation_max_stale_ms: u64,
    /// This service's client credentials (services that call others).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: SecretSource,
}

fn default_revocation_refresh_ms() -> u64 {
    10_000
}

fn default_revocation_max_stale_ms() -> u64 {
    60_000
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.revocation_refresh_ms == 0 {
            return Err(ConfigError::invalid(
                "auth.revocation_refresh_ms",
                "must be at least 1",
            ));
        }
        if self.revocation_max_stale_ms < self.revocation_refresh_ms {
            return Err(ConfigError::invalid(
                "auth.revocation_max_stale_ms",
                "must be at least auth.revocation_refresh_ms",
            ));
        }
        if self.issuer.is_empty() {
            return Err(ConfigError::invalid("auth.issuer", "must not be empty"));
        }
        if self.audience.is_empty() {
            return Err(ConfigError::invalid("auth.audience", "must not be empty"));
        }
        check_url("auth.identity_url", &self.identity_url)?;
        self.client_secret.resolve("auth.client_secret")?;
        Ok(())
    }

    /// For a service that calls others as itself: its client id and secret
    /// must be set. `why` says what it calls, for the error.
    pub fn require_client_credentials(&self, why: &str) -> Result<(), ConfigError> {
        if self.client_id.as_deref().unwrap_or("").is_empty() {
            return Err(ConfigError::invalid(
                "auth.client_id",
                format!("{why}: set its client id"),
            ));
        }
        if self.client_secret.resolve("auth.client_secret")?.is_none() {
            return Err(ConfigError::invalid(
                "auth.client_secret",
                format!("{why}: set auth.client_secret.value or auth.client_secret.file"),
            ));
        }
        Ok(())
    }
}

/// `url` must be http:// or https://; the error names `key`.
pub fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            "must be an http:// or https:// URL",
        ))
    }
}

/// The defaults every service shares, as TOML; each service appends its own
/// section. Ports are overridden per service.
pub const COMMON_DEFAULTS: &str = r#"
[server]
listen = "0.0.0.0:50051"
max_message_bytes = 4194304
concurrency_limit = 256
client_requests_per_second = 1000
client_burst = 2000
request_timeout_ms = 30000
shutdown_drain_ms = 5000

[telemetry]
log_level = "info"
log_format = "json"

[database]
data_dir = "data"
max_connections = 8

[auth]
issuer = "sharedcare-identity"
audience = "sharedcare"
identity_url = "http://127.0.0.1:50051"
jwks_min_refresh_ms = 1000
revocation_refresh_ms = 10000
revocation_max_stale_ms = 60000
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sample {
        server: ServerConfig,
        telemetry: TelemetryConfig,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            self.server.validate()?;
            self.telemetry.validate()
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_defaults() {
        let cfg: Sample = load(
            COMMON_DEFAULTS,
            &env(&[("SHAREDCARE_SERVER__CONCURRENCY_LIMIT", "7")]),
        )
        .expect("loads");
        assert_eq!(cfg.server.concurrency_limit, 7);
        assert_eq!(cfg.telemetry.log_format, LogFormat::Json);
    }

    #[test]
    fn invalid_values_name_their_key() {
        let err = load::<Sample>(
            COMMON_DEFAULTS,
            &env(&[("SHAREDCARE_SERVER__CONCURRENCY_LIMIT", "0")]),
        )
        .expect_err("rejected");
        assert!(
            err.to_string().contains("server.concurrency_limit"),
            "{err}"
        );
    }

    #[test]
    fn config_file_sits_between_defaults_and_env() {
        let dir = tempfile_dir();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[server]\nconcurrency_limit = 9\nrequest_timeout_ms = 5\n",
        )
        .expect("write");
        let cfg: Sample = load(
            COMMON_DEFAULTS,
            &env(&[
                (CONFIG_FILE_VAR, path.to_str().expect("utf-8")),
                ("SHAREDCARE_SERVER__REQUEST_TIMEOUT_MS", "6"),
            ]),
        )
        .expect("loads");
        assert_eq!(cfg.server.concurrency_limit, 9);
        assert_eq!(cfg.server.request_timeout_ms, 6);
    }

    #[test]
    fn secrets_never_print() {
        let s = SecretSource::inline("postgres://u:hunter2@db/x");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sharedcare-kit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
