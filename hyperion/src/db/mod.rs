//! The system of record: a PostgreSQL-wire database (CockroachDB in production, PostgreSQL in
//! tests) behind the cache.
//!
//! - [`Database`]: what the node needs from the database — schema migration, a point load, an
//!   idempotent batch write, a ping. Two implementations: [`PgDatabase`] (tokio-postgres, real
//!   network, production and integration tests) and [`SimDatabase`] (in memory, latency,
//!   connection cap, faults; for the simulator).
//! - [`DbClient`]: the same protective logic in front of either — per-node concurrency cap,
//!   eager warm-up, retries with jittered backoff, circuit breaker, per-key single-flight loads,
//!   metrics.
//!
//! # Versioned writes (the idempotence contract)
//!
//! Every row carries the version of the write that produced it (per key, strictly increasing:
//! the Raft log index). A mutation at version `v` applies only if the stored row's version is
//! below `v`, so replaying a batch, reordering batches, or a new leader re-sending what the old
//! one already wrote never moves a row backwards. Deletes write a *tombstone*: a row with
//! `deleted = true` at the delete's version. The tombstone is what stops an older upsert that
//! arrives after the delete from resurrecting the entry; a load treats it as absent.
//! Within one batch only the highest version per key matters ([`coalesce`]); at equal versions
//! the stored row (or the earlier mutation) wins, so an exact replay is a no-op.
//! Tombstones are kept (one small row per deleted key); purging them is safe only below a version
//! no in-flight write can be older than, which the write-behind owner knows (not done here).
//!
//! The SQL runs unchanged on PostgreSQL and CockroachDB: `INSERT .. ON CONFLICT .. DO UPDATE ..
//! WHERE`, multi-array `UNNEST`, `BYTEA`/`INT8`/`BOOL`/`TEXT`, `CREATE TABLE IF NOT EXISTS`.

use std::collections::BTreeMap;
use std::future::Future;

mod client;
mod pg;
mod record;
mod sim;

pub use client::{DbClient, DbClientConfig, DbMetrics, DbStartMode, QueryTimers};
pub use pg::{parse_dsn, PgDatabase, PgSettings, TlsMode};
pub use record::SystemOfRecord;
pub use sim::{Availability, SimDatabase, SimDbConfig, SimDbStats};

/// The schema version this build writes; `migrate` refuses a database migrated by a newer build.
pub const SCHEMA_VERSION: i64 = 1;

/// One entry as stored in the system of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The write's version (per key, strictly increasing; < 2^63).
    pub version: u64,
    /// Time to live in ms from `created_at_ms`; 0 = never expires.
    pub ttl_ms: u64,
    /// Cluster time of the write, ms since the Unix epoch.
    pub created_at_ms: u64,
}

/// One change to the system of record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Insert or replace the row, unless the stored version is at least `entry.version`.
    Upsert(StoredEntry),
    /// Mark the key deleted at `version` (a tombstone), unless the stored version is at least
    /// `version`.
    Delete { key: Vec<u8>, version: u64 },
}

impl Mutation {
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Upsert(entry) => &entry.key,
            Mutation::Delete { key, .. } => key,
        }
    }

    pub fn version(&self) -> u64 {
        match self {
            Mutation::Upsert(entry) => entry.version,
            Mutation::Delete { version, .. } => *version,
        }
    }
}

/// Most mutations in one `write_batch` call: one statement, bounded size on the wire.
pub const WRITE_BATCH_MAX: usize = 1_000;

/// A stored row: a live entry or a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub value: Vec<u8>,
    pub version: u64,
    pub ttl_ms: u64,
    pub created_at_ms: u64,
    pub deleted: bool,
}

impl StoredRow {
    fn of(mutation: &Mutation) -> StoredRow {
        match mutation {
            Mutation::Upsert(entry) => StoredRow {
                value: entry.value.clone(),
                version: entry.version,
                ttl_ms: entry.ttl_ms,
                created_at_ms: entry.created_at_ms,
                deleted: false,
            },
            Mutation::Delete { version, .. } => StoredRow {
                value: Vec::new(),
                version: *version,
                ttl_ms: 0,
                created_at_ms: 0,
                deleted: true,
            },
        }
    }

    /// The entry a load returns for this row (`None` for a tombstone).
    pub fn entry(&self, key: &[u8]) -> Option<StoredEntry> {
        (!self.deleted).then(|| StoredEntry {
            key: key.to_vec(),
            value: self.value.clone(),
            version: self.version,
            ttl_ms: self.ttl_ms,
            created_at_ms: self.created_at_ms,
        })
    }
}

/// Applies one mutation to an in-memory table by the versioned-write rule (the reference the SQL
/// implements; [`SimDatabase`] uses it). Returns whether the row changed.
pub fn apply_mutation(rows: &mut BTreeMap<Vec<u8>, StoredRow>, mutation: &Mutation) -> bool {
    match rows.get(mutation.key()) {
        Some(stored) if stored.version >= mutation.version() => false,
        _ => {
            rows.insert(mutation.key().to_vec(), StoredRow::of(mutation));
            true
        }
    }
}

/// The mutations of a batch that can change anything: per key the one with the highest version
/// (the first of equals), in key order. Applying these equals applying the whole batch in order,
/// and a single `INSERT .. ON CONFLICT` may not touch a row twice.
pub fn coalesce(mutations: &[Mutation]) -> Vec<&Mutation> {
    let mut newest: BTreeMap<&[u8], &Mutation> = BTreeMap::new();
    for mutation in mutations {
        match newest.get(mutation.key()) {
            Some(kept) if kept.version() >= mutation.version() => {}
            _ => {
                newest.insert(mutation.key(), mutation);
            }
        }
    }
    newest.into_values().collect()
}

/// Why a database call failed. `Clone` so single-flight waiters can share one outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// Cannot reach the database, or the connection broke (retriable; counts against the breaker).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The call took longer than the per-query timeout (retriable; counts against the breaker).
    #[error("database call timed out after {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The database or the pool has no connection to give (retriable; counts against the breaker).
    #[error("database connections exhausted: {0}")]
    Exhausted(String),
    /// A transaction conflict the database asks us to retry: CockroachDB's 40001 restart, a
    /// deadlock (retriable; the database is healthy, so the breaker is not told).
    #[error("transaction conflict (SQLSTATE {code}), retriable: {message}")]
    Conflict { code: String, message: String },
    /// The database refused the statement (a bug or a schema problem; not retried).
    #[error("database rejected the statement (SQLSTATE {code}): {message}")]
    Rejected { code: String, message: String },
    /// The circuit breaker is open: the call was not attempted.
    #[error("database circuit breaker open; calls fail fast for another {retry_after_ms} ms")]
    CircuitOpen { retry_after_ms: u64 },
    /// A value cannot be stored or a stored value cannot be read back (not retried).
    #[error("invalid data: {0}")]
    Invalid(String),
    /// The configuration (DSN, TLS, password file) is unusable (fatal at start).
    #[error("database configuration: {0}")]
    Config(String),
    /// Warm-up could not prove a connection in time (the node exits or starts degraded).
    #[error("database unreachable at start: no working connection within {elapsed_ms} ms; last error: {last}")]
    Warmup { elapsed_ms: u64, last: Box<DbError> },
}

impl DbError {
    /// Worth another attempt.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            DbError::Unavailable(_)
                | DbError::Timeout { .. }
                | DbError::Exhausted(_)
                | DbError::Conflict { .. }
        )
    }

    /// Says the database (or the path to it) is unhealthy: feeds the circuit breaker.
    pub fn is_health_failure(&self) -> bool {
        matches!(
            self,
            DbError::Unavailable(_) | DbError::Timeout { .. } | DbError::Exhausted(_)
        )
    }
}

/// Maps a SQLSTATE to an error class. 40001 (serialization failure: CockroachDB's "restart
/// transaction") and 40P01 (deadlock) are conflicts; class 08 and the shutdown codes are
/// unavailability; class 53 (53300 too many connections) is exhaustion; the rest is rejection.
pub fn classify_sqlstate(code: &str, message: String) -> DbError {
    match code {
        "40001" | "40P01" => DbError::Conflict {
            code: code.to_string(),
            message,
        },
        "57P01" | "57P02" | "57P03" => DbError::Unavailable(format!("SQLSTATE {code}: {message}")),
        _ if code.starts_with("08") => DbError::Unavailable(format!("SQLSTATE {code}: {message}")),
        _ if code.starts_with("53") => DbError::Exhausted(format!("SQLSTATE {code}: {message}")),
        _ => DbError::Rejected {
            code: code.to_string(),
            message,
        },
    }
}

/// The system of record. Implementations hold their own connections; every method is one
/// attempt (retries, timeouts and the breaker belong to [`DbClient`]).
pub trait Database: Send + Sync + 'static {
    /// Creates or upgrades the schema; idempotent, safe to run concurrently from several nodes.
    fn migrate(&self) -> impl Future<Output = Result<(), DbError>> + Send;
    /// The live entry stored for `key`, if any (tombstones read as `None`). Expiry is the
    /// caller's to judge, from `created_at_ms + ttl_ms` in cluster time.
    fn load(&self, key: &[u8])
        -> impl Future<Output = Result<Option<StoredEntry>, DbError>> + Send;
    /// Applies the mutations atomically by the versioned-write rule (see the module docs).
    /// At most [`WRITE_BATCH_MAX`] mutations.
    fn write_batch(
        &self,
        mutations: &[Mutation],
    ) -> impl Future<Output = Result<(), DbError>> + Send;
    /// Proves a working connection with a trivial round trip.
    fn ping(&self) -> impl Future<Output = Result<(), DbError>> + Send;
    /// The highest version stored (tombstones included; 0 when empty). A cluster bootstrapping
    /// with empty state starts its versions above it, so its writes are never older than rows
    /// a previous cluster wrote.
    fn max_version(&self) -> impl Future<Output = Result<u64, DbError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(key: &str, version: u64, value: &str) -> Mutation {
        Mutation::Upsert(StoredEntry {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            version,
            ttl_ms: 0,
            created_at_ms: 1,
        })
    }

    fn delete(key: &str, version: u64) -> Mutation {
        Mutation::Delete {
            key: key.as_bytes().to_vec(),
            version,
        }
    }

    fn live(rows: &BTreeMap<Vec<u8>, StoredRow>, key: &str) -> Option<(u64, String)> {
        rows.get(key.as_bytes())
            .and_then(|r| r.entry(key.as_bytes()))
            .map(|e| (e.version, String::from_utf8(e.value).unwrap()))
    }

    #[test]
    fn versions_never_regress_and_tombstones_block_resurrection() {
        let mut rows = BTreeMap::new();
        assert!(apply_mutation(&mut rows, &upsert("k", 5, "five")));
        assert!(!apply_mutation(&mut rows, &upsert("k", 4, "four")), "older");
        assert!(
            !apply_mutation(&mut rows, &upsert("k", 5, "again")),
            "replay"
        );
        assert_eq!(live(&rows, "k"), Some((5, "five".into())));
        assert!(!apply_mutation(&mut rows, &delete("k", 3)), "older delete");
        assert!(apply_mutation(&mut rows, &delete("k", 7)));
        assert_eq!(live(&rows, "k"), None);
        assert!(
            !apply_mutation(&mut rows, &upsert("k", 6, "late")),
            "no resurrection"
        );
        assert!(apply_mutation(&mut rows, &upsert("k", 8, "eight")));
        assert_eq!(live(&rows, "k"), Some((8, "eight".into())));
    }

    /// Property: applying the coalesced batch equals applying the batch in order, from any start.
    #[test]
    fn coalesce_is_equivalent_to_sequential_application() {
        use rand::{Rng, SeedableRng};
        for seed in 0..300 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut start = BTreeMap::new();
            for _ in 0..rng.random_range(0..4) {
                let m = upsert(
                    ["a", "b", "c"][rng.random_range(0..3)],
                    rng.random_range(1..10),
                    "s",
                );
                apply_mutation(&mut start, &m);
            }
            let batch: Vec<Mutation> = (0..rng.random_range(0..12))
                .map(|i| {
                    let key = ["a", "b", "c"][rng.random_range(0..3)];
                    let version = rng.random_range(1..10);
                    if rng.random_bool(0.3) {
                        delete(key, version)
                    } else {
                        upsert(key, version, &format!("v{i}"))
                    }
                })
                .collect();
            let mut sequential = start.clone();
            for m in &batch {
                apply_mutation(&mut sequential, m);
            }
            let mut coalesced = start.clone();
            let kept = coalesce(&batch);
            let mut keys: Vec<&[u8]> = kept.iter().map(|m| m.key()).collect();
            keys.dedup();
            assert_eq!(keys.len(), kept.len(), "one mutation per key");
            for m in kept {
                apply_mutation(&mut coalesced, m);
            }
            assert_eq!(sequential, coalesced, "seed {seed}: {batch:?}");
        }
    }

    #[test]
    fn sqlstates_are_classified() {
        let class = |code| classify_sqlstate(code, "m".into());
        assert!(matches!(class("40001"), DbError::Conflict { .. }));
        assert!(class("40001").is_retriable() && !class("40001").is_health_failure());
        assert!(matches!(class("08006"), DbError::Unavailable(_)));
        assert!(matches!(class("57P01"), DbError::Unavailable(_)));
        assert!(matches!(class("53300"), DbError::Exhausted(_)));
        assert!(class("53300").is_health_failure());
        assert!(matches!(class("42P01"), DbError::Rejected { .. }));
        assert!(!class("23505").is_retriable());
        assert!(!DbError::CircuitOpen { retry_after_ms: 1 }.is_retriable());
    }
}
