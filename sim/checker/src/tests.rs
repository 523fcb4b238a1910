//! Unit tests: one or more per rule, each a small hand-written history.

use crate::{
    check, CheckReport, CheckerConfig, ClientId, History, HistoryRecorder, Op, OpId, OpResult,
    Outcome, RecordError, Verdict, ViolationKind,
};

/// Builds histories op by op: each call invokes and (unless `return_ms` is `None`) completes.
struct Builder {
    recorder: HistoryRecorder,
}

const KEY: &[u8] = b"k";

impl Builder {
    fn new() -> Self {
        Builder {
            recorder: HistoryRecorder::new(),
        }
    }

    fn record(
        &mut self,
        client: u64,
        op: Op,
        invoke_ms: u64,
        return_ms: Option<u64>,
        outcome: Outcome,
    ) -> OpId {
        let id = self
            .recorder
            .invoke(ClientId(client), op, invoke_ms)
            .expect("recorder has room");
        if let Some(return_ms) = return_ms {
            self.recorder
                .complete(id, outcome, return_ms)
                .expect("valid completion");
        }
        id
    }

    fn set(&mut self, value: &str, ttl_ms: u64, window: (u64, u64), outcome: Outcome) -> OpId {
        self.set_cas(value, ttl_ms, 0, window, outcome)
    }

    fn set_cas(
        &mut self,
        value: &str,
        ttl_ms: u64,
        expected_version: u64,
        window: (u64, u64),
        outcome: Outcome,
    ) -> OpId {
        let op = Op::Set {
            key: KEY.to_vec(),
            value: value.as_bytes().to_vec(),
            ttl_ms,
            expected_version,
        };
        self.record(1, op, window.0, Some(window.1), outcome)
    }

    fn get(&mut self, window: (u64, u64), outcome: Outcome) -> OpId {
        self.record(
            2,
            Op::Get {
                key: KEY.to_vec(),
                allow_stale: false,
            },
            window.0,
            Some(window.1),
            outcome,
        )
    }

    fn get_stale(&mut self, window: (u64, u64), outcome: Outcome) -> OpId {
        self.record(
            3,
            Op::Get {
                key: KEY.to_vec(),
                allow_stale: true,
            },
            window.0,
            Some(window.1),
            outcome,
        )
    }

    fn delete(&mut self, expected_version: u64, window: (u64, u64), outcome: Outcome) -> OpId {
        self.record(
            4,
            Op::Delete {
                key: KEY.to_vec(),
                expected_version,
            },
            window.0,
            Some(window.1),
            outcome,
        )
    }

    fn history(self) -> History {
        self.recorder.into_history()
    }
}

fn written(version: u64, ttl_ms: u64) -> Outcome {
    Outcome::Ok(OpResult::Written { version, ttl_ms })
}

fn hit(value: &str, version: u64) -> Outcome {
    Outcome::Ok(OpResult::Hit {
        value: value.as_bytes().to_vec(),
        version,
        is_stale: false,
        ttl_remaining_ms: None,
    })
}

fn stale_hit(value: &str, version: u64) -> Outcome {
    Outcome::Ok(OpResult::Hit {
        value: value.as_bytes().to_vec(),
        version,
        is_stale: true,
        ttl_remaining_ms: None,
    })
}

fn miss() -> Outcome {
    Outcome::Ok(OpResult::Miss)
}

fn deleted(existed: bool, version: u64) -> Outcome {
    Outcome::Ok(OpResult::Deleted { existed, version })
}

fn cas_failed(current_version: u64) -> Outcome {
    Outcome::Ok(OpResult::CasFailed { current_version })
}

fn no_eviction() -> CheckerConfig {
    CheckerConfig {
        allow_eviction: false,
        ..CheckerConfig::default()
    }
}

fn kinds(report: &CheckReport) -> Vec<ViolationKind> {
    report
        .violations()
        .iter()
        .map(|violation| violation.kind)
        .collect()
}

#[track_caller]
fn assert_ok(history: &History, config: &CheckerConfig) {
    let report = check(history, config);
    assert_eq!(report.verdict, Verdict::Ok, "{report}");
}

#[track_caller]
fn assert_rejected(history: &History, config: &CheckerConfig, kind: ViolationKind) -> CheckReport {
    let report = check(history, config);
    assert!(
        kinds(&report).contains(&kind),
        "expected {kind:?}, got: {report}"
    );
    report
}

#[test]
fn sequential_history_is_accepted_with_and_without_eviction() {
    let mut history = Builder::new();
    history.get((0, 1), miss());
    history.set("a", 0, (2, 3), written(1, 0));
    history.get((4, 5), hit("a", 1));
    history.set_cas("b", 0, 1, (6, 7), written(2, 0));
    history.set_cas("c", 0, 1, (8, 9), cas_failed(2));
    history.delete(2, (10, 11), deleted(true, 2));
    history.get((12, 13), miss());
    history.delete(0, (14, 15), deleted(false, 0));
    let history = history.history();
    assert_ok(&history, &CheckerConfig::default());
    assert_ok(&history, &no_eviction());
    let report = check(&history, &CheckerConfig::default());
    assert_eq!((report.keys_checked, report.ops_checked), (1, 8));
}

#[test]
fn concurrent_read_may_see_either_side_of_a_write() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (10, 20), written(2, 0));
    history.get((12, 14), hit("a", 1));
    history.get((13, 15), hit("b", 2));
    history.get((16, 18), hit("b", 2));
    assert_ok(&history.history(), &no_eviction());
}

#[test]
fn stale_read_is_rejected() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (2, 3), written(2, 0));
    history.get((4, 5), hit("b", 2));
    let stale = history.get((6, 7), hit("a", 1));
    let report = assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::StaleRead,
    );
    let violation = &report.violations()[0];
    assert_eq!(violation.op_ids[0], stale);
    assert!(
        violation.excerpt.contains("* op#3"),
        "{}",
        violation.excerpt
    );
}

#[test]
fn lost_write_read_as_older_version_is_rejected() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (2, 3), written(2, 0));
    history.get((4, 5), hit("a", 1));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::LostWrite,
    );
}

#[test]
fn lost_write_read_as_miss_is_rejected_only_without_eviction() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.get((2, 3), miss());
    let history = history.history();
    assert_ok(&history, &CheckerConfig::default());
    assert_rejected(&history, &no_eviction(), ViolationKind::LostWrite);
}

#[test]
fn a_miss_of_a_damaged_key_is_explained_without_eviction_elsewhere() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.get((2, 3), miss());
    let history = history.history();
    let key = history.ops()[0].op.key().to_vec();
    let damaged = CheckerConfig {
        evictable_keys: [key].into_iter().collect(),
        ..no_eviction()
    };
    assert_ok(&history, &damaged);
    let other = CheckerConfig {
        evictable_keys: [b"another key".to_vec()].into_iter().collect(),
        ..no_eviction()
    };
    assert_rejected(&history, &other, ViolationKind::LostWrite);
}

#[test]
fn duplicated_version_is_rejected() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (2, 3), written(1, 0));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::DuplicateVersion,
    );
}

#[test]
fn non_monotonic_reads_are_rejected() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 100), written(1, 0));
    history.set("b", 0, (0, 100), written(2, 0));
    history.get((10, 20), hit("b", 2));
    history.get((30, 40), hit("a", 1));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::NonMonotonicRead,
    );
}

#[test]
fn phantom_values_and_versions_are_rejected() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.get((2, 3), hit("zzz", 1));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::PhantomValue,
    );

    let mut history = Builder::new();
    history.get((2, 3), hit("a", 7));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::PhantomValue,
    );
}

#[test]
fn unknown_write_may_explain_an_observed_version() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("u", 0, (2, 3), Outcome::Unknown);
    // Applied after the client gave up: first seen long after the write "returned".
    history.get((50, 51), hit("u", 9));
    history.get((60, 61), hit("u", 9));
    assert_ok(&history.history(), &no_eviction());

    // But not when the unknown write was invoked only after the read returned.
    let mut history = Builder::new();
    history.get((0, 1), hit("u", 9));
    history.set("u", 0, (2, 3), Outcome::Unknown);
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::PhantomValue,
    );

    // One unknown write cannot produce two versions.
    let mut history = Builder::new();
    history.set("u", 0, (0, 1), Outcome::Unknown);
    history.get((2, 3), hit("u", 4));
    history.get((4, 5), hit("u", 5));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::PhantomValue,
    );
}

#[test]
fn failed_operations_are_ignored() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), Outcome::Fail);
    history.get((2, 3), miss());
    assert_ok(&history.history(), &no_eviction());
}

#[test]
fn reading_a_version_before_its_write_began_is_rejected() {
    let mut history = Builder::new();
    history.get((0, 1), hit("a", 1));
    history.set("a", 0, (2, 3), written(1, 0));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::FutureRead,
    );
    // Stale-allowed reads too.
    let mut history = Builder::new();
    history.get_stale((0, 1), hit("a", 1));
    history.set("a", 0, (2, 3), written(1, 0));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::FutureRead,
    );
}

#[test]
fn version_order_against_real_time_is_rejected() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 10), written(2, 0));
    history.set("b", 0, (20, 30), written(1, 0));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::WriteOrderViolation,
    );
}

#[test]
fn compare_and_set_rules() {
    // A CAS on 1 cannot succeed after version 2 was written.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (2, 3), written(2, 0));
    history.set_cas("c", 0, 1, (4, 5), written(3, 0));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::CasViolation,
    );

    // Failing although the current version is the expected one.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set_cas("c", 0, 1, (2, 3), cas_failed(1));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::CasViolation,
    );

    // A CAS delete must remove exactly the expected version.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.delete(5, (2, 3), deleted(true, 1));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::CasViolation,
    );

    // Two CAS writes on the same version cannot both succeed (the fast path names it).
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set_cas("b", 0, 1, (2, 10), written(2, 0));
    history.set_cas("c", 0, 1, (2, 10), written(3, 0));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::CasViolation,
    );

    // A CAS that lost the race fails on the winner's version.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set_cas("b", 0, 1, (2, 10), written(2, 0));
    history.set_cas("c", 0, 1, (2, 10), cas_failed(2));
    assert_ok(&history.history(), &no_eviction());
}

#[test]
fn deletes() {
    // Reading a version after its delete returned.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.delete(0, (2, 3), deleted(true, 1));
    history.get((4, 5), hit("a", 1));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::StaleRead,
    );

    // Two deletes of one version.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.delete(0, (2, 3), deleted(true, 1));
    history.delete(0, (4, 5), deleted(true, 1));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::DoubleDelete,
    );

    // A concurrent delete explains a Miss even without eviction.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.delete(0, (2, 10), deleted(true, 1));
    history.get((3, 4), miss());
    history.get((11, 12), miss());
    assert_ok(&history.history(), &no_eviction());
}

#[test]
fn ttl_rules_respect_clock_skew() {
    let skewed = CheckerConfig {
        allow_eviction: false,
        clock_skew_ms: 5,
        ..CheckerConfig::default()
    };
    // Written by 10 with ttl 100: certainly expired after 10 + 100 + 5.
    let fresh_at = |invoke_ms: u64| {
        let mut history = Builder::new();
        history.set("a", 100, (0, 10), written(1, 100));
        history.get((invoke_ms, invoke_ms + 1), hit("a", 1));
        history.history()
    };
    assert_ok(&fresh_at(115), &skewed);
    assert_rejected(&fresh_at(116), &skewed, ViolationKind::ExpiredServedFresh);

    // A Miss needs possible expiry: invoked at 0, so not before 0 + 100 - 5.
    let miss_by = |return_ms: u64| {
        let mut history = Builder::new();
        history.set("a", 100, (0, 10), written(1, 100));
        history.get((return_ms - 1, return_ms), miss());
        history.history()
    };
    assert_rejected(&miss_by(95), &skewed, ViolationKind::LostWrite);
    assert_ok(&miss_by(96), &skewed);

    // A stale hit needs possible expiry too.
    let stale_by = |return_ms: u64| {
        let mut history = Builder::new();
        history.set("a", 100, (0, 10), written(1, 100));
        history.get_stale((return_ms - 1, return_ms), stale_hit("a", 1));
        history.history()
    };
    assert_rejected(&stale_by(95), &skewed, ViolationKind::FreshServedStale);
    assert_ok(&stale_by(96), &skewed);
    assert_ok(&stale_by(10_000), &skewed);

    // An entry that never expires is never stale.
    let mut history = Builder::new();
    history.set("a", 0, (0, 10), written(1, 0));
    history.get_stale((10_000, 10_001), stale_hit("a", 1));
    assert_rejected(&history.history(), &skewed, ViolationKind::FreshServedStale);
}

#[test]
fn stale_allowed_reads_may_lag_but_not_invent() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (2, 3), written(2, 0));
    history.get_stale((4, 5), hit("a", 1));
    history.get_stale((6, 7), miss());
    assert_ok(&history.history(), &no_eviction());
}

#[test]
fn malformed_results_are_rejected() {
    let mut history = Builder::new();
    history.get((0, 1), stale_hit("a", 1));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::MalformedResult,
    );
}

#[test]
fn search_rejects_what_only_a_global_order_shows() {
    // The unknown delete can explain the Miss or keep the later Hit, not both; every operation
    // passes the fast path on its own.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.delete(0, (2, 3), Outcome::Unknown);
    history.get((4, 5), miss());
    history.get((6, 7), hit("a", 1));
    let history = history.history();
    assert_rejected(&history, &no_eviction(), ViolationKind::NotLinearizable);
    assert_ok(&history, &CheckerConfig::default());

    // An unknown compare-and-set can only have applied on its expected version.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (2, 3), written(2, 0));
    history.set_cas("u", 0, 1, (4, 5), Outcome::Unknown);
    history.get((6, 7), hit("u", 3));
    assert_rejected(
        &history.history(),
        &CheckerConfig::default(),
        ViolationKind::NotLinearizable,
    );
}

#[test]
fn exhausted_search_budget_answers_unknown() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.delete(0, (2, 3), Outcome::Unknown);
    history.get((4, 5), hit("a", 1));
    let config = CheckerConfig {
        search_steps_max: 0,
        ..CheckerConfig::default()
    };
    let report = check(&history.history(), &config);
    assert!(
        matches!(report.verdict, Verdict::Unknown { .. }),
        "{report}"
    );
    assert!(report.is_violation_free());
}

#[test]
fn incomplete_operations_count_as_unknown() {
    let mut history = Builder::new();
    let op = Op::Set {
        key: KEY.to_vec(),
        value: b"u".to_vec(),
        ttl_ms: 0,
        expected_version: 0,
    };
    history.record(1, op, 0, None, Outcome::Unknown);
    history.get((5, 6), hit("u", 3));
    assert_ok(&history.history(), &no_eviction());
}

#[test]
fn recorder_is_bounded_and_validates() {
    let mut recorder = HistoryRecorder::with_max_ops(2);
    let get = Op::Get {
        key: KEY.to_vec(),
        allow_stale: false,
    };
    let first = recorder.invoke(ClientId(1), get.clone(), 10).expect("room");
    assert_eq!(
        recorder.complete(first, written(1, 0), 11),
        Err(RecordError::OutcomeMismatch {
            id: first,
            op: Box::new(get.clone()),
            result: Box::new(OpResult::Written {
                version: 1,
                ttl_ms: 0
            })
        })
    );
    assert_eq!(
        recorder.complete(first, miss(), 9),
        Err(RecordError::ReturnBeforeInvoke {
            id: first,
            invoke_ms: 10,
            return_ms: 9
        })
    );
    recorder.complete(first, miss(), 11).expect("valid");
    assert_eq!(
        recorder.complete(first, miss(), 12),
        Err(RecordError::AlreadyCompleted(first))
    );
    assert_eq!(
        recorder.complete(OpId(7), miss(), 12),
        Err(RecordError::UnknownOp(OpId(7)))
    );
    assert_eq!(
        recorder.invoke_batch_get(ClientId(1), &[b"x".to_vec(), b"y".to_vec()], false, 20),
        Err(RecordError::Full { max: 2 })
    );
    recorder.invoke(ClientId(1), get.clone(), 20).expect("room");
    assert_eq!(
        recorder.invoke(ClientId(1), get, 30),
        Err(RecordError::Full { max: 2 })
    );
    assert_eq!(recorder.len(), 2);
}

#[test]
fn batch_get_shares_one_window_and_checks_per_key() {
    let mut recorder = HistoryRecorder::new();
    let set = recorder
        .invoke(
            ClientId(1),
            Op::Set {
                key: b"x".to_vec(),
                value: b"1".to_vec(),
                ttl_ms: 0,
                expected_version: 0,
            },
            0,
        )
        .expect("room");
    recorder.complete(set, written(1, 0), 1).expect("valid");
    let ids = recorder
        .invoke_batch_get(ClientId(2), &[b"x".to_vec(), b"y".to_vec()], false, 5)
        .expect("room");
    recorder.complete(ids[0], hit("1", 1), 6).expect("valid");
    recorder.complete(ids[1], miss(), 6).expect("valid");
    let history = recorder.into_history();
    let batch = &history.ops()[1..];
    assert!(batch
        .iter()
        .all(|op| op.batch == Some(0) && op.invoke_ms == 5 && op.return_ms == Some(6)));
    let report = check(&history, &no_eviction());
    assert_eq!(report.verdict, Verdict::Ok, "{report}");
    assert_eq!((report.keys_checked, report.ops_checked), (2, 3));
}

#[test]
fn json_lines_round_trip() {
    let mut history = Builder::new();
    history.set("a", 100, (0, 1), written(1, 105));
    history.get((2, 3), hit("a", 1));
    history.delete(0, (4, 5), Outcome::Unknown);
    history.record(
        2,
        Op::Get {
            key: KEY.to_vec(),
            allow_stale: true,
        },
        6,
        None,
        Outcome::Unknown,
    );
    let history = history.history();
    let mut trace = Vec::new();
    history.write_jsonl(&mut trace).expect("in-memory write");
    let text = String::from_utf8(trace.clone()).expect("JSON is UTF-8");
    assert_eq!(text.lines().count(), 4);
    let parsed = History::read_jsonl(trace.as_slice()).expect("round trip");
    assert_eq!(parsed, history);
}

#[test]
fn report_renders_readably() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (2, 3), written(2, 0));
    history.get((4, 5), hit("a", 1));
    let report = check(&history.history(), &CheckerConfig::default());
    let text = report.to_string();
    assert!(text.contains("LostWrite on key \"k\""), "{text}");
    assert!(
        text.contains("* op#1 c1 [2..3] Set \"b\" ttl=0 exp=0 -> Written v=2 ttl=0"),
        "{text}"
    );
    assert!(
        text.contains("* op#2 c2 [4..5] Get allow_stale=false -> Hit \"a\" v=1"),
        "{text}"
    );
}

/// Client 3's stale reads are near-cache reads with a 200 ms bound.
fn near_cache(bound_ms: u64) -> CheckerConfig {
    CheckerConfig {
        bounded_staleness: Some(crate::BoundedStaleness {
            bound_ms,
            clients: [ClientId(3)].into_iter().collect(),
        }),
        ..no_eviction()
    }
}

#[test]
fn a_near_read_may_lag_by_the_bound_and_no_more() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (10, 12), written(2, 0));
    // Within the bound: 150 - 200 < 12.
    history.get_stale((150, 150), hit("a", 1));
    let within = history.history();
    assert_ok(&within, &near_cache(200));

    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (10, 12), written(2, 0));
    // Version 2 was acknowledged at 12, more than 200 ms before 300.
    let late = history.get_stale((300, 300), hit("a", 1));
    let beyond = history.history();
    let report = assert_rejected(&beyond, &near_cache(200), ViolationKind::StaleBeyondBound);
    assert_eq!(report.violations()[0].op_ids[0], late);
    // As an ordinary stale read (no near-cache clients named) the same history is fine.
    assert_ok(&beyond, &no_eviction());
}

#[test]
fn a_near_read_must_not_miss_a_delete_or_a_newer_read_beyond_the_bound() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.delete(0, (5, 6), deleted(true, 1));
    history.get_stale((400, 400), hit("a", 1));
    assert_rejected(
        &history.history(),
        &near_cache(200),
        ViolationKind::StaleBeyondBound,
    );

    // Another client's linearizable read of version 2 proves the key moved on.
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (10, 900), Outcome::Unknown);
    history.get((20, 21), hit("b", 2));
    history.get_stale((300, 300), hit("a", 1));
    assert_rejected(
        &history.history(),
        &near_cache(200),
        ViolationKind::StaleBeyondBound,
    );
}

#[test]
fn a_near_read_is_never_older_than_its_clients_own_reads() {
    let mut history = Builder::new();
    history.set("a", 0, (0, 1), written(1, 0));
    history.set("b", 0, (10, 12), written(2, 0));
    // Client 3 read version 2 from the cluster, then its near cache answered version 1.
    history.record(
        3,
        Op::Get {
            key: KEY.to_vec(),
            allow_stale: false,
        },
        20,
        Some(21),
        hit("b", 2),
    );
    history.get_stale((30, 30), hit("a", 1));
    assert_rejected(
        &history.history(),
        &near_cache(200),
        ViolationKind::OlderThanOwn,
    );
}
