//! Validation of peer messages before the core acts on them.
//!
//! Contract: [`RaftNode::step`] runs [`RaftNode::check_message`] first and drops (returns
//! [`StepError::Invalid`](super::StepError::Invalid) for) any message that fails it, changing
//! nothing. What passes cannot reach an `assert!` of the core: the asserts guard the core's own
//! invariants, and every one of them that a message's fields feed into has its precondition
//! checked here (`fuzz_step` drives `step` with arbitrary message sequences to hold us to it).
//!
//! What is checked, for every message from a member:
//! - the term is at most [`Config::term_jump_max`](crate::Config::term_jump_max) above ours, so
//!   a forged or corrupt term (say `u64::MAX`, after which no election could ever succeed) is
//!   never adopted nor persisted;
//! - log positions are self-consistent: a term of index 0 is 0, no entry or log term is newer
//!   than the message's term, entries are contiguous from `prev_log_index + 1` with terms that
//!   never decrease, and no index arithmetic overflows;
//! - answers to a leader cannot claim more than the leader sent: a match index beyond its log, a
//!   rejected index it never sent, or a heartbeat round it has not started (a forged round would
//!   release pending read-index reads without any confirmation);
//! - a leader never follows another node in its own term (two leaders in one term is a bug or a
//!   forgery, never a message to obey);
//! - a snapshot covers at least one entry, is no newer than its sender's term, and names this
//!   cluster's voters.
//!
//! Sizes and the decodability of commands and snapshot data are the driver's to check (the core
//! treats commands as opaque); the product does so before a message reaches `step`.

use super::{RaftNode, Role};
use crate::message::{Entry, Message, MessageBody, LOG_LOST};

/// Largest log index a message may name. No log gets near it (2^62 entries), and below it no
/// index arithmetic of the core (`last_index + 1`, `prev_log_index + entries`) can overflow.
pub const INDEX_MAX: u64 = 1 << 62;

/// Most entries in one Append. Leaders send at most this many (and at most `append_bytes_max`
/// bytes); more from a peer is a forged message sized to make the receiver work.
pub const APPEND_ENTRIES_MAX: usize = 4096;

/// Why a peer message was dropped: the field at fault and what was wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} message from node {from}: {field}: {reason}")]
pub struct InvalidMessage {
    /// The sender.
    pub from: u64,
    /// The message kind ([`MessageBody::name`]).
    pub kind: &'static str,
    /// The field at fault.
    pub field: &'static str,
    /// What was wrong, with the numbers involved.
    pub reason: String,
}

impl RaftNode {
    /// Checks `msg` against this node's state; see the module docs.
    pub fn check_message(&self, msg: &Message) -> Result<(), InvalidMessage> {
        let invalid = |field: &'static str, reason: String| InvalidMessage {
            from: msg.from,
            kind: msg.body.name(),
            field,
            reason,
        };
        let term_max = self.term.saturating_add(self.config.term_jump_max);
        if msg.term > term_max {
            return Err(invalid(
                "term",
                format!(
                    "{} jumps more than {} terms past ours ({})",
                    msg.term, self.config.term_jump_max, self.term
                ),
            ));
        }
        for (field, index) in indexes(&msg.body) {
            if index > INDEX_MAX {
                return Err(invalid(
                    field,
                    format!("{index} exceeds the largest log index {INDEX_MAX}"),
                ));
            }
        }
        // Answers to this node as the leader of the current term may claim only what it sent.
        let to_our_leadership = self.role == Role::Leader && msg.term == self.term;
        match &msg.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            }
            | MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => log_position(*last_log_index, *last_log_term, msg.term)
                .map_err(|reason| invalid("last_log_term", reason))?,
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                ..
            } => {
                log_position(*prev_log_index, *prev_log_term, msg.term)
                    .map_err(|reason| invalid("prev_log_term", reason))?;
                if entries.len() > APPEND_ENTRIES_MAX {
                    return Err(invalid(
                        "entries",
                        format!(
                            "{} entries exceed the limit of {APPEND_ENTRIES_MAX} per Append",
                            entries.len()
                        ),
                    ));
                }
                check_entries(*prev_log_index, *prev_log_term, msg.term, entries)
                    .map_err(|reason| invalid("entries", reason))?;
            }
            MessageBody::InstallSnapshot { snapshot, .. } => {
                let meta = &snapshot.meta;
                if meta.index == 0 || meta.term == 0 {
                    return Err(invalid(
                        "snapshot.index",
                        format!(
                            "a snapshot covers at least entry 1 of some term, got {}/{}",
                            meta.index, meta.term
                        ),
                    ));
                }
                if meta.term > msg.term {
                    return Err(invalid(
                        "snapshot.term",
                        format!("{} is newer than the sender's term {}", meta.term, msg.term),
                    ));
                }
                if meta.membership.voters != self.voters {
                    return Err(invalid(
                        "snapshot.voters",
                        format!(
                            "{:?} are not this cluster's voters {:?}",
                            meta.membership.voters, self.voters
                        ),
                    ));
                }
            }
            MessageBody::AppendResponse { result, round } if to_our_leadership => {
                self.check_round(*round).map_err(|r| invalid("round", r))?;
                let last = self.log.last_index();
                match result {
                    Ok(match_index) if *match_index > last => {
                        return Err(invalid(
                            "match_index",
                            format!("{match_index} is beyond this leader's last index {last}"),
                        ))
                    }
                    Ok(_) => {}
                    Err(reject) => {
                        if reject.conflict_index == 0 || reject.conflict_index > last + 1 {
                            return Err(invalid(
                                "conflict_index",
                                format!(
                                    "{} is outside 1..={} (this leader's last index + 1)",
                                    reject.conflict_index,
                                    last + 1
                                ),
                            ));
                        }
                        if reject.rejected_prev_index != LOG_LOST
                            && reject.rejected_prev_index > last
                        {
                            return Err(invalid(
                                "rejected_prev_index",
                                format!(
                                    "{} was never sent: this leader's last index is {last}",
                                    reject.rejected_prev_index
                                ),
                            ));
                        }
                        if reject.conflict_term.is_some_and(|t| t > msg.term) {
                            return Err(invalid(
                                "conflict_term",
                                format!("newer than the sender's term {}", msg.term),
                            ));
                        }
                    }
                }
            }
            MessageBody::HeartbeatResponse { round } if to_our_leadership => {
                self.check_round(*round).map_err(|r| invalid("round", r))?
            }
            _ => {}
        }
        if to_our_leadership
            && matches!(
                msg.body,
                MessageBody::Append { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::InstallSnapshot { .. }
                    | MessageBody::TimeoutNow
            )
        {
            return Err(invalid(
                "term",
                format!(
                    "node {} claims to lead term {}, which this node leads",
                    msg.from, msg.term
                ),
            ));
        }
        Ok(())
    }

    /// A heartbeat round echoed back must be one this leader started.
    fn check_round(&self, round: u64) -> Result<(), String> {
        if round > self.round {
            return Err(format!(
                "{round} was never started: this leader's latest round is {}",
                self.round
            ));
        }
        Ok(())
    }
}

/// The log indexes a message names, with their fields.
fn indexes(body: &MessageBody) -> Vec<(&'static str, u64)> {
    match body {
        MessageBody::PreVote { last_log_index, .. }
        | MessageBody::RequestVote { last_log_index, .. } => {
            vec![("last_log_index", *last_log_index)]
        }
        MessageBody::Append {
            prev_log_index,
            entries,
            leader_commit,
            ..
        } => vec![
            ("prev_log_index", *prev_log_index),
            (
                "entries",
                prev_log_index.saturating_add(entries.len() as u64),
            ),
            ("leader_commit", *leader_commit),
        ],
        MessageBody::AppendResponse { result, .. } => match result {
            Ok(match_index) => vec![("match_index", *match_index)],
            Err(reject) => vec![
                ("conflict_index", reject.conflict_index),
                (
                    "rejected_prev_index",
                    if reject.rejected_prev_index == LOG_LOST {
                        0
                    } else {
                        reject.rejected_prev_index
                    },
                ),
            ],
        },
        MessageBody::Heartbeat { leader_commit, .. } => vec![("leader_commit", *leader_commit)],
        MessageBody::InstallSnapshot { snapshot, .. } => {
            vec![("snapshot.index", snapshot.meta.index)]
        }
        MessageBody::ReadIndexResponse {
            read_index: Some(index),
            ..
        } => vec![("read_index", *index)],
        _ => Vec::new(),
    }
}

/// A (last) log position as a sender describes its own log at `term`.
fn log_position(index: u64, log_term: u64, term: u64) -> Result<(), String> {
    if log_term > term {
        return Err(format!("{log_term} is newer than the sender's term {term}"));
    }
    if index == 0 && log_term != 0 {
        return Err(format!("index 0 has term 0, not {log_term}"));
    }
    Ok(())
}

/// Entries after `prev_log_index`: consecutive, no newer than `term`, terms never decreasing.
fn check_entries(
    prev_log_index: u64,
    prev_log_term: u64,
    term: u64,
    entries: &[Entry],
) -> Result<(), String> {
    let mut expected_index = prev_log_index;
    let mut previous_term = prev_log_term;
    for (position, entry) in entries.iter().enumerate() {
        expected_index = expected_index
            .checked_add(1)
            .ok_or_else(|| format!("[{position}]: index overflows after {prev_log_index}"))?;
        if entry.index != expected_index {
            return Err(format!(
                "[{position}]: index {} where {expected_index} follows (entries must be \
                 consecutive from prev_log_index + 1)",
                entry.index
            ));
        }
        if entry.term > term || entry.term < previous_term || entry.term == 0 {
            return Err(format!(
                "[{position}]: term {} outside {}..={term} (log terms never decrease and are \
                 no newer than the sender's)",
                entry.term,
                previous_term.max(1)
            ));
        }
        previous_term = entry.term;
    }
    Ok(())
}
