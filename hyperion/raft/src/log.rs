//! The in-memory Raft log of one node: a snapshot prefix plus the entries after it.
//!
//! Contract: indices are consecutive from `snapshot_index + 1`; `commit ≥ snapshot_index`;
//! `stable_index` is the last index known durable (entries after it are handed out in the next
//! `Ready`). Entries at or below `commit` are never truncated (asserted: Log Matching + Leader
//! Completeness, §5.3–5.4). `held_bytes` is what the entries cost in memory (payload plus the
//! fixed per-entry cost), kept as running sums so that the applied prefix's size is O(1).

use crate::message::{Entry, EntryKind};

/// Memory one entry costs beyond its payload: the entry itself and its running-sum slot.
pub const ENTRY_OVERHEAD_BYTES: usize = std::mem::size_of::<Entry>() + std::mem::size_of::<u64>();

fn entry_bytes(e: &Entry) -> u64 {
    (e.payload_bytes() + ENTRY_OVERHEAD_BYTES) as u64
}

/// The log; owned by the core.
#[derive(Debug, Clone)]
pub(crate) struct RaftLog {
    pub(crate) snapshot_index: u64,
    pub(crate) snapshot_term: u64,
    entries: Vec<Entry>,
    /// `sums[i]` = `dropped` + bytes of `entries[..=i]` (see [`entry_bytes`]).
    sums: Vec<u64>,
    /// The running sum before `entries[0]`: the bytes of every entry ever compacted or truncated
    /// from the front.
    dropped: u64,
    /// Last index durable on this node's disk (as far as the core knows).
    pub(crate) stable_index: u64,
    pub(crate) commit: u64,
}

impl RaftLog {
    pub(crate) fn new(snapshot_index: u64, snapshot_term: u64, entries: Vec<Entry>) -> Self {
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snapshot_index + 1 + i as u64,
                "recovered log is not consecutive"
            );
        }
        let mut total = 0u64;
        let sums = entries
            .iter()
            .map(|e| {
                total += entry_bytes(e);
                total
            })
            .collect();
        let log = RaftLog {
            snapshot_index,
            snapshot_term,
            entries,
            sums,
            dropped: 0,
            stable_index: 0,
            commit: snapshot_index,
        };
        RaftLog {
            stable_index: log.last_index(),
            ..log
        }
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.snapshot_index + self.entries.len() as u64
    }

    fn last_sum(&self) -> u64 {
        self.sums.last().copied().unwrap_or(self.dropped)
    }

    /// Memory the entries after the snapshot hold.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.last_sum() - self.dropped
    }

    /// Memory the entries in `(snapshot_index, index]` hold (what compacting to `index` frees).
    pub(crate) fn held_bytes_through(&self, index: u64) -> u64 {
        if index <= self.snapshot_index {
            return 0;
        }
        let last = (index.min(self.last_index()) - self.snapshot_index - 1) as usize;
        self.sums[last] - self.dropped
    }

    fn push(&mut self, e: Entry) {
        let sum = self.last_sum() + entry_bytes(&e);
        self.entries.push(e);
        self.sums.push(sum);
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// Term of the entry at `index`; `None` if compacted away (below the snapshot) or beyond the end.
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.snapshot_index - 1) as usize].term)
    }

    pub(crate) fn entry(&self, index: u64) -> Option<&Entry> {
        if index <= self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.snapshot_index - 1) as usize])
    }

    /// Entries in `[from, to]` (both inclusive), stopping after `bytes_max` payload bytes (always
    /// at least one entry if the range is non-empty).
    pub(crate) fn slice(&self, from: u64, to: u64, bytes_max: usize) -> Vec<Entry> {
        assert!(from > self.snapshot_index, "slice below the snapshot");
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut index = from;
        while index <= to.min(self.last_index()) {
            let e = &self.entries[(index - self.snapshot_index - 1) as usize];
            bytes += e.payload_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(e.clone());
            index += 1;
        }
        out
    }

    /// First index holding `term` at or after the snapshot (for the back-off hint).
    pub(crate) fn first_index_of_term(&self, term: u64, at_or_below: u64) -> u64 {
        let mut index = at_or_below;
        while index > self.snapshot_index + 1 && self.term(index - 1) == Some(term) {
            index -= 1;
        }
        index
    }

    /// Last index holding `term`, if any entry (after the snapshot) has it.
    pub(crate) fn last_index_of_term(&self, term: u64) -> Option<u64> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.term == term)
            .map(|e| e.index)
    }

    /// Appends one new entry at the end (leader path).
    pub(crate) fn append_new(&mut self, term: u64, kind: EntryKind) -> u64 {
        assert!(
            term >= self.last_term(),
            "leader appends an entry older than its last term"
        );
        let index = self.last_index() + 1;
        self.push(Entry { term, index, kind });
        index
    }

    /// Follower path (§5.3 step 3–4): skip entries already present, truncate at the first
    /// conflict, append the rest. Returns the first index that changed, if any.
    pub(crate) fn merge(&mut self, entries: &[Entry]) -> Option<u64> {
        let mut first_changed = None;
        for e in entries {
            if e.index <= self.snapshot_index {
                continue;
            }
            match self.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    assert!(
                        e.index > self.commit,
                        "truncating committed entry {} (commit {})",
                        e.index,
                        self.commit
                    );
                    let keep = (e.index - self.snapshot_index - 1) as usize;
                    self.entries.truncate(keep);
                    self.sums.truncate(keep);
                    self.stable_index = self.stable_index.min(e.index - 1);
                }
                None => {}
            }
            assert_eq!(e.index, self.last_index() + 1, "gap in appended entries");
            self.push(e.clone());
            first_changed.get_or_insert(e.index);
        }
        first_changed
    }

    pub(crate) fn commit_to(&mut self, index: u64) {
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        if index > self.commit {
            self.commit = index;
        }
    }

    /// Entries not yet handed out for persistence.
    pub(crate) fn unstable(&self) -> Vec<Entry> {
        assert!(
            self.stable_index <= self.last_index(),
            "stable index beyond the log"
        );
        if self.stable_index >= self.last_index() {
            return Vec::new();
        }
        self.slice(
            self.stable_index.max(self.snapshot_index) + 1,
            self.last_index(),
            usize::MAX,
        )
    }

    /// Drops entries up to `index` (which becomes the snapshot index).
    pub(crate) fn compact(&mut self, index: u64, term: u64) {
        assert!(index > self.snapshot_index, "compacting backwards");
        if self.term(index) == Some(term) {
            let drop = (index - self.snapshot_index) as usize;
            self.dropped = self.sums[drop - 1];
            self.entries.drain(..drop);
            self.sums.drain(..drop);
        } else {
            // Installing a snapshot that conflicts with or lies beyond our log: discard it all.
            assert!(
                index > self.commit,
                "snapshot conflicts with committed entries"
            );
            self.dropped = self.last_sum();
            self.entries.clear();
            self.sums.clear();
            // Whatever was durable belonged to the discarded history.
            self.stable_index = index;
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.commit = self.commit.max(index);
        self.stable_index = self.stable_index.max(index);
        assert!(
            self.stable_index <= self.last_index(),
            "stable index beyond the log"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::NoOp,
        }
    }

    #[test]
    fn merge_truncates_at_conflict_only() {
        let mut log = RaftLog::new(0, 0, vec![e(1, 1), e(2, 1), e(3, 2)]);
        assert_eq!(log.merge(&[e(2, 1), e(3, 2)]), None);
        assert_eq!(log.merge(&[e(3, 3), e(4, 3)]), Some(3));
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.term(3), Some(3));
        assert_eq!(log.stable_index, 2);
        assert_eq!(log.first_index_of_term(3, 4), 3);
        assert_eq!(log.last_index_of_term(1), Some(2));
    }

    /// Regression (found by the cluster harness): installing a leader's snapshot that conflicts
    /// with a durable suffix must not leave `stable_index` pointing past the new log, or later
    /// entries at those indices are never handed out for persistence.
    #[test]
    fn conflicting_snapshot_resets_stable_index() {
        let mut log = RaftLog::new(0, 0, vec![e(1, 1), e(2, 1), e(3, 1), e(4, 1)]);
        log.commit_to(1);
        log.compact(2, 2);
        assert_eq!(log.last_index(), 2);
        assert_eq!(log.stable_index, 2);
        log.merge(&[e(3, 2)]);
        assert_eq!(log.unstable(), vec![e(3, 2)]);
    }

    #[test]
    fn compact_keeps_suffix() {
        let mut log = RaftLog::new(0, 0, vec![e(1, 1), e(2, 1), e(3, 2)]);
        log.commit_to(2);
        log.compact(2, 1);
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        assert_eq!(log.last_index(), 3);
    }

    fn command(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Command(vec![0; len].into()),
        }
    }

    #[test]
    fn held_bytes_follow_appends_truncations_and_compactions() {
        let cost = |len: usize| (len + ENTRY_OVERHEAD_BYTES) as u64;
        let mut log = RaftLog::new(0, 0, vec![command(1, 1, 100), command(2, 1, 200)]);
        assert_eq!(log.held_bytes(), cost(100) + cost(200));
        log.append_new(1, EntryKind::Command(vec![0; 300].into()));
        assert_eq!(log.held_bytes_through(2), cost(100) + cost(200));
        assert_eq!(log.held_bytes(), cost(100) + cost(200) + cost(300));
        // A conflict at 3 truncates the 300-byte entry and appends two others.
        log.merge(&[command(3, 2, 10), command(4, 2, 20)]);
        assert_eq!(
            log.held_bytes(),
            cost(100) + cost(200) + cost(10) + cost(20)
        );
        log.commit_to(3);
        log.compact(2, 1);
        assert_eq!(log.held_bytes(), cost(10) + cost(20));
        assert_eq!(log.held_bytes_through(2), 0);
        assert_eq!(log.held_bytes_through(3), cost(10));
        // A snapshot beyond the log discards it all.
        log.compact(9, 3);
        assert_eq!(log.held_bytes(), 0);
        log.merge(&[command(10, 3, 5)]);
        assert_eq!(log.held_bytes(), cost(5));
    }
}
