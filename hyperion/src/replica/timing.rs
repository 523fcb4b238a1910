//! What the replica times for the node's metrics, kept out of the node loop: the WAL's fsyncs
//! (timed at the disk, so the syncs of persist and of the `EverySec` tick are both seen) and the
//! snapshots the node takes of its state machine.

use hyperion_raft::storage::{Disk, DiskError, WAL};
use hyperion_raft::RaftNode;

use super::handle::Shared;
use crate::timing::Timer;

/// A [`Disk`] that times the syncs of the write-ahead log and passes everything else through.
pub(super) struct TimedDisk {
    pub(super) disk: Box<dyn Disk + Send>,
    pub(super) wal_fsync: Timer,
}

impl Disk for TimedDisk {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        self.disk.read(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.disk.append(name, data)
    }
    fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.disk.write_file(name, data)
    }
    fn sync(&mut self, name: &str) -> Result<(), DiskError> {
        if name == WAL {
            self.wal_fsync.time(|| self.disk.sync(name))
        } else {
            self.disk.sync(name)
        }
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

/// Takes the snapshot at `index` the core asked for (compaction), timed and counted.
pub(super) fn take_snapshot(raft: &mut RaftNode, shared: &Shared, index: u64, timer: &Timer) {
    let started = timer.start();
    let data = shared.machine().export();
    match raft.snapshot_taken(index, data) {
        Ok(()) => {
            timer.stop(started);
            shared
                .snapshots
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(error) => tracing::warn!(%error, "snapshot not taken"),
    }
}
