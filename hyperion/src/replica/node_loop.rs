//! The node loop: one task owns the Raft core and its storage, takes inputs (ticks on the node's
//! monotonic clock, peer messages, writes, reads) and drains the core's `Ready` in the order its
//! contract gives — send, persist, send what needed persistence, apply, release reads, snapshot,
//! advance. It proposes writes (grouped into one entry batch when `enable_batching`), stamps them
//! with cluster time, and proposes the removal of expired entries as leader.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hyperion_raft::storage::Storage;
use hyperion_raft::{
    Entry, EntryKind, Message, MessageBody, ProposeError, RaftNode, ReadError, Ready, Role,
    StepError,
};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{mpsc, oneshot};
use tracing::Span;

use super::handle::{Input, Shared};
use super::transport::Peers;
use super::types::{
    BoxedDisk, ClusterSettings, RaftStatus, ReplicaConfig, ReplicaError, WriteOutcome, WriteRequest,
};
use super::wire::Command;
use crate::runtime::{self, FatalExit, FatalHandler};
use crate::telemetry::WriteTrace;

/// Capacity of the node loop's inbox of client inputs. A full inbox answers writes and reads with
/// [`ReplicaError::Overloaded`].
pub const INBOX_MAX: usize = 4096;
/// Capacity of the node loop's inbox of peer message batches, served before client inputs. A full
/// one refuses a batch (the sender counts it and retries; Raft retransmits).
pub const PEER_INBOX_MAX: usize = 1024;
/// Client inputs served between two looks at the turn's time budget.
const CLIENT_CHUNK: usize = 64;
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

type WriteReply = oneshot::Sender<Result<WriteOutcome, ReplicaError>>;

struct PendingWrite {
    term: u64,
    ttl_ms: u64,
    reply: WriteReply,
    trace: WriteTrace,
}

/// The node loop's state.
pub(super) struct NodeLoop {
    raft: RaftNode,
    storage: Storage<BoxedDisk>,
    shared: Arc<Shared>,
    config: ReplicaConfig,
    rng: ChaCha8Rng,
    inbox: mpsc::Receiver<Input>,
    /// Peer messages, served before client inputs.
    peer_inbox: mpsc::Receiver<Vec<Message>>,
    peers: Peers,
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
    write_batch: VecDeque<(WriteRequest, WriteReply, WriteTrace)>,
    next_reap_ms: u64,
    /// A clean stop was asked for; done at the end of this turn.
    stop_requested: Option<oneshot::Sender<()>>,
    /// What to do when the node cannot go on.
    fatal: FatalHandler,
    /// The last term in which this node became leader (and proposed its settings).
    led_term: Option<u64>,
    /// A snapshot from the leader, loaded before the core saw it: (its index, the state).
    loaded_snapshot: Option<(u64, super::machine::LoadedSnapshot)>,
    /// The node's standing with its device (a reserve held, out of space).
    space: space::Space,
}

/// The node loop's channels: the receiving ends of its two queues, and its peers' senders.
pub(super) struct Channels {
    /// Client writes and reads (and the node's own requests).
    pub inbox: mpsc::Receiver<Input>,
    /// Peer message batches, served first.
    pub peer_inbox: mpsc::Receiver<Vec<Message>>,
    /// Outbound links to every other voter.
    pub peers: Peers,
}

mod space;
pub(super) use space::Space;

impl NodeLoop {
    /// The loop of a replica just recovered: `raft` from its storage, `now_ms` its clock.
    pub(super) fn new(
        raft: RaftNode,
        storage: Storage<BoxedDisk>,
        shared: Arc<Shared>,
        config: ReplicaConfig,
        channels: Channels,
        now_ms: u64,
        fatal: FatalHandler,
    ) -> NodeLoop {
        let Channels {
            inbox,
            peer_inbox,
            peers,
        } = channels;
        NodeLoop {
            raft,
            storage,
            shared,
            config,
            rng: runtime::seeded_rng(),
            inbox,
            peer_inbox,
            peers,
            raft_now_ms: now_ms,
            proposed_stamp_ms: 0,
            pending_writes: BTreeMap::new(),
            next_read_id: 1,
            pending_reads: BTreeMap::new(),
            reads_awaiting_apply: VecDeque::new(),
            write_batch: VecDeque::new(),
            next_reap_ms: 0,
            stop_requested: None,
            fatal,
            led_term: None,
            loaded_snapshot: None,
            space: Space::default(),
        }
    }

    /// Starts with this standing with the device (the reserve taken at start, or not).
    pub(super) fn with_space(mut self, space: Space) -> NodeLoop {
        self.shared
            .out_of_space
            .store(space.out_of_space, std::sync::atomic::Ordering::Relaxed);
        self.space = space;
        self
    }
}

impl NodeLoop {
    pub(super) async fn run(mut self) {
        let tick = Duration::from_millis(self.config.raft.tick_interval_ms);
        loop {
            let sleep = runtime::sleep(self.shared.clock.runtime_duration(tick));
            tokio::pin!(sleep);
            // Peer traffic first: client load must never starve Raft (heartbeats, votes, acks).
            let first = tokio::select! {
                biased;
                messages = self.peer_inbox.recv() => messages.map(Input::Peer),
                input = self.inbox.recv() => match input {
                    Some(input) => Some(input),
                    None => return,
                },
                () = &mut sleep => None,
            };
            // The core reads the time of the latest tick in `step`: tick first.
            self.tick();
            // A pause can land here, inside the turn (see `refresh_clock`).
            runtime::preemption_point().await;
            if let Some(input) = first {
                let client_requests = usize::from(input.is_client_request());
                self.handle(input);
                // Take whatever else is queued, peers first, bounded so ticks are never starved.
                for _ in 0..PEER_INBOX_MAX {
                    match self.peer_inbox.try_recv() {
                        Ok(messages) => self.handle(Input::Peer(messages)),
                        Err(_) => break,
                    }
                }
                self.drain_clients(client_requests).await;
            }
            if self.raft.role() == Role::Leader && self.led_term != Some(self.raft.term()) {
                self.led_term = Some(self.raft.term());
                self.propose_settings();
            }
            self.propose_batch();
            if crate::buggify!("delay_before_persist") {
                let delay = runtime::buggify::draw(1, 20);
                runtime::sleep(Duration::from_millis(delay)).await;
            }
            self.process_ready();
            self.publish_status();
            if let Some(done) = self.stop_requested.take() {
                let now_ms = self.shared.clock.monotonic_ms().max(self.raft_now_ms);
                if let Err(error) = self.storage.mark_clean_shutdown(now_ms) {
                    storage_failed(&self.shared, &self.fatal, &error);
                }
                tracing::info!("node loop stopped cleanly");
                let _ = done.send(());
                return;
            }
        }
    }

    /// Serves what clients queued, in chunks, until the queue is empty, [`INBOX_MAX`] inputs
    /// were taken, or the turn used a quarter of a heartbeat interval: under a client overload
    /// the turn ends in time for the tick, the heartbeats and the peers' messages, and what is
    /// left waits in the bounded queue (clients beyond it are refused, safe to retry).
    /// `spent` client requests were already served this turn.
    async fn drain_clients(&mut self, mut spent: usize) {
        let started = runtime::now();
        let budget = Duration::from_millis(self.config.raft.heartbeat_ms / 4);
        let mut taken = 0;
        loop {
            let mut in_chunk = 0;
            let mut empty = false;
            while in_chunk < CLIENT_CHUNK && taken < INBOX_MAX {
                match self.inbox.try_recv() {
                    Ok(input) => {
                        spent += usize::from(input.is_client_request());
                        taken += 1;
                        in_chunk += 1;
                        self.handle(input);
                    }
                    Err(_) => {
                        empty = true;
                        break;
                    }
                }
            }
            runtime::spend_cpu(spent).await;
            spent = 0;
            if empty || taken >= INBOX_MAX || started.elapsed() >= budget {
                return;
            }
        }
    }

    /// Before the cluster's settings apply here: every replica must hold the integrity key the
    /// cluster writes with (else it could not verify what it receives), and an operator should
    /// know when this node's own configuration is not what the cluster applies.
    fn check_cluster_settings(&self, settings: &ClusterSettings) {
        if self.shared.faults.local_apply_settings {
            return;
        }
        let local = self.shared.machine().local_settings();
        if settings.integrity_key_fingerprint != local.integrity_key_fingerprint {
            self.fatal.exit(FatalExit {
                code: runtime::EXIT_CONFIG,
                reason: "HYPERION_HMAC_KEY_FILE: this node's integrity key differs from the one \
                         the cluster writes with (their SHA-256 fingerprints differ); every node \
                         of a cluster must hold the same key"
                    .to_string(),
            });
        }
        let differences = local.differences(settings);
        if !differences.is_empty() {
            tracing::warn!(
                settings = %differences.join(", "),
                "this node's configuration differs from the cluster's settings, which the leader \
                 proposed and every replica applies; set them alike on every node"
            );
        }
    }

    /// As a new leader: proposes this node's settings when the cluster applies others, so that
    /// every replica evicts, compresses and refuses alike (they apply from the log).
    fn propose_settings(&mut self) {
        if self.shared.faults.local_apply_settings {
            return;
        }
        let (local, applied, known) = {
            let machine = self.shared.machine();
            let applied = machine.applied_settings();
            let known = machine.settings.clone();
            (machine.local_settings(), applied, known)
        };
        let same = match known {
            Some(cluster) => cluster == local,
            None => applied == local,
        };
        if !same {
            let (reply, _) = oneshot::channel();
            let settings = WriteRequest::Settings(local);
            self.write_batch
                .push_back((settings, reply, WriteTrace::none()));
        }
    }

    /// Reads the clock and hands the time to the core before a decision that depends on it (a
    /// lease check for a read, or for a follower's read-index request): the tick at the start of
    /// the turn may be arbitrarily old if the process was paused since (SIGSTOP, a VM stall), and
    /// a lease checked against it could be served after a new leader took writes.
    fn refresh_clock(&mut self) {
        if self.shared.faults.stale_lease_clock {
            return;
        }
        self.raft_now_ms = self.raft_now_ms.max(self.shared.clock.monotonic_ms());
        self.raft.tick(self.raft_now_ms);
    }

    fn tick(&mut self) {
        self.raft_now_ms = self.raft_now_ms.max(self.shared.clock.monotonic_ms());
        self.raft.tick(self.raft_now_ms);
        // Ticks come every few milliseconds: one in fifty of those the point fires on.
        if crate::buggify!("early_snapshot") && runtime::buggify::draw(0, 49) == 0 {
            self.raft.request_snapshot();
        }
        if let Err(error) = self.storage.tick(self.raft_now_ms) {
            storage_failed(&self.shared, &self.fatal, &error);
        }
        self.retry_reserve();
        if self.raft.role() == Role::Leader && self.raft_now_ms >= self.next_reap_ms {
            self.next_reap_ms = self.raft_now_ms + REAP_INTERVAL.as_millis() as u64;
            self.propose_expirations();
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer(messages) => {
                if messages
                    .iter()
                    .any(|m| matches!(m.body, MessageBody::ReadIndexRequest { .. }))
                {
                    self.refresh_clock();
                }
                for message in messages {
                    self.step(message);
                }
            }
            Input::Write {
                request,
                reply,
                trace,
            } => {
                if self.pending_writes.len() + self.write_batch.len() >= PENDING_WRITES_MAX {
                    let _ = reply.send(Err(ReplicaError::Overloaded));
                    return;
                }
                self.write_batch.push_back((request, reply, trace));
                if !self.config.enable_batching {
                    self.propose_batch();
                }
            }
            Input::StopAbstaining => {
                if self.raft.abstaining() {
                    tracing::error!(
                        "a majority of the voters is abstaining after losing power together: \
                         nobody holds everything that was acknowledged, so this node votes again; \
                         writes acknowledged in the last sync interval may be lost"
                    );
                    self.raft.stop_abstaining();
                }
            }
            Input::LocalSettings(settings) => {
                self.shared.machine().set_local_apply_settings(settings);
                if self.raft.role() == Role::Leader {
                    self.propose_settings();
                }
            }
            Input::TransferLeadership { reply } => {
                let answer = match self.raft.most_caught_up_follower() {
                    Some(to) => match self.raft.transfer_leader(to) {
                        Ok(()) => {
                            tracing::warn!(to, "admin step-down: transferring leadership");
                            Ok(to)
                        }
                        Err(_) => Err(ReplicaError::NotLeader {
                            leader: self.shared.leader(),
                        }),
                    },
                    None => Err(ReplicaError::NotLeader {
                        leader: self.shared.leader(),
                    }),
                };
                let _ = reply.send(answer);
            }
            Input::Stop { done } => {
                self.stop_requested = Some(done);
            }
            Input::Read { reply } => {
                if self.pending_reads.len() + self.reads_awaiting_apply.len() >= PENDING_READS_MAX {
                    let _ = reply.send(Err(ReplicaError::Overloaded));
                    return;
                }
                // The clock as the read is handled, read once: the lease must hold then (the
                // core is told a time at least this late), whatever time passes after.
                let handled_ms = self.shared.clock.monotonic_ms();
                self.refresh_clock();
                let lease =
                    self.raft.role() == Role::Leader && self.raft.has_valid_lease(self.raft_now_ms);
                crate::sometimes!("lease_read", lease);
                crate::always!(
                    "lease_checked_at_read_time",
                    !lease || self.raft.has_valid_lease(handled_ms),
                    "a read was served under a lease valid at {} ms but not when it was handled ({handled_ms} ms)",
                    self.raft_now_ms
                );
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

    /// Steps one peer message into the core. A snapshot is loaded first: data that does not
    /// load is refused before the core could persist it (and the loaded state is kept for the
    /// install). A message the core finds invalid is dropped and counted.
    fn step(&mut self, message: Message) {
        if matches!(message.body, MessageBody::ReadIndexResponse { .. })
            && crate::buggify!("drop_read_index_response")
        {
            return;
        }
        let validate = !self.shared.faults.unvalidated_peer_input;
        if let (MessageBody::InstallSnapshot { snapshot, .. }, true) = (&message.body, validate) {
            match self.shared.machine().load(&snapshot.data) {
                Ok(loaded) => self.loaded_snapshot = Some((snapshot.meta.index, loaded)),
                Err(error) => {
                    self.shared.note_invalid_peer_messages(
                        1,
                        &format_args!(
                            "snapshot {} from node {}: {error}",
                            snapshot.meta.index, message.from
                        ),
                    );
                    return;
                }
            }
        }
        match self.raft.step(message) {
            Ok(()) => {}
            Err(StepError::Invalid(invalid)) => self.shared.note_invalid_peer_messages(1, &invalid),
            Err(error) => tracing::warn!(%error, "ignored peer message"),
        }
    }

    fn read_error(&self, error: ReadError) -> ReplicaError {
        match error {
            ReadError::NotLeader { .. } => ReplicaError::NotLeader {
                leader: self.shared.leader(),
            },
            ReadError::TooManyPendingReads => ReplicaError::Overloaded,
            ReadError::LeadershipLost | ReadError::Unanswered => ReplicaError::ReadAborted,
        }
    }

    /// Cluster time for a new stamp: the node clock, never behind what was proposed or applied.
    fn next_stamp_ms(&mut self) -> u64 {
        let applied = self.shared.machine().applied_stamp_ms;
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
            while let Some((request, reply, trace)) = (commands.len() < WRITE_BATCH_MAX
                && bytes < WRITE_BATCH_BYTES_MAX)
                .then(|| self.write_batch.pop_front())
                .flatten()
            {
                if request.is_client_write() {
                    if let Some(refusal) = self.record_refusal() {
                        let _ = reply.send(Err(refusal));
                        continue;
                    }
                }
                let stamp = self.next_stamp_ms();
                let stagger = self.config.stagger_ttl.then_some(&mut self.rng);
                let (command, ttl_ms) = Command::for_request(request, stamp, stagger);
                // No command that a replica could not apply enters the log.
                if let (Err(invalid), false) =
                    (command.check(), self.shared.faults.unvalidated_peer_input)
                {
                    tracing::error!(%invalid, "refused to propose an invalid command");
                    let _ = reply.send(Err(ReplicaError::InvalidCommand(invalid.to_string())));
                    continue;
                }
                let encoded = command.encode();
                bytes += encoded.len();
                commands.push(encoded);
                replies.push((ttl_ms, reply, trace));
            }
            if commands.is_empty() {
                // Every write of this round was refused before proposing.
                continue;
            }
            match self.raft.propose(commands) {
                Ok(indexes) => {
                    let term = self.raft.term();
                    for (index, (ttl_ms, reply, mut trace)) in indexes.zip(replies) {
                        trace.proposed(index, term);
                        let pending = PendingWrite {
                            term,
                            ttl_ms,
                            reply,
                            trace,
                        };
                        self.pending_writes.insert(index, pending);
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
                    for (_, reply, _) in replies {
                        let _ = reply.send(Err(refusal.clone()));
                    }
                }
            }
        }
    }

    /// Why client writes must wait for the system of record, if they must.
    fn record_refusal(&self) -> Option<ReplicaError> {
        let machine = self.shared.machine();
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
        let keys = self
            .shared
            .machine()
            .store
            .collect_expired(horizon_ms, EXPIRE_BATCH_MAX);
        if keys.is_empty() {
            return;
        }
        let command = Command::Expire {
            now_ms: horizon_ms,
            keys,
        };
        if let Err(invalid) = command.check() {
            tracing::error!(%invalid, "refused to propose an invalid expiry");
            return;
        }
        if let Err(error) = self.raft.propose(vec![command.encode()]) {
            tracing::debug!(%error, "expiry proposal refused");
        }
    }

    fn process_ready(&mut self) {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            self.handle_ready(ready);
        }
        if self.storage.catching_up() && !self.raft.abstaining() {
            if let Err(error) = self.storage.mark_caught_up() {
                storage_failed(&self.shared, &self.fatal, &error);
            }
            tracing::info!("caught up with the leader; voting again");
        }
        self.release_applied_reads();
        self.pending_writes
            .retain(|_, pending| !pending.reply.is_closed());
    }

    fn handle_ready(&mut self, mut ready: Ready) {
        // 1. Messages that need no persistence leave at once.
        crate::sometimes!("snapshot_sent", ready.messages.iter().any(is_snapshot));
        self.peers.send_all(std::mem::take(&mut ready.messages));
        // 2. Persist.
        let durable = self.persist_ready(&ready);
        // 3. Votes and acknowledgements, now that what they promise is durable.
        let persisted = std::mem::take(&mut ready.persisted_messages).release(durable);
        crate::sometimes!(
            "append_rejected_log_lost",
            persisted.iter().any(rejects_for_lost_log)
        );
        self.peers.send_all(persisted);
        // 4. Install a snapshot from the leader, then apply committed entries.
        if ready.snapshot_install {
            crate::reachable!("snapshot_installed");
            if let Some(snapshot) = &ready.snapshot {
                self.install_snapshot(&snapshot.data, snapshot.meta.index);
            }
        }
        for entry in std::mem::take(&mut ready.committed_entries) {
            self.apply(entry);
        }
        // 5. Reads: linearizable once the entries above are applied.
        crate::sometimes!(
            "read_index_round_10",
            ready.reads.len() >= 10
                && !(self.raft.role() == Role::Leader
                    && self.raft.has_valid_lease(self.raft_now_ms))
        );
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
            let timer = &self.config.timers.snapshot;
            super::timing::take_snapshot(&mut self.raft, &self.shared, index, timer);
        }
    }

    fn install_snapshot(&mut self, data: &[u8], index: u64) {
        let loaded = match self.loaded_snapshot.take() {
            Some((loaded_index, loaded)) if loaded_index == index => Ok(loaded),
            _ => self.shared.machine().load(data),
        };
        match loaded {
            Ok(loaded) => self.shared.install(loaded, index),
            // Loaded before the core accepted it (unless fault injection skipped that): a
            // snapshot that fails now is a bug, and a replica that cannot load the leader's
            // state cannot continue consistently.
            Err(error) => panic!("cannot install the leader's snapshot: {error}"),
        }
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
        let mut pending = self.pending_writes.remove(&entry.index);
        let applying = pending
            .as_mut()
            .map_or_else(Span::none, |p| p.trace.committed());
        let _applying = applying.enter();
        let result = match &entry.kind {
            EntryKind::NoOp => {
                self.shared.apply_noop(entry.index);
                None
            }
            EntryKind::Command(bytes) => {
                let command = match Command::decode(bytes) {
                    Ok(command) => command,
                    Err(error) => panic!("log entry {} does not decode: {error}", entry.index),
                };
                if let Command::Settings(settings) = &command {
                    self.check_cluster_settings(settings);
                }
                Some(self.shared.apply(entry.index, command))
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

    pub(super) fn publish_status(&self) {
        // The lease as of now, not as of the turn's tick: the turn may have been paused.
        let now_ms = if self.shared.faults.stale_lease_clock {
            self.raft_now_ms
        } else {
            self.raft_now_ms.max(self.shared.clock.monotonic_ms())
        };
        let lease_expires_at = self
            .raft
            .lease_valid_until()
            .filter(|&until| until > now_ms)
            .map(|until| {
                let remaining = Duration::from_millis(until - now_ms);
                runtime::now() + self.shared.clock.runtime_duration(remaining)
            });
        let status = RaftStatus {
            role: Some(self.raft.role()),
            term: self.raft.term(),
            leader_id: self.raft.leader_id(),
            commit_index: self.raft.commit_index(),
            applied_index: self.raft.applied_index(),
            last_index: self.raft.last_index(),
            log_bytes: self.raft.log_bytes(),
            lease_expires_at,
            abstaining: self.raft.abstaining(),
        };
        self.shared.publish(status);
    }
}

/// A storage failure leaves the node's durable state unknown: it must stop rather than answer
/// votes or acknowledge writes it may not have persisted, and never retry an fsync that failed
/// (the page cache may have dropped the dirty pages: the fsyncgate lesson).
fn storage_failed(shared: &Shared, fatal: &FatalHandler, error: &dyn std::fmt::Display) -> ! {
    if shared.faults.zombie_on_task_panic {
        // The pre-fix behaviour: the node loop panics, and the process lives on without it.
        panic!("fatal storage error: {error}");
    }
    fatal.exit(FatalExit {
        code: runtime::EXIT_STORAGE_FAILED,
        reason: format!(
            "storage failed ({error}); this node's durable state is unknown, so it stops rather \
             than acknowledge what it may not have stored"
        ),
    })
}

fn is_snapshot(message: &Message) -> bool {
    matches!(message.body, MessageBody::InstallSnapshot { .. })
}

fn rejects_for_lost_log(message: &Message) -> bool {
    matches!(
        &message.body,
        MessageBody::AppendResponse { result: Err(reject), .. }
            if reject.rejected_prev_index == hyperion_raft::message::LOG_LOST
    )
}
