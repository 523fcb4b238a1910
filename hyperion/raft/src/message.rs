//! Plain data types exchanged between Raft cores and with the driver.
//!
//! Contract: every type here is a value (`Clone + Debug + PartialEq`) with no behaviour, so the
//! transport can map it 1:1 to protobuf (`proto/raft.proto`) later. Field names follow the Raft
//! paper (Ongaro & Ousterhout 2014, Figure 2; dissertation chapters 3, 6, 9).

/// Identifier of a Raft node; unique and stable for the life of the cluster.
pub type NodeId = u64;

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// An opaque command for the state machine. Shared, not copied: the log, the storage's
    /// mirror of it, the entries handed to the driver and every AppendEntries hold the same
    /// bytes.
    Command(bytes::Bytes),
    /// The empty entry a new leader appends to commit entries of earlier terms (§5.4.2, §6.4).
    NoOp,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The leader term in which the entry was created.
    pub term: u64,
    /// Position in the log, starting at 1.
    pub index: u64,
    /// The payload.
    pub kind: EntryKind,
}

impl Entry {
    /// Payload size used for the per-message byte bound.
    pub fn payload_bytes(&self) -> usize {
        match &self.kind {
            EntryKind::Command(data) => data.len(),
            EntryKind::NoOp => 0,
        }
    }
}

/// The state that must be durable before the node answers any vote or append request (Figure 2,
/// "Persistent state on all servers"; `commit` is persisted only to speed up restart).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: u64,
    /// The candidate that received this node's vote in `term`.
    pub vote: Option<NodeId>,
    /// Highest log index known committed.
    pub commit: u64,
}

/// Static cluster membership (voters only). Kept in snapshots so that joint consensus can be
/// added later without a format change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Voting members, sorted and deduplicated.
    pub voters: Vec<NodeId>,
}

/// Metadata of a snapshot: the log prefix it replaces (§7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Index of the last entry covered.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Membership as of `index`.
    pub membership: Membership,
}

/// A state-machine snapshot with its metadata; `data` is opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub meta: SnapshotMeta,
    /// Serialized state machine; shared, not copied, between the core, the storage and every
    /// InstallSnapshot that carries it.
    pub data: bytes::Bytes,
}

/// `AppendReject::rejected_prev_index` of a follower whose log ends before what the leader
/// believes it holds: its durable state was lost (an empty data directory after a disk loss, or
/// a power loss under `EverySec`). Sent in answer to a heartbeat; the leader then forgets the
/// follower's match index and replicates from `conflict_index` again.
pub const LOG_LOST: u64 = u64::MAX;

/// Why a follower rejected an AppendEntries, with the hint for fast back-off (§5.3, the
/// "conflicting term" optimisation), or reported a lost log ([`LOG_LOST`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendReject {
    /// The `prev_log_index` of the rejected request (lets the leader discard stale rejects).
    pub rejected_prev_index: u64,
    /// Term of the follower's entry at `rejected_prev_index`, if it has one.
    pub conflict_term: Option<u64>,
    /// First index the follower holds with `conflict_term`, or its last index + 1.
    pub conflict_index: u64,
}

/// A Raft message. `term` is the sender's current term (for a granted pre-vote response: the
/// term the pre-vote was for).
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// Sender's term (see above).
    pub term: u64,
    /// Kind-specific fields.
    pub body: MessageBody,
}

/// The kinds of [`Message`].
#[derive(Clone, Debug, PartialEq)]
pub enum MessageBody {
    /// Dissertation §9.6: asks whether the receiver would vote at `term` without anyone
    /// changing term. `term` is the candidate's current term + 1.
    PreVote {
        /// Candidate's last log index.
        last_log_index: u64,
        /// Candidate's last log term.
        last_log_term: u64,
    },
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse {
        /// Whether the receiver would vote.
        granted: bool,
    },
    /// RequestVote RPC (§5.2, §5.4.1).
    RequestVote {
        /// Candidate's last log index.
        last_log_index: u64,
        /// Candidate's last log term.
        last_log_term: u64,
        /// Set when the election was started by `TimeoutNow` (leader transfer, §3.10): the
        /// voters skip vote stickiness because the old leader already gave up its lease.
        leader_transfer: bool,
    },
    /// Answer to [`MessageBody::RequestVote`].
    RequestVoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries RPC (§5.3); with no entries it still carries `commit` and `round`.
    Append {
        /// Index of the entry preceding `entries`.
        prev_log_index: u64,
        /// Term of that entry.
        prev_log_term: u64,
        /// Entries to store, consecutive from `prev_log_index + 1`.
        entries: Vec<Entry>,
        /// Leader's commit index, capped to what this message proves the follower holds.
        leader_commit: u64,
        /// Leader's heartbeat round at send time (lease and read-index confirmation).
        round: u64,
    },
    /// Answer to [`MessageBody::Append`] and [`MessageBody::InstallSnapshot`].
    AppendResponse {
        /// `Ok(match_index)`: the follower's log matches the leader's up to `match_index`.
        result: Result<u64, AppendReject>,
        /// Echo of the request's round.
        round: u64,
    },
    /// Heartbeat (an AppendEntries that asserts nothing about the log).
    Heartbeat {
        /// `min(leader commit, follower match)`.
        leader_commit: u64,
        /// Leader's heartbeat round.
        round: u64,
    },
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse {
        /// Echo of the round.
        round: u64,
    },
    /// InstallSnapshot RPC (§7), sent whole (no chunking: snapshots of the cache fit a message).
    InstallSnapshot {
        /// The snapshot.
        snapshot: Snapshot,
        /// Leader's heartbeat round.
        round: u64,
    },
    /// Leader transfer (§3.10): the receiver starts an election at once, skipping PreVote.
    TimeoutNow,
    /// A follower forwards a read-index request to the leader (§6.4).
    ReadIndexRequest {
        /// The follower's request id, echoed back.
        request_id: u64,
    },
    /// The leader's answer: `Some(index)` once leadership was confirmed, `None` if it cannot
    /// serve (not leader any more, or too many pending reads).
    ReadIndexResponse {
        /// Echo of the follower's request id.
        request_id: u64,
        /// The read index.
        read_index: Option<u64>,
    },
}

impl MessageBody {
    /// Whether a message of this kind may only leave after the Ready that produced it is durable:
    /// votes and acknowledgements promise something about the persistent state (§5.1, Figure 2);
    /// the rest promise nothing.
    pub fn requires_persistence(&self) -> bool {
        matches!(
            self,
            MessageBody::RequestVote { .. }
                | MessageBody::RequestVoteResponse { .. }
                | MessageBody::AppendResponse { .. }
                | MessageBody::HeartbeatResponse { .. }
        )
    }

    /// Short name for logs and transcripts.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResp",
            MessageBody::RequestVote { .. } => "Vote",
            MessageBody::RequestVoteResponse { .. } => "VoteResp",
            MessageBody::Append { .. } => "App",
            MessageBody::AppendResponse { .. } => "AppResp",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResp",
            MessageBody::InstallSnapshot { .. } => "Snapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndexRequest { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResp",
        }
    }
}

impl std::fmt::Display for Message {
    /// One line, stable, used by the transcript tests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}->{} {} t{}",
            self.from,
            self.to,
            self.body.name(),
            self.term
        )?;
        match &self.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            }
            | MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => {
                write!(f, " last={last_log_index}/{last_log_term}")?;
                if let MessageBody::RequestVote {
                    leader_transfer: true,
                    ..
                } = &self.body
                {
                    write!(f, " transfer")?;
                }
                Ok(())
            }
            MessageBody::PreVoteResponse { granted }
            | MessageBody::RequestVoteResponse { granted } => {
                write!(f, " {}", if *granted { "granted" } else { "rejected" })
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
                round,
            } => {
                write!(
                    f,
                    " prev={prev_log_index}/{prev_log_term} commit={leader_commit} r{round} ["
                )?;
                for (i, e) in entries.iter().enumerate() {
                    if i > 0 {
                        write!(f, " ")?;
                    }
                    match &e.kind {
                        EntryKind::NoOp => write!(f, "{}/{}:noop", e.index, e.term)?,
                        EntryKind::Command(d) => {
                            write!(f, "{}/{}:{}", e.index, e.term, String::from_utf8_lossy(d))?
                        }
                    }
                }
                write!(f, "]")
            }
            MessageBody::AppendResponse { result, round } => match result {
                Ok(m) => write!(f, " ok match={m} r{round}"),
                Err(r) => write!(
                    f,
                    " reject prev={} hint={}/{:?} r{round}",
                    r.rejected_prev_index, r.conflict_index, r.conflict_term
                ),
            },
            MessageBody::Heartbeat {
                leader_commit,
                round,
            } => {
                write!(f, " commit={leader_commit} r{round}")
            }
            MessageBody::HeartbeatResponse { round } => write!(f, " r{round}"),
            MessageBody::InstallSnapshot { snapshot, round } => {
                write!(
                    f,
                    " index={}/{} r{round}",
                    snapshot.meta.index, snapshot.meta.term
                )
            }
            MessageBody::TimeoutNow => Ok(()),
            MessageBody::ReadIndexRequest { request_id } => write!(f, " id={request_id}"),
            MessageBody::ReadIndexResponse {
                request_id,
                read_index,
            } => {
                write!(f, " id={request_id} index={read_index:?}")
            }
        }
    }
}
