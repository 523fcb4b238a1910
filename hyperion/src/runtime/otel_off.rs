//! The simulation build exports no traces (its spans stay in the process).

use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Never constructed in simulation.
pub enum TraceExporter {}

impl TraceExporter {
    pub fn shutdown(self) {
        match self {}
    }
}

/// Refuses: OTLP export is part of the production build only.
pub fn trace_export_layer<S>(
    endpoint: &str,
    _ca_pem: Option<&[u8]>,
    _service_instance: &str,
    _target: &'static str,
) -> Result<(Box<dyn Layer<S> + Send + Sync>, TraceExporter), String>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    Err(format!(
        "OTEL_EXPORTER_OTLP_ENDPOINT ({endpoint}): the simulation build exports no traces"
    ))
}
