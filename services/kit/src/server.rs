//! Server bootstrap shared by every service: health and reflection, the
//! auth layer, admission (bounded concurrency and per-client rate limits,
//! RESOURCE_EXHAUSTED beyond them; see `kit::admission`), a
//! per-request timeout, and graceful shutdown on SIGTERM that reports
//! NOT_SERVING, waits for load balancers to notice, then drains.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::{service::Routes, transport::Server};
use tonic_health::ServingStatus;
use tower::{BoxError, ServiceBuilder};

use crate::{
    Error,
    access::AccessTable,
    admission::{ClientRate, InFlight},
    auth::{AuthLayer, Verifier},
    config::ServerConfig,
    metrics::{MetricsListen, RpcMetricsLayer, Sampler},
};

/// What a service contributes to its server.
pub struct ServiceSpec {
    /// Short name, e.g. "identity".
    pub name: &'static str,
    /// Fully qualified gRPC service names, reported by the health service.
    pub grpc_services: Vec<&'static str>,
    /// The service's gRPC servers, already bounded in message size.
    pub routes: Routes,
    /// How tokens are verified.
    pub verifier: Arc<Verifier>,
    /// Who may call each RPC.
    pub access: &'static AccessTable,
    /// Serve TLS only (mutual, see `kit::tls`); `None` is plaintext.
    pub tls: Option<crate::tls::Tls>,
    /// Run when shutdown begins, e.g. to end streams that would otherwise
    /// hold the drain open.
    pub on_shutdown: Vec<Box<dyn FnOnce() + Send>>,
    /// Where to serve this service's metrics; `None`: not served.
    pub metrics: Option<MetricsListen>,
    /// Gauges read afresh at each scrape (outbox, database pool, ...).
    pub samplers: Vec<Arc<dyn Sampler>>,
}

impl ServiceSpec {
    /// A service from its generated server; health reports it under the
    /// gRPC name the server itself declares.
    pub fn new<S>(
        name: &'static str,
        server: S,
        verifier: Arc<Verifier>,
        access: &'static AccessTable,
    ) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        // Tokens for this service's own audience are accepted besides
        // platform-wide ones.
        verifier.bind_service(name);
        ServiceSpec {
            name,
            grpc_services: vec![S::NAME],
            routes: Routes::new(server),
            verifier,
            access,
            tls: None,
            on_shutdown: Vec::new(),
            metrics: None,
            samplers: Vec::new(),
        }
    }

    /// Serves metrics at `addr` (`telemetry.metrics_addr`) when given.
    pub fn with_metrics_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.metrics = addr.map(MetricsListen::Addr);
        self
    }

    /// Serves metrics on a listener already bound (dev binds every port
    /// before starting anything; tests bind port 0).
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics = Some(MetricsListen::Listener(listener));
        self
    }

    /// Reads `sampler` before each scrape of this service's metrics.
    pub fn sample(mut self, sampler: Arc<dyn Sampler>) -> Self {
        self.samplers.push(sampler);
        self
    }

    /// Runs `hook` when shutdown begins.
    pub fn on_shutdown(mut self, hook: impl FnOnce() + Send + 'static) -> Self {
        self.on_shutdown.push(Box::new(hook));
        self
    }

    /// Serves over `tls` when given (from `Tls::from_config`).
    pub fn with_tls(mut self, tls: Option<crate::tls::Tls>) -> Self {
        self.tls = tls;
        self
    }
}

/// Binds `cfg.listen` and serves until SIGTERM or Ctrl-C.
pub async fn serve_until_signal(spec: ServiceSpec, cfg: &ServerConfig) -> Result<(), Error> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| Error::unavailable(format!("binding {}: {e}", cfg.listen)))?;
    serve(spec, cfg, listener, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    spec: ServiceSpec,
    cfg: &ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| Error::internal("reading the listen address", e))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in &spec.grpc_services {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let routes = spec
        .routes
        .add_service(health)
        .add_service(reflection_v1()?)
        .add_service(reflection_v1alpha()?);

    // Ended (its connections too) when this function returns.
    let _metrics = match spec.metrics {
        Some(listen) => Some(crate::metrics::start(spec.name, listen, spec.samplers).await?),
        None => None,
    };

    // Metrics outermost: they see the status callers get, normalised. Only
    // where they are served: no work on every RPC for a count nobody reads.
    let layers = ServiceBuilder::new()
        .option_layer(
            _metrics
                .is_some()
                .then(|| RpcMetricsLayer::new(spec.name, spec.access)),
        )
        .map_result(record_status)
        .map_result(normalise_status)
        .map_err(BoxError::from)
        .layer(InFlight::layer(cfg.concurrency_limit))
        .layer(AuthLayer::new(spec.verifier.clone(), spec.access))
        .option_layer(ClientRate::layer(cfg))
        .into_inner();

    let drain = Duration::from_millis(cfg.shutdown_drain_ms);
    let services = spec.grpc_services.clone();
    let hooks = spec.on_shutdown;
    let name = spec.name;
    let on_shutdown = async move {
        shutdown.await;
        tracing::info!(service = name, "shutting down: reporting NOT_SERVING");
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for service in services {
            reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        for hook in hooks {
            hook();
        }
        tokio::time::sleep(drain).await;
        tracing::info!(service = name, "draining in-flight requests");
    };

    tracing::info!(service = name, %addr, tls = spec.tls.is_some(), "serving gRPC");
    let router = Server::builder()
        .timeout(Duration::from_millis(cfg.request_timeout_ms))
        .trace_fn(crate::telemetry::request_span)
        .layer(layers)
        .add_routes(routes);
    match &spec.tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), on_shutdown)
                .await
        }
        None => {
            use tokio_stream::StreamExt;
            // Small request/response messages: without TCP_NODELAY, Nagle's
            // algorithm and delayed ACKs stall each exchange for ~40 ms.
            let incoming =
                tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
                    accepted.inspect(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    })
                });
            router
                .serve_with_incoming_shutdown(incoming, on_shutdown)
                .await
        }
    }
    .map_err(|e| Error::internal("serving gRPC", e))
}

/// Limits on a service's generated server: every service applies these.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    pub max_bytes: usize,
}

impl From<&ServerConfig> for MessageLimits {
    fn from(cfg: &ServerConfig) -> Self {
        MessageLimits {
            max_bytes: cfg.max_message_bytes,
        }
    }
}

type HttpResponse = http::Response<tonic::body::Body>;

/// tonic's words for a request larger than the decoding limit, as they
/// appear in `grpc-message` (percent-encoded: spaces are `%20`).
const OVERSIZE_MESSAGE: &str = "Error,%20decoded%20message%20length%20too%20large";

/// Answers with the codes gRPC's status-code guide gives: a message larger
/// than the limit is RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE). Its
/// message is kept.
fn normalise_status(result: Result<HttpResponse, BoxError>) -> Result<HttpResponse, BoxError> {
    match result {
        Ok(mut response) if is_oversize_refusal(response.headers()) => {
            response.headers_mut().insert(
                "grpc-status",
                http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
            );
            Ok(response)
        }
        // A request that does not decode (e.g. a string field that is not
        // UTF-8) is the caller's error, not the server's: prost's message
        // names the field.
        Ok(mut response) if is_undecodable_request(response.headers()) => {
            response.headers_mut().insert(
                "grpc-status",
                http::HeaderValue::from(tonic::Code::InvalidArgument as i32),
            );
            Ok(response)
        }
        other => other,
    }
}

/// Puts the answer's gRPC status code on the request's span, and logs it
/// (target `sharedcare::rpc`, debug). An answer
/// without `grpc-status` in its headers carries it in the trailers, which
/// tonic sends only for a response that began well: OK.
fn record_status(result: Result<HttpResponse, BoxError>) -> Result<HttpResponse, BoxError> {
    if let Ok(response) = &result {
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        tracing::Span::current().record("rpc.grpc.status_code", code);
        // The request log: one line per answer, in the request's span (so
        // with its service, method and trace id), at debug.
        tracing::debug!(target: "sharedcare::rpc", code, "answered");
    }
    result
}

/// prost's words for a message that does not decode, as in `grpc-message`.
const UNDECODABLE_MESSAGE: &str = "failed%20to%20decode%20Protobuf%20message";

/// A trailers-only INTERNAL answer from tonic's decoding of the request.
fn is_undecodable_request(headers: &http::HeaderMap) -> bool {
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok());
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok());
    code == Some("13") && message.is_some_and(|m| m.starts_with(UNDECODABLE_MESSAGE))
}

/// A trailers-only OUT_OF_RANGE answer from tonic's size check.
fn is_oversize_refusal(headers: &http::HeaderMap) -> bool {
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok());
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok());
    code == Some("11") && message.is_some_and(|m| m.starts_with(OVERSIZE_MESSAGE))
}

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sharedcare_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

fn reflection_v1() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    Error,
> {
    reflection_builder()
        .build_v1()
        .map_err(|e| Error::internal("building reflection", e))
}

fn reflection_v1alpha() -> Result<
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
    Error,
> {
    reflection_builder()
        .build_v1alpha()
        .map_err(|e| Error::internal("building reflection", e))
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C (a terminal).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// What `run` needs from a service's configuration.
pub trait ServiceConfig {
    fn server(&self) -> &ServerConfig;
    fn telemetry(&self) -> &crate::config::TelemetryConfig;
}

/// The whole of a service's `main`: configuration, telemetry, open, serve
/// until SIGTERM. Failures are printed with what went wrong and exit 1.
///
/// `<binary> migrate` opens the service (which brings its schema up to
/// date) and exits without serving: the Helm pre-install/pre-upgrade Job.
pub async fn run<C, F, Fut>(
    name: &str,
    loaded: Result<C, crate::config::ConfigError>,
    open: F,
) -> std::process::ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = Result<ServiceSpec, Error>>,
{
    let cfg = match loaded {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("sharedcare-{name}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let _telemetry = match crate::telemetry::init(name, cfg.telemetry()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("sharedcare-{name}: starting telemetry: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let server = cfg.server().clone();
    let migrate_only = std::env::args().nth(1).as_deref() == Some("migrate");
    let result = match open(cfg).await {
        Ok(_) if migrate_only => {
            tracing::info!(service = name, "schema is up to date");
            Ok(())
        }
        Ok(spec) => serve_until_signal(spec, &server).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("sharedcare-{name}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
