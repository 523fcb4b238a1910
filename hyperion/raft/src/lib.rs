//! Hyperion's Raft: a pure, synchronous, sans-IO consensus core plus its durable storage.
//!
//! Architecture Invariant: this crate knows nothing of tokio, madsim, tonic, threads, OS clocks
//! or entropy. Time enters as `now_ms` (the node's own clock), randomness as an injected seeded
//! `rand_chacha` RNG, and all I/O happens in the driver (or through the [`storage::Disk`] trait).
//!
//! - [`node`]: the consensus state machine ([`RaftNode`]) and its [`Ready`] output.
//! - [`message`]: the plain data types exchanged with peers and the driver.
//! - [`config`]: tunables and the lease-safety validation.
//! - [`storage`]: the `Disk` trait (real and simulated), the WAL, snapshots and recovery.
//!
//! # Driving a node
//! One node, its storage and its state machine, driven by a single task (e.g. the gRPC
//! server's Raft loop). Messages from peers go to `step`, a timer calls `tick` every
//! `tick_interval_ms`, and after each batch of inputs the driver handles the `Ready`:
//!
//! ```
//! use hyperion_raft::storage::{SimDisk, Storage, SyncPolicy};
//! use hyperion_raft::{Config, RaftNode};
//! use rand::SeedableRng;
//! use rand_chacha::ChaCha8Rng;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let disk = SimDisk::new(7); // FileDisk::open(dir)? in production
//! let now_ms = 0;
//! let (mut storage, recovered) = Storage::open(disk, SyncPolicy::EverySec, now_ms)?;
//! let rng = ChaCha8Rng::seed_from_u64(42); // from the runtime's seeded RNG
//! let mut node = RaftNode::new(1, vec![1], Config::default(), rng, recovered, now_ms)?;
//! node.tick(3_000); // a single voter elects itself after its election timeout
//! node.propose(vec![b"set k v".to_vec()])?;
//! while node.has_ready() {
//!     let ready = node.ready();
//!     for _msg in &ready.messages { /* send now */ }
//!     let durable = storage.persist(&ready, node.now_ms())?;
//!     for _msg in ready.persisted_messages.release(durable) { /* send */ }
//!     for _entry in &ready.committed_entries { /* apply to the state machine */ }
//!     for _read in &ready.reads { /* serve the read: applied ≥ read.index */ }
//!     node.advance(durable);
//! }
//! assert_eq!(node.commit_index(), 2);
//! # Ok(())
//! # }
//! ```

pub mod config;
mod log;
pub use log::ENTRY_OVERHEAD_BYTES;
pub mod message;
pub mod node;
pub mod storage;

pub use config::{
    default_election_timeout_ms, default_lease_ms, Config, ConfigError, Mutations,
    DEFAULT_COMPACTION_THRESHOLD_BYTES, DEFAULT_COMPACTION_THRESHOLD_ENTRIES,
    DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_HEARTBEAT_MS, DEFAULT_LEASE_MS,
    DEFAULT_SNAPSHOT_RESEND_MS, DEFAULT_TERM_JUMP_MAX, ELECTION_TIMEOUT_HEARTBEATS,
    TICK_INTERVAL_MS_MAX,
};
pub use message::{
    AppendReject, Entry, EntryKind, HardState, Membership, Message, MessageBody, NodeId, Snapshot,
    SnapshotMeta,
};
pub use node::{
    AfterPersist, Durable, InvalidMessage, LeadershipError, NewNodeError, ProposeError, RaftNode,
    ReadError, ReadState, Ready, Recovered, Role, SnapshotError, StepError, APPEND_ENTRIES_MAX,
    INDEX_MAX, SNAPSHOT_BYTES_PER_MS_MIN,
};
