//! Durable state of one node: a WAL (`wal`) of hard states and entries, plus one atomic snapshot
//! file (`snapshot`), written through a [`Disk`].
//!
//! # Contract
//! - [`Storage::persist`] writes a [`Ready`]'s snapshot, hard state and entries, in that order,
//!   and returns the [`Durable`] proof that releases its persisted messages.
//! - **Term and vote are synced before `persist` returns whenever they changed**, under every
//!   policy: no vote or append response can leave before the term/vote it implies is durable
//!   (Raft §5.1, Figure 2). The term/vote record precedes the entries of the same Ready, so a
//!   torn tail can never keep entries of a term whose term record it lost.
//! - **The commit index is written after the entries it covers** (its own record), so whatever
//!   prefix of the WAL survives a power loss, a recovered commit index never covers an entry
//!   that was not recovered with it (a commit covering a torn suffix would apply entries that
//!   were never committed). The term/vote record carries the commit already written.
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
//! - [`recover`] returns the last complete state: it drops a torn last write (never inventing
//!   data) and WAL entries that do not continue the snapshot, and refuses a WAL corrupted before
//!   its end ([`StorageError::CorruptWal`]): dropping valid records after a bad one would drop
//!   synced terms and votes and allow a double vote. [`Storage::open`] goes further: a torn last
//!   write is only possible after a power loss (another boot id, no clean shutdown); otherwise
//!   even a bad *last* record is damage to synced data, and refused.
//! - **Unclean stops.** A clean shutdown ([`Storage::mark_clean_shutdown`]) leaves a marker;
//!   every open records the machine's boot id ([`Disk::boot_id`]). A node that finds no marker
//!   and another boot id (the machine lost power or rebooted since) under `EverySec` may have lost
//!   entries it acknowledged: [`Recovered::unsynced_loss_possible`]. A process crash keeps the
//!   page cache, and with it everything written.

mod disk;
pub mod wal;

pub use disk::{Disk, DiskError, FileDisk, SimDisk};

use thiserror::Error;

use crate::config::Mutations;
use crate::message::{Entry, EntryKind, HardState, Membership, Snapshot, SnapshotMeta};
use crate::node::{Durable, Ready, Recovered};
use wal::{decode_frames, encode_frame, FramesEnd, Reader, Writer};

/// Longest time `EverySec` leaves written entries unsynced, in the node's clock.
pub const EVERYSEC_INTERVAL_MS: u64 = 1000;

/// The write-ahead log's file: its syncs are the fsyncs an acknowledged write waits on.
pub const WAL: &str = "wal";
const WAL_TMP: &str = "wal.tmp";
const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_TMP: &str = "snapshot.tmp";
/// Present after a clean shutdown, removed at every open.
const CLEAN_SHUTDOWN: &str = "clean-shutdown";
/// The boot id of the machine when the storage was last opened.
const BOOT: &str = "boot";
/// Present while the node must catch up with a leader before it may vote again; survives
/// restarts until [`Storage::mark_caught_up`].
const CATCH_UP: &str = "catch-up";
/// Space held back for when the device fills (see [`Storage::reserve`]).
const RESERVE: &str = "reserve";
const BOOT_TMP: &str = "boot.tmp";

const RECORD_HARD_STATE: u8 = 1;
const RECORD_ENTRIES: u8 = 2;
const RECORD_BASE: u8 = 3;
const RECORD_COMMIT: u8 = 4;

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
    #[error(
        "the snapshot file fails its checksum (it is written whole and renamed into place, so \
         this is damage on the device, not a torn write); this node's Raft state cannot be \
         trusted: wipe its data directory and restart it with \
         HYPERION_JOIN_EXISTING_CLUSTER=true, so that it rejoins from its peers and votes only \
         after it has caught up"
    )]
    CorruptSnapshot,
    /// A WAL record before the end of the file fails its checksum: data that was written whole
    /// (possibly a synced term or vote) was damaged. Truncating there would lose it silently.
    #[error(
        "the WAL is corrupt at byte {offset} of {len} (a damaged record is followed by more \
         data, so this is not a torn last write); this node's Raft state cannot be trusted: wipe \
         its data directory and restart it with HYPERION_JOIN_EXISTING_CLUSTER=true, so that it \
         rejoins from its peers and votes only after it has caught up"
    )]
    CorruptWal {
        /// Where the damaged record starts.
        offset: usize,
        /// The WAL's size.
        len: usize,
    },
}

impl StorageError {
    /// A write (never a sync) failed for lack of space: nothing stored was damaged and the
    /// write may be retried once space is freed. A sync that fails, whatever its error, leaves
    /// the durable state unknown (the page cache may have dropped what it held).
    pub fn is_out_of_space(&self) -> bool {
        match self {
            StorageError::Disk(error) => error.is_full() && !error.is_sync(),
            _ => false,
        }
    }
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
    /// The commit index, written after the entries it covers.
    Commit(u64),
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
        Record::Commit(commit) => {
            w.u8(RECORD_COMMIT);
            w.u64(*commit);
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
        RECORD_COMMIT => Record::Commit(r.u64()?),
        RECORD_ENTRIES => {
            let n = r.u64()?;
            let mut entries = Vec::new();
            for _ in 0..n {
                let index = r.u64()?;
                let term = r.u64()?;
                let kind = match r.u8()? {
                    0 => EntryKind::NoOp,
                    1 => EntryKind::Command(r.bytes()?.into()),
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
    let mut out = wal::MAGIC.to_vec();
    encode_frame(&w.buf, &mut out);
    out
}

fn decode_snapshot(bytes: &[u8]) -> Option<Snapshot> {
    let (frames, len, _) = decode_frames(bytes);
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
        data: data.into(),
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
            Record::Commit(commit) => self.hard_state.commit = commit,
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

/// [`recover_report`], with the fault-injection switch that takes mid-WAL corruption for a torn
/// tail ([`Mutations::wal_corruption_as_torn_tail`]).
fn recover_with(
    disk: &mut dyn Disk,
    mutations: &Mutations,
    torn_tail_possible: bool,
) -> Result<RecoveryReport, StorageError> {
    let report = recover_report(disk);
    if let Ok(report) = &report {
        if report.wal_valid_bytes < report.wal_total_bytes && !torn_tail_possible {
            // No power loss since the last open (same boot, or a clean shutdown): nothing can
            // have been torn, so a bad last record is damage too.
            return Err(StorageError::CorruptWal {
                offset: report.wal_valid_bytes,
                len: report.wal_total_bytes,
            });
        }
    }
    match report {
        Err(StorageError::CorruptWal { offset, .. }) if mutations.wal_corruption_as_torn_tail => {
            // The pre-fix behaviour: keep the records before the damage, drop the rest.
            let mut wal = disk.read(WAL)?.unwrap_or_default();
            wal.truncate(offset);
            let mut truncated = TruncatedWal { disk, wal };
            recover_report(&mut truncated)
        }
        other => other,
    }
}

/// A view of a disk whose WAL reads as a given prefix (for [`recover_with`]).
struct TruncatedWal<'a> {
    disk: &'a mut dyn Disk,
    wal: Vec<u8>,
}

impl Disk for TruncatedWal<'_> {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        if name == WAL {
            return Ok(Some(self.wal.clone()));
        }
        self.disk.read(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.disk.append(name, data)
    }
    fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.disk.write_file(name, data)
    }
    fn sync(&mut self, name: &str) -> Result<(), DiskError> {
        self.disk.sync(name)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        self.disk.rename(from, to)
    }
    fn sync_dir(&mut self) -> Result<(), DiskError> {
        self.disk.sync_dir()
    }
    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        self.disk.remove(name)
    }
    fn boot_id(&mut self) -> Result<Option<String>, DiskError> {
        self.disk.boot_id()
    }
}

/// [`recover`], also reporting how much of the WAL was valid.
pub fn recover_report(disk: &mut dyn Disk) -> Result<RecoveryReport, StorageError> {
    let snapshot = match disk.read(SNAPSHOT)? {
        Some(bytes) => Some(decode_snapshot(&bytes).ok_or(StorageError::CorruptSnapshot)?),
        None => None,
    };
    let wal_bytes = disk.read(WAL)?.unwrap_or_default();
    let (frames, _, end) = decode_frames(&wal_bytes);
    if let FramesEnd::Corrupt { offset } = end {
        return Err(StorageError::CorruptWal {
            offset,
            len: wal_bytes.len(),
        });
    }
    let mut replay = Replay::default();
    let (first_frame, header_bytes) = wal::framing(&wal_bytes);
    let mut valid_len = first_frame;
    for payload in frames {
        let Some(record) = decode_record(payload) else {
            return Err(StorageError::CorruptWal {
                offset: valid_len,
                len: wal_bytes.len(),
            });
        };
        if !replay.apply(record) {
            return Err(StorageError::CorruptWal {
                offset: valid_len,
                len: wal_bytes.len(),
            });
        }
        valid_len += header_bytes + payload.len();
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
            unsynced_loss_possible: false,
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
    /// The hard state as written to the WAL (not necessarily synced).
    hard_state: HardState,
    synced_term_vote: (u64, Option<u64>),
    unsynced: bool,
    last_sync_ms: u64,
    /// Fault injection: the pre-fix record order (hard state with its commit before the entries).
    commit_before_entries: bool,
    /// The node owes a catch-up (see [`Storage::begin_catch_up`]).
    catching_up: bool,
    /// Bytes of a torn WAL tail dropped when the storage was opened.
    torn_tail_bytes: usize,
}

impl<D: Disk> Storage<D> {
    /// Recovers the state on `disk` and repairs a torn WAL tail (the valid prefix is rewritten
    /// atomically so that new records are never appended after garbage). Refuses a WAL corrupted
    /// before its end. Records the machine's boot id and consumes the clean-shutdown marker (see
    /// the module docs for [`Recovered::unsynced_loss_possible`]).
    pub fn open(
        disk: D,
        policy: SyncPolicy,
        now_ms: u64,
    ) -> Result<(Self, Recovered), StorageError> {
        Storage::open_with(disk, policy, now_ms, &Mutations::default())
    }

    /// [`Storage::open`] with the storage's fault-injection switches
    /// ([`Mutations::unverified_commit`], [`Mutations::wal_corruption_as_torn_tail`]).
    pub fn open_with(
        mut disk: D,
        policy: SyncPolicy,
        now_ms: u64,
        mutations: &Mutations,
    ) -> Result<(Self, Recovered), StorageError> {
        let clean = disk.read(CLEAN_SHUTDOWN)?.is_some();
        let boot = disk.boot_id()?;
        let same_boot =
            boot.is_some() && disk.read(BOOT)?.as_deref() == boot.as_deref().map(str::as_bytes);
        let torn_tail_possible = !clean && !same_boot;
        let report = recover_with(&mut disk, mutations, torn_tail_possible)?;
        let torn_tail_bytes =
            report.wal_total_bytes - report.wal_valid_bytes.min(report.wal_total_bytes);
        let mut recovered = report.recovered;
        let had_state = recovered.hard_state.term > 0
            || recovered.snapshot.is_some()
            || !recovered.entries.is_empty();
        let lost_unsynced = policy == SyncPolicy::EverySec && had_state && !clean && !same_boot;
        // Once owed, a catch-up is owed until done, across any number of restarts.
        let catching_up = lost_unsynced || disk.read(CATCH_UP)?.is_some();
        recovered.unsynced_loss_possible = catching_up;
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
            commit_before_entries: mutations.unverified_commit,
            catching_up,
            torn_tail_bytes,
        };
        // Always rewrite: it drops a torn tail, drops entries that do not continue the
        // snapshot, and makes the WAL's *name* durable (an fsync of a new file does not).
        storage.rewrite_wal()?;
        if let Some(boot) = boot {
            storage.disk.write_file(BOOT_TMP, boot.as_bytes())?;
            storage.disk.sync(BOOT_TMP)?;
            storage.disk.rename(BOOT_TMP, BOOT)?;
        }
        storage.disk.remove(CLEAN_SHUTDOWN)?;
        if catching_up {
            storage.write_marker(CATCH_UP)?;
        }
        storage.disk.sync_dir()?;
        Ok((storage, recovered))
    }

    /// Records durably that the node must catch up with a leader before it votes again (a node
    /// joining with an empty log, or one that may have lost acknowledged entries); the record
    /// survives restarts until [`Storage::mark_caught_up`].
    pub fn begin_catch_up(&mut self) -> Result<(), StorageError> {
        self.write_marker(CATCH_UP)?;
        self.disk.sync_dir()?;
        self.catching_up = true;
        Ok(())
    }

    /// Bytes of a torn WAL tail that [`Storage::open`] dropped and repaired (0 if none).
    pub fn torn_tail_bytes(&self) -> usize {
        self.torn_tail_bytes
    }

    /// Whether a catch-up is owed (the driver calls [`Storage::mark_caught_up`] once the core no
    /// longer abstains).
    pub fn catching_up(&self) -> bool {
        self.catching_up
    }

    /// The node has caught up: it may vote again, also after a restart.
    pub fn mark_caught_up(&mut self) -> Result<(), StorageError> {
        self.disk.remove(CATCH_UP)?;
        self.disk.sync_dir()?;
        self.catching_up = false;
        Ok(())
    }

    fn write_marker(&mut self, name: &str) -> Result<(), StorageError> {
        self.disk.write_file(name, b"1\n")?;
        self.disk.sync(name)?;
        Ok(())
    }

    /// The disk (e.g. for a simulated power loss in tests).
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Makes everything written durable and leaves the clean-shutdown marker: the next open knows
    /// nothing acknowledged was lost. Call it last, when the node stops on purpose.
    pub fn mark_clean_shutdown(&mut self, now_ms: u64) -> Result<(), StorageError> {
        if self.unsynced {
            self.sync(now_ms)?;
        }
        self.write_marker(CLEAN_SHUTDOWN)?;
        self.disk.sync_dir()?;
        Ok(())
    }

    /// Persists the durable parts of `ready`; see the module docs for what is synced.
    ///
    /// Retryable when it fails for lack of space ([`StorageError::is_out_of_space`]): every
    /// write happens before the state it describes is taken as written, a failed append leaves
    /// the WAL as it was, and a snapshot already in place is not written again. Any other
    /// failure leaves the durable state unknown: the caller must stop.
    pub fn persist(&mut self, ready: &Ready, now_ms: u64) -> Result<Durable, StorageError> {
        if let Some(snapshot) = ready
            .snapshot
            .as_ref()
            .filter(|s| s.meta.index > self.base.0)
        {
            self.disk
                .write_file(SNAPSHOT_TMP, &encode_snapshot(snapshot))?;
            self.disk.sync(SNAPSHOT_TMP)?;
            let (si, st) = (snapshot.meta.index, snapshot.meta.term);
            let term_at_si = if si > self.base.0 {
                self.entries
                    .get((si - self.base.0 - 1) as usize)
                    .map(|e| e.term)
            } else {
                None
            };
            // The log after the snapshot: what follows `si` if this log agrees at `si`.
            let kept_from = match term_at_si {
                Some(term) if term == st => (si - self.base.0) as usize,
                _ => self.entries.len(),
            };
            let hard_state = ready.hard_state.unwrap_or(self.hard_state);
            self.disk.rename(SNAPSHOT_TMP, SNAPSHOT)?;
            self.disk.sync_dir()?;
            // A crash (or a full disk) here leaves the new snapshot beside the old WAL, which
            // recovery reads as it reads this state; the WAL is rewritten before the mirror
            // below changes, so a retry writes it again from the same state.
            let entries = std::mem::take(&mut self.entries);
            let rewritten = self.rewrite_wal_with((si, st), hard_state, &entries[kept_from..]);
            self.entries = entries;
            rewritten?;
            self.entries.drain(..kept_from);
            self.base = (si, st);
            self.hard_state = hard_state;
        }
        let mut buf = Vec::new();
        let mut term_vote_changed = false;
        // With a snapshot, the rewritten (and synced) WAL already holds the hard state.
        let hard_state = ready.hard_state.filter(|_| ready.snapshot.is_none());
        let mut commit_after_entries = None;
        if let Some(hs) = hard_state {
            let written = self.hard_state;
            term_vote_changed = (hs.term, hs.vote) != self.synced_term_vote;
            if self.commit_before_entries {
                encode_frame(&encode_record(&Record::HardState(hs)), &mut buf);
            } else {
                if (hs.term, hs.vote) != (written.term, written.vote) {
                    // Term and vote first, with the commit already written (never a new one).
                    let term_vote = HardState {
                        commit: written.commit,
                        ..hs
                    };
                    encode_frame(&encode_record(&Record::HardState(term_vote)), &mut buf);
                }
                if hs.commit != written.commit {
                    commit_after_entries = Some(hs.commit);
                }
            }
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
            encode_frame(
                &encode_record(&Record::Entries(ready.entries.clone())),
                &mut buf,
            );
        }
        if let Some(commit) = commit_after_entries {
            encode_frame(&encode_record(&Record::Commit(commit)), &mut buf);
        }
        if !buf.is_empty() {
            self.disk.append(WAL, &buf)?;
            self.unsynced = true;
        }
        // Written: the mirror follows.
        if let Some(hs) = hard_state {
            self.hard_state = hs;
        }
        if !ready.entries.is_empty() {
            let first = ready.entries[0].index;
            self.entries.truncate((first - self.base.0 - 1) as usize);
            self.entries.extend(ready.entries.iter().cloned());
        }
        // A commit-only change is never synced by itself: commit is re-learned from the leader.
        let due = now_ms >= self.last_sync_ms + EVERYSEC_INTERVAL_MS;
        let entries_need_sync = self.policy == SyncPolicy::Always && !ready.entries.is_empty();
        if self.unsynced && (entries_need_sync || term_vote_changed || due) {
            self.sync(now_ms)?;
        }
        Ok(Durable::assert_persisted(ready))
    }

    /// Writes `bytes` of reserved space (`RESERVE`), synced: room the node can give back when
    /// the device fills, so it goes on with what it cannot refuse (its peers' entries) while it
    /// refuses client writes. `0` removes the reserve.
    pub fn reserve(&mut self, bytes: usize) -> Result<(), StorageError> {
        if bytes == 0 {
            return self.release_reserve();
        }
        self.disk.write_file(RESERVE, &vec![0; bytes])?;
        self.disk.sync(RESERVE)?;
        self.disk.sync_dir()?;
        Ok(())
    }

    /// Gives the reserved space back to the device.
    pub fn release_reserve(&mut self) -> Result<(), StorageError> {
        self.disk.remove(RESERVE)?;
        self.disk.sync_dir()?;
        Ok(())
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
        let entries = std::mem::take(&mut self.entries);
        let rewritten = self.rewrite_wal_with(self.base, self.hard_state, &entries);
        self.entries = entries;
        rewritten
    }

    /// Replaces the WAL with one holding `base`, `hard_state` and `entries`, atomically.
    fn rewrite_wal_with(
        &mut self,
        (index, term): (u64, u64),
        hard_state: HardState,
        entries: &[Entry],
    ) -> Result<(), StorageError> {
        let mut buf = wal::MAGIC.to_vec();
        encode_frame(&encode_record(&Record::Base { index, term }), &mut buf);
        encode_frame(&encode_record(&Record::HardState(hard_state)), &mut buf);
        if !entries.is_empty() {
            encode_frame(&encode_record(&Record::Entries(entries.to_vec())), &mut buf);
        }
        self.disk.write_file(WAL_TMP, &buf)?;
        self.disk.sync(WAL_TMP)?;
        self.disk.rename(WAL_TMP, WAL)?;
        self.disk.sync_dir()?;
        self.unsynced = false;
        self.synced_term_vote = (hard_state.term, hard_state.vote);
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
            Record::Commit(9),
            Record::Entries(vec![
                Entry {
                    index: 6,
                    term: 3,
                    kind: EntryKind::NoOp,
                },
                Entry {
                    index: 7,
                    term: 3,
                    kind: EntryKind::Command(b"x".to_vec().into()),
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
            data: b"state".to_vec().into(),
        };
        assert_eq!(decode_snapshot(&encode_snapshot(&s)), Some(s));
    }
}
