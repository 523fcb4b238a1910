//! The replicated node: the Raft core ([`hyperion_raft::RaftNode`]) driven by an async loop, with
//! the cache engine as its state machine.
//!
//! The rooms, one job each:
//! - this module: the handle request handlers use ([`Replica`]), the domain types it speaks
//!   ([`ReadAnswer`], [`WriteRequest`], [`WriteOutcome`], [`ReplicaError`]), and [`start`];
//! - [`node_loop`]: the one task that owns the core and its storage (Ready handling, proposals,
//!   ticks), fed through a bounded inbox; peers' messages arrive through the same inbox;
//! - [`machine`]: the replicated state machine, synchronous (`apply(index, command)`);
//! - [`read_through`]: loads from the system of record on a miss, and fills;
//! - [`write_behind`]: the replicated backlog for the system of record, and the flush loop;
//! - [`transport`] and [`wire`]: the peer service and the encodings of messages and commands;
//! - [`timing`]: the WAL fsync and snapshot timers, at the disk and beside the loop;
//! - [`inbound`]: what a peer message must be to reach the node loop, and what a command must be
//!   to enter the log.
//!
//! The replica speaks domain types only; the API layer maps them to protobuf and status codes.
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

pub mod flush;
pub mod handle;
pub mod inbound;
pub mod machine;
pub mod negative_cache;
pub mod node_loop;
pub mod read_through;
pub mod timing;
pub mod transport;
pub mod types;
pub mod wire;
pub mod write_behind;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hyperion_raft::storage::{Disk, Storage};
use hyperion_raft::RaftNode;
use tokio::sync::mpsc;

use crate::runtime::{self, FatalHandler, NodeClock};
use crate::single_flight::{JoinRule, SingleFlight};
pub use handle::Replica;
use handle::Shared;
use machine::Machine;
use negative_cache::NegativeCache;
use node_loop::NodeLoop;
pub use node_loop::{
    EXPIRE_BATCH_MAX, INBOX_MAX, PEER_INBOX_MAX, PENDING_READS_MAX, PENDING_WRITES_MAX,
    REAP_INTERVAL, WRITE_BATCH_BYTES_MAX, WRITE_BATCH_MAX,
};
pub use types::{
    BoxedDisk, RaftStatus, ReadAnswer, ReadOutcome, ReplicaConfig, ReplicaError, Topology,
    WriteOutcome, WriteRequest, EVICT_COUNT_MAX,
};

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
    Snapshot(#[from] machine::SnapshotLoadError),
}

/// Starts a replica: recovers its state from `disk`, and spawns the node loop and one sender
/// task per peer. Returns the handle for request handlers.
/// `abstain_until`: for a node rejoining with an empty data directory, the leader's last index;
/// the node grants no votes until it has committed that far (see
/// [`RaftNode::abstain_until`]).
/// `fatal`: what the node does when it cannot go on (a storage failure, a panic in a task it
/// cannot live without: the node loop, a peer's sender, the flush loop).
pub fn start(
    config: ReplicaConfig,
    clock: NodeClock,
    disk: Box<dyn Disk + Send>,
    abstain_until: Option<u64>,
    fatal: FatalHandler,
) -> Result<Replica, ReplicaStartError> {
    let now_ms = clock.monotonic_ms();
    let (mut storage, recovered) = Storage::open_with(
        BoxedDisk(Box::new(timing::TimedDisk {
            disk,
            wal_fsync: config.timers.wal_fsync.clone(),
        })),
        config.sync_policy,
        now_ms,
        &config.raft.mutations,
    )?;
    crate::sometimes!("wal_torn_tail", storage.torn_tail_bytes() > 0);
    // The reserve: a device already too full for it starts the node out of space (refusing
    // client writes) rather than not at all.
    let space = match storage.reserve(config.disk_reserve_bytes) {
        Ok(()) => node_loop::Space {
            reserve_held: config.disk_reserve_bytes > 0,
            ..node_loop::Space::default()
        },
        Err(error) if error.is_out_of_space() => {
            tracing::error!(
                %error,
                "HYPERION_DATA_DIR has no room for the {} MiB reserve: client writes are refused \
                 until space is freed",
                config.disk_reserve_bytes >> 20
            );
            node_loop::Space {
                out_of_space: true,
                ..node_loop::Space::default()
            }
        }
        Err(error) => return Err(error.into()),
    };
    let config_record = config.record.clone();
    let mut store_config = config.store.clone();
    store_config.reads_update_recency = false;
    let mut machine = Machine::new(
        store_config,
        config.record.is_some(),
        config.faults.local_apply_settings,
    )?;
    if let Some(snapshot) = &recovered.snapshot {
        machine.import(&snapshot.data, snapshot.meta.index)?;
    }
    let topology = config.topology.clone();
    let mut raft = RaftNode::new(
        topology.id,
        topology.voters(),
        config.raft.clone(),
        runtime::seeded_rng(),
        recovered,
        now_ms,
    )?;
    if let Some(index) = abstain_until {
        // Durably: a restart before the node caught up keeps abstaining.
        storage.begin_catch_up()?;
        raft.abstain_until(index);
    }
    if raft.abstaining() {
        tracing::warn!(
            "this node may lack entries it acknowledged (it rejoined with an empty log, or lost \
             power with unsynced writes): it neither votes nor campaigns until it has caught up \
             with a leader"
        );
    }
    let shared = Arc::new(Shared {
        machine: Mutex::new(machine),
        status: Mutex::new(RaftStatus::default()),
        clock,
        topology: topology.clone(),
        client_caching: config.client_caching,
        faults: config.faults.clone(),
        retained_reads: Mutex::new(Vec::new()),
        record: config.record.clone(),
        negative: Mutex::new(NegativeCache::default()),
        negative_cache_ms: config.negative_cache_ms,
        fills_in_flight: Mutex::new(BTreeMap::new()),
        read_throughs: SingleFlight::new(JoinRule::CoveringReadPoint),
        next_fill_id: std::sync::atomic::AtomicU64::new(1),
        removals_in_flight: Mutex::new(std::collections::BTreeSet::new()),
        invalid_peer_messages: std::sync::atomic::AtomicU64::new(0),
        leader_changes: std::sync::atomic::AtomicU64::new(0),
        snapshots: std::sync::atomic::AtomicU64::new(0),
        watch: crate::watch::WatchHub::new(config.watch),
        out_of_space: std::sync::atomic::AtomicBool::new(false),
    });
    // Changes up to the restored state are not in the hub's history: resuming before it resyncs.
    let restored = shared.machine().applied_index();
    shared.watch.reset(restored);
    let (inbox_tx, inbox) = mpsc::channel(INBOX_MAX);
    let (peer_inbox_tx, peer_inbox) = mpsc::channel(PEER_INBOX_MAX);
    let replica = Replica {
        inbox: inbox_tx,
        peer_inbox: peer_inbox_tx,
        shared: Arc::clone(&shared),
    };
    let zombie = config.faults.zombie_on_task_panic;
    let peers = transport::Peers::start(&topology, &config.faults, &fatal, config.tls.as_ref());
    let node_loop = NodeLoop::new(
        raft,
        storage,
        shared,
        config,
        node_loop::Channels {
            inbox,
            peer_inbox,
            peers,
        },
        now_ms,
        fatal.clone(),
    )
    .with_space(space);
    node_loop.publish_status();
    runtime::spawn_critical("node loop", fatal.clone(), zombie, node_loop.run());
    if let Some(record) = config_record {
        runtime::spawn_critical(
            "write-behind flush",
            fatal,
            zombie,
            flush::flush_loop(replica.clone(), record),
        );
    }
    Ok(replica)
}
