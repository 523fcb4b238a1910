//! Unit tests of the store's contracts.

use std::borrow::Cow;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::entry::zeroize_probe;
use crate::*;

fn integrity_key() -> IntegrityKey {
    IntegrityKey::new(vec![0x5a; INTEGRITY_KEY_MIN_BYTES])
}

/// Small limits so capacity pressure is easy to create: an entry with a 1-byte key and a
/// 10-byte value is charged 267 bytes.
fn small_config(capacity_bytes: u64, eviction: EvictionPolicy) -> StoreConfig {
    StoreConfig {
        capacity_bytes,
        eviction_batch_size: 1,
        eviction,
        compression: true,
        max_value_bytes: 4096,
        max_key_bytes: 16,
        ..StoreConfig::with_defaults(integrity_key())
    }
}

fn store() -> Store {
    Store::new(small_config(1 << 20, EvictionPolicy::Lru)).expect("valid config")
}

/// Unconditional set with the next version.
fn set(store: &mut Store, key: &[u8], value: &[u8], ttl_ms: u64, now_ms: u64) -> SetOutcome {
    let version = store.last_version() + 1;
    store
        .apply_set(key, value, ttl_ms, 0, version, now_ms)
        .expect("valid set")
}

fn hit(value: &[u8], version: u64, is_stale: bool) -> Lookup<'_> {
    Lookup::Hit {
        value: Cow::Borrowed(value),
        version,
        is_stale,
    }
}

// ---- configuration ----

#[test]
fn default_config_is_valid_and_matches_the_product_defaults() {
    let config = StoreConfig::with_defaults(integrity_key());
    assert_eq!(config.validate(), Ok(()));
    assert_eq!(config.capacity_bytes, 4096 * 1024 * 1024);
    assert_eq!(config.eviction_batch_size, 1000);
    assert_eq!(config.max_value_bytes, 512 * 1024);
    assert_eq!(config.max_key_bytes, 4096);
    assert_eq!(config.eviction, EvictionPolicy::Lru);
}

#[test]
fn invalid_config_fields_are_named() {
    let base = StoreConfig::with_defaults(integrity_key());
    let cases: Vec<(StoreConfig, &str)> = vec![
        (
            StoreConfig {
                capacity_bytes: 0,
                ..base.clone()
            },
            "capacity_bytes",
        ),
        (
            StoreConfig {
                eviction_batch_size: 0,
                ..base.clone()
            },
            "eviction_batch_size",
        ),
        (
            StoreConfig {
                eviction_batch_size: EVICTION_BATCH_SIZE_MAX + 1,
                ..base.clone()
            },
            "eviction_batch_size",
        ),
        (
            StoreConfig {
                max_value_bytes: 0,
                ..base.clone()
            },
            "max_value_bytes",
        ),
        (
            StoreConfig {
                max_value_bytes: MAX_VALUE_BYTES_CEILING + 1,
                ..base.clone()
            },
            "max_value_bytes",
        ),
        (
            StoreConfig {
                max_key_bytes: 0,
                ..base.clone()
            },
            "max_key_bytes",
        ),
        (
            StoreConfig {
                max_key_bytes: MAX_KEY_BYTES_CEILING + 1,
                ..base.clone()
            },
            "max_key_bytes",
        ),
        (
            StoreConfig {
                capacity_bytes: 1024,
                ..base.clone()
            },
            "capacity_bytes",
        ),
        (
            StoreConfig {
                integrity_key: IntegrityKey::new(vec![1; 31]),
                ..base.clone()
            },
            "integrity_key",
        ),
    ];
    for (config, field) in cases {
        let err = Store::new(config).expect_err(field);
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }
}

#[test]
fn integrity_key_is_redacted_in_debug() {
    let config = StoreConfig::with_defaults(IntegrityKey::new(
        b"secret-secret-secret-secret-1234".to_vec(),
    ));
    let text = format!("{config:?}");
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("redacted"));
}

#[test]
fn per_entry_overhead_covers_the_slot_and_index_items() {
    // Slab slot + hash-table index (8 B + control byte) + two B-tree items (24 B each) must fit
    // in the documented constant.
    let indexed = Store::slot_bytes_for_test() + 9 + 2 * 24;
    assert!(
        indexed as u64 <= ENTRY_OVERHEAD_BYTES,
        "{indexed} > {ENTRY_OVERHEAD_BYTES}"
    );
    assert_eq!(entry_bytes(3, 10), 13 + ENTRY_OVERHEAD_BYTES);
}

// ---- set / get / versions ----

#[test]
fn get_borrows_uncompressed_values_and_counts_hits_and_misses() {
    let mut store = store();
    assert_eq!(set(&mut store, b"k", b"v1", 0, 10).version, 1);
    match store.get(b"k", 10, false) {
        Lookup::Hit {
            value: Cow::Borrowed(bytes),
            version: 1,
            is_stale: false,
        } => {
            assert_eq!(bytes, b"v1")
        }
        other => panic!("expected a borrowed hit, got {other:?}"),
    }
    assert_eq!(store.get(b"absent", 10, false), Lookup::Miss);
    let stats = store.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (1, 1, 1));
    assert_eq!(stats.used_bytes, entry_bytes(1, 2));
    assert_eq!(
        store.entry_for_test(b"k").map(|e| e.flags),
        Some(EntryFlags::INTEGRITY)
    );
}

#[test]
fn overwrite_replaces_value_and_version_and_accounting() {
    let mut store = store();
    set(&mut store, b"k", b"first", 0, 0);
    set(&mut store, b"k", b"second!", 0, 0);
    assert_eq!(store.get(b"k", 0, false), hit(b"second!", 2, false));
    assert_eq!(store.len(), 1);
    assert_eq!(store.used_bytes(), entry_bytes(1, 7));
}

#[test]
fn compare_and_set_checks_the_current_version() {
    let mut store = store();
    // Absent key: current version 0.
    assert_eq!(
        store.apply_set(b"k", b"v", 0, 5, 1, 0),
        Err(StoreError::VersionMismatch {
            expected: 5,
            current: 0
        })
    );
    set(&mut store, b"k", b"v", 0, 0); // version 1
    assert_eq!(
        store.apply_set(b"k", b"w", 0, 7, 2, 0),
        Err(StoreError::VersionMismatch {
            expected: 7,
            current: 1
        })
    );
    let outcome = store
        .apply_set(b"k", b"w", 0, 1, 2, 0)
        .expect("CAS matches");
    assert_eq!(outcome.version, 2);
    assert_eq!(store.get(b"k", 0, false), hit(b"w", 2, false));
    assert_eq!(store.current_version(b"k", 0), 2);
}

#[test]
fn a_refused_write_changes_nothing() {
    let mut store = store();
    set(&mut store, b"k", b"v", 0, 0);
    let before = (store.stats(), store.last_version(), store.used_bytes());
    let refused = [
        store.apply_set(b"k", b"x", 0, 9, 2, 0),
        store.apply_set(b"", b"x", 0, 0, 2, 0),
        store.apply_set(&[b'k'; 17], b"x", 0, 0, 2, 0),
        store.apply_set(b"k", &[0; 4097], 0, 0, 2, 0),
    ];
    assert!(refused.iter().all(Result::is_err));
    assert!(store.apply_delete(b"k", 9, 2, 0).is_err());
    assert_eq!(
        (store.stats(), store.last_version(), store.used_bytes()),
        before
    );
    assert_eq!(store.peek(b"k", 0, false), hit(b"v", 1, false));
}

#[test]
#[should_panic(expected = "not greater than the last applied version")]
fn set_with_a_non_increasing_version_is_a_caller_bug() {
    let mut store = store();
    set(&mut store, b"k", b"v", 0, 0);
    let _ = store.apply_set(b"j", b"v", 0, 0, 1, 0);
}

#[test]
#[should_panic(expected = "not greater than the last applied version")]
fn delete_with_a_non_increasing_version_is_a_caller_bug() {
    let mut store = store();
    set(&mut store, b"k", b"v", 0, 0);
    let _ = store.apply_delete(b"k", 0, 1, 0);
}

#[test]
fn delete_reports_existence_and_the_removed_version() {
    let mut store = store();
    set(&mut store, b"k", b"v", 0, 0); // 1
    assert_eq!(
        store.apply_delete(b"k", 3, 2, 0),
        Err(StoreError::VersionMismatch {
            expected: 3,
            current: 1
        })
    );
    assert_eq!(
        store.apply_delete(b"k", 1, 2, 0),
        Ok(DeleteOutcome {
            existed: true,
            version: 1
        })
    );
    assert_eq!(store.get(b"k", 0, false), Lookup::Miss);
    assert_eq!(
        store.apply_delete(b"k", 0, 3, 0),
        Ok(DeleteOutcome {
            existed: false,
            version: 0
        })
    );
    assert_eq!(store.last_version(), 3);
    assert_eq!(store.used_bytes(), 0);
}

// ---- limits ----

#[test]
fn limits_are_enforced_with_messages_naming_them() {
    let mut store = store();
    assert_eq!(
        store.apply_set(b"", b"v", 0, 0, 1, 0),
        Err(StoreError::EmptyKey)
    );
    assert_eq!(store.apply_delete(b"", 0, 1, 0), Err(StoreError::EmptyKey));
    let err = store
        .apply_set(&[b'k'; 17], b"v", 0, 0, 1, 0)
        .expect_err("key too large");
    assert_eq!(err, StoreError::KeyTooLarge { len: 17, max: 16 });
    assert!(err.to_string().contains("16 bytes"), "{err}");
    let err = store
        .apply_set(b"k", &[0; 4097], 0, 0, 1, 0)
        .expect_err("value too large");
    assert_eq!(
        err,
        StoreError::ValueTooLarge {
            len: 4097,
            max: 4096
        }
    );
    assert!(err.to_string().contains("4096 bytes (4 KiB)"), "{err}");
    // Exactly at the limits is accepted.
    assert!(store.apply_set(&[b'k'; 16], &[0; 4096], 0, 0, 1, 0).is_ok());
    let default_limit = StoreError::ValueTooLarge {
        len: 600_000,
        max: DEFAULT_MAX_VALUE_BYTES,
    };
    assert!(default_limit.to_string().contains("512 KiB"));
}

// ---- TTL ----

#[test]
fn expiry_boundary_and_no_ttl() {
    let mut store = store();
    set(&mut store, b"t", b"v", 100, 1_000);
    set(&mut store, b"forever", b"v", 0, 1_000);
    let entry = store.entry_for_test(b"t").expect("present");
    assert!(!entry.is_expired(1_100), "fresh at created_at + ttl");
    assert!(entry.is_expired(1_101));
    assert!(!store
        .entry_for_test(b"forever")
        .expect("present")
        .is_expired(u64::MAX));
    assert_eq!(store.get(b"t", 1_100, false), hit(b"v", 1, false));
    assert_eq!(store.get(b"t", 1_101, false), Lookup::Miss);
    assert_eq!(store.get(b"forever", u64::MAX, false), hit(b"v", 2, false));
}

#[test]
fn expired_entries_are_served_only_as_stale() {
    let mut store = store();
    set(&mut store, b"t", b"v", 10, 0);
    assert_eq!(store.get(b"t", 11, false), Lookup::Miss);
    assert_eq!(store.get(b"t", 11, true), hit(b"v", 1, true));
    assert_eq!(store.peek(b"t", 11, true), hit(b"v", 1, true));
    let stats = store.stats();
    assert_eq!((stats.hits, stats.stale_hits, stats.misses), (0, 1, 1));
    assert_eq!(stats.entries, 1, "reads never delete expired entries");
}

#[test]
fn an_expired_key_has_current_version_zero() {
    let mut store = store();
    set(&mut store, b"t", b"v", 10, 0); // 1
    assert_eq!(store.current_version(b"t", 11), 0);
    assert_eq!(
        store.apply_set(b"t", b"w", 0, 1, 2, 11),
        Err(StoreError::VersionMismatch {
            expected: 1,
            current: 0
        })
    );
    assert_eq!(
        store.apply_delete(b"t", 0, 2, 11),
        Ok(DeleteOutcome {
            existed: false,
            version: 0
        })
    );
    assert!(store.is_empty(), "deleting an expired entry frees it");
}

#[test]
fn reaper_collects_in_expiry_order_and_removes_only_matching_versions() {
    let mut store = store();
    set(&mut store, b"c", b"v", 30, 0); // v1, expires at 30
    set(&mut store, b"a", b"v", 10, 0); // v2, expires at 10
    set(&mut store, b"b", b"v", 10, 0); // v3, expires at 10
    set(&mut store, b"n", b"v", 0, 0); // v4, never
    assert_eq!(store.collect_expired(10, 10), vec![]);
    assert_eq!(
        store.collect_expired(100, 10),
        vec![(b"a".to_vec(), 2), (b"b".to_vec(), 3), (b"c".to_vec(), 1)]
    );
    assert_eq!(store.collect_expired(100, 2).len(), 2, "bounded by limit");
    assert_eq!(store.collect_expired(11, 10).len(), 2);

    assert!(!store.remove_expired(b"a", 3, 100), "wrong version");
    assert!(!store.remove_expired(b"a", 2, 10), "not yet expired");
    assert!(!store.remove_expired(b"n", 4, 100), "no TTL");
    // A newer write after collection wins.
    set(&mut store, b"b", b"new", 0, 50); // v5
    assert!(!store.remove_expired(b"b", 3, 100));
    assert!(store.remove_expired(b"a", 2, 100));
    assert!(!store.remove_expired(b"a", 2, 100), "already gone");

    assert_eq!(store.reap_expired(100, 10), 1); // c
    assert_eq!(store.reap_expired(100, 10), 0);
    assert_eq!(store.stats().expirations, 2);
    assert_eq!(store.len(), 2);
}

#[test]
fn reap_expired_is_bounded_by_limit() {
    let mut store = store();
    for key in 0u8..5 {
        set(&mut store, &[key], b"v", 1, 0);
    }
    assert_eq!(store.reap_expired(10, 2), 2);
    assert_eq!(
        store.collect_expired(10, 10),
        vec![(vec![2], 3), (vec![3], 4), (vec![4], 5)]
    );
    assert_eq!(store.reap_expired(10, 0), 0);
}

#[test]
fn stagger_ttl_adds_up_to_ten_percent() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    assert_eq!(stagger_ttl_ms(0, &mut rng), 0);
    assert_eq!(
        stagger_ttl_ms(5, &mut rng),
        5,
        "jitter rounds down to 0 below 10 ms"
    );
    let samples: Vec<u64> = (0..2000).map(|_| stagger_ttl_ms(1_000, &mut rng)).collect();
    assert!(samples.iter().all(|&t| (1_000..=1_100).contains(&t)));
    assert!(samples.iter().any(|&t| t < 1_010) && samples.iter().any(|&t| t > 1_090));
    assert_eq!(stagger_ttl_ms(u64::MAX, &mut rng), u64::MAX, "saturates");
    // Same seed, same TTLs (the simulator relies on this).
    let mut a = ChaCha8Rng::seed_from_u64(1);
    let mut b = ChaCha8Rng::seed_from_u64(1);
    assert_eq!(
        stagger_ttl_ms(60_000, &mut a),
        stagger_ttl_ms(60_000, &mut b)
    );
}

// ---- compression ----

#[test]
fn large_compressible_values_are_stored_lz4_and_read_back() {
    let mut store = store();
    let value = vec![b'x'; 3000];
    set(&mut store, b"z", &value, 0, 0);
    let entry = store.entry_for_test(b"z").expect("present");
    assert!(entry
        .flags
        .contains(EntryFlags::COMPRESSED.with(EntryFlags::INTEGRITY)));
    assert!(entry.value.len() < 100);
    assert_eq!(
        store.used_bytes(),
        entry_bytes(1, store.entry_for_test(b"z").map_or(0, |e| e.value.len()))
    );
    match store.get(b"z", 0, false) {
        Lookup::Hit {
            value: Cow::Owned(bytes),
            version: 1,
            is_stale: false,
        } => {
            assert_eq!(bytes, value)
        }
        other => panic!("expected an owned (decompressed) hit, got {other:?}"),
    }
}

#[test]
fn compression_applies_only_above_threshold_when_smaller_and_enabled() {
    let mut store = store();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let random: Vec<u8> = (0..3000).map(|_| rng.random()).collect();
    set(&mut store, b"r", &random, 0, 0);
    set(&mut store, b"t", &[b'x'; COMPRESSION_THRESHOLD_BYTES], 0, 0);
    for key in [b"r", b"t"] {
        assert_eq!(
            store.entry_for_test(key).map(|e| e.flags),
            Some(EntryFlags::INTEGRITY)
        );
    }
    assert_eq!(store.get(b"r", 0, false), hit(&random, 1, false));

    let mut plain = Store::new(StoreConfig {
        compression: false,
        ..small_config(1 << 20, EvictionPolicy::Lru)
    })
    .expect("valid config");
    set(&mut plain, b"z", &[b'x'; 3000], 0, 0);
    assert_eq!(
        plain.entry_for_test(b"z").map(|e| e.value.len()),
        Some(3000)
    );
}

// ---- integrity ----

#[test]
fn corrupt_entries_are_never_served_and_are_dropped() {
    for value in [&b"plain"[..], &[b'x'; 3000][..], &b""[..]] {
        let mut store = store();
        set(&mut store, b"k", value, 0, 0);
        set(&mut store, b"other", b"fine", 0, 0);
        assert!(store.corrupt_value_for_test(b"k"));
        assert!(!store.corrupt_value_for_test(b"absent"));
        assert_eq!(
            store.peek(b"k", 0, false),
            Lookup::Corrupt,
            "peek reports, keeps"
        );
        let (wiped_before, _) = zeroize_probe::wiped();
        assert_eq!(store.get(b"k", 0, false), Lookup::Corrupt);
        assert_eq!(
            zeroize_probe::wiped().0,
            wiped_before + 1,
            "dropped and zeroized"
        );
        assert_eq!(store.get(b"k", 0, false), Lookup::Miss);
        let stats = store.stats();
        assert_eq!((stats.integrity_failures, stats.entries), (1, 1));
        assert_eq!(stats.used_bytes, entry_bytes(5, 4));
        assert_eq!(store.get(b"other", 0, false), hit(b"fine", 2, false));
    }
}

#[test]
fn integrity_tag_binds_key_value_version_and_flags() {
    use crate::entry::integrity_tag;
    use hmac::Mac;
    let mac =
        crate::entry::HmacSha256::new_from_slice(integrity_key().as_bytes()).expect("any length");
    let base = integrity_tag(&mac, b"ab", b"c", 1, EntryFlags::INTEGRITY);
    assert_ne!(
        base,
        integrity_tag(&mac, b"a", b"bc", 1, EntryFlags::INTEGRITY),
        "field split"
    );
    assert_ne!(
        base,
        integrity_tag(&mac, b"ab", b"c", 2, EntryFlags::INTEGRITY),
        "version"
    );
    let compressed = EntryFlags::INTEGRITY.with(EntryFlags::COMPRESSED);
    assert_ne!(
        base,
        integrity_tag(&mac, b"ab", b"c", 1, compressed),
        "flags"
    );
    assert_eq!(
        base,
        integrity_tag(&mac, b"ab", b"c", 1, EntryFlags::INTEGRITY)
    );
}

// ---- eviction ----

/// Capacity for exactly `n` entries of a 1-byte key and 10-byte value.
fn room_for(n: u64) -> u64 {
    n * entry_bytes(1, 10)
}

/// A store of `room_for(n)` with limits small enough to validate (values up to 16 bytes).
fn tiny_store(n: u64, eviction: EvictionPolicy, eviction_batch_size: usize) -> Store {
    Store::new(StoreConfig {
        max_value_bytes: 16,
        eviction_batch_size,
        ..small_config(room_for(n), eviction)
    })
    .expect("valid config")
}

#[test]
fn lru_evicts_the_least_recently_used_entry() {
    let mut store = tiny_store(20, EvictionPolicy::Lru, 1);
    for key in 0u8..20 {
        assert_eq!(set(&mut store, &[key], &[key; 10], 0, 0).evicted, 0);
    }
    assert_eq!(store.used_bytes(), store.capacity_bytes());
    assert!(matches!(store.get(&[0], 0, false), Lookup::Hit { .. })); // 0 is now recent
    let outcome = set(&mut store, &[100], &[0; 10], 0, 0);
    assert_eq!(outcome.evicted_keys, vec![vec![1]]);
    assert_eq!(outcome.evicted, 1);
    assert_eq!(store.get(&[1], 0, false), Lookup::Miss);
    assert!(matches!(store.get(&[0], 0, false), Lookup::Hit { .. }));
    assert_eq!(store.stats().evictions, 1);
}

#[test]
fn eviction_happens_in_batches_and_keeps_the_cap() {
    let config = StoreConfig {
        eviction_batch_size: 5,
        compression: false,
        max_value_bytes: 1024,
        ..small_config(room_for(20), EvictionPolicy::Lru)
    };
    let mut store = Store::new(config).expect("valid");
    for key in 0u8..20 {
        set(&mut store, &[key], &[key; 10], 0, 0);
    }
    let outcome = set(&mut store, &[100], &[0; 10], 0, 0);
    assert_eq!(
        outcome.evicted_keys,
        (0u8..5).map(|k| vec![k]).collect::<Vec<_>>()
    );
    assert_eq!(store.len(), 16);
    // A value needing the room of several entries can take more than one batch.
    let outcome = set(&mut store, &[101], &[0; 1024], 0, 0);
    assert_eq!(
        outcome.evicted, 5,
        "a whole batch, though one entry would have made room"
    );
    assert!(store.used_bytes() <= store.capacity_bytes());
    // The admin eviction takes an exact count.
    let before = store.len();
    assert_eq!(store.evict(2).len(), 2);
    assert_eq!(store.len(), before - 2);
    assert_eq!(store.evict(1000).len(), before - 2);
    assert_eq!(store.used_bytes(), 0);
}

#[test]
fn lru_k2_evicts_entries_seen_once_before_entries_seen_twice() {
    let mut store = tiny_store(3, EvictionPolicy::LruK2, 1);
    set(&mut store, b"a", &[0; 10], 0, 0);
    set(&mut store, b"b", &[0; 10], 0, 0);
    assert!(matches!(store.get(b"a", 0, false), Lookup::Hit { .. })); // a seen twice
    set(&mut store, b"c", &[0; 10], 0, 0);
    // b and c seen once: b (least recent) goes first although a's first access is older.
    assert_eq!(
        set(&mut store, b"d", &[0; 10], 0, 0).evicted_keys,
        vec![b"b".to_vec()]
    );
    assert_eq!(
        set(&mut store, b"e", &[0; 10], 0, 0).evicted_keys,
        vec![b"c".to_vec()]
    );
    // Among entries seen twice, the oldest second-to-last access goes first.
    assert!(matches!(store.get(b"e", 0, false), Lookup::Hit { .. }));
    assert!(matches!(store.get(b"d", 0, false), Lookup::Hit { .. }));
    // a is the most recently used, but its second-to-last access (the initial set) is the oldest:
    // LRU would evict e, LRU-K evicts a.
    assert!(matches!(store.get(b"a", 0, false), Lookup::Hit { .. }));
    assert_eq!(
        set(&mut store, b"f", &[0; 10], 0, 0).evicted_keys,
        vec![b"a".to_vec()]
    );
}

/// Read-through cache simulation: `get`, and `set` on a miss. Returns the hit rate.
fn hit_rate(eviction: EvictionPolicy) -> f64 {
    const CAPACITY_ENTRIES: u64 = 100;
    const HOT_KEYS: u64 = 80;
    const COLD_KEYS: u64 = 10_000;
    const STEPS: u64 = 20_000;
    const SCAN_EVERY: u64 = 1_000;
    const SCAN_LENGTH: u64 = 150;
    let config = StoreConfig {
        capacity_bytes: CAPACITY_ENTRIES * entry_bytes(8, 16),
        ..small_config(0, eviction)
    };
    let mut store = Store::new(config).expect("valid");
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut scan_key = 0u64;
    let (mut hits, mut reads) = (0u64, 0u64);
    let mut read = |store: &mut Store, id: u64| {
        let key = format!("k{id:07}");
        reads += 1;
        if matches!(store.get(key.as_bytes(), 0, false), Lookup::Hit { .. }) {
            hits += 1;
        } else {
            set(store, key.as_bytes(), &[0; 16], 0, 0);
        }
    };
    for step in 0..STEPS {
        if step % SCAN_EVERY == 0 {
            for _ in 0..SCAN_LENGTH {
                scan_key += 1;
                read(&mut store, 1_000_000 + scan_key);
            }
        }
        // Skewed: 90 % of reads go to the 80 hot keys, the rest to a large cold set.
        let id = if rng.random_bool(0.9) {
            rng.random_range(0..HOT_KEYS)
        } else {
            HOT_KEYS + rng.random_range(0..COLD_KEYS)
        };
        read(&mut store, id);
    }
    assert!(store.used_bytes() <= store.capacity_bytes());
    hits as f64 / reads as f64
}

#[test]
fn lru_k2_beats_lru_on_a_skewed_workload_with_scans() {
    // 100-entry cache, 80 hot keys (90 % of reads), 10k cold keys, a 150-key one-off scan every
    // 1000 reads. Measured (seed 42): LRU 0.681, LRU-K(2) 0.779. LRU loses the hot set to every
    // scan; LRU-K evicts the scan keys (seen once) first.
    let lru = hit_rate(EvictionPolicy::Lru);
    let lru_k2 = hit_rate(EvictionPolicy::LruK2);
    println!("hit rate: LRU {lru:.3}, LRU-K(2) {lru_k2:.3}");
    assert!(lru_k2 > lru + 0.05, "LRU {lru:.3}, LRU-K {lru_k2:.3}");
}

// ---- zeroization ----

#[test]
fn freed_values_are_zeroized_on_every_path() {
    let mut store = tiny_store(3, EvictionPolicy::Lru, 1);
    let wiped = || zeroize_probe::wiped().0;
    let start = wiped();
    set(&mut store, b"a", &[1; 10], 0, 0);
    set(&mut store, b"a", &[2; 10], 0, 0);
    assert_eq!(wiped(), start + 1, "overwrite");
    store.apply_delete(b"a", 0, 3, 0).expect("delete");
    assert_eq!(wiped(), start + 2, "delete");
    set(&mut store, b"x", &[3; 10], 5, 0);
    store.reap_expired(100, 10);
    assert_eq!(wiped(), start + 3, "expiry");
    for key in 0u8..4 {
        set(&mut store, &[key], &[4; 10], 0, 0);
    }
    assert_eq!(wiped(), start + 4, "eviction");
    let (_, bytes_before) = zeroize_probe::wiped();
    drop(store);
    assert_eq!(wiped(), start + 7, "store drop");
    assert_eq!(zeroize_probe::wiped().1, bytes_before + 30);
}

mod snapshots {
    use crate::{EvictionPolicy, IntegrityKey, Lookup, SnapshotError, Store, StoreConfig};

    fn config(policy: EvictionPolicy) -> StoreConfig {
        let mut config = StoreConfig::with_defaults(IntegrityKey::new(vec![9; 32]));
        config.capacity_bytes = 64 * 1024 * 1024;
        config.eviction = policy;
        config
    }

    fn filled(policy: EvictionPolicy) -> Store {
        let mut store = Store::new(config(policy)).unwrap();
        let big: Vec<u8> = (0..5000u32).map(|i| (i % 13) as u8).collect();
        for i in 1..=20u64 {
            let value = if i % 5 == 0 {
                big.clone()
            } else {
                format!("v{i}").into_bytes()
            };
            store
                .apply_set(format!("k{i}").as_bytes(), &value, i * 100, 0, i, 1_000)
                .unwrap();
        }
        store.touch_keys(&[b"k3".to_vec(), b"k1".to_vec(), b"absent".to_vec()]);
        store
    }

    #[test]
    fn the_snapshot_length_is_known_before_writing_it() {
        for policy in [EvictionPolicy::Lru, EvictionPolicy::LruK2] {
            let store = filled(policy);
            let snapshot = store.export_snapshot();
            assert_eq!(store.snapshot_len(), snapshot.len(), "{policy:?}");
            let mut framed = b"head".to_vec();
            store.export_snapshot_into(&mut framed);
            assert_eq!(&framed[..4], b"head");
            assert_eq!(framed[4..], snapshot[..], "{policy:?}: appended as is");
        }
        let empty = Store::new(config(EvictionPolicy::Lru)).unwrap();
        assert_eq!(empty.snapshot_len(), empty.export_snapshot().len());
    }

    #[test]
    fn export_import_round_trips_contents_versions_and_eviction_order() {
        for policy in [EvictionPolicy::Lru, EvictionPolicy::LruK2] {
            let mut original = filled(policy);
            let snapshot = original.export_snapshot();
            let mut copy = Store::new(config(policy)).unwrap();
            copy.apply_set(b"stale", b"replaced", 0, 0, 1, 0).unwrap();
            copy.import_snapshot(&snapshot).unwrap();
            assert_eq!(
                copy.export_snapshot()[..],
                snapshot[..],
                "{policy:?}: same bytes again"
            );
            assert_eq!(copy.last_version(), 20);
            assert_eq!(copy.peek(b"stale", 1_000, false), Lookup::Miss);
            for i in 1..=20u64 {
                let key = format!("k{i}");
                assert_eq!(
                    copy.peek(key.as_bytes(), 1_000, false),
                    original.peek(key.as_bytes(), 1_000, false)
                );
            }
            assert_eq!(copy.used_bytes(), original.used_bytes());
            assert_eq!(
                copy.evict(20),
                original.evict(20),
                "{policy:?}: same victims in the same order"
            );
        }
    }

    #[test]
    fn damaged_snapshots_are_refused_and_change_nothing() {
        let original = filled(EvictionPolicy::Lru);
        let snapshot = original.export_snapshot();
        let mut target = Store::new(config(EvictionPolicy::Lru)).unwrap();
        target.apply_set(b"keep", b"me", 0, 0, 1, 0).unwrap();
        for cut in [0, 7, 20, snapshot.len() - 1] {
            let error = target.import_snapshot(&snapshot[..cut]).unwrap_err();
            assert!(
                matches!(error, SnapshotError::Malformed { .. }),
                "cut at {cut}: {error:?}"
            );
        }
        let mut small = config(EvictionPolicy::Lru);
        small.max_value_bytes = 1024;
        small.max_key_bytes = 64;
        small.capacity_bytes = small.max_entry_bytes();
        let mut tiny = Store::new(small).unwrap();
        assert!(matches!(
            tiny.import_snapshot(&snapshot),
            Err(SnapshotError::OverCapacity { .. })
        ));
        assert!(matches!(target.peek(b"keep", 0, false), Lookup::Hit { .. }));
    }

    #[test]
    fn entries_under_another_key_are_dropped_not_served() {
        let snapshot = filled(EvictionPolicy::Lru).export_snapshot();
        let mut other_key = config(EvictionPolicy::Lru);
        other_key.integrity_key = IntegrityKey::new(vec![1; 32]);
        let mut store = Store::new(other_key).unwrap();
        store.import_snapshot(&snapshot).unwrap();
        assert!(store.is_empty());
        assert_eq!(store.stats().integrity_failures, 20);
    }

    #[test]
    fn reads_leave_recency_alone_when_replicated() {
        let mut replicated = config(EvictionPolicy::Lru);
        replicated.reads_update_recency = false;
        let mut store = Store::new(replicated).unwrap();
        store.apply_set(b"a", b"1", 0, 0, 1, 0).unwrap();
        store.apply_set(b"b", b"2", 0, 0, 2, 0).unwrap();
        assert!(matches!(store.get(b"a", 0, false), Lookup::Hit { .. }));
        assert_eq!(
            store.evict(1),
            vec![b"a".to_vec()],
            "the read did not refresh `a`"
        );
        store.apply_set(b"c", b"3", 0, 0, 3, 0).unwrap();
        store.touch_keys(&[b"b".to_vec()]);
        assert_eq!(
            store.evict(1),
            vec![b"c".to_vec()],
            "a replicated touch did"
        );
    }
}

mod fills {
    use crate::{IntegrityKey, Lookup, Store, StoreConfig};

    #[test]
    fn a_fill_installs_an_old_version_only_into_an_absent_key() {
        let mut store =
            Store::new(StoreConfig::with_defaults(IntegrityKey::new(vec![5; 32]))).unwrap();
        store.apply_set(b"present", b"new", 0, 0, 10, 0).unwrap();
        assert!(
            store
                .apply_fill(b"present", b"old", 0, 3, 0)
                .unwrap()
                .is_none(),
            "never over a live entry"
        );
        assert!(store
            .apply_fill(b"absent", b"from-db", 0, 4, 0)
            .unwrap()
            .is_some());
        match store.get(b"absent", 0, false) {
            Lookup::Hit { value, version, .. } => {
                assert_eq!((&*value, version), (&b"from-db"[..], 4))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store.last_version(),
            10,
            "an older fill does not lower the counter"
        );
        assert!(store
            .apply_fill(b"later", b"x", 0, 50, 0)
            .unwrap()
            .is_some());
        assert_eq!(store.last_version(), 50, "a newer fill raises it");
        store.raise_version_floor(70);
        assert_eq!(store.last_version(), 70);
        store.raise_version_floor(60);
        assert_eq!(store.last_version(), 70);
        // An expired copy is refilled with a fresh TTL; a newer expired one is kept.
        store.apply_set(b"ttl", b"v", 100, 0, 71, 1_000).unwrap();
        assert!(
            store
                .apply_fill(b"ttl", b"v", 100, 71, 1_050)
                .unwrap()
                .is_none(),
            "still live"
        );
        assert!(
            store
                .apply_fill(b"ttl", b"old", 100, 60, 2_000)
                .unwrap()
                .is_none(),
            "older version"
        );
        assert!(store
            .apply_fill(b"ttl", b"v", 100, 71, 2_000)
            .unwrap()
            .is_some());
        assert!(matches!(
            store.get(b"ttl", 2_050, false),
            Lookup::Hit { .. }
        ));
    }
}

// ---- reconfiguration (replicated settings) ----

#[test]
fn reconfigure_shrinks_by_evicting_and_switches_policy_deterministically() {
    let mut store = Store::new(small_config(1 << 20, EvictionPolicy::Lru)).unwrap();
    for i in 0..20u8 {
        set(&mut store, &[b'k', i], &[i; 200], 0, 0);
    }
    // Entry k3 is written twice: under LRU-K it is the one with two accesses.
    set(&mut store, &[b'k', 3], &[3; 200], 0, 0);
    let before = store.used_bytes();
    let mut settings = store.config().apply_settings();
    settings.eviction = EvictionPolicy::LruK2;
    assert!(store.reconfigure(settings).unwrap().is_empty());
    store.check_invariants();
    assert_eq!(
        store.used_bytes(),
        before,
        "a policy change keeps every entry"
    );
    // Shrink to about half: whole batches are evicted in LRU-K order, k3 (seen twice) survives.
    settings.capacity_bytes = before / 2 + store.config().max_entry_bytes();
    let evicted = store.reconfigure(settings).unwrap();
    store.check_invariants();
    assert!(!evicted.is_empty());
    assert!(store.used_bytes() <= settings.capacity_bytes);
    assert!(!evicted.contains(&vec![b'k', 3]), "{evicted:?}");
    assert!(matches!(
        store.get(&[b'k', 3], 0, false),
        Lookup::Hit { .. }
    ));
    // An invalid setting is refused and changes nothing.
    let used = store.used_bytes();
    settings.capacity_bytes = 10;
    assert!(store.reconfigure(settings).is_err());
    assert_eq!(store.used_bytes(), used);
    // Back to LRU: the oldest written go first.
    settings.capacity_bytes = store.config().max_entry_bytes() * 2;
    settings.eviction = EvictionPolicy::Lru;
    let evicted = store.reconfigure(settings).unwrap();
    store.check_invariants();
    assert!(
        evicted.iter().all(|key| key != &vec![b'k', 19]),
        "newest kept: {evicted:?}"
    );
}

#[test]
fn a_replicated_store_keeps_a_corrupt_entry_until_its_removal_applies() {
    let mut config = small_config(1 << 20, EvictionPolicy::Lru);
    config.drop_corrupt_on_read = false;
    let mut store = Store::new(config).unwrap();
    set(&mut store, b"k", b"value", 0, 0);
    assert!(store.corrupt_value_for_test(b"k"));
    assert_eq!(store.get(b"k", 0, false), Lookup::Corrupt);
    assert_eq!(
        store.get(b"k", 0, false),
        Lookup::Corrupt,
        "kept, never served"
    );
    assert_eq!(store.stats().integrity_failures, 2);
    assert_eq!(store.entry_version(b"k"), Some(1));
    assert!(
        !store.remove_version(b"k", 7),
        "another version is left alone"
    );
    assert!(store.remove_version(b"k", 1));
    assert_eq!(store.get(b"k", 0, false), Lookup::Miss);
    store.check_invariants();
}
