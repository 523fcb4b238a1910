//! Configuration of a Raft core, and its validation.
//!
//! Contract: a [`Config`] that passed [`Config::validate`] keeps the leader lease safe for any two
//! node clocks whose rates differ by at most `max_clock_rate_ratio`:
//!
//! ```text
//! lease_duration_ms × max_clock_rate_ratio < election_timeout_ms − tick_interval_ms
//! ```
//!
//! Why (dissertation §6.4.1): a follower that acknowledged a heartbeat round at real time
//! `t_ack ≥ t_send` refuses votes until its own clock advanced `election_timeout_ms` (vote
//! stickiness), i.e. at least `election_timeout_ms / rate_max` real time, minus the granularity
//! with which the driver reports time (`tick_interval_ms`). The leader's lease ends after
//! `lease_duration_ms / rate_min` real time from `t_send`. So no new leader can exist, and no
//! second lease can start, while the old lease is valid.
//!
//! The default `max_clock_rate_ratio` is 1.05: commodity quartz drifts by ≤ 100 ppm, NTP slews by
//! ≤ 500 ppm; 5 % leaves two orders of magnitude of margin and still lets the product's
//! 1000 ms lease fit under the 1500 ms election timeout (1050 < 1490).

use thiserror::Error;

/// The product's heartbeat interval (`HYPERION_RAFT_HEARTBEAT_MS`).
pub const DEFAULT_HEARTBEAT_MS: u64 = 150;
/// The election timeout is this many heartbeats unless configured (the 2024-12-03 fix).
pub const ELECTION_TIMEOUT_HEARTBEATS: u64 = 10;
/// The product's election timeout: [`ELECTION_TIMEOUT_HEARTBEATS`] × [`DEFAULT_HEARTBEAT_MS`].
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = ELECTION_TIMEOUT_HEARTBEATS * DEFAULT_HEARTBEAT_MS;
/// The product's leader lease (the 2024-12-03 fix), unless the election timeout is too short for
/// it (see [`default_lease_ms`]).
pub const DEFAULT_LEASE_MS: u64 = 1000;
/// Applied entries kept in the log before a snapshot compacts them.
pub const DEFAULT_COMPACTION_THRESHOLD_ENTRIES: u64 = 10_000;
/// Memory the applied log beyond the last snapshot may hold before a snapshot compacts it.
pub const DEFAULT_COMPACTION_THRESHOLD_BYTES: u64 = 64 << 20;
/// Default [`Config::snapshot_resend_ms`].
pub const DEFAULT_SNAPSHOT_RESEND_MS: u64 = 10_000;
/// Default [`Config::term_jump_max`].
pub const DEFAULT_TERM_JUMP_MAX: u64 = 1 << 24;
/// The longest tick interval: the granularity of Raft's clock (bounded by the heartbeat too).
pub const TICK_INTERVAL_MS_MAX: u64 = 10;

/// The default lease for an election timeout: [`DEFAULT_LEASE_MS`], or ⅔ of the election
/// timeout if that is smaller (so the lease inequality holds at the default clock ratio).
pub fn default_lease_ms(election_timeout_ms: u64) -> u64 {
    DEFAULT_LEASE_MS.min(election_timeout_ms * 2 / 3)
}

/// The default election timeout for a heartbeat: [`ELECTION_TIMEOUT_HEARTBEATS`] × heartbeat.
pub fn default_election_timeout_ms(heartbeat_ms: u64) -> u64 {
    heartbeat_ms * ELECTION_TIMEOUT_HEARTBEATS
}

/// Tunables of one Raft core. All durations are in milliseconds of the node's own clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The longest interval at which the driver promises to call `tick` (and the granularity of
    /// every time the core records). Enters the lease-safety inequality.
    pub tick_interval_ms: u64,
    /// Interval between heartbeat rounds of a leader (product default 150 ms).
    pub heartbeat_ms: u64,
    /// Minimum election timeout `T`; the randomized timeout is drawn from `[T, 2T)`. Also the
    /// vote-stickiness window and the CheckQuorum window. Product default 1500 ms = 10× heartbeat
    /// (the 2024-12-03 fix).
    pub election_timeout_ms: u64,
    /// Leader lease duration, measured on the leader's clock from the send time of the heartbeat
    /// round a quorum acknowledged (default 1000 ms).
    pub lease_duration_ms: u64,
    /// Largest ratio between the rates of any two node clocks the lease must tolerate (≥ 1.0).
    pub max_clock_rate_ratio: f64,
    /// Bound on AppendEntries messages in flight to one follower in the pipelined state: bounds
    /// the memory a slow follower can pin on the leader and the work lost on a conflict.
    pub inflight_appends_max: usize,
    /// Bound on the payload bytes of one AppendEntries message (at least one entry is always
    /// sent, so a single larger entry still makes progress).
    pub append_bytes_max: usize,
    /// When the applied log beyond the last snapshot holds this many entries the core asks the
    /// state machine for a snapshot (`Ready::snapshot_request`) and then compacts the log.
    pub compaction_threshold_entries: u64,
    /// The same in bytes of memory ([`RaftNode::log_bytes`](crate::RaftNode::log_bytes)): with
    /// large values an entry count alone lets the log hold gigabytes whatever the cache's cap.
    pub compaction_threshold_bytes: u64,
    /// How long a leader waits for a follower to acknowledge a snapshot before sending it again
    /// (the message may have been lost). A follower's heartbeat responses do not resend it: a
    /// large snapshot takes many heartbeats to arrive. At least `heartbeat_ms`.
    pub snapshot_resend_ms: u64,
    /// Bound on read-index requests pending at this node (their own and forwarded ones).
    pub pending_reads_max: usize,
    /// Bound on entries a leader holds beyond its commit index: proposals beyond it are
    /// rejected, so a leader that lost its followers cannot grow its log without limit.
    pub uncommitted_entries_max: u64,
    /// Largest step by which a peer message may raise this node's term. Each election raises
    /// the term by one and takes at least an election timeout, so a legitimate peer is never
    /// this far ahead (2^24 elections of 1.5 s are 290 days of nothing but elections); a
    /// larger jump is a forged or corrupt message and is dropped rather than persisted (a
    /// term of `u64::MAX` would make every later election overflow).
    pub term_jump_max: u64,
    /// Fault-injection knobs used by the mutation tests. Never enable them in production.
    #[doc(hidden)]
    pub mutations: Mutations,
}

/// Deliberate bugs, compiled in so that tests can prove the checkers catch them.
/// Every field defaults to `false`; the product never sets one.
#[doc(hidden)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mutations {
    /// Followers grant (pre-)votes and accept higher terms even right after hearing from a
    /// leader or restarting.
    pub disable_vote_stickiness: bool,
    /// Skip the lease inequality in [`Config::validate`] (allows a lease longer than safe).
    pub skip_lease_validation: bool,
    /// On restart, ignore the persisted term and vote (as if they had never been synced).
    pub forget_term_and_vote: bool,
    /// A follower commits up to its last index on a heartbeat even where its log was never
    /// verified against the leader's, and storage writes the commit before the entries of the
    /// same Ready (the pre-fix behaviour: a torn write or an unsynced acknowledgement could
    /// commit entries that were never committed).
    pub unverified_commit: bool,
    /// A node that may have lost acknowledged entries to a power loss votes at once instead of
    /// abstaining until it caught up (the pre-fix behaviour).
    pub vote_after_power_loss: bool,
    /// Recovery takes a WAL record damaged before the end of the file for a torn last write and
    /// drops everything after it, synced terms and votes included (the pre-fix behaviour).
    pub wal_corruption_as_torn_tail: bool,
    /// `step` acts on peer messages without validating them first (the pre-fix behaviour: a
    /// malformed or implausible message reaches the core's asserts, or corrupts its state).
    pub skip_message_validation: bool,
    /// Compaction looks at the entry count only (the pre-fix behaviour: 10,000 entries of
    /// 512 KB values are 5 GB of log in memory).
    pub ignore_log_bytes: bool,
    /// A leader sends a follower's snapshot again on every heartbeat response until the
    /// follower installed it (the pre-fix behaviour: a snapshot slower than a heartbeat is sent
    /// over and over, and the follower never catches up).
    pub resend_snapshot_every_heartbeat: bool,
    /// A follower keeps a read forwarded to the leader, and an abstaining node its catch-up
    /// request, until the leader changes, however long the answer takes (the pre-fix
    /// behaviour: a lost answer holds a pending-read slot, or keeps the node from voting, for as
    /// long as the leader lives).
    pub keep_unanswered_reads: bool,
    /// A node whose election timer fires campaigns at once in a new term, without asking for
    /// pre-votes first (no §9.6 PreVote): a follower cut off from the others raises its term
    /// again and again, and when it returns its answers depose a healthy leader.
    pub skip_pre_vote: bool,
    /// Every node holds its last snapshot's bytes for good, whether or not a follower will need
    /// them (the earlier behaviour: a second copy of the whole cache in memory on every node).
    pub hold_snapshot_bytes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick_interval_ms: TICK_INTERVAL_MS_MAX,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_ms: DEFAULT_ELECTION_TIMEOUT_MS,
            lease_duration_ms: DEFAULT_LEASE_MS,
            max_clock_rate_ratio: 1.05,
            inflight_appends_max: 32,
            append_bytes_max: 1 << 20,
            compaction_threshold_entries: DEFAULT_COMPACTION_THRESHOLD_ENTRIES,
            compaction_threshold_bytes: DEFAULT_COMPACTION_THRESHOLD_BYTES,
            snapshot_resend_ms: DEFAULT_SNAPSHOT_RESEND_MS,
            pending_reads_max: 4096,
            uncommitted_entries_max: 10_000,
            term_jump_max: DEFAULT_TERM_JUMP_MAX,
            mutations: Mutations::default(),
        }
    }
}

/// A configuration that cannot run safely; names the offending field.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("invalid raft config field `{field}`: {reason}")]
pub struct ConfigError {
    /// The field of [`Config`] at fault.
    pub field: &'static str,
    /// Why it was rejected, with the numbers involved.
    pub reason: String,
}

fn invalid(field: &'static str, reason: String) -> Result<(), ConfigError> {
    Err(ConfigError { field, reason })
}

impl Config {
    /// Checks every bound; see the module docs for the lease inequality.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tick_interval_ms == 0 {
            return invalid("tick_interval_ms", "must be > 0".into());
        }
        if self.heartbeat_ms == 0 {
            return invalid("heartbeat_ms", "must be > 0".into());
        }
        if self.tick_interval_ms > self.heartbeat_ms {
            return invalid(
                "tick_interval_ms",
                format!(
                    "{} exceeds heartbeat_ms {}",
                    self.tick_interval_ms, self.heartbeat_ms
                ),
            );
        }
        if self.election_timeout_ms < 2 * self.heartbeat_ms {
            return invalid(
                "election_timeout_ms",
                format!(
                    "{} is below 2 × heartbeat_ms = {}",
                    self.election_timeout_ms,
                    2 * self.heartbeat_ms
                ),
            );
        }
        if !(self.max_clock_rate_ratio.is_finite() && self.max_clock_rate_ratio >= 1.0) {
            return invalid(
                "max_clock_rate_ratio",
                format!(
                    "{} must be a finite number ≥ 1.0",
                    self.max_clock_rate_ratio
                ),
            );
        }
        if self.lease_duration_ms == 0 {
            return invalid("lease_duration_ms", "must be > 0".into());
        }
        let stretched = self.lease_duration_ms as f64 * self.max_clock_rate_ratio;
        let bound = self
            .election_timeout_ms
            .saturating_sub(self.tick_interval_ms) as f64;
        if !self.mutations.skip_lease_validation && stretched >= bound {
            return invalid(
                "lease_duration_ms",
                format!(
                    "lease {} ms × clock-rate ratio {} = {stretched} ms is not below \
                     election_timeout_ms − tick_interval_ms = {bound} ms",
                    self.lease_duration_ms, self.max_clock_rate_ratio
                ),
            );
        }
        if self.inflight_appends_max == 0 {
            return invalid("inflight_appends_max", "must be ≥ 1".into());
        }
        if self.append_bytes_max == 0 {
            return invalid("append_bytes_max", "must be ≥ 1".into());
        }
        if self.compaction_threshold_entries == 0 {
            return invalid("compaction_threshold_entries", "must be ≥ 1".into());
        }
        if self.snapshot_resend_ms < self.heartbeat_ms {
            return invalid(
                "snapshot_resend_ms",
                format!(
                    "{} ms is below the heartbeat ({} ms)",
                    self.snapshot_resend_ms, self.heartbeat_ms
                ),
            );
        }
        if self.compaction_threshold_bytes == 0 {
            return invalid("compaction_threshold_bytes", "must be ≥ 1".into());
        }
        if self.uncommitted_entries_max == 0 {
            return invalid("uncommitted_entries_max", "must be ≥ 1".into());
        }
        if self.pending_reads_max == 0 {
            return invalid("pending_reads_max", "must be ≥ 1".into());
        }
        if self.term_jump_max == 0 || self.term_jump_max > u64::MAX / 4 {
            return invalid(
                "term_jump_max",
                format!("{} must be in 1..={}", self.term_jump_max, u64::MAX / 4),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn rejects_tight_election_timeout() {
        let c = Config {
            election_timeout_ms: 299,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "election_timeout_ms");
    }

    #[test]
    fn rejects_lease_too_close_to_election_timeout() {
        // 1430 × 1.05 = 1501.5 ≥ 1490.
        let c = Config {
            lease_duration_ms: 1430,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "lease_duration_ms");
        // 1400 × 1.05 = 1470 < 1490.
        let c = Config {
            lease_duration_ms: 1400,
            ..Config::default()
        };
        c.validate().unwrap();
        let c = Config {
            max_clock_rate_ratio: 0.9,
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "max_clock_rate_ratio");
    }
}
