//! OpenTelemetry trace export (production build): the spans of one `tracing` target, exported as
//! OTLP over gRPC by `opentelemetry-otlp` from a batch processor, through `tracing-opentelemetry`.
//!
//! The SDK reads the standard variables for what is not configured here (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*` for batching, `OTEL_EXPORTER_OTLP_TIMEOUT`).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How long one export may take before it is abandoned (the spans are dropped, not retried).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running exporter.
pub struct TraceExporter {
    provider: SdkTracerProvider,
}

impl TraceExporter {
    /// Exports what is buffered, then stops.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "the trace exporter did not shut down cleanly");
        }
    }
}

/// A layer exporting the spans of `target` to the OTLP/gRPC collector at `endpoint` (http:// or
/// https:// verified against `ca_pem`), naming this process `service_instance`. Must run inside
/// the tokio runtime (the gRPC channel lives on it).
pub fn trace_export_layer<S>(
    endpoint: &str,
    ca_pem: Option<&[u8]>,
    service_instance: &str,
    target: &'static str,
) -> Result<(Box<dyn Layer<S> + Send + Sync>, TraceExporter), String>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT);
    if let Some(ca_pem) = ca_pem {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem));
        exporter = exporter.with_tls_config(tls);
    }
    let exporter = exporter
        .build()
        .map_err(|error| format!("OTEL_EXPORTER_OTLP_ENDPOINT ({endpoint}): {error}"))?;
    let resource = Resource::builder()
        .with_service_name("hyperion")
        .with_attribute(KeyValue::new(
            "service.instance.id",
            service_instance.to_string(),
        ))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("hyperion");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(Targets::new().with_target(target, tracing::Level::TRACE));
    Ok((Box::new(layer), TraceExporter { provider }))
}
