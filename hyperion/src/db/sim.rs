//! The simulated database node: an in-memory table with the versioned-write rule of the real
//! schema, behind a model of what makes a real database hurt — latency, a cap on connections,
//! injected errors, slowness, and outages (refusing or hanging).
//!
//! All time goes through the runtime facade and all randomness through one seeded RNG, so a
//! simulation seed replays it. One `SimDatabase` is shared (cloned) by every node of a simulated
//! cluster: like the real database, its connection cap is global, and the counters it exposes
//! (total queries, peak concurrent queries, refusals) are what the thundering-herd and cold-start
//! regressions assert on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::Semaphore;

use super::{apply_mutation, Database, DbError, Mutation, StoredEntry, StoredRow, WRITE_BATCH_MAX};
use crate::runtime;

/// How long a hanging database holds a query: far longer than any client timeout, and still
/// finite so a forgotten task ends.
const HANG: Duration = Duration::from_secs(3600);

/// The simulated database's behaviour; change it at any time with [`SimDatabase::set_config`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimDbConfig {
    /// Each query takes a uniform latency in `[latency_min, latency_max]`, times `slowdown`.
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// Latency multiplier (1.0 = normal; 50.0 = a database in trouble). At least 1.0.
    pub slowdown: f64,
    /// Fraction of queries that fail with an injected `Unavailable` (0.0–1.0). A failed write is
    /// applied first half the time: the acknowledgement was lost, as on a real network.
    pub error_rate: f64,
    /// How long a query waits for a connection beyond the cap before it is refused with
    /// `Exhausted` (zero: refused at once, as a server past `max_connections`).
    pub connection_wait: Duration,
    /// What creating a client's connection pool costs, paid by its first query (the 2025-01-08
    /// incident's 500 ms): a client that warms up at start pays it before serving.
    pub pool_create: Duration,
}

impl Default for SimDbConfig {
    fn default() -> Self {
        SimDbConfig {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(5),
            slowdown: 1.0,
            error_rate: 0.0,
            connection_wait: Duration::ZERO,
            pool_create: Duration::ZERO,
        }
    }
}

/// Whether the simulated database answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Up,
    /// Connections are refused at once (process down, port closed).
    Refusing,
    /// Queries never answer (partition, stuck disk): callers see their own timeouts.
    Hanging,
}

/// Counters the simulator asserts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimDbStats {
    /// Queries received (each method call is one).
    pub total_queries: u64,
    /// Queries holding a connection right now.
    pub in_flight: u64,
    /// Most queries ever holding a connection at once (never above the cap).
    pub peak_concurrent: u64,
    /// Queries refused because every connection was busy.
    pub refused_over_cap: u64,
    /// Queries failed by injection or outage.
    pub failed_injected: u64,
    pub loads: u64,
    pub writes: u64,
    pub rows_changed: u64,
}

struct SimState {
    config: SimDbConfig,
    availability: Availability,
    rows: BTreeMap<Vec<u8>, StoredRow>,
    migrated: bool,
    rng: ChaCha8Rng,
    stats: SimDbStats,
}

struct SimInner {
    state: Mutex<SimState>,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

/// The in-memory database (see the module docs). Cheap to clone; clones share everything,
/// including the client-side connection pool; [`SimDatabase::new_pool`] gives another client
/// (node) its own pool over the same database.
#[derive(Clone)]
pub struct SimDatabase {
    inner: Arc<SimInner>,
    /// When this handle's connection pool is (or will be) ready: set by the first query, which
    /// starts creating it (see [`SimDbConfig::pool_create`]); creation completes even if that
    /// query gives up, as a real pool's would.
    pool_ready_at: Arc<Mutex<Option<runtime::Instant>>>,
    /// This handle's pooled connections: a query holds one until the database has finished it,
    /// even if its caller gave up (the connection stays busy with it, as a real pooled
    /// connection does), so a pool never has more queries at the database than connections.
    pool: Arc<Semaphore>,
}

/// Keeps `in_flight` right however the query's execution ends.
struct InFlight {
    db: SimDatabase,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.db.state().stats.in_flight -= 1;
    }
}

impl SimDatabase {
    /// A database accepting at most `max_connections` concurrent queries, drawing latencies and
    /// faults from `rng` (seed it from the simulation seed). This handle's own pool is unbounded
    /// (every query asks the database for a connection); [`SimDatabase::new_pool`] bounds one.
    pub fn new(config: SimDbConfig, max_connections: usize, rng: ChaCha8Rng) -> SimDatabase {
        assert!(max_connections > 0, "a database needs a connection");
        validate(&config);
        SimDatabase {
            inner: Arc::new(SimInner {
                state: Mutex::new(SimState {
                    config,
                    availability: Availability::Up,
                    rows: BTreeMap::new(),
                    migrated: false,
                    rng,
                    stats: SimDbStats::default(),
                }),
                connections: Arc::new(Semaphore::new(max_connections)),
                max_connections,
            }),
            pool_ready_at: Arc::new(Mutex::new(None)),
            pool: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
        }
    }

    /// A handle over the same database with a connection pool of its own of `pool_size`
    /// connections, not yet created.
    pub fn new_pool(&self, pool_size: usize) -> SimDatabase {
        assert!(pool_size > 0, "a pool needs a connection");
        SimDatabase {
            inner: Arc::clone(&self.inner),
            pool_ready_at: Arc::new(Mutex::new(None)),
            pool: Arc::new(Semaphore::new(pool_size)),
        }
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // Plain data, updated in single statements: a panic elsewhere leaves it consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_config(&self, config: SimDbConfig) {
        validate(&config);
        self.state().config = config;
    }

    pub fn config(&self) -> SimDbConfig {
        self.state().config.clone()
    }

    pub fn set_availability(&self, availability: Availability) {
        self.state().availability = availability;
    }

    pub fn stats(&self) -> SimDbStats {
        self.state().stats
    }

    pub fn max_connections(&self) -> usize {
        self.inner.max_connections
    }

    /// The stored row for `key`, tombstones included (for checkers).
    pub fn row(&self, key: &[u8]) -> Option<StoredRow> {
        self.state().rows.get(key).cloned()
    }

    /// Number of stored rows, tombstones included.
    pub fn row_count(&self) -> usize {
        self.state().rows.len()
    }

    /// One query: availability, connection cap, latency, injected failure; then `apply` runs on
    /// the table (with `failed = true` when an injected error follows a lost acknowledgement).
    ///
    /// As on a real database, a query that holds a connection executes on the server whether or
    /// not its caller still waits: the execution runs in a task of its own, applies (or reads) at
    /// a seeded instant within its latency, and answers at the end of it. A caller that gives up
    /// early drops only the answer (the connection stays busy until the query is done), and an
    /// answer that was read before some later write is still the answer it gets if it waits.
    async fn query<T: Send + 'static>(
        &self,
        apply: impl FnOnce(&mut SimState) -> T + Send + 'static,
        applies_on_lost_ack: bool,
    ) -> Result<T, DbError> {
        let availability = {
            let mut state = self.state();
            state.stats.total_queries += 1;
            state.availability
        };
        match availability {
            Availability::Up => {}
            Availability::Refusing => {
                self.state().stats.failed_injected += 1;
                return Err(DbError::Unavailable(
                    "simulated database refuses connections".to_string(),
                ));
            }
            Availability::Hanging => {
                runtime::sleep(HANG).await;
                self.state().stats.failed_injected += 1;
                return Err(DbError::Unavailable("simulated database hung".to_string()));
            }
        }
        let pool_create = self.state().config.pool_create;
        let ready_at = *self
            .pool_ready_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| runtime::now() + pool_create);
        let now = runtime::now();
        if ready_at > now {
            runtime::sleep(ready_at - now).await;
        }
        // A pooled connection first (waiting for one that is still busy with an earlier query),
        // then the database's own connection slot.
        let pooled = Arc::clone(&self.pool)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let wait = self.state().config.connection_wait;
        let connections = Arc::clone(&self.inner.connections);
        let permit = match Arc::clone(&connections).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if wait.is_zero() => None,
            Err(_) => runtime::timeout(wait, connections.acquire_owned())
                .await
                .ok()
                .map(|acquired| acquired.expect("the semaphore is never closed")),
        };
        let Some(permit) = permit else {
            self.state().stats.refused_over_cap += 1;
            return Err(DbError::Exhausted(format!(
                "simulated database: all {} connections busy",
                self.inner.max_connections
            )));
        };
        let (latency, executes_after, fail, lost_ack) = {
            let mut state = self.state();
            state.stats.in_flight += 1;
            state.stats.peak_concurrent = state.stats.peak_concurrent.max(state.stats.in_flight);
            assert!(
                state.stats.in_flight <= self.inner.max_connections as u64,
                "more queries in flight than connections"
            );
            let config = state.config.clone();
            let unit: f64 = state.rng.random();
            let latency = (config.latency_min
                + (config.latency_max - config.latency_min).mul_f64(unit))
            .mul_f64(config.slowdown);
            let executes_after = latency.mul_f64(state.rng.random::<f64>());
            let fail = state.rng.random::<f64>() < config.error_rate;
            let lost_ack = state.rng.random_bool(0.5);
            let mut latency = latency;
            if crate::buggify!("slow_database") {
                latency += Duration::from_millis(runtime::buggify::draw(50, 500));
            }
            // The commit went through and the reply was lost: the caller sees an error.
            let (fail, lost_ack) = if applies_on_lost_ack && crate::buggify!("lost_database_reply")
            {
                (true, true)
            } else {
                (fail, lost_ack)
            };
            (latency, executes_after, fail, lost_ack)
        };
        let in_flight = InFlight { db: self.clone() };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let db = self.clone();
        runtime::spawn(async move {
            let _pooled = pooled;
            let _connection = permit;
            let _in_flight = in_flight;
            runtime::sleep(executes_after).await;
            let outcome = {
                let mut state = db.state();
                if fail {
                    state.stats.failed_injected += 1;
                    if applies_on_lost_ack && lost_ack {
                        apply(&mut state);
                    }
                    Err(DbError::Unavailable(
                        "simulated database: injected failure".to_string(),
                    ))
                } else {
                    Ok(apply(&mut state))
                }
            };
            runtime::sleep(latency - executes_after).await;
            let _ = answer.send(outcome);
        });
        answered.await.unwrap_or_else(|_| {
            Err(DbError::Unavailable(
                "simulated database: connection lost".to_string(),
            ))
        })
    }
}

fn validate(config: &SimDbConfig) {
    assert!(
        config.latency_min <= config.latency_max,
        "latency range inverted"
    );
    assert!(config.slowdown >= 1.0, "slowdown below 1");
    assert!(
        (0.0..=1.0).contains(&config.error_rate),
        "error rate outside [0, 1]"
    );
}

impl Database for SimDatabase {
    async fn migrate(&self) -> Result<(), DbError> {
        self.query(|state| state.migrated = true, true).await
    }

    async fn load(&self, key: &[u8]) -> Result<Option<StoredEntry>, DbError> {
        let key = key.to_vec();
        self.query(
            move |state| {
                state.stats.loads += 1;
                state.rows.get(&key).and_then(|row| row.entry(&key))
            },
            false,
        )
        .await
    }

    async fn write_batch(&self, mutations: &[Mutation]) -> Result<(), DbError> {
        if mutations.len() > WRITE_BATCH_MAX {
            return Err(DbError::Invalid(format!(
                "{} mutations in one batch; at most {WRITE_BATCH_MAX}",
                mutations.len()
            )));
        }
        let mutations = mutations.to_vec();
        self.query(
            move |state| {
                assert!(state.migrated, "write before migrate");
                state.stats.writes += 1;
                for mutation in &mutations {
                    if apply_mutation(&mut state.rows, mutation) {
                        state.stats.rows_changed += 1;
                    }
                }
            },
            true,
        )
        .await
    }

    async fn ping(&self) -> Result<(), DbError> {
        self.query(|_| (), false).await
    }

    async fn max_version(&self) -> Result<u64, DbError> {
        self.query(
            |state| {
                state
                    .rows
                    .values()
                    .map(|row| row.version)
                    .max()
                    .unwrap_or(0)
            },
            false,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn db(max_connections: usize) -> SimDatabase {
        SimDatabase::new(
            SimDbConfig::default(),
            max_connections,
            ChaCha8Rng::seed_from_u64(3),
        )
    }

    fn entry(key: &str, version: u64) -> StoredEntry {
        StoredEntry {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            version,
            ttl_ms: 0,
            created_at_ms: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stores_by_version_and_counts() {
        let db = db(4);
        db.migrate().await.unwrap();
        db.write_batch(&[
            Mutation::Upsert(entry("a", 2)),
            Mutation::Upsert(entry("a", 1)),
            Mutation::Delete {
                key: b"b".to_vec(),
                version: 1,
            },
        ])
        .await
        .unwrap();
        assert_eq!(db.load(b"a").await.unwrap().unwrap().version, 2);
        assert_eq!(db.load(b"b").await.unwrap(), None);
        assert!(db.row(b"b").unwrap().deleted);
        let stats = db.stats();
        assert_eq!((stats.total_queries, stats.loads, stats.writes), (4, 2, 1));
        assert_eq!(stats.rows_changed, 2);
        assert_eq!(stats.in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_cap_refuses_or_queues() {
        let db = db(2);
        let pings = (0..5).map(|_| db.ping());
        let results = futures::future::join_all(pings).await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 2);
        assert!(matches!(results[4], Err(DbError::Exhausted(_))));
        assert_eq!(db.stats().peak_concurrent, 2);
        assert_eq!(db.stats().refused_over_cap, 3);

        db.set_config(SimDbConfig {
            connection_wait: Duration::from_secs(1),
            ..SimDbConfig::default()
        });
        let results = futures::future::join_all((0..5).map(|_| db.ping())).await;
        assert!(results.iter().all(Result::is_ok), "queued within the wait");
        assert_eq!(db.stats().peak_concurrent, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn outages_refuse_fast_or_hang_until_the_callers_timeout() {
        let db = db(2);
        db.set_availability(Availability::Refusing);
        let start = runtime::now();
        assert!(matches!(db.ping().await, Err(DbError::Unavailable(_))));
        assert_eq!(runtime::now(), start, "refused at once");
        db.set_availability(Availability::Hanging);
        let timed_out = runtime::timeout(Duration::from_millis(100), db.ping()).await;
        assert!(timed_out.is_err());
        assert_eq!(db.stats().in_flight, 0);
        db.set_availability(Availability::Up);
        db.ping().await.unwrap();
    }
}
