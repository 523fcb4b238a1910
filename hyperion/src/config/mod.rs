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
use std::path::PathBuf;

use hyperion_store::{EvictionPolicy, IntegrityKey, StoreConfig};
use serde::Deserialize;

mod database;
mod env;
mod ops;
mod security;
pub use database::*;
pub use env::load_flags;
use env::Vars;
pub use ops::{LogFormat, OpsConfig, DEFAULT_ADMIN_ADDR};
pub use security::{SecurityConfig, TlsIdentity, DEFAULT_LEEWAY_S, LEEWAY_S_MAX};

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
/// Default bound of the invalidation tracking table (`HYPERION_TRACKING_MAX_KEYS`), per node.
pub const DEFAULT_TRACKING_MAX_KEYS: u64 = crate::watch::TRACKING_MAX_KEYS_DEFAULT as u64;
/// Default space held back on the device for when it fills (`HYPERION_DISK_RESERVE_MB`).
pub const DEFAULT_DISK_RESERVE_MB: u64 = 64;
/// Largest accepted `HYPERION_DISK_RESERVE_MB`.
pub const DISK_RESERVE_MB_MAX: u64 = 65_536;
/// Largest accepted `HYPERION_WATCH_QUEUE_EVENTS`.
pub const WATCH_QUEUE_EVENTS_MAX: u64 = 1_000_000;
/// Largest accepted `HYPERION_WATCH_HISTORY_EVENTS` (0 keeps no history: every resume resyncs).
pub const WATCH_HISTORY_EVENTS_MAX: u64 = 10_000_000;
/// Largest accepted `HYPERION_TRACKING_MAX_KEYS`.
pub const TRACKING_MAX_KEYS_MAX: u64 = 100_000_000;
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
    /// Memory the applied log may hold before a snapshot compacts it, MiB
    /// (`HYPERION_RAFT_LOG_MEMORY_MB`): with large values the entry count alone does not bound it.
    pub log_memory_mb: u64,
}

/// Default log memory between snapshots, from the Raft crate (64 MiB).
pub const DEFAULT_LOG_MEMORY_MB: u64 = hyperion_raft::DEFAULT_COMPACTION_THRESHOLD_BYTES >> 20;
/// Bounds of `HYPERION_RAFT_LOG_MEMORY_MB` (1 MiB to 64 GiB).
pub const LOG_MEMORY_MB_MIN: u64 = 1;
pub const LOG_MEMORY_MB_MAX: u64 = 1 << 16;

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
            compaction_threshold_bytes: self.log_memory_mb << 20,
            snapshot_resend_ms: hyperion_raft::DEFAULT_SNAPSHOT_RESEND_MS
                .max(self.election_timeout_ms),
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
            log_memory_mb: DEFAULT_LOG_MEMORY_MB,
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

    /// `settings` with the fields these flags decide (eviction, compression, value size).
    pub fn apply_to(
        &self,
        settings: hyperion_store::ApplySettings,
    ) -> hyperion_store::ApplySettings {
        hyperion_store::ApplySettings {
            eviction: if self.new_eviction_algorithm {
                EvictionPolicy::LruK2
            } else {
                EvictionPolicy::Lru
            },
            compression: self.enable_compression,
            max_value_bytes: self.max_value_bytes(),
            ..settings
        }
    }
}

/// Where the integrity (HMAC) key came from.
#[derive(Debug, Clone, PartialEq)]
pub enum HmacKeySource {
    /// Read from `HYPERION_HMAC_KEY_FILE`.
    File(PathBuf),
    /// Fetched from Vault (`hmac-key`).
    Vault,
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
    /// The CA certificates (PEM) an https:// OTLP collector chains to
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`); required for https.
    pub otlp_ca_pem: Option<Vec<u8>>,
    /// The shadow cluster's addresses (`HYPERION_SHADOW_ADDR`, comma-separated as clients take
    /// them), where `shadow_traffic_percent` of the requests are mirrored.
    pub shadow_addr: Option<String>,
    /// The CA certificates (PEM) the shadow cluster's certificates chain to
    /// (`HYPERION_SHADOW_CA_FILE`): mirroring then uses TLS, with this node's certificate as
    /// its client certificate. Without it, plaintext (development mode, loopback only).
    pub shadow_ca_pem: Option<Vec<u8>>,
    /// Rate limits, the admin port, metrics and the log format (`HYPERION_RATE_LIMIT_*`,
    /// `HYPERION_ADMIN_ADDR`, `HYPERION_METRICS`, `LOG_FORMAT`).
    pub ops: OpsConfig,
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
    /// Most keys the invalidation tracking table holds on this node
    /// (`HYPERION_TRACKING_MAX_KEYS`); past it, the largest tracker resyncs.
    pub tracking_max_keys: u64,
    /// Space the node holds back on its device and gives back when the device fills, to go on
    /// (refusing client writes) instead of failing (`HYPERION_DISK_RESERVE_MB`; 0: none).
    pub disk_reserve_mb: u64,
    /// Most events one Watch subscriber's queue holds (`HYPERION_WATCH_QUEUE_EVENTS`); past
    /// it the subscriber is sent a resync, and closed if it overflows again before reading it.
    pub watch_queue_events: u64,
    /// Changes kept for Watch streams resuming after a reconnect
    /// (`HYPERION_WATCH_HISTORY_EVENTS`; also bounded to 8 MiB).
    pub watch_history_events: u64,
    /// The system-of-record client (`HYPERION_DB_*`; used when `COCKROACH_DSN` is set).
    pub database: DatabaseConfig,
    /// `HYPERION_JOIN_EXISTING_CLUSTER`: allow a node with an empty data directory to join a
    /// cluster that already has state (a replaced disk, or a node first started late). It then
    /// abstains from votes until it has caught up with the leader.
    pub join_existing_cluster: bool,
    /// Where secrets come from (`HYPERION_SECRETS`); reloads fetch from it again.
    pub secrets: crate::secret::SecretSource,
    /// Transport security and caller identities (`HYPERION_TLS_*`, `HYPERION_JWT_*`,
    /// `HYPERION_ACL_FILE`).
    pub security: SecurityConfig,
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
        within(
            "HYPERION_RAFT_LOG_MEMORY_MB",
            raft.log_memory_mb,
            LOG_MEMORY_MB_MIN,
            LOG_MEMORY_MB_MAX,
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
        within(
            "HYPERION_TRACKING_MAX_KEYS",
            self.tracking_max_keys,
            1,
            TRACKING_MAX_KEYS_MAX,
        )?;
        within(
            "HYPERION_DISK_RESERVE_MB",
            self.disk_reserve_mb,
            0,
            DISK_RESERVE_MB_MAX,
        )?;
        within(
            "HYPERION_WATCH_QUEUE_EVENTS",
            self.watch_queue_events,
            1,
            WATCH_QUEUE_EVENTS_MAX,
        )?;
        within(
            "HYPERION_WATCH_HISTORY_EVENTS",
            self.watch_history_events,
            0,
            WATCH_HISTORY_EVENTS_MAX,
        )?;
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
        self.security
            .validate(self.listen_addr, &self.cluster_nodes, self.dev_mode)?;
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

/// Largest cluster: Raft with more than 7 voters gains nothing and slows every commit.
pub const CLUSTER_NODES_MAX: usize = 7;

#[cfg(test)]
mod tests;
