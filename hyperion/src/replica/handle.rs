//! The handle request handlers use ([`Replica`]) and the state it shares with the node loop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hyperion_raft::{Message, NodeId, Role};
use hyperion_store::StoreStats;
use tokio::sync::{mpsc, oneshot};

use super::machine::Machine;
use super::negative_cache::NegativeCache;
use super::types::{
    RaftStatus, ReadAnswer, ReadOutcome, ReplicaError, Topology, WriteOutcome, WriteRequest,
};
use crate::db::SystemOfRecord;
use crate::faults::FaultInjection;
use crate::runtime::NodeClock;
use crate::single_flight::SingleFlight;

/// The state machine and what readers need, shared by the loop and handlers.
pub struct Shared {
    pub(super) machine: Mutex<Machine>,
    pub(super) status: Mutex<RaftStatus>,
    pub(super) clock: NodeClock,
    pub(super) topology: Topology,
    pub(super) client_caching: bool,
    pub(super) faults: FaultInjection,
    /// Where `faults.retain_read_values` (the 2024-11-22 memory growth, deliberately broken)
    /// keeps a clone of every value the read path serves: a per-node leak, never freed.
    pub(super) retained_reads: Mutex<Vec<Vec<u8>>>,
    pub(super) record: Option<SystemOfRecord>,
    pub(super) negative: Mutex<NegativeCache>,
    pub(super) negative_cache_ms: u64,
    /// Read points of this node's fills in flight (id → read index), for the fill horizon.
    /// Each entry is owned by a fill registration, so it is removed however the fill ends.
    pub(super) fills_in_flight: Mutex<BTreeMap<u64, u64>>,
    /// Read-throughs in flight per key: concurrent misses of one key share one load. A miss
    /// joins a flight only if the flight's read point is not older than its own, or nothing
    /// about the key changed since the flight's read point (so no write acknowledged before the
    /// miss can be missed; see [`crate::single_flight`]).
    pub(super) read_throughs: SingleFlight<Vec<u8>, Option<ReadAnswer>>,
    pub(super) next_fill_id: std::sync::atomic::AtomicU64,
    /// Keys whose removal (they failed the integrity check) this leader has proposed.
    pub(super) removals_in_flight: Mutex<std::collections::BTreeSet<Vec<u8>>>,
    /// Peer messages dropped because they failed validation (by the transport, the node loop
    /// or the Raft core): never applied, never persisted.
    pub(super) invalid_peer_messages: std::sync::atomic::AtomicU64,
    /// Times the known leader changed to another node (metrics).
    pub(super) leader_changes: std::sync::atomic::AtomicU64,
    /// Snapshots this node took (metrics).
    pub(super) snapshots: std::sync::atomic::AtomicU64,
    /// Invalidation events from the applied log (client-side caching).
    pub(super) watch: Arc<crate::watch::WatchHub>,
    /// The device is out of space: client writes are refused (see `node_loop/space.rs`).
    pub(super) out_of_space: std::sync::atomic::AtomicBool,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state is only mutated by short, non-panicking sections or by the loop, which
    // crashes the node on an invariant violation anyway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Counts `count` invalid peer messages and logs why, sparingly: a flood of forged messages
    /// must not flood the log (the first, then every power of two).
    pub(super) fn note_invalid_peer_messages(&self, count: u64, why: &dyn std::fmt::Display) {
        use std::sync::atomic::Ordering;
        let before = self
            .invalid_peer_messages
            .fetch_add(count, Ordering::Relaxed);
        let after = before + count;
        if before == 0 || (before + 1..=after).any(u64::is_power_of_two) {
            tracing::warn!(
                invalid_peer_messages = after,
                "dropped an invalid peer message: {why}"
            );
        }
    }

    pub(super) fn machine(&self) -> MutexGuard<'_, Machine> {
        lock(&self.machine)
    }

    pub(super) fn status(&self) -> RaftStatus {
        *lock(&self.status)
    }

    pub(super) fn publish(&self, status: RaftStatus) {
        let mut published = lock(&self.status);
        crate::sometimes!(
            "leader_elected",
            status.role == Some(Role::Leader) && published.role != Some(Role::Leader)
        );
        if status.leader_id.is_some() && status.leader_id != published.leader_id {
            self.leader_changes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        *published = status;
    }

    pub(super) fn leader(&self) -> Option<(NodeId, String)> {
        let leader = self.status().leader_id?;
        let addr = self.topology.addresses.get(&leader)?.clone();
        Some((leader, addr))
    }

    /// Applies the committed `command` at `index`, then publishes what it changed to the
    /// invalidation hub (after the machine's lock is released: see [`crate::watch`]).
    pub(super) fn apply(
        &self,
        index: u64,
        command: super::wire::Command,
    ) -> Result<WriteOutcome, hyperion_store::StoreError> {
        let (outcome, changes) = {
            let mut machine = self.machine();
            let outcome = machine.apply(index, command);
            (outcome, machine.take_changes())
        };
        self.watch.publish(index, changes);
        outcome
    }

    /// Marks `index` applied without a command (a Raft no-op).
    pub(super) fn apply_noop(&self, index: u64) {
        self.machine().apply_noop(index);
        self.watch.publish(index, Vec::new());
    }

    /// Replaces the state with a snapshot taken at `index`: invalidation subscribers resync.
    pub(super) fn install(&self, loaded: super::machine::LoadedSnapshot, index: u64) {
        self.machine().install(loaded, index);
        self.watch.reset(index);
    }

    pub(super) fn cluster_now_ms(&self, machine: &Machine) -> u64 {
        machine.cluster_now_ms(self.clock.now_ms())
    }

    pub(super) fn read(&self, key: &[u8], allow_stale: bool) -> ReadAnswer {
        let mut machine = self.machine();
        let now_ms = self.cluster_now_ms(&machine);
        let hint = match (self.client_caching, self.faults.zero_ttl_hint_at_expiry) {
            (false, _) => super::machine::TtlHint::Off,
            (true, false) => super::machine::TtlHint::On,
            (true, true) => super::machine::TtlHint::ZeroInLastMillisecond,
        };
        let answer = machine.read(key, now_ms, allow_stale, hint);
        match &answer.outcome {
            ReadOutcome::Hit { value, .. } if self.faults.retain_read_values => {
                // The pre-fix `.cloned()` on the hot read path, kept alive (fault injection).
                lock(&self.retained_reads).push(value.clone());
            }
            ReadOutcome::Corrupt { version } => {
                tracing::error!(
                    key_bytes = key.len(),
                    version,
                    "an entry failed its integrity check; it is not served"
                );
                if self.faults.local_integrity_removal {
                    // The pre-fix behaviour: dropped here only, outside the log.
                    machine.store.remove_version(key, *version);
                }
            }
            _ => {}
        }
        answer
    }
}

/// What the node loop takes from handlers and peers.
pub enum Input {
    Write {
        request: WriteRequest,
        reply: oneshot::Sender<Result<WriteOutcome, ReplicaError>>,
        /// The write's spans through the node loop (children of the caller's span).
        trace: crate::telemetry::WriteTrace,
    },
    Read {
        reply: oneshot::Sender<Result<(), ReplicaError>>,
    },
    Peer(Vec<Message>),
    /// Nobody can be caught up from (a majority of the voters abstains): vote again.
    StopAbstaining,
    /// Reloaded feature flags: this node's apply settings from now on (proposed through the log
    /// when it leads).
    LocalSettings(hyperion_store::ApplySettings),
    /// Admin: hand leadership to the most caught-up follower (the lease is suspended first).
    /// Answers the transfer's target.
    TransferLeadership {
        reply: oneshot::Sender<Result<NodeId, ReplicaError>>,
    },
    /// Sync everything, leave the clean-shutdown marker and stop.
    Stop {
        done: oneshot::Sender<()>,
    },
}

impl Input {
    /// A client's read or write (what a node's CPU spends on, per request).
    pub(super) fn is_client_request(&self) -> bool {
        matches!(self, Input::Write { .. } | Input::Read { .. })
    }
}

/// The handle request handlers use. Cheap to clone.
#[derive(Clone)]
pub struct Replica {
    pub(super) inbox: mpsc::Sender<Input>,
    /// Peer message batches: a queue of their own, served first.
    pub(super) peer_inbox: mpsc::Sender<Vec<Message>>,
    pub(super) shared: Arc<Shared>,
}

impl Replica {
    /// Proposes a write and waits until it is applied (or refused).
    pub async fn write(&self, request: WriteRequest) -> Result<WriteOutcome, ReplicaError> {
        if self.shared.status().role != Some(Role::Leader) {
            return Err(ReplicaError::NotLeader {
                leader: self.shared.leader(),
            });
        }
        if self.is_out_of_space() && request.is_client_write() {
            crate::reachable!("disk_full_write_refused");
            return Err(ReplicaError::OutOfSpace);
        }
        let (reply, answer) = oneshot::channel();
        let trace = crate::telemetry::WriteTrace::begin();
        self.send(Input::Write {
            request,
            reply,
            trace,
        })?;
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

    /// Waits until this node has applied everything the cluster had committed when the call
    /// was made: a read index confirmed by the leader (forwarded to it on a follower), then
    /// applied here. What a Watch stream's sync waits for, on any node.
    pub async fn applied_read_index(&self) -> Result<(), ReplicaError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::Read { reply })?;
        answer.await.map_err(|_| ReplicaError::Stopped)?
    }

    /// The version of `key` in this replica's state machine (expired but not yet removed
    /// entries included), without touching recency; `None` when absent.
    pub fn current_version(&self, key: &[u8]) -> Option<u64> {
        self.shared.machine().store.version_of(key)
    }

    /// Whether this node's device is out of space (client writes are refused until it has room).
    pub fn is_out_of_space(&self) -> bool {
        self.shared
            .out_of_space
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this node serves client caching (`enable_client_caching`: TTL hints, Watch).
    pub fn client_caching(&self) -> bool {
        self.shared.client_caching
    }

    /// Reads this replica's state machine as it is (stale reads, or after a barrier).
    pub fn read_local(&self, key: &[u8], allow_stale: bool) -> ReadAnswer {
        let answer = self.shared.read(key, allow_stale);
        if let ReadOutcome::Corrupt { version } = answer.outcome {
            self.remove_corrupt(key, version);
        }
        answer
    }

    /// A replica changes only through the log: the leader proposes the removal of an entry that
    /// failed its integrity check (once per key at a time), and every replica applies it at the
    /// same index. A follower leaves its copy (never served) until then.
    fn remove_corrupt(&self, key: &[u8], version: u64) {
        if self.shared.faults.local_integrity_removal
            || self.shared.status().role != Some(Role::Leader)
            || !lock(&self.shared.removals_in_flight).insert(key.to_vec())
        {
            return;
        }
        let replica = self.clone();
        let key = key.to_vec();
        crate::runtime::spawn(async move {
            let removal = WriteRequest::DropCorrupt {
                key: key.clone(),
                version,
            };
            if let Err(error) = replica.write(removal).await {
                tracing::warn!(%error, "the removal of a corrupt entry was not applied; a later read retries");
            }
            lock(&replica.shared.removals_in_flight).remove(&key);
        });
    }

    /// This node's invalidation hub: the changes it applies, for client-side caches.
    pub fn watch(&self) -> &Arc<crate::watch::WatchHub> {
        &self.shared.watch
    }

    /// The system of record's client, if configured (metrics, breaker state).
    pub fn record(&self) -> Option<&SystemOfRecord> {
        self.shared.record.as_ref()
    }

    /// Pending write-behind mutations and their bytes.
    pub fn write_behind_backlog(&self) -> (usize, u64) {
        let machine = self.machine();
        (
            machine.write_behind.pending_count(),
            machine.write_behind.pending_bytes(),
        )
    }

    pub(super) fn send(&self, input: Input) -> Result<(), ReplicaError> {
        self.inbox.try_send(input).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ReplicaError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => ReplicaError::Stopped,
        })
    }

    /// Hands peer messages to the loop; returns false if the inbox was full (they are dropped).
    pub(super) fn deliver(&self, messages: Vec<Message>) -> bool {
        if self.shared.faults.shared_peer_inbox {
            // The pre-fix path: peers compete with clients for one inbox.
            return self.inbox.try_send(Input::Peer(messages)).is_ok();
        }
        self.peer_inbox.try_send(messages).is_ok()
    }

    /// Ends this node's abstention (see [`Input::StopAbstaining`]).
    pub fn stop_abstaining(&self) -> Result<(), ReplicaError> {
        self.send(Input::StopAbstaining)
    }

    /// On the leader: suspends the lease and transfers leadership to the most caught-up
    /// follower; answers that follower's id (the transfer completes, or aborts, within an
    /// election timeout). On a follower: `NotLeader` with the leader it knows.
    pub async fn transfer_leadership(&self) -> Result<NodeId, ReplicaError> {
        let (reply, answer) = oneshot::channel();
        self.send(Input::TransferLeadership { reply })?;
        answer.await.unwrap_or(Err(ReplicaError::Stopped))
    }

    /// Adopts reloaded apply settings (compression, eviction, value size) as this node's own; a
    /// leader proposes them through the log, so replicas never disagree.
    pub fn reload_apply_settings(
        &self,
        settings: hyperion_store::ApplySettings,
    ) -> Result<(), ReplicaError> {
        self.send(Input::LocalSettings(settings))
    }

    /// The largest value a write may carry, as applied through the log (`max_value_size_kb`,
    /// reloadable with the feature flags).
    pub fn max_value_bytes(&self) -> usize {
        self.shared.machine().max_value_bytes()
    }

    /// This node's own apply settings (its configuration, and reloaded flags).
    pub fn local_apply_settings(&self) -> hyperion_store::ApplySettings {
        self.shared.machine().local_settings().store
    }

    /// Whether the node loop is running (liveness).
    pub fn is_running(&self) -> bool {
        !self.inbox.is_closed()
    }

    /// Leader changes this node has seen, and snapshots it took.
    pub fn ops_counters(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.shared.leader_changes.load(Ordering::Relaxed),
            self.shared.snapshots.load(Ordering::Relaxed),
        )
    }

    /// Stops the node loop cleanly: everything written is synced and the clean-shutdown marker
    /// is left, so the next start knows nothing acknowledged was lost. Waits until it stopped.
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.inbox.send(Input::Stop { done }).await.is_ok() {
            let _ = stopped.await;
        }
    }

    /// The core's state as of the loop's last turn.
    pub fn status(&self) -> RaftStatus {
        self.shared.status()
    }

    /// The leader's id and address, when known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        self.shared.leader()
    }

    pub fn topology(&self) -> &Topology {
        &self.shared.topology
    }

    /// The node clock (the simulator skews it).
    pub fn clock(&self) -> &NodeClock {
        &self.shared.clock
    }

    /// The fault-injection switches this replica runs with (inert in production).
    pub fn faults(&self) -> &FaultInjection {
        &self.shared.faults
    }

    /// Peer messages dropped because they failed validation.
    pub fn invalid_peer_messages(&self) -> u64 {
        self.shared
            .invalid_peer_messages
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a batch the transport refused (see [`super::inbound::admit`]).
    pub(super) fn refused_peer_batch(&self, count: u64, why: &dyn std::fmt::Display) {
        self.shared.note_invalid_peer_messages(count, why);
    }

    /// Counters and gauges of the store.
    pub fn stats(&self) -> StoreStats {
        self.machine().stats()
    }

    /// The applied log index and a digest of the whole state machine at that index, read
    /// together. Replicas at the same index must have the same digest (state-machine safety;
    /// the simulator checks it).
    pub fn state_digest(&self) -> (u64, u64) {
        let machine = self.machine();
        (machine.applied_index(), machine.digest())
    }

    /// Fault injection (the simulator's `bit_rot`): flips a bit of one stored entry of this
    /// replica, chosen by `pick`, as latent memory or media damage would; its integrity check
    /// must catch it. Returns the damaged key.
    #[doc(hidden)]
    pub fn inject_bit_rot(&self, pick: u64) -> Option<Vec<u8>> {
        self.shared.machine().store.corrupt_any_for_test(pick)
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
        self.machine().store.corrupt_value_for_test(key)
    }

    pub(super) fn machine(&self) -> MutexGuard<'_, Machine> {
        self.shared.machine()
    }
}
