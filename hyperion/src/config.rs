//! Node configuration: the product's environment variables, the feature-flag file, and the secrets
//! loaded from files.
//!
//! Configuration is parsed once by the binary and then passed explicitly to every component, so a
//! simulation can run several nodes with different configurations in one process (no
//! process-wide singleton reaches code that runs in simulation).
//!
//! Every problem is reported as one [`ConfigError`] naming the variable (or file) and the problem;
//! the binary prints it and exits non-zero.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hyperion_store::{EvictionPolicy, IntegrityKey, StoreConfig};
use serde::Deserialize;
use zeroize::Zeroizing;

/// The gRPC address of the embedded default node.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:7000";
/// The data directory of the embedded default node, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "hyperion-data";
/// Default cache memory budget (the product's `HYPERION_CACHE_SIZE_MB`), from the store.
pub use hyperion_store::DEFAULT_CACHE_SIZE_MB;
/// Largest accepted cache budget: 1 TiB. Larger values are typos, not machines.
pub const CACHE_SIZE_MB_MAX: u64 = 1 << 20;
/// Raft timing defaults, from the Raft crate.
pub use hyperion_raft::{DEFAULT_HEARTBEAT_MS, DEFAULT_LEASE_MS, ELECTION_TIMEOUT_HEARTBEATS};
/// Default number of entries evicted per batch, and the largest batch (bounds the pause one
/// eviction round can cause), from the store.
pub use hyperion_store::{DEFAULT_EVICTION_BATCH_SIZE, EVICTION_BATCH_SIZE_MAX};
/// Default time an expired entry remains readable with `allow_stale`.
pub const DEFAULT_STALE_GRACE_MS: u64 = 5_000;
/// Longest stale grace: an hour. Expired entries hold memory until then.
pub const STALE_GRACE_MS_MAX: u64 = 3_600_000;
/// Smallest HMAC key accepted from a key file: the store's integrity-key minimum (the SHA-256
/// block security level).
pub const HMAC_KEY_BYTES_MIN: usize = hyperion_store::INTEGRITY_KEY_MIN_BYTES;
/// Largest HMAC key file read (HMAC hashes longer keys anyway; this bounds the read).
pub const HMAC_KEY_BYTES_MAX: usize = 4096;
/// Largest feature-flag file read.
const FLAGS_FILE_BYTES_MAX: u64 = 1 << 20;
/// Upper bound for timing settings: one minute. Longer heartbeats make a cluster useless.
const TIMING_MS_MAX: u64 = 60_000;

/// The development-mode integrity key. Never used unless the node runs in development mode, which
/// the server logs loudly at start.
const DEVELOPMENT_HMAC_KEY: &[u8] = b"hyperion-development-mode-hmac-key-not-a-secret";

/// One configuration problem, naming where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable, file or flag at fault.
    pub variable: String,
    /// What is wrong with it, and what would be accepted.
    pub problem: String,
}

impl ConfigError {
    fn new(variable: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}

/// Raft timing, in node-clock milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub lease_duration_ms: u64,
    /// Applied entries kept in the log before a snapshot compacts them
    /// (`HYPERION_RAFT_SNAPSHOT_ENTRIES`).
    pub snapshot_entries: u64,
}

/// Default log length between snapshots, from the Raft crate.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = hyperion_raft::DEFAULT_COMPACTION_THRESHOLD_ENTRIES;
/// Bounds of `HYPERION_RAFT_SNAPSHOT_ENTRIES`: snapshots copy the whole cache, so not too often;
/// the log is kept in memory until compacted, so not too rarely.
pub const SNAPSHOT_ENTRIES_MIN: u64 = 10;
pub const SNAPSHOT_ENTRIES_MAX: u64 = 10_000_000;

/// Raft's clock granularity: how often the node loop ticks the core. Bounded by the heartbeat.
pub const RAFT_TICK_MS_MAX: u64 = hyperion_raft::TICK_INTERVAL_MS_MAX;

impl RaftTiming {
    /// The Raft core's configuration for these timings (other tunables at their defaults).
    pub fn core_config(&self) -> hyperion_raft::Config {
        hyperion_raft::Config {
            tick_interval_ms: RAFT_TICK_MS_MAX.min(self.heartbeat_ms),
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_ms: self.election_timeout_ms,
            lease_duration_ms: self.lease_duration_ms,
            compaction_threshold_entries: self.snapshot_entries,
            ..hyperion_raft::Config::default()
        }
    }
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: hyperion_raft::DEFAULT_ELECTION_TIMEOUT_MS,
            lease_duration_ms: DEFAULT_LEASE_MS,
            snapshot_entries: DEFAULT_SNAPSHOT_ENTRIES,
        }
    }
}

/// The product's feature flags (`feature_flags.json`). Absent keys take these defaults; unknown
/// keys are an error, so a typo cannot silently leave a flag at its default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureFlags {
    /// LZ4 for values larger than 1 KiB.
    pub enable_compression: bool,
    /// Group concurrent writes into one Raft proposal.
    pub enable_batching: bool,
    /// LRU-K (K = 2) instead of LRU eviction.
    pub new_eviction_algorithm: bool,
    /// Percent of traffic mirrored to a shadow cluster (0–100). No shadow target is configurable
    /// yet, so a non-zero value is accepted, logged, and has no effect.
    pub shadow_traffic_percent: u8,
    /// Send client-side TTL hints (`GetResponse.ttl_remaining_ms`).
    pub enable_client_caching: bool,
    /// Writes with larger values are rejected (1–65536 KiB).
    pub max_value_size_kb: u32,
}

impl Default for FeatureFlags {
    fn default() -> Self {
        FeatureFlags {
            enable_compression: true,
            enable_batching: true,
            new_eviction_algorithm: false,
            shadow_traffic_percent: 0,
            enable_client_caching: true,
            max_value_size_kb: crate::limits::DEFAULT_MAX_VALUE_SIZE_KB,
        }
    }
}

/// Bounds of `max_value_size_kb`: at least 1 KiB, at most the store's ceiling (64 MiB; a gRPC
/// message must hold it).
pub const MAX_VALUE_SIZE_KB_MAX: u32 = (hyperion_store::MAX_VALUE_BYTES_CEILING / 1024) as u32;

impl FeatureFlags {
    /// Parses a flag file's JSON text; `origin` names the file in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<FeatureFlags, ConfigError> {
        let flags: FeatureFlags = serde_json::from_str(text)
            .map_err(|e| ConfigError::new(origin, format!("invalid feature flags: {e}")))?;
        if flags.shadow_traffic_percent > 100 {
            return Err(ConfigError::new(
                origin,
                format!(
                    "shadow_traffic_percent must be 0-100, got {}",
                    flags.shadow_traffic_percent
                ),
            ));
        }
        if !(1..=MAX_VALUE_SIZE_KB_MAX).contains(&flags.max_value_size_kb) {
            return Err(ConfigError::new(
                origin,
                format!(
                    "max_value_size_kb must be 1-{MAX_VALUE_SIZE_KB_MAX}, got {}",
                    flags.max_value_size_kb
                ),
            ));
        }
        Ok(flags)
    }

    /// The value size limit in bytes.
    pub fn max_value_bytes(&self) -> usize {
        self.max_value_size_kb as usize * 1024
    }
}

/// Where the integrity (HMAC) key came from.
#[derive(Debug, Clone, PartialEq)]
pub enum HmacKeySource {
    /// Read from `HYPERION_HMAC_KEY_FILE`.
    File(PathBuf),
    /// The built-in development key (development mode only).
    Development,
}

/// One voter of the cluster: its name (matched against `HYPERION_NODE_ID`) and the address
/// peers and clients dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub name: String,
    pub addr: String,
}

/// When the Raft log's entry data is synced to disk (`HYPERION_WAL_SYNC`; term and vote are
/// always synced first): the storage's own policy type.
pub use hyperion_raft::storage::SyncPolicy;

pub use crate::faults::FaultInjection;
pub use crate::secret::Secret;

/// A node's whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This node's name in `cluster_nodes` (`HYPERION_NODE_ID`).
    pub node_id: String,
    /// gRPC listen address (`HYPERION_LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// Local data directory (`HYPERION_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Every voter, in Raft-id order (id = position + 1) (`HYPERION_CLUSTER_NODES`); one entry
    /// for a single node.
    pub cluster_nodes: Vec<ClusterNode>,
    /// This node's position in `cluster_nodes`.
    pub node_index: usize,
    /// `HYPERION_REPLICATION_FACTOR`; must equal the number of voters.
    pub replication_factor: usize,
    /// The system-of-record database URL (`COCKROACH_DSN`); `None` runs cache-only.
    pub database_dsn: Option<Secret>,
    /// Cache memory budget in MiB (`HYPERION_CACHE_SIZE_MB`).
    pub cache_size_mb: u64,
    /// Entries evicted per batch (`HYPERION_EVICTION_BATCH_SIZE`).
    pub eviction_batch_size: usize,
    /// Raft timing (`HYPERION_RAFT_HEARTBEAT_MS`, `HYPERION_RAFT_ELECTION_TIMEOUT_MS`,
    /// `HYPERION_RAFT_LEASE_MS`).
    pub raft: RaftTiming,
    /// `HYPERION_WAL_SYNC`: `everysec` (default) or `always`.
    pub wal_sync: SyncPolicy,
    /// `LOG_LEVEL`: a tracing filter directive such as `info` or `hyperion=debug,warn`.
    pub log_level: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, if set.
    pub otlp_endpoint: Option<String>,
    /// Feature flags (`HYPERION_FEATURE_FLAGS` file, or defaults).
    pub flags: FeatureFlags,
    /// The HMAC key for entry integrity.
    pub hmac_key: Secret,
    /// Where `hmac_key` came from.
    pub hmac_key_source: HmacKeySource,
    /// Development mode: plaintext on loopback, built-in integrity key (`HYPERION_DEV_MODE`).
    pub dev_mode: bool,
    /// Stagger TTLs by up to +10 % (`HYPERION_TTL_STAGGER`; the 2024-10-15 fix).
    pub stagger_ttl: bool,
    /// How long an expired entry stays available to `allow_stale` reads before the reaper frees
    /// it (`HYPERION_STALE_GRACE_MS`).
    pub stale_grace_ms: u64,
    /// The system-of-record client (`HYPERION_DB_*`; used when `COCKROACH_DSN` is set).
    pub database: DatabaseConfig,
    /// `HYPERION_JOIN_EXISTING_CLUSTER`: allow a node with an empty data directory to join a
    /// cluster that already has state (a replaced disk, or a node first started late). It then
    /// abstains from votes until it has caught up with the leader.
    pub join_existing_cluster: bool,
    /// Simulator-only fault injection; see [`FaultInjection`].
    #[doc(hidden)]
    pub faults: FaultInjection,
}

impl Config {
    /// The embedded default: one node on 127.0.0.1:7000, local data dir, no database, development
    /// mode. Equivalent to `Config::from_env(&BTreeMap::new())`.
    pub fn development() -> Config {
        Config::from_env(&BTreeMap::new()).expect("the empty environment is a valid configuration")
    }

    /// Reads the process environment. Only the `HYPERION_*`, `COCKROACH_DSN`, `LOG_LEVEL` and
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` variables are looked at.
    pub fn from_process_env() -> Result<Config, ConfigError> {
        let mut env = BTreeMap::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().map(str::to_owned) else {
                continue;
            };
            if !is_config_variable(&name) {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| ConfigError::new(&name, "value is not valid UTF-8".to_string()))?;
            env.insert(name, value);
        }
        Config::from_env(&env)
    }

    /// Builds a configuration from variables (name → value). Empty values count as unset.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let vars = Vars(env);
        let listen_addr: SocketAddr = vars
            .parse("HYPERION_LISTEN_ADDR", "an address like 127.0.0.1:7000")?
            .unwrap_or_else(|| {
                DEFAULT_LISTEN_ADDR
                    .parse()
                    .expect("the default listen address parses")
            });
        let node_id = vars.get("HYPERION_NODE_ID").unwrap_or("node1").to_string();
        if !node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || node_id.len() > 64
        {
            return Err(ConfigError::new(
                "HYPERION_NODE_ID",
                format!("`{node_id}` must be 1-64 characters of [A-Za-z0-9._-]"),
            ));
        }
        let data_dir = vars
            .get("HYPERION_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));

        let cluster_nodes = match vars.get("HYPERION_CLUSTER_NODES") {
            None => vec![ClusterNode {
                name: node_id.clone(),
                addr: listen_addr.to_string(),
            }],
            Some(list) => parse_cluster_nodes(list)?,
        };
        let node_index = match cluster_nodes.iter().position(|n| n.name == node_id) {
            Some(index) => index,
            None if cluster_nodes.len() == 1 && vars.get("HYPERION_NODE_ID").is_none() => 0,
            None => {
                let names: Vec<&str> = cluster_nodes.iter().map(|n| n.name.as_str()).collect();
                return Err(ConfigError::new(
                    "HYPERION_NODE_ID",
                    format!(
                        "`{node_id}` is not in HYPERION_CLUSTER_NODES (names: {})",
                        names.join(", ")
                    ),
                ));
            }
        };
        let node_id = cluster_nodes[node_index].name.clone();
        let replication_factor = vars
            .positive("HYPERION_REPLICATION_FACTOR", 1, CLUSTER_NODES_MAX as u64)?
            .map(|n| n as usize)
            .unwrap_or(cluster_nodes.len());
        if replication_factor != cluster_nodes.len() {
            return Err(ConfigError::new(
                "HYPERION_REPLICATION_FACTOR",
                format!(
                    "must equal the number of voters in HYPERION_CLUSTER_NODES ({}), got {replication_factor}",
                    cluster_nodes.len()
                ),
            ));
        }

        let database_dsn = vars.get("COCKROACH_DSN").map(|dsn| dsn.to_string());
        if let Some(dsn) = &database_dsn {
            if !(dsn.starts_with("postgresql://") || dsn.starts_with("postgres://")) {
                return Err(ConfigError::new(
                    "COCKROACH_DSN",
                    "must be a postgresql:// URL".to_string(),
                ));
            }
        }

        let cache_size_mb = vars
            .positive("HYPERION_CACHE_SIZE_MB", 1, CACHE_SIZE_MB_MAX)?
            .unwrap_or(DEFAULT_CACHE_SIZE_MB);
        let eviction_batch_size = vars
            .positive(
                "HYPERION_EVICTION_BATCH_SIZE",
                1,
                EVICTION_BATCH_SIZE_MAX as u64,
            )?
            .map(|n| n as usize)
            .unwrap_or(DEFAULT_EVICTION_BATCH_SIZE);

        let heartbeat_ms = vars
            .positive("HYPERION_RAFT_HEARTBEAT_MS", 1, TIMING_MS_MAX)?
            .unwrap_or(DEFAULT_HEARTBEAT_MS);
        let election_timeout_ms = vars
            .positive("HYPERION_RAFT_ELECTION_TIMEOUT_MS", 1, TIMING_MS_MAX)?
            .unwrap_or_else(|| hyperion_raft::default_election_timeout_ms(heartbeat_ms));
        if election_timeout_ms < 2 * heartbeat_ms {
            return Err(ConfigError::new(
                "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
                format!(
                    "{election_timeout_ms} ms is less than 2x the heartbeat ({heartbeat_ms} ms); \
                     the product default is 10x"
                ),
            ));
        }
        let lease_duration_ms = vars
            .positive("HYPERION_RAFT_LEASE_MS", 1, TIMING_MS_MAX)?
            .unwrap_or_else(|| hyperion_raft::default_lease_ms(election_timeout_ms));
        if lease_duration_ms >= election_timeout_ms {
            return Err(ConfigError::new(
                "HYPERION_RAFT_LEASE_MS",
                format!(
                    "{lease_duration_ms} ms must be below the election timeout \
                     ({election_timeout_ms} ms), or two leaders could both hold a lease"
                ),
            ));
        }

        let snapshot_entries = vars
            .positive(
                "HYPERION_RAFT_SNAPSHOT_ENTRIES",
                SNAPSHOT_ENTRIES_MIN,
                SNAPSHOT_ENTRIES_MAX,
            )?
            .unwrap_or(DEFAULT_SNAPSHOT_ENTRIES);
        let raft = RaftTiming {
            heartbeat_ms,
            election_timeout_ms,
            lease_duration_ms,
            snapshot_entries,
        };
        if let Err(error) = raft.core_config().validate() {
            let variable = match error.field {
                "heartbeat_ms" | "tick_interval_ms" => "HYPERION_RAFT_HEARTBEAT_MS",
                "election_timeout_ms" => "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
                _ => "HYPERION_RAFT_LEASE_MS",
            };
            return Err(ConfigError::new(variable, error.reason));
        }
        let wal_sync = match vars
            .get("HYPERION_WAL_SYNC")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("everysec") => SyncPolicy::EverySec,
            Some("always") => SyncPolicy::Always,
            Some(other) => {
                return Err(ConfigError::new(
                    "HYPERION_WAL_SYNC",
                    format!("expected everysec or always, got `{other}`"),
                ))
            }
        };

        let log_level = vars.get("LOG_LEVEL").unwrap_or("info").to_string();
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            return Err(ConfigError::new(
                "LOG_LEVEL",
                format!(
                    "`{log_level}` is not a valid filter (e.g. info, debug, hyperion=debug): {e}"
                ),
            ));
        }
        let otlp_endpoint = vars.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(str::to_string);
        if let Some(endpoint) = &otlp_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(ConfigError::new(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("`{endpoint}` must be an http:// or https:// URL"),
                ));
            }
        }

        let flags = match vars.get("HYPERION_FEATURE_FLAGS") {
            None => FeatureFlags::default(),
            Some(path) => load_flags(Path::new(path))?,
        };

        let hmac_key_file = vars.get("HYPERION_HMAC_KEY_FILE").map(PathBuf::from);
        let dev_mode = vars
            .boolean("HYPERION_DEV_MODE")?
            .unwrap_or(hmac_key_file.is_none());
        let (hmac_key, hmac_key_source) = match hmac_key_file {
            Some(path) => (load_hmac_key(&path)?, HmacKeySource::File(path)),
            None if dev_mode => (
                Secret::new(DEVELOPMENT_HMAC_KEY.to_vec()),
                HmacKeySource::Development,
            ),
            None => {
                return Err(ConfigError::new(
                    "HYPERION_HMAC_KEY_FILE",
                    "is required outside development mode (HYPERION_DEV_MODE=false)".to_string(),
                ))
            }
        };
        let stagger_ttl = vars.boolean("HYPERION_TTL_STAGGER")?.unwrap_or(false);
        let join_existing_cluster = vars
            .boolean("HYPERION_JOIN_EXISTING_CLUSTER")?
            .unwrap_or(false);
        let stale_grace_ms = match vars.get("HYPERION_STALE_GRACE_MS") {
            Some("0") => 0,
            _ => vars
                .positive("HYPERION_STALE_GRACE_MS", 1, STALE_GRACE_MS_MAX)?
                .unwrap_or(DEFAULT_STALE_GRACE_MS),
        };

        let database = DatabaseConfig::from_vars(&vars)?;

        let config = Config {
            node_id,
            listen_addr,
            data_dir,
            cluster_nodes,
            node_index,
            replication_factor,
            database_dsn: database_dsn.map(|dsn| Secret::new(dsn.into_bytes())),
            cache_size_mb,
            eviction_batch_size,
            raft,
            wal_sync,
            log_level,
            otlp_endpoint,
            flags,
            hmac_key,
            hmac_key_source,
            dev_mode,
            stagger_ttl,
            stale_grace_ms,
            database,
            join_existing_cluster,
            faults: FaultInjection::default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every bound and every rule across fields, naming the variable at fault. The
    /// environment parser runs it, and so does anything else that builds or adjusts a
    /// configuration (the simulator's scenario overrides), so no node can be built with a
    /// setting the product would refuse.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let within = |variable: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    variable,
                    format!("expected an integer in {min}..={max}, got {value}"),
                ))
            }
        };
        let nodes = &self.cluster_nodes;
        if nodes.is_empty() || nodes.len() > CLUSTER_NODES_MAX {
            return Err(ConfigError::new(
                "HYPERION_CLUSTER_NODES",
                format!("must list 1-{CLUSTER_NODES_MAX} nodes, got {}", nodes.len()),
            ));
        }
        for (i, node) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|other| other.name == node.name) {
                return Err(ConfigError::new(
                    "HYPERION_CLUSTER_NODES",
                    format!("names node `{}` twice", node.name),
                ));
            }
            if nodes[..i].iter().any(|other| other.addr == node.addr) {
                return Err(ConfigError::new(
                    "HYPERION_CLUSTER_NODES",
                    format!("lists address {} twice", node.addr),
                ));
            }
        }
        match nodes.get(self.node_index) {
            Some(node) if node.name == self.node_id => {}
            _ => {
                return Err(ConfigError::new(
                    "HYPERION_NODE_ID",
                    format!("`{}` is not in HYPERION_CLUSTER_NODES", self.node_id),
                ))
            }
        }
        if self.replication_factor != nodes.len() {
            return Err(ConfigError::new(
                "HYPERION_REPLICATION_FACTOR",
                format!(
                    "must equal the number of voters in HYPERION_CLUSTER_NODES ({}), got {}",
                    nodes.len(),
                    self.replication_factor
                ),
            ));
        }
        within(
            "HYPERION_CACHE_SIZE_MB",
            self.cache_size_mb,
            1,
            CACHE_SIZE_MB_MAX,
        )?;
        within(
            "HYPERION_EVICTION_BATCH_SIZE",
            self.eviction_batch_size as u64,
            1,
            EVICTION_BATCH_SIZE_MAX as u64,
        )?;
        let raft = &self.raft;
        within(
            "HYPERION_RAFT_HEARTBEAT_MS",
            raft.heartbeat_ms,
            1,
            TIMING_MS_MAX,
        )?;
        within(
            "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
            raft.election_timeout_ms,
            1,
            TIMING_MS_MAX,
        )?;
        within(
            "HYPERION_RAFT_LEASE_MS",
            raft.lease_duration_ms,
            1,
            TIMING_MS_MAX,
        )?;
        within(
            "HYPERION_RAFT_SNAPSHOT_ENTRIES",
            raft.snapshot_entries,
            SNAPSHOT_ENTRIES_MIN,
            SNAPSHOT_ENTRIES_MAX,
        )?;
        if raft.election_timeout_ms < 2 * raft.heartbeat_ms {
            return Err(ConfigError::new(
                "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
                format!(
                    "{} ms is less than 2x the heartbeat ({} ms); the product default is 10x",
                    raft.election_timeout_ms, raft.heartbeat_ms
                ),
            ));
        }
        if raft.lease_duration_ms >= raft.election_timeout_ms {
            return Err(ConfigError::new(
                "HYPERION_RAFT_LEASE_MS",
                format!(
                    "{} ms must be below the election timeout ({} ms), or two leaders could both \
                     hold a lease",
                    raft.lease_duration_ms, raft.election_timeout_ms
                ),
            ));
        }
        let core = hyperion_raft::Config {
            mutations: self.faults.raft.clone(),
            ..raft.core_config()
        };
        if let Err(error) = core.validate() {
            let variable = match error.field {
                "heartbeat_ms" | "tick_interval_ms" => "HYPERION_RAFT_HEARTBEAT_MS",
                "election_timeout_ms" => "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
                _ => "HYPERION_RAFT_LEASE_MS",
            };
            return Err(ConfigError::new(variable, error.reason));
        }
        if self.stale_grace_ms > STALE_GRACE_MS_MAX {
            return Err(ConfigError::new(
                "HYPERION_STALE_GRACE_MS",
                format!(
                    "expected an integer in 0..={STALE_GRACE_MS_MAX}, got {}",
                    self.stale_grace_ms
                ),
            ));
        }
        let flags = &self.flags;
        if flags.shadow_traffic_percent > 100 {
            return Err(ConfigError::new(
                "HYPERION_FEATURE_FLAGS",
                format!(
                    "shadow_traffic_percent must be 0-100, got {}",
                    flags.shadow_traffic_percent
                ),
            ));
        }
        if !(1..=MAX_VALUE_SIZE_KB_MAX).contains(&flags.max_value_size_kb) {
            return Err(ConfigError::new(
                "HYPERION_FEATURE_FLAGS",
                format!(
                    "max_value_size_kb must be 1-{MAX_VALUE_SIZE_KB_MAX}, got {}",
                    flags.max_value_size_kb
                ),
            ));
        }
        let key_len = self.hmac_key.expose().len();
        if self.hmac_key_source != HmacKeySource::Development
            && !(HMAC_KEY_BYTES_MIN..=HMAC_KEY_BYTES_MAX).contains(&key_len)
        {
            return Err(ConfigError::new(
                "HYPERION_HMAC_KEY_FILE",
                format!(
                    "key must be {HMAC_KEY_BYTES_MIN}-{HMAC_KEY_BYTES_MAX} bytes, got {key_len}"
                ),
            ));
        }
        if let Err(error) = self.store_config().validate() {
            let variable = match error {
                hyperion_store::ConfigError::CapacityBelowOneEntry { .. } => {
                    "HYPERION_CACHE_SIZE_MB"
                }
                _ => "HYPERION_FEATURE_FLAGS",
            };
            return Err(ConfigError::new(variable, error.to_string()));
        }
        if !self.listen_addr.ip().is_loopback() && !crate::runtime::NETWORK_IS_SIMULATED {
            // No TLS listener exists yet; plaintext never leaves loopback (zero-trust network).
            return Err(ConfigError::new(
                "HYPERION_LISTEN_ADDR",
                format!(
                    "{} is not a loopback address; plaintext gRPC is served on loopback only and \
                     this build has no TLS listener",
                    self.listen_addr
                ),
            ));
        }
        self.database.validate()
    }

    /// The cache memory budget in bytes.
    pub fn cache_capacity_bytes(&self) -> u64 {
        self.cache_size_mb * 1024 * 1024
    }

    /// The store settings this configuration gives.
    pub fn store_config(&self) -> StoreConfig {
        let mut store =
            StoreConfig::with_defaults(IntegrityKey::new(self.hmac_key.expose().to_vec()));
        store.capacity_bytes = self.cache_capacity_bytes();
        store.eviction_batch_size = self.eviction_batch_size;
        store.eviction = if self.flags.new_eviction_algorithm {
            EvictionPolicy::LruK2
        } else {
            EvictionPolicy::Lru
        };
        store.compression = self.flags.enable_compression;
        store.max_value_bytes = self.flags.max_value_bytes();
        store
    }
}

/// True for the variables [`Config::from_process_env`] reads.
fn is_config_variable(name: &str) -> bool {
    name.starts_with("HYPERION_")
        || matches!(
            name,
            "COCKROACH_DSN" | "LOG_LEVEL" | "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
}

/// Typed access to the variables, with errors naming the variable.
struct Vars<'a>(&'a BTreeMap<String, String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &str,
        expected: &str,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::new(name, format!("expected {expected}, got `{raw}`"))),
        }
    }

    fn positive(&self, name: &str, min: u64, max: u64) -> Result<Option<u64>, ConfigError> {
        let expected = format!("an integer in {min}..={max}");
        let value: Option<u64> = self.parse(name, &expected)?;
        match value {
            Some(v) if !(min..=max).contains(&v) => Err(ConfigError::new(
                name,
                format!("expected {expected}, got {v}"),
            )),
            other => Ok(other),
        }
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(None),
            Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
            Some("0" | "false" | "no" | "off") => Ok(Some(false)),
            Some(other) => Err(ConfigError::new(
                name,
                format!("expected true or false, got `{other}`"),
            )),
        }
    }
}

/// Largest cluster: Raft with more than 7 voters gains nothing and slows every commit.
pub const CLUSTER_NODES_MAX: usize = 7;

fn parse_cluster_nodes(list: &str) -> Result<Vec<ClusterNode>, ConfigError> {
    const NAME: &str = "HYPERION_CLUSTER_NODES";
    let entries: Vec<&str> = list.split(',').map(str::trim).collect();
    if entries.len() > CLUSTER_NODES_MAX {
        return Err(ConfigError::new(
            NAME,
            format!("at most {CLUSTER_NODES_MAX} nodes, got {}", entries.len()),
        ));
    }
    let mut nodes = Vec::with_capacity(entries.len());
    for entry in entries {
        let (name, addr) = match entry.split_once('=') {
            Some((name, addr)) => (name.trim(), addr.trim()),
            None => (
                entry.rsplit_once(':').map_or(entry, |(host, _)| host),
                entry,
            ),
        };
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(ConfigError::new(
                NAME,
                format!("`{entry}` must be host:port or name=host:port (e.g. node1:7000)"),
            ));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(ConfigError::new(
                NAME,
                format!("`{entry}` must be host:port with a port in 1..=65535"),
            ));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(ConfigError::new(
                NAME,
                format!("`{entry}`: node name `{name}` must be [A-Za-z0-9._-]"),
            ));
        }
        nodes.push(ClusterNode {
            name: name.to_string(),
            addr: addr.to_string(),
        });
    }
    for (i, node) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|other| other.name == node.name) {
            return Err(ConfigError::new(
                NAME,
                format!(
                    "names node `{}` twice; when hosts repeat, name entries as name=host:port",
                    node.name
                ),
            ));
        }
        if nodes[..i].iter().any(|other| other.addr == node.addr) {
            return Err(ConfigError::new(
                NAME,
                format!("lists address {} twice", node.addr),
            ));
        }
    }
    Ok(nodes)
}

fn load_flags(path: &Path) -> Result<FeatureFlags, ConfigError> {
    let origin = format!("HYPERION_FEATURE_FLAGS ({})", path.display());
    let text = read_bounded(path, FLAGS_FILE_BYTES_MAX)
        .map_err(|e| ConfigError::new(&origin, format!("cannot read: {e}")))?;
    let text = String::from_utf8(text)
        .map_err(|_| ConfigError::new(&origin, "is not UTF-8 JSON".to_string()))?;
    FeatureFlags::from_json(&text, &origin)
}

fn load_hmac_key(path: &Path) -> Result<Secret, ConfigError> {
    let origin = format!("HYPERION_HMAC_KEY_FILE ({})", path.display());
    let bytes = Zeroizing::new(
        read_bounded(path, HMAC_KEY_BYTES_MAX as u64 + 1)
            .map_err(|e| ConfigError::new(&origin, format!("cannot read: {e}")))?,
    );
    if !(HMAC_KEY_BYTES_MIN..=HMAC_KEY_BYTES_MAX).contains(&bytes.len()) {
        return Err(ConfigError::new(
            &origin,
            format!(
                "key must be {HMAC_KEY_BYTES_MIN}-{HMAC_KEY_BYTES_MAX} bytes, got {}",
                bytes.len()
            ),
        ));
    }
    Ok(Secret::new(bytes.to_vec()))
}

/// Reads at most `max` bytes of a file: configuration files are small, and a wrong path pointing
/// at a huge file must not exhaust memory.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Default database pool size: connections per node, also the cap on its concurrent queries.
pub const DEFAULT_DB_POOL_SIZE: usize = 16;
/// Largest pool per node: every node's pool counts against the database's connection limit.
pub const DB_POOL_SIZE_MAX: u64 = 1024;
/// Default bound on one database call (waiting for a connection plus the query).
pub const DEFAULT_DB_QUERY_TIMEOUT_MS: u64 = 2_000;
/// Default bound on opening one connection (TCP, TLS, authentication).
pub const DEFAULT_DB_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default bound on the start-up warm-up (prove a connection, migrate the schema).
pub const DEFAULT_DB_WARMUP_TIMEOUT_MS: u64 = 10_000;
/// Upper bound for the database timeouts: ten minutes.
const DB_TIMEOUT_MS_MAX: u64 = 600_000;

/// The system-of-record client's settings (used when `COCKROACH_DSN` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// `HYPERION_DB_POOL_SIZE`: connections per node and cap on concurrent queries.
    pub pool_size: usize,
    /// `HYPERION_DB_PASSWORD_FILE`: the password, from a file (never from an env value).
    pub password_file: Option<PathBuf>,
    /// `HYPERION_DB_CA_FILE`: PEM CA certificates for `sslmode=verify-full`.
    pub ca_file: Option<PathBuf>,
    /// `HYPERION_DB_QUERY_TIMEOUT_MS`: bound on one call.
    pub query_timeout_ms: u64,
    /// `HYPERION_DB_CONNECT_TIMEOUT_MS`: bound on opening one connection.
    pub connect_timeout_ms: u64,
    /// `HYPERION_DB_WARMUP_TIMEOUT_MS`: bound on the start-up warm-up.
    pub warmup_timeout_ms: u64,
    /// `HYPERION_DB_START_MODE`: `require` (default: exit if the database is unreachable at
    /// start) or `degraded` (serve cache-only, report it in health, keep trying).
    pub start_mode: crate::db::DbStartMode,
    /// `HYPERION_DB_NEGATIVE_CACHE_MS`: how long the leader remembers that the database has no
    /// row for a key, so repeated misses do not query it again (0 = never remember).
    pub negative_cache_ms: u64,
    /// `HYPERION_DB_BACKLOG_MB`: most unwritten mutations (keys + values) the cluster holds for
    /// the database; beyond it writes are refused until the database catches up.
    pub backlog_mb: u64,
}

/// Default negative-cache lifetime.
pub const DEFAULT_DB_NEGATIVE_CACHE_MS: u64 = 1_000;
/// Default write-behind backlog bound.
pub const DEFAULT_DB_BACKLOG_MB: u64 = 256;

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            pool_size: DEFAULT_DB_POOL_SIZE,
            password_file: None,
            ca_file: None,
            query_timeout_ms: DEFAULT_DB_QUERY_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_DB_CONNECT_TIMEOUT_MS,
            warmup_timeout_ms: DEFAULT_DB_WARMUP_TIMEOUT_MS,
            start_mode: crate::db::DbStartMode::Require,
            negative_cache_ms: DEFAULT_DB_NEGATIVE_CACHE_MS,
            backlog_mb: DEFAULT_DB_BACKLOG_MB,
        }
    }
}

impl DatabaseConfig {
    fn from_vars(vars: &Vars<'_>) -> Result<DatabaseConfig, ConfigError> {
        let defaults = DatabaseConfig::default();
        let pool_size = vars
            .positive("HYPERION_DB_POOL_SIZE", 1, DB_POOL_SIZE_MAX)?
            .map_or(defaults.pool_size, |n| n as usize);
        let readable_file = |name: &str| -> Result<Option<PathBuf>, ConfigError> {
            let Some(path) = vars.get(name).map(PathBuf::from) else {
                return Ok(None);
            };
            std::fs::File::open(&path).map_err(|e| {
                ConfigError::new(name, format!("cannot read {}: {e}", path.display()))
            })?;
            Ok(Some(path))
        };
        let password_file = readable_file("HYPERION_DB_PASSWORD_FILE")?;
        let ca_file = readable_file("HYPERION_DB_CA_FILE")?;
        let query_timeout_ms = vars
            .positive("HYPERION_DB_QUERY_TIMEOUT_MS", 1, DB_TIMEOUT_MS_MAX)?
            .unwrap_or(defaults.query_timeout_ms);
        let connect_timeout_ms = vars
            .positive("HYPERION_DB_CONNECT_TIMEOUT_MS", 1, DB_TIMEOUT_MS_MAX)?
            .unwrap_or(defaults.connect_timeout_ms);
        let warmup_timeout_ms = vars
            .positive("HYPERION_DB_WARMUP_TIMEOUT_MS", 1, DB_TIMEOUT_MS_MAX)?
            .unwrap_or(defaults.warmup_timeout_ms.max(query_timeout_ms));
        if warmup_timeout_ms < query_timeout_ms {
            return Err(ConfigError::new(
                "HYPERION_DB_WARMUP_TIMEOUT_MS",
                format!(
                    "{warmup_timeout_ms} ms is shorter than one query \
                     (HYPERION_DB_QUERY_TIMEOUT_MS = {query_timeout_ms} ms)"
                ),
            ));
        }
        let start_mode = match vars
            .get("HYPERION_DB_START_MODE")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("require") => crate::db::DbStartMode::Require,
            Some("degraded") => crate::db::DbStartMode::Degraded,
            Some(other) => {
                return Err(ConfigError::new(
                    "HYPERION_DB_START_MODE",
                    format!("expected require or degraded, got `{other}`"),
                ))
            }
        };
        let negative_cache_ms = match vars.get("HYPERION_DB_NEGATIVE_CACHE_MS") {
            Some("0") => 0,
            _ => vars
                .positive("HYPERION_DB_NEGATIVE_CACHE_MS", 1, DB_TIMEOUT_MS_MAX)?
                .unwrap_or(defaults.negative_cache_ms),
        };
        let backlog_mb = vars
            .positive("HYPERION_DB_BACKLOG_MB", 1, 1 << 20)?
            .unwrap_or(defaults.backlog_mb);
        Ok(DatabaseConfig {
            pool_size,
            password_file,
            ca_file,
            query_timeout_ms,
            connect_timeout_ms,
            warmup_timeout_ms,
            start_mode,
            negative_cache_ms,
            backlog_mb,
        })
    }

    /// Checks the bounds and the rules across the database settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=DB_POOL_SIZE_MAX).contains(&(self.pool_size as u64)) {
            return Err(ConfigError::new(
                "HYPERION_DB_POOL_SIZE",
                format!(
                    "expected an integer in 1..={DB_POOL_SIZE_MAX}, got {}",
                    self.pool_size
                ),
            ));
        }
        for (variable, value) in [
            ("HYPERION_DB_QUERY_TIMEOUT_MS", self.query_timeout_ms),
            ("HYPERION_DB_CONNECT_TIMEOUT_MS", self.connect_timeout_ms),
            ("HYPERION_DB_WARMUP_TIMEOUT_MS", self.warmup_timeout_ms),
        ] {
            if !(1..=DB_TIMEOUT_MS_MAX).contains(&value) {
                return Err(ConfigError::new(
                    variable,
                    format!("expected an integer in 1..={DB_TIMEOUT_MS_MAX}, got {value}"),
                ));
            }
        }
        if self.warmup_timeout_ms < self.query_timeout_ms {
            return Err(ConfigError::new(
                "HYPERION_DB_WARMUP_TIMEOUT_MS",
                format!(
                    "{} ms is shorter than one query (HYPERION_DB_QUERY_TIMEOUT_MS = {} ms)",
                    self.warmup_timeout_ms, self.query_timeout_ms
                ),
            ));
        }
        Ok(())
    }

    /// The client settings these values give (retry and breaker at the product's defaults).
    pub fn client_config(&self) -> crate::db::DbClientConfig {
        crate::db::DbClientConfig {
            max_concurrent_queries: self.pool_size,
            query_timeout: std::time::Duration::from_millis(self.query_timeout_ms),
            warmup_timeout: std::time::Duration::from_millis(self.warmup_timeout_ms),
            ..crate::db::DbClientConfig::default()
        }
    }

    /// How to reach the database at `dsn` (`COCKROACH_DSN`).
    pub fn pg_settings(&self, dsn: &Secret) -> crate::db::PgSettings {
        crate::db::PgSettings {
            dsn: dsn.clone(),
            password_file: self.password_file.clone(),
            ca_file: self.ca_file.clone(),
            pool_size: self.pool_size,
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn error_for(pairs: &[(&str, &str)]) -> ConfigError {
        Config::from_env(&env(pairs)).expect_err("configuration must be rejected")
    }

    #[test]
    fn empty_environment_is_the_embedded_development_node() {
        let config = Config::development();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:7000");
        assert_eq!(
            config.cluster_nodes,
            vec![ClusterNode {
                name: "node1".to_string(),
                addr: "127.0.0.1:7000".to_string()
            }]
        );
        assert_eq!(config.node_index, 0);
        assert_eq!(config.wal_sync, SyncPolicy::EverySec);
        assert_eq!(config.replication_factor, 1);
        assert!(config.dev_mode);
        assert_eq!(config.hmac_key_source, HmacKeySource::Development);
        assert_eq!(config.cache_size_mb, 4096);
        assert_eq!(config.eviction_batch_size, 1000);
        assert_eq!(config.raft, RaftTiming::default());
        assert_eq!(config.raft.election_timeout_ms, 1500);
        assert_eq!(config.log_level, "info");
        assert!(config.database_dsn.is_none());
        assert_eq!(config.flags, FeatureFlags::default());
        assert_eq!(config.flags.max_value_bytes(), 512 * 1024);
    }

    #[test]
    fn election_timeout_defaults_to_ten_heartbeats() {
        let config = Config::from_env(&env(&[("HYPERION_RAFT_HEARTBEAT_MS", "100")])).unwrap();
        assert_eq!(config.raft.election_timeout_ms, 1000);
        assert_eq!(config.raft.lease_duration_ms, 666);
    }

    #[test]
    fn bad_values_name_the_variable() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("HYPERION_CACHE_SIZE_MB", "lots")],
                "HYPERION_CACHE_SIZE_MB",
                "got `lots`",
            ),
            (
                &[("HYPERION_CACHE_SIZE_MB", "0")],
                "HYPERION_CACHE_SIZE_MB",
                "got 0",
            ),
            (
                &[("HYPERION_EVICTION_BATCH_SIZE", "-3")],
                "HYPERION_EVICTION_BATCH_SIZE",
                "`-3`",
            ),
            (
                &[
                    ("HYPERION_RAFT_HEARTBEAT_MS", "150"),
                    ("HYPERION_RAFT_ELECTION_TIMEOUT_MS", "200"),
                ],
                "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
                "less than 2x",
            ),
            (
                &[("HYPERION_RAFT_LEASE_MS", "1500")],
                "HYPERION_RAFT_LEASE_MS",
                "below the election",
            ),
            (
                &[("LOG_LEVEL", "loud=[")],
                "LOG_LEVEL",
                "not a valid filter",
            ),
            (
                &[("HYPERION_LISTEN_ADDR", "nowhere")],
                "HYPERION_LISTEN_ADDR",
                "expected an address",
            ),
            (
                &[("HYPERION_LISTEN_ADDR", "0.0.0.0:7000")],
                "HYPERION_LISTEN_ADDR",
                "not a loopback",
            ),
            (
                &[("HYPERION_CLUSTER_NODES", "a:1,b")],
                "HYPERION_CLUSTER_NODES",
                "`b` must be host:port",
            ),
            (
                &[("HYPERION_CLUSTER_NODES", "a:1,a:1")],
                "HYPERION_CLUSTER_NODES",
                "twice",
            ),
            (
                &[
                    ("HYPERION_CLUSTER_NODES", "a:1,b:1,c:1"),
                    ("HYPERION_NODE_ID", "a"),
                    ("HYPERION_REPLICATION_FACTOR", "2"),
                ],
                "HYPERION_REPLICATION_FACTOR",
                "must equal the number of voters",
            ),
            (
                &[("COCKROACH_DSN", "mysql://x")],
                "COCKROACH_DSN",
                "postgresql://",
            ),
            (
                &[("HYPERION_DEV_MODE", "maybe")],
                "HYPERION_DEV_MODE",
                "true or false",
            ),
            (
                &[("HYPERION_DEV_MODE", "false")],
                "HYPERION_HMAC_KEY_FILE",
                "required outside",
            ),
            (
                &[("HYPERION_NODE_ID", "bad id!")],
                "HYPERION_NODE_ID",
                "must be",
            ),
            (
                &[("HYPERION_FEATURE_FLAGS", "/nonexistent/flags.json")],
                "HYPERION_FEATURE_FLAGS (/nonexistent/flags.json)",
                "cannot read",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://",
            ),
        ];
        for (pairs, variable, fragment) in cases {
            let error = error_for(pairs);
            assert_eq!(&error.variable, variable, "for {pairs:?}");
            assert!(
                error.problem.contains(fragment),
                "for {pairs:?}: `{}` lacks `{fragment}`",
                error.problem
            );
        }
    }

    #[test]
    fn feature_flags_take_defaults_and_reject_unknown_keys() {
        let flags = FeatureFlags::from_json(r#"{"enable_compression": false}"#, "flags").unwrap();
        assert!(!flags.enable_compression);
        assert!(flags.enable_batching);
        let product = r#"{
            "enable_compression": true, "enable_batching": true, "new_eviction_algorithm": false,
            "shadow_traffic_percent": 5, "enable_client_caching": true, "max_value_size_kb": 512
        }"#;
        assert_eq!(
            FeatureFlags::from_json(product, "flags")
                .unwrap()
                .shadow_traffic_percent,
            5
        );
        let unknown =
            FeatureFlags::from_json(r#"{"enable_compresion": true}"#, "flags").unwrap_err();
        assert!(
            unknown
                .problem
                .contains("unknown field `enable_compresion`"),
            "{unknown}"
        );
        let range =
            FeatureFlags::from_json(r#"{"shadow_traffic_percent": 101}"#, "flags").unwrap_err();
        assert!(range.problem.contains("0-100"), "{range}");
        let zero = FeatureFlags::from_json(r#"{"max_value_size_kb": 0}"#, "flags").unwrap_err();
        assert!(zero.problem.contains("max_value_size_kb"), "{zero}");
        let typed = FeatureFlags::from_json(r#"{"enable_batching": "yes"}"#, "flags").unwrap_err();
        assert!(typed.problem.contains("invalid type"), "{typed}");
    }

    #[test]
    fn key_file_configures_production_mode() {
        let dir = std::env::temp_dir().join(format!("hyperion-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("hmac.key");
        std::fs::write(&key, [7u8; 32]).unwrap();
        let short = dir.join("short.key");
        std::fs::write(&short, [7u8; 8]).unwrap();
        let config =
            Config::from_env(&env(&[("HYPERION_HMAC_KEY_FILE", key.to_str().unwrap())])).unwrap();
        assert!(!config.dev_mode);
        assert_eq!(config.hmac_key.expose(), &[7u8; 32]);
        assert_eq!(
            format!("{:?}", config.hmac_key),
            "Secret(<32 bytes redacted>)"
        );
        let error = error_for(&[("HYPERION_HMAC_KEY_FILE", short.to_str().unwrap())]);
        assert!(error.variable.starts_with("HYPERION_HMAC_KEY_FILE"));
        assert!(error.problem.contains("got 8"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cluster_members_are_named_and_ordered() {
        let config = Config::from_env(&env(&[
            (
                "HYPERION_CLUSTER_NODES",
                "n1=127.0.0.1:7001, n2=127.0.0.1:7002,n3=127.0.0.1:7003",
            ),
            ("HYPERION_NODE_ID", "n2"),
            ("HYPERION_LISTEN_ADDR", "127.0.0.1:7002"),
        ]))
        .unwrap();
        assert_eq!(config.node_index, 1);
        assert_eq!(config.replication_factor, 3);
        assert_eq!(config.cluster_nodes[2].addr, "127.0.0.1:7003");
        let product = Config::from_env(&env(&[
            ("HYPERION_CLUSTER_NODES", "node1:7000,node2:7000,node3:7000"),
            ("HYPERION_NODE_ID", "node3"),
        ]))
        .unwrap();
        assert_eq!(product.node_index, 2);
        assert_eq!(product.cluster_nodes[0].name, "node1");
    }

    #[test]
    fn unset_and_empty_are_the_same() {
        let config = Config::from_env(&env(&[("HYPERION_CACHE_SIZE_MB", "  ")])).unwrap();
        assert_eq!(config.cache_size_mb, DEFAULT_CACHE_SIZE_MB);
    }
}

#[cfg(test)]
mod database_tests {
    use super::*;
    use crate::db::DbStartMode;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(&env)
    }

    #[test]
    fn database_settings_default_and_parse() {
        let defaults = config(&[]).unwrap().database;
        assert_eq!(defaults, DatabaseConfig::default());
        assert_eq!(defaults.start_mode, DbStartMode::Require);
        let key = std::env::temp_dir().join(format!("hyperion-db-config-{}", std::process::id()));
        std::fs::write(&key, "password\n").unwrap();
        let path = key.to_str().unwrap();
        let db = config(&[
            (
                "COCKROACH_DSN",
                "postgresql://hyperion@roach:26257/hyperion?sslmode=verify-full",
            ),
            ("HYPERION_DB_POOL_SIZE", "8"),
            ("HYPERION_DB_PASSWORD_FILE", path),
            ("HYPERION_DB_CA_FILE", path),
            ("HYPERION_DB_QUERY_TIMEOUT_MS", "250"),
            ("HYPERION_DB_CONNECT_TIMEOUT_MS", "1000"),
            ("HYPERION_DB_WARMUP_TIMEOUT_MS", "3000"),
            ("HYPERION_DB_START_MODE", "Degraded"),
        ])
        .unwrap()
        .database;
        assert_eq!(db.pool_size, 8);
        assert_eq!(db.password_file.as_deref(), Some(key.as_path()));
        assert_eq!(db.start_mode, DbStartMode::Degraded);
        let client = db.client_config();
        assert_eq!(client.max_concurrent_queries, 8);
        assert_eq!(client.query_timeout, std::time::Duration::from_millis(250));
        let pg = db.pg_settings(&Secret::new(b"postgresql://x@y/z".to_vec()));
        assert_eq!(pg.connect_timeout, std::time::Duration::from_millis(1000));
        std::fs::remove_file(&key).unwrap();
    }

    #[test]
    fn bad_database_settings_name_the_variable() {
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "HYPERION_DB_POOL_SIZE",
                "0",
                "HYPERION_DB_POOL_SIZE",
                "1..=1024",
            ),
            (
                "HYPERION_DB_POOL_SIZE",
                "many",
                "HYPERION_DB_POOL_SIZE",
                "`many`",
            ),
            (
                "HYPERION_DB_PASSWORD_FILE",
                "/nonexistent/pw",
                "HYPERION_DB_PASSWORD_FILE",
                "cannot read",
            ),
            (
                "HYPERION_DB_CA_FILE",
                "/nonexistent/ca.pem",
                "HYPERION_DB_CA_FILE",
                "cannot read",
            ),
            (
                "HYPERION_DB_QUERY_TIMEOUT_MS",
                "0",
                "HYPERION_DB_QUERY_TIMEOUT_MS",
                "got 0",
            ),
            (
                "HYPERION_DB_WARMUP_TIMEOUT_MS",
                "10",
                "HYPERION_DB_WARMUP_TIMEOUT_MS",
                "shorter than one query",
            ),
            (
                "HYPERION_DB_START_MODE",
                "maybe",
                "HYPERION_DB_START_MODE",
                "require or degraded",
            ),
        ];
        for (name, value, variable, fragment) in cases {
            let error = config(&[(name, value)]).expect_err("must be rejected");
            assert_eq!(&error.variable, variable, "{name}={value}");
            assert!(error.problem.contains(fragment), "{name}={value}: {error}");
        }
        // A long query timeout raises the default warm-up budget with it.
        let db = config(&[("HYPERION_DB_QUERY_TIMEOUT_MS", "20000")])
            .unwrap()
            .database;
        assert_eq!(db.warmup_timeout_ms, 20_000);
    }
}
