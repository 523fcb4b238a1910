//! The scenario format as written: the serde structs of a file, with the span of every value
//! kept for error messages. Nothing here is validated or drawn (see `validate` and `plan`).
//!
//! Every scalar parameter is a value or a range (`[a, b]` or `{ min = a, max = b }`, both ends
//! included): a [`Param`]. The per-operation pairs (`ttl_ms`, `think_ms`, `value_bytes`,
//! `latency_ms`) are always `[min, max]` ([`PairSpec`]) and drawn anew for every operation or
//! packet. The reference is `scenarios/README.md`.

use std::fmt;
use std::ops::Range;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::faults::{Field, NodeRef};

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
    /// Cluster clients with a near cache kept coherent by a Watch stream (their cached reads
    /// are checked for bounded staleness); default 0.
    pub near_cache_clients: Option<Param<u64>>,
}

/// `[config]`: overrides of the nodes' configuration; absent fields keep the product default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    pub heartbeat_ms: Option<Param<u64>>,
    /// Default: the product's (`hyperion_raft::default_election_timeout_ms` of the heartbeat).
    pub election_timeout_ms: Option<Param<u64>>,
    /// Default: the product's (`hyperion_raft::default_lease_ms` of the election timeout).
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
    /// `HYPERION_TRACKING_MAX_KEYS`: the invalidation tracking table's bound per node.
    pub tracking_max_keys: Option<Param<u64>>,
    /// Fault injection: reads served by whoever believes it leads (the 2024-12-03 pre-fix bug).
    pub unsafe_leader_reads: Option<bool>,
    /// Fault injection: the read path leaks a clone of every value (the 2024-11-22 bug).
    pub retain_read_values: Option<bool>,
    /// Raft mutations (fault injection in the core).
    pub disable_vote_stickiness: Option<bool>,
    pub skip_lease_validation: Option<bool>,
    pub forget_term_and_vote: Option<bool>,
    /// Fault injection by name: any of `hyperion::faults::FaultInjection::SWITCHES` (the
    /// booleans above are the older spelling of five of them).
    pub switches: Option<Spanned<Vec<String>>>,
}

impl ConfigSpec {
    /// `self` with every field `over` sets replaced.
    pub fn overridden_by(&self, over: &ConfigSpec) -> ConfigSpec {
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
            tracking_max_keys,
            unsafe_leader_reads,
            retain_read_values,
            disable_vote_stickiness,
            skip_lease_validation,
            forget_term_and_vote,
            switches
        )
    }

    /// Where the file sets the numeric field `name` (as in `[config]`), if it does.
    pub fn span_of(&self, name: &str) -> Option<Range<usize>> {
        let param = match name {
            "heartbeat_ms" => &self.heartbeat_ms,
            "election_timeout_ms" => &self.election_timeout_ms,
            "lease_ms" => &self.lease_ms,
            "snapshot_entries" => &self.snapshot_entries,
            "stale_grace_ms" => &self.stale_grace_ms,
            "cache_size_mb" => &self.cache_size_mb,
            "eviction_batch_size" => &self.eviction_batch_size,
            "max_value_size_kb" => &self.max_value_size_kb,
            "tracking_max_keys" => &self.tracking_max_keys,
            _ => return None,
        };
        param.as_ref().map(|p| p.span.clone())
    }
}

/// A per-operation range (`[min, max]`), drawn by the workload for every operation.
#[derive(Debug, Clone, Deserialize)]
pub struct PairSpec(pub Spanned<[u64; 2]>);

impl PairSpec {
    pub fn get(&self) -> (u64, u64) {
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
    /// The near-cache clients' staleness bound, ms (default 500); their syncs go out every
    /// fifth of it.
    pub near_cache_bound_ms: Option<Param<u64>>,
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
    pub fn overridden_by(&self, over: &DatabaseSpec) -> DatabaseSpec {
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

    /// Where the file sets the numeric field `name` (as in `[database]`), if it does.
    pub fn span_of(&self, name: &str) -> Option<Range<usize>> {
        let param = match name {
            "max_connections" => &self.max_connections,
            "connection_wait_ms" => &self.connection_wait_ms,
            "pool_create_ms" => &self.pool_create_ms,
            "negative_cache_ms" => &self.negative_cache_ms,
            "query_timeout_ms" => &self.query_timeout_ms,
            "pool_size" => &self.pool_size,
            _ => return None,
        };
        param.as_ref().map(|p| p.span.clone())
    }
}

/// One `[[faults]]` entry (top level: `FaultFields<Param<u64>>`, when it happens is required),
/// or one of the actions in its `with` list (`FaultFields<Option<Param<u64>>>`: its timing is
/// the fault's, so it may not set any). Which of the action fields apply depends on `kind`
/// (the fault table, [`crate::faults::KINDS`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultFields<At> {
    /// When, in simulated ms since the workload started (for a repetition: since the previous
    /// one ended).
    pub at_ms: At,
    pub kind: Spanned<String>,
    /// How long until the fault is undone (heal, restart, resume, clock rate back to 1).
    pub duration_ms: Option<Param<u64>>,
    /// The fault happens this many times in a row, each time `at_ms` (drawn anew) after the
    /// previous time ended; default 1.
    pub repeat: Option<Spanned<u64>>,
    /// More actions applied at the same instant, against the same nodes, and undone with it.
    pub with: Option<Vec<Spanned<WithSpec>>>,
    /// A node number (1-based, as in `node1`), `"leader"`, `"follower"`, `"followers"`,
    /// `"all"` or `"each"`, resolved when the fault fires.
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
    /// `overload`: reads per second the clients send the node, and how many it can serve.
    pub requests_per_s: Option<Param<u64>>,
    pub serves_per_s: Option<Param<u64>>,
}

/// A `[[faults]]` entry.
pub type FaultSpec = FaultFields<Param<u64>>;
/// An action of a fault's `with` list.
pub type WithSpec = FaultFields<Option<Param<u64>>>;

impl<At> FaultFields<At> {
    /// Where the file sets `field`, if it does.
    pub fn span(&self, field: Field) -> Option<Range<usize>> {
        match field {
            Field::Node => self.node.as_ref().map(Spanned::span),
            Field::Groups => self.groups.as_ref().map(Spanned::span),
            Field::From => self.from.as_ref().map(Spanned::span),
            Field::To => self.to.as_ref().map(Spanned::span),
            Field::Rate => self.rate.as_ref().map(|p| p.span.clone()),
            Field::JumpMs => self.jump_ms.as_ref().map(|p| p.span.clone()),
            Field::PacketLoss => self.packet_loss.as_ref().map(|p| p.span.clone()),
            Field::LatencyMs => self.latency_ms.as_ref().map(|p| p.0.span()),
            Field::RequestsPerS => self.requests_per_s.as_ref().map(|p| p.span.clone()),
            Field::ServesPerS => self.serves_per_s.as_ref().map(|p| p.span.clone()),
        }
    }
}

/// What a `node`, `from` or `to` value says, before it is checked against the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSpec {
    /// A node, a role or every node.
    Ref(NodeRef),
    /// Every node in turn (the fault repeats once per node, node1 first).
    Each,
}

impl NodeSpec {
    /// Reads a value: an integer ≥ 1 or one of the names; `None` for anything else.
    pub fn read(value: &toml::Value) -> Option<NodeSpec> {
        match value {
            toml::Value::Integer(n) if *n >= 1 => {
                Some(NodeSpec::Ref(NodeRef::Index(usize::try_from(*n - 1).ok()?)))
            }
            toml::Value::String(s) => match s.as_str() {
                "leader" => Some(NodeSpec::Ref(NodeRef::Leader)),
                "follower" => Some(NodeSpec::Ref(NodeRef::Follower)),
                "followers" => Some(NodeSpec::Ref(NodeRef::Followers)),
                "all" => Some(NodeSpec::Ref(NodeRef::All)),
                "each" => Some(NodeSpec::Each),
                _ => None,
            },
            _ => None,
        }
    }
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
    /// The cache may evict (a small `cache_size_mb`): the linearizability checker explains any
    /// absence by an eviction (default false: an absence needs a delete or an expiry).
    pub evictions: Option<bool>,
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
    /// how many times leadership may change hands after the first election,
    pub leader_changes_max: Option<Param<u64>>,
    /// and whether the first Get of the run must succeed (the 2025-01-08 cold start).
    pub first_get_ok: Option<bool>,
    /// Coverage points of the product (`point`, or `point@condition` for a fault condition
    /// active at the time) that must fire in at least one seed of a sweep or replay.
    pub sometimes: Option<Spanned<Vec<String>>>,
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
    /// `[node.N]`: overrides of `[config]` for node N alone (1-based), to build a cluster whose
    /// nodes are configured differently.
    #[serde(default)]
    pub node: std::collections::BTreeMap<String, Spanned<ConfigSpec>>,
    #[serde(default)]
    pub workload: WorkloadFileSpec,
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    #[serde(default)]
    pub expect: ExpectSpec,
    /// The simulated system of record.
    pub database: Option<DatabaseSpec>,
    /// Code-level fault points (`hyperion::runtime::buggify`): each seed enables a seeded half
    /// of them, and the banner lists which.
    pub buggify: Option<bool>,
    pub regression: Option<RegressionSpec>,
    #[serde(default)]
    pub variant: Vec<VariantSpec>,
}
