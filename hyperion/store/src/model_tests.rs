//! Model test: the store against a simple reference model (a `HashMap`, a fake clock, and a
//! linear scan for the eviction victim) over random operation sequences, checking every result
//! and the memory invariants after every step. Eviction is modelled exactly (victim choice and
//! batch size), so the model predicts which keys a write evicts; the only thing the model borrows
//! from the implementation is the LZ4 codec, to know a value's stored size.
//!
//! `model_test_catches_mutants` keeps the checker honest: deliberately broken stores (serving
//! expired entries as fresh; ignoring compare-and-set) must fail it.

use std::borrow::Cow;
use std::collections::HashMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

use crate::store::Mutant;
use crate::*;

const MAX_KEY_BYTES: usize = 16;
const MAX_VALUE_BYTES: usize = 3000;
/// Keys by index: 0 is empty, 7 is one byte over the limit, the rest are valid.
const KEYS: [&[u8]; 8] = [
    b"",
    b"a",
    b"b",
    b"c",
    b"d",
    b"e",
    b"f",
    b"0123456789abcdefg",
];

#[derive(Debug, Clone)]
struct ModelConfig {
    capacity_bytes: u64,
    eviction_batch_size: usize,
    eviction: EvictionPolicy,
    compression: bool,
}

impl ModelConfig {
    fn store_config(&self) -> StoreConfig {
        StoreConfig {
            capacity_bytes: self.capacity_bytes,
            eviction_batch_size: self.eviction_batch_size,
            eviction: self.eviction,
            compression: self.compression,
            max_value_bytes: MAX_VALUE_BYTES,
            max_key_bytes: MAX_KEY_BYTES,
            integrity_key: IntegrityKey::new(vec![0x42; INTEGRITY_KEY_MIN_BYTES]),
            reads_update_recency: true,
            drop_corrupt_on_read: true,
        }
    }
}

#[derive(Debug, Clone)]
struct ValueSpec {
    len: usize,
    seed: u8,
    compressible: bool,
}

impl ValueSpec {
    fn bytes(&self) -> Vec<u8> {
        if self.compressible {
            return vec![self.seed; self.len];
        }
        // xorshift: incompressible, deterministic, cheap to shrink (only `len` and `seed`).
        let mut state = u32::from(self.seed) | 0x1000_0001;
        (0..self.len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state.to_le_bytes()[0]
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Expect {
    Unconditional,
    /// The model's current version for the key (exercises successful CAS).
    Current,
    Version(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Set {
        key: usize,
        value: ValueSpec,
        ttl_ms: u64,
        expect: Expect,
    },
    Delete {
        key: usize,
        expect: Expect,
    },
    Get {
        key: usize,
        allow_stale: bool,
    },
    Peek {
        key: usize,
        allow_stale: bool,
    },
    AdvanceTime {
        ms: u64,
    },
    Reap {
        limit: usize,
    },
    CollectThenRemove {
        limit: usize,
    },
    /// `remove_expired` with the entry's version plus `version_delta` (0 = matching).
    RemoveExpired {
        key: usize,
        version_delta: u64,
    },
    Evict {
        count: usize,
    },
    Corrupt {
        key: usize,
    },
}

#[derive(Debug)]
struct ModelEntry {
    value: Vec<u8>,
    stored_len: usize,
    ttl_ms: u64,
    created_at: u64,
    version: u64,
    last_access: u64,
    penultimate_access: u64,
    corrupt: bool,
}

impl ModelEntry {
    fn expires_at(&self) -> u64 {
        self.created_at.saturating_add(self.ttl_ms)
    }

    fn expired(&self, now_ms: u64) -> bool {
        self.ttl_ms != 0 && now_ms > self.expires_at()
    }

    fn live_version(&self, now_ms: u64) -> u64 {
        if self.expired(now_ms) {
            0
        } else {
            self.version
        }
    }
}

struct Model {
    config: ModelConfig,
    entries: HashMap<Vec<u8>, ModelEntry>,
    now_ms: u64,
    last_version: u64,
    access_clock: u64,
    used_bytes: u64,
}

impl Model {
    fn new(config: ModelConfig) -> Self {
        Model {
            config,
            entries: HashMap::new(),
            now_ms: 0,
            last_version: 0,
            access_clock: 0,
            used_bytes: 0,
        }
    }

    fn stored_len(&self, value: &[u8]) -> usize {
        if self.config.compression && value.len() > COMPRESSION_THRESHOLD_BYTES {
            value
                .len()
                .min(lz4_flex::compress_prepend_size(value).len())
        } else {
            value.len()
        }
    }

    fn current_version(&self, key: &[u8]) -> u64 {
        self.entries
            .get(key)
            .map_or(0, |e| e.live_version(self.now_ms))
    }

    fn check_key(key: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(StoreError::KeyTooLarge {
                len: key.len(),
                max: MAX_KEY_BYTES,
            });
        }
        Ok(())
    }

    fn check_cas(&self, key: &[u8], expected: u64) -> Result<(), StoreError> {
        let current = self.current_version(key);
        if expected != 0 && expected != current {
            return Err(StoreError::VersionMismatch { expected, current });
        }
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> ModelEntry {
        let entry = self
            .entries
            .remove(key)
            .expect("model removes present keys");
        self.used_bytes -= entry_bytes(key.len(), entry.stored_len);
        entry
    }

    fn touch(&mut self, key: &[u8]) {
        self.access_clock += 1;
        let entry = self.entries.get_mut(key).expect("present");
        if entry.last_access != 0 {
            entry.penultimate_access = entry.last_access;
        }
        entry.last_access = self.access_clock;
    }

    /// The victim by definition: LRU = oldest last access; LRU-K(2) = seen-once entries first
    /// (oldest last access), then oldest second-to-last access.
    fn victim(&self) -> Option<Vec<u8>> {
        let policy = self.config.eviction;
        self.entries
            .iter()
            .min_by_key(|(_, e)| match policy {
                EvictionPolicy::Lru => (false, e.last_access),
                EvictionPolicy::LruK2 if e.penultimate_access == 0 => (false, e.last_access),
                EvictionPolicy::LruK2 => (true, e.penultimate_access),
            })
            .map(|(key, _)| key.clone())
    }

    fn evict(&mut self, count: usize) -> Vec<Vec<u8>> {
        let mut evicted = Vec::new();
        while evicted.len() < count {
            let Some(key) = self.victim() else { break };
            self.remove(&key);
            evicted.push(key);
        }
        evicted
    }

    fn expired_in_order(&self) -> Vec<(Vec<u8>, u64)> {
        let mut expired: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expired(self.now_ms))
            .map(|(key, e)| (e.expires_at(), e.version, key.clone()))
            .collect();
        expired.sort();
        expired
            .into_iter()
            .map(|(_, version, key)| (key, version))
            .collect()
    }

    fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        expected: u64,
    ) -> Result<SetOutcome, StoreError> {
        Self::check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        self.check_cas(key, expected)?;
        let version = self.last_version + 1;
        let stored_len = self.stored_len(value);
        let size = entry_bytes(key.len(), stored_len);
        let history = self.entries.contains_key(key).then(|| {
            let old = self.remove(key);
            (old.last_access, old.penultimate_access)
        });
        let mut evicted_keys = Vec::new();
        while self.used_bytes + size > self.config.capacity_bytes {
            evicted_keys.extend(self.evict(self.config.eviction_batch_size));
        }
        let (last_access, penultimate_access) = history.unwrap_or((0, 0));
        self.entries.insert(
            key.to_vec(),
            ModelEntry {
                value: value.to_vec(),
                stored_len,
                ttl_ms,
                created_at: self.now_ms,
                version,
                last_access,
                penultimate_access,
                corrupt: false,
            },
        );
        self.used_bytes += size;
        self.touch(key);
        self.last_version = version;
        Ok(SetOutcome {
            version,
            evicted: evicted_keys.len(),
            evicted_keys,
        })
    }

    fn delete(&mut self, key: &[u8], expected: u64) -> Result<DeleteOutcome, StoreError> {
        Self::check_key(key)?;
        self.check_cas(key, expected)?;
        let version = self.current_version(key);
        if self.entries.contains_key(key) {
            self.remove(key);
        }
        self.last_version += 1;
        Ok(DeleteOutcome {
            existed: version != 0,
            version,
        })
    }

    /// The expected lookup; `touching` = a `get` (recency update, corrupt entries dropped).
    fn lookup(&mut self, key: &[u8], allow_stale: bool, touching: bool) -> Lookup<'static> {
        let Some(entry) = self.entries.get(key) else {
            return Lookup::Miss;
        };
        let is_stale = entry.expired(self.now_ms);
        if is_stale && !allow_stale {
            return Lookup::Miss;
        }
        if entry.corrupt {
            if touching {
                self.remove(key);
            }
            return Lookup::Corrupt;
        }
        let hit = Lookup::Hit {
            value: Cow::Owned(entry.value.clone()),
            version: entry.version,
            is_stale,
        };
        if touching {
            self.touch(key);
        }
        hit
    }

    fn stored_uncompressed(&self, key: &[u8]) -> bool {
        self.entries
            .get(key)
            .is_some_and(|e| e.stored_len == e.value.len())
    }
}

fn check_lookup(
    actual: &Lookup<'_>,
    expected: &Lookup<'_>,
    borrowed: bool,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(actual, expected);
    if let Lookup::Hit { value, .. } = actual {
        // The read path borrows unless it had to decompress.
        prop_assert_eq!(matches!(value, Cow::Borrowed(_)), borrowed);
    }
    Ok(())
}

fn resolve(expect: &Expect, model: &Model, key: &[u8]) -> u64 {
    match expect {
        Expect::Unconditional => 0,
        Expect::Current => model.current_version(key),
        Expect::Version(version) => *version,
    }
}

/// Runs `ops` against both and returns the store's final stats (for the coverage check).
fn run(config: &ModelConfig, ops: &[Op], mutant: Mutant) -> Result<StoreStats, TestCaseError> {
    let mut store = Store::new(config.store_config()).expect("generated configs are valid");
    store.set_mutant(mutant);
    let mut model = Model::new(config.clone());
    for (step, op) in ops.iter().enumerate() {
        let now_ms = model.now_ms;
        match op {
            Op::Set {
                key,
                value,
                ttl_ms,
                expect,
            } => {
                let (key, value) = (KEYS[*key], value.bytes());
                let expected = resolve(expect, &model, key);
                let version = store.last_version() + 1;
                let actual = store.apply_set(key, &value, *ttl_ms, expected, version, now_ms);
                prop_assert_eq!(
                    actual,
                    model.set(key, &value, *ttl_ms, expected),
                    "step {}",
                    step
                );
            }
            Op::Delete { key, expect } => {
                let key = KEYS[*key];
                let expected = resolve(expect, &model, key);
                let version = store.last_version() + 1;
                let actual = store.apply_delete(key, expected, version, now_ms);
                prop_assert_eq!(actual, model.delete(key, expected), "step {}", step);
            }
            Op::Get { key, allow_stale } => {
                let key = KEYS[*key];
                let borrowed = model.stored_uncompressed(key);
                let expected = model.lookup(key, *allow_stale, true);
                check_lookup(&store.get(key, now_ms, *allow_stale), &expected, borrowed)?;
            }
            Op::Peek { key, allow_stale } => {
                let key = KEYS[*key];
                let expected = model.lookup(key, *allow_stale, false);
                let borrowed = model.stored_uncompressed(key);
                check_lookup(&store.peek(key, now_ms, *allow_stale), &expected, borrowed)?;
            }
            Op::AdvanceTime { ms } => model.now_ms += ms,
            Op::Reap { limit } => {
                let expired: Vec<_> = model.expired_in_order().into_iter().take(*limit).collect();
                for (key, _) in &expired {
                    model.remove(key);
                }
                prop_assert_eq!(store.reap_expired(now_ms, *limit), expired.len());
            }
            Op::CollectThenRemove { limit } => {
                let expected: Vec<_> = model.expired_in_order().into_iter().take(*limit).collect();
                prop_assert_eq!(store.collect_expired(now_ms, *limit), expected.clone());
                for (key, version) in &expected {
                    prop_assert!(store.remove_expired(key, *version, now_ms));
                    model.remove(key);
                }
            }
            Op::RemoveExpired { key, version_delta } => {
                let key = KEYS[*key];
                let entry = model.entries.get(key);
                let version = entry.map_or(0, |e| e.version) + version_delta;
                let removable = entry.is_some_and(|e| e.version == version && e.expired(now_ms));
                if removable {
                    model.remove(key);
                }
                prop_assert_eq!(store.remove_expired(key, version, now_ms), removable);
            }
            Op::Evict { count } => {
                prop_assert_eq!(store.evict(*count), model.evict(*count));
            }
            Op::Corrupt { key } => {
                let key = KEYS[*key];
                if let Some(entry) = model.entries.get_mut(key) {
                    entry.corrupt = true;
                }
                prop_assert_eq!(
                    store.corrupt_value_for_test(key),
                    model.entries.contains_key(key)
                );
            }
        }
        store.check_invariants();
        prop_assert_eq!(store.used_bytes(), model.used_bytes, "step {}", step);
        prop_assert!(store.used_bytes() <= store.capacity_bytes());
        prop_assert_eq!(store.len(), model.entries.len());
        prop_assert_eq!(store.last_version(), model.last_version);
    }
    Ok(store.stats())
}

fn config_strategy() -> impl Strategy<Value = ModelConfig> {
    let largest_entry = entry_bytes(MAX_KEY_BYTES, MAX_VALUE_BYTES);
    (
        1u64..4,
        0u64..2_000,
        1usize..4,
        prop_oneof![Just(EvictionPolicy::Lru), Just(EvictionPolicy::LruK2)],
        any::<bool>(),
    )
        .prop_map(
            move |(entries, extra, eviction_batch_size, eviction, compression)| ModelConfig {
                capacity_bytes: entries * largest_entry + extra,
                eviction_batch_size,
                eviction,
                compression,
            },
        )
}

fn key_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 1 => Just(7usize), 14 => 1usize..7]
}

fn expect_strategy() -> impl Strategy<Value = Expect> {
    prop_oneof![
        3 => Just(Expect::Unconditional),
        2 => Just(Expect::Current),
        1 => (1u64..8).prop_map(Expect::Version),
    ]
}

fn value_strategy() -> impl Strategy<Value = ValueSpec> {
    (
        prop_oneof![3 => 0usize..64, 2 => 1000usize..MAX_VALUE_BYTES + 100],
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(len, seed, compressible)| ValueSpec {
            len,
            seed,
            compressible,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (key_strategy(), value_strategy(), prop_oneof![Just(0u64), 1u64..40], expect_strategy())
            .prop_map(|(key, value, ttl_ms, expect)| Op::Set { key, value, ttl_ms, expect }),
        2 => (key_strategy(), expect_strategy()).prop_map(|(key, expect)| Op::Delete { key, expect }),
        8 => (key_strategy(), any::<bool>()).prop_map(|(key, allow_stale)| Op::Get { key, allow_stale }),
        2 => (key_strategy(), any::<bool>()).prop_map(|(key, allow_stale)| Op::Peek { key, allow_stale }),
        4 => (0u64..30).prop_map(|ms| Op::AdvanceTime { ms }),
        1 => (0usize..4).prop_map(|limit| Op::Reap { limit }),
        1 => (0usize..4).prop_map(|limit| Op::CollectThenRemove { limit }),
        1 => (key_strategy(), 0u64..2).prop_map(|(key, version_delta)| Op::RemoveExpired { key, version_delta }),
        1 => (0usize..3).prop_map(|count| Op::Evict { count }),
        1 => key_strategy().prop_map(|key| Op::Corrupt { key }),
    ]
}

fn scenario_strategy() -> impl Strategy<Value = (ModelConfig, Vec<Op>)> {
    (
        config_strategy(),
        prop::collection::vec(op_strategy(), 1..80),
    )
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    #[test]
    fn store_matches_model((config, ops) in scenario_strategy()) {
        run(&config, &ops, Mutant::None)?;
    }
}

fn deterministic_runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// The generator reaches every behaviour the model checks (else the model test would pass
/// vacuously): fresh, stale and corrupt reads, misses, evictions and expirations.
#[test]
fn model_test_generator_covers_every_path() {
    // `TestRunner::run` takes an `Fn`, hence the cell.
    let sum = std::cell::Cell::new(StoreStats::default());
    let mut runner = deterministic_runner(256);
    let result = runner.run(&scenario_strategy(), |(config, ops)| {
        let stats = run(&config, &ops, Mutant::None)?;
        let mut totals = sum.get();
        totals.hits += stats.hits;
        totals.misses += stats.misses;
        totals.stale_hits += stats.stale_hits;
        totals.evictions += stats.evictions;
        totals.expirations += stats.expirations;
        totals.integrity_failures += stats.integrity_failures;
        sum.set(totals);
        Ok(())
    });
    assert!(result.is_ok(), "{result:?}");
    let totals = sum.get();
    println!("coverage over 256 cases: {totals:?}");
    let counts = [
        totals.hits,
        totals.misses,
        totals.stale_hits,
        totals.evictions,
        totals.expirations,
        totals.integrity_failures,
    ];
    assert!(counts.iter().all(|&n| n > 0), "{totals:?}");
}

/// The checker must fail broken stores; otherwise a passing model test proves nothing.
#[test]
fn model_test_catches_mutants() {
    for mutant in [Mutant::ServeExpiredAsFresh, Mutant::IgnoreCas] {
        let mut runner = deterministic_runner(512);
        let result = runner.run(&scenario_strategy(), |(config, ops)| {
            run(&config, &ops, mutant).map(drop)
        });
        match result {
            Err(TestError::Fail(reason, (_, ops))) => {
                println!(
                    "{mutant:?} caught ({} ops after shrinking): {reason}",
                    ops.len()
                );
            }
            other => panic!("model test did not catch {mutant:?}: {other:?}"),
        }
    }
}
