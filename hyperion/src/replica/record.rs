//! The system of record behind the replicated cache: write-behind and read-through.
//!
//! **Write-behind.** Every applied write also records, in replicated state ([`WriteBehind`]),
//! the mutation the database still needs (compacted per key: only the newest counts). The leader
//! writes the oldest pending mutations in batches; when a batch is stored it proposes a
//! `Flushed` command naming exactly what was written, and every replica drops those entries. The
//! position is therefore replicated: a new leader resumes from its own copy, and a batch written
//! twice (leader change mid-flush) is harmless because the database keeps a row only when the
//! version is higher.
//!
//! **Read-through.** A linearizable `Get` that misses on the leader may load the key from the
//! database and fill it through the log (`Fill`), never over a newer version. A fill is refused
//! at apply when anything newer about the key is known: a pending mutation (the database is
//! behind), an entry already present, or a delete/expiry applied after the leader's read point
//! (`removed_at`). `removed_at` entries are pruned below a replicated *fill horizon*; fills
//! read before the horizon are refused, so pruning never lets a stale fill through.
//!
//! **Versions.** A cluster that starts empty over a database learns the database's highest
//! version first (`VersionFloor`) and refuses writes until then, so a rebuilt cluster never
//! writes versions the database would discard as old.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use prost::Message as _;

use crate::db::{DbClient, DbError, Mutation, PgDatabase, SimDatabase, StoredEntry};
use crate::raft_proto as pb;
use crate::resilience::BreakerState;
use crate::runtime::{self, Instant};

/// How often the leader writes pending mutations.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Per-mutation bookkeeping charged against the backlog bound, besides key and value.
const PENDING_OVERHEAD_BYTES: u64 = 64;
/// Most keys the leader's negative cache remembers.
pub const NEGATIVE_CACHE_KEYS_MAX: usize = 100_000;

/// The database client of a node: PostgreSQL/CockroachDB in production, the simulated database
/// in the simulator. The same client logic (pool cap, timeouts, retries, breaker, single-flight)
/// wraps both.
#[derive(Clone)]
pub enum SystemOfRecord {
    Postgres(DbClient<PgDatabase>),
    Simulated(DbClient<SimDatabase>),
}

macro_rules! each {
    ($self:ident, $client:ident => $body:expr) => {
        match $self {
            SystemOfRecord::Postgres($client) => $body,
            SystemOfRecord::Simulated($client) => $body,
        }
    };
}

impl SystemOfRecord {
    /// See [`DbClient::load`]: `read_point` is the applied index the miss was decided at.
    pub async fn load(&self, key: &[u8], read_point: u64) -> Result<Option<StoredEntry>, DbError> {
        each!(self, client => client.load(key, read_point).await)
    }

    pub async fn write_batch(&self, mutations: &[Mutation]) -> Result<(), DbError> {
        each!(self, client => client.write_batch(mutations).await)
    }

    pub async fn max_version(&self) -> Result<u64, DbError> {
        each!(self, client => client.max_version().await)
    }

    pub async fn warm_up(&self) -> Result<(), DbError> {
        each!(self, client => client.warm_up().await)
    }

    pub fn breaker_state(&self) -> BreakerState {
        each!(self, client => client.breaker_state())
    }

    pub fn metrics(&self) -> crate::db::DbMetrics {
        each!(self, client => client.metrics())
    }
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

    pub fn decode(bytes: &[u8]) -> Result<WriteBehind, String> {
        let state = pb::WriteBehindState::decode(bytes).map_err(|e| e.to_string())?;
        let mut write_behind = WriteBehind {
            fill_horizon: state.fill_horizon,
            version_floor_known: state.version_floor_known,
            ..WriteBehind::default()
        };
        for pending in state.pending {
            let mutation = mutation_from_wire(pending.mutation.ok_or("pending.mutation")?)?;
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

pub fn mutation_to_wire(mutation: &Mutation) -> pb::StoredMutation {
    match mutation {
        Mutation::Upsert(entry) => pb::StoredMutation {
            key: entry.key.clone(),
            version: entry.version,
            deleted: false,
            value: entry.value.clone(),
            ttl_ms: entry.ttl_ms,
            created_at_ms: entry.created_at_ms,
        },
        Mutation::Delete { key, version } => pb::StoredMutation {
            key: key.clone(),
            version: *version,
            deleted: true,
            ..pb::StoredMutation::default()
        },
    }
}

pub fn mutation_from_wire(mutation: pb::StoredMutation) -> Result<Mutation, String> {
    if mutation.version == 0 {
        return Err("stored mutation without a version".to_string());
    }
    Ok(if mutation.deleted {
        Mutation::Delete {
            key: mutation.key,
            version: mutation.version,
        }
    } else {
        Mutation::Upsert(StoredEntry {
            key: mutation.key,
            value: mutation.value,
            version: mutation.version,
            ttl_ms: mutation.ttl_ms,
            created_at_ms: mutation.created_at_ms,
        })
    })
}

/// The leader's memory of keys the database has no row for, so repeated misses (the
/// 2024-10-15 pattern) do not each query it. Leader-local, bounded, short-lived.
#[derive(Debug, Default)]
pub struct NegativeCache {
    until: HashMap<Vec<u8>, Instant>,
}

impl NegativeCache {
    pub fn remembers(&mut self, key: &[u8], now: Instant) -> bool {
        match self.until.get(key) {
            Some(&until) if until > now => true,
            Some(_) => {
                self.until.remove(key);
                false
            }
            None => false,
        }
    }

    pub fn remember(&mut self, key: &[u8], until: Instant) {
        if self.until.len() >= NEGATIVE_CACHE_KEYS_MAX {
            let now = runtime::now();
            self.until.retain(|_, until| *until > now);
            if self.until.len() >= NEGATIVE_CACHE_KEYS_MAX {
                self.until.clear();
            }
        }
        self.until.insert(key.to_vec(), until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
