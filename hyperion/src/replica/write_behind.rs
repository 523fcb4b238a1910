//! Write-behind: every applied write also records, in replicated state ([`WriteBehind`]), the
//! mutation the database still needs (compacted per key: only the newest counts). The leader's
//! flush loop writes the oldest pending mutations in batches; when a batch is stored it proposes a
//! `Flushed` command naming exactly what was written, and every replica drops those entries. The
//! position is therefore replicated: a new leader resumes from its own copy, and a batch written
//! twice (leader change mid-flush) is harmless because the database keeps a row only when the
//! version is higher.
//!
//! The same state remembers recent removals of keys (deletes, expirations, evictions) and the
//! *fill horizon*, which read-through fills are checked against (see [`super::read_through`]);
//! and whether the cluster's versions are known to start above the database's (`VersionFloor`:
//! a cluster that starts empty over a database learns its highest version first and refuses
//! writes until then, so a rebuilt cluster never writes versions the database would discard).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message as _;

use super::wire::{mutation_from_wire, mutation_to_wire, WireError};
use crate::db::Mutation;
use crate::raft_proto as pb;

/// How often the leader writes pending mutations.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Per-mutation bookkeeping charged against the backlog bound, besides key and value.
const PENDING_OVERHEAD_BYTES: u64 = 64;

/// Why replicated write-behind state (from a snapshot) could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteBehindError {
    #[error("write-behind state does not decode: {0}")]
    Decode(String),
    #[error(transparent)]
    Mutation(#[from] WireError),
}

/// Replicated write-behind state; part of the state machine and of its snapshots.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBehind {
    /// The newest mutation per key not yet stored, with the log index that produced it.
    pending: BTreeMap<Vec<u8>, (u64, Mutation)>,
    /// `pending` ordered by index (several keys share the index of one `Expire`).
    order: BTreeSet<(u64, Vec<u8>)>,
    bytes: u64,
    /// Keys removed from the cache (deleted, expired or evicted), with the index of the latest
    /// removal, while fills may still race it: a fill read before the removal may carry an older
    /// version than the one removed, and is refused.
    removed_at: BTreeMap<Vec<u8>, u64>,
    /// Fills read at an index below this are refused; `removed_at` is pruned below it.
    fill_horizon: u64,
    /// Whether the cluster's versions are known to start above the database's.
    version_floor_known: bool,
}

fn mutation_bytes(mutation: &Mutation) -> u64 {
    let value = match mutation {
        Mutation::Upsert(entry) => entry.value.len(),
        Mutation::Delete { .. } => 0,
    };
    mutation.key().len() as u64 + value as u64 + PENDING_OVERHEAD_BYTES
}

impl WriteBehind {
    /// Records the newest mutation of a key at `index`.
    pub fn record(&mut self, index: u64, mutation: Mutation) {
        let key = mutation.key().to_vec();
        if let Mutation::Delete { .. } = mutation {
            self.removed_at.insert(key.clone(), index);
        }
        self.bytes += mutation_bytes(&mutation);
        if let Some((old_index, old)) = self.pending.insert(key.clone(), (index, mutation)) {
            self.order.remove(&(old_index, key.clone()));
            self.bytes -= mutation_bytes(&old);
        }
        self.order.insert((index, key));
    }

    /// Notes that `keys` left the cache at `index` (evicted or expired): fills read before it are
    /// refused for them, until the fill horizon passes it.
    pub fn note_removed(&mut self, keys: &[Vec<u8>], index: u64) {
        for key in keys {
            self.removed_at.insert(key.clone(), index);
        }
    }

    /// Removals remembered (bounded by the fill horizon, which the leader keeps advancing).
    pub fn removed_count(&self) -> usize {
        self.removed_at.len()
    }

    /// Drops what a leader stored, unless a newer mutation of the key arrived meanwhile.
    pub fn flushed(&mut self, written: &[(Vec<u8>, u64)]) {
        for (key, index) in written {
            if self.pending.get(key).is_some_and(|(i, _)| i == index) {
                if let Some((_, mutation)) = self.pending.remove(key) {
                    self.bytes -= mutation_bytes(&mutation);
                }
                self.order.remove(&(*index, key.clone()));
            }
        }
    }

    /// Raises the fill horizon and forgets removals below it.
    pub fn advance_fill_horizon(&mut self, horizon: u64) {
        if horizon <= self.fill_horizon {
            return;
        }
        self.fill_horizon = horizon;
        self.removed_at.retain(|_, index| *index >= horizon);
    }

    pub fn fill_horizon(&self) -> u64 {
        self.fill_horizon
    }

    /// Whether the database may be behind for `key`.
    pub fn is_pending(&self, key: &[u8]) -> bool {
        self.pending.contains_key(key)
    }

    /// Whether a fill of `key` loaded at `read_at` may be applied (see the module docs).
    pub fn fill_allowed(&self, key: &[u8], read_at: u64) -> bool {
        read_at >= self.fill_horizon
            && !self.is_pending(key)
            && self
                .removed_at
                .get(key)
                .is_none_or(|&index| index <= read_at)
    }

    /// The oldest pending mutations, at most `max`, with their indexes.
    pub fn oldest(&self, max: usize) -> Vec<(u64, Mutation)> {
        self.order
            .iter()
            .take(max)
            .map(|(_, key)| self.pending[key].clone())
            .collect()
    }

    /// Bytes of pending mutations (keys, values and bookkeeping).
    pub fn pending_bytes(&self) -> u64 {
        self.bytes
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn version_floor_known(&self) -> bool {
        self.version_floor_known
    }

    pub fn set_version_floor_known(&mut self) {
        self.version_floor_known = true;
    }

    /// The bytes stored in snapshots.
    pub fn encode(&self) -> Vec<u8> {
        pb::WriteBehindState {
            pending: self
                .order
                .iter()
                .map(|(index, key)| {
                    let (_, mutation) = &self.pending[key];
                    pb::PendingMutation {
                        index: *index,
                        mutation: Some(mutation_to_wire(mutation)),
                    }
                })
                .collect(),
            removed: self
                .removed_at
                .iter()
                .map(|(key, index)| pb::Removed {
                    key: key.clone(),
                    index: *index,
                })
                .collect(),
            fill_horizon: self.fill_horizon,
            version_floor_known: self.version_floor_known,
        }
        .encode_to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<WriteBehind, WriteBehindError> {
        let state = pb::WriteBehindState::decode(bytes)
            .map_err(|e| WriteBehindError::Decode(e.to_string()))?;
        let mut write_behind = WriteBehind {
            fill_horizon: state.fill_horizon,
            version_floor_known: state.version_floor_known,
            ..WriteBehind::default()
        };
        for pending in state.pending {
            let mutation = mutation_from_wire(
                pending
                    .mutation
                    .ok_or(WireError("write_behind.pending.mutation"))?,
            )?;
            let key = mutation.key().to_vec();
            write_behind.bytes += mutation_bytes(&mutation);
            write_behind.order.insert((pending.index, key.clone()));
            write_behind.pending.insert(key, (pending.index, mutation));
        }
        for removed in state.removed {
            write_behind.removed_at.insert(removed.key, removed.index);
        }
        Ok(write_behind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::StoredEntry;

    fn upsert(key: &str, version: u64) -> Mutation {
        Mutation::Upsert(StoredEntry {
            key: key.as_bytes().to_vec(),
            value: b"value".to_vec(),
            version,
            ttl_ms: 0,
            created_at_ms: 7,
        })
    }

    #[test]
    fn pending_mutations_compact_per_key_and_flush_exactly_what_was_written() {
        let mut wb = WriteBehind::default();
        wb.record(1, upsert("a", 1));
        wb.record(2, upsert("b", 2));
        wb.record(3, upsert("a", 3));
        assert_eq!(wb.pending_count(), 2);
        let oldest: Vec<u64> = wb.oldest(10).iter().map(|(i, _)| *i).collect();
        assert_eq!(oldest, vec![2, 3]);
        // A flush of the old version of `a` (written before `a`@3 arrived) keeps `a`@3.
        wb.flushed(&[(b"a".to_vec(), 1), (b"b".to_vec(), 2)]);
        assert_eq!(wb.pending_count(), 1);
        assert!(wb.is_pending(b"a"));
        wb.flushed(&[(b"a".to_vec(), 3)]);
        assert_eq!(wb.pending_count(), 0);
        assert_eq!(wb.pending_bytes(), 0);
    }

    #[test]
    fn fills_are_refused_after_a_newer_removal_and_below_the_horizon() {
        let mut wb = WriteBehind::default();
        wb.record(
            5,
            Mutation::Delete {
                key: b"k".to_vec(),
                version: 5,
            },
        );
        assert!(
            !wb.fill_allowed(b"k", 10),
            "pending: the database is behind"
        );
        wb.flushed(&[(b"k".to_vec(), 5)]);
        assert!(!wb.fill_allowed(b"k", 4), "read before the delete");
        assert!(wb.fill_allowed(b"k", 5));
        assert!(wb.fill_allowed(b"other", 0));
        wb.advance_fill_horizon(6);
        assert!(!wb.fill_allowed(b"other", 5), "read before the horizon");
        assert!(
            wb.fill_allowed(b"k", 6),
            "the removal was pruned below the horizon"
        );
    }

    #[test]
    fn fills_read_before_an_eviction_or_expiry_are_refused() {
        let mut wb = WriteBehind::default();
        // Version 9 of `k` was written, flushed, then evicted at index 12: the database holds
        // version 9, but a fill read at index 8 may carry an older version.
        wb.note_removed(&[b"k".to_vec()], 12);
        assert!(!wb.fill_allowed(b"k", 8), "read before the eviction");
        assert!(
            wb.fill_allowed(b"k", 12),
            "read after it: the database had version 9"
        );
        assert_eq!(wb.removed_count(), 1);
        wb.advance_fill_horizon(13);
        assert_eq!(wb.removed_count(), 0, "pruned below the horizon");
    }

    #[test]
    fn state_round_trips_through_snapshot_bytes() {
        let mut wb = WriteBehind::default();
        wb.record(1, upsert("a", 1));
        wb.record(
            2,
            Mutation::Delete {
                key: b"b".to_vec(),
                version: 2,
            },
        );
        wb.advance_fill_horizon(1);
        wb.set_version_floor_known();
        assert_eq!(WriteBehind::decode(&wb.encode()).unwrap(), wb);
        assert!(WriteBehind::decode(&[0xff, 0x01]).is_err());
    }
}
