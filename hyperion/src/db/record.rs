//! The system of record as a node holds it: one type over the production and the simulated
//! database, so the replica names a single client type.

use super::{
    DbClient, DbError, DbMetrics, Mutation, PgDatabase, QueryTimers, SimDatabase, StoredEntry,
};
use crate::resilience::BreakerState;

/// The database client of a node: PostgreSQL/CockroachDB in production, the simulated database
/// in the simulator. The same client logic (pool cap, timeouts, retries, breaker, single-flight)
/// wraps both.
#[derive(Clone)]
pub enum SystemOfRecord {
    Postgres(DbClient<PgDatabase>),
    Simulated(DbClient<SimDatabase>),
}

macro_rules! each {
    ($self:ident, $client:ident => $body:expr) => {
        match $self {
            SystemOfRecord::Postgres($client) => $body,
            SystemOfRecord::Simulated($client) => $body,
        }
    };
}

impl SystemOfRecord {
    /// See [`DbClient::load`]: `read_point` is the applied index the miss was decided at.
    pub async fn load(&self, key: &[u8], read_point: u64) -> Result<Option<StoredEntry>, DbError> {
        each!(self, client => client.load(key, read_point).await)
    }

    pub async fn write_batch(&self, mutations: &[Mutation]) -> Result<(), DbError> {
        each!(self, client => client.write_batch(mutations).await)
    }

    pub async fn max_version(&self) -> Result<u64, DbError> {
        each!(self, client => client.max_version().await)
    }

    pub async fn warm_up(&self) -> Result<(), DbError> {
        each!(self, client => client.warm_up().await)
    }

    pub fn breaker_state(&self) -> BreakerState {
        each!(self, client => client.breaker_state())
    }

    pub fn metrics(&self) -> DbMetrics {
        each!(self, client => client.metrics())
    }

    /// Times every query attempt from now on (see [`DbClient::time_queries`]).
    pub fn time_queries(&self, timers: QueryTimers) {
        each!(self, client => client.time_queries(timers))
    }
}
