//! Prometheus metrics: one recorder per process, and each service's own
//! series served as Prometheus text on `GET /metrics` at
//! `telemetry.metrics_addr` (off when unset).
//!
//! Every series carries a `service` label. `sharedcare dev` and the tests run
//! several services in one process, sharing the one recorder, so each
//! service's endpoint shows only the series labelled with its name.
//!
//! Labels are only `service`, `method`, `code`, `result` and `state`, each
//! from a fixed set of words: never a patient identifier, a principal id or
//! clinical content (a label value is kept for the life of the process and
//! read by anyone who can scrape).
//!
//! What is recorded (names are the contract with the Helm chart's dashboard
//! and alert rules):
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `sharedcare_rpc_requests_total` | counter | service, method, code |
//! | `sharedcare_rpc_duration_seconds` | histogram | service, method |
//! | `sharedcare_outbox_pending_events` | gauge | service |
//! | `sharedcare_outbox_oldest_event_age_seconds` | gauge | service |
//! | `sharedcare_outbox_delivery_failing_seconds` | gauge | service |
//! | `sharedcare_audit_batch_size` | histogram | service |
//! | `sharedcare_audit_commit_duration_seconds` | histogram | service |
//! | `sharedcare_audit_tree_size` | gauge | service |
//! | `sharedcare_consent_cache_lookups_total` | counter | service, result (hit, miss) |
//! | `sharedcare_db_pool_connections` | gauge | service, state (idle, in_use) |
//! | `sharedcare_token_verifications_total` | counter | service, result (valid, invalid) |

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, task::JoinSet};

use crate::error::code_name;
use crate::{Error, access::AccessTable, peers::BoxFuture};

pub const RPC_REQUESTS: &str = "sharedcare_rpc_requests_total";
pub const RPC_DURATION: &str = "sharedcare_rpc_duration_seconds";
pub const OUTBOX_PENDING: &str = "sharedcare_outbox_pending_events";
pub const OUTBOX_OLDEST_AGE: &str = "sharedcare_outbox_oldest_event_age_seconds";
pub const OUTBOX_FAILING: &str = "sharedcare_outbox_delivery_failing_seconds";
pub const AUDIT_BATCH_SIZE: &str = "sharedcare_audit_batch_size";
pub const AUDIT_COMMIT_DURATION: &str = "sharedcare_audit_commit_duration_seconds";
pub const AUDIT_TREE_SIZE: &str = "sharedcare_audit_tree_size";
pub const CONSENT_CACHE_LOOKUPS: &str = "sharedcare_consent_cache_lookups_total";
pub const DB_POOL_CONNECTIONS: &str = "sharedcare_db_pool_connections";
pub const TOKEN_VERIFICATIONS: &str = "sharedcare_token_verifications_total";

/// Seconds: from a cache hit (well under a millisecond) to the request
/// timeout's order of magnitude.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Events per commit: one lone append up to the sequencer's largest group.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static INSTALLING: Mutex<()> = Mutex::new(());

/// Installs the process's recorder, once: later calls (the other services of
/// `sharedcare dev`, every test) get the same handle. Until it is installed,
/// recording costs nothing and is lost, so it is installed only where a
/// metrics endpoint is served. Fails only if something else installed a
/// recorder of its own first.
pub fn install() -> Result<&'static PrometheusHandle, Error> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    // Two services starting at once must not both build one.
    let _installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let context = "installing the metrics recorder";
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in [
        (RPC_DURATION, LATENCY_BUCKETS),
        (AUDIT_COMMIT_DURATION, LATENCY_BUCKETS),
        (AUDIT_BATCH_SIZE, BATCH_BUCKETS),
    ] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            .map_err(|e| Error::internal(context, e))?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| Error::internal(context, e))?;
    describe();
    Ok(HANDLE.get_or_init(|| handle))
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RPC_REQUESTS,
        "RPCs answered, by method and gRPC status code."
    );
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "Time to answer an RPC (to its response headers; a stream's opening)."
    );
    describe_gauge!(OUTBOX_PENDING, "Audit events waiting in the outbox.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest undelivered audit event; 0 when none waits."
    );
    describe_gauge!(
        OUTBOX_FAILING,
        Unit::Seconds,
        "How long delivery to audit has been failing; 0 while it succeeds."
    );
    describe_histogram!(AUDIT_BATCH_SIZE, "Events per audit log commit.");
    describe_histogram!(
        AUDIT_COMMIT_DURATION,
        Unit::Seconds,
        "Time to commit a batch of events to the audit log."
    );
    describe_gauge!(AUDIT_TREE_SIZE, "Entries in the audit log's Merkle tree.");
    describe_counter!(
        CONSENT_CACHE_LOOKUPS,
        "Consent decisions looked up in the decision cache, by hit or miss."
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        "Database pool connections, by state (idle, in_use)."
    );
    describe_counter!(TOKEN_VERIFICATIONS, "Bearer tokens verified, by result.");
}

/// Something read afresh at each scrape (a gauge of state held elsewhere),
/// under the scraped service's name.
pub trait Sampler: Send + Sync + 'static {
    fn sample(&self, service: &'static str) -> BoxFuture<'_, ()>;
}

/// Samples a database's connection pool: `sharedcare_db_pool_connections`.
pub struct PoolSampler(pub sea_orm::DatabaseConnection);

impl Sampler for PoolSampler {
    fn sample(&self, service: &'static str) -> BoxFuture<'_, ()> {
        // Both getters panic on another kind of connection: the backend is
        // checked first (kit::db only makes sqlx pools).
        let (size, idle) = match self.0.get_database_backend() {
            sea_orm::DatabaseBackend::Sqlite => {
                let pool = self.0.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            sea_orm::DatabaseBackend::Postgres => {
                let pool = self.0.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => return Box::pin(async { Ok(()) }),
        };
        let idle = idle as f64;
        let in_use = (f64::from(size) - idle).max(0.0);
        metrics::gauge!(DB_POOL_CONNECTIONS, "service" => service, "state" => "idle").set(idle);
        metrics::gauge!(DB_POOL_CONNECTIONS, "service" => service, "state" => "in_use").set(in_use);
        Box::pin(async { Ok(()) })
    }
}

/// Counts a bearer token's verification.
pub fn token_verified(service: &'static str, valid: bool) {
    let result = if valid { "valid" } else { "invalid" };
    metrics::counter!(TOKEN_VERIFICATIONS, "service" => service, "result" => result).increment(1);
}

/// Counts a lookup in the consent decision cache.
pub fn consent_cache_lookup(service: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    metrics::counter!(CONSENT_CACHE_LOOKUPS, "service" => service, "result" => result).increment(1);
}

/// Where a service's metrics endpoint listens.
pub enum MetricsListen {
    /// Bound when the service starts serving.
    Addr(SocketAddr),
    /// Already bound (dev binds every port first; tests bind port 0).
    Listener(TcpListener),
}

/// The endpoint of one service, running until dropped.
pub struct MetricsServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        // Its connections live in the task's JoinSet and end with it.
        self.task.abort();
    }
}

/// How often histograms are drained into their buckets when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the recorder and serves `service`'s series at `listen`, running
/// `samplers` before each scrape.
pub async fn start(
    service: &'static str,
    listen: MetricsListen,
    samplers: Vec<Arc<dyn Sampler>>,
) -> Result<MetricsServer, Error> {
    let handle = install()?;
    let listener = match listen {
        MetricsListen::Listener(listener) => listener,
        MetricsListen::Addr(addr) => TcpListener::bind(addr)
            .await
            .map_err(|e| Error::unavailable(format!("binding the metrics address {addr}: {e}")))?,
    };
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal("reading the metrics address", e))?;
    let scrape = Arc::new(Scrape {
        service,
        handle,
        samplers,
    });
    tracing::info!(service, %addr, "serving metrics");
    let task = tokio::spawn(accept(listener, scrape));
    Ok(MetricsServer { addr, task })
}

struct Scrape {
    service: &'static str,
    handle: &'static PrometheusHandle,
    samplers: Vec<Arc<dyn Sampler>>,
}

impl Scrape {
    async fn render(&self) -> String {
        for sampler in &self.samplers {
            if let Err(e) = sampler.sample(self.service).await {
                // A gauge that could not be read keeps its last value.
                tracing::warn!(service = self.service, error = %e.message, "sampling a metric failed");
            }
        }
        only_service(&self.handle.render(), self.service)
    }
}

async fn accept(listener: TcpListener, scrape: Arc<Scrape>) {
    let mut connections = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let scrape = scrape.clone();
                    connections.spawn(serve_connection(tcp, scrape));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = upkeep.tick() => scrape.handle.run_upkeep(),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(tcp: tokio::net::TcpStream, scrape: Arc<Scrape>) {
    let service =
        hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let scrape = scrape.clone();
            async move { Ok::<_, Infallible>(respond(&scrape, &request).await) }
        });
    let io = hyper_util::rt::TokioIo::new(tcp);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        // A client that opens a connection and says nothing is let go.
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, service)
        .await;
}

async fn respond<B>(scrape: &Scrape, request: &http::Request<B>) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&http::Method::GET, "/metrics") => (
            http::StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            scrape.render().await,
        ),
        (_, "/metrics") => (
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".to_owned(),
        ),
        _ => (
            http::StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// The series of `text` (Prometheus text format) labelled
/// `service="<service>"`, with the HELP and TYPE lines of the metrics that
/// keep any.
pub fn only_service(text: &str, service: &str) -> String {
    let first = format!("{{service=\"{service}\"");
    let later = format!(",service=\"{service}\"");
    let mut out = String::with_capacity(text.len() / 2);
    let mut comments: Vec<&str> = Vec::new();
    let mut after_sample = false;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if after_sample {
                comments.clear();
                after_sample = false;
            }
            comments.push(line);
            continue;
        }
        after_sample = true;
        if line.contains(&first) || line.contains(&later) {
            for comment in comments.drain(..) {
                out.push_str(comment);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

// ---- the RPC layer ----

/// Records every RPC's outcome and latency: `sharedcare_rpc_requests_total`
/// and `sharedcare_rpc_duration_seconds`. The method is the RPC's name from
/// the service's access table (or health's and reflection's own), never
/// anything from the message: a path the service does not know is
/// `unknown`, so a caller cannot mint label values.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    service: &'static str,
    access: &'static AccessTable,
}

impl RpcMetricsLayer {
    pub fn new(service: &'static str, access: &'static AccessTable) -> Self {
        RpcMetricsLayer { service, access }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            service: self.service,
            access: self.access,
        }
    }
}

#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    service: &'static str,
    access: &'static AccessTable,
}

/// The RPCs every server adds beside the service's own.
const SHARED_METHODS: &[(&str, &str)] = &[
    ("/grpc.health.v1.Health/Check", "Check"),
    ("/grpc.health.v1.Health/Watch", "Watch"),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "ServerReflectionInfo",
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "ServerReflectionInfo",
    ),
];

/// The method label for a request path.
pub fn method_label(access: &AccessTable, path: &str) -> &'static str {
    if let Some(rule) = access.rule_for_path(path) {
        return rule.method;
    }
    SHARED_METHODS
        .iter()
        .find(|(known, _)| *known == path)
        .map_or("unknown", |(_, method)| method)
}

type HttpResponse = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut rpc = Rpc {
            service: self.service,
            method: method_label(self.access, request.uri().path()),
            started: Instant::now(),
            answered: false,
            done: false,
        };
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let result = inner.call(request).await;
            rpc.answered();
            match result {
                Ok(response) => Ok(rpc.watch(response)),
                Err(e) => {
                    rpc.finish("UNKNOWN");
                    Err(e)
                }
            }
        })
    }
}

/// One RPC in flight. Dropped before its status is known (the caller went
/// away, or the server's timeout fired), it counts as CANCELLED.
struct Rpc {
    service: &'static str,
    method: &'static str,
    started: Instant,
    answered: bool,
    done: bool,
}

impl Rpc {
    /// The response (or its headers) is ready: the RPC's latency.
    fn answered(&mut self) {
        if !self.answered {
            self.answered = true;
            metrics::histogram!(RPC_DURATION, "service" => self.service, "method" => self.method)
                .record(self.started.elapsed().as_secs_f64());
        }
    }

    fn finish(&mut self, code: &'static str) {
        if !self.done {
            self.done = true;
            metrics::counter!(
                RPC_REQUESTS,
                "service" => self.service,
                "method" => self.method,
                "code" => code
            )
            .increment(1);
        }
    }

    /// A trailers-only answer has its status in the headers; otherwise it
    /// comes in the trailers, at the end of the body.
    fn watch(mut self, response: HttpResponse) -> HttpResponse {
        if let Some(code) = status_of(response.headers()) {
            self.finish(code);
            return response;
        }
        if http_body::Body::is_end_stream(response.body()) {
            // No trailers will come: a response that is not gRPC.
            self.finish("UNKNOWN");
            return response;
        }
        response.map(|body| {
            tonic::body::Body::new(WatchedBody {
                inner: body,
                rpc: self,
            })
        })
    }
}

impl Drop for Rpc {
    fn drop(&mut self) {
        self.answered();
        self.finish("CANCELLED");
    }
}

/// The gRPC status code name in `headers`, if there is one.
fn status_of(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    Some(code_name(tonic::Code::from_bytes(value.as_bytes())))
}

/// A response body that reads the status from its trailers.
struct WatchedBody {
    inner: tonic::body::Body,
    rpc: Rpc,
}

impl http_body::Body for WatchedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    self.rpc.finish(code);
                }
            }
            // The status is sent as a trailer; an error instead of one is
            // the server's.
            Poll::Ready(Some(Err(_))) => self.rpc.finish("INTERNAL"),
            Poll::Ready(None) => self.rpc.finish("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP sharedcare_rpc_requests_total RPCs answered.
# TYPE sharedcare_rpc_requests_total counter
sharedcare_rpc_requests_total{service=\"records\",method=\"GetRecord\",code=\"OK\"} 2
sharedcare_rpc_requests_total{service=\"audit\",method=\"AppendBatch\",code=\"OK\"} 6

# TYPE sharedcare_audit_tree_size gauge
sharedcare_audit_tree_size{service=\"audit\"} 6

# TYPE sharedcare_rpc_duration_seconds histogram
sharedcare_rpc_duration_seconds_bucket{service=\"audit\",method=\"Check\",le=\"0.5\"} 1
sharedcare_rpc_duration_seconds_bucket{service=\"records\",method=\"Check\",le=\"0.5\"} 1
sharedcare_rpc_duration_seconds_count{service=\"records\",method=\"Check\"} 1
";

    #[test]
    fn a_service_sees_only_its_own_series_and_their_families() {
        assert_eq!(
            only_service(TEXT, "records"),
            "\
# HELP sharedcare_rpc_requests_total RPCs answered.
# TYPE sharedcare_rpc_requests_total counter
sharedcare_rpc_requests_total{service=\"records\",method=\"GetRecord\",code=\"OK\"} 2
# TYPE sharedcare_rpc_duration_seconds histogram
sharedcare_rpc_duration_seconds_bucket{service=\"records\",method=\"Check\",le=\"0.5\"} 1
sharedcare_rpc_duration_seconds_count{service=\"records\",method=\"Check\"} 1
"
        );
        let audit = only_service(TEXT, "audit");
        assert!(audit.contains("# TYPE sharedcare_audit_tree_size gauge\n"));
        assert!(!audit.contains("records"));
        assert_eq!(only_service(TEXT, "identity"), "");
        // A service whose name another's begins with is not confused.
        assert_eq!(only_service(TEXT, "aud"), "");
    }

    #[test]
    fn the_method_label_is_a_known_rpc_name_or_unknown() {
        static TABLE: AccessTable = AccessTable {
            service: "sharedcare.records.v1.RecordsService",
            rules: &[crate::access::Rule {
                method: "GetRecord",
                callers: &[],
                purposes: "",
                audit: "",
            }],
        };
        let label = |path| method_label(&TABLE, path);
        assert_eq!(
            label("/sharedcare.records.v1.RecordsService/GetRecord"),
            "GetRecord"
        );
        assert_eq!(label("/grpc.health.v1.Health/Check"), "Check");
        // A caller cannot put anything of its own in a label.
        assert_eq!(
            label("/sharedcare.records.v1.RecordsService/9990000018"),
            "unknown"
        );
        assert_eq!(label("/anything/else"), "unknown");
    }

    #[test]
    fn status_codes_have_grpc_names() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(status_of(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("7"));
        assert_eq!(status_of(&headers), Some("PERMISSION_DENIED"));
        headers.insert("grpc-status", http::HeaderValue::from_static("0"));
        assert_eq!(status_of(&headers), Some("OK"));
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }

    #[test]
    fn a_second_install_is_harmless() {
        let first = install().expect("installed") as *const PrometheusHandle;
        let second = install().expect("installed again") as *const PrometheusHandle;
        assert_eq!(first, second);
    }
}
