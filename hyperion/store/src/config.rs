//! [`StoreConfig`]: capacity, eviction, compression, limits and the integrity key.

use std::fmt;

use zeroize::Zeroizing;

use crate::entry::ENTRY_OVERHEAD_BYTES;
use crate::error::ConfigError;

/// `HYPERION_CACHE_SIZE_MB` default (the engineering memory).
pub const DEFAULT_CACHE_SIZE_MB: u64 = 4096;
/// Default capacity: [`DEFAULT_CACHE_SIZE_MB`] MiB.
pub const DEFAULT_CAPACITY_BYTES: u64 = DEFAULT_CACHE_SIZE_MB * 1024 * 1024;
/// `HYPERION_EVICTION_BATCH_SIZE` default (the engineering memory).
pub const DEFAULT_EVICTION_BATCH_SIZE: usize = 1000;
/// Ceiling on `eviction_batch_size`: one write never does more eviction work than this.
pub const EVICTION_BATCH_SIZE_MAX: usize = 1_000_000;
/// `max_value_size_kb` default 512 (feature flags) in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 512 * 1024;
/// Ceiling on `max_value_bytes`: LZ4's size prefix is a `u32`, and gRPC messages this large are
/// already unreasonable for a cache.
pub const MAX_VALUE_BYTES_CEILING: usize = 64 * 1024 * 1024;
/// Default key limit: 4 KiB. Keys are hashed session ids, paths or protobuf-encoded ids; 4 KiB is
/// generous for those and keeps a BatchGet of 100 keys under half a megabyte.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4096;
/// Ceiling on `max_key_bytes`.
pub const MAX_KEY_BYTES_CEILING: usize = 64 * 1024;
/// Values strictly larger than this are LZ4-compressed when compression is enabled ("LZ4 for
/// values > 1KB"); the compressed form is kept only when it is smaller.
pub const COMPRESSION_THRESHOLD_BYTES: usize = 1024;
/// The HMAC-SHA256 key must be at least as long as the hash output (RFC 2104 §3).
pub const INTEGRITY_KEY_MIN_BYTES: usize = 32;

/// Which entry is evicted first when the store is over capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// Exact least-recently-used (O(1) per access).
    Lru,
    /// LRU-K with K = 2 (O(log n) per access): evict the entry with the largest backward
    /// 2-distance, i.e. the oldest second-to-last access; entries accessed only once have an
    /// infinite 2-distance and go first, least recently used among them. Resists scans. Selected
    /// by the `new_eviction_algorithm` feature flag.
    LruK2,
}

/// HMAC-SHA256 key bytes; zeroized on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct IntegrityKey(Zeroizing<Vec<u8>>);

impl IntegrityKey {
    /// Wraps key bytes (loaded by the server from a file, never from an env value).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IntegrityKey(<{} bytes redacted>)", self.0.len())
    }
}

/// Store configuration. Build with [`StoreConfig::with_defaults`] and override fields; the store
/// calls [`StoreConfig::validate`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Memory budget for keys + stored values + [`ENTRY_OVERHEAD_BYTES`] per entry
    /// (`HYPERION_CACHE_SIZE_MB` × 2²⁰).
    pub capacity_bytes: u64,
    /// Entries evicted at a time when a write would exceed capacity
    /// (`HYPERION_EVICTION_BATCH_SIZE`).
    pub eviction_batch_size: usize,
    /// Eviction order (`new_eviction_algorithm` → [`EvictionPolicy::LruK2`]).
    pub eviction: EvictionPolicy,
    /// LZ4 for values > [`COMPRESSION_THRESHOLD_BYTES`] (`enable_compression`).
    pub compression: bool,
    /// Largest accepted value (`max_value_size_kb` × 1024).
    pub max_value_bytes: usize,
    /// Largest accepted key.
    pub max_key_bytes: usize,
    /// HMAC-SHA256 key for entry integrity.
    pub integrity_key: IntegrityKey,
    /// Whether a `get` hit counts as an access for eviction order. A replicated store turns this
    /// off: recency must follow the replicated log only, so every replica evicts the same keys
    /// (and compare-and-set answers the same everywhere); reads reach recency through
    /// [`crate::Store::touch_keys`], which the leader replicates.
    pub reads_update_recency: bool,
    /// Whether a `get` that finds an entry failing its integrity check drops it. A replicated
    /// store turns this off: a replica changes only through the log, so the entry stays (never
    /// served) until its removal, proposed by the leader, applies everywhere
    /// ([`crate::Store::remove_version`]).
    pub drop_corrupt_on_read: bool,
}

/// The settings that change how writes apply (what a replicated store must agree on with its
/// replicas): capacity, eviction, compression and the value limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplySettings {
    pub capacity_bytes: u64,
    pub eviction_batch_size: usize,
    pub eviction: EvictionPolicy,
    pub compression: bool,
    pub max_value_bytes: usize,
}

impl StoreConfig {
    /// The settings of this configuration that change how writes apply.
    pub fn apply_settings(&self) -> ApplySettings {
        ApplySettings {
            capacity_bytes: self.capacity_bytes,
            eviction_batch_size: self.eviction_batch_size,
            eviction: self.eviction,
            compression: self.compression,
            max_value_bytes: self.max_value_bytes,
        }
    }

    /// This configuration with `settings` in place of its own.
    pub fn with_apply_settings(&self, settings: ApplySettings) -> StoreConfig {
        StoreConfig {
            capacity_bytes: settings.capacity_bytes,
            eviction_batch_size: settings.eviction_batch_size,
            eviction: settings.eviction,
            compression: settings.compression,
            max_value_bytes: settings.max_value_bytes,
            ..self.clone()
        }
    }

    /// The product defaults with the given integrity key.
    pub fn with_defaults(integrity_key: IntegrityKey) -> Self {
        Self {
            capacity_bytes: DEFAULT_CAPACITY_BYTES,
            eviction_batch_size: DEFAULT_EVICTION_BATCH_SIZE,
            eviction: EvictionPolicy::Lru,
            compression: true,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            integrity_key,
            reads_update_recency: true,
            drop_corrupt_on_read: true,
        }
    }

    /// The largest accounted size of one entry under this config.
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_key_bytes as u64 + self.max_value_bytes as u64 + ENTRY_OVERHEAD_BYTES
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_positive("capacity_bytes", self.capacity_bytes)?;
        check_range(
            "eviction_batch_size",
            self.eviction_batch_size as u64,
            EVICTION_BATCH_SIZE_MAX as u64,
        )?;
        check_range(
            "max_value_bytes",
            self.max_value_bytes as u64,
            MAX_VALUE_BYTES_CEILING as u64,
        )?;
        check_range(
            "max_key_bytes",
            self.max_key_bytes as u64,
            MAX_KEY_BYTES_CEILING as u64,
        )?;
        if self.capacity_bytes < self.max_entry_bytes() {
            return Err(ConfigError::CapacityBelowOneEntry {
                capacity_bytes: self.capacity_bytes,
                min_bytes: self.max_entry_bytes(),
            });
        }
        let key_len = self.integrity_key.as_bytes().len();
        if key_len < INTEGRITY_KEY_MIN_BYTES {
            return Err(ConfigError::IntegrityKeyTooShort {
                len: key_len,
                min: INTEGRITY_KEY_MIN_BYTES,
            });
        }
        Ok(())
    }
}

fn check_positive(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::Zero { field });
    }
    Ok(())
}

fn check_range(field: &'static str, value: u64, max: u64) -> Result<(), ConfigError> {
    check_positive(field, value)?;
    if value > max {
        return Err(ConfigError::AboveMaximum { field, value, max });
    }
    Ok(())
}
