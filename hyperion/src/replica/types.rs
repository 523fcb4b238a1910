//! The replica's domain types: what handlers ask of it and what it answers. The API layer alone
//! maps them to protobuf and gRPC status codes.

use std::collections::BTreeMap;

use hyperion_raft::storage::{Disk, DiskError, SyncPolicy};
use hyperion_raft::{NodeId, Role};
use hyperion_store::{ApplySettings, StoreConfig, StoreError};

use crate::db::{StoredEntry, SystemOfRecord};
use crate::faults::FaultInjection;
use crate::runtime;
use crate::timing::Timer;

/// Why a request could not be served by this replica.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaError {
    /// This node does not lead; `leader` is the leader's id and address when known.
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The write's log entry was replaced by another leader's: it was not applied.
    #[error("leadership changed before the write committed; it was not applied")]
    WriteDropped,
    /// Leadership changed before the read was confirmed.
    #[error("leadership changed before the read was confirmed")]
    ReadAborted,
    /// The write's fate is unknown here (this node installed a snapshot past it, or stopped
    /// after taking it).
    #[error("the write's outcome is unknown")]
    OutcomeUnknown,
    /// Too many requests are queued at this node.
    #[error("node overloaded: too many queued requests")]
    Overloaded,
    /// The node loop stopped (shutdown or a fatal storage error).
    #[error("node is stopping")]
    Stopped,
    /// The engine refused the write (CAS mismatch, limits).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writes wait for the system of record (its version floor is not known yet, or the
    /// write-behind backlog is full); nothing was applied.
    #[error("{0}")]
    RecordBehind(String),
    /// The command would not be valid on every replica (see `Command::check`); nothing was
    /// proposed.
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// The node's device is out of space: client writes are refused; nothing was proposed.
    #[error("HYPERION_DATA_DIR is out of space")]
    OutOfSpace,
}

/// A write request, as handlers pass it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRequest {
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: u64,
        expected_version: u64,
    },
    Delete {
        key: Vec<u8>,
        expected_version: u64,
    },
    /// Internal: a read-through fill (see [`record`]).
    Fill {
        entry: StoredEntry,
        read_at_index: u64,
    },
    /// Internal: the leader stored these pending mutations.
    Flushed {
        written: Vec<(Vec<u8>, u64)>,
        fill_horizon: u64,
    },
    /// Internal: versions start above this one.
    VersionFloor {
        version: u64,
    },
    /// Internal: the leader found this entry failing its integrity check; remove it everywhere.
    DropCorrupt {
        key: Vec<u8>,
        version: u64,
    },
    /// Internal: the settings every replica applies writes with, from now on.
    Settings(ClusterSettings),
    /// Admin: evict up to `count` entries (at most [`EVICT_COUNT_MAX`]) through the log.
    Evict {
        count: u64,
    },
}

/// Most entries one forced eviction may remove (the admin endpoint's bound): one apply holds the
/// state machine for its duration, so a larger eviction is asked for in several.
pub const EVICT_COUNT_MAX: u64 = 1_000_000;

/// The settings that decide how writes apply, replicated through the log (a node's own
/// configuration only proposes them, as leader): the store's apply settings, and the fingerprint
/// of the integrity key every replica must share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub store: ApplySettings,
    /// SHA-256 of the HMAC key.
    pub integrity_key_fingerprint: [u8; 32],
}

impl ClusterSettings {
    /// The settings a node's store configuration proposes.
    pub fn of(store: &StoreConfig) -> ClusterSettings {
        use sha2::Digest;
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(&sha2::Sha256::digest(store.integrity_key.as_bytes()));
        ClusterSettings {
            store: store.apply_settings(),
            integrity_key_fingerprint: fingerprint,
        }
    }

    /// The names (`HYPERION_*` and flags) of the store settings in which `other` differs.
    pub fn differences(&self, other: &ClusterSettings) -> Vec<&'static str> {
        let (a, b) = (&self.store, &other.store);
        [
            (
                "HYPERION_CACHE_SIZE_MB",
                a.capacity_bytes != b.capacity_bytes,
            ),
            (
                "HYPERION_EVICTION_BATCH_SIZE",
                a.eviction_batch_size != b.eviction_batch_size,
            ),
            ("new_eviction_algorithm", a.eviction != b.eviction),
            ("enable_compression", a.compression != b.compression),
            ("max_value_size_kb", a.max_value_bytes != b.max_value_bytes),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }
}

impl WriteRequest {
    /// Client writes (as opposed to the node's own bookkeeping).
    pub fn is_client_write(&self) -> bool {
        matches!(self, WriteRequest::Set { .. } | WriteRequest::Delete { .. })
    }
}

/// The applied result of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Set {
        version: u64,
        ttl_ms: u64,
    },
    Deleted {
        existed: bool,
        version: u64,
    },
    /// A fill was applied, or refused because something newer about the key is known.
    Filled {
        stored: bool,
    },
    /// A forced eviction removed this many entries.
    Evicted {
        count: u64,
    },
    /// Bookkeeping applied.
    Done,
}

/// What handlers and operators can see of the core, refreshed by the loop every turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RaftStatus {
    pub role: Option<Role>,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    /// Memory the Raft log after the last snapshot holds (payloads and per-entry cost).
    pub log_bytes: u64,
    /// While this node holds a leader lease: when it ends, in runtime time (the node's own lease
    /// deadline converted at its clock rate). For the simulator's lease-safety check.
    pub lease_expires_at: Option<runtime::Instant>,
    /// The node neither votes nor campaigns until it has caught up with a leader.
    pub abstaining: bool,
}

/// Static description of the cluster, from the configuration: this node's id and every voter's
/// address (the Raft core's own [`hyperion_raft::Membership`] is the voter set alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// This node's Raft id.
    pub id: NodeId,
    /// Every voter's id and gRPC address (including this node).
    pub addresses: BTreeMap<NodeId, String>,
    /// Every voter's node name (what its certificate names).
    pub names: BTreeMap<NodeId, String>,
}

impl Topology {
    /// The node name of voter `id` (empty if unknown).
    pub fn name(&self, id: NodeId) -> &str {
        self.names.get(&id).map_or("", String::as_str)
    }

    /// A stable name of the cluster (its members), checked on every peer batch so nodes of two
    /// clusters never exchange messages by mistake.
    pub fn cluster_name(&self) -> String {
        self.addresses
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn voters(&self) -> Vec<NodeId> {
        self.addresses.keys().copied().collect()
    }
}

/// What a read found, in domain terms (the API layer maps it to a `GetResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    Hit {
        value: Vec<u8>,
        version: u64,
        /// Expired, served only because the read allowed stale data.
        is_stale: bool,
        /// Client-caching hint: how long the entry stays fresh (0: no hint).
        ttl_remaining_ms: u64,
    },
    Miss,
    /// The entry failed its integrity check; it is never served. `version` is the damaged
    /// entry's (what its removal must name).
    Corrupt {
        version: u64,
    },
}

/// A read's answer: the outcome and, when the system of record could not be consulted on a miss,
/// why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAnswer {
    pub outcome: ReadOutcome,
    pub note: Option<String>,
}

/// Settings of one replica.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub topology: Topology,
    pub raft: hyperion_raft::Config,
    pub sync_policy: SyncPolicy,
    pub store: StoreConfig,
    pub enable_batching: bool,
    pub stagger_ttl: bool,
    pub client_caching: bool,
    pub stale_grace_ms: u64,
    /// Bounds of the node's invalidation hub.
    pub watch: crate::watch::WatchLimits,
    /// Fault injection (inert in production); the Raft core's mutations travel in `raft`.
    pub faults: FaultInjection,
    /// The system of record, if configured. Every replica of a cluster must agree on whether
    /// there is one (write-behind state is replicated).
    pub record: Option<SystemOfRecord>,
    /// How long the leader remembers that the database has no row for a key.
    pub negative_cache_ms: u64,
    /// Most bytes of unwritten mutations before client writes are refused.
    pub backlog_bytes_max: u64,
    /// This node's TLS (production, when configured): peer channels use it.
    pub tls: Option<std::sync::Arc<crate::tls::NodeTls>>,
    /// Where the WAL's fsyncs and the snapshots are timed (off unless metrics are recorded).
    pub timers: RaftTimers,
    /// Space held back on the device for when it fills (`HYPERION_DISK_RESERVE_MB`).
    pub disk_reserve_bytes: usize,
}

/// A [`Disk`] chosen at run time (a real directory in production, a simulated disk in the
/// simulator).
pub struct BoxedDisk(pub Box<dyn Disk + Send>);

impl Disk for BoxedDisk {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        self.0.read(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.0.append(name, data)
    }
    fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.0.write_file(name, data)
    }
    fn sync(&mut self, name: &str) -> Result<(), DiskError> {
        self.0.sync(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        self.0.rename(from, to)
    }
    fn sync_dir(&mut self) -> Result<(), DiskError> {
        self.0.sync_dir()
    }
    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        self.0.remove(name)
    }
    fn boot_id(&mut self) -> Result<Option<String>, DiskError> {
        self.0.boot_id()
    }
}

/// The replica's timers (off unless the node records metrics).
#[derive(Debug, Clone, Default)]
pub struct RaftTimers {
    /// Each fsync of the write-ahead log.
    pub wal_fsync: Timer,
    /// Each snapshot taken: exporting the state machine and handing it to the core.
    pub snapshot: Timer,
}
