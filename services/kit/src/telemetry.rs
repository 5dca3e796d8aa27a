//! Logs (JSON by default) and traces (OTLP when configured), with W3C trace
//! context carried across every hop. Span fields must never hold a patient
//! identifier or clinical content.

use opentelemetry::{
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::FilterExt as _, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::config::{LogFormat, TelemetryConfig};

/// Flushes pending spans when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Exports every span ended so far (tests; shutdown does it too).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            let _ = provider.force_flush();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Whether the standard OpenTelemetry environment asks for trace export:
/// an OTLP endpoint is named, and neither the SDK nor the traces exporter
/// is switched off.
fn otel_env_exports(env: &dyn Fn(&str) -> Option<String>) -> bool {
    let named = |key: &str| env(key).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let no_exporter =
        env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
    (named("OTEL_EXPORTER_OTLP_ENDPOINT") || named("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !disabled
        && !no_exporter
}

/// Installs the global subscriber. A second call (tests, the all-in-one
/// binary) keeps the first subscriber.
///
/// Traces go by OTLP/gRPC when `telemetry.otlp_endpoint` is set or the
/// standard `OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT` is, and are off
/// otherwise; the other `OTEL_*` variables (service name, resource
/// attributes, sampler, headers, timeout) apply as the OpenTelemetry SDK
/// reads them. Logs are filtered by `telemetry.log_level`; spans for
/// export by the `info` level whatever the log level, so quiet logs do not
/// empty the traces.
pub fn init(service: &str, cfg: &TelemetryConfig) -> Result<TelemetryGuard, InitError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(&cfg.log_level)?;
    let env = |key: &str| std::env::var(key).ok();
    let export = cfg.otlp_endpoint.is_some() || otel_env_exports(&env);
    let provider = if export {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = &cfg.otlp_endpoint {
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        let mut resource = opentelemetry_sdk::Resource::builder();
        if env("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(format!("sharedcare-{service}"));
        }
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter.build()?)
                .with_resource(resource.build())
                .build(),
        )
    } else {
        None
    };
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(format!("sharedcare-{service}")))
            .with_filter(tracing_subscriber::filter::DynFilterFn::new(|meta, cx| {
                // A storage span is exported within a request's (or a
                // relay's) span; alone it would be a trace per poll.
                *meta.level() <= tracing::Level::INFO
                    && !(meta.is_span()
                        && meta.target().starts_with("sea_orm")
                        && cx.lookup_current().is_none())
            }))
    });
    // Storage spans are for traces: logs gain nothing from them, and a
    // span no layer wants is never made (a query's cost is untouched when
    // traces are off).
    let filter = filter.and(tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.is_span() && meta.target().starts_with("sea_orm"))
    }));
    let logs = match cfg.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(otel_layer)
        .with(logs.with_filter(filter))
        .try_init();
    Ok(TelemetryGuard { provider })
}

/// Why telemetry could not start.
pub type InitError = Box<dyn std::error::Error + Send + Sync>;

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Writes the current span's context as `traceparent` metadata.
pub fn inject_trace_context(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata))
    });
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span for one incoming request, child of the caller's trace, named
/// and described after OpenTelemetry's `rpc.*` conventions. Carries only
/// the RPC's service and method (and, once answered, its status code):
/// never a patient identifier. `trace_id` puts the trace in every log line
/// written within the request.
pub fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let caller = parent.span().span_context().trace_id();
    let _ = span.set_parent(parent);
    let own = span.context().span().span_context().trace_id();
    let trace = if own != opentelemetry::trace::TraceId::INVALID {
        own
    } else {
        caller
    };
    if trace != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", trace.to_string());
    }
    span
}

/// The current span's context as a W3C `traceparent` value; empty when
/// untraced.
pub fn current_trace_parent() -> String {
    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier)
    });
    carrier.remove("traceparent").unwrap_or_default()
}

/// A span for work done on behalf of a request that sent its context as a
/// `traceparent` value (e.g. with an audit event), joining that trace.
pub fn continued_span(name: &'static str, trace_parent: &str) -> tracing::Span {
    let span = tracing::info_span!("continued", otel.name = name);
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), trace_parent.to_owned())]);
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    let _ = span.set_parent(parent);
    span
}

/// The current trace id as hex, for the audit trail; empty when untraced.
pub fn current_trace_id() -> String {
    use opentelemetry::trace::TraceContextExt;
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if span_context.is_valid() {
        span_context.trace_id().to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn the_standard_environment_switches_export_on_and_off() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!otel_env_exports(&env(&[])));
        assert!(otel_env_exports(&env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(otel_env_exports(&env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(!otel_env_exports(&env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            " "
        )])));
        assert!(!otel_env_exports(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])));
        assert!(!otel_env_exports(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }

    #[test]
    fn trace_context_crosses_a_hop() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            // The caller: a span whose context goes out as `traceparent`.
            let outgoing = tracing::info_span!("caller");
            let _entered = outgoing.enter();
            let mut metadata = tonic::metadata::MetadataMap::new();
            inject_trace_context(&mut metadata);
            let traceparent = metadata
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .expect("traceparent sent")
                .to_owned();
            let caller_trace = tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id();
            assert!(traceparent.contains(&caller_trace.to_string()));
            assert_eq!(current_trace_id(), caller_trace.to_string());

            // The callee: its request span continues the caller's trace.
            let request = http::Request::builder()
                .uri("/sharedcare.records.v1.RecordsService/GetRecord")
                .header("traceparent", traceparent)
                .body(())
                .expect("request");
            let span = request_span(&request);
            assert_eq!(
                span.context().span().span_context().trace_id(),
                caller_trace
            );
        });
    }
}
