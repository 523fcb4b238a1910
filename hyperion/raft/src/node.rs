//! The Raft core: a pure, synchronous state machine (no I/O, no clock, no entropy of its own).
//!
//! # Contract
//! - Inputs: [`RaftNode::tick`] (the node's own clock, monotonic, at least every
//!   `Config::tick_interval_ms`), [`RaftNode::step`], [`RaftNode::propose`],
//!   [`RaftNode::read_index`], [`RaftNode::transfer_leader`], [`RaftNode::step_down`],
//!   [`RaftNode::snapshot_taken`]. `step` and the others use the time of the latest `tick`.
//! - Output: [`RaftNode::ready`] hands out a [`Ready`]; the driver handles it in this order and then
//!   calls [`RaftNode::advance`]:
//!   1. send `messages` (allowed at once, even before persisting);
//!   2. persist `snapshot`, `hard_state`, `entries` (entries starting at index `i` replace any
//!      persisted entries `≥ i`), e.g. with [`crate::storage::Storage::persist`], which returns the
//!      [`Durable`] proof;
//!   3. send `persisted_messages.release(durable)` (votes and acks, §5.1: never before the state
//!      they promise is durable — enforced by the type);
//!   4. install `snapshot` into the state machine if `snapshot_install`, then apply
//!      `committed_entries` in order;
//!   5. answer `reads` (each is linearizable once step 4 is done) and `failed_reads`;
//!   6. if `snapshot_request` is set, serialize the state machine at that applied index and call
//!      `snapshot_taken` (may be later);
//!   7. `advance(durable)`.
//! - Safety mechanisms, each citing the paper (Ongaro 2014 dissertation): PreVote (§9.6),
//!   CheckQuorum (§6.2), no-op on election (§6.4), Figure-8 commit rule (§3.6.2), pipelined
//!   AppendEntries with a bounded window (§10.2.2), conflict-term back-off (§5.3), snapshots
//!   (§5), leader lease with vote stickiness (§6.4.1), read-index (§6.4), leader transfer (§3.10).
//! - Invariants are `assert!`ed: a violation is a bug and crashes the node.
//!
//! # Leader lease
//! Every message a leader sends carries its current heartbeat `round`; each round records its
//! start time on the leader's clock (≤ the send time of every message tagged with it). Followers
//! echo the round. When a quorum (including the leader) acknowledged rounds `≥ r`, leadership
//! was confirmed after round `r` started, so pending reads of rounds `≤ r` are released and the
//! lease is extended to `start(r) + lease_duration_ms`. Followers that acknowledged refuse votes
//! and term bumps for `election_timeout_ms` after hearing from the leader (and after a restart),
//! so by the inequality checked in [`Config::validate`] no other node can become leader while the
//! lease is valid. The lease is suspended for the rest of the term once a transfer starts, and on
//! step-down (any loss of leadership).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::log::RaftLog;
use crate::message::{
    AppendReject, Entry, EntryKind, HardState, Membership, Message, MessageBody, NodeId, Snapshot,
    SnapshotMeta,
};

mod validate;
pub use validate::{InvalidMessage, APPEND_ENTRIES_MAX, INDEX_MAX};

/// The slowest link a snapshot is expected to cross, in bytes per millisecond (10 MB/s): a
/// leader waits this long per byte, beyond [`Config::snapshot_resend_ms`], before it presumes a
/// snapshot lost; the product's transport gives a message the same time to arrive.
pub const SNAPSHOT_BYTES_PER_MS_MIN: u64 = 10_000;

/// How many heartbeat rounds a leader remembers the start time of. A round older than this is
/// more than `ROUNDS_TRACKED_MAX × heartbeat_ms` old, far beyond the election timeout after which
/// CheckQuorum would have deposed the leader anyway; forgetting it only forgoes a lease extension.
pub const ROUNDS_TRACKED_MAX: usize = 64;

/// The request id a catching-up node uses for its read-index request to the leader (drivers
/// number their own reads from 1, so it never collides).
pub const CATCH_UP_REQUEST_ID: u64 = u64::MAX;

/// Why, and until when, a node neither votes nor campaigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abstention {
    None,
    /// Until the commit index reaches this.
    UntilCommit(u64),
    /// Until a leader told it how far to catch up (`asked`: when a request went out; it is
    /// asked again after an election timeout without an answer).
    UntilCaughtUp {
        asked: Option<u64>,
    },
}

/// The role of a node (§3.3, plus the pre-candidate of §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Passive; answers leaders and candidates.
    Follower,
    /// Asking for pre-votes without changing its term (§9.6).
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Handles proposals and replication.
    Leader,
}

/// A read that may be served: the state machine has applied at least `index` once the
/// `committed_entries` of the same [`Ready`] are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The caller's id from [`RaftNode::read_index`].
    pub request_id: u64,
    /// The read index (§6.4).
    pub index: u64,
}

/// Errors of [`RaftNode::read_index`] (also delivered later in `Ready::failed_reads`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReadError {
    /// No leader is known; retry elsewhere or later.
    #[error("not leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node this one believes leads, if any.
        leader_hint: Option<NodeId>,
    },
    /// `Config::pending_reads_max` reads are already pending.
    #[error("too many pending reads")]
    TooManyPendingReads,
    /// Leadership changed before the read was confirmed; retry.
    #[error("leadership changed before the read was confirmed")]
    LeadershipLost,
    /// The leader did not answer this follower's read-index request within an election
    /// timeout (the request or its answer was lost); retry.
    #[error("the leader did not answer the read-index request in time")]
    Unanswered,
}

/// Errors of [`RaftNode::propose`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProposeError {
    /// Only the leader accepts proposals.
    #[error("not leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node this one believes leads, if any.
        leader_hint: Option<NodeId>,
    },
    /// A leader transfer is in progress; proposals would be lost or delayed.
    #[error("leader transfer in progress")]
    TransferInProgress,
    /// The proposal holds no command.
    #[error("empty proposal")]
    Empty,
    /// `Config::uncommitted_entries_max` entries are already waiting to commit.
    #[error("too many uncommitted entries")]
    TooManyUncommitted,
}

/// Errors of [`RaftNode::transfer_leader`] and [`RaftNode::step_down`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LeadershipError {
    /// The node does not lead.
    #[error("not leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The node this one believes leads, if any.
        leader_hint: Option<NodeId>,
    },
    /// The target is not a voter of the cluster.
    #[error("node {0} is not a voter")]
    UnknownNode(NodeId),
}

/// Errors of [`RaftNode::step`]: the message was ignored.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum StepError {
    /// The message is addressed to another node.
    #[error("message for node {to} delivered to node {me}")]
    WrongRecipient {
        /// Addressee.
        to: NodeId,
        /// This node.
        me: NodeId,
    },
    /// The sender is not a member.
    #[error("message from unknown node {0}")]
    UnknownSender(NodeId),
    /// The message failed validation (see [`RaftNode::check_message`]); it was dropped.
    #[error(transparent)]
    Invalid(#[from] InvalidMessage),
}

/// Errors of [`RaftNode::snapshot_taken`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// The index is not applied yet, or already covered by a snapshot.
    #[error("snapshot index {index} outside (snapshot {snapshot_index}, applied {applied}]")]
    OutOfRange {
        /// Requested index.
        index: u64,
        /// Current snapshot index.
        snapshot_index: u64,
        /// Current applied index.
        applied: u64,
    },
}

/// Errors of [`RaftNode::new`].
#[derive(Clone, Debug, PartialEq, Error)]
pub enum NewNodeError {
    /// The configuration is unsafe.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `id` is not among `voters`.
    #[error("node {0} is not among the voters")]
    NotAVoter(NodeId),
    /// The recovered state is inconsistent.
    #[error("recovered state is inconsistent: {0}")]
    InvalidRecovery(String),
}

/// The durable state a node restarts from (see [`crate::storage::Storage::open`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    /// Last persisted term, vote and commit.
    pub hard_state: HardState,
    /// Last persisted snapshot.
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, consecutive.
    pub entries: Vec<Entry>,
    /// The node must catch up with a leader before it votes again: it stopped without a clean
    /// shutdown and the machine lost power (or rebooted) since, while entry data was not synced
    /// on every write (`EverySec`), so entries it acknowledged may be gone; or an earlier such
    /// catch-up (or a rejoin with an empty log) is not finished. It then neither votes nor
    /// campaigns until it has caught up (see [`RaftNode::abstain_until_caught_up`]).
    pub unsynced_loss_possible: bool,
}

/// Proof that the persistent parts of the [`Ready`] numbered `ready_number` are durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    ready_number: u64,
}

impl Durable {
    /// For drivers that persist with their own storage: the caller asserts that it made the
    /// Ready durable (term and vote synced; entries per its sync policy).
    pub fn assert_persisted(ready: &Ready) -> Durable {
        Durable {
            ready_number: ready.number,
        }
    }

    /// The Ready this proof is for.
    pub fn ready_number(&self) -> u64 {
        self.ready_number
    }
}

/// Messages that may leave only after the Ready that produced them is durable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AfterPersist {
    ready_number: u64,
    messages: Vec<Message>,
}

impl AfterPersist {
    /// Hands the messages out, given proof that their Ready is durable.
    pub fn release(self, durable: Durable) -> Vec<Message> {
        assert_eq!(
            durable.ready_number, self.ready_number,
            "proof for another Ready"
        );
        self.messages
    }

    /// Looks without sending (logging, transcripts).
    pub fn peek(&self) -> &[Message] {
        &self.messages
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Everything the driver must do after a batch of inputs; see the module docs for the order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ready {
    /// Sequence number, matched by [`Durable`].
    pub number: u64,
    /// Term, vote and commit to persist, if they changed.
    pub hard_state: Option<HardState>,
    /// A snapshot to persist atomically (and to install if `snapshot_install`).
    pub snapshot: Option<Snapshot>,
    /// The snapshot came from the leader and replaces the state machine.
    pub snapshot_install: bool,
    /// Entries to append (the first one's index may be ≤ the persisted last index: truncate).
    pub entries: Vec<Entry>,
    /// Messages that may be sent at once.
    pub messages: Vec<Message>,
    /// Messages to send only after persisting.
    pub persisted_messages: AfterPersist,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Reads that may be served after applying `committed_entries`.
    pub reads: Vec<ReadState>,
    /// Reads that failed; the caller should retry them.
    pub failed_reads: Vec<(u64, ReadError)>,
    /// Please snapshot the state machine at this applied index and call `snapshot_taken`.
    pub snapshot_request: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProgressState {
    /// Probing for the match point: one append in flight at a time.
    Probe,
    /// Pipelining: up to `inflight_appends_max` appends in flight.
    Replicate,
    /// A snapshot at this index is in flight (until `Progress::snapshot_resend_at_ms`).
    Snapshot(u64),
}

/// The leader's view of one follower (§5.3 `nextIndex`/`matchIndex`).
#[derive(Clone, Debug)]
struct Progress {
    match_index: u64,
    next_index: u64,
    state: ProgressState,
    /// Last index of each append in flight, ascending.
    inflight: VecDeque<u64>,
    probe_sent: bool,
    acked_round: u64,
    last_heard_ms: u64,
    /// When the snapshot of `ProgressState::Snapshot` is presumed lost and sent again (node
    /// clock): `snapshot_resend_ms` after it was sent, plus its transfer time at
    /// [`SNAPSHOT_BYTES_PER_MS_MIN`].
    snapshot_resend_at_ms: u64,
}

#[derive(Clone, Debug)]
struct PendingRead {
    origin: NodeId,
    request_id: u64,
    /// `None` until the leader committed an entry of its term (§6.4 step 1).
    index: Option<u64>,
    round: u64,
}

#[derive(Clone, Debug)]
struct Outstanding {
    number: u64,
    last_entry: Option<(u64, u64)>,
}

/// One Raft node. See the module docs.
#[derive(Debug)]
pub struct RaftNode {
    id: NodeId,
    voters: Vec<NodeId>,
    config: Config,
    rng: ChaCha8Rng,
    now_ms: u64,

    term: u64,
    vote: Option<NodeId>,
    role: Role,
    leader_id: Option<NodeId>,
    log: RaftLog,
    applied: u64,
    /// The latest snapshot, while a follower may need its bytes; `None` once none does (the
    /// bytes are on disk, and the state machine rebuilds a snapshot when a follower needs one:
    /// `snapshot_rebuild`). Holding it for good would cost a copy of the whole cache.
    snapshot: Option<Snapshot>,
    /// A follower needs a snapshot whose bytes were released: the next `Ready` asks the driver
    /// for one, at the applied index (the same index as the last snapshot if nothing was
    /// applied since).
    snapshot_rebuild: bool,

    election_deadline_ms: u64,
    last_heard_leader_ms: Option<u64>,
    sticky_until_ms: u64,
    /// Rejoin after data loss: neither vote nor campaign until caught up (see
    /// [`RaftNode::abstain_until`] and [`RaftNode::abstain_until_caught_up`]).
    abstention: Abstention,
    /// The highest index known to match the log of `leader_id` in this term: a commit index
    /// learned from that leader is only ever applied up to here (§5.3: only entries the leader
    /// verified by the consistency check are known to be its).
    leader_matched: u64,
    votes: BTreeMap<NodeId, bool>,

    progress: BTreeMap<NodeId, Progress>,
    round: u64,
    round_started_ms: BTreeMap<u64, u64>,
    confirmed_round: u64,
    next_heartbeat_ms: u64,
    became_leader_ms: u64,
    lease_start_ms: Option<u64>,
    lease_suspended: bool,
    transfer: Option<(NodeId, u64)>,
    pending_reads: Vec<PendingRead>,
    /// Reads forwarded to the leader, by request id: when they fail if still unanswered.
    forwarded_reads: BTreeMap<u64, u64>,
    reads_awaiting_apply: Vec<ReadState>,

    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    failed_reads: Vec<(u64, ReadError)>,
    emitted_hard_state: HardState,
    pending_snapshot: Option<(Snapshot, bool)>,
    snapshot_requested: bool,
    /// The driver asked for a snapshot before the thresholds ([`RaftNode::request_snapshot`]).
    snapshot_asked: bool,
    ready_number: u64,
    outstanding: Option<Outstanding>,
}

impl RaftNode {
    /// Creates a node from its durable state (`Recovered::default()` for a new node).
    /// `rng` drives only the randomized election timeout. The node refuses votes and term
    /// bumps for `election_timeout_ms` from `now_ms` (it may have acknowledged a lease just
    /// before it restarted, §6.4.1).
    pub fn new(
        id: NodeId,
        voters: Vec<NodeId>,
        config: Config,
        rng: ChaCha8Rng,
        recovered: Recovered,
        now_ms: u64,
    ) -> Result<RaftNode, NewNodeError> {
        config.validate()?;
        let mut voters = voters;
        voters.sort_unstable();
        voters.dedup();
        if !voters.contains(&id) {
            return Err(NewNodeError::NotAVoter(id));
        }
        let Recovered {
            mut hard_state,
            snapshot,
            entries,
            unsynced_loss_possible,
        } = recovered;
        let (snap_index, snap_term) = snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.index, s.meta.term));
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.index > snap_index)
            .collect();
        if let Some(first) = entries.first() {
            if first.index != snap_index + 1 {
                return Err(NewNodeError::InvalidRecovery(format!(
                    "first entry {} does not follow snapshot {snap_index}",
                    first.index
                )));
            }
        }
        let mut log = RaftLog::new(snap_index, snap_term, entries);
        if config.mutations.forget_term_and_vote {
            hard_state.term = log.last_term();
            hard_state.vote = None;
        }
        if hard_state.term < log.last_term() {
            return Err(NewNodeError::InvalidRecovery(format!(
                "term {} below last log term {}",
                hard_state.term,
                log.last_term()
            )));
        }
        // Commit is persisted lazily; it can only be trusted up to what the log holds.
        log.commit_to(hard_state.commit.clamp(snap_index, log.last_index()));
        let mut node = RaftNode {
            id,
            voters,
            config,
            rng,
            now_ms,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader_id: None,
            log,
            applied: snap_index,
            snapshot,
            election_deadline_ms: 0,
            abstention: Abstention::None,
            leader_matched: 0,
            last_heard_leader_ms: None,
            sticky_until_ms: now_ms,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            round: 0,
            round_started_ms: BTreeMap::new(),
            confirmed_round: 0,
            next_heartbeat_ms: 0,
            became_leader_ms: 0,
            lease_start_ms: None,
            lease_suspended: false,
            transfer: None,
            pending_reads: Vec::new(),
            forwarded_reads: BTreeMap::new(),
            reads_awaiting_apply: Vec::new(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            failed_reads: Vec::new(),
            emitted_hard_state: HardState {
                term: hard_state.term,
                vote: hard_state.vote,
                commit: 0,
            },
            pending_snapshot: None,
            snapshot_rebuild: false,
            snapshot_requested: false,
            snapshot_asked: false,
            ready_number: 0,
            outstanding: None,
        };
        node.emitted_hard_state.commit = node.log.commit;
        node.sticky_until_ms = now_ms + node.config.election_timeout_ms;
        node.reset_election_deadline();
        node.leader_matched = node.log.commit;
        if unsynced_loss_possible && !node.config.mutations.vote_after_power_loss {
            node.abstain_until_caught_up();
        }
        if node.voters.len() == 1 {
            // A one-voter cluster has nobody to wait for or to split a vote with: it campaigns at
            // its first tick instead of after an election timeout.
            node.election_deadline_ms = now_ms;
        }
        Ok(node)
    }

    // ----------------------------------------------------------------------------------------
    // Observability.

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Current role.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Current term.
    pub fn term(&self) -> u64 {
        self.term
    }
    /// Vote in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    /// The leader this node follows (itself when leading).
    pub fn leader_id(&self) -> Option<NodeId> {
        self.leader_id
    }
    /// Highest index known committed.
    pub fn commit_index(&self) -> u64 {
        self.log.commit
    }
    /// Highest index handed out to apply (in a Ready).
    pub fn applied_index(&self) -> u64 {
        self.applied
    }
    /// Last log index.
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }
    /// Index covered by the latest snapshot.
    pub fn snapshot_index(&self) -> u64 {
        self.log.snapshot_index
    }

    /// Bytes of the latest snapshot this node holds in memory to send (0 once released: see
    /// `snapshot` in the struct).
    pub fn snapshot_bytes_held(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.data.len())
    }

    /// Asks for a snapshot (and the compaction after it) at the next `Ready`, whatever the
    /// thresholds say, once anything beyond the last snapshot is applied.
    pub fn request_snapshot(&mut self) {
        self.snapshot_asked = true;
    }

    /// Memory the log after the snapshot holds: payloads plus
    /// [`ENTRY_OVERHEAD_BYTES`](crate::ENTRY_OVERHEAD_BYTES) per entry.
    pub fn log_bytes(&self) -> u64 {
        self.log.held_bytes()
    }
    /// Term of the entry at `index`, if held (the snapshot's last entry counts).
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term(index)
    }
    /// The entry at `index`, if held and not compacted.
    pub fn entry(&self, index: u64) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// Voters of the cluster.
    pub fn voters(&self) -> &[NodeId] {
        &self.voters
    }
    /// Time of the latest `tick`.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }
    /// End of the leader lease on this node's clock, if it leads with an unsuspended lease.
    pub fn lease_valid_until(&self) -> Option<u64> {
        if self.role != Role::Leader || self.lease_suspended {
            return None;
        }
        self.lease_start_ms
            .map(|start| start + self.config.lease_duration_ms)
    }
    /// Whether the lease is valid at `now_ms` (this node's clock).
    pub fn has_valid_lease(&self, now_ms: u64) -> bool {
        self.lease_valid_until().is_some_and(|until| now_ms < until)
    }
    /// Whether a [`Ready`] has anything to do.
    pub fn has_ready(&self) -> bool {
        self.emitted_hard_state != self.hard_state()
            || self.pending_snapshot.is_some()
            || self.log.stable_index < self.log.last_index()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || self.applied < self.log.commit
            || !self.failed_reads.is_empty()
            || self
                .reads_awaiting_apply
                .iter()
                .any(|r| r.index <= self.log.commit)
            || self.wants_snapshot()
            || self.reads_need_round()
    }

    fn reads_need_round(&self) -> bool {
        self.role == Role::Leader && self.pending_reads.iter().any(|r| r.round == 0)
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// A snapshot is due when the applied log beyond the last one holds too many entries or
    /// too many bytes (only the applied prefix counts: it is all a snapshot can compact).
    fn wants_snapshot(&self) -> bool {
        if self.snapshot_requested {
            return false;
        }
        if self.snapshot_rebuild && self.snapshot.is_none() {
            return true;
        }
        if self.applied <= self.log.snapshot_index {
            return false;
        }
        let entries = self.applied - self.log.snapshot_index;
        self.snapshot_asked
            || entries >= self.config.compaction_threshold_entries
            || (!self.config.mutations.ignore_log_bytes
                && self.log.held_bytes_through(self.applied)
                    >= self.config.compaction_threshold_bytes)
    }

    // ----------------------------------------------------------------------------------------
    // Inputs.

    /// Advances the node's clock and fires timers: heartbeats, CheckQuorum and transfer timeout
    /// on a leader; the election timeout otherwise.
    pub fn tick(&mut self, now_ms: u64) {
        assert!(
            now_ms >= self.now_ms,
            "node clock went backwards: {now_ms} < {}",
            self.now_ms
        );
        self.now_ms = now_ms;
        self.expire_forwarded_reads();
        if self.role == Role::Leader {
            if let Some((_, deadline)) = self.transfer {
                if now_ms >= deadline {
                    // §3.10: abort the transfer; the lease stays suspended for this term (a delayed
                    // transfer vote may still arrive, and voters skip stickiness for it).
                    self.transfer = None;
                }
            }
            // CheckQuorum (§6.2): step down when a quorum has not been heard from for an
            // election timeout, so a deposed leader stops serving.
            if now_ms >= self.became_leader_ms + self.config.election_timeout_ms {
                let window = self.config.election_timeout_ms;
                let active = 1 + self
                    .progress
                    .values()
                    .filter(|p| now_ms < p.last_heard_ms + window)
                    .count();
                if active < self.quorum() {
                    self.become_follower(self.term, None);
                    return;
                }
            }
            if now_ms >= self.next_heartbeat_ms {
                self.start_round();
            }
        } else if self.abstaining() {
            self.reset_election_deadline();
        } else if now_ms >= self.election_deadline_ms {
            if self.config.mutations.skip_pre_vote {
                self.become_candidate(false);
            } else {
                self.start_pre_vote();
            }
        }
    }

    /// A node that lost its durable state (an empty data directory) may have acknowledged
    /// entries that are now held by fewer than a majority. Until its log is committed up to
    /// `index` — the leader's last index when it rejoined, which covers everything it can have
    /// acknowledged — it grants no vote and starts no election, so it cannot help elect a
    /// leader that lacks those entries (§3.8 relies on durable acknowledgements). It still
    /// replicates, so the majority holding them is restored.
    pub fn abstain_until(&mut self, index: u64) {
        self.abstention = Abstention::UntilCommit(index);
    }

    /// Like [`RaftNode::abstain_until`], when the node does not know how far it must catch up (it
    /// may have lost acknowledged entries to a power loss): on first hearing from a leader it
    /// asks for a read index (§6.4; the leader answers once it has committed an entry of its term,
    /// so the index covers everything committed before), then abstains until its commit index
    /// reaches it. A single-voter cluster has nobody to catch up from and does not abstain.
    pub fn abstain_until_caught_up(&mut self) {
        if self.voters.len() > 1 {
            self.abstention = Abstention::UntilCaughtUp { asked: None };
        }
    }

    /// Ends an abstention at once: the driver learned that there is nobody to catch up from (a
    /// majority of the cluster is abstaining after losing power together).
    pub fn stop_abstaining(&mut self) {
        self.abstention = Abstention::None;
    }

    /// Ends an abstention whose target the commit index reached. The node may have voted in
    /// this term before it lost its state, and does not remember for whom: it takes its own vote
    /// for the rest of the term (persisted with the hard state), so it can never vote twice in
    /// it (§5.2).
    fn finish_abstention(&mut self) {
        if let Abstention::UntilCommit(index) = self.abstention {
            if self.log.commit >= index {
                self.abstention = Abstention::None;
                if self.vote.is_none() {
                    self.vote = Some(self.id);
                }
            }
        }
    }

    /// Whether the node is still abstaining (see [`RaftNode::abstain_until`]).
    pub fn abstaining(&self) -> bool {
        // Ends only in `finish_abstention` (at the next `ready()` once caught up), which also
        // takes the node's own vote for the term.
        self.abstention != Abstention::None
    }

    /// Processes one message (using the time of the latest tick).
    pub fn step(&mut self, msg: Message) -> Result<(), StepError> {
        if msg.to != self.id {
            return Err(StepError::WrongRecipient {
                to: msg.to,
                me: self.id,
            });
        }
        if !self.voters.contains(&msg.from) || msg.from == self.id {
            return Err(StepError::UnknownSender(msg.from));
        }
        if !self.config.mutations.skip_message_validation {
            self.check_message(&msg)?;
        }
        if msg.term > self.term {
            match &msg.body {
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::RequestVote {
                    leader_transfer, ..
                } => {
                    // §6.4.1 / §4.2.3: a node that heard from a live leader recently ignores
                    // votes for a newer term, so the leader's lease holds.
                    if !leader_transfer && self.is_sticky() {
                        return Ok(());
                    }
                    self.become_follower(msg.term, None);
                }
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
                | MessageBody::TimeoutNow => self.become_follower(msg.term, Some(msg.from)),
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            // A stale sender: tell leaders and candidates the newer term (§5.1).
            let reply = match &msg.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    Some(MessageBody::HeartbeatResponse { round: 0 })
                }
                MessageBody::PreVote { .. } => {
                    Some(MessageBody::PreVoteResponse { granted: false })
                }
                MessageBody::RequestVote { .. } => {
                    Some(MessageBody::RequestVoteResponse { granted: false })
                }
                _ => None,
            };
            if let Some(body) = reply {
                self.send(msg.from, body);
            }
            return Ok(());
        }
        let from = msg.from;
        let term = msg.term;
        match msg.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => self.handle_vote_request(from, term, true, last_log_index, last_log_term, false),
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                leader_transfer,
            } => self.handle_vote_request(
                from,
                term,
                false,
                last_log_index,
                last_log_term,
                leader_transfer,
            ),
            MessageBody::PreVoteResponse { granted } => {
                if self.role == Role::PreCandidate && term == self.term + 1 {
                    self.votes.insert(from, granted);
                    self.count_votes();
                }
            }
            MessageBody::RequestVoteResponse { granted } => {
                if self.role == Role::Candidate && term == self.term {
                    self.votes.insert(from, granted);
                    self.count_votes();
                }
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                round,
            } => {
                self.follow(from);
                self.handle_append(
                    from,
                    prev_log_index,
                    prev_log_term,
                    &entries,
                    leader_commit,
                    round,
                )
            }
            MessageBody::Heartbeat {
                leader_commit,
                round,
            } => {
                self.follow(from);
                // A heartbeat carries no entries, so it proves nothing about our log: commit
                // only what an append of this leader verified (§5.3). Our log may hold a
                // conflicting suffix at those indexes (a power loss took the entries we had
                // acknowledged, and older ones came back).
                let verified = if self.config.mutations.unverified_commit {
                    self.log.last_index()
                } else {
                    self.leader_matched
                };
                self.log.commit_to(leader_commit.min(verified));
                self.send(from, MessageBody::HeartbeatResponse { round });
                if leader_commit > verified {
                    // The leader's hint is min(commit, our match index): it believes we hold
                    // entries we cannot show we hold. Ask it to replicate from where our log is
                    // known to match, so the consistency check repairs any conflict.
                    self.send(
                        from,
                        MessageBody::AppendResponse {
                            result: Err(AppendReject {
                                rejected_prev_index: crate::message::LOG_LOST,
                                conflict_term: None,
                                conflict_index: verified + 1,
                            }),
                            round,
                        },
                    );
                }
            }
            MessageBody::InstallSnapshot { snapshot, round } => {
                self.follow(from);
                self.handle_install_snapshot(from, snapshot, round);
            }
            MessageBody::AppendResponse { result, round } => {
                self.handle_append_response(from, result, round)
            }
            MessageBody::HeartbeatResponse { round } => {
                if self.role == Role::Leader {
                    self.heard_from(from, round);
                    let last_index = self.log.last_index();
                    let Some(p) = self.progress.get_mut(&from) else {
                        return Ok(());
                    };
                    p.probe_sent = false;
                    let (behind, state, match_index) =
                        (p.match_index < last_index, p.state, p.match_index);
                    // A snapshot can take many heartbeats to arrive: resending it on each one
                    // would queue copy after copy of it, and the follower would never catch up.
                    let snapshot_in_flight = matches!(state, ProgressState::Snapshot(_))
                        && self.now_ms < p.snapshot_resend_at_ms
                        && !self.config.mutations.resend_snapshot_every_heartbeat;
                    if snapshot_in_flight {
                        return Ok(());
                    }
                    // The follower is alive but behind: an append or snapshot may have been
                    // lost, so resend from its match point (duplicates are harmless).
                    if behind && state != ProgressState::Probe {
                        self.reprobe(from, match_index + 1);
                    } else if behind {
                        self.send_appends_to(from, false);
                    }
                }
            }
            MessageBody::TimeoutNow => {
                // §3.10: the leader asked us to take over; skip PreVote. Not while abstaining:
                // a node that may lack acknowledged entries must not lead (and the request may
                // be for an earlier incarnation of this node).
                if self.role == Role::Follower && self.leader_id == Some(from) && !self.abstaining()
                {
                    self.become_candidate(true);
                }
            }
            MessageBody::ReadIndexRequest { request_id } => {
                if self.role == Role::Leader {
                    if let Err(_e) = self.leader_read(from, request_id) {
                        self.send(
                            from,
                            MessageBody::ReadIndexResponse {
                                request_id,
                                read_index: None,
                            },
                        );
                    }
                } else {
                    self.send(
                        from,
                        MessageBody::ReadIndexResponse {
                            request_id,
                            read_index: None,
                        },
                    );
                }
            }
            MessageBody::ReadIndexResponse {
                request_id,
                read_index,
            } => {
                if request_id == CATCH_UP_REQUEST_ID {
                    if let Abstention::UntilCaughtUp { .. } = self.abstention {
                        self.abstention = match read_index {
                            Some(index) => Abstention::UntilCommit(index),
                            // Leadership changed: ask the next leader we hear from.
                            None => Abstention::UntilCaughtUp { asked: None },
                        };
                    }
                } else if self.forwarded_reads.remove(&request_id).is_some() {
                    match read_index {
                        Some(index) => self
                            .reads_awaiting_apply
                            .push(ReadState { request_id, index }),
                        None => self
                            .failed_reads
                            .push((request_id, ReadError::LeadershipLost)),
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends commands to the leader's log; returns the indices assigned.
    pub fn propose(&mut self, commands: Vec<Vec<u8>>) -> Result<Range<u64>, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if commands.is_empty() {
            return Err(ProposeError::Empty);
        }
        let uncommitted = self.log.last_index() - self.log.commit + commands.len() as u64;
        if uncommitted > self.config.uncommitted_entries_max {
            return Err(ProposeError::TooManyUncommitted);
        }
        let first = self.log.last_index() + 1;
        for c in commands {
            self.log.append_new(self.term, EntryKind::Command(c.into()));
        }
        self.broadcast_appends();
        Ok(first..self.log.last_index() + 1)
    }

    /// Requests a linearizable read (§6.4). The answer comes in `Ready::reads` (or
    /// `Ready::failed_reads`). A leader with a valid lease answers from its commit index at once;
    /// otherwise it confirms leadership with a heartbeat round shared by all reads queued before
    /// the next `ready()`. A follower forwards the request to the leader.
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ReadError> {
        if self.pending_reads.len() + self.forwarded_reads.len() + self.reads_awaiting_apply.len()
            >= self.config.pending_reads_max
        {
            return Err(ReadError::TooManyPendingReads);
        }
        if self.role == Role::Leader {
            return self.leader_read(self.id, request_id);
        }
        match self.leader_id {
            Some(leader) if self.role == Role::Follower => {
                let deadline = self.now_ms + self.config.election_timeout_ms;
                self.forwarded_reads.insert(request_id, deadline);
                self.send(leader, MessageBody::ReadIndexRequest { request_id });
                Ok(())
            }
            _ => Err(ReadError::NotLeader {
                leader_hint: self.leader_id,
            }),
        }
    }

    /// Hands leadership to `to` (§3.10): stop accepting proposals, suspend the lease for the rest
    /// of the term, bring `to` up to date, then send it `TimeoutNow`. Aborts after an election
    /// timeout.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), LeadershipError> {
        if self.role != Role::Leader {
            return Err(LeadershipError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if !self.voters.contains(&to) {
            return Err(LeadershipError::UnknownNode(to));
        }
        if to == self.id {
            return Ok(());
        }
        self.lease_suspended = true;
        self.transfer = Some((to, self.now_ms + self.config.election_timeout_ms));
        self.maybe_send_timeout_now();
        self.send_appends_to(to, true);
        Ok(())
    }

    /// On a leader: the follower whose log matches the leader's furthest (ties: the lowest id),
    /// the best target of a leadership transfer. `None` on a follower or a single node.
    pub fn most_caught_up_follower(&self) -> Option<NodeId> {
        if self.role != Role::Leader {
            return None;
        }
        self.progress
            .iter()
            .filter(|(&id, _)| id != self.id && self.voters.contains(&id))
            .max_by_key(|(&id, progress)| (progress.match_index, std::cmp::Reverse(id)))
            .map(|(&id, _)| id)
    }

    /// Gives up leadership in the current term (the lease ends with it). Followers elect a new
    /// leader after their election timeout.
    pub fn step_down(&mut self) -> Result<(), LeadershipError> {
        if self.role != Role::Leader {
            return Err(LeadershipError::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        self.become_follower(self.term, None);
        Ok(())
    }

    /// The state machine serialized itself at `index` (≤ applied): compact the log up to it.
    pub fn snapshot_taken(&mut self, index: u64, data: Vec<u8>) -> Result<(), SnapshotError> {
        self.snapshot_requested = false;
        if index == self.log.snapshot_index && self.snapshot.is_none() && index <= self.applied {
            // A rebuild of the released snapshot at the same index: the state is the one already
            // on disk, so there is nothing to compact or persist; it is held to be sent.
            self.snapshot_rebuild = false;
            self.snapshot = Some(Snapshot {
                meta: SnapshotMeta {
                    index,
                    term: self.log.snapshot_term,
                    membership: Membership {
                        voters: self.voters.clone(),
                    },
                },
                data: data.into(),
            });
            return Ok(());
        }
        if index <= self.log.snapshot_index || index > self.applied {
            return Err(SnapshotError::OutOfRange {
                index,
                snapshot_index: self.log.snapshot_index,
                applied: self.applied,
            });
        }
        // Provably present: snapshot_index < index ≤ applied ≤ commit ≤ last_index.
        let term = self
            .log
            .term(index)
            .unwrap_or_else(|| unreachable!("applied index held"));
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership: Membership {
                    voters: self.voters.clone(),
                },
            },
            data: data.into(),
        };
        self.log.compact(index, term);
        self.snapshot = Some(snapshot.clone());
        self.pending_snapshot = Some((snapshot, false));
        self.snapshot_rebuild = false;
        Ok(())
    }

    /// Releases the snapshot's bytes unless a follower may need them: only a leader sends
    /// snapshots, and only to a follower being sent one or whose log ends before the snapshot.
    /// Not before the driver took the pending snapshot to persist it.
    fn release_snapshot_bytes(&mut self) {
        let Some(index) = self.snapshot.as_ref().map(|s| s.meta.index) else {
            return;
        };
        if self.pending_snapshot.is_some() || self.config.mutations.hold_snapshot_bytes {
            return;
        }
        let needed = self.role == Role::Leader
            && self.progress.iter().any(|(peer, p)| {
                *peer != self.id
                    && (p.match_index < index || matches!(p.state, ProgressState::Snapshot(_)))
            });
        if !needed {
            self.snapshot = None;
        }
    }

    /// Collects everything the driver must do. Call [`RaftNode::advance`] before the next call.
    pub fn ready(&mut self) -> Ready {
        assert!(
            self.outstanding.is_none(),
            "ready() called again before advance()"
        );
        self.finish_abstention();
        if self.reads_need_round() {
            // One heartbeat round confirms every read queued since the last Ready (§6.4).
            for read in &mut self.pending_reads {
                if read.round == 0 {
                    read.round = self.round + 1;
                }
            }
            self.start_round();
        }
        self.ready_number += 1;
        let hard_state = self.hard_state();
        assert!(
            hard_state.term >= self.emitted_hard_state.term,
            "term decreased"
        );
        assert!(
            hard_state.commit >= self.emitted_hard_state.commit,
            "commit decreased"
        );
        let hard_state_out = (hard_state != self.emitted_hard_state).then_some(hard_state);
        self.emitted_hard_state = hard_state;

        let (snapshot, snapshot_install) = match self.pending_snapshot.take() {
            Some((s, install)) => {
                if install {
                    self.applied = s.meta.index;
                }
                (Some(s), install)
            }
            None => (None, false),
        };
        let entries = self.log.unstable();
        let last_entry = entries.last().map(|e| (e.index, e.term));

        assert!(
            self.applied >= self.log.snapshot_index,
            "applied below snapshot"
        );
        let committed_entries = if self.log.commit > self.applied {
            self.log
                .slice(self.applied + 1, self.log.commit, usize::MAX)
        } else {
            Vec::new()
        };
        assert!(self.applied <= self.log.commit || committed_entries.is_empty());
        self.applied = self.applied.max(self.log.commit);

        let applied = self.applied;
        let (reads, waiting): (Vec<ReadState>, Vec<ReadState>) = self
            .reads_awaiting_apply
            .drain(..)
            .partition(|r| r.index <= applied);
        self.reads_awaiting_apply = waiting;

        self.release_snapshot_bytes();
        let snapshot_request = if self.wants_snapshot() {
            self.snapshot_requested = true;
            self.snapshot_asked = false;
            Some(self.applied)
        } else {
            None
        };
        self.outstanding = Some(Outstanding {
            number: self.ready_number,
            last_entry,
        });
        Ready {
            number: self.ready_number,
            hard_state: hard_state_out,
            snapshot,
            snapshot_install,
            entries,
            messages: std::mem::take(&mut self.messages),
            persisted_messages: AfterPersist {
                ready_number: self.ready_number,
                messages: std::mem::take(&mut self.persisted_messages),
            },
            committed_entries,
            reads,
            failed_reads: std::mem::take(&mut self.failed_reads),
            snapshot_request,
        }
    }

    /// Acknowledges that the last [`Ready`] was handled.
    pub fn advance(&mut self, durable: Durable) {
        let outstanding = self
            .outstanding
            .take()
            .unwrap_or_else(|| panic!("advance without ready"));
        assert_eq!(
            outstanding.number, durable.ready_number,
            "advance for another Ready"
        );
        if let Some((index, term)) = outstanding.last_entry {
            // Entries may have been truncated and replaced since; only the same (index, term)
            // is the same entry (Log Matching).
            if self.log.term(index) == Some(term) {
                self.log.stable_index = self.log.stable_index.max(index);
            }
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    // ----------------------------------------------------------------------------------------
    // Elections (§3.4, §9.6).

    fn is_sticky(&self) -> bool {
        if self.config.mutations.disable_vote_stickiness {
            return false;
        }
        let window = self.config.election_timeout_ms;
        self.role == Role::Leader
            || self.now_ms < self.sticky_until_ms
            || self
                .last_heard_leader_ms
                .is_some_and(|t| self.now_ms < t + window)
    }

    fn reset_election_deadline(&mut self) {
        let t = self.config.election_timeout_ms;
        self.election_deadline_ms = self.now_ms + t + self.rng.random_range(0..t);
    }

    fn start_pre_vote(&mut self) {
        self.reset_election_deadline();
        self.fail_forwarded_reads();
        self.role = Role::PreCandidate;
        self.leader_id = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        if self.count_votes() {
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers() {
            self.send_with_term(
                peer,
                self.term + 1,
                MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                },
            );
        }
    }

    fn become_candidate(&mut self, leader_transfer: bool) {
        self.set_term(self.term + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader_id = None;
        self.fail_forwarded_reads();
        self.reset_election_deadline();
        self.votes.clear();
        self.votes.insert(self.id, true);
        if self.count_votes() {
            return;
        }
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers() {
            self.send(
                peer,
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    leader_transfer,
                },
            );
        }
    }

    /// Returns true if the role changed.
    fn count_votes(&mut self) -> bool {
        let granted = self.votes.values().filter(|g| **g).count();
        let rejected = self.votes.len() - granted;
        if granted >= self.quorum() {
            match self.role {
                Role::PreCandidate => self.become_candidate(false),
                Role::Candidate => self.become_leader(),
                _ => unreachable!("counting votes as {:?}", self.role),
            }
            true
        } else if rejected >= self.quorum() {
            self.become_follower(self.term, None);
            true
        } else {
            false
        }
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: u64,
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: u64,
        leader_transfer: bool,
    ) {
        let sticky = !leader_transfer && self.is_sticky() && self.vote != Some(from);
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader_id.is_none())
            || (pre_vote && term > self.term);
        // §5.4.1: the candidate's log must be at least as up to date as ours.
        let up_to_date =
            (last_log_term, last_log_index) >= (self.log.last_term(), self.log.last_index());
        let granted = !sticky && can_vote && up_to_date && !self.abstaining();
        if pre_vote {
            let reply_term = if granted { term } else { self.term };
            self.send_with_term(from, reply_term, MessageBody::PreVoteResponse { granted });
        } else {
            if granted {
                self.vote = Some(from);
                self.reset_election_deadline();
            }
            self.send(from, MessageBody::RequestVoteResponse { granted });
        }
    }

    fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        let term_changed = term > self.term;
        if term_changed {
            self.set_term(term);
        }
        if self.role == Role::Leader {
            for read in std::mem::take(&mut self.pending_reads) {
                self.fail_read(read.origin, read.request_id);
            }
            self.progress.clear();
            self.lease_start_ms = None;
            self.transfer = None;
            self.round_started_ms.clear();
        }
        if self.leader_id != leader || term_changed {
            // Only committed entries are known to be in every leader's log (§5.4).
            self.leader_matched = self.log.commit;
        }
        if self.leader_id != leader {
            self.fail_forwarded_reads();
            if let Abstention::UntilCaughtUp { .. } = self.abstention {
                self.abstention = Abstention::UntilCaughtUp { asked: None };
            }
        }
        self.role = Role::Follower;
        self.leader_id = leader;
        self.votes.clear();
        self.reset_election_deadline();
    }

    /// Called for every message from the leader of the current term.
    fn follow(&mut self, leader: NodeId) {
        assert!(
            self.role != Role::Leader,
            "election safety: two leaders ({} and {leader}) in term {}",
            self.id,
            self.term
        );
        if self.role != Role::Follower || self.leader_id != Some(leader) {
            self.become_follower(self.term, Some(leader));
        }
        self.last_heard_leader_ms = Some(self.now_ms);
        self.reset_election_deadline();
        if let Abstention::UntilCaughtUp { asked: None } = self.abstention {
            self.abstention = Abstention::UntilCaughtUp {
                asked: Some(self.now_ms),
            };
            self.send(
                leader,
                MessageBody::ReadIndexRequest {
                    request_id: CATCH_UP_REQUEST_ID,
                },
            );
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader_id = Some(self.id);
        self.became_leader_ms = self.now_ms;
        self.lease_start_ms = None;
        self.lease_suspended = false;
        self.transfer = None;
        self.confirmed_round = 0;
        self.round_started_ms.clear();
        let next_index = self.log.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|peer| {
                let p = Progress {
                    match_index: 0,
                    next_index,
                    state: ProgressState::Probe,
                    inflight: VecDeque::new(),
                    probe_sent: false,
                    acked_round: 0,
                    last_heard_ms: self.now_ms,
                    snapshot_resend_at_ms: 0,
                };
                (peer, p)
            })
            .collect();
        // §6.4 / §3.6.2: a no-op of the new term lets earlier entries commit and read-index start.
        self.log.append_new(self.term, EntryKind::NoOp);
        self.start_round();
        self.maybe_commit();
    }

    fn set_term(&mut self, term: u64) {
        assert!(
            term > self.term,
            "term must only grow: {} -> {term}",
            self.term
        );
        self.term = term;
        self.vote = None;
        self.lease_suspended = false;
    }

    fn peers(&self) -> Vec<NodeId> {
        self.voters
            .iter()
            .copied()
            .filter(|v| *v != self.id)
            .collect()
    }

    // ----------------------------------------------------------------------------------------
    // Replication (§5.3, §10.2).

    fn start_round(&mut self) {
        self.round += 1;
        self.round_started_ms.insert(self.round, self.now_ms);
        while self.round_started_ms.len() > ROUNDS_TRACKED_MAX {
            self.round_started_ms.pop_first();
        }
        self.next_heartbeat_ms = self.now_ms + self.config.heartbeat_ms;
        for peer in self.peers() {
            if !self.send_appends_to(peer, false) {
                let p = &self.progress[&peer];
                let leader_commit = self.log.commit.min(p.match_index);
                let round = self.round;
                self.send(
                    peer,
                    MessageBody::Heartbeat {
                        leader_commit,
                        round,
                    },
                );
            }
        }
        self.update_confirmed_round();
    }

    fn broadcast_appends(&mut self) {
        for peer in self.peers() {
            self.send_appends_to(peer, false);
        }
    }

    /// Sends as many appends to `peer` as its state allows; returns whether any was sent.
    fn send_appends_to(&mut self, peer: NodeId, allow_empty: bool) -> bool {
        let mut sent = false;
        while let Some(more) = self.send_one_append(peer, allow_empty && !sent) {
            sent = true;
            if !more {
                break;
            }
        }
        sent
    }

    /// Sends at most one append (or snapshot); `None` if nothing was sent, else whether another
    /// one may follow.
    fn send_one_append(&mut self, peer: NodeId, allow_empty: bool) -> Option<bool> {
        let p = self.progress.get(&peer)?;
        match p.state {
            ProgressState::Snapshot(_) => return None,
            ProgressState::Probe if p.probe_sent => return None,
            ProgressState::Replicate if p.inflight.len() >= self.config.inflight_appends_max => {
                return None
            }
            _ => {}
        }
        let next = p.next_index;
        let state = p.state;
        let prev_log_index = next - 1;
        let round = self.round;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // The follower needs entries we compacted away: send the snapshot (§7).
            let Some(snapshot) = self.snapshot.clone() else {
                // Its bytes were released: the next Ready asks the state machine for a snapshot,
                // and the next append round sends it.
                self.snapshot_rebuild = true;
                return None;
            };
            if let Some(p) = self.progress.get_mut(&peer) {
                p.state = ProgressState::Snapshot(snapshot.meta.index);
                let transfer_ms = snapshot.data.len() as u64 / SNAPSHOT_BYTES_PER_MS_MIN;
                p.snapshot_resend_at_ms = self
                    .now_ms
                    .saturating_add(self.config.snapshot_resend_ms)
                    .saturating_add(transfer_ms);
                p.inflight.clear();
            }
            self.send(peer, MessageBody::InstallSnapshot { snapshot, round });
            return Some(false);
        };
        let entries = if next <= self.log.last_index() {
            self.log.slice(
                next,
                self.log
                    .last_index()
                    .min(next + APPEND_ENTRIES_MAX as u64 - 1),
                self.config.append_bytes_max,
            )
        } else {
            Vec::new()
        };
        if entries.is_empty() && !(allow_empty || state == ProgressState::Probe) {
            return None;
        }
        let last_sent = prev_log_index + entries.len() as u64;
        if let Some(p) = self.progress.get_mut(&peer) {
            match state {
                ProgressState::Replicate if !entries.is_empty() => {
                    p.next_index = last_sent + 1;
                    p.inflight.push_back(last_sent);
                }
                ProgressState::Probe => p.probe_sent = true,
                _ => {}
            }
        }
        let leader_commit = self.log.commit;
        self.send(
            peer,
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                round,
            },
        );
        // Pipelining continues only in Replicate and only while there are entries to send.
        Some(state == ProgressState::Replicate && last_sent > prev_log_index)
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: u64,
        prev_log_term: u64,
        entries: &[Entry],
        leader_commit: u64,
        round: u64,
    ) {
        let result = if prev_log_index < self.log.commit {
            // Committed entries match the leader's (Leader Completeness); report our commit.
            self.leader_matched = self.leader_matched.max(self.log.commit);
            Ok(self.log.commit)
        } else {
            match self.log.term(prev_log_index) {
                Some(t) if t == prev_log_term => {
                    if let Some(first) = entries.first() {
                        assert_eq!(first.index, prev_log_index + 1, "malformed append");
                    }
                    self.log.merge(entries);
                    let last_new = prev_log_index + entries.len() as u64;
                    // Our log now matches this leader's up to `last_new` (§5.3); whatever a
                    // conflict truncated beyond it is no longer known to match.
                    self.leader_matched =
                        self.leader_matched.min(self.log.last_index()).max(last_new);
                    self.log.commit_to(leader_commit.min(last_new));
                    Ok(last_new)
                }
                Some(t) => Err(AppendReject {
                    rejected_prev_index: prev_log_index,
                    conflict_term: Some(t),
                    conflict_index: self.log.first_index_of_term(t, prev_log_index),
                }),
                None => Err(AppendReject {
                    rejected_prev_index: prev_log_index,
                    conflict_term: None,
                    conflict_index: self.log.last_index() + 1,
                }),
            }
        };
        self.send(from, MessageBody::AppendResponse { result, round });
    }

    fn handle_install_snapshot(&mut self, from: NodeId, snapshot: Snapshot, round: u64) {
        let index = snapshot.meta.index;
        if index > self.log.commit {
            self.leader_matched = self.leader_matched.max(index);
            self.log.compact(index, snapshot.meta.term);
            self.snapshot = Some(snapshot.clone());
            self.pending_snapshot = Some((snapshot, true));
            self.snapshot_requested = false;
        }
        let result = Ok(self.log.commit);
        self.send(from, MessageBody::AppendResponse { result, round });
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        result: Result<u64, AppendReject>,
        round: u64,
    ) {
        if self.role != Role::Leader {
            return;
        }
        self.heard_from(from, round);
        let last_index = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        match result {
            Ok(match_index) => {
                assert!(
                    match_index <= last_index,
                    "follower matched beyond the leader's log"
                );
                p.probe_sent = false;
                if match_index > p.match_index {
                    p.match_index = match_index;
                }
                p.next_index = p.next_index.max(p.match_index + 1);
                while p.inflight.front().is_some_and(|i| *i <= match_index) {
                    p.inflight.pop_front();
                }
                match p.state {
                    ProgressState::Probe => {
                        p.state = ProgressState::Replicate;
                        p.next_index = p.match_index + 1;
                        p.inflight.clear();
                    }
                    ProgressState::Snapshot(index) if p.match_index >= index => {
                        p.state = ProgressState::Replicate;
                        p.next_index = p.match_index + 1;
                        p.inflight.clear();
                    }
                    _ => {}
                }
                self.maybe_commit();
                self.maybe_send_timeout_now();
                self.send_appends_to(from, false);
            }
            Err(reject) if reject.rejected_prev_index == crate::message::LOG_LOST => {
                // The follower lost entries it had acknowledged: forget its match index (lower
                // is always safe for commit counting) and replicate from where its log ends.
                if reject.conflict_index <= p.match_index {
                    p.match_index = reject.conflict_index - 1;
                    self.reprobe(from, reject.conflict_index);
                }
            }
            Err(reject) => {
                let (match_index, next_index, state) = (p.match_index, p.next_index, p.state);
                if reject.rejected_prev_index < match_index
                    || (state == ProgressState::Probe
                        && reject.rejected_prev_index + 1 != next_index)
                {
                    return; // stale
                }
                // Fast back-off (§5.3): skip the whole conflicting term.
                let hint = match reject.conflict_term {
                    Some(t) => match self.log.last_index_of_term(t) {
                        Some(i) => i + 1,
                        None => reject.conflict_index,
                    },
                    None => reject.conflict_index,
                };
                let next = hint.min(reject.rejected_prev_index).max(match_index + 1);
                self.reprobe(from, next);
            }
        }
    }

    /// Falls back to probing `peer` from `next`.
    fn reprobe(&mut self, peer: NodeId, next: u64) {
        if let Some(p) = self.progress.get_mut(&peer) {
            p.next_index = next;
            p.state = ProgressState::Probe;
            p.probe_sent = false;
            p.inflight.clear();
        }
        self.send_appends_to(peer, true);
    }

    /// Records that `peer` acknowledged our leadership in this term during `round`.
    fn heard_from(&mut self, peer: NodeId, round: u64) {
        let now = self.now_ms;
        if let Some(p) = self.progress.get_mut(&peer) {
            p.last_heard_ms = now;
            p.acked_round = p.acked_round.max(round);
        }
        self.update_confirmed_round();
    }

    fn update_confirmed_round(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut acked: Vec<u64> = self.progress.values().map(|p| p.acked_round).collect();
        acked.push(self.round);
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_round = acked[self.quorum() - 1];
        if quorum_round <= self.confirmed_round {
            return;
        }
        self.confirmed_round = quorum_round;
        if let Some(started) = self.round_started_ms.get(&quorum_round).copied() {
            if !self.lease_suspended {
                let start = self.lease_start_ms.map_or(started, |s| s.max(started));
                self.lease_start_ms = Some(start);
            }
        }
        let keep = self.round_started_ms.split_off(&quorum_round);
        self.round_started_ms = keep;
        self.process_reads();
    }

    /// Figure 8 / §3.6.2: only an entry of the current term is committed by counting replicas.
    fn maybe_commit(&mut self) {
        let mut matched: Vec<u64> = self.progress.values().map(|p| p.match_index).collect();
        matched.push(self.log.stable_index);
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.quorum() - 1];
        if candidate > self.log.commit && self.log.term(candidate) == Some(self.term) {
            self.log.commit_to(candidate);
            self.process_reads();
        }
    }

    fn maybe_send_timeout_now(&mut self) {
        if let Some((to, _)) = self.transfer {
            if self
                .progress
                .get(&to)
                .is_some_and(|p| p.match_index == self.log.last_index())
            {
                self.send(to, MessageBody::TimeoutNow);
            }
        }
    }

    // ----------------------------------------------------------------------------------------
    // Reads (§6.4).

    fn committed_in_term(&self) -> bool {
        self.log.term(self.log.commit) == Some(self.term)
    }

    fn leader_read(&mut self, origin: NodeId, request_id: u64) -> Result<(), ReadError> {
        if self.pending_reads.len() >= self.config.pending_reads_max {
            return Err(ReadError::TooManyPendingReads);
        }
        if self.committed_in_term() && self.has_valid_lease(self.now_ms) {
            // §6.4.1: the lease proves no other leader can have committed anything.
            let index = self.log.commit;
            self.release_read(origin, request_id, index);
            return Ok(());
        }
        // The confirming heartbeat round starts at the next `ready()`, so every read queued
        // until then shares it (round 0 = not yet assigned).
        let index = self.committed_in_term().then_some(self.log.commit);
        self.pending_reads.push(PendingRead {
            origin,
            request_id,
            index,
            round: 0,
        });
        self.process_reads();
        Ok(())
    }

    fn process_reads(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let commit = self.log.commit;
        let committed_in_term = self.committed_in_term();
        let confirmed = self.confirmed_round;
        let mut released = Vec::new();
        self.pending_reads.retain_mut(|r| {
            if r.index.is_none() && committed_in_term {
                r.index = Some(commit);
            }
            match r.index {
                Some(index) if r.round != 0 && r.round <= confirmed => {
                    released.push((r.origin, r.request_id, index));
                    false
                }
                _ => true,
            }
        });
        for (origin, request_id, index) in released {
            self.release_read(origin, request_id, index);
        }
    }

    fn release_read(&mut self, origin: NodeId, request_id: u64, index: u64) {
        if origin == self.id {
            self.reads_awaiting_apply
                .push(ReadState { request_id, index });
        } else {
            self.send(
                origin,
                MessageBody::ReadIndexResponse {
                    request_id,
                    read_index: Some(index),
                },
            );
        }
    }

    fn fail_read(&mut self, origin: NodeId, request_id: u64) {
        if origin == self.id {
            self.failed_reads
                .push((request_id, ReadError::LeadershipLost));
        } else {
            self.send(
                origin,
                MessageBody::ReadIndexResponse {
                    request_id,
                    read_index: None,
                },
            );
        }
    }

    /// Fails the forwarded reads the leader left unanswered for an election timeout (a lost
    /// answer must not hold a pending-read slot for as long as the leader lives), and forgets an
    /// unanswered catch-up request so that it is asked again.
    fn expire_forwarded_reads(&mut self) {
        if self.config.mutations.keep_unanswered_reads {
            return;
        }
        let now = self.now_ms;
        // The catch-up request too: the next message from the leader asks again.
        if let Abstention::UntilCaughtUp { asked: Some(at) } = self.abstention {
            if now >= at + self.config.election_timeout_ms {
                self.abstention = Abstention::UntilCaughtUp { asked: None };
            }
        }
        let expired: Vec<u64> = self
            .forwarded_reads
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for request_id in expired {
            self.forwarded_reads.remove(&request_id);
            self.failed_reads.push((request_id, ReadError::Unanswered));
        }
    }

    fn fail_forwarded_reads(&mut self) {
        for request_id in std::mem::take(&mut self.forwarded_reads).into_keys() {
            self.failed_reads
                .push((request_id, ReadError::LeadershipLost));
        }
    }

    // ----------------------------------------------------------------------------------------
    // Output.

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: u64, body: MessageBody) {
        let persisted = body.requires_persistence();
        let msg = Message {
            from: self.id,
            to,
            term,
            body,
        };
        if persisted {
            self.persisted_messages.push(msg);
        } else {
            self.messages.push(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn drive(node: &mut RaftNode) -> Ready {
        let ready = node.ready();
        let durable = Durable::assert_persisted(&ready);
        node.advance(durable);
        ready
    }

    #[test]
    fn single_node_elects_itself_commits_and_serves_lease_reads() {
        let rng = ChaCha8Rng::seed_from_u64(1);
        let mut node =
            RaftNode::new(1, vec![1], Config::default(), rng, Recovered::default(), 0).unwrap();
        node.tick(2999);
        node.tick(3000);
        assert_eq!(node.role(), Role::Leader);
        assert!(node.has_valid_lease(3000));
        drive(&mut node);
        assert_eq!(node.commit_index(), 1, "no-op commits once persisted");
        let range = node.propose(vec![b"a".to_vec(), b"b".to_vec()]).unwrap();
        assert_eq!(range, 2..4);
        drive(&mut node);
        node.read_index(7).unwrap();
        let ready = drive(&mut node);
        assert_eq!(node.commit_index(), 3);
        assert_eq!(
            ready.reads,
            vec![ReadState {
                request_id: 7,
                index: 3
            }]
        );
        assert_eq!(ready.committed_entries.len(), 2);
        node.step_down().unwrap();
        assert!(!node.has_valid_lease(3000));
        assert_eq!(
            node.propose(vec![b"c".to_vec()]),
            Err(ProposeError::NotLeader { leader_hint: None })
        );
    }

    #[test]
    fn rejects_non_member_and_unsafe_config() {
        let rng = || ChaCha8Rng::seed_from_u64(1);
        let err = RaftNode::new(
            4,
            vec![1, 2, 3],
            Config::default(),
            rng(),
            Recovered::default(),
            0,
        );
        assert_eq!(err.err(), Some(NewNodeError::NotAVoter(4)));
        let config = Config {
            lease_duration_ms: 1500,
            ..Config::default()
        };
        let err = RaftNode::new(1, vec![1, 2, 3], config, rng(), Recovered::default(), 0);
        assert!(matches!(err, Err(NewNodeError::Config(e)) if e.field == "lease_duration_ms"));
    }

    #[test]
    fn votes_wait_for_persistence_in_the_type() {
        let rng = ChaCha8Rng::seed_from_u64(3);
        let mut node = RaftNode::new(
            1,
            vec![1, 2, 3],
            Config::default(),
            rng,
            Recovered::default(),
            0,
        )
        .unwrap();
        node.tick(3000);
        assert_eq!(node.role(), Role::PreCandidate);
        let ready = drive(&mut node);
        assert_eq!(ready.messages.len(), 2, "pre-votes need no persistence");
        for from in [2, 3] {
            node.step(Message {
                from,
                to: 1,
                term: 1,
                body: MessageBody::PreVoteResponse { granted: true },
            })
            .unwrap();
        }
        assert_eq!(node.role(), Role::Candidate);
        let ready = node.ready();
        assert!(ready.messages.is_empty());
        assert_eq!(
            ready.persisted_messages.peek().len(),
            2,
            "votes only after persisting"
        );
        assert_eq!(
            ready.hard_state.map(|h| (h.term, h.vote)),
            Some((1, Some(1)))
        );
    }
}
