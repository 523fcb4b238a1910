//! The replicated node: the Raft core ([`hyperion_raft::RaftNode`]) driven by an async loop, with
//! the cache engine as its state machine.
//!
//! One task (the *node loop*) owns the core and its storage. Request handlers talk to it through
//! a bounded inbox ([`Replica`]); peers' messages arrive through the same inbox (see
//! [`transport`]). Each turn of the loop: take inputs (ticks on the node's monotonic clock, peer
//! messages, writes, reads), then drain the core's `Ready` in the order its contract gives —
//! send, persist, send what needed persistence, apply, release reads, snapshot, advance.
//!
//! Contracts:
//! - A write is acknowledged only after its log entry committed and applied; its version is the
//!   entry's log index (strictly increasing across leader changes). Compare-and-set is decided at
//!   apply, identically on every replica.
//! - The leader stamps each write with cluster time (its node clock, never behind any stamp it
//!   proposed or applied); expiry is decided by the leader and replicated as `Expire` commands,
//!   so replicas converge. Eviction order follows the log only (reads do not reorder recency), so
//!   every replica evicts the same keys and compare-and-set answers the same everywhere.
//! - A linearizable read is answered only after the core confirmed leadership for it (lease or
//!   read-index round) and the state machine applied the read index.
//! - Non-leaders refuse writes and linearizable reads with [`ReplicaError::NotLeader`] naming the
//!   leader when known; `allow_stale` reads are served by any node from local state.

pub mod record;
pub mod transport;
pub mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use hyperion_raft::storage::{Disk, DiskError, Storage, SyncPolicy};
use hyperion_raft::{
    Entry, EntryKind, Message, NodeId, ProposeError, RaftNode, ReadError, Ready, Role,
};
use hyperion_store::{stagger_ttl_ms, Lookup, Store, StoreConfig, StoreError, StoreStats};
use prost::Message as _;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot};

use crate::db::{Mutation, StoredEntry};
use crate::faults::FaultInjection;
use crate::proto::{CacheStatus, GetResponse};
use crate::runtime::{self, NodeClock};
use crate::single_flight::{JoinRule, KeepAlive, SingleFlight};
use record::{NegativeCache, SystemOfRecord, WriteBehind};
use wire::Command;

/// Capacity of the node loop's inbox. A full inbox answers writes and reads with
/// [`ReplicaError::Overloaded`] and drops peer messages (Raft retransmits).
pub const INBOX_MAX: usize = 4096;
/// Most commands proposed as one group commit (`enable_batching`).
pub const WRITE_BATCH_MAX: usize = 256;
/// Most command bytes proposed as one group commit.
pub const WRITE_BATCH_BYTES_MAX: usize = 4 << 20;
/// Most writes waiting for their entry to apply; beyond it new writes are refused.
pub const PENDING_WRITES_MAX: usize = 16_384;
/// Most reads waiting for confirmation or for the state machine to catch up.
pub const PENDING_READS_MAX: usize = 16_384;
/// Most expired entries the leader proposes for removal in one `Expire` command.
pub const EXPIRE_BATCH_MAX: usize = 1000;
/// How often the leader looks for expired entries (node time).
pub const REAP_INTERVAL: Duration = Duration::from_millis(100);

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
}

impl WriteRequest {
    /// Client writes (as opposed to the node's own bookkeeping).
    fn is_client_write(&self) -> bool {
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
    /// While this node holds a leader lease: when it ends, in runtime time (the node's own lease
    /// deadline converted at its clock rate). For the simulator's lease-safety check.
    pub lease_expires_at: Option<runtime::Instant>,
}

/// Static description of the cluster, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// This node's Raft id.
    pub id: NodeId,
    /// Every voter's id and gRPC address (including this node).
    pub addresses: BTreeMap<NodeId, String>,
}

impl Membership {
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

/// Settings of one replica.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub membership: Membership,
    pub raft: hyperion_raft::Config,
    pub sync_policy: SyncPolicy,
    pub store: StoreConfig,
    pub enable_batching: bool,
    pub stagger_ttl: bool,
    pub client_caching: bool,
    pub stale_grace_ms: u64,
    /// Fault injection (inert in production); the Raft core's mutations travel in `raft`.
    pub faults: FaultInjection,
    /// The system of record, if configured. Every replica of a cluster must agree on whether
    /// there is one (write-behind state is replicated).
    pub record: Option<SystemOfRecord>,
    /// How long the leader remembers that the database has no row for a key.
    pub negative_cache_ms: u64,
    /// Most bytes of unwritten mutations before client writes are refused.
    pub backlog_bytes_max: u64,
}

/// The state machine and what readers need, shared by the loop and handlers.
struct Machine {
    store: Store,
    /// The largest stamp applied; cluster time never goes behind it.
    applied_stamp_ms: u64,
    /// The log index of the last entry applied to `store`.
    applied_index: u64,
    /// Replicated write-behind state (maintained only with a system of record).
    write_behind: WriteBehind,
    write_behind_enabled: bool,
}

impl Machine {
    /// The next version: the log index, or higher when fills or the version floor raised the
    /// counter (versions only grow).
    fn next_version(&self, index: u64) -> u64 {
        index.max(self.store.last_version() + 1)
    }

    /// The replica's snapshot: the store's bytes plus the write-behind state.
    fn export(&self) -> Vec<u8> {
        crate::raft_proto::MachineSnapshot {
            store: self.store.export_snapshot().to_vec(),
            write_behind: self.write_behind.encode(),
        }
        .encode_to_vec()
    }

    fn import(&mut self, data: &[u8]) -> Result<(), String> {
        let snapshot =
            crate::raft_proto::MachineSnapshot::decode(data).map_err(|e| e.to_string())?;
        let write_behind = WriteBehind::decode(&snapshot.write_behind)?;
        self.store
            .import_snapshot(&snapshot.store)
            .map_err(|e| e.to_string())?;
        self.write_behind = write_behind;
        self.applied_stamp_ms = self.applied_stamp_ms.max(self.store.max_created_at_ms());
        Ok(())
    }
}

struct Shared {
    machine: Mutex<Machine>,
    status: Mutex<RaftStatus>,
    clock: NodeClock,
    membership: Membership,
    client_caching: bool,
    faults: FaultInjection,
    /// Where `faults.retain_read_values` (the 2024-11-22 memory growth, deliberately broken)
    /// keeps a clone of every value the read path serves: a per-node leak, never freed.
    retained_reads: Mutex<Vec<Vec<u8>>>,
    record: Option<SystemOfRecord>,
    negative: Mutex<NegativeCache>,
    negative_cache_ms: u64,
    /// Read points of this node's fills in flight (id → read index), for the fill horizon.
    /// Each entry is owned by a [`FillRegistration`], so it is removed however the fill ends.
    fills_in_flight: Mutex<BTreeMap<u64, u64>>,
    /// Read-throughs in flight per key: concurrent misses of one key share one load. A miss
    /// joins a flight only if the flight's read point is not older than its own, or nothing
    /// about the key changed since the flight's read point (so no write acknowledged before the
    /// miss can be missed; see [`crate::single_flight`]).
    read_throughs: SingleFlight<Vec<u8>, Option<GetResponse>>,
    next_fill_id: std::sync::atomic::AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state is only mutated by short, non-panicking sections or by the loop, which
    // crashes the node on an invariant violation anyway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn status(&self) -> RaftStatus {
        *lock(&self.status)
    }

    fn leader(&self) -> Option<(NodeId, String)> {
        let leader = self.status().leader_id?;
        let addr = self.membership.addresses.get(&leader)?.clone();
        Some((leader, addr))
    }

    fn cluster_now_ms(&self, machine: &Machine) -> u64 {
        self.clock.now_ms().max(machine.applied_stamp_ms)
    }

    fn read(&self, key: &[u8], allow_stale: bool) -> GetResponse {
        let mut machine = lock(&self.machine);
        let now_ms = self.cluster_now_ms(&machine);
        let expires_at_ms = machine.store.expires_at_ms(key);
        let mut response = GetResponse {
            key: key.to_vec(),
            ..GetResponse::default()
        };
        match machine.store.get(key, now_ms, allow_stale) {
            Lookup::Hit {
                value,
                version,
                is_stale,
            } => {
                response.status = CacheStatus::Hit as i32;
                response.value = value.into_owned();
                if self.faults.retain_read_values {
                    // The pre-fix `.cloned()` on the hot read path, kept alive (fault injection).
                    lock(&self.retained_reads).push(response.value.clone());
                }
                response.version = version;
                response.is_stale = is_stale;
                if self.client_caching && !is_stale {
                    response.ttl_remaining_ms =
                        expires_at_ms.map_or(0, |at| at.saturating_sub(now_ms));
                }
            }
            Lookup::Miss => response.status = CacheStatus::Miss as i32,
            Lookup::Corrupt => {
                tracing::error!(key = %String::from_utf8_lossy(key), "integrity check failed; entry dropped");
                response.status = CacheStatus::Error as i32;
                response.error_message =
                    "entry failed its integrity check and was dropped".to_string();
            }
        }
        response
    }
}

enum Input {
    Write {
        request: WriteRequest,
        reply: oneshot::Sender<Result<WriteOutcome, ReplicaError>>,
    },
    Read {
        reply: oneshot::Sender<Result<(), ReplicaError>>,
    },
    Peer(Vec<Message>),
}

/// The handle request handlers use. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    inbox: mpsc::Sender<Input>,
    shared: Arc<Shared>,
}

impl Replica {
    /// Proposes a write and waits until it is applied (or refused).
    pub async fn write(&self, request: WriteRequest) -> Result<WriteOutcome, ReplicaError> {
        if self.shared.status().role != Some(Role::Leader) {
            return Err(ReplicaError::NotLeader {
                leader: self.shared.leader(),
            });
        }
        let (reply, answer) = oneshot::channel();
        self.send(Input::Write { request, reply })?;
        // The loop dropped the reply: it stopped after taking the write, which may have applied.
        answer.await.map_err(|_| ReplicaError::OutcomeUnknown)?
    }

    /// Waits until a read of the state machine is linearizable (leadership confirmed, read index
    /// applied). The caller then reads with [`Replica::read_local`].
    pub async fn linearizable_barrier(&self) -> Result<(), ReplicaError> {
        if self.shared.status().role != Some(Role::Leader) {
            return Err(ReplicaError::NotLeader {
                leader: self.shared.leader(),
            });
        }
        if self.shared.faults.unsafe_leader_reads {
            // Fault injection: believing to lead is taken as proof (the pre-fix bug).
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Input::Read { reply })?;
        answer.await.map_err(|_| ReplicaError::Stopped)?
    }

    /// Reads this replica's state machine as it is (stale reads, or after a barrier).
    pub fn read_local(&self, key: &[u8], allow_stale: bool) -> GetResponse {
        self.shared.read(key, allow_stale)
    }

    /// After a linearizable miss on the leader: loads `key` from the system of record and fills
    /// it through the log (see [`record`]). Returns the answer to give, or `None` to keep the
    /// miss. The caller bounds the time; the load itself runs to completion (bounded by the
    /// database client), and later misses join it while it is still valid for them.
    pub async fn read_through(&self, key: &[u8]) -> Option<GetResponse> {
        let record = self.shared.record.clone()?;
        let read_at_index = {
            let machine = lock(&self.shared.machine);
            if machine.write_behind.is_pending(key) {
                // The database is behind for this key: the cache's answer stands.
                return None;
            }
            machine.applied_index
        };
        if self.shared.faults.no_read_through_single_flight {
            return self
                .load_and_fill(record, key.to_vec(), read_at_index, None)
                .await;
        }
        let replica = self.clone();
        let owned_key = key.to_vec();
        let join_stale_loads = self.shared.faults.join_stale_loads;
        let shared = Arc::clone(&self.shared);
        // A flight read at an older point is still good if nothing about the key changed
        // since: no removal after it, nothing pending (the same rule its fill must pass).
        let unchanged_since = move |flight_read_point: u64| {
            lock(&shared.machine)
                .write_behind
                .fill_allowed(key, flight_read_point)
        };
        let (flight, _) = self.shared.read_throughs.run_if(
            &owned_key.clone(),
            read_at_index,
            unchanged_since,
            move |keeper| {
                let load = async move {
                    let keep = keeper.keep();
                    replica
                        .load_and_fill(record, owned_key, read_at_index, keep)
                        .await
                };
                if join_stale_loads {
                    // The pre-fix behaviour: the load is driven by its waiters only.
                    return load.boxed();
                }
                // The load runs to completion on its own (bounded by the database client's
                // timeouts and retries), so a miss that gave up and retries can join it; it
                // stays joinable until its fill is applied.
                let load = runtime::spawn(load);
                async move { load.await.unwrap_or(None) }.boxed()
            },
        );
        flight.await
    }

    /// Remembers, for the negative-cache lifetime, that the database has no live row for `key`.
    fn remember_absent(&self, key: &[u8]) {
        if self.shared.negative_cache_ms > 0 {
            let until = runtime::now() + Duration::from_millis(self.shared.negative_cache_ms);
            lock(&self.shared.negative).remember(key, until);
        }
    }

    /// Registers a fill's read point until the returned guard is dropped, so the fill horizon
    /// cannot pass it while the load or the fill is in flight.
    fn register_fill(&self, read_at_index: u64) -> FillRegistration {
        let id = self
            .shared
            .next_fill_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.shared.fills_in_flight).insert(id, read_at_index);
        FillRegistration {
            shared: Arc::clone(&self.shared),
            id,
        }
    }

    async fn load_and_fill(
        &self,
        record: SystemOfRecord,
        key: Vec<u8>,
        read_at_index: u64,
        flight: Option<KeepAlive<Option<GetResponse>>>,
    ) -> Option<GetResponse> {
        if lock(&self.shared.negative).remembers(&key, runtime::now()) {
            return None;
        }
        let registration = self.register_fill(read_at_index);
        match record.load(&key, read_at_index).await {
            Ok(Some(mut entry)) => {
                // The cached copy's TTL starts again now: the system of record is authoritative
                // and a TTL bounds how long the cache keeps a copy.
                let now_ms = {
                    let machine = lock(&self.shared.machine);
                    self.shared.cluster_now_ms(&machine)
                };
                entry.created_at_ms = now_ms;
                // The database held this key's state as of some point after `read_at_index`
                // (nothing about the key was pending then, flushes only move forward, and the
                // query was issued after it: single-flight never hands out an older load),
                // which lies within every joined read: answering it is linearizable. The fill
                // into the cache proceeds on its own, checked at apply against anything newer.
                let mut response = GetResponse {
                    key: key.clone(),
                    value: entry.value.clone(),
                    version: entry.version,
                    status: CacheStatus::Hit as i32,
                    ..GetResponse::default()
                };
                if self.shared.client_caching {
                    response.ttl_remaining_ms = entry.ttl_ms;
                }
                let replica = self.clone();
                runtime::spawn(async move {
                    let _registration = registration;
                    let _flight = flight;
                    let _ = replica
                        .write(WriteRequest::Fill {
                            entry,
                            read_at_index,
                        })
                        .await;
                });
                Some(response)
            }
            Ok(None) => {
                self.remember_absent(&key);
                None
            }
            Err(error) => {
                tracing::debug!(%error, "read-through failed; answering MISS");
                let mut response = self.read_local(&key, false);
                response.error_message = format!("system of record not consulted: {error}");
                Some(response)
            }
        }
    }

    /// The system of record's client, if configured (metrics, breaker state).
    pub fn record(&self) -> Option<&SystemOfRecord> {
        self.shared.record.as_ref()
    }

    /// Pending write-behind mutations and their bytes.
    pub fn write_behind_backlog(&self) -> (usize, u64) {
        let machine = lock(&self.shared.machine);
        (
            machine.write_behind.pending_count(),
            machine.write_behind.pending_bytes(),
        )
    }

    /// The fill horizon this leader may propose: no fill of its own that is still in flight
    /// read below it, and nothing is above the applied index.
    fn fill_horizon(&self) -> u64 {
        let applied = lock(&self.shared.machine).applied_index;
        lock(&self.shared.fills_in_flight)
            .values()
            .copied()
            .min()
            .unwrap_or(applied)
            .min(applied)
    }

    fn send(&self, input: Input) -> Result<(), ReplicaError> {
        self.inbox.try_send(input).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ReplicaError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => ReplicaError::Stopped,
        })
    }

    /// Hands peer messages to the loop; returns false if the inbox was full (they are dropped).
    fn deliver(&self, messages: Vec<Message>) -> bool {
        self.inbox.try_send(Input::Peer(messages)).is_ok()
    }

    /// The core's state as of the loop's last turn.
    pub fn status(&self) -> RaftStatus {
        self.shared.status()
    }

    /// The leader's id and address, when known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        self.shared.leader()
    }

    pub fn membership(&self) -> &Membership {
        &self.shared.membership
    }

    /// The node clock (the simulator skews it).
    pub fn clock(&self) -> &NodeClock {
        &self.shared.clock
    }

    /// Counters and gauges of the store.
    pub fn stats(&self) -> StoreStats {
        lock(&self.shared.machine).store.stats()
    }

    /// The applied log index and a digest of the whole state machine at that index, read
    /// together. Replicas at the same index must have the same digest (state-machine safety;
    /// the simulator checks it).
    pub fn state_digest(&self) -> (u64, u64) {
        use std::hash::{Hash, Hasher};
        let machine = lock(&self.shared.machine);
        // SipHash with fixed keys: deterministic across processes and simulation runs.
        let mut hasher = std::hash::DefaultHasher::new();
        machine.export().hash(&mut hasher);
        (machine.applied_index, hasher.finish())
    }

    /// Bytes held outside the store by the `retain_read_values` fault (0 otherwise).
    #[doc(hidden)]
    pub fn retained_read_bytes(&self) -> u64 {
        lock(&self.shared.retained_reads)
            .iter()
            .map(|value| value.len() as u64)
            .sum()
    }

    /// Test support: damages a stored value so the integrity path can be exercised end to end.
    #[doc(hidden)]
    pub fn corrupt_for_test(&self, key: &[u8]) -> bool {
        lock(&self.shared.machine).store.corrupt_value_for_test(key)
    }
}

/// Owns one entry of `fills_in_flight`: removed when the load or the fill it guards ends, in
/// whatever way (a miss that gave up drops it with its flight).
struct FillRegistration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for FillRegistration {
    fn drop(&mut self) {
        lock(&self.shared.fills_in_flight).remove(&self.id);
    }
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
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaStartError {
    #[error("cannot recover the Raft state: {0}")]
    Storage(#[from] hyperion_raft::storage::StorageError),
    #[error("invalid Raft configuration: {0}")]
    Raft(#[from] hyperion_raft::NewNodeError),
    #[error("invalid store configuration: {0}")]
    Store(#[from] hyperion_store::ConfigError),
    #[error("the recovered snapshot does not load: {0}")]
    Snapshot(String),
}

struct PendingWrite {
    term: u64,
    ttl_ms: u64,
    reply: oneshot::Sender<Result<WriteOutcome, ReplicaError>>,
}

/// The node loop's state.
struct NodeLoop {
    raft: RaftNode,
    storage: Storage<BoxedDisk>,
    shared: Arc<Shared>,
    config: ReplicaConfig,
    rng: ChaCha8Rng,
    inbox: mpsc::Receiver<Input>,
    peers: transport::Peers,
    /// Monotonic time fed to the core (never decreases).
    raft_now_ms: u64,
    /// The largest stamp proposed by this node as leader.
    proposed_stamp_ms: u64,
    pending_writes: BTreeMap<u64, PendingWrite>,
    next_read_id: u64,
    pending_reads: BTreeMap<u64, oneshot::Sender<Result<(), ReplicaError>>>,
    /// Confirmed reads waiting for the state machine to apply their index.
    reads_awaiting_apply: VecDeque<(u64, oneshot::Sender<Result<(), ReplicaError>>)>,
    /// Queued writes to propose as one group.
    write_batch: Vec<(
        WriteRequest,
        oneshot::Sender<Result<WriteOutcome, ReplicaError>>,
    )>,
    next_reap_ms: u64,
}

/// Starts a replica: recovers its state from `disk`, and spawns the node loop and one sender
/// task per peer. Returns the handle for request handlers.
/// `abstain_until`: for a node rejoining with an empty data directory, the leader's last index;
/// the node grants no votes until it has committed that far (see
/// [`RaftNode::abstain_until`]).
pub fn start(
    config: ReplicaConfig,
    clock: NodeClock,
    disk: Box<dyn Disk + Send>,
    abstain_until: Option<u64>,
) -> Result<Replica, ReplicaStartError> {
    let now_ms = clock.monotonic_ms();
    let (storage, recovered) = Storage::open(BoxedDisk(disk), config.sync_policy, now_ms)?;
    let config_record = config.record.clone();
    let mut store_config = config.store.clone();
    store_config.reads_update_recency = false;
    let mut machine = Machine {
        store: Store::new(store_config)?,
        applied_stamp_ms: 0,
        applied_index: 0,
        write_behind: WriteBehind::default(),
        write_behind_enabled: config.record.is_some(),
    };
    if let Some(snapshot) = &recovered.snapshot {
        machine
            .import(&snapshot.data)
            .map_err(ReplicaStartError::Snapshot)?;
        machine.applied_index = snapshot.meta.index;
    }
    let membership = config.membership.clone();
    let mut raft = RaftNode::new(
        membership.id,
        membership.voters(),
        config.raft.clone(),
        runtime::seeded_rng(),
        recovered,
        now_ms,
    )?;
    if let Some(index) = abstain_until {
        raft.abstain_until(index);
    }
    let shared = Arc::new(Shared {
        machine: Mutex::new(machine),
        status: Mutex::new(RaftStatus::default()),
        clock,
        membership: membership.clone(),
        client_caching: config.client_caching,
        faults: config.faults.clone(),
        retained_reads: Mutex::new(Vec::new()),
        record: config.record.clone(),
        negative: Mutex::new(NegativeCache::default()),
        negative_cache_ms: config.negative_cache_ms,
        fills_in_flight: Mutex::new(BTreeMap::new()),
        read_throughs: SingleFlight::new(JoinRule::CoveringReadPoint),
        next_fill_id: std::sync::atomic::AtomicU64::new(1),
    });
    let (inbox_tx, inbox) = mpsc::channel(INBOX_MAX);
    let replica = Replica {
        inbox: inbox_tx,
        shared: Arc::clone(&shared),
    };
    let peers = transport::Peers::start(&membership);
    let node_loop = NodeLoop {
        raft,
        storage,
        shared,
        config,
        rng: runtime::seeded_rng(),
        inbox,
        peers,
        raft_now_ms: now_ms,
        proposed_stamp_ms: 0,
        pending_writes: BTreeMap::new(),
        next_read_id: 1,
        pending_reads: BTreeMap::new(),
        reads_awaiting_apply: VecDeque::new(),
        write_batch: Vec::new(),
        next_reap_ms: 0,
    };
    node_loop.publish_status();
    runtime::spawn(node_loop.run());
    if let Some(record) = config_record {
        runtime::spawn(flush_loop(replica.clone(), record));
    }
    Ok(replica)
}

/// The leader's write-behind: stores the oldest pending mutations in batches and proposes what
/// was stored; first learns the version floor of a cluster that started empty.
async fn flush_loop(replica: Replica, record: SystemOfRecord) {
    loop {
        runtime::sleep(record::FLUSH_INTERVAL).await;
        if replica.status().role != Some(Role::Leader) {
            continue;
        }
        let (floor_known, batch, removals, horizon) = {
            let machine = lock(&replica.shared.machine);
            (
                machine.write_behind.version_floor_known(),
                machine.write_behind.oldest(crate::db::WRITE_BATCH_MAX),
                machine.write_behind.removed_count(),
                machine.write_behind.fill_horizon(),
            )
        };
        if !floor_known {
            match record.max_version().await {
                Ok(version) => {
                    let _ = replica.write(WriteRequest::VersionFloor { version }).await;
                }
                Err(error) => tracing::warn!(%error, "cannot read the database's version floor"),
            }
            continue;
        }
        if batch.is_empty() {
            // Nothing to write, but removals are remembered until the fill horizon passes them:
            // move it on, so that memory is bounded even when writes stop.
            let fill_horizon = replica.fill_horizon();
            if removals > 0 && fill_horizon > horizon {
                let _ = replica
                    .write(WriteRequest::Flushed {
                        written: Vec::new(),
                        fill_horizon,
                    })
                    .await;
            }
            continue;
        }
        let mutations: Vec<Mutation> = batch.iter().map(|(_, m)| m.clone()).collect();
        match record.write_batch(&mutations).await {
            Ok(()) => {
                let written = batch
                    .into_iter()
                    .map(|(index, mutation)| (mutation.key().to_vec(), index))
                    .collect();
                let fill_horizon = replica.fill_horizon();
                let _ = replica
                    .write(WriteRequest::Flushed {
                        written,
                        fill_horizon,
                    })
                    .await;
            }
            Err(error) => {
                // The client already retried and the breaker counts it; try again next round.
                tracing::debug!(%error, "write-behind batch failed");
            }
        }
    }
}

impl NodeLoop {
    async fn run(mut self) {
        let tick = Duration::from_millis(self.config.raft.tick_interval_ms);
        loop {
            let sleep = runtime::sleep(self.shared.clock.runtime_duration(tick));
            tokio::pin!(sleep);
            let first = tokio::select! {
                biased;
                input = self.inbox.recv() => match input {
                    Some(input) => Some(input),
                    None => return,
                },
                () = &mut sleep => None,
            };
            // The core reads the time of the latest tick in `step`: tick first.
            self.tick();
            if let Some(input) = first {
                self.handle(input);
                // Take whatever else is queued, bounded so ticks are never starved.
                for _ in 0..INBOX_MAX {
                    match self.inbox.try_recv() {
                        Ok(input) => self.handle(input),
                        Err(_) => break,
                    }
                }
            }
            self.propose_batch();
            self.process_ready();
            self.publish_status();
        }
    }

    fn tick(&mut self) {
        self.raft_now_ms = self.raft_now_ms.max(self.shared.clock.monotonic_ms());
        self.raft.tick(self.raft_now_ms);
        if let Err(error) = self.storage.tick(self.raft_now_ms) {
            fatal(&error);
        }
        if self.raft.role() == Role::Leader && self.raft_now_ms >= self.next_reap_ms {
            self.next_reap_ms = self.raft_now_ms + REAP_INTERVAL.as_millis() as u64;
            self.propose_expirations();
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer(messages) => {
                for message in messages {
                    if let Err(error) = self.raft.step(message) {
                        tracing::warn!(%error, "ignored peer message");
                    }
                }
            }
            Input::Write { request, reply } => {
                if self.pending_writes.len() + self.write_batch.len() >= PENDING_WRITES_MAX {
                    let _ = reply.send(Err(ReplicaError::Overloaded));
                    return;
                }
                self.write_batch.push((request, reply));
                if !self.config.enable_batching {
                    self.propose_batch();
                }
            }
            Input::Read { reply } => {
                if self.pending_reads.len() + self.reads_awaiting_apply.len() >= PENDING_READS_MAX {
                    let _ = reply.send(Err(ReplicaError::Overloaded));
                    return;
                }
                let request_id = self.next_read_id;
                self.next_read_id += 1;
                match self.raft.read_index(request_id) {
                    Ok(()) => {
                        self.pending_reads.insert(request_id, reply);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(self.read_error(error)));
                    }
                }
            }
        }
    }

    fn read_error(&self, error: ReadError) -> ReplicaError {
        match error {
            ReadError::NotLeader { .. } => ReplicaError::NotLeader {
                leader: self.shared.leader(),
            },
            ReadError::TooManyPendingReads => ReplicaError::Overloaded,
            ReadError::LeadershipLost => ReplicaError::ReadAborted,
        }
    }

    /// Cluster time for a new stamp: the node clock, never behind what was proposed or applied.
    fn next_stamp_ms(&mut self) -> u64 {
        let applied = lock(&self.shared.machine).applied_stamp_ms;
        let stamp = self
            .shared
            .clock
            .now_ms()
            .max(applied)
            .max(self.proposed_stamp_ms);
        self.proposed_stamp_ms = stamp;
        stamp
    }

    /// Proposes the queued writes as one group (bounded by count and bytes).
    fn propose_batch(&mut self) {
        while !self.write_batch.is_empty() {
            let mut commands = Vec::new();
            let mut replies = Vec::new();
            let mut bytes = 0;
            while let Some((request, reply)) = (!self.write_batch.is_empty()
                && commands.len() < WRITE_BATCH_MAX
                && bytes < WRITE_BATCH_BYTES_MAX)
                .then(|| self.write_batch.remove(0))
            {
                if request.is_client_write() {
                    if let Some(refusal) = self.record_refusal() {
                        let _ = reply.send(Err(refusal));
                        continue;
                    }
                }
                let stamp = self.next_stamp_ms();
                let (command, ttl_ms) = match request {
                    WriteRequest::Set {
                        key,
                        value,
                        ttl_ms,
                        expected_version,
                    } => {
                        let ttl_ms = if self.config.stagger_ttl {
                            stagger_ttl_ms(ttl_ms, &mut self.rng)
                        } else {
                            ttl_ms
                        };
                        let command = Command::Set {
                            key,
                            value,
                            ttl_ms,
                            expected_version,
                            created_at_ms: stamp,
                        };
                        (command, ttl_ms)
                    }
                    WriteRequest::Delete {
                        key,
                        expected_version,
                    } => (
                        Command::Delete {
                            key,
                            expected_version,
                            created_at_ms: stamp,
                        },
                        0,
                    ),
                    WriteRequest::Fill {
                        mut entry,
                        read_at_index,
                    } => {
                        // A refilled copy's TTL is staggered like a write's (2024-10-15).
                        if self.config.stagger_ttl {
                            entry.ttl_ms = stagger_ttl_ms(entry.ttl_ms, &mut self.rng);
                        }
                        (
                            Command::Fill {
                                entry,
                                read_at_index,
                            },
                            0,
                        )
                    }
                    WriteRequest::Flushed {
                        written,
                        fill_horizon,
                    } => (
                        Command::Flushed {
                            written,
                            fill_horizon,
                        },
                        0,
                    ),
                    WriteRequest::VersionFloor { version } => {
                        (Command::VersionFloor { version }, 0)
                    }
                };
                let encoded = command.encode();
                bytes += encoded.len();
                commands.push(encoded);
                replies.push((ttl_ms, reply));
            }
            if commands.is_empty() {
                // Every write of this round was refused before proposing.
                continue;
            }
            match self.raft.propose(commands) {
                Ok(indexes) => {
                    let term = self.raft.term();
                    for (index, (ttl_ms, reply)) in indexes.zip(replies) {
                        self.pending_writes.insert(
                            index,
                            PendingWrite {
                                term,
                                ttl_ms,
                                reply,
                            },
                        );
                    }
                }
                Err(error) => {
                    let refusal = match error {
                        ProposeError::NotLeader { .. } | ProposeError::TransferInProgress => {
                            ReplicaError::NotLeader {
                                leader: self.shared.leader(),
                            }
                        }
                        ProposeError::TooManyUncommitted => ReplicaError::Overloaded,
                        ProposeError::Empty => unreachable!("batches are never empty"),
                    };
                    for (_, reply) in replies {
                        let _ = reply.send(Err(refusal.clone()));
                    }
                }
            }
        }
    }

    /// Why client writes must wait for the system of record, if they must.
    fn record_refusal(&self) -> Option<ReplicaError> {
        let machine = lock(&self.shared.machine);
        if !machine.write_behind_enabled {
            return None;
        }
        if !machine.write_behind.version_floor_known() {
            return Some(ReplicaError::RecordBehind(
                "the cluster is learning the database's version floor; retry shortly".to_string(),
            ));
        }
        let bytes = machine.write_behind.pending_bytes();
        (bytes > self.config.backlog_bytes_max).then(|| {
            ReplicaError::RecordBehind(format!(
                "the database is behind by {bytes} bytes of writes (limit {}); writes wait until \
                 it catches up",
                self.config.backlog_bytes_max
            ))
        })
    }

    /// The leader's reaper: proposes the removal of entries expired longer than the stale grace.
    fn propose_expirations(&mut self) {
        let stamp = self.next_stamp_ms();
        let horizon_ms = stamp.saturating_sub(self.config.stale_grace_ms);
        let keys = lock(&self.shared.machine)
            .store
            .collect_expired(horizon_ms, EXPIRE_BATCH_MAX);
        if keys.is_empty() {
            return;
        }
        let command = Command::Expire {
            now_ms: horizon_ms,
            keys,
        };
        if let Err(error) = self.raft.propose(vec![command.encode()]) {
            tracing::debug!(%error, "expiry proposal refused");
        }
    }

    fn process_ready(&mut self) {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            self.handle_ready(ready);
        }
        self.release_applied_reads();
        self.pending_writes
            .retain(|_, pending| !pending.reply.is_closed());
    }

    fn handle_ready(&mut self, mut ready: Ready) {
        // 1. Messages that need no persistence leave at once.
        self.peers.send_all(std::mem::take(&mut ready.messages));
        // 2. Persist.
        let durable = match self.storage.persist(&ready, self.raft_now_ms) {
            Ok(durable) => durable,
            Err(error) => fatal(&error),
        };
        // 3. Votes and acknowledgements, now that what they promise is durable.
        let persisted = std::mem::take(&mut ready.persisted_messages);
        self.peers.send_all(persisted.release(durable));
        // 4. Install a snapshot from the leader, then apply committed entries.
        if ready.snapshot_install {
            if let Some(snapshot) = &ready.snapshot {
                self.install_snapshot(&snapshot.data, snapshot.meta.index);
            }
        }
        for entry in std::mem::take(&mut ready.committed_entries) {
            self.apply(entry);
        }
        // 5. Reads: linearizable once the entries above are applied.
        for read in std::mem::take(&mut ready.reads) {
            if let Some(reply) = self.pending_reads.remove(&read.request_id) {
                self.reads_awaiting_apply.push_back((read.index, reply));
            }
        }
        for (request_id, error) in std::mem::take(&mut ready.failed_reads) {
            if let Some(reply) = self.pending_reads.remove(&request_id) {
                let _ = reply.send(Err(self.read_error(error)));
            }
        }
        // 6. Snapshot the state machine when the core asks (compaction).
        let snapshot_request = ready.snapshot_request;
        // 7. Advance.
        self.raft.advance(durable);
        if let Some(index) = snapshot_request {
            let data = lock(&self.shared.machine).export();
            if let Err(error) = self.raft.snapshot_taken(index, data) {
                tracing::warn!(%error, "snapshot not taken");
            }
        }
    }

    fn install_snapshot(&mut self, data: &[u8], index: u64) {
        let mut machine = lock(&self.shared.machine);
        if let Err(error) = machine.import(data) {
            // The leader's snapshot is its state machine; a replica that cannot load it cannot
            // continue consistently.
            panic!("cannot install the leader's snapshot: {error}");
        }
        machine.applied_index = index;
        drop(machine);
        // Writes waiting on entries covered by the snapshot learn their fate from it no more;
        // they were applied (or not) on the leader, so their outcome is unknown here.
        let covered: Vec<u64> = self.pending_writes.keys().copied().collect();
        for index in covered {
            if index <= self.raft.commit_index() {
                if let Some(pending) = self.pending_writes.remove(&index) {
                    let _ = pending.reply.send(Err(ReplicaError::OutcomeUnknown));
                }
            }
        }
    }

    fn apply(&mut self, entry: Entry) {
        {
            let mut machine = lock(&self.shared.machine);
            assert!(
                entry.index > machine.applied_index,
                "entry {} applied after {}",
                entry.index,
                machine.applied_index
            );
            machine.applied_index = entry.index;
        }
        let pending = self.pending_writes.remove(&entry.index);
        let result = match &entry.kind {
            EntryKind::NoOp => None,
            EntryKind::Command(bytes) => {
                let command = match Command::decode(bytes) {
                    Ok(command) => command,
                    Err(error) => panic!("log entry {} does not decode: {error}", entry.index),
                };
                Some(self.apply_command(entry.index, command))
            }
        };
        if let Some(pending) = pending {
            let answer = match result {
                Some(Ok(outcome)) if pending.term == entry.term => Ok(match outcome {
                    WriteOutcome::Set { version, .. } => WriteOutcome::Set {
                        version,
                        ttl_ms: pending.ttl_ms,
                    },
                    other => other,
                }),
                Some(Err(error)) if pending.term == entry.term => Err(ReplicaError::Store(error)),
                _ => Err(ReplicaError::WriteDropped),
            };
            let _ = pending.reply.send(answer);
        }
    }

    fn apply_command(&mut self, index: u64, command: Command) -> Result<WriteOutcome, StoreError> {
        let mut machine = lock(&self.shared.machine);
        let machine = &mut *machine;
        machine.applied_stamp_ms = machine.applied_stamp_ms.max(command.stamp_ms());
        match command {
            Command::Set {
                key,
                value,
                ttl_ms,
                expected_version,
                created_at_ms,
            } => {
                let version = machine.next_version(index);
                let outcome = machine.store.apply_set(
                    &key,
                    &value,
                    ttl_ms,
                    expected_version,
                    version,
                    created_at_ms,
                )?;
                if machine.write_behind_enabled {
                    machine
                        .write_behind
                        .note_removed(&outcome.evicted_keys, index);
                    machine.write_behind.record(
                        index,
                        Mutation::Upsert(StoredEntry {
                            key,
                            value,
                            version,
                            ttl_ms,
                            created_at_ms,
                        }),
                    );
                }
                Ok(WriteOutcome::Set {
                    version: outcome.version,
                    ttl_ms,
                })
            }
            Command::Delete {
                key,
                expected_version,
                created_at_ms,
            } => {
                let version = machine.next_version(index);
                let outcome =
                    machine
                        .store
                        .apply_delete(&key, expected_version, version, created_at_ms)?;
                if machine.write_behind_enabled {
                    machine
                        .write_behind
                        .record(index, Mutation::Delete { key, version });
                }
                Ok(WriteOutcome::Deleted {
                    existed: outcome.existed,
                    version: outcome.version,
                })
            }
            Command::Expire { now_ms, keys } => {
                // Expiry ends the cached copy only; the system of record keeps the entry (a
                // later miss reads it through with a fresh TTL).
                let mut removed = Vec::new();
                for (key, entry_version) in keys {
                    if machine.store.remove_expired(&key, entry_version, now_ms) {
                        removed.push(key);
                    }
                }
                if machine.write_behind_enabled {
                    machine.write_behind.note_removed(&removed, index);
                }
                Ok(WriteOutcome::Done)
            }
            Command::Fill {
                entry,
                read_at_index,
            } => {
                machine.applied_stamp_ms = machine.applied_stamp_ms.max(entry.created_at_ms);
                if !machine.write_behind.fill_allowed(&entry.key, read_at_index) {
                    return Ok(WriteOutcome::Filled { stored: false });
                }
                let outcome = machine.store.apply_fill(
                    &entry.key,
                    &entry.value,
                    entry.ttl_ms,
                    entry.version,
                    entry.created_at_ms,
                )?;
                if let Some(outcome) = &outcome {
                    machine
                        .write_behind
                        .note_removed(&outcome.evicted_keys, index);
                }
                Ok(WriteOutcome::Filled {
                    stored: outcome.is_some(),
                })
            }
            Command::Flushed {
                written,
                fill_horizon,
            } => {
                machine.write_behind.flushed(&written);
                machine.write_behind.advance_fill_horizon(fill_horizon);
                Ok(WriteOutcome::Done)
            }
            Command::VersionFloor { version } => {
                machine.store.raise_version_floor(version);
                machine.write_behind.set_version_floor_known();
                Ok(WriteOutcome::Done)
            }
        }
    }

    fn release_applied_reads(&mut self) {
        let applied = self.raft.applied_index();
        let mut waiting = VecDeque::new();
        while let Some((index, reply)) = self.reads_awaiting_apply.pop_front() {
            if index <= applied {
                let _ = reply.send(Ok(()));
            } else {
                waiting.push_back((index, reply));
            }
        }
        self.reads_awaiting_apply = waiting;
        // Reads confirmed by a leader that lost leadership since cannot be trusted to complete;
        // the core reports them in `failed_reads`. Reads whose caller gave up are dropped.
        self.pending_reads.retain(|_, reply| !reply.is_closed());
    }

    fn publish_status(&self) {
        let lease_expires_at = self
            .raft
            .lease_valid_until()
            .filter(|&until| until > self.raft_now_ms)
            .map(|until| {
                let remaining = Duration::from_millis(until - self.raft_now_ms);
                runtime::now() + self.shared.clock.runtime_duration(remaining)
            });
        let status = RaftStatus {
            role: Some(self.raft.role()),
            term: self.raft.term(),
            leader_id: self.raft.leader_id(),
            commit_index: self.raft.commit_index(),
            applied_index: self.raft.applied_index(),
            last_index: self.raft.last_index(),
            lease_expires_at,
        };
        *lock(&self.shared.status) = status;
    }
}

/// A storage failure leaves the node's durable state unknown: it must stop rather than answer
/// votes or acknowledge writes it may not have persisted.
fn fatal(error: &dyn std::fmt::Display) -> ! {
    tracing::error!(%error, "fatal storage error; stopping the node");
    panic!("fatal storage error: {error}");
}
