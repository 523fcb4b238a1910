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
mod tests;
