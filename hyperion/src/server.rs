//! Node startup: validate, build the engine, bind, serve, shut down gracefully.
//!
//! The same [`Server`] runs in production (tokio) and in simulation (madsim); only the listener
//! differs, inside the runtime facade.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::api::CacheApi;
use crate::config::{Config, HmacKeySource};
use crate::limits::{RateLimiter, RateLimits};
use crate::node::CacheNode;
use crate::runtime::{self, GrpcListener, NodeClock, ServeError};

/// Name of the identity file in the data directory.
pub const NODE_ID_FILE: &str = "node.id";

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("COCKROACH_DSN: this build has no database client yet; unset it to run cache-only")]
    DatabaseNotSupported,
    #[error("{0}")]
    Store(#[from] hyperion_store::ConfigError),
    #[error("HYPERION_DATA_DIR ({path}): {problem}")]
    DataDir { path: String, problem: String },
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A bound, not yet serving, node.
pub struct Server {
    node: Arc<CacheNode>,
    listener: GrpcListener,
    max_value_bytes: usize,
    rate_limits: RateLimits,
}

impl Server {
    /// Validates the configuration against this build, builds the engine and binds the gRPC
    /// address (port 0 picks a free port; see [`Server::local_addr`]).
    pub fn bind(config: &Config, clock: NodeClock) -> Result<Server, StartError> {
        if config.database_dsn.is_some() {
            return Err(StartError::DatabaseNotSupported);
        }
        let node = Arc::new(CacheNode::new(config, clock)?);
        let listener = GrpcListener::bind(config.listen_addr)?;
        if config.dev_mode {
            tracing::warn!(
                "DEVELOPMENT MODE: plaintext gRPC on loopback and a built-in integrity key; \
                 not for production (set HYPERION_HMAC_KEY_FILE)"
            );
        }
        if config.hmac_key_source == HmacKeySource::Development && !config.dev_mode {
            unreachable!("configuration guarantees a key file outside development mode");
        }
        if config.flags.shadow_traffic_percent > 0 {
            tracing::warn!(
                percent = config.flags.shadow_traffic_percent,
                "shadow_traffic_percent is set but no shadow cluster is configured; ignored"
            );
        }
        if let Some(endpoint) = &config.otlp_endpoint {
            tracing::warn!(%endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT is set but this build exports no traces; ignored");
        }
        Ok(Server {
            node,
            listener,
            max_value_bytes: config.flags.max_value_bytes(),
            rate_limits: RateLimits::default(),
        })
    }

    /// Replaces the product's rate limits (benchmarks and tests that need more headroom).
    pub fn with_rate_limits(mut self, limits: RateLimits) -> Server {
        self.rate_limits = limits;
        self
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The engine, for in-process inspection (stats, tests).
    pub fn node(&self) -> Arc<CacheNode> {
        Arc::clone(&self.node)
    }

    /// Serves until `shutdown` resolves; in-flight requests finish, background tasks stop.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let reaper = runtime::spawn(Arc::clone(&self.node).run_reaper());
        let api = CacheApi::new(self.node, Arc::new(RateLimiter::new(self.rate_limits)));
        tracing::info!(addr = %self.listener.local_addr(), "serving CacheService");
        let served = self
            .listener
            .serve(
                api,
                CacheApi::max_message_bytes(self.max_value_bytes),
                shutdown,
            )
            .await;
        reaper.abort();
        tracing::info!("stopped");
        Ok(served?)
    }
}

/// Creates the data directory and claims it for `node_id`. A directory that belongs to another
/// node is refused, so a mis-mounted volume is never served under the wrong identity.
pub fn prepare_data_dir(data_dir: &Path, node_id: &str) -> Result<(), StartError> {
    let fail = |problem: String| StartError::DataDir {
        path: data_dir.display().to_string(),
        problem,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| fail(format!("cannot create: {e}")))?;
    let id_path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&id_path) {
        Ok(existing) if existing.trim() == node_id => Ok(()),
        Ok(existing) => Err(fail(format!(
            "belongs to node `{}`, not `{node_id}`; point HYPERION_DATA_DIR at this node's own directory",
            existing.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
            std::fs::write(&tmp, format!("{node_id}\n"))
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &id_path))
                .map_err(|e| fail(format!("cannot write {NODE_ID_FILE}: {e}")))
        }
        Err(e) => Err(fail(format!("cannot read {NODE_ID_FILE}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_is_claimed_once_and_guarded() {
        let dir =
            std::env::temp_dir().join(format!("hyperion-datadir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        prepare_data_dir(&dir, "node1").unwrap();
        prepare_data_dir(&dir, "node1").unwrap();
        let error = prepare_data_dir(&dir, "node2").unwrap_err().to_string();
        assert!(
            error.contains("belongs to node `node1`, not `node2`"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
