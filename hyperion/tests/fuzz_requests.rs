//! Fuzz target (proptest-driven) for CacheService request validation (`api::check_*`): any
//! request a client can send is either accepted within the product's bounds or refused with
//! `INVALID_ARGUMENT` and a message that starts with the field at fault — never a panic, never
//! an acceptance outside the bounds.
//!
//! Negative control: with the `unbounded_batch_get` switch (the 100-key bound lifted) the same
//! generator finds an accepted `BatchGet` outside the bounds.
//!
//! Case count: `HYPERION_FUZZ_CASES` (a bounded default for CI; million-case runs:
//! `HYPERION_FUZZ_CASES=1000000 cargo test --release -p hyperion --test fuzz_requests`).

use hyperion::api::{check_batch_get, check_delete, check_get, check_set};
use hyperion::faults::FaultInjection;
use hyperion::limits::{BATCH_KEYS_MAX, KEY_BYTES_MAX, TIMEOUT_MS_MAX};
use hyperion::proto::{BatchGetRequest, DeleteRequest, GetRequest, SetRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tonic::Code;

fn cases() -> u32 {
    std::env::var("HYPERION_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// Key lengths around the bounds (0, 1, the limit, one past it) and in between.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(0usize),
        1 => Just(1usize),
        1 => Just(KEY_BYTES_MAX),
        1 => Just(KEY_BYTES_MAX + 1),
        12 => 0usize..64,
        1 => 0usize..KEY_BYTES_MAX * 2,
    ]
    .prop_flat_map(|len| prop::collection::vec(any::<u8>(), len))
}

fn timeout_ms() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(TIMEOUT_MS_MAX),
        Just(TIMEOUT_MS_MAX + 1),
        Just(u32::MAX),
        any::<u32>()
    ]
}

const MAX_VALUE_BYTES: usize = 1024;

fn refused_for(status: &tonic::Status, fields: &[&str]) -> Result<(), TestCaseError> {
    prop_assert_eq!(status.code(), Code::InvalidArgument);
    prop_assert!(
        fields.iter().any(|f| status.message().starts_with(f)),
        "{} does not name one of {:?}",
        status.message(),
        fields
    );
    Ok(())
}

fn key_ok(key: &[u8]) -> bool {
    (1..=KEY_BYTES_MAX).contains(&key.len())
}

proptest! {
    #![proptest_config(RunnerConfig { cases: cases(), failure_persistence: None, ..RunnerConfig::default() })]

    #[test]
    fn get_and_delete(key in key(), timeout_ms in timeout_ms(), allow_stale in any::<bool>(), version in any::<u64>()) {
        let get = GetRequest { key: key.clone(), allow_stale, timeout_ms, tracking_id: 0 };
        match check_get(&get) {
            Ok(wait) => {
                prop_assert!(key_ok(&key) && timeout_ms <= TIMEOUT_MS_MAX);
                prop_assert!(wait.as_millis() <= u128::from(TIMEOUT_MS_MAX));
            }
            Err(status) => refused_for(&status, &["key:", "timeout_ms:"])?,
        }
        let delete = DeleteRequest { key: key.clone(), expected_version: version };
        match check_delete(&delete) {
            Ok(()) => prop_assert!(key_ok(&key)),
            Err(status) => refused_for(&status, &["key:"])?,
        }
    }

    #[test]
    fn set(key in key(), value_len in prop_oneof![Just(MAX_VALUE_BYTES), Just(MAX_VALUE_BYTES + 1), 0usize..3 * MAX_VALUE_BYTES], ttl_ms in any::<u64>()) {
        let set = SetRequest { key: key.clone(), value: vec![7; value_len], ttl_ms, expected_version: 0 };
        match check_set(&set, MAX_VALUE_BYTES) {
            Ok(()) => prop_assert!(key_ok(&key) && value_len <= MAX_VALUE_BYTES),
            Err(status) => refused_for(&status, &["key:", "value:"])?,
        }
    }

    #[test]
    fn batch_get((keys, timeout_ms) in batch_get_request()) {
        batch_get_is_bounded(&FaultInjection::default(), keys, timeout_ms)?;
    }
}

fn batch_get_request() -> impl Strategy<Value = (Vec<Vec<u8>>, u32)> {
    (
        prop_oneof![
            4 => prop::collection::vec(key(), 0..8),
            1 => prop::collection::vec(key(), BATCH_KEYS_MAX - 2..BATCH_KEYS_MAX + 3),
            // Every key valid around the count bound: otherwise a bad key among a hundred
            // refuses nearly every long batch, and the count bound itself goes untested.
            1 => prop::collection::vec(
                prop::collection::vec(any::<u8>(), 1..16),
                BATCH_KEYS_MAX - 2..BATCH_KEYS_MAX + 3
            ),
        ],
        timeout_ms(),
    )
}

/// The `batch_get` property: accepted only within every bound, else refused naming the field.
fn batch_get_is_bounded(
    faults: &FaultInjection,
    keys: Vec<Vec<u8>>,
    timeout_ms: u32,
) -> Result<(), TestCaseError> {
    let count = keys.len();
    let all_ok = keys.iter().all(|k| key_ok(k));
    let request = BatchGetRequest {
        keys,
        allow_stale: false,
        timeout_ms,
        tracking_id: 0,
    };
    match check_batch_get(&request, faults) {
        Ok(_) => prop_assert!(
            (1..=BATCH_KEYS_MAX).contains(&count) && all_ok && timeout_ms <= TIMEOUT_MS_MAX
        ),
        Err(status) => refused_for(&status, &["keys:", "keys[", "timeout_ms:"])?,
    }
    Ok(())
}

#[test]
fn the_fuzzer_finds_the_batch_bound_lifted() {
    let faults = FaultInjection {
        unbounded_batch_get: true,
        ..FaultInjection::default()
    };
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 5_000,
        failure_persistence: None,
        max_shrink_iters: 100,
        ..RunnerConfig::default()
    });
    let result = runner.run(&batch_get_request(), |(keys, timeout_ms)| {
        batch_get_is_bounded(&faults, keys, timeout_ms)
    });
    match result {
        Err(proptest::test_runner::TestError::Fail(reason, _)) => {
            eprintln!("found with the batch bound lifted: {reason}");
        }
        other => panic!("the fuzzer found nothing with the batch bound lifted: {other:?}"),
    }
}
