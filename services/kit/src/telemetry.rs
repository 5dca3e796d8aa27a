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
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, TelemetryConfig};

/// Flushes pending spans when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber. A second call (tests, the all-in-one
/// binary) keeps the first subscriber.
pub fn init(service: &str, cfg: &TelemetryConfig) -> Result<TelemetryGuard, InitError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(&cfg.log_level)?;
    let provider = match &cfg.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(format!("sharedcare-{service}"))
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer(format!("sharedcare-{service}")))
    });
    let (json, pretty) = match cfg.log_format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            ),
            None,
        ),
        LogFormat::Pretty => (None, Some(tracing_subscriber::fmt::layer())),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(json)
        .with(pretty)
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

/// The span for one incoming request, child of the caller's trace. Carries
/// only the RPC path: never a patient identifier.
pub fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let span = tracing::info_span!("grpc.request", rpc.path = %request.uri().path());
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
