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

pub mod config;
mod log;
pub mod message;
pub mod node;
pub mod storage;

pub use config::{Config, ConfigError, Mutations};
pub use message::{
    AppendReject, Entry, EntryKind, HardState, Membership, Message, MessageBody, NodeId, Snapshot,
    SnapshotMeta,
};
pub use node::{
    AfterPersist, Durable, LeadershipError, NewNodeError, ProposeError, RaftNode, ReadError,
    ReadState, Ready, Recovered, Role, SnapshotError, StepError,
};
