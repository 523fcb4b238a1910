//! Hyperion's cache engine: the `CacheEntry` store. Pure and synchronous — no I/O, no async, no
//! clock or randomness of its own — so it runs unchanged on tokio and under madsim, inside the
//! replicated state machine (`hyperion::replica::machine`).
//!
//! # Contracts
//! - **Time is data.** Every operation takes `now_ms`, cluster time in milliseconds. An entry
//!   written at `created_at` with `ttl_ms > 0` is expired when `now_ms > created_at + ttl_ms`;
//!   `ttl_ms == 0` never expires. Expired entries read as [`Lookup::Miss`], or as a
//!   [`Lookup::Hit`] with `is_stale` when the read allows stale data. Reads never delete expired
//!   entries; the reaper does, in two steps so a Raft leader can replicate them:
//!   [`Store::collect_expired`] (bounded, deterministic order) then [`Store::remove_expired`]
//!   (only if still that version and expired). [`Store::reap_expired`] does both on one node.
//! - **Versions come from the caller** (a counter on one node, the Raft log index later) and must
//!   strictly increase across all writes; a non-increasing version panics (a caller bug).
//!   `expected_version == 0` writes unconditionally; otherwise the write is a compare-and-set
//!   against the key's current version, which is 0 for an absent or expired key.
//! - **A refused write changes nothing**: key/value limits and the version check are evaluated
//!   before any mutation, and a validated write cannot fail afterwards.
//! - **Integrity**: every write stores an HMAC-SHA256 tag over (key, stored value, version, flags),
//!   length-prefixed; every read verifies it in constant time. A mismatch is never served: `get`
//!   returns [`Lookup::Corrupt`], and drops the entry unless the store is replicated (then the
//!   removal goes through the log: [`Store::remove_version`]).
//! - **Compression**: with `compression` on, values over [`COMPRESSION_THRESHOLD_BYTES`] are
//!   stored LZ4-compressed when that is smaller ([`EntryFlags::COMPRESSED`]); reads decompress
//!   transparently.
//! - **Zeroization**: stored values live in [`ValueBuf`], which wipes itself on drop: on delete,
//!   eviction, expiry, overwrite, integrity failure and when the store is dropped. (Values handed
//!   out by reads belong to the caller.)
//!
//! # Memory model
//! Each entry is charged `key.len() + stored_value.len() + ENTRY_OVERHEAD_BYTES` (stored =
//! after compression; see [`ENTRY_OVERHEAD_BYTES`] for the breakdown). Invariant after every
//! operation: `used_bytes() <= capacity_bytes()`. A write that would exceed capacity first evicts
//! whole batches of `eviction_batch_size` entries (allkeys: TTL or not) in policy order until the
//! new entry fits; [`StoreConfig::validate`] guarantees one largest entry always fits. Eviction
//! order is exact LRU (slab + intrusive list, O(1)) or LRU-K with K = 2 (B-tree by backward
//! 2-distance, O(log n)); a `get` hit and a write count as accesses, an overwrite keeps the key's
//! access history. Reads of uncompressed values borrow from the store (the 2024-11-22 lesson: no
//! clone on the read path); only decompression allocates. Entries are not `Clone`.
//!
//! # Example
//! ```
//! use hyperion_store::{IntegrityKey, Lookup, Store, StoreConfig, StoreError};
//!
//! let key = IntegrityKey::new(vec![7; 32]); // the server loads this from a file
//! let mut store = Store::new(StoreConfig::with_defaults(key)).expect("valid config");
//! let now_ms = 1_000;
//! let version = store.last_version() + 1; // single node; the Raft log index later
//! let set = store.apply_set(b"user:1", b"alice", 60_000, 0, version, now_ms).unwrap();
//! assert_eq!(set.version, 1);
//! match store.get(b"user:1", now_ms, false) {
//!     Lookup::Hit { value, version, is_stale } => {
//!         assert_eq!((&*value, version, is_stale), (&b"alice"[..], 1, false))
//!     }
//!     other => panic!("{other:?}"),
//! }
//! // Compare-and-set against a stale version is refused and changes nothing.
//! let err = store.apply_set(b"user:1", b"bob", 0, 7, 2, now_ms).unwrap_err();
//! assert_eq!(err, StoreError::VersionMismatch { expected: 7, current: 1 });
//! // Expired: a miss, or a stale hit when the read allows it.
//! assert_eq!(store.get(b"user:1", now_ms + 60_001, false), Lookup::Miss);
//! assert!(matches!(
//!     store.get(b"user:1", now_ms + 60_001, true),
//!     Lookup::Hit { is_stale: true, .. }
//! ));
//! assert_eq!(store.reap_expired(now_ms + 60_001, 1000), 1);
//! ```
//!
//! Eviction is a local decision: under Raft, replicas whose read patterns differ may evict
//! different keys (a miss, never a wrong value).

mod config;
mod entry;
mod error;
mod store;

pub use config::{
    ApplySettings, EvictionPolicy, IntegrityKey, StoreConfig, COMPRESSION_THRESHOLD_BYTES,
    DEFAULT_CACHE_SIZE_MB, DEFAULT_CAPACITY_BYTES, DEFAULT_EVICTION_BATCH_SIZE,
    DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_VALUE_BYTES, EVICTION_BATCH_SIZE_MAX,
    INTEGRITY_KEY_MIN_BYTES, MAX_KEY_BYTES_CEILING, MAX_VALUE_BYTES_CEILING,
};
pub use entry::{
    entry_bytes, stagger_ttl_ms, CacheEntry, EntryFlags, ValueBuf, ENTRY_OVERHEAD_BYTES,
    INTEGRITY_TAG_BYTES,
};
pub use error::{ConfigError, StoreError};
pub use store::{DeleteOutcome, Lookup, SetOutcome, SnapshotError, Store, StoreStats};

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
