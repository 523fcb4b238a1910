//! [`Store`]: the map, recency order, expiry index and memory accounting.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use hmac::Mac;

use crate::config::{ApplySettings, EvictionPolicy, StoreConfig, COMPRESSION_THRESHOLD_BYTES};
use crate::entry::{
    entry_bytes, integrity_ok, integrity_tag, CacheEntry, EntryFlags, HmacSha256, IntegrityTag,
    ValueBuf,
};
use crate::error::{ConfigError, StoreError};

/// Slab index meaning "no slot" in the intrusive LRU list.
const NIL: usize = usize::MAX;

/// Result of a successful [`Store::apply_set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOutcome {
    /// The version now stored for the key (the `version` argument).
    pub version: u64,
    /// Number of other entries evicted to make room (`== evicted_keys.len()`).
    pub evicted: usize,
    /// Keys of the evicted entries, in eviction order (moved out of the freed entries, not
    /// cloned).
    pub evicted_keys: Vec<Vec<u8>>,
}

/// Result of a successful [`Store::apply_delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Whether a live (present, unexpired) entry was removed.
    pub existed: bool,
    /// Version of the removed live entry, 0 if none.
    pub version: u64,
}

/// Result of a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The value, borrowed from the store when stored uncompressed (no copy), owned only when it
    /// had to be decompressed.
    Hit {
        /// The client's value bytes.
        value: Cow<'a, [u8]>,
        /// The entry's version.
        version: u64,
        /// The entry is expired and was served only because the read allowed stale data.
        is_stale: bool,
    },
    /// Absent, or expired and stale reads not allowed.
    Miss,
    /// The entry failed its integrity check. It is never served; [`Store::get`] has dropped (and
    /// zeroized) it and counted the failure.
    Corrupt,
}

/// Counters and gauges for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Entries held (including expired ones not yet reaped).
    pub entries: usize,
    /// Bytes charged against capacity.
    pub used_bytes: u64,
    /// Configured capacity.
    pub capacity_bytes: u64,
    /// Fresh hits served by [`Store::get`].
    pub hits: u64,
    /// Misses returned by [`Store::get`] (absent, or expired without `allow_stale`).
    pub misses: u64,
    /// Expired entries served with `is_stale` by [`Store::get`].
    pub stale_hits: u64,
    /// Entries evicted for capacity or by [`Store::evict`].
    pub evictions: u64,
    /// Expired entries removed by the reaper.
    pub expirations: u64,
    /// Entries dropped because their integrity tag did not verify.
    pub integrity_failures: u64,
}

/// Deliberately broken behaviours, compiled only into this crate's tests, that show the model
/// test can fail.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mutant {
    /// Correct behaviour.
    None,
    /// Reads treat expired entries as fresh.
    ServeExpiredAsFresh,
    /// Compare-and-set is not checked.
    IgnoreCas,
}

struct Slot {
    entry: CacheEntry,
    tag: IntegrityTag,
    /// Intrusive LRU list (used under [`EvictionPolicy::Lru`]); `prev` is towards the least
    /// recently used end.
    prev: usize,
    next: usize,
    /// Logical access times (from `Store::access_clock`); `penultimate_access == 0` means the
    /// entry was accessed only once.
    last_access: u64,
    penultimate_access: u64,
}

/// LRU-K (K = 2) order key: entries seen once `(false, last_access)` sort before entries seen
/// twice `(true, penultimate_access)`; the smallest is the victim. Access times are unique, so
/// keys are unique.
fn lru_k2_rank(slot: &Slot) -> (bool, u64) {
    if slot.penultimate_access == 0 {
        (false, slot.last_access)
    } else {
        (true, slot.penultimate_access)
    }
}

fn hash_key(hasher: &RandomState, key: &[u8]) -> u64 {
    hasher.hash_one(key)
}

/// The cache engine. See the crate docs for the contracts.
pub struct Store {
    config: StoreConfig,
    /// HMAC keyed once with `config.integrity_key`, cloned per tag.
    mac: HmacSha256,
    /// Hash seed: random per process in production, seeded by the simulator under madsim. Map
    /// iteration order never reaches output (the ordered indexes below do).
    hasher: RandomState,
    /// Slab indexes, hashed by the key of the entry in that slot.
    table: HashTable<usize>,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<usize>,
    /// Least recently used end of the LRU list.
    lru_head: usize,
    /// Most recently used end of the LRU list.
    lru_tail: usize,
    /// Victim order under [`EvictionPolicy::LruK2`].
    lru_k2_order: BTreeMap<(bool, u64), usize>,
    /// Entries with a TTL by `(expires_at_ms, version)`: the reaper's deterministic order.
    expiry_index: BTreeMap<(u64, u64), usize>,
    access_clock: u64,
    used_bytes: u64,
    last_version: u64,
    stats: StoreStats,
    #[cfg(test)]
    mutant: Mutant,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .field("last_version", &self.last_version)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Validates `config` and builds an empty store.
    pub fn new(config: StoreConfig) -> Result<Store, ConfigError> {
        config.validate()?;
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
        let mac = HmacSha256::new_from_slice(config.integrity_key.as_bytes())
            .expect("HMAC accepts any key length");
        Ok(Store {
            mac,
            hasher: RandomState::new(),
            table: HashTable::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            lru_head: NIL,
            lru_tail: NIL,
            lru_k2_order: BTreeMap::new(),
            expiry_index: BTreeMap::new(),
            access_clock: 0,
            used_bytes: 0,
            last_version: 0,
            stats: StoreStats {
                capacity_bytes: config.capacity_bytes,
                ..StoreStats::default()
            },
            config,
            #[cfg(test)]
            mutant: Mutant::None,
        })
    }

    #[cfg(test)]
    pub(crate) fn set_mutant(&mut self, mutant: Mutant) {
        self.mutant = mutant;
    }

    /// The validated configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Entries held, including expired ones not yet reaped.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the store holds no entries.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Bytes charged against capacity; always `<= capacity_bytes()`.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// The configured capacity.
    pub fn capacity_bytes(&self) -> u64 {
        self.config.capacity_bytes
    }

    /// Highest version applied so far (0 before the first write). A single node assigns
    /// `last_version() + 1` to its next write.
    pub fn last_version(&self) -> u64 {
        self.last_version
    }

    /// Counters and gauges.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            entries: self.len(),
            used_bytes: self.used_bytes,
            ..self.stats
        }
    }

    /// The key's current version: 0 when absent or expired (the value compare-and-set compares
    /// against).
    pub fn current_version(&self, key: &[u8], now_ms: u64) -> u64 {
        self.find(key)
            .map_or(0, |idx| self.live_version(&self.slot(idx).entry, now_ms))
    }

    /// When the entry under `key` expires (cluster time, ms); `None` if absent or never expiring.
    /// Serves the client-side caching hint without touching LRU order.
    pub fn expires_at_ms(&self, key: &[u8]) -> Option<u64> {
        self.find(key)
            .and_then(|idx| self.slot(idx).entry.expires_at_ms())
    }

    /// Stores `value` under `key` with version `version`, created at `now_ms`.
    ///
    /// `expected_version == 0` writes unconditionally; otherwise the write happens only if the
    /// key's current version (0 when absent or expired) equals it, else
    /// [`StoreError::VersionMismatch`]. Validation and the version check happen before any state
    /// change: an `Err` leaves the store untouched. Evicts least-valuable entries in batches of
    /// `eviction_batch_size` until the new entry fits.
    ///
    /// # Panics
    /// If `version <= last_version()`: versions are assigned by the caller and must strictly
    /// increase (a caller bug otherwise).
    pub fn apply_set(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        expected_version: u64,
        version: u64,
        now_ms: u64,
    ) -> Result<SetOutcome, StoreError> {
        self.assert_version_increases(version);
        self.validate_key(key)?;
        if value.len() > self.config.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                max: self.config.max_value_bytes,
            });
        }
        let existing = self.find(key);
        self.check_expected_version(existing, expected_version, now_ms)?;

        // From here on the write cannot fail.
        let outcome = self.install(key, value, ttl_ms, version, now_ms, existing);
        self.last_version = version;
        self.assert_accounting();
        Ok(outcome)
    }

    /// Stores an entry loaded from the system of record (a read-through fill) under the version
    /// it has there, created at `created_at` (cluster time: its TTL starts again), if the key is
    /// absent, or holds an entry expired at `created_at` whose version is not newer; returns
    /// the outcome (with the keys evicted to make room) if it was stored, `None` if not. Unlike
    /// [`Store::apply_set`] the version may be below `last_version()` (it is an old write);
    /// `last_version` rises to it if it is higher, so later writes get higher versions.
    pub fn apply_fill(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        version: u64,
        created_at: u64,
    ) -> Result<Option<SetOutcome>, StoreError> {
        self.validate_key(key)?;
        if value.len() > self.config.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                max: self.config.max_value_bytes,
            });
        }
        assert!(version > 0, "a filled entry has a version");
        let existing = self.find(key);
        if let Some(idx) = existing {
            let entry = &self.slot(idx).entry;
            if !entry.is_expired(created_at) || entry.version > version {
                return Ok(None);
            }
        }
        let outcome = self.install(key, value, ttl_ms, version, created_at, existing);
        self.last_version = self.last_version.max(version);
        self.assert_accounting();
        Ok(Some(outcome))
    }

    /// Raises the version counter: every later write gets a version above `floor` (a cluster
    /// starting empty over a system of record that holds versions up to `floor`).
    pub fn raise_version_floor(&mut self, floor: u64) {
        self.last_version = self.last_version.max(floor);
    }

    /// Encodes, tags and inserts a validated entry, replacing `existing` (keeping its access
    /// history) and evicting whole batches until it fits. Cannot fail.
    fn install(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        version: u64,
        now_ms: u64,
        existing: Option<usize>,
    ) -> SetOutcome {
        let (stored, flags) = self.encode_value(value);
        let size = entry_bytes(key.len(), stored.len());
        // `StoreConfig::validate` guarantees one largest entry fits, and encoding never grows a
        // value.
        assert!(size <= self.config.capacity_bytes);
        let tag = integrity_tag(&self.mac, key, stored.as_bytes(), version, flags);

        // An overwrite frees the old entry (zeroizing it) but keeps its access history.
        let history = existing.map(|idx| {
            let slot = self.remove_slot(idx);
            (slot.last_access, slot.penultimate_access)
        });
        let mut evicted_keys = Vec::new();
        while self.used_bytes + size > self.config.capacity_bytes {
            self.evict_into(self.config.eviction_batch_size, &mut evicted_keys);
        }
        let (last_access, penultimate_access) = history.unwrap_or((0, 0));
        let entry = CacheEntry {
            key: key.to_vec(),
            value: stored,
            ttl_ms,
            created_at: now_ms,
            version,
            flags,
        };
        let idx = self.insert_slot(Slot {
            entry,
            tag,
            prev: NIL,
            next: NIL,
            last_access,
            penultimate_access,
        });
        // Not yet in the recency order (its history may be carried over): record and link.
        self.record_access(idx);
        self.link_recency(idx);
        SetOutcome {
            version,
            evicted: evicted_keys.len(),
            evicted_keys,
        }
    }

    /// Removes `key`, with the same compare-and-set rule as [`Store::apply_set`]. An expired
    /// entry counts as absent (`existed: false`) but is freed all the same.
    ///
    /// # Panics
    /// If `version <= last_version()`.
    pub fn apply_delete(
        &mut self,
        key: &[u8],
        expected_version: u64,
        version: u64,
        now_ms: u64,
    ) -> Result<DeleteOutcome, StoreError> {
        self.assert_version_increases(version);
        self.validate_key(key)?;
        let existing = self.find(key);
        self.check_expected_version(existing, expected_version, now_ms)?;
        let outcome = match existing {
            None => DeleteOutcome {
                existed: false,
                version: 0,
            },
            Some(idx) => {
                let live_version = self.live_version(&self.slot(idx).entry, now_ms);
                drop(self.remove_slot(idx));
                DeleteOutcome {
                    existed: live_version != 0,
                    version: live_version,
                }
            }
        };
        self.last_version = version;
        self.assert_accounting();
        Ok(outcome)
    }

    /// Reads `key` at `now_ms`, marking it used for eviction. Expired entries are a
    /// [`Lookup::Miss`] unless `allow_stale`, then a stale [`Lookup::Hit`]. An entry whose
    /// integrity tag fails is reported as [`Lookup::Corrupt`] and never served; it is dropped
    /// unless the store is replicated ([`StoreConfig::drop_corrupt_on_read`]).
    pub fn get(&mut self, key: &[u8], now_ms: u64, allow_stale: bool) -> Lookup<'_> {
        let Some(idx) = self.find(key) else {
            self.stats.misses += 1;
            return Lookup::Miss;
        };
        let is_stale = self.read_as_expired(&self.slot(idx).entry, now_ms);
        if is_stale && !allow_stale {
            self.stats.misses += 1;
            return Lookup::Miss;
        }
        let decoded = match self.verify_and_decode(idx) {
            Ok(decoded) => decoded,
            Err(()) => {
                self.stats.integrity_failures += 1;
                if self.config.drop_corrupt_on_read {
                    drop(self.remove_slot(idx));
                    self.assert_accounting();
                }
                return Lookup::Corrupt;
            }
        };
        if self.config.reads_update_recency {
            self.touch(idx);
        }
        if is_stale {
            self.stats.stale_hits += 1;
        } else {
            self.stats.hits += 1;
        }
        let entry = &self.slot(idx).entry;
        Lookup::Hit {
            value: decoded.map_or(Cow::Borrowed(entry.value.as_bytes()), Cow::Owned),
            version: entry.version,
            is_stale,
        }
    }

    /// The version of `key`'s entry, expired or not, without decoding or touching recency.
    pub fn version_of(&self, key: &[u8]) -> Option<u64> {
        self.find(key).map(|idx| self.slot(idx).entry.version)
    }

    /// Like [`Store::get`] but read-only: no recency update, no counters, and a corrupt entry is
    /// reported but left in place (the next `get` drops it).
    pub fn peek(&self, key: &[u8], now_ms: u64, allow_stale: bool) -> Lookup<'_> {
        let Some(idx) = self.find(key) else {
            return Lookup::Miss;
        };
        let is_stale = self.read_as_expired(&self.slot(idx).entry, now_ms);
        if is_stale && !allow_stale {
            return Lookup::Miss;
        }
        match self.verify_and_decode(idx) {
            Err(()) => Lookup::Corrupt,
            Ok(decoded) => {
                let entry = &self.slot(idx).entry;
                Lookup::Hit {
                    value: decoded.map_or(Cow::Borrowed(entry.value.as_bytes()), Cow::Owned),
                    version: entry.version,
                    is_stale,
                }
            }
        }
    }

    /// Up to `limit` expired entries as `(key, version)`, earliest expiry first (ties by
    /// version): deterministic, so a Raft leader can propose exactly this batch. Nothing is
    /// removed.
    pub fn collect_expired(&self, now_ms: u64, limit: usize) -> Vec<(Vec<u8>, u64)> {
        self.expired_slots(now_ms)
            .take(limit)
            .map(|idx| {
                let entry = &self.slot(idx).entry;
                (entry.key.clone(), entry.version)
            })
            .collect()
    }

    /// Removes `key` only if it still holds `version` and is expired at `now_ms` (a newer write
    /// since [`Store::collect_expired`] wins). Returns whether it removed the entry.
    pub fn remove_expired(&mut self, key: &[u8], version: u64, now_ms: u64) -> bool {
        let Some(idx) = self.find(key) else {
            return false;
        };
        let entry = &self.slot(idx).entry;
        if entry.version != version || !entry.is_expired(now_ms) {
            return false;
        }
        drop(self.remove_slot(idx));
        self.stats.expirations += 1;
        self.assert_accounting();
        true
    }

    /// Changes the settings that decide how writes apply (a replicated store applies the
    /// cluster's settings from the log, at the same index on every replica). A smaller capacity
    /// evicts, in eviction order and in whole batches, until the store fits; a change of
    /// eviction policy re-orders every entry by its access history, deterministically. Returns
    /// the evicted keys. An invalid setting is refused and changes nothing.
    pub fn reconfigure(&mut self, settings: ApplySettings) -> Result<Vec<Vec<u8>>, ConfigError> {
        let config = self.config.with_apply_settings(settings);
        config.validate()?;
        if config.eviction != self.config.eviction {
            let mut occupied: Vec<(u64, usize)> = self
                .slots
                .iter()
                .enumerate()
                .filter_map(|(idx, slot)| slot.as_ref().map(|s| (s.last_access, idx)))
                .collect();
            occupied.sort_unstable();
            for &(_, idx) in &occupied {
                self.unlink_recency(idx);
            }
            self.config.eviction = config.eviction;
            for &(_, idx) in &occupied {
                self.link_recency(idx);
            }
        }
        self.config = config;
        self.stats.capacity_bytes = self.config.capacity_bytes;
        let mut evicted = Vec::new();
        while self.used_bytes > self.config.capacity_bytes {
            self.evict_into(self.config.eviction_batch_size, &mut evicted);
        }
        self.assert_accounting();
        Ok(evicted)
    }

    /// The version of the entry under `key`, whatever its state (expired, or failing its
    /// integrity check): what a removal of it must name.
    pub fn entry_version(&self, key: &[u8]) -> Option<u64> {
        self.find(key).map(|idx| self.slot(idx).entry.version)
    }

    /// Removes `key` only if it still holds `version` (a newer write since wins): how a
    /// replicated store drops an entry that failed its integrity check, on every replica at the
    /// same log index. Returns whether it removed the entry.
    pub fn remove_version(&mut self, key: &[u8], version: u64) -> bool {
        let Some(idx) = self.find(key) else {
            return false;
        };
        if self.slot(idx).entry.version != version {
            return false;
        }
        drop(self.remove_slot(idx));
        self.assert_accounting();
        true
    }

    /// Single-node reaper: removes up to `limit` expired entries in [`Store::collect_expired`]
    /// order and returns how many it removed.
    pub fn reap_expired(&mut self, now_ms: u64, limit: usize) -> usize {
        let mut removed = 0;
        while removed < limit {
            let Some(idx) = self.expired_slots(now_ms).next() else {
                break;
            };
            drop(self.remove_slot(idx));
            self.stats.expirations += 1;
            removed += 1;
        }
        self.assert_accounting();
        removed
    }

    /// Evicts up to `count` entries in eviction order (the admin `/admin/cache/evict?count=N`)
    /// and returns their keys.
    pub fn evict(&mut self, count: usize) -> Vec<Vec<u8>> {
        let mut evicted_keys = Vec::new();
        self.evict_into(count, &mut evicted_keys);
        self.assert_accounting();
        evicted_keys
    }

    /// Test hook: flips one bit of the stored value (or, for an empty value, of the tag) so the
    /// next read fails its integrity check. Idempotent: an entry already corrupt stays corrupt (a
    /// second flip would heal it). Returns whether `key` was present.
    #[doc(hidden)]
    pub fn corrupt_value_for_test(&mut self, key: &[u8]) -> bool {
        let Some(idx) = self.find(key) else {
            return false;
        };
        let slot = self.slot(idx);
        if !integrity_ok(&self.mac, &slot.entry, &slot.tag) {
            return true;
        }
        let slot = self.slot_mut(idx);
        match slot.entry.value.as_mut_bytes_for_test().first_mut() {
            Some(byte) => *byte ^= 0x01,
            None => slot.tag[0] ^= 0x01,
        }
        true
    }

    /// Fault injection: corrupts (as [`Store::corrupt_value_for_test`]) the entry at position
    /// `pick` modulo the number of entries, in slot order; returns its key (`None` if empty).
    #[doc(hidden)]
    pub fn corrupt_any_for_test(&mut self, pick: u64) -> Option<Vec<u8>> {
        let occupied: Vec<usize> = (0..self.slots.len())
            .filter(|&idx| self.slots[idx].is_some())
            .collect();
        if occupied.is_empty() {
            return None;
        }
        let idx = occupied[(pick % occupied.len() as u64) as usize];
        let key = self.slot(idx).entry.key.to_vec();
        self.corrupt_value_for_test(&key);
        Some(key)
    }

    #[cfg(test)]
    pub(crate) fn entry_for_test(&self, key: &[u8]) -> Option<&CacheEntry> {
        self.find(key).map(|idx| &self.slot(idx).entry)
    }

    /// Full structural check (O(n)), run by the model test after every step: every index agrees
    /// with the slab and the byte count is the sum of the entries.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let occupied: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .collect();
        assert_eq!(occupied.len(), self.table.len());
        assert_eq!(occupied.len() + self.free_slots.len(), self.slots.len());
        let mut bytes = 0;
        for &idx in &occupied {
            let entry = &self.slot(idx).entry;
            bytes += entry.accounted_bytes();
            assert_eq!(self.find(&entry.key), Some(idx));
            if let Some(at) = entry.expires_at_ms() {
                assert_eq!(self.expiry_index.get(&(at, entry.version)), Some(&idx));
            }
        }
        assert_eq!(bytes, self.used_bytes);
        assert_eq!(
            self.expiry_index.len(),
            occupied
                .iter()
                .filter(|&&i| self.slot(i).entry.ttl_ms != 0)
                .count()
        );
        match self.config.eviction {
            EvictionPolicy::Lru => {
                // Walk the list: it links every entry once, in increasing last-access order.
                let (mut idx, mut prev, mut count, mut last_access) = (self.lru_head, NIL, 0, 0);
                while idx != NIL {
                    let slot = self.slot(idx);
                    assert_eq!(slot.prev, prev);
                    assert!(slot.last_access > last_access);
                    (prev, idx, last_access) = (idx, slot.next, slot.last_access);
                    count += 1;
                }
                assert_eq!(prev, self.lru_tail);
                assert_eq!(count, occupied.len());
            }
            EvictionPolicy::LruK2 => {
                assert_eq!(self.lru_k2_order.len(), occupied.len());
                for (rank, &idx) in &self.lru_k2_order {
                    assert_eq!(*rank, lru_k2_rank(self.slot(idx)));
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn slot_bytes_for_test() -> usize {
        std::mem::size_of::<Option<Slot>>()
    }

    // ---- internals ----

    fn assert_version_increases(&self, version: u64) {
        assert!(
            version > self.last_version,
            "version {version} is not greater than the last applied version {}",
            self.last_version
        );
    }

    fn validate_key(&self, key: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        if key.len() > self.config.max_key_bytes {
            return Err(StoreError::KeyTooLarge {
                len: key.len(),
                max: self.config.max_key_bytes,
            });
        }
        Ok(())
    }

    fn check_expected_version(
        &self,
        existing: Option<usize>,
        expected_version: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.mutant == Mutant::IgnoreCas {
            return Ok(());
        }
        if expected_version == 0 {
            return Ok(());
        }
        let current = existing.map_or(0, |idx| self.live_version(&self.slot(idx).entry, now_ms));
        if current != expected_version {
            return Err(StoreError::VersionMismatch {
                expected: expected_version,
                current,
            });
        }
        Ok(())
    }

    fn live_version(&self, entry: &CacheEntry, now_ms: u64) -> u64 {
        if entry.is_expired(now_ms) {
            0
        } else {
            entry.version
        }
    }

    /// Whether a read treats the entry as expired (the one place a test mutant can lie).
    fn read_as_expired(&self, entry: &CacheEntry, now_ms: u64) -> bool {
        #[cfg(test)]
        if self.mutant == Mutant::ServeExpiredAsFresh {
            return false;
        }
        entry.is_expired(now_ms)
    }

    fn encode_value(&self, value: &[u8]) -> (ValueBuf, EntryFlags) {
        if self.config.compression && value.len() > COMPRESSION_THRESHOLD_BYTES {
            let compressed = lz4_flex::compress_prepend_size(value);
            if compressed.len() < value.len() {
                return (
                    ValueBuf::take_zeroizing(compressed),
                    EntryFlags::INTEGRITY.with(EntryFlags::COMPRESSED),
                );
            }
            drop(ValueBuf::take_zeroizing(compressed));
        }
        (ValueBuf::copy_from(value), EntryFlags::INTEGRITY)
    }

    /// Verifies the tag; returns the decompressed value for compressed entries (`None` means
    /// "borrow the stored bytes"). `Err` on a bad tag or undecodable data.
    fn verify_and_decode(&self, idx: usize) -> Result<Option<Vec<u8>>, ()> {
        let slot = self.slot(idx);
        if !integrity_ok(&self.mac, &slot.entry, &slot.tag) {
            return Err(());
        }
        if !slot.entry.flags.contains(EntryFlags::COMPRESSED) {
            return Ok(None);
        }
        lz4_flex::decompress_size_prepended(slot.entry.value.as_bytes())
            .map(Some)
            .map_err(|_| ())
    }

    fn expired_slots(&self, now_ms: u64) -> impl Iterator<Item = usize> + '_ {
        // Expired means `expires_at_ms < now_ms`; versions are >= 1, so `(now_ms, 0)` bounds
        // exactly those.
        self.expiry_index.range(..(now_ms, 0)).map(|(_, &idx)| idx)
    }

    fn slot(&self, idx: usize) -> &Slot {
        self.slots[idx]
            .as_ref()
            .expect("indexes only reference occupied slots")
    }

    fn slot_mut(&mut self, idx: usize) -> &mut Slot {
        self.slots[idx]
            .as_mut()
            .expect("indexes only reference occupied slots")
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let hash = hash_key(&self.hasher, key);
        self.table
            .find(hash, |&idx| self.slot(idx).entry.key == key)
            .copied()
    }

    fn insert_slot(&mut self, slot: Slot) -> usize {
        assert!(self.find(&slot.entry.key).is_none(), "duplicate key");
        let hash = hash_key(&self.hasher, &slot.entry.key);
        let expiry = slot
            .entry
            .expires_at_ms()
            .map(|at| (at, slot.entry.version));
        self.used_bytes += slot.entry.accounted_bytes();
        let idx = match self.free_slots.pop() {
            Some(idx) => {
                self.slots[idx] = Some(slot);
                idx
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.table.insert_unique(hash, idx, |&i| {
            let slot = slots[i].as_ref().expect("table references occupied slots");
            hash_key(hasher, &slot.entry.key)
        });
        if let Some(expiry) = expiry {
            self.expiry_index.insert(expiry, idx);
        }
        idx
    }

    /// Unlinks the slot from every index, releases its bytes and returns it (dropping it
    /// zeroizes the value).
    fn remove_slot(&mut self, idx: usize) -> Slot {
        self.unlink_recency(idx);
        let slot = self.slots[idx]
            .take()
            .expect("indexes only reference occupied slots");
        let hash = hash_key(&self.hasher, &slot.entry.key);
        let removed = self
            .table
            .find_entry(hash, |&i| i == idx)
            .map(|entry| entry.remove());
        assert!(removed.is_ok(), "slot missing from the hash table");
        if let Some(at) = slot.entry.expires_at_ms() {
            let expiry = self.expiry_index.remove(&(at, slot.entry.version));
            assert_eq!(expiry, Some(idx), "slot missing from the expiry index");
        }
        self.used_bytes -= slot.entry.accounted_bytes();
        self.free_slots.push(idx);
        slot
    }

    /// Records an access of a linked slot: it moves in the policy's order.
    fn touch(&mut self, idx: usize) {
        self.unlink_recency(idx);
        self.record_access(idx);
        self.link_recency(idx);
    }

    fn record_access(&mut self, idx: usize) {
        self.access_clock += 1;
        let now = self.access_clock;
        let slot = self.slot_mut(idx);
        if slot.last_access != 0 {
            slot.penultimate_access = slot.last_access;
        }
        slot.last_access = now;
    }

    /// Adds the slot to the policy's order (LRU: at the most recently used end).
    fn link_recency(&mut self, idx: usize) {
        match self.config.eviction {
            EvictionPolicy::Lru => {
                let tail = self.lru_tail;
                {
                    let slot = self.slot_mut(idx);
                    slot.prev = tail;
                    slot.next = NIL;
                }
                if tail == NIL {
                    self.lru_head = idx;
                } else {
                    self.slot_mut(tail).next = idx;
                }
                self.lru_tail = idx;
            }
            EvictionPolicy::LruK2 => {
                let rank = lru_k2_rank(self.slot(idx));
                let previous = self.lru_k2_order.insert(rank, idx);
                assert!(previous.is_none(), "LRU-K ranks are unique");
            }
        }
    }

    /// Removes a linked slot from the policy's order.
    fn unlink_recency(&mut self, idx: usize) {
        let slot = self.slot(idx);
        match self.config.eviction {
            EvictionPolicy::Lru => {
                let (prev, next) = (slot.prev, slot.next);
                if prev == NIL {
                    self.lru_head = next;
                } else {
                    self.slot_mut(prev).next = next;
                }
                if next == NIL {
                    self.lru_tail = prev;
                } else {
                    self.slot_mut(next).prev = prev;
                }
                let slot = self.slot_mut(idx);
                slot.prev = NIL;
                slot.next = NIL;
            }
            EvictionPolicy::LruK2 => {
                let rank = lru_k2_rank(slot);
                let removed = self.lru_k2_order.remove(&rank);
                assert_eq!(removed, Some(idx), "slot missing from the LRU-K order");
            }
        }
    }

    fn victim(&self) -> Option<usize> {
        match self.config.eviction {
            EvictionPolicy::Lru => (self.lru_head != NIL).then_some(self.lru_head),
            EvictionPolicy::LruK2 => self.lru_k2_order.values().next().copied(),
        }
    }

    /// Evicts up to `count` victims, appending their keys.
    fn evict_into(&mut self, count: usize, evicted_keys: &mut Vec<Vec<u8>>) {
        for _ in 0..count {
            let Some(idx) = self.victim() else {
                break;
            };
            let mut slot = self.remove_slot(idx);
            evicted_keys.push(std::mem::take(&mut slot.entry.key));
            self.stats.evictions += 1;
        }
    }

    fn assert_accounting(&self) {
        debug_assert_eq!(self.table.len(), self.slots.len() - self.free_slots.len());
        assert!(self.used_bytes <= self.config.capacity_bytes);
        assert_eq!(self.table.is_empty(), self.used_bytes == 0);
    }
}

/// Magic and format version of [`Store::export_snapshot`].
const SNAPSHOT_MAGIC: &[u8; 8] = b"HYPSNAP1";

/// Why [`Store::import_snapshot`] refused a snapshot. The store is unchanged on error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is truncated or malformed at byte {offset}")]
    Malformed { offset: usize },
    #[error("snapshot holds {bytes} bytes of entries, above this store's capacity {capacity}")]
    OverCapacity { bytes: u64, capacity: u64 },
}

struct SnapshotReader<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> SnapshotReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .offset
            .checked_add(n)
            .filter(|&end| end <= self.data.len());
        let end = end.ok_or(SnapshotError::Malformed {
            offset: self.offset,
        })?;
        let bytes = &self.data[self.offset..end];
        self.offset = end;
        Ok(bytes)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("took 8 bytes")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| SnapshotError::Malformed {
            offset: self.offset,
        })?;
        self.take(len)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

impl Store {
    /// The latest creation stamp of any entry (0 when empty): after loading a snapshot, cluster
    /// time must not go behind it. O(n); called only when a snapshot is loaded.
    pub fn max_created_at_ms(&self) -> u64 {
        self.slots
            .iter()
            .flatten()
            .map(|slot| slot.entry.created_at)
            .max()
            .unwrap_or(0)
    }

    /// Marks `keys` as accessed, in order, for eviction (absent keys are skipped). A replicated
    /// store applies this from the log, so recency stays identical on every replica.
    pub fn touch_keys(&mut self, keys: &[Vec<u8>]) {
        for key in keys {
            if let Some(idx) = self.find(key) {
                self.touch(idx);
            }
        }
    }

    /// Serializes every entry (stored bytes, tag, metadata and access history) in recency order,
    /// plus the version and access counters: two stores with the same contents export the same
    /// bytes, and an import reproduces the same eviction order. The buffer is wiped on drop.
    pub fn export_snapshot(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(self.snapshot_len()));
        self.export_snapshot_into(&mut out);
        out
    }

    /// The exact length of [`Store::export_snapshot`], known before writing it, so a caller can
    /// frame the snapshot inside a larger message and write it once ([`Store::export_snapshot_into`]).
    pub fn snapshot_len(&self) -> usize {
        const FIXED_PER_ENTRY: usize = 8 + 8 + 6 * 8 + crate::entry::INTEGRITY_TAG_BYTES;
        let entries: usize = self
            .slots
            .iter()
            .flatten()
            .map(|slot| FIXED_PER_ENTRY + slot.entry.key.len() + slot.entry.value.as_bytes().len())
            .sum();
        SNAPSHOT_MAGIC.len() + 3 * 8 + entries
    }

    /// Appends [`Store::export_snapshot`]'s bytes to `out` (exactly [`Store::snapshot_len`] of
    /// them; the caller reserves).
    pub fn export_snapshot_into(&self, out: &mut Vec<u8>) {
        let mut occupied: Vec<&Slot> = self.slots.iter().flatten().collect();
        occupied.sort_by_key(|slot| slot.last_access);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&self.access_clock.to_le_bytes());
        out.extend_from_slice(&self.last_version.to_le_bytes());
        out.extend_from_slice(&(occupied.len() as u64).to_le_bytes());
        for slot in occupied {
            let entry = &slot.entry;
            put_bytes(out, &entry.key);
            put_bytes(out, entry.value.as_bytes());
            for field in [
                entry.ttl_ms,
                entry.created_at,
                entry.version,
                u64::from(entry.flags.bits()),
                slot.last_access,
                slot.penultimate_access,
            ] {
                out.extend_from_slice(&field.to_le_bytes());
            }
            out.extend_from_slice(&slot.tag);
        }
    }

    /// Feeds everything [`Store::export_snapshot`] holds into `hasher`, except each stored
    /// value's bytes, which its integrity tag stands for: two replicas that applied the same log
    /// hash alike, and a replica whose stored bytes were damaged afterwards (its tag no longer
    /// verifies; it never serves the entry) still hashes like the others.
    pub fn digest(&self, hasher: &mut impl std::hash::Hasher) {
        let mut occupied: Vec<&Slot> = self.slots.iter().flatten().collect();
        occupied.sort_by_key(|slot| slot.last_access);
        hasher.write_u64(self.access_clock);
        hasher.write_u64(self.last_version);
        hasher.write_usize(occupied.len());
        for slot in occupied {
            let entry = &slot.entry;
            hasher.write(&entry.key);
            hasher.write_usize(entry.value.as_bytes().len());
            for field in [
                entry.ttl_ms,
                entry.created_at,
                entry.version,
                u64::from(entry.flags.bits()),
                slot.last_access,
                slot.penultimate_access,
            ] {
                hasher.write_u64(field);
            }
            hasher.write(&slot.tag);
        }
    }

    /// Replaces the contents with a snapshot from [`Store::export_snapshot`] (typically another
    /// replica's). Entries whose integrity tag does not verify under this store's key are dropped
    /// and counted, never served. On error the store is unchanged.
    pub fn import_snapshot(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        let mut reader = SnapshotReader { data, offset: 0 };
        if reader.take(SNAPSHOT_MAGIC.len())? != SNAPSHOT_MAGIC {
            return Err(SnapshotError::Malformed { offset: 0 });
        }
        let access_clock = reader.u64()?;
        let last_version = reader.u64()?;
        let count = reader.u64()?;
        let mut decoded = Vec::new();
        let mut bytes = 0u64;
        for _ in 0..count {
            let key = reader.bytes()?.to_vec();
            let value = ValueBuf::copy_from(reader.bytes()?);
            let mut fields = [0u64; 6];
            for field in &mut fields {
                *field = reader.u64()?;
            }
            let tag: IntegrityTag = reader
                .take(crate::entry::INTEGRITY_TAG_BYTES)?
                .try_into()
                .expect("took a tag's length");
            let [ttl_ms, created_at, version, flags, last_access, penultimate_access] = fields;
            let flags = u8::try_from(flags)
                .ok()
                .and_then(EntryFlags::from_bits)
                .ok_or(SnapshotError::Malformed {
                    offset: reader.offset,
                })?;
            bytes += entry_bytes(key.len(), value.len());
            decoded.push(Slot {
                entry: CacheEntry {
                    key,
                    value,
                    ttl_ms,
                    created_at,
                    version,
                    flags,
                },
                tag,
                prev: NIL,
                next: NIL,
                last_access,
                penultimate_access,
            });
        }
        if reader.offset != data.len() {
            return Err(SnapshotError::Malformed {
                offset: reader.offset,
            });
        }
        if bytes > self.config.capacity_bytes {
            return Err(SnapshotError::OverCapacity {
                bytes,
                capacity: self.config.capacity_bytes,
            });
        }
        // Validated: replace the contents (dropping the old slots zeroizes their values).
        let occupied: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some())
            .collect();
        for idx in occupied {
            drop(self.remove_slot(idx));
        }
        for slot in decoded {
            if !integrity_ok(&self.mac, &slot.entry, &slot.tag) {
                self.stats.integrity_failures += 1;
                continue;
            }
            let idx = self.insert_slot(slot);
            self.link_recency(idx);
        }
        self.access_clock = access_clock;
        self.last_version = last_version;
        self.assert_accounting();
        Ok(())
    }
}
