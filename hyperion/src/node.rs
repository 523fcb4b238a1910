//! One cache node: the store, the node clock that stamps writes, and the TTL reaper.
//!
//! This is the single-node state machine host. It assigns versions (a counter that only grows),
//! stamps each write with *cluster time* — the node clock, never behind the last stamp — and
//! decides expiry against the same time, so an entry's lifetime does not depend on which clock
//! reads it (see README "TTL model").

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyperion_store::{
    stagger_ttl_ms, EvictionPolicy, IntegrityKey, Lookup, Store, StoreConfig, StoreError,
    StoreStats,
};
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::proto::{CacheStatus, GetResponse};
use crate::runtime::{self, NodeClock};

/// How often the reaper looks for expired entries (node time).
pub const REAP_INTERVAL: Duration = Duration::from_millis(100);
/// Most expired entries removed per reaper batch: bounds the time the store lock is held.
pub const REAP_BATCH_MAX: usize = 1000;
/// Most batches per reaper round; the rest waits for the next round, so a mass expiry (the
/// 2024-10-15 pattern) is spread out instead of stalling requests.
pub const REAP_BATCHES_PER_ROUND_MAX: usize = 16;

/// What a write returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub version: u64,
    pub ttl_ms: u64,
}

/// What a delete returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    pub existed: bool,
    pub version: u64,
}

/// Store settings derived from the node configuration.
pub fn store_config(config: &Config) -> StoreConfig {
    let mut store =
        StoreConfig::with_defaults(IntegrityKey::new(config.hmac_key.expose().to_vec()));
    store.capacity_bytes = config.cache_capacity_bytes();
    store.eviction_batch_size = config.eviction_batch_size;
    store.eviction = if config.flags.new_eviction_algorithm {
        EvictionPolicy::LruK2
    } else {
        EvictionPolicy::Lru
    };
    store.compression = config.flags.enable_compression;
    store.max_value_bytes = config.flags.max_value_bytes();
    store
}

struct NodeState {
    store: Store,
    /// Draws TTL staggering; seeded once (from the simulation seed in simulation).
    rng: ChaCha8Rng,
    /// The largest cluster-time stamp handed out; time never goes behind it.
    last_stamp_ms: u64,
}

impl NodeState {
    fn cluster_now_ms(&mut self, clock: &NodeClock) -> u64 {
        self.last_stamp_ms = self.last_stamp_ms.max(clock.now_ms());
        self.last_stamp_ms
    }

    fn next_version(&self) -> u64 {
        self.store.last_version() + 1
    }
}

/// A single cache node. Shared between request handlers behind an `Arc`.
pub struct CacheNode {
    state: Mutex<NodeState>,
    clock: NodeClock,
    stagger_ttl: bool,
    client_caching: bool,
    stale_grace_ms: u64,
}

impl CacheNode {
    /// Builds the node; the store configuration is validated here (a bad one is a startup error).
    pub fn new(
        config: &Config,
        clock: NodeClock,
    ) -> Result<CacheNode, hyperion_store::ConfigError> {
        let store = Store::new(store_config(config))?;
        Ok(CacheNode {
            state: Mutex::new(NodeState {
                store,
                rng: runtime::seeded_rng(),
                last_stamp_ms: 0,
            }),
            clock,
            stagger_ttl: config.stagger_ttl,
            client_caching: config.flags.enable_client_caching,
            stale_grace_ms: config.stale_grace_ms,
        })
    }

    fn state(&self) -> MutexGuard<'_, NodeState> {
        // A panic while holding the lock is a bug that already crashed a request; the store's
        // own invariants are asserted on every operation, so continuing is safe.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The node's clock (the simulator skews it).
    pub fn clock(&self) -> &NodeClock {
        &self.clock
    }

    /// Reads `key`, copying the value once into the response (the store lends it).
    pub fn get(&self, key: &[u8], allow_stale: bool) -> GetResponse {
        let mut state = self.state();
        let now_ms = state.cluster_now_ms(&self.clock);
        let expires_at_ms = state.store.expires_at_ms(key);
        let mut response = GetResponse {
            key: key.to_vec(),
            ..GetResponse::default()
        };
        match state.store.get(key, now_ms, allow_stale) {
            Lookup::Hit {
                value,
                version,
                is_stale,
            } => {
                response.status = CacheStatus::Hit as i32;
                response.value = value.into_owned();
                response.version = version;
                response.is_stale = is_stale;
                if self.client_caching && !is_stale {
                    response.ttl_remaining_ms =
                        expires_at_ms.map_or(0, |at| at.saturating_sub(now_ms));
                }
            }
            Lookup::Miss => response.status = CacheStatus::Miss as i32,
            Lookup::Corrupt => {
                tracing::error!(key = ?String::from_utf8_lossy(key), "integrity check failed; entry dropped");
                response.status = CacheStatus::Error as i32;
                response.error_message =
                    "entry failed its integrity check and was dropped".to_string();
            }
        }
        response
    }

    /// Writes `key` (compare-and-set when `expected_version` is non-zero).
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        expected_version: u64,
    ) -> Result<Written, StoreError> {
        let mut state = self.state();
        let now_ms = state.cluster_now_ms(&self.clock);
        let ttl_ms = if self.stagger_ttl {
            stagger_ttl_ms(ttl_ms, &mut state.rng)
        } else {
            ttl_ms
        };
        let version = state.next_version();
        let outcome =
            state
                .store
                .apply_set(key, value, ttl_ms, expected_version, version, now_ms)?;
        if outcome.evicted > 0 {
            tracing::debug!(evicted = outcome.evicted, "evicted entries to make room");
        }
        Ok(Written {
            version: outcome.version,
            ttl_ms,
        })
    }

    /// Removes `key` (compare-and-set when `expected_version` is non-zero).
    pub fn delete(&self, key: &[u8], expected_version: u64) -> Result<Deleted, StoreError> {
        let mut state = self.state();
        let now_ms = state.cluster_now_ms(&self.clock);
        let version = state.next_version();
        let outcome = state
            .store
            .apply_delete(key, expected_version, version, now_ms)?;
        Ok(Deleted {
            existed: outcome.existed,
            version: outcome.version,
        })
    }

    /// Removes entries expired for longer than the stale grace, at most
    /// [`REAP_BATCHES_PER_ROUND_MAX`] batches of [`REAP_BATCH_MAX`]; returns how many were removed.
    /// Until then an expired entry is a MISS for normal reads and a stale HIT for `allow_stale`
    /// reads; memory pressure evicts it earlier like any other entry.
    pub fn reap_expired(&self) -> usize {
        let mut removed = 0;
        for _ in 0..REAP_BATCHES_PER_ROUND_MAX {
            let mut state = self.state();
            let now_ms = state.cluster_now_ms(&self.clock);
            let horizon_ms = now_ms.saturating_sub(self.stale_grace_ms);
            let batch = state.store.reap_expired(horizon_ms, REAP_BATCH_MAX);
            removed += batch;
            if batch < REAP_BATCH_MAX {
                break;
            }
        }
        removed
    }

    /// Runs the reaper until the task is dropped.
    pub async fn run_reaper(self: Arc<Self>) {
        loop {
            self.clock.sleep(REAP_INTERVAL).await;
            let removed = self.reap_expired();
            if removed > 0 {
                tracing::debug!(removed, "reaped expired entries");
            }
        }
    }

    /// Counters and gauges of the store.
    pub fn stats(&self) -> StoreStats {
        self.state().store.stats()
    }

    /// Test support: flips a stored byte of `key` so the integrity path can be exercised end to
    /// end. Returns false if the key is absent.
    #[doc(hidden)]
    pub fn corrupt_for_test(&self, key: &[u8]) -> bool {
        self.state().store.corrupt_value_for_test(key)
    }
}
