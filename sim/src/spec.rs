//! Scenario files (`scenarios/*.toml`) and incident regressions (`regressions/*.toml`): the
//! format, its parser, and drawing one concrete [`Plan`] from a file and a seed.
//!
//! Contract:
//! - A file is data: topology, config overrides, workload, a fault timeline and expectations.
//!   A regression file is a scenario plus a `[regression]` table and `[[variant]]`s (the config
//!   before and after the fix, each with its seeds and expectations).
//! - Every scalar parameter is either a value or a range (`[a, b]` or `{ min = a, max = b }`);
//!   a seed draws the concrete value (swarm testing). Each draw uses its own RNG seeded from the
//!   seed and the field's path, so adding a field never shifts the others. Every draw is listed
//!   in [`Plan::draws`] (the run banner prints them).
//! - Every error names the file, the line and the field: syntax and type errors from toml's
//!   spans, semantic ones (a node number out of range, a percentage above 100) from the spans the
//!   parser keeps for every value ([`Param`], [`toml::Spanned`]).
//!
//! The format reference is in `scenarios/README.md`.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use hyperion::config::{Config, SyncPolicy};
use hyperion::resilience::{Jitter, RetryPolicy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::workload::WorkloadSpec;

/// Most server nodes a scenario may ask for (Raft voters; the product allows 7).
pub const NODES_MAX: u64 = 7;
/// Most workload clients a scenario may ask for (each is a simulated node).
pub const CLIENTS_MAX: u64 = 64;
/// Longest workload a scenario may ask for, in simulated ms (bounds run time and history size).
pub const DURATION_MS_MAX: u64 = 600_000;
/// Most seeds one variant or one `--seeds` range may list.
pub const SEEDS_MAX: usize = 100_000;

/// An error in a scenario file: where, which field, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    /// 1-based line (0 when the error has no position).
    pub line: usize,
    /// The field's path (`faults[2].node`), or the key at that line for syntax errors.
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: field `{}`: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

impl std::error::Error for SpecError {}

/// A number a file gives as a value or as a range the seed draws from.
pub trait Number: Copy + PartialOrd + fmt::Display + fmt::Debug {
    fn from_i64(value: i64) -> Option<Self>;
    fn from_f64(value: f64) -> Option<Self>;
    /// Uniform in `[min, max]`.
    fn draw(rng: &mut ChaCha8Rng, min: Self, max: Self) -> Self;
}

impl Number for u64 {
    fn from_i64(value: i64) -> Option<Self> {
        u64::try_from(value).ok()
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn draw(rng: &mut ChaCha8Rng, min: Self, max: Self) -> Self {
        rng.random_range(min..=max)
    }
}

impl Number for i64 {
    fn from_i64(value: i64) -> Option<Self> {
        Some(value)
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn draw(rng: &mut ChaCha8Rng, min: Self, max: Self) -> Self {
        rng.random_range(min..=max)
    }
}

impl Number for f64 {
    fn from_i64(value: i64) -> Option<Self> {
        Some(value as f64)
    }
    fn from_f64(value: f64) -> Option<Self> {
        value.is_finite().then_some(value)
    }
    fn draw(rng: &mut ChaCha8Rng, min: Self, max: Self) -> Self {
        if min == max {
            min
        } else {
            // Rounded to 1e-4 so the banner shows exactly the value used.
            (rng.random_range(min..=max) * 10_000.0).round() / 10_000.0
        }
    }
}

/// A value or a range, with the span of its text in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Param<T> {
    pub min: T,
    pub max: T,
    pub span: Range<usize>,
}

impl<T: Number> Param<T> {
    pub fn is_range(&self) -> bool {
        self.min != self.max
    }
}

struct MinMax<T>(T, T);

impl<'de, T: Number> Deserialize<'de> for MinMax<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor<T>(std::marker::PhantomData<T>);
        const EXPECTED: &str = "a number, `[min, max]` or `{ min = .., max = .. }`";

        fn number<T: Number, E: de::Error>(
            value: Option<T>,
            shown: &dyn fmt::Display,
        ) -> Result<T, E> {
            value.ok_or_else(|| {
                E::custom(format!(
                    "{shown} is not allowed here (expected {})",
                    std::any::type_name::<T>()
                ))
            })
        }

        impl<'de, T: Number> Visitor<'de> for NumberVisitor<T> {
            type Value = MinMax<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                let n = number(T::from_i64(v), &v)?;
                Ok(MinMax(n, n))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                let signed =
                    i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))?;
                self.visit_i64(signed)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                let n = number(T::from_f64(v), &v)?;
                Ok(MinMax(n, n))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let min: MinMax<T> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("a range needs two numbers: [min, max]"))?;
                let max: MinMax<T> = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("a range needs two numbers: [min, max]"))?;
                if seq.next_element::<MinMax<T>>()?.is_some() {
                    return Err(de::Error::custom(
                        "a range has exactly two numbers: [min, max]",
                    ));
                }
                range(min.0, max.0)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut min, mut max) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    let value: MinMax<T> = map.next_value()?;
                    match key.as_str() {
                        "min" => min = Some(value.0),
                        "max" => max = Some(value.0),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown key `{other}` in a range (expected `min` and `max`)"
                            )))
                        }
                    }
                }
                match (min, max) {
                    (Some(min), Some(max)) => range(min, max),
                    _ => Err(de::Error::custom("a range needs both `min` and `max`")),
                }
            }
        }

        fn range<T: Number, E: de::Error>(min: T, max: T) -> Result<MinMax<T>, E> {
            if min > max {
                return Err(E::custom(format!("range min {min} is above max {max}")));
            }
            Ok(MinMax(min, max))
        }

        deserializer.deserialize_any(NumberVisitor(std::marker::PhantomData))
    }
}

impl<'de, T: Number> Deserialize<'de> for Param<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<MinMax<T>>::deserialize(deserializer)?;
        let span = spanned.span();
        let MinMax(min, max) = spanned.into_inner();
        Ok(Param { min, max, span })
    }
}

/// `[topology]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// Server nodes (default 3).
    pub nodes: Option<Param<u64>>,
    /// Clients using the cluster client (leader discovery, retries); default 3.
    pub cluster_clients: Option<Param<u64>>,
    /// Clients pinned to one server each, never retrying; default 3.
    pub pinned_clients: Option<Param<u64>>,
}

/// `[config]`: overrides of the nodes' configuration; absent fields keep the product default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    pub heartbeat_ms: Option<Param<u64>>,
    pub election_timeout_ms: Option<Param<u64>>,
    /// Default: the product's (1000 ms, or ⅔ of the election timeout if smaller).
    pub lease_ms: Option<Param<u64>>,
    pub snapshot_entries: Option<Param<u64>>,
    pub stale_grace_ms: Option<Param<u64>>,
    pub cache_size_mb: Option<Param<u64>>,
    pub eviction_batch_size: Option<Param<u64>>,
    pub max_value_size_kb: Option<Param<u64>>,
    pub wal_sync: Option<Spanned<String>>,
    pub stagger_ttl: Option<bool>,
    pub enable_compression: Option<bool>,
    pub enable_batching: Option<bool>,
    pub new_eviction_algorithm: Option<bool>,
    pub enable_client_caching: Option<bool>,
    /// Fault injection: reads served by whoever believes it leads (the 2024-12-03 pre-fix bug).
    pub unsafe_leader_reads: Option<bool>,
    /// Fault injection: the read path leaks a clone of every value (the 2024-11-22 bug).
    pub retain_read_values: Option<bool>,
    /// Raft mutations (fault injection in the core).
    pub disable_vote_stickiness: Option<bool>,
    pub skip_lease_validation: Option<bool>,
    pub forget_term_and_vote: Option<bool>,
}

impl ConfigSpec {
    /// `self` with every field `over` sets replaced.
    fn overridden_by(&self, over: &ConfigSpec) -> ConfigSpec {
        macro_rules! pick {
            ($($field:ident),*) => {
                ConfigSpec { $($field: over.$field.clone().or_else(|| self.$field.clone())),* }
            };
        }
        pick!(
            heartbeat_ms,
            election_timeout_ms,
            lease_ms,
            snapshot_entries,
            stale_grace_ms,
            cache_size_mb,
            eviction_batch_size,
            max_value_size_kb,
            wal_sync,
            stagger_ttl,
            enable_compression,
            enable_batching,
            new_eviction_algorithm,
            enable_client_caching,
            unsafe_leader_reads,
            retain_read_values,
            disable_vote_stickiness,
            skip_lease_validation,
            forget_term_and_vote
        )
    }
}

/// A per-operation range (`[min, max]`), drawn by the workload for every operation.
#[derive(Debug, Clone, Deserialize)]
pub struct PairSpec(pub Spanned<[u64; 2]>);

impl PairSpec {
    fn get(&self) -> (u64, u64) {
        let [a, b] = *self.0.get_ref();
        (a, b)
    }
}

/// `[workload.retry]`: the cluster clients' retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// `none`, `fixed`, `exponential` or `exponential_jitter`.
    pub policy: Spanned<String>,
    pub max_attempts: Option<Param<u64>>,
    pub base_delay_ms: Option<Param<u64>>,
    pub max_delay_ms: Option<Param<u64>>,
    pub max_total_ms: Option<Param<u64>>,
}

/// `[workload]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadFileSpec {
    /// How long clients issue operations, simulated ms (default 12000).
    pub duration_ms: Option<Param<u64>>,
    pub keys: Option<Param<u64>>,
    pub write_percent: Option<Param<u64>>,
    pub delete_percent: Option<Param<u64>>,
    pub cas_percent: Option<Param<u64>>,
    pub stale_read_percent: Option<Param<u64>>,
    pub ttl_percent: Option<Param<u64>>,
    /// Per operation: TTL range of Sets that have one.
    pub ttl_ms: Option<PairSpec>,
    /// Per operation: think time between a client's operations (sets the rate).
    pub think_ms: Option<PairSpec>,
    /// Per operation: size range of written values.
    pub value_bytes: Option<PairSpec>,
    /// Per-attempt deadline of every client.
    pub deadline_ms: Option<Param<u64>>,
    pub retry: Option<RetrySpec>,
    /// Keys `key0..` written before the workload (unrecorded), all with `preload_ttl_ms`.
    pub preload_keys: Option<Param<u64>>,
    pub preload_ttl_ms: Option<Param<u64>>,
}

/// `[database]`: a simulated system of record shared by every node, and how nodes use it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// Connections the database accepts at once (default 16).
    pub max_connections: Option<Param<u64>>,
    /// Per query: latency range (default [1, 5]).
    pub latency_ms: Option<PairSpec>,
    /// How long a query waits for a busy database's connection before it is refused (default 0).
    pub connection_wait_ms: Option<Param<u64>>,
    /// What creating a node's connection pool costs, paid by its first query (default 0).
    pub pool_create_ms: Option<Param<u64>>,
    /// Nodes warm their pool up before serving (default true; false replays 2025-01-08).
    pub warm_up: Option<bool>,
    /// The nodes' circuit breaker (default true).
    pub breaker: Option<bool>,
    /// Single-flight read-through: concurrent misses of a key share one query (default true).
    pub single_flight: Option<bool>,
    /// Fault injection (the 2026-12-01 pre-fix): a load joins any in-flight load of its key,
    /// however old, and abandoned loads stay joinable (default false).
    pub join_stale_loads: Option<bool>,
    /// How long the leader remembers a key the database does not have (default 1000; 0 = off).
    pub negative_cache_ms: Option<Param<u64>>,
    /// Per-query timeout of the nodes' database client (default 2000).
    pub query_timeout_ms: Option<Param<u64>>,
    /// Per-node query cap (the pool size, default 16).
    pub pool_size: Option<Param<u64>>,
}

impl DatabaseSpec {
    /// `self` with every field `over` sets replaced.
    fn overridden_by(&self, over: &DatabaseSpec) -> DatabaseSpec {
        macro_rules! pick {
            ($($field:ident),*) => {
                DatabaseSpec { $($field: over.$field.clone().or_else(|| self.$field.clone())),* }
            };
        }
        pick!(
            max_connections,
            latency_ms,
            connection_wait_ms,
            pool_create_ms,
            warm_up,
            breaker,
            single_flight,
            join_stale_loads,
            negative_cache_ms,
            query_timeout_ms,
            pool_size
        )
    }
}

/// The drawn `[database]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabasePlan {
    pub max_connections: usize,
    pub latency_ms: (u64, u64),
    pub connection_wait_ms: u64,
    pub pool_create_ms: u64,
    pub warm_up: bool,
    pub breaker: bool,
    pub single_flight: bool,
    pub join_stale_loads: bool,
    pub negative_cache_ms: u64,
    pub query_timeout_ms: u64,
    pub pool_size: usize,
}

/// One `[[faults]]` entry (which fields apply depends on `kind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// When, in simulated ms since the workload started.
    pub at_ms: Param<u64>,
    pub kind: Spanned<String>,
    /// How long until the fault is undone (heal, restart, resume, clock rate back to 1).
    pub duration_ms: Option<Param<u64>>,
    /// A node number (1-based, as in `node1`), `"leader"` or `"follower"`, resolved when the
    /// fault fires.
    pub node: Option<Spanned<toml::Value>>,
    /// `partition`: groups of node numbers; links between groups are cut both ways.
    pub groups: Option<Spanned<Vec<Vec<u64>>>>,
    /// `one_way`: messages from `from` to `to` are lost.
    pub from: Option<Spanned<toml::Value>>,
    pub to: Option<Spanned<toml::Value>>,
    /// `clock`: the node clock's rate (1.0 = true time) and a step in ms.
    pub rate: Option<Param<f64>>,
    pub jump_ms: Option<Param<i64>>,
    /// `net`: probability a packet is lost, and the send latency range.
    pub packet_loss: Option<Param<f64>>,
    pub latency_ms: Option<PairSpec>,
}

/// `[expect]`: what a run must show.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// Checkers that must find nothing (default: all of them).
    pub pass: Option<Spanned<Vec<String>>>,
    /// Checkers of which at least one must find a violation (negative controls, old configs).
    pub violation: Option<Spanned<Vec<String>>>,
    /// `"every_seed"` (default): each run must find the violation. `"any_seed"`: at least one
    /// seed of a sweep or replay must (a bug that only some schedules expose; a single run that
    /// misses it still passes if the `pass` checkers do).
    pub violation_in: Option<Spanned<String>>,
    /// The linearizability checker's TTL tolerance ε in ms (combined clock error); default 5.
    pub clock_skew_ms: Option<Param<u64>>,
    /// The memory checker: per node, store-accounted plus retained bytes at every sample.
    pub memory_max_bytes: Option<Param<u64>>,
    /// The metrics checker (in simulated time): the 99th percentile of Get latency,
    pub get_p99_ms_max: Option<Param<u64>>,
    /// the most queries the database ever had in flight at once,
    pub db_peak_concurrency_max: Option<Param<u64>>,
    /// queries the database refused for lack of a connection,
    pub db_refused_max: Option<Param<u64>>,
    /// queries the database received in all,
    pub db_queries_max: Option<Param<u64>>,
    /// and whether the first Get of the run must succeed (the 2025-01-08 cold start).
    pub first_get_ok: Option<bool>,
}

/// `[regression]`: provenance of an incident regression.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegressionSpec {
    pub date: String,
    pub title: String,
    pub postmortem: String,
}

/// `[[variant]]`: one configuration of a regression (before or after the fix).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantSpec {
    pub name: Spanned<String>,
    pub description: Option<String>,
    /// `[7, 11]` or `"1..40"` (end excluded) or `"1..=40"`.
    pub seeds: Spanned<toml::Value>,
    #[serde(default)]
    pub config: ConfigSpec,
    /// Replaces the file's fault timeline when present.
    pub faults: Option<Vec<FaultSpec>>,
    /// Replaces the file's expectations when present.
    pub expect: Option<ExpectSpec>,
    /// Overrides fields of the file's `[database]`.
    pub database: Option<DatabaseSpec>,
    /// Replaces the clients' retry policy (`[workload.retry]`).
    pub retry: Option<RetrySpec>,
}

/// A whole file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub topology: TopologySpec,
    #[serde(default)]
    pub config: ConfigSpec,
    #[serde(default)]
    pub workload: WorkloadFileSpec,
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    #[serde(default)]
    pub expect: ExpectSpec,
    /// The simulated system of record.
    pub database: Option<DatabaseSpec>,
    pub regression: Option<RegressionSpec>,
    #[serde(default)]
    pub variant: Vec<VariantSpec>,
}

/// The checkers a run reports on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checker {
    Linearizability,
    Raft,
    Liveness,
    Memory,
    Metrics,
}

impl Checker {
    pub const ALL: [Checker; 5] = [
        Checker::Linearizability,
        Checker::Raft,
        Checker::Liveness,
        Checker::Memory,
        Checker::Metrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Checker::Linearizability => "linearizability",
            Checker::Raft => "raft",
            Checker::Liveness => "liveness",
            Checker::Memory => "memory",
            Checker::Metrics => "metrics",
        }
    }

    fn parse(name: &str) -> Option<Checker> {
        Checker::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// A node a fault targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// 0-based index.
    Index(usize),
    /// The leader when the fault fires (skipped if there is none).
    Leader,
    /// The lowest-numbered running non-leader when the fault fires.
    Follower,
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Index(i) => write!(f, "node{}", i + 1),
            NodeRef::Leader => f.write_str("the leader"),
            NodeRef::Follower => f.write_str("a follower"),
        }
    }
}

/// A concrete fault.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Cut `node` off from every other server (clients still reach it).
    Isolate(NodeRef),
    /// Cut every link between different groups (0-based indexes).
    Partition(Vec<Vec<usize>>),
    OneWay {
        from: NodeRef,
        to: NodeRef,
    },
    Clock {
        node: NodeRef,
        rate: Option<f64>,
        jump_ms: Option<i64>,
    },
    Pause(NodeRef),
    Kill(NodeRef),
    PowerLoss(NodeRef),
    Restart(NodeRef),
    Heal,
    Net {
        packet_loss: f64,
        latency_ms: (u64, u64),
    },
}

/// A fault with its drawn time and duration.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    pub at_ms: u64,
    pub duration_ms: Option<u64>,
    pub action: FaultAction,
}

/// What a run must show, concretely.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub pass: Vec<Checker>,
    pub violation: Vec<Checker>,
    /// The violation is required of the seeds together, not of each run.
    pub violation_in_any_seed: bool,
    pub clock_skew_ms: u64,
    pub memory_max_bytes: Option<u64>,
    pub metrics: MetricLimits,
}

/// Thresholds of the metrics checker (`None`: not checked).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricLimits {
    pub get_p99_ms_max: Option<u64>,
    pub db_peak_concurrency_max: Option<u64>,
    pub db_refused_max: Option<u64>,
    pub db_queries_max: Option<u64>,
    pub first_get_ok: bool,
}

impl MetricLimits {
    pub fn any(&self) -> bool {
        self.get_p99_ms_max.is_some()
            || self.db_peak_concurrency_max.is_some()
            || self.db_refused_max.is_some()
            || self.db_queries_max.is_some()
            || self.first_get_ok
    }
}

/// Node configuration overrides, drawn.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigPlan {
    pub heartbeat_ms: Option<u64>,
    pub election_timeout_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    pub snapshot_entries: Option<u64>,
    pub stale_grace_ms: Option<u64>,
    pub cache_size_mb: Option<u64>,
    pub eviction_batch_size: Option<u64>,
    pub max_value_size_kb: Option<u64>,
    pub wal_sync: Option<SyncPolicy>,
    pub stagger_ttl: Option<bool>,
    pub enable_compression: Option<bool>,
    pub enable_batching: Option<bool>,
    pub new_eviction_algorithm: Option<bool>,
    pub enable_client_caching: Option<bool>,
    pub unsafe_leader_reads: bool,
    pub retain_read_values: bool,
    pub disable_vote_stickiness: bool,
    pub skip_lease_validation: bool,
    pub forget_term_and_vote: bool,
}

impl ConfigPlan {
    /// Applies the overrides to a node's configuration.
    pub fn apply(&self, config: &mut Config) {
        if let Some(heartbeat_ms) = self.heartbeat_ms {
            config.raft.heartbeat_ms = heartbeat_ms;
        }
        if let Some(timeout_ms) = self.election_timeout_ms {
            config.raft.election_timeout_ms = timeout_ms;
        }
        // The product's default lease: 1000 ms, or ⅔ of the election timeout if smaller.
        config.raft.lease_duration_ms = self
            .lease_ms
            .unwrap_or_else(|| 1000.min(config.raft.election_timeout_ms * 2 / 3));
        if let Some(entries) = self.snapshot_entries {
            config.raft.snapshot_entries = entries;
        }
        if let Some(grace_ms) = self.stale_grace_ms {
            config.stale_grace_ms = grace_ms;
        }
        if let Some(size_mb) = self.cache_size_mb {
            config.cache_size_mb = size_mb;
        }
        if let Some(batch) = self.eviction_batch_size {
            config.eviction_batch_size = batch as usize;
        }
        if let Some(kb) = self.max_value_size_kb {
            config.flags.max_value_size_kb = kb as u32;
        }
        if let Some(sync) = self.wal_sync {
            config.wal_sync = sync;
        }
        if let Some(stagger) = self.stagger_ttl {
            config.stagger_ttl = stagger;
        }
        if let Some(on) = self.enable_compression {
            config.flags.enable_compression = on;
        }
        if let Some(on) = self.enable_batching {
            config.flags.enable_batching = on;
        }
        if let Some(on) = self.new_eviction_algorithm {
            config.flags.new_eviction_algorithm = on;
        }
        if let Some(on) = self.enable_client_caching {
            config.flags.enable_client_caching = on;
        }
        config.faults.unsafe_leader_reads = self.unsafe_leader_reads;
        config.faults.retain_read_values = self.retain_read_values;
        config.faults.raft.disable_vote_stickiness = self.disable_vote_stickiness;
        config.faults.raft.skip_lease_validation = self.skip_lease_validation;
        config.faults.raft.forget_term_and_vote = self.forget_term_and_vote;
    }

    /// The election timeout in effect.
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms.unwrap_or(1500))
    }
}

/// One drawn parameter, for the banner.
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    pub field: String,
    pub value: String,
    /// The range it was drawn from (`None` when the file fixed the value).
    pub range: Option<String>,
}

/// Everything one run needs: the file's scenario with every range drawn for one seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub variant: Option<String>,
    pub nodes: usize,
    pub config: ConfigPlan,
    pub workload: WorkloadSpec,
    pub faults: Vec<FaultPlan>,
    pub expect: Expect,
    pub database: Option<DatabasePlan>,
    pub draws: Vec<Draw>,
}

/// A variant of a regression: its name and committed seeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantInfo {
    pub name: String,
    pub description: Option<String>,
    pub seeds: Vec<u64>,
}

/// A parsed and validated file.
#[derive(Debug, Clone)]
pub struct ScenarioFile {
    pub path: String,
    pub source: String,
    pub spec: FileSpec,
    pub variants: Vec<VariantInfo>,
}

/// Parses `"A..B"` (B excluded) or `"A..=B"` into seeds.
pub fn parse_seed_range(text: &str) -> Result<Vec<u64>, String> {
    let bad = || format!("`{text}` is not a seed range (`A..B`, end excluded, or `A..=B`)");
    let (start, end, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        return text
            .trim()
            .parse()
            .map(|seed| vec![seed])
            .map_err(|_| bad());
    };
    let start: u64 = start.trim().parse().map_err(|_| bad())?;
    let end: u64 = end.trim().parse().map_err(|_| bad())?;
    let end = if inclusive {
        end.saturating_add(1)
    } else {
        end
    };
    if end <= start {
        return Err(format!("seed range `{text}` is empty"));
    }
    if end - start > SEEDS_MAX as u64 {
        return Err(format!(
            "seed range `{text}` has more than {SEEDS_MAX} seeds"
        ));
    }
    Ok((start..end).collect())
}

/// 1-based line of byte offset `offset`.
fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

/// The key written on the line of `offset` (`key = value` or `[table]`), for syntax errors.
fn key_at(source: &str, offset: usize) -> String {
    let offset = offset.min(source.len());
    let start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = source[offset..]
        .find('\n')
        .map_or(source.len(), |i| offset + i);
    let line = source[start..end].trim();
    if let Some((key, _)) = line.split_once('=') {
        return key.trim().to_string();
    }
    line.trim_matches(|c| c == '[' || c == ']')
        .trim()
        .to_string()
}

struct Validator<'a> {
    path: &'a str,
    source: &'a str,
}

impl Validator<'_> {
    fn error(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> SpecError {
        SpecError {
            file: self.path.to_string(),
            line: line_of(self.source, span.start),
            field: field.into(),
            message: message.into(),
        }
    }

    fn within(
        &self,
        param: &Option<Param<u64>>,
        field: &str,
        low: u64,
        high: u64,
    ) -> Result<(), SpecError> {
        if let Some(p) = param {
            if p.min < low || p.max > high {
                return Err(self.error(&p.span, field, format!("must be within {low}..={high}")));
            }
        }
        Ok(())
    }

    fn node(
        &self,
        value: &Spanned<toml::Value>,
        field: &str,
        nodes: u64,
    ) -> Result<NodeRef, SpecError> {
        match value.get_ref() {
            toml::Value::Integer(n) if (1..=nodes as i64).contains(n) => {
                Ok(NodeRef::Index(*n as usize - 1))
            }
            toml::Value::Integer(n) => Err(self.error(
                &value.span(),
                field,
                format!("node {n} is out of range: the topology has nodes 1..={nodes}"),
            )),
            toml::Value::String(s) if s == "leader" => Ok(NodeRef::Leader),
            toml::Value::String(s) if s == "follower" => Ok(NodeRef::Follower),
            other => Err(self.error(
                &value.span(),
                field,
                format!(
                    "expected a node number (1..={nodes}), \"leader\" or \"follower\", got {other}"
                ),
            )),
        }
    }

    fn checkers(
        &self,
        list: &Option<Spanned<Vec<String>>>,
        field: &str,
    ) -> Result<Option<Vec<Checker>>, SpecError> {
        let Some(list) = list else { return Ok(None) };
        let mut out = Vec::new();
        for name in list.get_ref() {
            let checker = Checker::parse(name).ok_or_else(|| {
                self.error(
                    &list.span(),
                    field,
                    format!(
                        "unknown checker `{name}` (known: {})",
                        Checker::ALL.map(Checker::name).join(", ")
                    ),
                )
            })?;
            out.push(checker);
        }
        Ok(Some(out))
    }

    fn seeds(&self, value: &Spanned<toml::Value>, field: &str) -> Result<Vec<u64>, SpecError> {
        let seeds = match value.get_ref() {
            toml::Value::String(text) => {
                parse_seed_range(text).map_err(|e| self.error(&value.span(), field, e))?
            }
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
                    other => Err(self.error(
                        &value.span(),
                        field,
                        format!("a seed is a non-negative integer, got {other}"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(self.error(
                    &value.span(),
                    field,
                    format!(
                        "expected a list of seeds or a range string like \"1..40\", got {other}"
                    ),
                ))
            }
        };
        if seeds.is_empty() {
            return Err(self.error(&value.span(), field, "no seeds"));
        }
        Ok(seeds)
    }

    fn config(&self, config: &ConfigSpec, prefix: &str) -> Result<(), SpecError> {
        let field = |name: &str| format!("{prefix}{name}");
        self.within(&config.heartbeat_ms, &field("heartbeat_ms"), 10, 10_000)?;
        self.within(
            &config.election_timeout_ms,
            &field("election_timeout_ms"),
            20,
            100_000,
        )?;
        self.within(&config.lease_ms, &field("lease_ms"), 1, 100_000)?;
        self.within(
            &config.snapshot_entries,
            &field("snapshot_entries"),
            10,
            10_000_000,
        )?;
        self.within(
            &config.stale_grace_ms,
            &field("stale_grace_ms"),
            0,
            3_600_000,
        )?;
        self.within(&config.cache_size_mb, &field("cache_size_mb"), 1, 1 << 20)?;
        self.within(
            &config.eviction_batch_size,
            &field("eviction_batch_size"),
            1,
            1_000_000,
        )?;
        self.within(
            &config.max_value_size_kb,
            &field("max_value_size_kb"),
            1,
            1 << 20,
        )?;
        if let Some(sync) = &config.wal_sync {
            if !matches!(sync.get_ref().as_str(), "always" | "everysec") {
                return Err(self.error(
                    &sync.span(),
                    field("wal_sync"),
                    "must be \"always\" or \"everysec\"",
                ));
            }
        }
        Ok(())
    }

    fn faults(&self, faults: &[FaultSpec], prefix: &str, nodes: u64) -> Result<(), SpecError> {
        for (i, fault) in faults.iter().enumerate() {
            self.fault(fault, &format!("{prefix}faults[{i}]"), nodes)?;
        }
        Ok(())
    }

    fn fault(&self, fault: &FaultSpec, at: &str, nodes: u64) -> Result<(), SpecError> {
        let kind = fault.kind.get_ref().as_str();
        const KINDS: &str =
            "isolate, partition, one_way, clock, pause, kill, power_loss, restart, heal, net";
        let (needs, allows): (&[&str], &[&str]) = match kind {
            "isolate" | "pause" | "kill" | "power_loss" => (&["node"], &["duration_ms"]),
            "restart" => (&["node"], &[]),
            "partition" => (&["groups"], &["duration_ms"]),
            "one_way" => (&["from", "to"], &["duration_ms"]),
            "clock" => (&["node"], &["rate", "jump_ms", "duration_ms"]),
            "heal" => (&[], &[]),
            "net" => (&[], &["packet_loss", "latency_ms", "duration_ms"]),
            other => {
                return Err(self.error(
                    &fault.kind.span(),
                    format!("{at}.kind"),
                    format!("unknown fault kind `{other}` (known: {KINDS})"),
                ))
            }
        };
        let present: [(&str, Option<Range<usize>>); 9] = [
            ("node", fault.node.as_ref().map(Spanned::span)),
            ("groups", fault.groups.as_ref().map(Spanned::span)),
            ("from", fault.from.as_ref().map(Spanned::span)),
            ("to", fault.to.as_ref().map(Spanned::span)),
            ("rate", fault.rate.as_ref().map(|p| p.span.clone())),
            ("jump_ms", fault.jump_ms.as_ref().map(|p| p.span.clone())),
            (
                "packet_loss",
                fault.packet_loss.as_ref().map(|p| p.span.clone()),
            ),
            ("latency_ms", fault.latency_ms.as_ref().map(|p| p.0.span())),
            (
                "duration_ms",
                fault.duration_ms.as_ref().map(|p| p.span.clone()),
            ),
        ];
        for (name, span) in &present {
            if let Some(span) = span {
                if !needs.contains(name) && !allows.contains(name) {
                    return Err(self.error(
                        span,
                        format!("{at}.{name}"),
                        format!("does not apply to a `{kind}` fault"),
                    ));
                }
            } else if needs.contains(name) {
                return Err(self.error(
                    &fault.kind.span(),
                    format!("{at}.{name}"),
                    format!("a `{kind}` fault needs `{name}`"),
                ));
            }
        }
        for (name, value) in [
            ("node", &fault.node),
            ("from", &fault.from),
            ("to", &fault.to),
        ] {
            if let Some(value) = value {
                self.node(value, &format!("{at}.{name}"), nodes)?;
            }
        }
        if let Some(groups) = &fault.groups {
            let field = format!("{at}.groups");
            let mut seen = Vec::new();
            for n in groups.get_ref().iter().flatten() {
                if !(1..=nodes).contains(n) {
                    return Err(self.error(
                        &groups.span(),
                        &field,
                        format!("node {n} is out of range: the topology has nodes 1..={nodes}"),
                    ));
                }
                if seen.contains(n) {
                    return Err(self.error(
                        &groups.span(),
                        &field,
                        format!("node {n} is in two groups"),
                    ));
                }
                seen.push(*n);
            }
            if groups.get_ref().iter().filter(|g| !g.is_empty()).count() < 2 {
                return Err(self.error(
                    &groups.span(),
                    &field,
                    "a partition needs at least two non-empty groups",
                ));
            }
        }
        if kind == "clock" && fault.rate.is_none() && fault.jump_ms.is_none() {
            return Err(self.error(
                &fault.kind.span(),
                format!("{at}.rate"),
                "a `clock` fault needs `rate` or `jump_ms`",
            ));
        }
        if let Some(rate) = &fault.rate {
            if rate.min <= 0.0 || rate.max > 100.0 {
                return Err(self.error(
                    &rate.span,
                    format!("{at}.rate"),
                    "must be within (0, 100]",
                ));
            }
        }
        if let Some(loss) = &fault.packet_loss {
            if loss.min < 0.0 || loss.max > 1.0 {
                return Err(self.error(
                    &loss.span,
                    format!("{at}.packet_loss"),
                    "must be within [0, 1]",
                ));
            }
        }
        if let Some(pair) = &fault.latency_ms {
            let (a, b) = pair.get();
            if a > b || b > 60_000 {
                return Err(self.error(
                    &pair.0.span(),
                    format!("{at}.latency_ms"),
                    "must be [min, max] with min <= max <= 60000",
                ));
            }
        }
        Ok(())
    }

    fn database(&self, db: &DatabaseSpec, prefix: &str) -> Result<(), SpecError> {
        let field = |name: &str| format!("{prefix}database.{name}");
        self.within(&db.max_connections, &field("max_connections"), 1, 10_000)?;
        self.within(&db.pool_size, &field("pool_size"), 1, 1024)?;
        self.within(
            &db.connection_wait_ms,
            &field("connection_wait_ms"),
            0,
            60_000,
        )?;
        self.within(&db.pool_create_ms, &field("pool_create_ms"), 0, 60_000)?;
        self.within(
            &db.negative_cache_ms,
            &field("negative_cache_ms"),
            0,
            3_600_000,
        )?;
        self.within(&db.query_timeout_ms, &field("query_timeout_ms"), 1, 60_000)?;
        self.pair(&db.latency_ms, &field("latency_ms"), 60_000)
    }

    fn expect(&self, expect: &ExpectSpec, prefix: &str) -> Result<(), SpecError> {
        let pass = self.checkers(&expect.pass, &format!("{prefix}expect.pass"))?;
        let violation = self.checkers(&expect.violation, &format!("{prefix}expect.violation"))?;
        if let (Some(pass), Some(violation), Some(list)) = (&pass, &violation, &expect.violation) {
            if let Some(both) = violation.iter().find(|c| pass.contains(c)) {
                return Err(self.error(
                    &list.span(),
                    format!("{prefix}expect.violation"),
                    format!(
                        "checker `{}` cannot be in both `pass` and `violation`",
                        both.name()
                    ),
                ));
            }
        }
        if let Some(within) = &expect.violation_in {
            if !matches!(within.get_ref().as_str(), "every_seed" | "any_seed") {
                return Err(self.error(
                    &within.span(),
                    format!("{prefix}expect.violation_in"),
                    "must be \"every_seed\" or \"any_seed\"",
                ));
            }
            if violation.as_ref().is_none_or(Vec::is_empty) {
                return Err(self.error(
                    &within.span(),
                    format!("{prefix}expect.violation_in"),
                    "applies only with a non-empty `violation` list",
                ));
            }
        }
        let memory_listed = pass
            .iter()
            .chain(violation.iter())
            .flatten()
            .any(|c| *c == Checker::Memory);
        if memory_listed && expect.memory_max_bytes.is_none() {
            let span = expect
                .violation
                .as_ref()
                .or(expect.pass.as_ref())
                .map(Spanned::span)
                .unwrap_or(0..0);
            return Err(self.error(
                &span,
                format!("{prefix}expect.memory_max_bytes"),
                "the `memory` checker needs `memory_max_bytes`",
            ));
        }
        self.within(
            &expect.clock_skew_ms,
            &format!("{prefix}expect.clock_skew_ms"),
            0,
            3_600_000,
        )
    }

    fn pair(&self, pair: &Option<PairSpec>, field: &str, high: u64) -> Result<(), SpecError> {
        if let Some(pair) = pair {
            let (a, b) = pair.get();
            if a > b || b > high {
                return Err(self.error(
                    &pair.0.span(),
                    field,
                    format!("must be [min, max] with min <= max <= {high}"),
                ));
            }
        }
        Ok(())
    }

    fn workload(&self, w: &WorkloadFileSpec) -> Result<(), SpecError> {
        self.within(&w.duration_ms, "workload.duration_ms", 1, DURATION_MS_MAX)?;
        self.within(&w.keys, "workload.keys", 1, 1_000_000)?;
        for (param, name) in [
            (&w.write_percent, "write_percent"),
            (&w.delete_percent, "delete_percent"),
            (&w.cas_percent, "cas_percent"),
            (&w.stale_read_percent, "stale_read_percent"),
            (&w.ttl_percent, "ttl_percent"),
        ] {
            self.within(param, &format!("workload.{name}"), 0, 100)?;
        }
        self.pair(&w.ttl_ms, "workload.ttl_ms", 86_400_000)?;
        self.pair(&w.think_ms, "workload.think_ms", 60_000)?;
        self.pair(&w.value_bytes, "workload.value_bytes", 512 * 1024)?;
        self.within(&w.deadline_ms, "workload.deadline_ms", 1, 60_000)?;
        if let Some(retry) = &w.retry {
            if !matches!(
                retry.policy.get_ref().as_str(),
                "none" | "fixed" | "exponential" | "exponential_jitter"
            ) {
                return Err(self.error(
                    &retry.policy.span(),
                    "workload.retry.policy",
                    "must be one of none, fixed, exponential, exponential_jitter",
                ));
            }
            self.within(
                &retry.max_attempts,
                "workload.retry.max_attempts",
                1,
                hyperion::resilience::RETRY_ATTEMPTS_MAX as u64,
            )?;
            self.within(
                &retry.base_delay_ms,
                "workload.retry.base_delay_ms",
                0,
                60_000,
            )?;
            self.within(
                &retry.max_delay_ms,
                "workload.retry.max_delay_ms",
                0,
                600_000,
            )?;
            self.within(
                &retry.max_total_ms,
                "workload.retry.max_total_ms",
                0,
                600_000,
            )?;
            if let (Some(base), Some(max)) = (&retry.base_delay_ms, &retry.max_delay_ms) {
                if base.max > max.min {
                    return Err(self.error(
                        &max.span,
                        "workload.retry.max_delay_ms",
                        "must not be below base_delay_ms",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl ScenarioFile {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<ScenarioFile, SpecError> {
        let shown = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|error| SpecError {
            file: shown.clone(),
            line: 0,
            field: String::new(),
            message: format!("cannot read: {error}"),
        })?;
        ScenarioFile::parse(&shown, &source)
    }

    /// Parses and validates `source` (named `path` in errors).
    pub fn parse(path: &str, source: &str) -> Result<ScenarioFile, SpecError> {
        let spec: FileSpec = toml::from_str(source).map_err(|error| {
            let span = error.span().unwrap_or(0..0);
            SpecError {
                file: path.to_string(),
                line: line_of(source, span.start),
                field: key_at(source, span.start),
                message: error.message().trim().to_string(),
            }
        })?;
        let v = Validator { path, source };
        let nodes = spec.topology.nodes.as_ref();
        v.within(&spec.topology.nodes, "topology.nodes", 1, NODES_MAX)?;
        v.within(
            &spec.topology.cluster_clients,
            "topology.cluster_clients",
            0,
            CLIENTS_MAX,
        )?;
        v.within(
            &spec.topology.pinned_clients,
            "topology.pinned_clients",
            0,
            CLIENTS_MAX,
        )?;
        // Node numbers must exist for every drawn topology: check against the smallest.
        let nodes_min = nodes.map_or(3, |p| p.min);
        v.config(&spec.config, "config.")?;
        v.workload(&spec.workload)?;
        v.faults(&spec.faults, "", nodes_min)?;
        v.expect(&spec.expect, "")?;
        if let Some(db) = &spec.database {
            v.database(db, "")?;
        }
        if spec.regression.is_some() == spec.variant.is_empty() {
            let span = 0..0;
            return Err(v.error(&span, "variant", "a regression file has a [regression] table and at least one [[variant]]; a scenario file has neither"));
        }
        let mut variants = Vec::new();
        for (i, variant) in spec.variant.iter().enumerate() {
            let at = format!("variant[{i}].");
            if variants
                .iter()
                .any(|known: &VariantInfo| known.name == *variant.name.get_ref())
            {
                return Err(v.error(
                    &variant.name.span(),
                    format!("{at}name"),
                    format!("duplicate variant name `{}`", variant.name.get_ref()),
                ));
            }
            v.config(&variant.config, &format!("{at}config."))?;
            if let Some(faults) = &variant.faults {
                v.faults(faults, &at, nodes_min)?;
            }
            if let Some(expect) = &variant.expect {
                v.expect(expect, &at)?;
            }
            if let Some(db) = &variant.database {
                v.database(db, &at)?;
            }
            variants.push(VariantInfo {
                name: variant.name.get_ref().clone(),
                description: variant.description.clone(),
                seeds: v.seeds(&variant.seeds, &format!("{at}seeds"))?,
            });
        }
        Ok(ScenarioFile {
            path: path.to_string(),
            source: source.to_string(),
            spec,
            variants,
        })
    }

    /// The scenario's name (the `name` field, else the file stem).
    pub fn name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| {
            Path::new(&self.path)
                .file_stem()
                .map_or_else(|| self.path.clone(), |s| s.to_string_lossy().into_owned())
        })
    }

    pub fn is_regression(&self) -> bool {
        self.spec.regression.is_some()
    }

    /// Draws the plan of `seed` (of `variant`, for a regression file).
    pub fn plan(&self, seed: u64, variant: Option<&str>) -> Result<Plan, String> {
        let variant_spec = match variant {
            None if self.is_regression() => {
                return Err(format!(
                    "{} is a regression: pick a variant ({})",
                    self.path,
                    self.variants
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
            None => None,
            Some(name) => Some(
                self.spec
                    .variant
                    .iter()
                    .find(|v| v.name.get_ref() == name)
                    .ok_or_else(|| format!("{} has no variant `{name}`", self.path))?,
            ),
        };
        let spec = &self.spec;
        let config = match variant_spec {
            Some(v) => spec.config.overridden_by(&v.config),
            None => spec.config.clone(),
        };
        let faults = variant_spec
            .and_then(|v| v.faults.as_ref())
            .unwrap_or(&spec.faults);
        let expect = variant_spec
            .and_then(|v| v.expect.as_ref())
            .unwrap_or(&spec.expect);
        let mut d = Drawer {
            seed,
            draws: Vec::new(),
        };

        let nodes = d.u64("topology.nodes", &spec.topology.nodes, 3) as usize;
        let config = ConfigPlan {
            heartbeat_ms: d.opt("config.heartbeat_ms", &config.heartbeat_ms),
            election_timeout_ms: d.opt("config.election_timeout_ms", &config.election_timeout_ms),
            lease_ms: d.opt("config.lease_ms", &config.lease_ms),
            snapshot_entries: d.opt("config.snapshot_entries", &config.snapshot_entries),
            stale_grace_ms: d.opt("config.stale_grace_ms", &config.stale_grace_ms),
            cache_size_mb: d.opt("config.cache_size_mb", &config.cache_size_mb),
            eviction_batch_size: d.opt("config.eviction_batch_size", &config.eviction_batch_size),
            max_value_size_kb: d.opt("config.max_value_size_kb", &config.max_value_size_kb),
            wal_sync: config.wal_sync.as_ref().map(|s| {
                if s.get_ref() == "always" {
                    SyncPolicy::Always
                } else {
                    SyncPolicy::EverySec
                }
            }),
            stagger_ttl: config.stagger_ttl,
            enable_compression: config.enable_compression,
            enable_batching: config.enable_batching,
            new_eviction_algorithm: config.new_eviction_algorithm,
            enable_client_caching: config.enable_client_caching,
            unsafe_leader_reads: config.unsafe_leader_reads.unwrap_or(false),
            retain_read_values: config.retain_read_values.unwrap_or(false),
            disable_vote_stickiness: config.disable_vote_stickiness.unwrap_or(false),
            skip_lease_validation: config.skip_lease_validation.unwrap_or(false),
            forget_term_and_vote: config.forget_term_and_vote.unwrap_or(false),
        };

        let w = &spec.workload;
        let defaults = WorkloadSpec::default();
        let pair =
            |p: &Option<PairSpec>, default: (u64, u64)| p.as_ref().map_or(default, PairSpec::get);
        let percent = |d: &mut Drawer, name: &str, p: &Option<Param<u64>>, default: u32| {
            d.u64(&format!("workload.{name}"), p, u64::from(default)) as u32
        };
        let value_bytes = pair(&w.value_bytes, (0, 0));
        let workload = WorkloadSpec {
            cluster_clients: d.u64(
                "topology.cluster_clients",
                &spec.topology.cluster_clients,
                defaults.cluster_clients as u64,
            ) as usize,
            pinned_clients: d.u64(
                "topology.pinned_clients",
                &spec.topology.pinned_clients,
                defaults.pinned_clients as u64,
            ) as usize,
            keys: d.u64("workload.keys", &w.keys, defaults.keys as u64) as usize,
            duration: Duration::from_millis(d.u64(
                "workload.duration_ms",
                &w.duration_ms,
                defaults.duration.as_millis() as u64,
            )),
            write_percent: percent(
                &mut d,
                "write_percent",
                &w.write_percent,
                defaults.write_percent,
            ),
            delete_percent: percent(
                &mut d,
                "delete_percent",
                &w.delete_percent,
                defaults.delete_percent,
            ),
            cas_percent: percent(&mut d, "cas_percent", &w.cas_percent, defaults.cas_percent),
            stale_read_percent: percent(
                &mut d,
                "stale_read_percent",
                &w.stale_read_percent,
                defaults.stale_read_percent,
            ),
            ttl_percent: percent(&mut d, "ttl_percent", &w.ttl_percent, defaults.ttl_percent),
            ttl_ms: pair(&w.ttl_ms, defaults.ttl_ms),
            think_ms: pair(&w.think_ms, defaults.think_ms),
            deadline: Duration::from_millis(d.u64(
                "workload.deadline_ms",
                &w.deadline_ms,
                defaults.deadline.as_millis() as u64,
            )),
            retry: variant_spec
                .and_then(|v| v.retry.as_ref())
                .or(w.retry.as_ref())
                .map(|r| d.retry(r)),
            value_bytes: (value_bytes.0 as usize, value_bytes.1 as usize),
            preload_keys: d.u64("workload.preload_keys", &w.preload_keys, 0) as usize,
            preload_ttl_ms: d.u64("workload.preload_ttl_ms", &w.preload_ttl_ms, 0),
        };
        let database_spec = match (
            &spec.database,
            variant_spec.and_then(|v| v.database.as_ref()),
        ) {
            (Some(base), Some(over)) => Some(base.overridden_by(over)),
            (Some(base), None) => Some(base.clone()),
            (None, Some(over)) => Some(over.clone()),
            (None, None) => None,
        };
        let database = database_spec.map(|db| DatabasePlan {
            max_connections: d.u64("database.max_connections", &db.max_connections, 16) as usize,
            latency_ms: pair(&db.latency_ms, (1, 5)),
            connection_wait_ms: d.u64("database.connection_wait_ms", &db.connection_wait_ms, 0),
            pool_create_ms: d.u64("database.pool_create_ms", &db.pool_create_ms, 0),
            warm_up: db.warm_up.unwrap_or(true),
            breaker: db.breaker.unwrap_or(true),
            single_flight: db.single_flight.unwrap_or(true),
            join_stale_loads: db.join_stale_loads.unwrap_or(false),
            negative_cache_ms: d.u64("database.negative_cache_ms", &db.negative_cache_ms, 1000),
            query_timeout_ms: d.u64("database.query_timeout_ms", &db.query_timeout_ms, 2000),
            pool_size: d.u64("database.pool_size", &db.pool_size, 16) as usize,
        });

        let mut fault_plans = Vec::new();
        for (i, fault) in faults.iter().enumerate() {
            fault_plans.push(d.fault(fault, &format!("faults[{i}]")));
        }
        let v = Validator {
            path: &self.path,
            source: &self.source,
        };
        let violation = v
            .checkers(&expect.violation, "expect.violation")
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let memory_max_bytes = d.opt("expect.memory_max_bytes", &expect.memory_max_bytes);
        let metrics = MetricLimits {
            get_p99_ms_max: d.opt("expect.get_p99_ms_max", &expect.get_p99_ms_max),
            db_peak_concurrency_max: d.opt(
                "expect.db_peak_concurrency_max",
                &expect.db_peak_concurrency_max,
            ),
            db_refused_max: d.opt("expect.db_refused_max", &expect.db_refused_max),
            db_queries_max: d.opt("expect.db_queries_max", &expect.db_queries_max),
            first_get_ok: expect.first_get_ok.unwrap_or(false),
        };
        let pass = match v
            .checkers(&expect.pass, "expect.pass")
            .map_err(|e| e.to_string())?
        {
            Some(pass) => pass,
            None => Checker::ALL
                .into_iter()
                .filter(|c| !violation.contains(c))
                .filter(|c| *c != Checker::Memory || memory_max_bytes.is_some())
                .filter(|c| *c != Checker::Metrics || metrics.any())
                .collect(),
        };
        let violation_in_any_seed = expect
            .violation_in
            .as_ref()
            .is_some_and(|within| within.get_ref() == "any_seed");
        let expect = Expect {
            pass,
            violation,
            violation_in_any_seed,
            clock_skew_ms: d.u64("expect.clock_skew_ms", &expect.clock_skew_ms, 5),
            memory_max_bytes,
            metrics,
        };
        Ok(Plan {
            name: self.name(),
            variant: variant.map(str::to_string),
            nodes,
            config,
            workload,
            faults: fault_plans,
            expect,
            database,
            draws: d.draws,
        })
    }
}

/// Draws ranges from the seed, one RNG per field path, and records every draw.
struct Drawer {
    seed: u64,
    draws: Vec<Draw>,
}

/// FNV-1a: a stable hash of a field path (salts the field's RNG).
fn path_hash(path: &str) -> u64 {
    path.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Drawer {
    fn draw<T: Number>(&mut self, field: &str, param: &Param<T>) -> T {
        if !param.is_range() {
            return param.min;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ path_hash(field));
        let value = T::draw(&mut rng, param.min, param.max);
        self.draws.push(Draw {
            field: field.to_string(),
            value: value.to_string(),
            range: Some(format!("[{}, {}]", param.min, param.max)),
        });
        value
    }

    fn u64(&mut self, field: &str, param: &Option<Param<u64>>, default: u64) -> u64 {
        param.as_ref().map_or(default, |p| self.draw(field, p))
    }

    fn opt<T: Number>(&mut self, field: &str, param: &Option<Param<T>>) -> Option<T> {
        param.as_ref().map(|p| self.draw(field, p))
    }

    fn retry(&mut self, spec: &RetrySpec) -> RetryPolicy {
        let base = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
            max_total: Duration::from_secs(3),
            jitter: Jitter::Full,
        };
        let ms = |d: &mut Drawer, name: &str, p: &Option<Param<u64>>, default: Duration| {
            Duration::from_millis(d.u64(
                &format!("workload.retry.{name}"),
                p,
                default.as_millis() as u64,
            ))
        };
        let max_attempts = self.u64(
            "workload.retry.max_attempts",
            &spec.max_attempts,
            u64::from(base.max_attempts),
        ) as u32;
        let base_delay = ms(self, "base_delay_ms", &spec.base_delay_ms, base.base_delay);
        let max_delay =
            ms(self, "max_delay_ms", &spec.max_delay_ms, base.max_delay).max(base_delay);
        let max_total = ms(self, "max_total_ms", &spec.max_total_ms, base.max_total);
        match spec.policy.get_ref().as_str() {
            "none" => RetryPolicy {
                max_attempts: 1,
                ..base
            },
            // A fixed delay: the exponential part capped at its base, no jitter.
            "fixed" => RetryPolicy {
                max_attempts,
                base_delay,
                max_delay: base_delay,
                max_total,
                jitter: Jitter::None,
            },
            "exponential" => RetryPolicy {
                max_attempts,
                base_delay,
                max_delay,
                max_total,
                jitter: Jitter::None,
            },
            // Validated: the only other policy is `exponential_jitter`.
            _ => RetryPolicy {
                max_attempts,
                base_delay,
                max_delay,
                max_total,
                jitter: Jitter::Full,
            },
        }
    }

    fn node_ref(value: &Spanned<toml::Value>) -> NodeRef {
        // Validated at load: an integer in range, "leader" or "follower".
        match value.get_ref() {
            toml::Value::Integer(n) => NodeRef::Index(*n as usize - 1),
            toml::Value::String(s) if s == "follower" => NodeRef::Follower,
            _ => NodeRef::Leader,
        }
    }

    fn fault(&mut self, fault: &FaultSpec, at: &str) -> FaultPlan {
        let at_ms = self.draw(&format!("{at}.at_ms"), &fault.at_ms);
        let duration_ms = self.opt(&format!("{at}.duration_ms"), &fault.duration_ms);
        let node = || {
            fault
                .node
                .as_ref()
                .map_or(NodeRef::Leader, Drawer::node_ref)
        };
        let action = match fault.kind.get_ref().as_str() {
            "isolate" => FaultAction::Isolate(node()),
            "partition" => FaultAction::Partition(
                fault
                    .groups
                    .as_ref()
                    .map(|g| {
                        g.get_ref()
                            .iter()
                            .map(|group| group.iter().map(|n| *n as usize - 1).collect())
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            "one_way" => FaultAction::OneWay {
                from: fault
                    .from
                    .as_ref()
                    .map_or(NodeRef::Leader, Drawer::node_ref),
                to: fault
                    .to
                    .as_ref()
                    .map_or(NodeRef::Follower, Drawer::node_ref),
            },
            "clock" => FaultAction::Clock {
                node: node(),
                rate: self.opt(&format!("{at}.rate"), &fault.rate),
                jump_ms: self.opt(&format!("{at}.jump_ms"), &fault.jump_ms),
            },
            "pause" => FaultAction::Pause(node()),
            "kill" => FaultAction::Kill(node()),
            "power_loss" => FaultAction::PowerLoss(node()),
            "restart" => FaultAction::Restart(node()),
            "net" => FaultAction::Net {
                packet_loss: self
                    .opt(&format!("{at}.packet_loss"), &fault.packet_loss)
                    .unwrap_or(0.0),
                latency_ms: fault.latency_ms.as_ref().map_or((1, 10), PairSpec::get),
            },
            // Validated: the only other kind is `heal`.
            _ => FaultAction::Heal,
        };
        FaultPlan {
            at_ms,
            duration_ms,
            action,
        }
    }
}
