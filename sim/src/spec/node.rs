//! What a node's configuration becomes under a scenario: the drawn `[config]` overrides, the
//! database client's settings, and the fault-injection switches, applied over the simulated
//! node's product configuration and then judged by the product (`Config::validate`).
//!
//! Contract: this is the one place where the scenario format meets the product's
//! configuration. Defaults that follow other settings are the product's own
//! (`hyperion_raft::default_election_timeout_ms`, `default_lease_ms`, as its environment parser
//! applies them), every switch of the format maps onto the one `FaultInjection` value here
//! ([`fault_injection`]), and a node the product would refuse is an error naming the file, the
//! field and the product's message.

use std::ops::Range;

use hyperion::config::{Config, ConfigError, SyncPolicy};
use hyperion::db::DbClientConfig;
use hyperion::faults::FaultInjection;
use hyperion::single_flight::JoinRule;
use hyperion_raft::{default_election_timeout_ms, default_lease_ms, Mutations};

use super::format::{ConfigSpec, DatabaseSpec, FileSpec, VariantSpec};
use super::plan::{DatabasePlan, Drawer, Plan};
use super::validate::Validator;
use super::SpecError;
use crate::cluster::server_config;

/// Node configuration overrides, drawn (`None`: the product default).
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
    pub tracking_max_keys: Option<u64>,
}

impl ConfigPlan {
    /// Draws `[config]` (the file's, with a variant's merged over it).
    pub(super) fn draw(spec: &ConfigSpec, d: &mut Drawer) -> ConfigPlan {
        ConfigPlan::draw_at("config.", spec, d)
    }

    /// Draws a table of overrides whose fields are named `{prefix}name` (`config.`, `node.3.`).
    pub(super) fn draw_at(prefix: &str, spec: &ConfigSpec, d: &mut Drawer) -> ConfigPlan {
        let f = |name: &str| format!("{prefix}{name}");
        ConfigPlan {
            heartbeat_ms: d.opt(&f("heartbeat_ms"), &spec.heartbeat_ms),
            election_timeout_ms: d.opt(&f("election_timeout_ms"), &spec.election_timeout_ms),
            lease_ms: d.opt(&f("lease_ms"), &spec.lease_ms),
            snapshot_entries: d.opt(&f("snapshot_entries"), &spec.snapshot_entries),
            stale_grace_ms: d.opt(&f("stale_grace_ms"), &spec.stale_grace_ms),
            cache_size_mb: d.opt(&f("cache_size_mb"), &spec.cache_size_mb),
            eviction_batch_size: d.opt(&f("eviction_batch_size"), &spec.eviction_batch_size),
            max_value_size_kb: d.opt(&f("max_value_size_kb"), &spec.max_value_size_kb),
            // Validated at load: "always" or "everysec".
            wal_sync: spec.wal_sync.as_ref().map(|s| {
                if s.get_ref() == "always" {
                    SyncPolicy::Always
                } else {
                    SyncPolicy::EverySec
                }
            }),
            stagger_ttl: spec.stagger_ttl,
            enable_compression: spec.enable_compression,
            enable_batching: spec.enable_batching,
            new_eviction_algorithm: spec.new_eviction_algorithm,
            enable_client_caching: spec.enable_client_caching,
            tracking_max_keys: d.opt(&f("tracking_max_keys"), &spec.tracking_max_keys),
        }
    }

    /// Applies the overrides to a node's configuration. A timing left out follows the ones it
    /// derives from, as the product's environment parser does.
    pub fn apply(&self, config: &mut Config) {
        if let Some(heartbeat_ms) = self.heartbeat_ms {
            config.raft.heartbeat_ms = heartbeat_ms;
        }
        config.raft.election_timeout_ms = self
            .election_timeout_ms
            .unwrap_or_else(|| default_election_timeout_ms(config.raft.heartbeat_ms));
        config.raft.lease_duration_ms = self
            .lease_ms
            .unwrap_or_else(|| default_lease_ms(config.raft.election_timeout_ms));
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
            config.eviction_batch_size = usize::try_from(batch).unwrap_or(usize::MAX);
        }
        if let Some(kb) = self.max_value_size_kb {
            config.flags.max_value_size_kb = u32::try_from(kb).unwrap_or(u32::MAX);
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
        if let Some(keys) = self.tracking_max_keys {
            config.tracking_max_keys = keys;
        }
    }
}

/// The product's fault-injection switches a scenario turns on: `[config] switches = [...]` by
/// name, the older booleans `unsafe_leader_reads`, `retain_read_values`,
/// `disable_vote_stickiness`, `skip_lease_validation`, `forget_term_and_vote`, and with a
/// database `[database] single_flight = false` and `join_stale_loads`. Every node runs with this
/// one value. Names were checked at load.
pub fn fault_injection(config: &ConfigSpec, database: Option<&DatabaseSpec>) -> FaultInjection {
    let on = |switch: Option<bool>| switch.unwrap_or(false);
    let mut faults = FaultInjection {
        raft: Mutations {
            disable_vote_stickiness: on(config.disable_vote_stickiness),
            skip_lease_validation: on(config.skip_lease_validation),
            forget_term_and_vote: on(config.forget_term_and_vote),
            ..Mutations::default()
        },
        unsafe_leader_reads: on(config.unsafe_leader_reads),
        retain_read_values: on(config.retain_read_values),
        no_read_through_single_flight: database.is_some_and(|db| db.single_flight == Some(false)),
        join_stale_loads: database.is_some_and(|db| on(db.join_stale_loads)),
        ..FaultInjection::default()
    };
    for name in config.switches.iter().flat_map(|list| list.get_ref()) {
        if let Some(switch) = faults.switch_mut(name) {
            *switch = true;
        }
    }
    faults
}

/// The database client every node builds over the simulated database, from a node's validated
/// configuration: the product's client settings, its fault switches, and the simulator's
/// pre-fix breaker (`[database] breaker = false`: one that never opens, the 2024-10-15 pre-fix).
pub fn db_client_config(node: &Config, db: &DatabasePlan) -> DbClientConfig {
    let mut client = node.database.client_config();
    client.coalesce_loads = !node.faults.no_read_through_single_flight;
    if node.faults.join_stale_loads {
        client.join_rule = JoinRule::AnyFlight;
    }
    if !db.breaker {
        client.breaker.min_calls = u32::MAX;
    }
    client
}

/// The scenario fields that set what each product variable names, most direct first: where a
/// refusal of the product points in the file.
const FIELDS_OF_VARIABLE: &[(&str, &[&str])] = &[
    ("HYPERION_RAFT_HEARTBEAT_MS", &["config.heartbeat_ms"]),
    (
        "HYPERION_RAFT_ELECTION_TIMEOUT_MS",
        &["config.election_timeout_ms", "config.heartbeat_ms"],
    ),
    (
        "HYPERION_RAFT_LEASE_MS",
        &[
            "config.lease_ms",
            "config.election_timeout_ms",
            "config.heartbeat_ms",
        ],
    ),
    (
        "HYPERION_RAFT_SNAPSHOT_ENTRIES",
        &["config.snapshot_entries"],
    ),
    ("HYPERION_STALE_GRACE_MS", &["config.stale_grace_ms"]),
    ("HYPERION_TRACKING_MAX_KEYS", &["config.tracking_max_keys"]),
    (
        "HYPERION_CACHE_SIZE_MB",
        &["config.cache_size_mb", "config.max_value_size_kb"],
    ),
    (
        "HYPERION_EVICTION_BATCH_SIZE",
        &["config.eviction_batch_size"],
    ),
    (
        "HYPERION_FEATURE_FLAGS",
        &["config.max_value_size_kb", "config.cache_size_mb"],
    ),
    ("HYPERION_DB_POOL_SIZE", &["database.pool_size"]),
    (
        "HYPERION_DB_QUERY_TIMEOUT_MS",
        &["database.query_timeout_ms"],
    ),
    (
        "HYPERION_DB_WARMUP_TIMEOUT_MS",
        &["database.query_timeout_ms"],
    ),
];

impl Plan {
    /// Applies the plan to a node's product configuration: `[config]`, the node's own
    /// `[node.N]` overrides (by `config.node_index`), the nodes' database client settings, and
    /// the fault-injection switches.
    pub fn configure(&self, config: &mut Config) {
        self.config.apply(config);
        if let Some(own) = self.per_node.get(&config.node_index) {
            own.apply(config);
        }
        if let Some(db) = &self.database {
            config.database.pool_size = db.pool_size;
            config.database.query_timeout_ms = db.query_timeout_ms;
            config.database.negative_cache_ms = db.negative_cache_ms;
        }
        config.faults = self.injection.clone();
    }

    /// The configuration of server `index`, as the product accepts it.
    pub fn node_config(&self, index: usize) -> Result<Config, ConfigError> {
        let mut config = server_config(index, self.nodes);
        self.configure(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Checks every node's configuration with the product; returns the election timeout they
    /// run with. A refusal names the field of the file that set what the product refused.
    pub(super) fn validated_nodes(
        &self,
        v: &Validator<'_>,
        file: &FileSpec,
        variant: Option<&VariantSpec>,
    ) -> Result<u64, SpecError> {
        let mut election_timeout_ms = 0;
        for index in 0..self.nodes {
            let config = self
                .node_config(index)
                .map_err(|error| refused(v, file, variant, &error))?;
            election_timeout_ms = config.raft.election_timeout_ms;
        }
        Ok(election_timeout_ms)
    }
}

/// The product's refusal as an error of the file: at the field that set what it names (the
/// variant's, if the variant sets it), else at the file's start.
fn refused(
    v: &Validator<'_>,
    file: &FileSpec,
    variant: Option<&VariantSpec>,
    error: &ConfigError,
) -> SpecError {
    let message = format!("the product refuses this node configuration: {error}");
    let candidates = FIELDS_OF_VARIABLE
        .iter()
        .find(|(variable, _)| *variable == error.variable)
        .map_or(&[][..], |(_, fields)| *fields);
    let variant_index = variant.and_then(|chosen| {
        file.variant
            .iter()
            .position(|v| v.name.get_ref() == chosen.name.get_ref())
    });
    for field in candidates {
        if let (Some(variant), Some(i)) = (variant, variant_index) {
            if let Some(span) = span_in(&variant.config, variant.database.as_ref(), field) {
                return v.error(&span, format!("variant[{i}].{field}"), message);
            }
        }
        if let Some(span) = span_in(&file.config, file.database.as_ref(), field) {
            return v.error(&span, *field, message);
        }
    }
    v.error(&(0..0), "config", message)
}

/// Where `config.x` or `database.x` is set in these sections.
fn span_in(
    config: &ConfigSpec,
    database: Option<&DatabaseSpec>,
    field: &str,
) -> Option<Range<usize>> {
    if let Some(name) = field.strip_prefix("config.") {
        return config.span_of(name);
    }
    let name = field.strip_prefix("database.")?;
    database.and_then(|db| db.span_of(name))
}
