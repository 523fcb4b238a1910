//! The database client: the protective logic every database call of a node goes through, the same
//! code against PostgreSQL/CockroachDB and against the simulated database.
//!
//! Per call: the circuit breaker is asked first (open: fail fast with [`DbError::CircuitOpen`],
//! nothing queues); then a per-node concurrency permit is taken and the query runs, both inside
//! the per-query timeout; the outcome is reported to the breaker (only unhealthy outcomes —
//! unavailable, timeout, exhausted — count as failures); retriable errors are retried with
//! jittered exponential backoff, bounded in attempts and total time. Loads are single-flight per
//! key: concurrent misses for one key make one query and share its outcome.
//!
//! [`DbClient::connect_and_warm`] is the 2025-01-08 lesson: the connection is proven and the
//! schema migrated before the node serves, within a bounded time, so no client request ever pays
//! for (or times out on) pool creation.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::Semaphore;

use super::{Database, DbError, Mutation, StoredEntry, WRITE_BATCH_MAX};
use crate::resilience::{
    retry_with_backoff, BreakerConfig, BreakerState, BreakerTicket, CircuitBreaker, RetryPolicy,
};
use crate::runtime;
use crate::single_flight::{JoinRule, Joined, SingleFlight};
use crate::timing::Timer;

/// What a node does when the database cannot be reached at start
/// (`HYPERION_DB_START_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbStartMode {
    /// Exit with a clear error (the default: a cache without its system of record loses writes).
    Require,
    /// Serve cache-only, report the database as down in health, and keep trying.
    Degraded,
}

/// The client's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbClientConfig {
    /// Most database calls in flight from this node (the pool size).
    pub max_concurrent_queries: usize,
    /// Bound on one attempt: waiting for a permit plus the query.
    pub query_timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerConfig,
    /// Bound on warm-up: proving a connection and migrating the schema.
    pub warmup_timeout: Duration,
    /// Concurrent loads of one key share one query (single-flight). Off only to replay the
    /// 2024-10-15 herd.
    pub coalesce_loads: bool,
    /// Which in-flight load a load may join ([`JoinRule::AnyFlight`] only as fault injection).
    pub join_rule: JoinRule,
}

impl Default for DbClientConfig {
    fn default() -> Self {
        DbClientConfig {
            max_concurrent_queries: 16,
            query_timeout: Duration::from_secs(2),
            retry: RetryPolicy::database(),
            breaker: BreakerConfig::product(),
            warmup_timeout: Duration::from_secs(10),
            coalesce_loads: true,
            join_rule: JoinRule::CoveringReadPoint,
        }
    }
}

/// A snapshot of the client's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbMetrics {
    /// `load` calls.
    pub loads: u64,
    /// Loads that joined another caller's in-flight query for the same key.
    pub loads_coalesced: u64,
    /// `write_batch` calls and the mutations they carried.
    pub write_batches: u64,
    pub rows_written: u64,
    /// Attempts sent to the database (first tries and retries).
    pub attempts: u64,
    pub retries: u64,
    /// Attempts that failed (any error), and those that hit the per-query timeout.
    pub attempt_failures: u64,
    pub timeouts: u64,
    /// Calls refused by the open breaker.
    pub breaker_rejections: u64,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Attempts in flight now (holding a permit or waiting for one).
    pub in_flight: u64,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: u8,
}

/// Where each query attempt's duration is recorded, by its result (the results of
/// `hyperion_db_queries`). Attempts the open breaker refused never reached the database and are
/// not timed.
#[derive(Debug, Clone, Default)]
pub struct QueryTimers {
    pub ok: Timer,
    pub error: Timer,
    pub timeout: Timer,
}

#[derive(Default)]
struct Counters {
    loads: AtomicU64,
    loads_coalesced: AtomicU64,
    write_batches: AtomicU64,
    rows_written: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    attempt_failures: AtomicU64,
    timeouts: AtomicU64,
    breaker_rejections: AtomicU64,
    in_flight: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

type LoadOutcome = Result<Option<StoredEntry>, DbError>;

struct Inner<D> {
    db: D,
    config: DbClientConfig,
    permits: Semaphore,
    breaker: Mutex<CircuitBreaker>,
    /// Seeds each call's own retry RNG, so a call never holds this lock across an await.
    rng: Mutex<ChaCha8Rng>,
    flights: SingleFlight<Vec<u8>, LoadOutcome>,
    counters: Counters,
    /// Off until the node's registry hands its timers ([`DbClient::time_queries`]).
    query_timers: Mutex<QueryTimers>,
}

/// The database client (see the module docs). Cheap to clone; clones share everything.
pub struct DbClient<D> {
    inner: Arc<Inner<D>>,
}

impl<D> Clone for DbClient<D> {
    fn clone(&self) -> Self {
        DbClient {
            inner: self.inner.clone(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded value is updated in single steps that cannot panic half-way.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Reports a breaker ticket exactly once; a call cancelled mid-way (its future dropped) releases
/// its probe slot instead of leaving the breaker half-open forever.
struct TicketGuard<'a> {
    breaker: &'a Mutex<CircuitBreaker>,
    ticket: Option<BreakerTicket>,
}

impl TicketGuard<'_> {
    fn report(mut self, health_failure: bool) {
        let ticket = self.ticket.take().expect("reported once");
        let now = runtime::now();
        let mut breaker = lock(self.breaker);
        if health_failure {
            breaker.record_failure(ticket, now);
        } else {
            breaker.record_success(ticket, now);
        }
    }
}

impl Drop for TicketGuard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            lock(self.breaker).record_abandoned(ticket);
        }
    }
}

struct InFlightGuard<'a>(&'a AtomicU64);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<D: Database> DbClient<D> {
    /// Builds the client without touching the database. Prefer [`DbClient::connect_and_warm`]
    /// for a serving node; this is for degraded starts and tests.
    pub fn new(db: D, config: DbClientConfig, rng: ChaCha8Rng) -> DbClient<D> {
        assert!(
            config.max_concurrent_queries > 0,
            "a pool needs a connection"
        );
        if let Err(problem) = config.retry.validate() {
            panic!("invalid retry policy: {problem}");
        }
        DbClient {
            inner: Arc::new(Inner {
                permits: Semaphore::new(config.max_concurrent_queries),
                breaker: Mutex::new(CircuitBreaker::new(config.breaker)),
                flights: SingleFlight::new(config.join_rule),
                db,
                config,
                rng: Mutex::new(rng),
                counters: Counters::default(),
                query_timers: Mutex::new(QueryTimers::default()),
            }),
        }
    }

    /// Builds the client, proves a working connection and migrates the schema, all within
    /// `warmup_timeout`, retrying with backoff meanwhile. On failure the error says how long it
    /// tried and the last database error; the caller exits or starts degraded ([`DbStartMode`]).
    pub async fn connect_and_warm(
        db: D,
        config: DbClientConfig,
        rng: ChaCha8Rng,
    ) -> Result<DbClient<D>, DbError> {
        let client = DbClient::new(db, config, rng);
        client.warm_up().await?;
        Ok(client)
    }

    /// Proves a connection and migrates, within `warmup_timeout` (see `connect_and_warm`); also
    /// the way a degraded node retries later. The breaker is bypassed: warm-up is the probe.
    pub async fn warm_up(&self) -> Result<(), DbError> {
        let started = runtime::now();
        let budget = self.inner.config.warmup_timeout;
        let policy = RetryPolicy {
            max_attempts: crate::resilience::RETRY_ATTEMPTS_MAX,
            max_total: budget,
            ..self.inner.config.retry
        };
        let last_error = Mutex::new(None);
        let mut rng = self.call_rng();
        let (this, last_error_ref) = (self, &last_error);
        let attempt = move || async move {
            let db = &this.inner.db;
            let outcome = match runtime::timeout(this.inner.config.query_timeout, async {
                db.ping().await?;
                db.migrate().await
            })
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Err(DbError::Timeout {
                    timeout_ms: millis(this.inner.config.query_timeout),
                }),
            };
            if let Err(error) = &outcome {
                *lock(last_error_ref) = Some(error.clone());
            }
            outcome
        };
        let warmed = runtime::timeout(
            budget,
            retry_with_backoff(&policy, &mut rng, DbError::is_retriable, attempt),
        )
        .await;
        let last = lock(&last_error).take();
        match warmed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(
                error @ (DbError::Config(_) | DbError::Rejected { .. } | DbError::Invalid(_)),
            )) => Err(error),
            Ok(Err(error)) => Err(DbError::Warmup {
                elapsed_ms: millis(runtime::now().saturating_duration_since(started)),
                last: Box::new(error),
            }),
            Err(_) => Err(DbError::Warmup {
                elapsed_ms: millis(runtime::now().saturating_duration_since(started)),
                last: Box::new(last.unwrap_or(DbError::Timeout {
                    timeout_ms: millis(budget),
                })),
            }),
        }
    }

    /// The live entry for `key` (see [`Database::load`]), single-flight per key: a load joins
    /// another caller's query only if that query was issued at a read point (a log position,
    /// see [`crate::single_flight`]) at or after `read_point`. A query whose callers all gave up
    /// is cancelled, releasing its permit.
    pub async fn load(&self, key: &[u8], read_point: u64) -> LoadOutcome {
        bump(&self.inner.counters.loads);
        if !self.inner.config.coalesce_loads {
            return self.with_retries(|| self.inner.db.load(key)).await;
        }
        let client = self.clone();
        let owned_key = key.to_vec();
        let (load, joined) =
            self.inner
                .flights
                .run(&owned_key.clone(), read_point, move |_| async move {
                    client
                        .with_retries(|| client.inner.db.load(&owned_key))
                        .await
                });
        if joined == Joined::Joined {
            bump(&self.inner.counters.loads_coalesced);
        }
        load.await
    }

    /// Writes the mutations (see [`Database::write_batch`]); retried as a whole, which the
    /// versioned-write rule makes safe.
    pub async fn write_batch(&self, mutations: &[Mutation]) -> Result<(), DbError> {
        if mutations.len() > WRITE_BATCH_MAX {
            return Err(DbError::Invalid(format!(
                "{} mutations in one batch; at most {WRITE_BATCH_MAX}",
                mutations.len()
            )));
        }
        bump(&self.inner.counters.write_batches);
        self.with_retries(|| self.inner.db.write_batch(mutations))
            .await?;
        self.inner
            .counters
            .rows_written
            .fetch_add(mutations.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The highest version stored (see [`Database::max_version`]), with retries.
    pub async fn max_version(&self) -> Result<u64, DbError> {
        self.with_retries(|| self.inner.db.max_version()).await
    }

    /// One round trip through the breaker, the cap and the timeout (no retry): health checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.attempt(self.inner.db.ping()).await
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        lock(&self.inner.breaker).state(runtime::now())
    }

    pub fn metrics(&self) -> DbMetrics {
        let c = &self.inner.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (breaker_opened, breaker_state) = {
            let breaker = lock(&self.inner.breaker);
            (
                breaker.times_opened(),
                breaker.state(runtime::now()).as_metric(),
            )
        };
        DbMetrics {
            loads: read(&c.loads),
            loads_coalesced: read(&c.loads_coalesced),
            write_batches: read(&c.write_batches),
            rows_written: read(&c.rows_written),
            attempts: read(&c.attempts),
            retries: read(&c.retries),
            attempt_failures: read(&c.attempt_failures),
            timeouts: read(&c.timeouts),
            breaker_rejections: read(&c.breaker_rejections),
            breaker_opened,
            in_flight: read(&c.in_flight),
            breaker_state,
        }
    }

    /// The database behind the client (the simulator reads its counters).
    pub fn database(&self) -> &D {
        &self.inner.db
    }

    pub fn config(&self) -> &DbClientConfig {
        &self.inner.config
    }

    /// Times every query attempt from now on into `timers`. A node restarted on the same client
    /// hands the timers of its new registry, which replace the old ones.
    pub fn time_queries(&self, timers: QueryTimers) {
        *lock(&self.inner.query_timers) = timers;
    }

    fn call_rng(&self) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(lock(&self.inner.rng).next_u64())
    }

    async fn with_retries<T, F, Fut>(&self, mut op: F) -> Result<T, DbError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        let mut rng = self.call_rng();
        let mut first = true;
        retry_with_backoff(
            &self.inner.config.retry,
            &mut rng,
            DbError::is_retriable,
            || {
                if !std::mem::take(&mut first) {
                    bump(&self.inner.counters.retries);
                }
                // Futures are lazy: the query starts only if the breaker admits the attempt.
                self.attempt(op())
            },
        )
        .await
    }

    /// One attempt: breaker, then permit and query under the per-query timeout. `query` is not
    /// polled unless the breaker admits the attempt.
    async fn attempt<T>(
        &self,
        query: impl Future<Output = Result<T, DbError>>,
    ) -> Result<T, DbError> {
        let inner = &*self.inner;
        let ticket = match lock(&inner.breaker).try_acquire(runtime::now()) {
            Ok(ticket) => ticket,
            Err(rejected) => {
                bump(&inner.counters.breaker_rejections);
                return Err(DbError::CircuitOpen {
                    retry_after_ms: millis(rejected.retry_after),
                });
            }
        };
        let guard = TicketGuard {
            breaker: &inner.breaker,
            ticket: Some(ticket),
        };
        bump(&inner.counters.attempts);
        inner.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlightGuard(&inner.counters.in_flight);
        let timers = lock(&inner.query_timers).clone();
        // The three timers are on or off together.
        let started = timers.ok.start();
        let timeout = inner.config.query_timeout;
        let mut timed_out = false;
        let outcome = match runtime::timeout(timeout, async {
            let _permit = inner
                .permits
                .acquire()
                .await
                .expect("the semaphore is never closed");
            query.await
        })
        .await
        {
            Ok(outcome) => outcome,
            Err(_) => {
                bump(&inner.counters.timeouts);
                timed_out = true;
                Err(DbError::Timeout {
                    timeout_ms: millis(timeout),
                })
            }
        };
        if outcome.is_err() {
            bump(&inner.counters.attempt_failures);
        }
        let timer = match (&outcome, timed_out) {
            (_, true) => &timers.timeout,
            (Ok(_), false) => &timers.ok,
            (Err(_), false) => &timers.error,
        };
        timer.stop(started);
        guard.report(outcome.as_ref().is_err_and(DbError::is_health_failure));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Availability, SimDatabase, SimDbConfig, StoredRow};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sim(max_connections: usize) -> SimDatabase {
        SimDatabase::new(
            SimDbConfig {
                latency_min: ms(2),
                latency_max: ms(4),
                ..SimDbConfig::default()
            },
            max_connections,
            ChaCha8Rng::seed_from_u64(11),
        )
    }

    fn config() -> DbClientConfig {
        DbClientConfig {
            max_concurrent_queries: 4,
            query_timeout: ms(100),
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: ms(10),
                max_delay: ms(100),
                max_total: ms(500),
                jitter: crate::resilience::Jitter::Full,
            },
            breaker: BreakerConfig {
                failure_percent: 50,
                window: ms(1000),
                min_calls: 6,
                open_for: ms(500),
                half_open_probes: 1,
            },
            warmup_timeout: ms(2000),
            coalesce_loads: true,
            join_rule: JoinRule::CoveringReadPoint,
        }
    }

    fn entry(key: &[u8], version: u64) -> StoredEntry {
        StoredEntry {
            key: key.to_vec(),
            value: b"value".to_vec(),
            version,
            ttl_ms: 60_000,
            created_at_ms: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn warm_up_migrates_and_then_serves() {
        let client = DbClient::connect_and_warm(sim(8), config(), ChaCha8Rng::seed_from_u64(1))
            .await
            .unwrap();
        client
            .write_batch(&[Mutation::Upsert(entry(b"k", 3))])
            .await
            .unwrap();
        assert_eq!(client.load(b"k", 0).await.unwrap().unwrap().version, 3);
        assert_eq!(client.load(b"none", 0).await.unwrap(), None);
        let m = client.metrics();
        assert_eq!((m.loads, m.write_batches, m.rows_written), (2, 1, 1));
        assert_eq!(m.in_flight, 0);
        assert_eq!(m.breaker_state, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn warm_up_against_a_dead_database_fails_within_its_budget() {
        let db = sim(8);
        db.set_availability(Availability::Hanging);
        let start = runtime::now();
        let error = DbClient::connect_and_warm(db.clone(), config(), ChaCha8Rng::seed_from_u64(1))
            .await
            .err()
            .expect("warm-up must fail");
        let elapsed = runtime::now() - start;
        assert!(elapsed < ms(2005), "bounded by warmup_timeout: {elapsed:?}");
        assert!(matches!(error, DbError::Warmup { .. }), "{error}");
        assert!(
            error.to_string().contains("unreachable at start"),
            "{error}"
        );

        db.set_availability(Availability::Refusing);
        let error = DbClient::connect_and_warm(db, config(), ChaCha8Rng::seed_from_u64(1))
            .await
            .err()
            .expect("warm-up must fail");
        assert!(error.to_string().contains("refuses connections"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_on_one_key_make_one_query() {
        let db = sim(8);
        let client = DbClient::connect_and_warm(db.clone(), config(), ChaCha8Rng::seed_from_u64(1))
            .await
            .unwrap();
        client
            .write_batch(&[Mutation::Upsert(entry(b"hot", 9))])
            .await
            .unwrap();
        let before = db.stats().loads;
        let loads = (0..100).map(|_| client.load(b"hot", 0));
        let results = futures::future::join_all(loads).await;
        assert!(results
            .iter()
            .all(|r| r.as_ref().unwrap().as_ref().unwrap().version == 9));
        assert_eq!(db.stats().loads - before, 1, "one query for 100 misses");
        assert_eq!(client.metrics().loads_coalesced, 99);
        // A later miss queries again (no stale flight left behind).
        client.load(b"hot", 0).await.unwrap();
        assert_eq!(db.stats().loads - before, 2);
    }

    /// The 2026-12-01 hole at the client: a load whose caller gave up is cancelled (its permit
    /// released), and a load at a later read point never receives an older load's row. The
    /// pre-fix rule (`JoinRule::AnyFlight`) is shown to fail the same steps.
    #[tokio::test(start_paused = true)]
    async fn an_abandoned_load_is_cancelled_and_never_answers_a_later_read_point() {
        for rule in [JoinRule::CoveringReadPoint, JoinRule::AnyFlight] {
            let db = sim(8);
            let client = DbClient::connect_and_warm(
                db.clone(),
                DbClientConfig {
                    join_rule: rule,
                    ..config()
                },
                ChaCha8Rng::seed_from_u64(1),
            )
            .await
            .unwrap();
            client
                .write_batch(&[Mutation::Upsert(entry(b"k", 1))])
                .await
                .unwrap();
            db.set_config(SimDbConfig {
                latency_min: ms(60),
                latency_max: ms(80),
                ..db.config()
            });
            let abandoned = runtime::timeout(ms(10), client.load(b"k", 5)).await;
            assert!(abandoned.is_err(), "the caller gave up");
            if rule == JoinRule::CoveringReadPoint {
                assert_eq!(client.metrics().in_flight, 0, "its permit was released");
            }
            // The abandoned query has read version 1 by now; the row then changes.
            runtime::sleep(ms(100)).await;
            client
                .write_batch(&[Mutation::Upsert(entry(b"k", 2))])
                .await
                .unwrap();
            let later = client.load(b"k", 6).await.unwrap().unwrap();
            match rule {
                JoinRule::CoveringReadPoint => {
                    assert_eq!(later.version, 2, "a fresh query at the later read point")
                }
                JoinRule::AnyFlight => {
                    assert_eq!(later.version, 1, "the pre-fix rule serves the old row")
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_bounds_concurrent_queries_per_node() {
        let db = sim(64);
        let client = DbClient::connect_and_warm(db.clone(), config(), ChaCha8Rng::seed_from_u64(1))
            .await
            .unwrap();
        let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("k{i}").into_bytes()).collect();
        let results = futures::future::join_all(keys.iter().map(|k| client.load(k, 0))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            db.stats().peak_concurrent,
            4,
            "capped at max_concurrent_queries"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn query_attempts_are_timed_by_result_only_when_recording() {
        for recording in [true, false] {
            let db = sim(8);
            let client =
                DbClient::connect_and_warm(db.clone(), config(), ChaCha8Rng::seed_from_u64(1))
                    .await
                    .unwrap();
            let metrics = crate::metrics::Metrics::new(recording);
            client.time_queries(metrics.query_timers());
            assert_eq!(client.load(b"k", 0).await.unwrap(), None);
            db.set_availability(Availability::Hanging);
            client.load(b"x", 0).await.unwrap_err();
            let text = metrics.encode(&crate::metrics::NodeSample::default());
            let count = |result: &str| -> Option<u64> {
                let prefix =
                    format!("hyperion_db_query_duration_seconds_count{{result=\"{result}\"}} ");
                text.lines()
                    .find_map(|line| line.strip_prefix(&prefix))
                    .map(|n| n.parse().unwrap())
            };
            if recording {
                assert_eq!(count("ok"), Some(1), "{text}");
                assert_eq!(count("error"), Some(0), "{text}");
                assert!(count("timeout") >= Some(1), "{text}");
            } else {
                assert_eq!(count("ok"), None, "{text}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_on_outage_fails_fast_and_closes_after_recovery() {
        let db = sim(8);
        let client = DbClient::connect_and_warm(db.clone(), config(), ChaCha8Rng::seed_from_u64(1))
            .await
            .unwrap();
        db.set_availability(Availability::Hanging);
        let mut open_after = None;
        for i in 0..20 {
            let error = client
                .load(format!("k{i}").as_bytes(), 0)
                .await
                .unwrap_err();
            if matches!(error, DbError::CircuitOpen { .. }) {
                open_after = Some(i);
                break;
            }
        }
        assert!(open_after.is_some(), "the breaker opened");
        assert_eq!(client.breaker_state(), BreakerState::Open);
        // While open: no query reaches the database, and the answer is immediate.
        let queries = db.stats().total_queries;
        let start = runtime::now();
        let error = client.load(b"x", 0).await.unwrap_err();
        assert!(matches!(error, DbError::CircuitOpen { .. }), "{error}");
        assert_eq!(runtime::now(), start, "failed fast");
        assert_eq!(db.stats().total_queries, queries);

        db.set_availability(Availability::Up);
        runtime::sleep(ms(500)).await;
        assert_eq!(client.breaker_state(), BreakerState::HalfOpen);
        assert_eq!(client.load(b"x", 0).await.unwrap(), None, "probe succeeded");
        assert_eq!(client.breaker_state(), BreakerState::Closed);
        assert!(client.metrics().breaker_opened >= 1);
        assert!(client.metrics().breaker_rejections >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_and_writes_stay_idempotent() {
        let db = sim(8);
        let mut config = config();
        config.breaker.min_calls = 1_000; // Retries alone, no breaker.
        let client = DbClient::connect_and_warm(db.clone(), config, ChaCha8Rng::seed_from_u64(5))
            .await
            .unwrap();
        db.set_config(SimDbConfig {
            error_rate: 0.3,
            ..db.config()
        });
        let (mut ok, mut last_ok) = (0, 0);
        for version in 1..=40 {
            let batch = [Mutation::Upsert(entry(b"k", version))];
            if client.write_batch(&batch).await.is_ok() {
                ok += 1;
                last_ok = version;
            }
        }
        let m = client.metrics();
        assert!(m.retries > 0, "{m:?}");
        assert!(
            ok >= 35,
            "most writes succeed with 3 attempts at 30 % errors: {ok}"
        );
        let row: StoredRow = db.row(b"k").unwrap();
        assert!(row.version >= last_ok, "never regressed: {row:?}");
    }
}
