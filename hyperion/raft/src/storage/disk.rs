//! The `Disk` seam: a flat directory of named files, with explicit durability.
//!
//! Contract (POSIX semantics, what the WAL relies on):
//! - `append`/`write_file` make bytes visible to later reads of this process (and of a restarted
//!   process after a crash) but not durable;
//! - `sync(name)` makes the file's *contents* durable (fdatasync); it does not make a newly
//!   created or renamed *name* durable;
//! - `rename` atomically replaces `to`; `sync_dir` makes names (creations, renames, removals)
//!   durable;
//! - an `append` that fails for lack of space (ENOSPC, [`DiskError::is_full`]) leaves the file as
//!   it was: no torn record for a later append to follow.
//!
//! [`FileDisk`] implements this on `std::fs`. [`SimDisk`] models it in memory with a seeded RNG:
//! a process crash keeps everything written (the page cache survives), a power loss keeps only
//! what was synced plus a random prefix of each file's unsynced tail, possibly with its last byte
//! garbled (a torn write). Its state lives behind a shared handle, outside any node, so a crashed
//! node is rebuilt from the same `SimDisk`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use thiserror::Error;

/// An I/O failure, naming the operation and file.
#[derive(Debug, Error)]
#[error("disk {op} of `{name}` failed: {source}")]
pub struct DiskError {
    /// The operation.
    pub op: &'static str,
    /// The file.
    pub name: String,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Linux's ENOSPC.
const ENOSPC: i32 = 28;

impl DiskError {
    /// The device had no room for the write (ENOSPC): nothing is wrong with what is stored, and
    /// the write may succeed once space is freed.
    pub fn is_full(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::StorageFull
            || self.source.raw_os_error() == Some(ENOSPC)
    }

    /// The operation was a sync (of a file's contents or of the directory).
    pub fn is_sync(&self) -> bool {
        matches!(self.op, "fdatasync" | "fsync" | "fsync_dir")
    }

    /// The error of a full device.
    pub fn full(op: &'static str, name: &str) -> DiskError {
        DiskError {
            op,
            name: name.to_string(),
            source: std::io::Error::from_raw_os_error(ENOSPC),
        }
    }
}

/// A flat directory of files; see the module docs for the durability contract.
pub trait Disk {
    /// The whole file, or `None` if it does not exist.
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError>;
    /// Appends to the file, creating it if needed.
    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError>;
    /// Creates or truncates the file and writes `data`.
    fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError>;
    /// Makes the file's contents durable (fdatasync).
    fn sync(&mut self, name: &str) -> Result<(), DiskError>;
    /// Atomically renames `from` over `to`.
    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError>;
    /// Makes the directory's names durable (fsync of the directory).
    fn sync_dir(&mut self) -> Result<(), DiskError>;
    /// Removes the file if it exists.
    fn remove(&mut self, name: &str) -> Result<(), DiskError>;
    /// An id of the current boot of the machine (it changes when the machine loses power or
    /// reboots, never when only the process restarts), if the platform has one. Unsynced writes
    /// survive a process crash but not a new boot.
    fn boot_id(&mut self) -> Result<Option<String>, DiskError>;
}

/// [`Disk`] on a real directory.
#[derive(Debug)]
pub struct FileDisk {
    dir: PathBuf,
    appenders: BTreeMap<String, File>,
}

impl FileDisk {
    /// Uses (and creates) `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileDisk, DiskError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| DiskError {
            op: "create_dir",
            name: dir.display().to_string(),
            source,
        })?;
        Ok(FileDisk {
            dir,
            appenders: BTreeMap::new(),
        })
    }

    fn err<'a>(op: &'static str, name: &'a str) -> impl FnOnce(std::io::Error) -> DiskError + 'a {
        move |source| DiskError {
            op,
            name: name.to_string(),
            source,
        }
    }
}

impl Disk for FileDisk {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let mut file = match File::open(self.dir.join(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::err("open", name)(e)),
        };
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(Self::err("read", name))?;
        Ok(Some(data))
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        if !self.appenders.contains_key(name) {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(name))
                .map_err(Self::err("open", name))?;
            self.appenders.insert(name.to_string(), file);
        }
        let file = self
            .appenders
            .get_mut(name)
            .unwrap_or_else(|| unreachable!("inserted above"));
        let before = file.metadata().map_err(Self::err("stat", name))?.len();
        match file.write_all(data) {
            Ok(()) => Ok(()),
            Err(error) => {
                let error = Self::err("append", name)(error);
                if error.is_full() {
                    // Part of `data` may have been written: cut it off (shrinking needs no
                    // space), so the file ends where it did and a later append follows whole
                    // records.
                    file.set_len(before).map_err(Self::err("truncate", name))?;
                }
                Err(error)
            }
        }
    }

    fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.appenders.remove(name);
        let mut file = File::create(self.dir.join(name)).map_err(Self::err("create", name))?;
        let written = file.write_all(data).map_err(Self::err("write", name));
        if written.as_ref().is_err_and(DiskError::is_full) {
            // Give the space back: a half-written file is of no use to anyone.
            drop(file);
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        written
    }

    fn sync(&mut self, name: &str) -> Result<(), DiskError> {
        match self.appenders.get(name) {
            Some(f) => f.sync_data().map_err(Self::err("fdatasync", name)),
            None => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(self.dir.join(name))
                    .map_err(Self::err("open", name))?;
                f.sync_data().map_err(Self::err("fdatasync", name))
            }
        }
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        self.appenders.remove(from);
        self.appenders.remove(to);
        std::fs::rename(self.dir.join(from), self.dir.join(to)).map_err(Self::err("rename", from))
    }

    fn sync_dir(&mut self) -> Result<(), DiskError> {
        let dir = File::open(&self.dir).map_err(Self::err("open_dir", "."))?;
        dir.sync_all().map_err(Self::err("fsync_dir", "."))
    }

    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        self.appenders.remove(name);
        match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Self::err("remove", name)(e)),
            _ => Ok(()),
        }
    }

    fn boot_id(&mut self) -> Result<Option<String>, DiskError> {
        // Linux: a random id chosen by the kernel at every boot.
        match std::fs::read_to_string(LINUX_BOOT_ID) {
            Ok(id) => Ok(Some(id.trim().to_string())),
            Err(_) => Ok(None),
        }
    }
}

/// Where Linux publishes the id of the current boot.
const LINUX_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, Clone, Default)]
struct SimFile {
    durable: Vec<u8>,
    current: Vec<u8>,
}

#[derive(Debug)]
struct SimDiskState {
    files: BTreeMap<u64, SimFile>,
    names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    next_file: u64,
    rng: ChaCha8Rng,
    syncs: u64,
    /// Power losses so far: the simulated machine's boot id.
    boots: u64,
    /// Every sync fails with EIO while set (a failing device).
    failing_syncs: bool,
    /// Most bytes the files may hold together (`None`: unbounded); a write past it fails with
    /// ENOSPC and writes nothing.
    capacity_bytes: Option<u64>,
    /// Every read fails with EIO while set (latent read errors).
    failing_reads: bool,
}

/// An in-memory [`Disk`] with crash and power-loss models; cloning shares the same disk.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<SimDiskState>>,
}

impl SimDisk {
    /// An empty disk whose power-loss tearing is driven by `seed`.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(SimDiskState {
                files: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                next_file: 0,
                rng: ChaCha8Rng::seed_from_u64(seed),
                syncs: 0,
                boots: 0,
                failing_syncs: false,
                capacity_bytes: None,
                failing_reads: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SimDiskState> {
        // Single-threaded by design; a poisoned lock only means a test already panicked.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A process crash: the page cache survives, so nothing changes on the disk. (The caller
    /// drops the node and its storage and recovers from this disk.)
    pub fn crash(&self) {}

    /// A power loss: each name created, renamed or removed since the last `sync_dir` keeps its
    /// new state or reverts to the old one (the directory entry may or may not have reached the
    /// disk); each file keeps its synced contents plus any prefix of its unsynced appends (cut at
    /// any byte), whose last kept byte may be garbled (a torn write). The machine reboots: its
    /// boot id changes.
    pub fn power_loss(&self) {
        let mut st = self.lock();
        let st = &mut *st;
        st.boots += 1;
        let mut names = st.durable_names.clone();
        let changed: BTreeSet<String> = st
            .names
            .keys()
            .chain(st.durable_names.keys())
            .filter(|name| st.names.get(*name) != st.durable_names.get(*name))
            .cloned()
            .collect();
        for name in changed {
            if st.rng.random_bool(0.5) {
                match st.names.get(&name) {
                    Some(id) => {
                        names.insert(name, *id);
                    }
                    None => {
                        names.remove(&name);
                    }
                }
            }
        }
        st.names = names.clone();
        st.durable_names = names;
        let live: Vec<u64> = st.names.values().copied().collect();
        st.files.retain(|id, _| live.contains(id));
        for file in st.files.values_mut() {
            let mut kept = file.durable.clone();
            if file.current.len() > file.durable.len() && file.current.starts_with(&file.durable) {
                let tail = &file.current[file.durable.len()..];
                let keep = st.rng.random_range(0..=tail.len());
                kept.extend_from_slice(&tail[..keep]);
                if keep > 0 && st.rng.random_bool(0.25) {
                    let last = kept.len() - 1;
                    kept[last] ^= st.rng.random_range(1..=255u8);
                }
            }
            file.durable = kept.clone();
            file.current = kept;
        }
    }

    /// Latent media damage: flips the bits of `mask` in byte `offset` of `name`, durably (a bit
    /// rot the checksums must catch). Returns whether the byte exists.
    pub fn flip_bits(&self, name: &str, offset: usize, mask: u8) -> bool {
        let mut st = self.lock();
        let Some(id) = st.names.get(name).copied() else {
            return false;
        };
        let file = st.files.entry(id).or_default();
        if offset >= file.current.len() {
            return false;
        }
        file.current[offset] ^= mask;
        if offset < file.durable.len() {
            file.durable[offset] ^= mask;
        }
        true
    }

    /// A lost or replaced disk: every file is gone (the node restarts with an empty data
    /// directory).
    pub fn wipe(&self) {
        let mut st = self.lock();
        st.files.clear();
        st.names.clear();
        st.durable_names.clear();
    }

    /// A failing device: while `failing`, every `sync` and `sync_dir` fails with EIO and makes
    /// nothing durable (reads still show what was written, from the page cache). The storage
    /// must stop at the first failure rather than retry: on Linux the failed pages may have
    /// been dropped, so a later sync that succeeds would prove nothing.
    pub fn fail_syncs(&self, failing: bool) {
        self.lock().failing_syncs = failing;
    }

    /// A full device: writes that would take the files past `capacity_bytes` (together) fail
    /// with ENOSPC and write nothing; `None` lifts the bound.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.lock().capacity_bytes = capacity_bytes;
    }

    /// Bytes the files hold now (what a capacity is measured against).
    pub fn used_bytes(&self) -> u64 {
        let st = self.lock();
        st.names
            .values()
            .filter_map(|id| st.files.get(id))
            .map(|f| f.current.len() as u64)
            .sum()
    }

    /// Latent read errors: while `failing`, every read fails with EIO (what is stored is intact).
    pub fn fail_reads(&self, failing: bool) {
        self.lock().failing_reads = failing;
    }

    /// Whether syncs are failing now (see [`SimDisk::fail_syncs`]).
    pub fn syncs_failing(&self) -> bool {
        self.lock().failing_syncs
    }

    /// Number of `sync` calls so far (for tests and cost accounting).
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Bytes of `name` visible to reads now (tests).
    pub fn written_len(&self, name: &str) -> Option<usize> {
        let st = self.lock();
        let id = st.names.get(name)?;
        st.files.get(id).map(|f| f.current.len())
    }

    /// Bytes of `name` that would survive a power loss right now (tests).
    pub fn durable_len(&self, name: &str) -> Option<usize> {
        let st = self.lock();
        let id = st.durable_names.get(name)?;
        st.files.get(id).map(|f| f.durable.len())
    }
}

/// The error of a failing device.
fn eio(op: &'static str, name: &str) -> DiskError {
    DiskError {
        op,
        name: name.to_string(),
        source: std::io::Error::from_raw_os_error(5),
    }
}

impl Disk for SimDisk {
    fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, DiskError> {
        let st = self.lock();
        if st.failing_reads {
            return Err(eio("read", name));
        }
        Ok(st
            .names
            .get(name)
            .and_then(|id| st.files.get(id))
            .map(|f| f.current.clone()))
    }

    fn append(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        let mut st = self.lock();
        if let Some(capacity) = st.capacity_bytes {
            let used: u64 = st
                .names
                .values()
                .filter_map(|id| st.files.get(id))
                .map(|f| f.current.len() as u64)
                .sum();
            if used + data.len() as u64 > capacity {
                return Err(DiskError::full("append", name));
            }
        }
        let id = match st.names.get(name) {
            Some(id) => *id,
            None => {
                let id = st.next_file;
                st.next_file += 1;
                st.names.insert(name.to_string(), id);
                st.files.insert(id, SimFile::default());
                id
            }
        };
        st.files
            .entry(id)
            .or_default()
            .current
            .extend_from_slice(data);
        Ok(())
    }

    fn write_file(&mut self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        {
            let mut st = self.lock();
            if let Some(id) = st.names.get(name).copied() {
                st.files.entry(id).or_default().current.clear();
            }
        }
        self.append(name, data)
    }

    fn sync(&mut self, name: &str) -> Result<(), DiskError> {
        let mut st = self.lock();
        st.syncs += 1;
        if st.failing_syncs {
            return Err(eio("fdatasync", name));
        }
        let Some(id) = st.names.get(name).copied() else {
            return Err(DiskError {
                op: "fdatasync",
                name: name.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        };
        let file = st.files.entry(id).or_default();
        file.durable = file.current.clone();
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        let mut st = self.lock();
        let Some(id) = st.names.remove(from) else {
            return Err(DiskError {
                op: "rename",
                name: from.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        };
        st.names.insert(to.to_string(), id);
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), DiskError> {
        let mut st = self.lock();
        st.syncs += 1;
        if st.failing_syncs {
            return Err(eio("fsync", "."));
        }
        st.durable_names = st.names.clone();
        Ok(())
    }

    fn remove(&mut self, name: &str) -> Result<(), DiskError> {
        self.lock().names.remove(name);
        Ok(())
    }

    fn boot_id(&mut self) -> Result<Option<String>, DiskError> {
        Ok(Some(format!("simulated-boot-{}", self.lock().boots)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_keeps_synced_and_prefix_of_unsynced() {
        for seed in 0..50 {
            let mut disk = SimDisk::new(seed);
            disk.append("f", b"hello").unwrap();
            disk.sync("f").unwrap();
            disk.sync_dir().unwrap();
            disk.append("f", b" world").unwrap();
            disk.crash();
            assert_eq!(disk.read("f").unwrap().unwrap(), b"hello world");
            disk.power_loss();
            let after = disk.read("f").unwrap().unwrap();
            assert!(after.starts_with(b"hello") && after.len() <= 11);
        }
    }

    #[test]
    fn an_unsynced_rename_is_kept_or_reverted_on_power_loss() {
        let (mut kept, mut reverted) = (0, 0);
        for seed in 0..40 {
            let mut disk = SimDisk::new(seed);
            disk.write_file("a.tmp", b"x").unwrap();
            disk.sync("a.tmp").unwrap();
            disk.rename("a.tmp", "a").unwrap();
            let boot = disk.boot_id().unwrap();
            disk.power_loss();
            assert_ne!(disk.boot_id().unwrap(), boot, "a power loss is a new boot");
            match (disk.read("a").unwrap(), disk.read("a.tmp").unwrap()) {
                (Some(a), None) => {
                    assert_eq!(a, b"x");
                    kept += 1;
                }
                (None, _) => reverted += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(kept > 0 && reverted > 0, "kept {kept}, reverted {reverted}");
    }

    #[test]
    fn a_synced_rename_survives_and_a_crash_is_not_a_new_boot() {
        let mut disk = SimDisk::new(3);
        disk.write_file("a.tmp", b"x").unwrap();
        disk.sync("a.tmp").unwrap();
        disk.rename("a.tmp", "a").unwrap();
        disk.sync_dir().unwrap();
        let boot = disk.boot_id().unwrap();
        disk.crash();
        assert_eq!(disk.boot_id().unwrap(), boot);
        disk.power_loss();
        assert_eq!(disk.read("a").unwrap().unwrap(), b"x");
        assert!(disk.flip_bits("a", 0, 0x01));
        assert_eq!(disk.read("a").unwrap().unwrap(), b"y");
    }

    #[test]
    fn file_disk_round_trip() {
        let dir =
            std::env::temp_dir().join(format!("hyperion-raft-filedisk-{}", std::process::id()));
        let mut disk = FileDisk::open(&dir).unwrap();
        disk.write_file("x.tmp", b"abc").unwrap();
        disk.sync("x.tmp").unwrap();
        disk.rename("x.tmp", "x").unwrap();
        disk.sync_dir().unwrap();
        disk.append("x", b"def").unwrap();
        disk.sync("x").unwrap();
        assert_eq!(disk.read("x").unwrap().unwrap(), b"abcdef");
        disk.remove("x").unwrap();
        assert_eq!(disk.read("x").unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
