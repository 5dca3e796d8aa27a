//! Test spawning: start any service on `127.0.0.1:0`, wait until its health
//! service says SERVING (polling, never a blind sleep), and hand back a
//! connected channel (over mutual TLS, presenting the service's own
//! certificate, when the service serves TLS). Also a token authority for tests that run a service
//! without identity, and the backends every store conformance suite runs on
//! ([`test_backends`], [`on_every_backend`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sharedcare_proto::common::v1::{PrincipalKind, Purpose};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};

use crate::{
    Error,
    auth::{Claims, Verifier, kind_to_str, purpose_to_str},
    config::ServerConfig,
    keys::{SigningKey, StaticKeySource},
    server::{ServiceSpec, serve},
};

/// A service running on a loopback port for the length of a test.
pub struct TestServer {
    pub addr: SocketAddr,
    /// Where its metrics are served, when its spec asked for them.
    pub metrics_addr: Option<SocketAddr>,
    pub channel: Channel,
    /// Whether it serves TLS (its URL is then https://).
    pub tls: bool,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
    handle: tokio::sync::Mutex<Option<JoinHandle<Result<(), Error>>>>,
}

impl TestServer {
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Asks the server to shut down and waits until it has drained.
    pub async fn stop(self) {
        self.shutdown().await;
    }

    /// Like `stop`, for a server still owned elsewhere (a fixture). Later
    /// calls do nothing.
    pub async fn shutdown(&self) {
        self.signal_stop();
        if let Some(handle) = self.handle.lock().await.take() {
            let _ = handle.await;
        }
    }

    fn signal_stop(&self) {
        if let Some(stop) = self.stop.lock().ok().and_then(|mut s| s.take()) {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Starts a service with loopback defaults.
pub async fn spawn(spec: ServiceSpec) -> TestServer {
    spawn_with(spec, ServerConfig::loopback()).await
}

/// Starts a service with the given server settings (its `listen` is ignored).
pub async fn spawn_with(spec: ServiceSpec, cfg: ServerConfig) -> TestServer {
    spawn_on(spec, cfg, reserve_port().await).await
}

/// A bound loopback listener: its address is known before the service that
/// will serve it is built (services that call each other need each other's
/// URLs at start).
pub async fn reserve_port() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Starts a service on a listener from [`reserve_port`].
pub async fn spawn_on(
    mut spec: ServiceSpec,
    cfg: ServerConfig,
    listener: TcpListener,
) -> TestServer {
    let addr = listener.local_addr().expect("local addr");
    // Bound here, so that a configured port 0 is known to the test.
    if let Some(crate::metrics::MetricsListen::Addr(metrics)) = spec.metrics {
        let bound = TcpListener::bind(metrics).await.expect("bind metrics");
        spec = spec.with_metrics_listener(bound);
    }
    let metrics_addr = match &spec.metrics {
        Some(crate::metrics::MetricsListen::Listener(l)) => Some(l.local_addr().expect("addr")),
        _ => None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let client = spec.tls.clone();
    let handle = tokio::spawn(async move {
        serve(spec, &cfg, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    let channel = match &client {
        Some(tls) => tls
            .channel(&format!("https://{addr}"))
            .expect("loopback url"),
        None => Endpoint::from_shared(format!("http://{addr}"))
            .expect("loopback url")
            .connect_lazy(),
    };
    crate::client::wait_until_serving(channel.clone())
        .await
        .expect("service became healthy");
    TestServer {
        addr,
        metrics_addr,
        channel,
        tls: client.is_some(),
        stop: std::sync::Mutex::new(Some(stop)),
        handle: tokio::sync::Mutex::new(Some(handle)),
    }
}

/// Mints tokens the way identity does, for tests of one service alone.
pub struct TestAuthority {
    key: SigningKey,
    pub issuer: String,
    pub audience: String,
}

impl Default for TestAuthority {
    fn default() -> Self {
        Self::new()
    }
}

impl TestAuthority {
    pub fn new() -> Self {
        TestAuthority {
            key: SigningKey::generate(),
            issuer: "sharedcare-identity".into(),
            audience: "sharedcare".into(),
        }
    }

    /// A verifier that trusts this authority's key only.
    pub fn verifier(&self) -> Arc<Verifier> {
        Arc::new(Verifier::new(
            Arc::new(StaticKeySource(vec![self.key.jwk()])),
            &self.issuer,
            &self.audience,
            Duration::ZERO,
        ))
    }

    /// A token for a principal with these attributes and scopes, permitted
    /// direct care (none for services and admin).
    pub fn token(&self, kind: PrincipalKind, org: &str, role: &str, scopes: &[&str]) -> String {
        let purposes: &[Purpose] = match kind {
            PrincipalKind::Service | PrincipalKind::Admin => &[],
            _ => &[Purpose::DirectCare],
        };
        self.sign(TestToken {
            kind,
            org,
            role,
            scopes,
            purposes,
            capabilities: &[],
            patient: "",
        })
    }

    /// A token with every claim chosen by the test.
    pub fn sign(&self, t: TestToken<'_>) -> String {
        let now = chrono::Utc::now().timestamp();
        self.key
            .sign(&Claims {
                iss: self.issuer.clone(),
                sub: format!("test-{}", uuid::Uuid::new_v4()),
                aud: self.audience.clone(),
                exp: now + 600,
                iat: now,
                jti: uuid::Uuid::new_v4().to_string(),
                kind: kind_to_str(t.kind).into(),
                org: t.org.into(),
                role: t.role.into(),
                scope: t.scopes.join(" "),
                pou: t
                    .purposes
                    .first()
                    .map(|p| purpose_to_str(*p).to_owned())
                    .unwrap_or_default(),
                pous: t
                    .purposes
                    .iter()
                    .map(|p| purpose_to_str(*p).to_owned())
                    .collect(),
                caps: t
                    .capabilities
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect(),
                pat: t.patient.into(),
                // Names as identity would give them, so reports read true.
                name: format!("{} {}", t.role, t.org).trim().to_owned(),
                org_name: if t.org.is_empty() {
                    String::new()
                } else {
                    format!("Organisation {}", t.org)
                },
                act: None,
            })
            .expect("sign test token")
    }
}

/// The claims of a test token.
pub struct TestToken<'a> {
    pub kind: PrincipalKind,
    pub org: &'a str,
    pub role: &'a str,
    pub scopes: &'a [&'a str],
    /// The first is the token's default purpose.
    pub purposes: &'a [Purpose],
    pub capabilities: &'a [crate::access::Capability],
    /// For a patient token.
    pub patient: &'a str,
}

/// A request carrying `authorization: Bearer <token>`.
/// A service token that never changes, for a client under test.
pub struct FixedToken(pub String);

impl crate::client::ServiceTokens for FixedToken {
    fn token(&self) -> crate::peers::BoxFuture<'_, String> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// Environment variable naming a PostgreSQL server for tests (CI sets it).
pub const TEST_DATABASE_VAR: &str = "SHAREDCARE_TEST_DATABASE_URL";

/// A database for one test: a SQLite file in a temp dir, or a fresh
/// PostgreSQL database created on the server named by
/// `SHAREDCARE_TEST_DATABASE_URL`.
pub struct TestDatabase {
    url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh SQLite file.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = crate::db::sqlite_url(&dir.path().join("test.db"));
        TestDatabase {
            url,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` (saying so on stderr) when
    /// `SHAREDCARE_TEST_DATABASE_URL` is not set.
    pub async fn postgres(test: &str) -> Option<Self> {
        use sea_orm::ConnectionTrait;
        let Ok(admin_url) = std::env::var(TEST_DATABASE_VAR) else {
            eprintln!("SKIPPED PostgreSQL for {test}: {TEST_DATABASE_VAR} is not set");
            return None;
        };
        let name = format!("sc_{}", uuid::Uuid::new_v4().simple());
        let admin = sea_orm::Database::connect(admin_url.as_str())
            .await
            .expect("connect to SHAREDCARE_TEST_DATABASE_URL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            url,
            _dir: None,
            postgres: Some((admin_url, name)),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops a PostgreSQL database once every connection to it has closed.
    pub async fn cleanup(self) {
        use sea_orm::ConnectionTrait;
        if let Some((admin_url, name)) = &self.postgres
            && let Ok(admin) = sea_orm::Database::connect(admin_url.as_str()).await
        {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
            admin.close().await.ok();
        }
    }
}

/// One backend a store conformance suite runs against: what
/// `database.backend` would name, with a fresh database of its own.
pub struct TestBackend {
    backend: crate::config::StorageBackend,
    database: TestDatabase,
}

impl TestBackend {
    pub fn backend(&self) -> crate::config::StorageBackend {
        self.backend
    }

    /// What `database.url` would be: the SQL backend's database, or the
    /// SQLite file where the memory backend keeps its local state (an
    /// audit outbox).
    pub fn url(&self) -> &str {
        self.database.url()
    }

    /// For test output: `memory`, `sqlite` or `postgres`.
    pub fn name(&self) -> &'static str {
        self.backend.as_str()
    }

    /// Drops the database (PostgreSQL); the temp files go with `self`.
    pub async fn cleanup(self) {
        self.database.cleanup().await;
    }
}

/// Every backend a store must conform on, each with a fresh database:
/// memory and SQLite always, PostgreSQL when `SHAREDCARE_TEST_DATABASE_URL`
/// is set (otherwise `test` says on stderr that it skipped it).
pub async fn test_backends(test: &str) -> Vec<TestBackend> {
    use crate::config::StorageBackend;
    let mut backends = vec![
        TestBackend {
            backend: StorageBackend::Memory,
            database: TestDatabase::sqlite(),
        },
        TestBackend {
            backend: StorageBackend::Sqlite,
            database: TestDatabase::sqlite(),
        },
    ];
    if let Some(database) = TestDatabase::postgres(test).await {
        backends.push(TestBackend {
            backend: StorageBackend::Postgres,
            database,
        });
    }
    backends
}

/// Runs `run` on each of [`test_backends`] in turn, saying on stderr which
/// (so a failure's output names it), and cleans each up afterwards.
pub async fn on_every_backend(test: &str, run: impl AsyncFn(&TestBackend)) {
    for backend in test_backends(test).await {
        eprintln!("{test}: on {}", backend.name());
        run(&backend).await;
        backend.cleanup().await;
    }
}

/// The same server URL with another database name.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// audit in memory, as a service's outbox relay sees it: it keeps every
/// event delivered, in order, and can be taken down.
#[derive(Default)]
pub struct MemoryAudit {
    events: std::sync::Mutex<Vec<sharedcare_proto::audit::v1::AuditEvent>>,
    down: std::sync::atomic::AtomicBool,
}

impl MemoryAudit {
    /// Every event delivered so far, in order.
    pub fn delivered(&self) -> Vec<sharedcare_proto::audit::v1::AuditEvent> {
        self.events.lock().expect("lock").clone()
    }

    /// Takes audit down (UNAVAILABLE to every batch) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

impl crate::outbox::BatchSink for MemoryAudit {
    fn append_batch(
        &self,
        events: Vec<sharedcare_proto::audit::v1::AuditEvent>,
    ) -> crate::peers::BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(Error::unavailable("audit is down (test)"));
            }
            self.events.lock().expect("lock").extend(events);
            Ok(())
        })
    }
}

/// Rows waiting in a service's audit outbox table (see `crate::outbox`).
pub async fn outbox_rows(db: &sea_orm::DatabaseConnection, table: &str) -> i64 {
    table_rows(db, table).await
}

/// Rows in `table`.
pub async fn table_rows(db: &sea_orm::DatabaseConnection, table: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await
        .unwrap_or_else(|e| panic!("count the rows of {table}: {e}"))
        .expect("a row");
    row.try_get("", "n").expect("n")
}

/// Waits (up to five seconds, polling) until the outbox has delivered
/// everything: what reached audit can then be checked.
pub async fn outbox_drained(db: &sea_orm::DatabaseConnection, table: &str) {
    for _ in 0..500 {
        if outbox_rows(db, table).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the audit outbox {table} was not delivered within five seconds");
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            super::with_database("postgres://postgres@127.0.0.1:5432/test", "sc_x"),
            "postgres://postgres@127.0.0.1:5432/sc_x"
        );
        assert_eq!(
            super::with_database("postgres://127.0.0.1?sslmode=disable", "sc_x"),
            "postgres://127.0.0.1/sc_x?sslmode=disable"
        );
    }
}

/// `GET /metrics` at `addr` over plain HTTP/1.1: the status code and body.
pub async fn scrape_raw(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("send");
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response))
        .await
        .expect("answered within ten seconds")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    (status, body.to_owned())
}

/// Scrapes `addr` and parses what it says (a 200 is required).
pub async fn scrape(addr: SocketAddr) -> Scraped {
    let (status, body) = scrape_raw(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    Scraped::parse(&body)
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed Prometheus text exposition (format 0.0.4): its samples, and the
/// TYPE of each metric family.
#[derive(Debug, Clone, Default)]
pub struct Scraped {
    pub samples: Vec<Sample>,
    pub types: std::collections::HashMap<String, String>,
}

impl Scraped {
    /// Parses `text`, panicking (naming the line) on anything malformed.
    pub fn parse(text: &str) -> Self {
        let mut scraped = Scraped::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                scraped.types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            scraped.samples.push(parse_sample(line));
        }
        scraped
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The value of the one sample named `name` with `labels`, if any.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<_> = self.find(name, labels).collect();
        assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
        found.first().map(|s| s.value)
    }
}

fn parse_sample(line: &str) -> Sample {
    fn malformed<T>(line: &str) -> T {
        panic!("not a Prometheus sample: {line}")
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}').unwrap_or_else(|| malformed(line));
            (
                &line[..open],
                parse_labels(&line[open + 1..close]),
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(' ').unwrap_or_else(|| malformed(line));
            (name, Default::default(), rest)
        }
    };
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| malformed(line));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| malformed(line)),
    };
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if !valid_name {
        malformed::<()>(line);
    }
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// `k="v",k2="v2"`, with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&',') || chars.peek() == Some(&' ') {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('='), "label {key} in {text}");
        assert_eq!(chars.next(), Some('"'), "label {key} in {text}");
        let mut value = String::new();
        loop {
            match chars
                .next()
                .unwrap_or_else(|| panic!("unterminated label in {text}"))
            {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => panic!("unterminated label in {text}"),
                },
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
    labels
}

/// The label names a metric of this platform may carry.
pub const METRIC_LABELS: &[&str] = &["service", "method", "code", "result", "state", "le"];

/// Panics if any sample carries a label outside [`METRIC_LABELS`], or a
/// value that looks like an identifier: ten digits in a row (an NHS
/// number, spaced or not), a UUID, or anything in `forbidden`.
pub fn assert_no_identifiers(scraped: &Scraped, forbidden: &[&str]) {
    for sample in &scraped.samples {
        for (key, value) in &sample.labels {
            assert!(
                METRIC_LABELS.contains(&key.as_str()),
                "{} has a label {key} outside the allowed set",
                sample.name
            );
            let digits: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            let run = digits
                .split(|c: char| !c.is_ascii_digit())
                .map(str::len)
                .max()
                .unwrap_or(0);
            assert!(
                run < 10,
                "{} {key}={value} looks like an NHS number",
                sample.name
            );
            assert!(
                uuid::Uuid::parse_str(value).is_err(),
                "{} {key}={value} looks like an id",
                sample.name
            );
            for word in forbidden {
                assert!(
                    !value.contains(word),
                    "{} {key}={value} holds {word}",
                    sample.name
                );
            }
        }
    }
}

/// An OTLP/gRPC trace receiver on a loopback port, keeping every span it is
/// sent: what tests point `OTEL_EXPORTER_OTLP_ENDPOINT` (or
/// `telemetry.otlp_endpoint`) at to see what the services export.
#[derive(Default, Clone)]
pub struct OtlpReceiver {
    spans: Arc<std::sync::Mutex<Vec<ExportedSpan>>>,
}

/// One exported span, as tests look at it.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    pub name: String,
    /// Attribute values as text.
    pub attributes: std::collections::HashMap<String, String>,
    /// Each event's name and attributes, as text.
    pub events: Vec<String>,
    /// The exporting resource's `service.name`.
    pub service: String,
    /// OTLP's span kind: 2 server, 3 client.
    pub kind: i32,
}

fn otlp_text(value: Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match value.and_then(|v| v.value) {
        Some(Value::StringValue(s)) => s,
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for OtlpReceiver
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let mut kept = self
            .spans
            .lock()
            .map_err(|_| tonic::Status::internal("poisoned"))?;
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .into_iter()
                .flat_map(|r| r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| otlp_text(kv.value))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    kept.push(ExportedSpan {
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        name: span.name,
                        attributes: span
                            .attributes
                            .into_iter()
                            .map(|kv| (kv.key, otlp_text(kv.value)))
                            .collect(),
                        events: span
                            .events
                            .into_iter()
                            .map(|e| {
                                let attributes: Vec<String> = e
                                    .attributes
                                    .into_iter()
                                    .map(|kv| format!("{}={}", kv.key, otlp_text(kv.value)))
                                    .collect();
                                format!("{} {}", e.name, attributes.join(" "))
                            })
                            .collect(),
                        service: service.clone(),
                        kind: span.kind,
                    });
                }
            }
        }
        Ok(tonic::Response::new(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse {
                partial_success: None,
            },
        ))
    }
}

impl OtlpReceiver {
    /// Serves a new receiver on 127.0.0.1; it and its `http://` URL.
    pub async fn start() -> (Self, String) {
        let receiver = OtlpReceiver::default();
        let listener = reserve_port().await;
        let url = format!(
            "http://{}",
            listener.local_addr().expect("receiver address")
        );
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                        receiver.clone(),
                    ),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (receiver, url)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
