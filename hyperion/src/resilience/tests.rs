//! Tests of the retry policy and the circuit breaker (with mutants of the threshold rule).

use super::*;
use rand::SeedableRng;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy(jitter: Jitter) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        base_delay: ms(100),
        max_delay: ms(1000),
        max_total: Duration::from_secs(10),
        jitter,
    }
}

#[test]
fn ceiling_doubles_and_caps() {
    let p = policy(Jitter::None);
    let ceilings: Vec<u64> = (0..6)
        .map(|r| backoff_ceiling(&p, r).as_millis() as u64)
        .collect();
    assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
    assert_eq!(backoff_ceiling(&p, u32::MAX), ms(1000), "no overflow");
    let huge = RetryPolicy {
        max_delay: Duration::MAX,
        ..p
    };
    assert_eq!(backoff_ceiling(&huge, 200), Duration::MAX, "saturates");
}

/// Property: for every seed and retry, each jitter mode stays inside its documented range.
#[test]
fn jitter_stays_in_its_documented_range() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..2_000 {
        let retry = rng.random_range(0..8u32);
        let unit: f64 = rng.random();
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal, Jitter::Additive] {
            let p = policy(jitter);
            let d = backoff_ceiling(&p, retry);
            let delay = backoff_delay(&p, retry, unit);
            let (lo, hi) = match jitter {
                Jitter::None => (d, d),
                Jitter::Full => (Duration::ZERO, d),
                Jitter::Equal => (d / 2, d),
                Jitter::Additive => (d, d + d / 4),
            };
            assert!(
                lo <= delay && delay <= hi,
                "{jitter:?} retry {retry}: {delay:?}"
            );
        }
    }
}

/// Fraction of `clients` that retry within the busiest 10 ms slot after failing together.
fn herd_peak_fraction(
    delay_of: impl Fn(&RetryPolicy, u32, f64) -> Duration,
    p: &RetryPolicy,
) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(20_241_015);
    let clients = 1_000;
    let mut slots = std::collections::BTreeMap::<u128, u32>::new();
    for _ in 0..clients {
        let delay = delay_of(p, 3, rng.random());
        *slots.entry(delay.as_millis() / 10).or_default() += 1;
    }
    f64::from(*slots.values().max().unwrap()) / f64::from(clients)
}

#[test]
fn jitter_spreads_a_herd_and_the_check_catches_a_jitterless_mutant() {
    // Full jitter over an 800 ms ceiling: ~1.25 % per 10 ms slot on average.
    let spread = herd_peak_fraction(backoff_delay, &policy(Jitter::Full));
    assert!(spread < 0.05, "full jitter peak {spread}");
    let spread = herd_peak_fraction(backoff_delay, &policy(Jitter::Additive));
    assert!(spread < 0.10, "additive jitter peak {spread}");
    // Mutant: the 2024-10-15 retry (jitter dropped). The same check must fail on it.
    let mutant = |p: &RetryPolicy, retry: u32, _unit: f64| backoff_ceiling(p, retry);
    let herd = herd_peak_fraction(mutant, &policy(Jitter::Full));
    assert_eq!(herd, 1.0, "every client retries in the same slot");
}

#[test]
fn same_seed_same_delays() {
    let draw = |seed| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..10)
            .map(|r| backoff_delay(&policy(Jitter::Full), r, rng.random()))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
}

#[test]
fn policy_validation_names_the_field() {
    let zero = RetryPolicy {
        max_attempts: 0,
        ..RetryPolicy::database()
    };
    assert!(zero
        .validate()
        .unwrap_err()
        .to_string()
        .contains("max_attempts"));
    let inverted = RetryPolicy {
        base_delay: ms(10),
        max_delay: ms(1),
        ..RetryPolicy::database()
    };
    assert!(inverted
        .validate()
        .unwrap_err()
        .to_string()
        .contains("base_delay"));
    assert!(RetryPolicy::database().validate().is_ok());
    assert!(BreakerConfig::product().validate().is_ok());
}

#[tokio::test(start_paused = true)]
async fn retry_stops_at_success_attempts_non_retriable_and_total_time() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Succeeds on the third attempt.
    let mut calls = 0;
    let result: Result<u32, &str> = retry_with_backoff(
        &policy(Jitter::Full),
        &mut rng,
        |_| true,
        || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err("transient")
                } else {
                    Ok(n)
                }
            }
        },
    )
    .await;
    assert_eq!(result, Ok(3));

    // Gives up after max_attempts.
    let mut calls = 0;
    let result: Result<(), &str> = retry_with_backoff(
        &policy(Jitter::Equal),
        &mut rng,
        |_| true,
        || {
            calls += 1;
            async { Err("down") }
        },
    )
    .await;
    assert_eq!((result, calls), (Err("down"), 5));

    // A non-retriable error is returned at once.
    let mut calls = 0;
    let result: Result<(), &str> = retry_with_backoff(
        &policy(Jitter::Full),
        &mut rng,
        |e| *e != "fatal",
        || {
            calls += 1;
            async { Err("fatal") }
        },
    )
    .await;
    assert_eq!((result, calls), (Err("fatal"), 1));

    // Bounded by total time: 100+200+400 (no jitter) = 700 ms; a 500 ms budget allows 2 retries.
    let budget = RetryPolicy {
        max_total: ms(500),
        ..policy(Jitter::None)
    };
    let start = runtime::now();
    let mut calls = 0;
    let result: Result<(), &str> = retry_with_backoff(
        &budget,
        &mut rng,
        |_| true,
        || {
            calls += 1;
            async { Err("slow") }
        },
    )
    .await;
    assert_eq!((result, calls), (Err("slow"), 3));
    // Slept 100 + 200 and stopped before 400 (simulated timers may fire a hair late).
    let elapsed = runtime::now() - start;
    assert!(ms(300) <= elapsed && elapsed < ms(305), "{elapsed:?}");
}

fn breaker_config() -> BreakerConfig {
    BreakerConfig {
        failure_percent: 50,
        window: ms(1000),
        min_calls: 4,
        open_for: ms(500),
        half_open_probes: 2,
    }
}

fn call(b: &mut CircuitBreaker, ok: bool, at: Instant) -> Result<(), BreakerRejected> {
    let ticket = b.try_acquire(at)?;
    if ok {
        b.record_success(ticket, at);
    } else {
        b.record_failure(ticket, at);
    }
    Ok(())
}

#[test]
fn threshold_rule_and_mutants() {
    let c = breaker_config();
    // The rule's specification, as a table: (failures, calls, opens).
    fn check(rule: impl Fn(u32, u32, &BreakerConfig) -> bool) -> Result<(), String> {
        let c = breaker_config();
        let table = [
            (2, 4, true),
            (1, 4, false),
            (3, 3, false),
            (50, 100, true),
            (49, 100, false),
            (4, 4, true),
        ];
        for (failures, calls, opens) in table {
            if rule(failures, calls, &c) != opens {
                return Err(format!("{failures}/{calls}: expected opens={opens}"));
            }
        }
        Ok(())
    }
    assert_eq!(check(over_threshold), Ok(()));
    assert!(over_threshold(1, 2, &BreakerConfig { min_calls: 2, ..c }));
    // Mutants the table must catch: strict inequality, and ignoring min_calls.
    assert!(check(|f, n, c| n >= c.min_calls && f * 100 > c.failure_percent * n).is_err());
    assert!(check(|f, n, c| f * 100 >= c.failure_percent * n).is_err());
}

#[test]
fn opens_at_half_failures_fails_fast_then_probes_and_closes() {
    let t0 = runtime::now();
    let at = |n| t0 + ms(n);
    let mut b = CircuitBreaker::new(breaker_config());
    for ok in [true, false, true] {
        call(&mut b, ok, at(10)).unwrap();
    }
    assert_eq!(b.state(at(10)), BreakerState::Closed, "below min_calls");
    call(&mut b, false, at(20)).unwrap();
    assert_eq!(b.state(at(20)), BreakerState::Open, "2 of 4 failed");
    assert_eq!(b.times_opened(), 1);
    let rejected = b.try_acquire(at(120)).unwrap_err();
    assert_eq!(rejected.retry_after, ms(400));
    assert_eq!(b.state(at(519)).as_metric(), 1);
    assert_eq!(b.state(at(520)), BreakerState::HalfOpen);
    // Half-open: two probes, the third is refused.
    let p1 = b.try_acquire(at(520)).unwrap();
    let p2 = b.try_acquire(at(520)).unwrap();
    assert_eq!(b.try_acquire(at(521)).unwrap_err().retry_after, ms(0));
    b.record_success(p1, at(530));
    assert_eq!(b.state(at(530)), BreakerState::Closed);
    assert_eq!(
        b.window_counts(at(530)),
        (0, 0),
        "closing clears the window"
    );
    b.record_failure(p2, at(540));
    assert_eq!(
        b.state(at(540)),
        BreakerState::Closed,
        "a stale probe outcome does not count"
    );
}

#[test]
fn failed_probe_reopens_and_abandoned_probe_frees_its_slot() {
    let t0 = runtime::now();
    let at = |n| t0 + ms(n);
    let mut b = CircuitBreaker::new(breaker_config());
    for _ in 0..4 {
        call(&mut b, false, at(0)).unwrap();
    }
    let p1 = b.try_acquire(at(500)).unwrap();
    let p2 = b.try_acquire(at(500)).unwrap();
    b.record_abandoned(p1);
    let p3 = b.try_acquire(at(501)).unwrap();
    b.record_failure(p2, at(510));
    assert_eq!(b.state(at(510)), BreakerState::Open);
    assert_eq!(b.times_opened(), 2);
    b.record_success(p3, at(511));
    assert_eq!(b.state(at(511)), BreakerState::Open, "stale probe ignored");
    assert!(b.try_acquire(at(1009)).is_err());
    assert!(b.try_acquire(at(1010)).is_ok());
}

#[test]
fn old_outcomes_slide_out_of_the_window() {
    let t0 = runtime::now();
    let at = |n| t0 + ms(n);
    let mut b = CircuitBreaker::new(breaker_config());
    for _ in 0..3 {
        call(&mut b, false, at(0)).unwrap();
    }
    for n in 0..3 {
        call(&mut b, true, at(1000 + n)).unwrap();
    }
    assert_eq!(b.window_counts(at(1002)), (0, 3));
    call(&mut b, false, at(1003)).unwrap();
    assert_eq!(b.state(at(1003)), BreakerState::Closed, "1 of 4 in window");
}

/// Property: over random call sequences, the breaker agrees with a reference model that keeps
/// every outcome (no buckets), up to bucket granularity; and it never admits a call while open.
#[test]
fn agrees_with_an_unbucketed_model_over_random_histories() {
    let config = BreakerConfig {
        window: ms(1000),
        min_calls: 5,
        open_for: ms(300),
        half_open_probes: 1,
        failure_percent: 50,
    };
    for seed in 0..200u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t0 = runtime::now();
        let mut b = CircuitBreaker::new(config);
        let mut now_ms = 0u64;
        let mut model_open_until: Option<u64> = None;
        let mut model_half_open = false;
        let mut history: Vec<(u64, bool)> = Vec::new();
        let failure_bias = rng.random_range(0.0..1.0);
        for _ in 0..300 {
            // Whole buckets only, so the model's window and the buckets coincide.
            now_ms += 100 * rng.random_range(0..3u64);
            let now = t0 + ms(now_ms);
            let ok = rng.random::<f64>() >= failure_bias;
            let model_admits = match model_open_until {
                Some(until) if now_ms < until => false,
                Some(_) => {
                    model_half_open = true;
                    model_open_until = None;
                    true
                }
                None => true,
            };
            match b.try_acquire(now) {
                Err(_) => assert!(!model_admits, "seed {seed}: refused at {now_ms}"),
                Ok(ticket) => {
                    assert!(model_admits, "seed {seed}: admitted while open at {now_ms}");
                    if ok {
                        b.record_success(ticket, now);
                    } else {
                        b.record_failure(ticket, now);
                    }
                    if model_half_open {
                        model_half_open = false;
                        history.clear();
                        if !ok {
                            model_open_until = Some(now_ms + 300);
                        }
                    } else {
                        history.push((now_ms, ok));
                        let recent: Vec<_> =
                            history.iter().filter(|(t, _)| t + 1000 > now_ms).collect();
                        let failures = recent.iter().filter(|(_, ok)| !ok).count() as u32;
                        if over_threshold(failures, recent.len() as u32, &config) {
                            model_open_until = Some(now_ms + 300);
                            history.clear();
                        }
                    }
                }
            }
            let expected = match model_open_until {
                Some(until) if now_ms < until => BreakerState::Open,
                Some(_) => BreakerState::HalfOpen,
                None if model_half_open => BreakerState::HalfOpen,
                None => BreakerState::Closed,
            };
            assert_eq!(b.state(now), expected, "seed {seed} at {now_ms}");
        }
    }
}
