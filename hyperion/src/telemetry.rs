//! Traces and logs: the `tracing` subscriber of the server, and the spans exported over OTLP
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (production build; [`crate::runtime`] owns the
//! exporter).
//!
//! Exported spans all use the target [`TRACE_TARGET`]; log lines never show them, and when no
//! exporter is configured no layer is interested in them, so creating one costs a callsite check.
//! - one span per RPC (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`);
//! - on the leader, for each write: `propose` (queued in the node loop until proposed),
//!   `commit` (proposed until the node loop sees it committed: persisted and replicated) and
//!   `apply` (applied to the state machine), children of the RPC's span.
//!
//! Attributes never carry key or value bytes (they may be personal data): a key is named by
//! [`key_hash`], the first 8 bytes of its SHA-256 in hex.

use sha2::{Digest, Sha256};
use tonic::Status;
use tracing::Span;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{Config, LogFormat};
use crate::limits::Rpc;
use crate::runtime;

/// The `tracing` target of every exported span.
pub const TRACE_TARGET: &str = "hyperion::trace";

/// The gRPC service the RPC spans name.
const SERVICE: &str = "hyperion.v1.CacheService";

/// The installed subscriber; [`Telemetry::shutdown`] flushes spans not yet exported.
pub struct Telemetry {
    exporter: Option<runtime::TraceExporter>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (bounded by the exporter's timeout).
    pub fn shutdown(self) {
        if let Some(exporter) = self.exporter {
            exporter.shutdown();
        }
    }
}

/// Installs the process's subscriber: log lines to stderr filtered by `LOG_LEVEL` in
/// `LOG_FORMAT`, and, with `OTEL_EXPORTER_OTLP_ENDPOINT`, the span exporter. Call once, inside
/// the runtime.
pub fn init(config: &Config) -> Result<Telemetry, String> {
    let format = config.ops.log_format;
    let filter = &config.log_level;
    use std::io::IsTerminal;
    // The filter was validated with the configuration; exported spans never reach log lines.
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{filter},{TRACE_TARGET}=off"))
        .map_err(|error| format!("LOG_LEVEL: {error}"))?;
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        // One JSON object per line: timestamp, level, target, message and fields.
        LogFormat::Json => logs.json().with_filter(filter).boxed(),
        LogFormat::Text => logs
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
    };
    let (spans, exporter) = match &config.otlp_endpoint {
        Some(endpoint) => {
            let (layer, exporter) = runtime::trace_export_layer(
                endpoint,
                config.otlp_ca_pem.as_deref(),
                &config.node_id.to_string(),
                TRACE_TARGET,
            )?;
            (Some(layer), Some(exporter))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|error| format!("cannot install the log subscriber: {error}"))?;
    Ok(Telemetry { exporter })
}

/// How spans name a key: the first 8 bytes of its SHA-256, in hex.
pub fn key_hash(key: &[u8]) -> String {
    let digest = Sha256::digest(key);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The span of one RPC, naming its first key by hash, and how many keys it asks for.
pub fn rpc_span(rpc: Rpc, first_key: Option<&[u8]>, keys: usize) -> Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "rpc",
        otel.name = rpc.full_name(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = SERVICE,
        rpc.method = rpc.name(),
        rpc.grpc.status_code = tracing::field::Empty,
        hyperion.key_hash = tracing::field::Empty,
        hyperion.keys = number(keys as u64),
    );
    if !span.is_disabled() {
        if let Some(key) = first_key {
            span.record("hyperion.key_hash", key_hash(key).as_str());
        }
    }
    span
}

/// A count or index as an attribute: OTLP integers are signed (`tracing` would record a `u64`
/// as text).
fn number(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records an RPC's outcome on its span.
pub fn record_outcome<T>(span: &Span, result: &Result<T, Status>) {
    if span.is_disabled() {
        return;
    }
    let code = result.as_ref().err().map_or(tonic::Code::Ok, Status::code);
    span.record("rpc.grpc.status_code", code as i32);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

/// One write's spans through the leader's node loop: `propose`, then `commit`, then `apply`,
/// children of the span current when the write was handed in (its RPC's).
pub struct WriteTrace {
    parent: Span,
    stage: Span,
}

impl WriteTrace {
    /// Starts `propose` under the current span.
    pub fn begin() -> WriteTrace {
        let parent = Span::current();
        let stage = tracing::info_span!(target: TRACE_TARGET, parent: &parent, "propose");
        WriteTrace { parent, stage }
    }

    /// No spans (internal writes with no caller to trace).
    pub fn none() -> WriteTrace {
        WriteTrace {
            parent: Span::none(),
            stage: Span::none(),
        }
    }

    /// Ends `propose` and starts `commit` for the entry at `index` in `term`.
    pub fn proposed(&mut self, index: u64, term: u64) {
        // `propose` closes before `commit` opens.
        self.stage = Span::none();
        self.stage = tracing::info_span!(
            target: TRACE_TARGET,
            parent: &self.parent,
            "commit",
            raft.index = number(index),
            raft.term = number(term)
        );
    }

    /// Ends `commit` and returns `apply`, to be entered while the entry applies.
    pub fn committed(&mut self) -> Span {
        self.stage = Span::none();
        tracing::info_span!(target: TRACE_TARGET, parent: &self.parent, "apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_stable_and_hides_the_key() {
        let hash = key_hash(b"user:42");
        assert_eq!(hash.len(), 16);
        assert_eq!(hash, key_hash(b"user:42"));
        assert_ne!(hash, key_hash(b"user:43"));
        assert!(!hash.contains("user"));
    }

    #[test]
    fn spans_without_a_subscriber_cost_no_hash() {
        // No subscriber: the span is disabled and the key is never hashed or recorded.
        let span = rpc_span(Rpc::Get, Some(b"k"), 1);
        assert!(span.is_disabled());
        record_outcome::<()>(&span, &Err(Status::not_found("x")));
    }
}
