//! Resilience primitives shared by the database client and the Rust client: retries with
//! exponential backoff and jitter, and a circuit breaker.
//!
//! Both answer the 2024-10-15 thundering herd: 50K entries expired at once, every client retried
//! on the same schedule without jitter, and the database's connections maxed out. Jitter spreads
//! the retries of many callers over time; the breaker stops a node from queueing work on a
//! database that is failing (it opens at 50 % failures over a window and then fails fast).
//!
//! Contract: the decisions are pure. [`backoff_delay`] takes a uniform sample instead of reading
//! an RNG, and [`CircuitBreaker`] takes the time as an argument and never reads a clock, so both
//! are tested without time and replay exactly under a simulation seed. Only
//! [`retry_with_backoff`] touches time, through [`crate::runtime`].

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::runtime::{self, Instant};

/// How retry delays are randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the exponential delay. Every caller that failed together retries together: this is
    /// the 2024-10-15 bug, kept for tests and for single callers.
    None,
    /// Uniform in `[0, d)` ("full jitter"): spreads a herd over the whole interval. The default.
    Full,
    /// `d/2` plus uniform `[0, d/2)`: never retries sooner than half the delay.
    Equal,
    /// `d` plus uniform `[0, d/4)`: the product's original `retry.rs` pattern
    /// (`delay = base·2^attempt + rand(0, delay/4)`).
    Additive,
}

/// Largest accepted `max_attempts`: retries are a last resort, not a loop.
pub const RETRY_ATTEMPTS_MAX: u32 = 100;

/// When and how often to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry (before jitter); doubles with each retry.
    pub base_delay: Duration,
    /// Cap on the exponential part. Jitter is applied after the cap so capped delays stay spread
    /// (with [`Jitter::Additive`] a delay may exceed the cap by a quarter).
    pub max_delay: Duration,
    /// No retry starts once this much time has passed since the first attempt began, nor when its
    /// delay would end past it.
    pub max_total: Duration,
    pub jitter: Jitter,
}

impl RetryPolicy {
    /// The database client's policy: 4 attempts, 20 ms doubling to at most 1 s, full jitter, 3 s
    /// overall (a cache miss waiting longer than that is better answered as unavailable).
    pub fn database() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
            max_total: Duration::from_secs(3),
            jitter: Jitter::Full,
        }
    }

    /// Checks the bounds; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        if !(1..=RETRY_ATTEMPTS_MAX).contains(&self.max_attempts) {
            return Err(InvalidPolicy::new(
                "max_attempts",
                format!("must be 1-{RETRY_ATTEMPTS_MAX}, got {}", self.max_attempts),
            ));
        }
        if self.base_delay > self.max_delay {
            return Err(InvalidPolicy::new(
                "base_delay",
                format!(
                    "{:?} exceeds max_delay {:?}",
                    self.base_delay, self.max_delay
                ),
            ));
        }
        Ok(())
    }
}

/// The exponential part of the delay before retry number `retry` (0 = the wait after the first
/// failure): `base·2^retry`, capped at `max_delay`.
pub fn backoff_ceiling(policy: &RetryPolicy, retry: u32) -> Duration {
    let exponential = 1u32
        .checked_shl(retry)
        .and_then(|factor| policy.base_delay.checked_mul(factor))
        .unwrap_or(Duration::MAX);
    exponential.min(policy.max_delay)
}

/// The delay before retry number `retry`, given `unit`, a uniform sample in `[0, 1)`. Pure: the
/// caller draws `unit` from a seeded RNG.
pub fn backoff_delay(policy: &RetryPolicy, retry: u32, unit: f64) -> Duration {
    assert!(
        (0.0..1.0).contains(&unit),
        "jitter sample {unit} outside [0, 1)"
    );
    let ceiling = backoff_ceiling(policy, retry);
    match policy.jitter {
        Jitter::None => ceiling,
        Jitter::Full => ceiling.mul_f64(unit),
        Jitter::Equal => ceiling / 2 + (ceiling / 2).mul_f64(unit),
        Jitter::Additive => ceiling + (ceiling / 4).mul_f64(unit),
    }
}

/// Runs `attempt` until it succeeds, fails with an error `is_retriable` rejects, runs out of
/// attempts, or would run past `max_total`; sleeps a jittered backoff between attempts through the
/// runtime facade. Returns the last error. The time an attempt itself takes is the caller's to
/// bound (a per-query timeout).
pub async fn retry_with_backoff<T, E, Fut>(
    policy: &RetryPolicy,
    rng: &mut ChaCha8Rng,
    is_retriable: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    debug_assert!(policy.validate().is_ok(), "{:?}", policy.validate());
    let started = runtime::now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if attempts >= policy.max_attempts || !is_retriable(&error) {
            return Err(error);
        }
        let delay = backoff_delay(policy, attempts - 1, rng.random::<f64>());
        let elapsed = runtime::now().saturating_duration_since(started);
        if elapsed.saturating_add(delay) > policy.max_total {
            return Err(error);
        }
        runtime::sleep(delay).await;
    }
}

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Opens when failures are at least this percentage of the calls in the window (the product's
    /// 2024-10-15 fix: 50).
    pub failure_percent: u32,
    /// Length of the sliding window over which calls are counted.
    pub window: Duration,
    /// Calls the window must hold before it is judged: two failures out of three are not a trend.
    pub min_calls: u32,
    /// How long the breaker stays open before letting probes through.
    pub open_for: Duration,
    /// Most probes in flight while half-open.
    pub half_open_probes: u32,
}

impl BreakerConfig {
    /// The product's breaker: 50 % failures over 10 s (at least 20 calls), open for 5 s, then 3
    /// probes.
    pub fn product() -> BreakerConfig {
        BreakerConfig {
            failure_percent: 50,
            window: Duration::from_secs(10),
            min_calls: 20,
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }

    /// Checks the bounds; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        if !(1..=100).contains(&self.failure_percent) {
            return Err(InvalidPolicy::new(
                "failure_percent",
                format!("must be 1-100, got {}", self.failure_percent),
            ));
        }
        if self.window < Duration::from_millis(BREAKER_WINDOW_BUCKETS as u64) {
            return Err(InvalidPolicy::new(
                "window",
                format!(
                    "must be at least {BREAKER_WINDOW_BUCKETS} ms, got {:?}",
                    self.window
                ),
            ));
        }
        if self.min_calls == 0 {
            return Err(InvalidPolicy::new("min_calls", "must be at least 1"));
        }
        if self.half_open_probes == 0 {
            return Err(InvalidPolicy::new("half_open_probes", "must be at least 1"));
        }
        Ok(())
    }
}

/// A retry policy or breaker setting out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct InvalidPolicy {
    /// The field at fault.
    pub field: &'static str,
    pub problem: String,
}

impl InvalidPolicy {
    fn new(field: &'static str, problem: impl Into<String>) -> InvalidPolicy {
        InvalidPolicy {
            field,
            problem: problem.into(),
        }
    }
}

/// The window is kept as this many time buckets, so memory is bounded whatever the call rate.
pub const BREAKER_WINDOW_BUCKETS: usize = 10;

/// The breaker's state, as exported in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed = 0,
    /// Calls are refused until the cool-down ends.
    Open = 1,
    /// A bounded number of probes may run; the first outcome decides.
    HalfOpen = 2,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub fn as_metric(self) -> u8 {
        self as u8
    }
}

/// Permission for one call, to be handed back with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "report the outcome (record_success/record_failure/record_abandoned)"]
pub struct BreakerTicket {
    probe: bool,
    generation: u64,
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerRejected {
    /// How long until the breaker lets probes through (zero: probes are already in flight).
    pub retry_after: Duration,
}

/// True when the window's counts should open the breaker. The one threshold rule, kept separate so
/// tests can check it (and check that the tests catch a wrong rule).
pub fn over_threshold(failures: u32, calls: u32, config: &BreakerConfig) -> bool {
    calls >= config.min_calls
        && u64::from(failures) * 100 >= u64::from(config.failure_percent) * u64::from(calls)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probes_in_flight: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    successes: u32,
    failures: u32,
}

/// A circuit breaker over a sliding time window (see the module docs). Not internally
/// synchronised: wrap it in a mutex to share it; every method is O([`BREAKER_WINDOW_BUCKETS`]).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    phase: Phase,
    /// Bumped on every transition: an outcome carries the generation it was admitted in, and a
    /// stale one (admitted before the breaker opened or closed) does not count.
    generation: u64,
    /// Oldest first; at most `BREAKER_WINDOW_BUCKETS + 1` buckets, all started within `window`.
    buckets: VecDeque<Bucket>,
    times_opened: u64,
}

impl CircuitBreaker {
    /// A closed breaker. Panics on an invalid configuration (a bug in the caller's validation).
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        if let Err(problem) = config.validate() {
            panic!("invalid breaker configuration: {problem}");
        }
        CircuitBreaker {
            config,
            phase: Phase::Closed,
            generation: 0,
            buckets: VecDeque::with_capacity(BREAKER_WINDOW_BUCKETS + 1),
            times_opened: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now` (an open breaker whose cool-down has ended reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How many times the breaker has opened (a counter for metrics).
    pub fn times_opened(&self) -> u64 {
        self.times_opened
    }

    /// `(failures, calls)` in the window ending at `now`, as the breaker judges them.
    pub fn window_counts(&self, now: Instant) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|b| self.in_window(b, now))
            .fold((0, 0), |(f, c), b| {
                (f + b.failures, c + b.failures + b.successes)
            })
    }

    /// Asks to make a call at `now`.
    pub fn try_acquire(&mut self, now: Instant) -> Result<BreakerTicket, BreakerRejected> {
        if let Phase::Open { until } = self.phase {
            if now < until {
                return Err(BreakerRejected {
                    retry_after: until.saturating_duration_since(now),
                });
            }
            self.transition(Phase::HalfOpen {
                probes_in_flight: 0,
            });
        }
        match &mut self.phase {
            Phase::Closed => Ok(BreakerTicket {
                probe: false,
                generation: self.generation,
            }),
            Phase::HalfOpen { probes_in_flight }
                if *probes_in_flight < self.config.half_open_probes =>
            {
                *probes_in_flight += 1;
                Ok(BreakerTicket {
                    probe: true,
                    generation: self.generation,
                })
            }
            Phase::HalfOpen { .. } => Err(BreakerRejected {
                retry_after: Duration::ZERO,
            }),
            Phase::Open { .. } => unreachable!("an expired open phase was turned half-open above"),
        }
    }

    /// The call succeeded.
    pub fn record_success(&mut self, ticket: BreakerTicket, now: Instant) {
        self.record(ticket, true, now);
    }

    /// The call failed in a way that says the protected service is unhealthy.
    pub fn record_failure(&mut self, ticket: BreakerTicket, now: Instant) {
        self.record(ticket, false, now);
    }

    /// The call was cancelled before it had an outcome: frees a probe slot, judges nothing.
    pub fn record_abandoned(&mut self, ticket: BreakerTicket) {
        if ticket.generation != self.generation || !ticket.probe {
            return;
        }
        if let Phase::HalfOpen { probes_in_flight } = &mut self.phase {
            assert!(*probes_in_flight > 0, "probe released twice");
            *probes_in_flight -= 1;
        }
    }

    fn record(&mut self, ticket: BreakerTicket, success: bool, now: Instant) {
        if ticket.generation != self.generation {
            return; // Admitted in an earlier phase: its outcome describes the past.
        }
        match self.phase {
            Phase::Closed => {
                assert!(!ticket.probe, "a probe ticket while closed");
                self.count(success, now);
                let (failures, calls) = self.window_counts(now);
                if over_threshold(failures, calls, &self.config) {
                    self.open(now);
                }
            }
            Phase::HalfOpen { probes_in_flight } => {
                assert!(
                    ticket.probe && probes_in_flight > 0,
                    "a non-probe outcome in the half-open generation"
                );
                if success {
                    self.buckets.clear();
                    self.transition(Phase::Closed);
                } else {
                    self.open(now);
                }
            }
            Phase::Open { .. } => unreachable!("opening bumps the generation"),
        }
    }

    fn open(&mut self, now: Instant) {
        self.times_opened += 1;
        self.transition(Phase::Open {
            until: now + self.config.open_for,
        });
    }

    fn transition(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation += 1;
    }

    fn bucket_width(&self) -> Duration {
        self.config.window / BREAKER_WINDOW_BUCKETS as u32
    }

    fn in_window(&self, bucket: &Bucket, now: Instant) -> bool {
        bucket.start + self.config.window > now
    }

    fn count(&mut self, success: bool, now: Instant) {
        while let Some(oldest) = self.buckets.front() {
            if self.in_window(oldest, now) {
                break;
            }
            self.buckets.pop_front();
        }
        let width = self.bucket_width();
        let current = match self.buckets.back_mut() {
            Some(bucket) if now < bucket.start + width => bucket,
            _ => {
                self.buckets.push_back(Bucket {
                    start: now,
                    successes: 0,
                    failures: 0,
                });
                self.buckets.back_mut().expect("just pushed")
            }
        };
        if success {
            current.successes += 1;
        } else {
            current.failures += 1;
        }
        assert!(
            self.buckets.len() <= BREAKER_WINDOW_BUCKETS + 1,
            "breaker window grew past its bound"
        );
    }
}

#[cfg(test)]
mod tests {
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
        assert!(zero.validate().unwrap_err().to_string().contains("max_attempts"));
        let inverted = RetryPolicy {
            base_delay: ms(10),
            max_delay: ms(1),
            ..RetryPolicy::database()
        };
        assert!(inverted.validate().unwrap_err().to_string().contains("base_delay"));
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
}
