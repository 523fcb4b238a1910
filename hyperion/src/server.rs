//! Node startup: validate, recover the replica from its data directory, bind, serve, shut down
//! gracefully.
//!
//! The same [`Server`] runs in production (tokio, Raft state in `<data dir>/raft`) and in
//! simulation (madsim, a simulated disk); only the listener and the disk differ.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyperion_raft::storage::{Disk, FileDisk};

use crate::admin::{Admin, AdminKey};
use crate::api::CacheApi;
use crate::auth::Authority;
use crate::config::Config;
use crate::db::SystemOfRecord;
use crate::limits::{RateLimiter, RateLimits};
use crate::metrics::Metrics;
use crate::replica::transport::RaftApi;
use crate::replica::{self, Replica, ReplicaConfig, ReplicaStartError, Topology};
use crate::runtime::{
    ConnectionLimits, FatalHandler, GrpcListener, HttpHandler, HttpListener, NodeClock, ServeError,
};
use crate::security::{node_security, NodeSecurity};
use crate::tls::NodeTls;

/// Name of the identity file in the data directory.
pub const NODE_ID_FILE: &str = "node.id";
/// Subdirectory of the data directory holding the Raft WAL and snapshot.
pub const RAFT_DIR: &str = "raft";

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("COCKROACH_DSN: {0}")]
    Database(#[from] crate::db::DbError),
    #[error(transparent)]
    Replica(#[from] ReplicaStartError),
    #[error("HYPERION_DATA_DIR ({path}): {problem}")]
    DataDir { path: String, problem: String },
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(
        "HYPERION_DATA_DIR ({path}) holds no Raft state, but the cluster already has state (node \
         {peer} is at term {term}): this node's data was lost, or it is a new node joining a \
         running cluster. Starting it with an empty log as if nothing happened could lose \
         committed writes. To rejoin safely set HYPERION_JOIN_EXISTING_CLUSTER=true: the node \
         then votes only after it has caught up with the leader (README: Replacing a node)"
    )]
    DataLost {
        path: String,
        peer: String,
        term: u64,
    },
    #[error("cannot read the Raft state in HYPERION_DATA_DIR: {0}")]
    Recovery(#[from] hyperion_raft::storage::StorageError),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
}

/// Most connections a node serves at once; more are closed at accept (bounded memory).
pub const CONNECTIONS_MAX: usize = 4096;
/// A TLS handshake must finish within this (a slow-loris handshake is dropped); default of
/// `HYPERION_TLS_HANDSHAKE_TIMEOUT_MS`.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A connection that sends nothing for this long is closed (clients reconnect on demand);
/// default of `HYPERION_CONNECTION_IDLE_TIMEOUT_MS`.
pub const CONNECTION_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Largest header block of one request (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`): metadata,
/// bearer tokens included, fits; a huge metadata value is refused before it is buffered.
pub const HEADER_LIST_BYTES_MAX: u32 = 16 * 1024;
/// Most concurrent streams (requests) per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const STREAMS_PER_CONNECTION_MAX: u32 = 128;
/// Largest HTTP/2 frame the node accepts (`SETTINGS_MAX_FRAME_SIZE`, the protocol's minimum).
pub const FRAME_BYTES_MAX: u32 = 16 * 1024;
/// Longest a request may run on the server: above the longest `timeout_ms` a client may ask
/// for, so a half-sent request cannot hold a stream forever.
pub const REQUEST_TIMEOUT_MAX: std::time::Duration = std::time::Duration::from_secs(65);
/// Most streams a client may reset before the server answers them (HTTP/2 rapid reset).
pub const PENDING_RESETS_MAX: usize = 32;

/// How long a node with an empty data directory asks its peers whether the cluster already has
/// state, before assuming it is being bootstrapped.
pub const ADMISSION_ATTEMPTS: u32 = 3;
/// Deadline of one peer status query at startup.
pub const ADMISSION_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// What the peers say about a cluster this node is joining with an empty log.
struct ClusterState {
    /// Highest term any peer reported, and who reported it.
    term: u64,
    peer: String,
    /// The leader's (or, without a known leader, the highest reported) last log index.
    last_index: u64,
}

/// One round of `Status` queries to every peer of `topology`; the answers of those that replied
/// within [`ADMISSION_QUERY_TIMEOUT`], with their addresses.
async fn peer_statuses(
    topology: &Topology,
    tls: Option<&Arc<NodeTls>>,
) -> Vec<(String, crate::raft_proto::StatusResponse)> {
    use crate::raft_proto::StatusRequest;
    use crate::replica::transport::PeerLink;
    let cluster = topology.cluster_name();
    let mut answers = Vec::new();
    for (&id, addr) in &topology.addresses {
        if id == topology.id {
            continue;
        }
        let link = PeerLink {
            peer: id,
            addr: addr.clone(),
            security: tls.and_then(|tls| tls.peer_channel(topology.name(id))),
            identity: format!("member:{}", topology.name(topology.id)),
        };
        let Some(mut client) = link.client() else {
            continue;
        };
        let query = client.status(link.request(
            StatusRequest {
                cluster: cluster.clone(),
            },
            ADMISSION_QUERY_TIMEOUT,
        ));
        if let Ok(Ok(status)) = crate::runtime::timeout(ADMISSION_QUERY_TIMEOUT, query).await {
            answers.push((addr.clone(), status.into_inner()));
        }
    }
    answers
}

/// Asks every peer for its Raft status; `None` when no peer has any state (a cluster being
/// bootstrapped) or none answered.
async fn peer_state(config: &Config, tls: Option<&Arc<NodeTls>>) -> Option<ClusterState> {
    let topology = replica_config(config).topology;
    let mut best: Option<ClusterState> = None;
    for attempt in 0..ADMISSION_ATTEMPTS {
        for (addr, status) in peer_statuses(&topology, tls).await {
            let is_leader = status.leader_id == status.node_id && status.node_id != 0;
            let better = match &best {
                None => true,
                Some(known) => status.term > known.term || is_leader,
            };
            if status.term > 0 && better {
                best = Some(ClusterState {
                    term: status.term,
                    peer: addr,
                    last_index: status.last_index,
                });
            }
        }
        if best.is_some() {
            return best;
        }
        if attempt + 1 < ADMISSION_ATTEMPTS {
            crate::runtime::sleep(ADMISSION_QUERY_TIMEOUT).await;
        }
    }
    None
}

/// While this node abstains from votes (it must catch up with a leader) and knows no leader,
/// asks its peers every election timeout whether they abstain too. When a majority of the voters
/// abstains, nobody can be caught up from (they lost power together): the node votes again, so
/// the cluster elects a leader instead of waiting forever.
async fn watch_abstention(
    replica: Replica,
    election_timeout: std::time::Duration,
    tls: Option<Arc<NodeTls>>,
) {
    let topology = replica.topology().clone();
    let quorum = topology.addresses.len() / 2 + 1;
    loop {
        replica.clock().sleep(election_timeout).await;
        let status = replica.status();
        if !status.abstaining {
            return;
        }
        if status.leader_id.is_some() {
            continue;
        }
        let peers = peer_statuses(&topology, tls.as_ref()).await;
        let abstaining = 1 + peers.iter().filter(|(_, s)| s.abstaining).count();
        let leader_known = peers.iter().any(|(_, s)| s.leader_id != 0);
        if abstaining >= quorum && !leader_known {
            let _ = replica.stop_abstaining();
            return;
        }
    }
}

/// Replica settings derived from the node configuration.
pub fn replica_config(config: &Config) -> ReplicaConfig {
    let addresses: BTreeMap<u64, String> = config
        .cluster_nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (index as u64 + 1, node.addr.clone()))
        .collect();
    let names: BTreeMap<u64, String> = config
        .cluster_nodes
        .iter()
        .enumerate()
        .map(|(index, node)| (index as u64 + 1, node.name.clone()))
        .collect();
    ReplicaConfig {
        topology: Topology {
            id: config.node_index as u64 + 1,
            addresses,
            names,
        },
        raft: hyperion_raft::Config {
            mutations: config.faults.raft.clone(),
            ..config.raft.core_config()
        },
        faults: config.faults.clone(),
        sync_policy: config.wal_sync,
        store: config.store_config(),
        enable_batching: config.flags.enable_batching,
        stagger_ttl: config.stagger_ttl,
        client_caching: config.flags.enable_client_caching,
        stale_grace_ms: config.stale_grace_ms,
        watch: crate::watch::WatchLimits {
            tracking_max_keys: usize::try_from(config.tracking_max_keys).unwrap_or(usize::MAX),
            queue_max_events: usize::try_from(config.watch_queue_events).unwrap_or(usize::MAX),
            history_max_events: usize::try_from(config.watch_history_events).unwrap_or(usize::MAX),
            ..crate::watch::WatchLimits::default()
        },
        record: None,
        negative_cache_ms: config.database.negative_cache_ms,
        backlog_bytes_max: config.database.backlog_mb * 1024 * 1024,
        tls: None,
        timers: Default::default(),
        disk_reserve_bytes: usize::try_from(config.disk_reserve_mb << 20).unwrap_or(usize::MAX),
    }
}

/// A bound, not yet serving, node.
pub struct Server {
    replica: Replica,
    listener: GrpcListener,
    /// The admin HTTP port (`HYPERION_ADMIN_ADDR`), and what it serves.
    admin: Option<(HttpListener, Arc<Admin>)>,
    metrics: Arc<Metrics>,
    max_value_bytes: usize,
    rate_limits: RateLimits,
    authority: Arc<Authority>,
    /// Shadow traffic (`HYPERION_SHADOW_ADDR`), if configured.
    mirror: Option<Arc<dyn crate::mirror::Mirror>>,
}

impl Server {
    /// Production startup: claims the data directory and recovers the Raft state from it.
    pub async fn bind(config: &Config, clock: NodeClock) -> Result<Server, StartError> {
        prepare_data_dir(&config.data_dir, &config.node_id)?;
        let raft_dir = config.data_dir.join(RAFT_DIR);
        let disk = FileDisk::open(&raft_dir).map_err(|e| StartError::DataDir {
            path: raft_dir.display().to_string(),
            problem: e.to_string(),
        })?;
        let record = connect_database(config).await?;
        Server::start(config, clock, Box::new(disk), record).await
    }

    /// Startup on a given disk without a system of record (the simulator's cache-only nodes).
    pub async fn bind_with_disk(
        config: &Config,
        clock: NodeClock,
        disk: Box<dyn Disk + Send>,
    ) -> Result<Server, StartError> {
        Server::start(config, clock, disk, None).await
    }

    /// Startup on a given disk (the simulator's crashable disk). Validates the configuration
    /// against this build, recovers the replica and binds the gRPC address (port 0 picks a free
    /// port; see [`Server::local_addr`]).
    ///
    /// A node whose data directory is empty while its peers already have state (lost data, or a
    /// node started late) refuses to start unless `join_existing_cluster` is set; then it
    /// abstains from votes until it has caught up.
    pub async fn start(
        config: &Config,
        clock: NodeClock,
        disk: Box<dyn Disk + Send>,
        record: Option<SystemOfRecord>,
    ) -> Result<Server, StartError> {
        Server::start_with(config, clock, disk, record, FatalHandler::exit_process()).await
    }

    /// [`Server::start`], with what the node does when it cannot go on (the simulator records
    /// the exit before the node is restarted).
    pub async fn start_with(
        config: &Config,
        clock: NodeClock,
        mut disk: Box<dyn Disk + Send>,
        record: Option<SystemOfRecord>,
        fatal: FatalHandler,
    ) -> Result<Server, StartError> {
        let report = hyperion_raft::storage::recover_report(&mut *disk)?;
        // Lost: no Raft state was ever written here (a new or replaced disk). A node whose WAL
        // exists but never learned a term (it stopped right after its first start) cannot have
        // voted or acknowledged anything, so it rejoins as it is.
        let fresh = if config.faults.admission_by_term {
            report.recovered.hard_state.term == 0
                && report.recovered.snapshot.is_none()
                && report.recovered.entries.is_empty()
        } else {
            report.wal_total_bytes == 0 && report.recovered.snapshot.is_none()
        };
        let NodeSecurity {
            tls,
            authority,
            watched,
        } = node_security(config, &clock).await?;
        let mut abstain_until = None;
        if fresh && config.cluster_nodes.len() > 1 {
            if let Some(state) = peer_state(config, tls.as_ref()).await {
                if !config.join_existing_cluster {
                    return Err(StartError::DataLost {
                        path: config.data_dir.display().to_string(),
                        peer: state.peer,
                        term: state.term,
                    });
                }
                tracing::warn!(
                    term = state.term,
                    catch_up_to = state.last_index,
                    "joining an existing cluster with an empty log; not voting until caught up"
                );
                abstain_until = Some(state.last_index);
            }
        }
        let listener = match &tls {
            Some(tls) => GrpcListener::bind_secure(
                config.listen_addr,
                tls.listener(),
                ConnectionLimits {
                    connections_max: CONNECTIONS_MAX,
                    handshake_timeout: config
                        .security
                        .handshake_timeout_ms
                        .map_or(TLS_HANDSHAKE_TIMEOUT, std::time::Duration::from_millis),
                    idle_timeout: config
                        .security
                        .idle_timeout_ms
                        .map_or(CONNECTION_IDLE_TIMEOUT, std::time::Duration::from_millis),
                },
            )?,
            None => GrpcListener::bind(config.listen_addr)?,
        };
        let metrics = Arc::new(Metrics::new(config.ops.metrics));
        let mut replica_config = replica_config(config);
        replica_config.timers = metrics.raft_timers();
        if let Some(record) = &record {
            record.time_queries(metrics.query_timers());
        }
        replica_config.record = record;
        replica_config.tls = tls.clone();
        let replica = replica::start(replica_config, clock, disk, abstain_until, fatal)?;
        if config.cluster_nodes.len() > 1 {
            crate::runtime::spawn(watch_abstention(
                replica.clone(),
                std::time::Duration::from_millis(config.raft.election_timeout_ms),
                tls.clone(),
            ));
        }
        if config.dev_mode {
            tracing::warn!(
                "DEVELOPMENT MODE: a built-in integrity key unless HYPERION_HMAC_KEY_FILE is set, \
                 and plaintext gRPC on loopback unless TLS is configured; not for production"
            );
        }
        if tls.is_none() && !crate::runtime::NETWORK_IS_SIMULATED {
            tracing::warn!(
                "PLAINTEXT: no TLS configured (HYPERION_TLS_CERT_FILE); serving on loopback only"
            );
        }
        let mirror = start_shadow(config)?;
        if mirror.is_none() && config.flags.shadow_traffic_percent > 0 {
            tracing::warn!(
                percent = config.flags.shadow_traffic_percent,
                "shadow_traffic_percent is set but HYPERION_SHADOW_ADDR is not; nothing is mirrored"
            );
        }
        if let Some(endpoint) = &config.otlp_endpoint {
            tracing::info!(%endpoint, "exporting traces over OTLP/gRPC");
        }
        let keys = config
            .security
            .admin_key_names
            .iter()
            .zip(&config.security.admin_api_keys)
            .map(|(name, key)| AdminKey {
                name: name.clone(),
                key: key.clone(),
            })
            .collect();
        let mut admin_handlers = Admin::new(
            replica.clone(),
            Arc::clone(&metrics),
            keys,
            RateLimiter::new(config.ops.rate_limits),
            config.ops.flags_file.clone(),
            config.flags.clone(),
        );
        if let Some(mirror) = &mirror {
            admin_handlers = admin_handlers.with_mirror(Arc::clone(mirror));
        }
        let admin_handlers = Arc::new(admin_handlers);
        let mut watched = watched;
        if let Some(flags_file) = &config.ops.flags_file {
            // The feature flags reload on SIGHUP and on file change as on the admin endpoint
            // (with or without an admin port): an invalid file keeps the old flags.
            let admin = Arc::clone(&admin_handlers);
            watched.push(crate::reload::Watched {
                name: "HYPERION_FEATURE_FLAGS",
                files: vec![flags_file.clone()],
                reload: Box::new(move || {
                    let admin = Arc::clone(&admin);
                    Box::pin(async move {
                        let answer = admin.reload_flags();
                        match answer.status {
                            200 => Ok(()),
                            _ => Err(String::from_utf8_lossy(&answer.body).trim().to_string()),
                        }
                    })
                }),
            });
        }
        crate::runtime::spawn(crate::reload::watch(
            watched,
            crate::reload::FILE_POLL_INTERVAL,
        ));
        let admin = match config.ops.admin_addr {
            None => None,
            Some(addr) => {
                let listener =
                    HttpListener::bind(addr, tls.as_ref().map(|tls| tls.listener().tls))?;
                Some((listener, admin_handlers))
            }
        };
        Ok(Server {
            replica,
            listener,
            admin,
            metrics,
            max_value_bytes: config.flags.max_value_bytes(),
            rate_limits: config.ops.rate_limits,
            authority,
            mirror,
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

    /// The admin port's address, if it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(|(listener, _)| listener.local_addr())
    }

    /// The admin handlers (simulation tests call them directly).
    pub fn admin(&self) -> Option<Arc<Admin>> {
        self.admin.as_ref().map(|(_, admin)| Arc::clone(admin))
    }

    /// The replica, for in-process inspection (status, stats, tests).
    pub fn replica(&self) -> Replica {
        self.replica.clone()
    }

    /// Serves until `shutdown` resolves; in-flight requests finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        use crate::health_proto::health_server::HealthServer;
        use crate::proto::cache_service_server::CacheServiceServer;
        use crate::raft_proto::node_admin_server::NodeAdminServer;
        use crate::raft_proto::raft_service_server::RaftServiceServer;
        /// A status request is a cluster name.
        const NODE_ADMIN_MESSAGE_BYTES_MAX: usize = 4096;
        use crate::replica::transport::PEER_MESSAGE_BYTES_MAX;

        use futures::FutureExt;
        let shutdown = shutdown.boxed().shared();
        if let Some((listener, admin)) = self.admin {
            let handler: HttpHandler = Arc::new(move |request| {
                let admin = Arc::clone(&admin);
                Box::pin(async move { admin.handle(request).await })
            });
            tracing::info!(
                addr = %listener.local_addr(),
                tls = listener.is_tls(),
                "serving the admin port (/metrics, /health, /ready, /admin/*)"
            );
            crate::runtime::spawn(listener.serve(handler, shutdown.clone()));
        }
        let limiter = Arc::new(RateLimiter::new(self.rate_limits));
        let mut api = CacheApi::new(self.replica.clone(), limiter, Arc::clone(&self.authority))
            .with_metrics(Arc::clone(&self.metrics))
            .with_shutdown(shutdown.clone());
        let replica = self.replica.clone();
        let health = crate::health::HealthApi::new(self.replica.clone(), shutdown.clone());
        let mut raft = RaftApi::new(self.replica, Arc::clone(&self.authority));
        if let Some(mirror) = &self.mirror {
            api = api.with_mirror(Arc::clone(mirror));
            raft = raft.with_mirror(Arc::clone(mirror));
        }
        let client_message_bytes = CacheApi::max_message_bytes(self.max_value_bytes);
        // HTTP/2 bounds (the simulator's transport ignores them; README "Limits").
        let router = tonic::transport::Server::builder()
            .http2_max_header_list_size(HEADER_LIST_BYTES_MAX)
            .max_concurrent_streams(STREAMS_PER_CONNECTION_MAX)
            .max_frame_size(FRAME_BYTES_MAX)
            .http2_max_pending_accept_reset_streams(Some(PENDING_RESETS_MAX))
            .timeout(REQUEST_TIMEOUT_MAX)
            .layer(crate::auth::gate::Gate::new(Arc::clone(&self.authority)))
            .add_service(
                NodeAdminServer::new(raft.clone())
                    .max_decoding_message_size(NODE_ADMIN_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
            )
            .add_service(
                CacheServiceServer::new(api)
                    .max_decoding_message_size(client_message_bytes)
                    .max_encoding_message_size(client_message_bytes),
            )
            .add_service(
                RaftServiceServer::new(raft)
                    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
            )
            .add_service(
                HealthServer::new(health)
                    .max_decoding_message_size(crate::health::HEALTH_MESSAGE_BYTES_MAX),
            );
        // Reflection (production build only) lists every service of `proto/`.
        let router = crate::runtime::with_reflection(router, crate::FILE_DESCRIPTOR_SET)
            .map_err(|problem| ServeError::Reflection { problem })?;
        tracing::info!(addr = %self.listener.local_addr(), "serving CacheService, RaftService and Health");
        let served = self.listener.serve(router, shutdown).await;
        // Requests are done: sync, leave the clean-shutdown marker, stop the node loop.
        replica.stop().await;
        tracing::info!("stopped");
        Ok(served?)
    }
}

/// Starts mirroring to the shadow cluster of `HYPERION_SHADOW_ADDR`, if set: TLS with
/// `HYPERION_SHADOW_CA_FILE`, this node's certificate as its client certificate.
fn start_shadow(config: &Config) -> Result<Option<Arc<dyn crate::mirror::Mirror>>, StartError> {
    let Some(addrs) = &config.shadow_addr else {
        return Ok(None);
    };
    let fail = |problem: String| {
        StartError::Security(crate::security::SecurityError {
            variable: "HYPERION_SHADOW_ADDR".to_string(),
            problem,
        })
    };
    let tls = match &config.shadow_ca_pem {
        None => None,
        Some(ca_pem) => {
            let identity = config
                .security
                .tls_identity
                .as_ref()
                .map(|identity| (&identity.cert_pem, &identity.key_pem));
            Some(crate::tls::client_config(ca_pem, identity).map_err(|e| fail(e.to_string()))?)
        }
    };
    let security = crate::client::ClientSecurity {
        tls,
        ..crate::client::ClientSecurity::default()
    };
    let percent = config.flags.shadow_traffic_percent;
    let shadow =
        crate::shadow::Shadow::start(addrs, security, percent).map_err(|e| fail(e.to_string()))?;
    tracing::info!(%addrs, percent, "mirroring shadow traffic");
    Ok(Some(shadow))
}

/// Connects to the system of record named by `COCKROACH_DSN`, if any, and warms the pool up
/// before the node serves (the 2025-01-08 lesson). Unreachable at start: a clear error, or with
/// `HYPERION_DB_START_MODE=degraded` a node that serves cache-only and keeps trying.
pub async fn connect_database(config: &Config) -> Result<Option<SystemOfRecord>, StartError> {
    use crate::db::{DbClient, DbStartMode, PgDatabase};
    let Some(dsn) = &config.database_dsn else {
        return Ok(None);
    };
    let database = PgDatabase::new(&config.database.pg_settings(dsn))?;
    let mut client_config = config.database.client_config();
    if config.faults.join_stale_loads {
        client_config.join_rule = crate::single_flight::JoinRule::AnyFlight;
    }
    match DbClient::connect_and_warm(
        database.clone(),
        client_config.clone(),
        crate::runtime::seeded_rng(),
    )
    .await
    {
        Ok(client) => {
            tracing::info!("system of record reachable; pool warmed up");
            Ok(Some(SystemOfRecord::Postgres(client)))
        }
        Err(error) if config.database.start_mode == DbStartMode::Degraded => {
            tracing::error!(
                %error,
                "system of record unreachable at start; serving degraded (misses are not read \
                 through, writes wait for it) and retrying"
            );
            let client = DbClient::new(database, client_config, crate::runtime::seeded_rng());
            let warming = client.clone();
            crate::runtime::spawn(async move {
                while let Err(error) = warming.warm_up().await {
                    tracing::warn!(%error, "system of record still unreachable");
                    crate::runtime::sleep(std::time::Duration::from_secs(1)).await;
                }
                tracing::info!("system of record reachable again");
            });
            Ok(Some(SystemOfRecord::Postgres(client)))
        }
        Err(error) => Err(StartError::Database(error)),
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

    #[test]
    fn replica_ids_follow_the_member_list() {
        let mut config = Config::development();
        config.cluster_nodes = ["a", "b", "c"]
            .iter()
            .enumerate()
            .map(|(i, name)| crate::config::ClusterNode {
                name: name.to_string(),
                addr: format!("127.0.0.1:{}", 7001 + i),
            })
            .collect();
        config.node_index = 1;
        let replica = replica_config(&config);
        assert_eq!(replica.topology.id, 2);
        assert_eq!(replica.topology.voters(), vec![1, 2, 3]);
        assert_eq!(replica.topology.addresses[&3], "127.0.0.1:7003");
    }
}
