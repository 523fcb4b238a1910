//! Durable state of one node: a WAL (`wal`) of hard states and entries, plus one atomic snapshot
//! file (`snapshot`), written through a [`Disk`].
//!
//! # Contract
//! - [`Storage::persist`] writes a [`Ready`]'s snapshot, hard state and entries, in that order,
//!   and returns the [`Durable`] proof that releases its persisted messages.
//! - **Term and vote are synced before `persist` returns whenever they changed**, under every
//!   policy: no vote or append response can leave before the term/vote it implies is durable
//!   (Raft §5.1, Figure 2). The hard-state record precedes the entries of the same Ready, so a
//!   torn tail can never keep entries of a term whose term record it lost.
//! - Entry data follows the [`SyncPolicy`]:
//!   - `Always`: entries are synced before `persist` returns (acknowledged ⇒ durable). A Ready
//!     that only advances `commit` is written but not synced (commit is re-learned from the
//!     leader after a restart), which spares followers an fsync per heartbeat.
//!   - `EverySec`: entries are written but synced at most `EVERYSEC_INTERVAL_MS` later (by a
//!     later `persist` or by [`Storage::tick`]); acknowledgements go out before the sync. **What a
//!     simultaneous power loss of a majority can lose:** every entry each of those nodes appended
//!     in its last unsynced window (≤ `EVERYSEC_INTERVAL_MS` plus one fsync duration before the
//!     outage). If those nodes form a majority, entries acknowledged as committed in that window
//!     can be lost from the cluster, and a new leader may overwrite them with different entries:
//!     clients may see acknowledged writes vanish and nodes that applied them (a surviving
//!     minority) roll their logs back only via snapshot. Terms and votes are never lost, so two
//!     leaders in one term remain impossible. A process crash (no power loss) loses nothing.
//!     The product accepts this window for a cache whose system of record is the database.
//! - Snapshots are written atomically: `snapshot.tmp` is written and synced, renamed over
//!   `snapshot`, and the directory synced. The WAL is then rewritten (same protocol) to start
//!   at the snapshot, which bounds its size by the compaction threshold.
//! - [`recover`] returns the last complete state: it stops at the first torn or corrupt WAL
//!   record (never inventing data) and drops WAL entries that do not continue the snapshot.

mod disk;
pub mod wal;

pub use disk::{Disk, DiskError, FileDisk, SimDisk};

use thiserror::Error;

use crate::message::{Entry, EntryKind, HardState, Membership, Snapshot, SnapshotMeta};
use crate::node::{Durable, Ready, Recovered};
use wal::{decode_frames, encode_frame, Reader, Writer};

/// Longest time `EverySec` leaves written entries unsynced, in the node's clock.
pub const EVERYSEC_INTERVAL_MS: u64 = 1000;

const WAL: &str = "wal";
const WAL_TMP: &str = "wal.tmp";
const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";

const RECORD_HARD_STATE: u8 = 1;
const RECORD_ENTRIES: u8 = 2;
const RECORD_BASE: u8 = 3;

/// When entry data is synced; term and vote are always synced (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Sync before acknowledging.
    Always,
    /// Sync at most once per `EVERYSEC_INTERVAL_MS`; acknowledge before syncing.
    EverySec,
}

/// A storage failure.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The disk failed; the node must stop (its durable state is unknown).
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The snapshot file exists but does not decode (it is written atomically, so this is media
    /// corruption, not a torn write).
    #[error("snapshot file is corrupt")]
    CorruptSnapshot,
}

/// A WAL record.
#[derive(Clone, Debug, PartialEq)]
enum Record {
    /// The log starts after this point (written first in a rewritten WAL).
    Base {
        index: u64,
        term: u64,
    },
    HardState(HardState),
    /// Replaces entries from `entries[0].index` on.
    Entries(Vec<Entry>),
}

fn encode_record(record: &Record) -> Vec<u8> {
    let mut w = Writer::default();
    match record {
        Record::Base { index, term } => {
            w.u8(RECORD_BASE);
            w.u64(*index);
            w.u64(*term);
        }
        Record::HardState(hs) => {
            w.u8(RECORD_HARD_STATE);
            w.u64(hs.term);
            match hs.vote {
                Some(v) => {
                    w.u8(1);
                    w.u64(v);
                }
                None => w.u8(0),
            }
            w.u64(hs.commit);
        }
        Record::Entries(entries) => {
            w.u8(RECORD_ENTRIES);
            w.u64(entries.len() as u64);
            for e in entries {
                w.u64(e.index);
                w.u64(e.term);
                match &e.kind {
                    EntryKind::NoOp => w.u8(0),
                    EntryKind::Command(data) => {
                        w.u8(1);
                        w.bytes(data);
                    }
                }
            }
        }
    }
    w.buf
}

fn decode_record(payload: &[u8]) -> Option<Record> {
    let mut r = Reader::new(payload);
    let record = match r.u8()? {
        RECORD_BASE => Record::Base {
            index: r.u64()?,
            term: r.u64()?,
        },
        RECORD_HARD_STATE => {
            let term = r.u64()?;
            let vote = match r.u8()? {
                0 => None,
                1 => Some(r.u64()?),
                _ => return None,
            };
            Record::HardState(HardState {
                term,
                vote,
                commit: r.u64()?,
            })
        }
        RECORD_ENTRIES => {
            let n = r.u64()?;
            let mut entries = Vec::new();
            for _ in 0..n {
                let index = r.u64()?;
                let term = r.u64()?;
                let kind = match r.u8()? {
                    0 => EntryKind::NoOp,
                    1 => EntryKind::Command(r.bytes()?),
                    _ => return None,
                };
                entries.push(Entry { index, term, kind });
            }
            Record::Entries(entries)
        }
        _ => return None,
    };
    r.is_empty().then_some(record)
}

fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut w = Writer::default();
    w.u64(s.meta.index);
    w.u64(s.meta.term);
    w.u64(s.meta.membership.voters.len() as u64);
    for v in &s.meta.membership.voters {
        w.u64(*v);
    }
    w.bytes(&s.data);
    let mut out = Vec::new();
    encode_frame(&w.buf, &mut out);
    out
}

fn decode_snapshot(bytes: &[u8]) -> Option<Snapshot> {
    let (frames, len) = decode_frames(bytes);
    if frames.len() != 1 || len != bytes.len() {
        return None;
    }
    let mut r = Reader::new(frames[0]);
    let index = r.u64()?;
    let term = r.u64()?;
    let n = r.u64()?;
    let mut voters = Vec::new();
    for _ in 0..n {
        voters.push(r.u64()?);
    }
    let data = r.bytes()?;
    r.is_empty().then_some(Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership: Membership { voters },
        },
        data,
    })
}

/// The log as replayed from WAL records.
#[derive(Default)]
struct Replay {
    base: (u64, u64),
    hard_state: HardState,
    entries: Vec<Entry>,
}

impl Replay {
    /// Applies one record; `false` if it does not continue the log (treated as corruption).
    fn apply(&mut self, record: Record) -> bool {
        match record {
            Record::Base { index, term } => {
                self.base = (index, term);
                self.entries.clear();
            }
            Record::HardState(hs) => self.hard_state = hs,
            Record::Entries(new) => {
                let Some(first) = new.first() else {
                    return true;
                };
                let last = self.base.0 + self.entries.len() as u64;
                if first.index <= self.base.0 || first.index > last + 1 {
                    return false;
                }
                let first_index = first.index;
                if new
                    .iter()
                    .enumerate()
                    .any(|(i, e)| e.index != first_index + i as u64)
                {
                    return false;
                }
                self.entries
                    .truncate((first_index - self.base.0 - 1) as usize);
                self.entries.extend(new);
            }
        }
        true
    }
}

/// What [`recover_report`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveryReport {
    /// The state to rebuild a `RaftNode` from.
    pub recovered: Recovered,
    /// Bytes of the WAL that decoded into whole, consistent records.
    pub wal_valid_bytes: usize,
    /// Bytes in the WAL file (more than `wal_valid_bytes` after a torn write).
    pub wal_total_bytes: usize,
}

/// Reads the durable state of a node from `disk` (see the module docs) without modifying it:
/// hard state, snapshot and the log entries after it, ready for `RaftNode::new`.
pub fn recover(disk: &mut dyn Disk) -> Result<Recovered, StorageError> {
    recover_report(disk).map(|r| r.recovered)
}

/// [`recover`], also reporting how much of the WAL was valid.
pub fn recover_report(disk: &mut dyn Disk) -> Result<RecoveryReport, StorageError> {
    let snapshot = match disk.read(SNAPSHOT)? {
        Some(bytes) => Some(decode_snapshot(&bytes).ok_or(StorageError::CorruptSnapshot)?),
        None => None,
    };
    let wal_bytes = disk.read(WAL)?.unwrap_or_default();
    let (frames, _) = decode_frames(&wal_bytes);
    let mut replay = Replay::default();
    let mut valid_len = 0usize;
    for payload in frames {
        let Some(record) = decode_record(payload) else {
            break;
        };
        if !replay.apply(record) {
            break;
        }
        valid_len += 8 + payload.len();
    }
    let Replay {
        base,
        hard_state,
        mut entries,
    } = replay;
    if let Some(s) = &snapshot {
        let (si, st) = (s.meta.index, s.meta.term);
        let wal_term_at_si = if si == base.0 {
            Some(base.1)
        } else if si > base.0 {
            entries.get((si - base.0 - 1) as usize).map(|e| e.term)
        } else {
            None
        };
        if wal_term_at_si == Some(st) {
            entries.retain(|e| e.index > si);
        } else {
            // The WAL does not continue this snapshot (e.g. a crash between installing a
            // leader's snapshot and rewriting the WAL): its entries belong to another history.
            entries.clear();
        }
    } else if base.0 > 0 {
        // A rewritten WAL without its snapshot cannot happen (the snapshot is durable first).
        entries.clear();
    }
    Ok(RecoveryReport {
        recovered: Recovered {
            hard_state,
            snapshot,
            entries,
        },
        wal_valid_bytes: valid_len,
        wal_total_bytes: wal_bytes.len(),
    })
}

/// Durable storage of one node over a [`Disk`].
#[derive(Debug)]
pub struct Storage<D: Disk> {
    disk: D,
    policy: SyncPolicy,
    /// Mirror of the WAL's log after the snapshot, used to rewrite the WAL on compaction.
    base: (u64, u64),
    entries: Vec<Entry>,
    hard_state: HardState,
    synced_term_vote: (u64, Option<u64>),
    unsynced: bool,
    last_sync_ms: u64,
}

impl<D: Disk> Storage<D> {
    /// Recovers the state on `disk` and repairs a torn WAL tail (the valid prefix is rewritten
    /// atomically so that new records are never appended after garbage).
    pub fn open(
        mut disk: D,
        policy: SyncPolicy,
        now_ms: u64,
    ) -> Result<(Self, Recovered), StorageError> {
        let recovered = recover(&mut disk)?;
        let base = recovered
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.index, s.meta.term));
        let mut storage = Storage {
            disk,
            policy,
            base,
            entries: recovered.entries.clone(),
            hard_state: recovered.hard_state,
            synced_term_vote: (recovered.hard_state.term, recovered.hard_state.vote),
            unsynced: false,
            last_sync_ms: now_ms,
        };
        // Always rewrite: it drops a torn tail, drops entries that do not continue the
        // snapshot, and makes the WAL's *name* durable (an fsync of a new file does not).
        storage.rewrite_wal()?;
        Ok((storage, recovered))
    }

    /// The disk (e.g. for a simulated power loss in tests).
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Persists the durable parts of `ready`; see the module docs for what is synced.
    pub fn persist(&mut self, ready: &Ready, now_ms: u64) -> Result<Durable, StorageError> {
        if let Some(snapshot) = &ready.snapshot {
            self.disk
                .write_file(SNAPSHOT_TMP, &encode_snapshot(snapshot))?;
            self.disk.sync(SNAPSHOT_TMP)?;
            self.disk.rename(SNAPSHOT_TMP, SNAPSHOT)?;
            self.disk.sync_dir()?;
            let (si, st) = (snapshot.meta.index, snapshot.meta.term);
            let term_at_si = if si > self.base.0 {
                self.entries
                    .get((si - self.base.0 - 1) as usize)
                    .map(|e| e.term)
            } else {
                None
            };
            if term_at_si == Some(st) {
                self.entries.drain(..(si - self.base.0) as usize);
            } else {
                self.entries.clear();
            }
            self.base = (si, st);
            if let Some(hs) = ready.hard_state {
                self.hard_state = hs;
            }
            self.rewrite_wal()?;
        }
        let mut buf = Vec::new();
        let mut term_vote_changed = false;
        // With a snapshot, the rewritten (and synced) WAL already holds the hard state.
        if let Some(hs) = ready.hard_state.filter(|_| ready.snapshot.is_none()) {
            encode_frame(&encode_record(&Record::HardState(hs)), &mut buf);
            self.hard_state = hs;
            term_vote_changed = (hs.term, hs.vote) != self.synced_term_vote;
        }
        if !ready.entries.is_empty() {
            let first = ready.entries[0].index;
            assert!(first > self.base.0, "persisting entries below the snapshot");
            assert!(
                first <= self.base.0 + self.entries.len() as u64 + 1,
                "gap in persisted entries: first {first}, base {:?}, {} entries persisted",
                self.base,
                self.entries.len()
            );
            self.entries.truncate((first - self.base.0 - 1) as usize);
            self.entries.extend(ready.entries.iter().cloned());
            encode_frame(
                &encode_record(&Record::Entries(ready.entries.clone())),
                &mut buf,
            );
        }
        if !buf.is_empty() {
            self.disk.append(WAL, &buf)?;
            self.unsynced = true;
        }
        // A commit-only change is never synced by itself: commit is re-learned from the leader.
        let due = now_ms >= self.last_sync_ms + EVERYSEC_INTERVAL_MS;
        let entries_need_sync = self.policy == SyncPolicy::Always && !ready.entries.is_empty();
        if self.unsynced && (entries_need_sync || term_vote_changed || due) {
            self.sync(now_ms)?;
        }
        Ok(Durable::assert_persisted(ready))
    }

    /// Background sync for `EverySec`: call at least every tick.
    pub fn tick(&mut self, now_ms: u64) -> Result<(), StorageError> {
        if self.unsynced && now_ms >= self.last_sync_ms + EVERYSEC_INTERVAL_MS {
            self.sync(now_ms)?;
        }
        Ok(())
    }

    fn sync(&mut self, now_ms: u64) -> Result<(), StorageError> {
        self.disk.sync(WAL)?;
        self.unsynced = false;
        self.last_sync_ms = now_ms;
        self.synced_term_vote = (self.hard_state.term, self.hard_state.vote);
        Ok(())
    }

    fn rewrite_wal(&mut self) -> Result<(), StorageError> {
        let mut buf = Vec::new();
        let (index, term) = self.base;
        encode_frame(&encode_record(&Record::Base { index, term }), &mut buf);
        encode_frame(
            &encode_record(&Record::HardState(self.hard_state)),
            &mut buf,
        );
        if !self.entries.is_empty() {
            encode_frame(
                &encode_record(&Record::Entries(self.entries.clone())),
                &mut buf,
            );
        }
        self.disk.write_file(WAL_TMP, &buf)?;
        self.disk.sync(WAL_TMP)?;
        self.disk.rename(WAL_TMP, WAL)?;
        self.disk.sync_dir()?;
        self.unsynced = false;
        self.synced_term_vote = (self.hard_state.term, self.hard_state.vote);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let records = vec![
            Record::Base { index: 5, term: 2 },
            Record::HardState(HardState {
                term: 3,
                vote: Some(2),
                commit: 7,
            }),
            Record::HardState(HardState {
                term: 3,
                vote: None,
                commit: 7,
            }),
            Record::Entries(vec![
                Entry {
                    index: 6,
                    term: 3,
                    kind: EntryKind::NoOp,
                },
                Entry {
                    index: 7,
                    term: 3,
                    kind: EntryKind::Command(b"x".to_vec()),
                },
            ]),
        ];
        for r in records {
            assert_eq!(decode_record(&encode_record(&r)), Some(r));
        }
        let s = Snapshot {
            meta: SnapshotMeta {
                index: 9,
                term: 2,
                membership: Membership { voters: vec![1, 2] },
            },
            data: b"state".to_vec(),
        };
        assert_eq!(decode_snapshot(&encode_snapshot(&s)), Some(s));
    }
}
