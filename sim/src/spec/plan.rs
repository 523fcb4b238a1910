//! Drawing one seed's concrete [`Plan`] from a file: every range drawn, the variant merged in,
//! the fault timeline turned into steps of [`Action`]s, and every node's configuration checked
//! by the product.
//!
//! Contract: each draw uses its own RNG seeded from the seed and the field's path
//! (`faults[1].at_ms`, `faults[0].repeat[2].at_ms`, `faults[0].rate[node2]`), so adding a
//! field never shifts the others, and every draw is listed in [`Plan::draws`] (the run banner
//! prints them).

use std::time::Duration;

use hyperion::faults::FaultInjection;
use hyperion::resilience::{Jitter, RetryPolicy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::format::{FaultFields, FaultSpec, NodeSpec, Number, PairSpec, Param, RetrySpec};
use super::node::ConfigPlan;
use super::validate::Validator;
use super::ScenarioFile;
use crate::faults::{self, Action, NodeRef, PerNode};
use crate::workload::WorkloadSpec;

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

    pub fn parse(name: &str) -> Option<Checker> {
        Checker::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// What a run must show, concretely.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub pass: Vec<Checker>,
    pub violation: Vec<Checker>,
    /// The violation is required of the seeds together, not of each run.
    pub violation_in_any_seed: bool,
    pub clock_skew_ms: u64,
    /// `expect.evictions`: absences may be evictions.
    pub evictions: bool,
    pub memory_max_bytes: Option<u64>,
    pub metrics: MetricLimits,
    /// Coverage points that must fire in some seed (`expect.sometimes`).
    pub sometimes: Vec<String>,
}

/// Thresholds of the metrics checker (`None`: not checked).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricLimits {
    pub get_p99_ms_max: Option<u64>,
    pub db_peak_concurrency_max: Option<u64>,
    pub db_refused_max: Option<u64>,
    pub db_queries_max: Option<u64>,
    pub leader_changes_max: Option<u64>,
    pub first_get_ok: bool,
}

impl MetricLimits {
    pub fn any(&self) -> bool {
        self.get_p99_ms_max.is_some()
            || self.db_peak_concurrency_max.is_some()
            || self.db_refused_max.is_some()
            || self.db_queries_max.is_some()
            || self.leader_changes_max.is_some()
            || self.first_get_ok
    }
}

/// The drawn `[database]` (its fault-injection switches are in [`Plan::injection`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DatabasePlan {
    pub max_connections: usize,
    pub latency_ms: (u64, u64),
    pub connection_wait_ms: u64,
    pub pool_create_ms: u64,
    pub warm_up: bool,
    pub breaker: bool,
    pub negative_cache_ms: u64,
    pub query_timeout_ms: u64,
    pub pool_size: usize,
}

/// One time a fault happens: its actions, applied at one instant and undone together.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultStep {
    /// Since the workload started (the first step) or since the previous step ended.
    pub at_ms: u64,
    pub duration_ms: Option<u64>,
    /// The fault's own action first, then its `with` actions.
    pub actions: Vec<Action>,
}

/// One `[[faults]]` entry: its steps, in order (one, unless it repeats).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    pub steps: Vec<FaultStep>,
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
    /// `[node.N]` overrides, by 0-based node index.
    pub per_node: std::collections::BTreeMap<usize, ConfigPlan>,
    /// The product's fault-injection switches every node runs with (named in the banner).
    pub injection: FaultInjection,
    /// The election timeout the nodes run with (the liveness bound counts in it).
    pub election_timeout_ms: u64,
    pub workload: WorkloadSpec,
    pub faults: Vec<FaultPlan>,
    pub expect: Expect,
    pub database: Option<DatabasePlan>,
    /// The code-level fault points this seed enables (`buggify = true`; empty otherwise).
    pub buggify: Vec<&'static str>,
    pub draws: Vec<Draw>,
}

impl Plan {
    /// The election timeout the nodes run with.
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms)
    }
}

impl ScenarioFile {
    /// Draws the plan of `seed` (of `variant`, for a regression file). Fails if the file names
    /// no such variant, or if a node would run with a configuration the product refuses.
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
        let config_spec = match variant_spec {
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
        let config = ConfigPlan::draw(&config_spec, &mut d);
        let per_node = spec
            .node
            .iter()
            .filter_map(|(number, own)| {
                // Checked at load: a node number of the topology.
                let index = number.parse::<usize>().ok()?.checked_sub(1)?;
                let drawn = ConfigPlan::draw_at(&format!("node.{number}."), own.get_ref(), &mut d);
                (index < nodes).then_some((index, drawn))
            })
            .collect();

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
            near_cache_clients: d.u64(
                "topology.near_cache_clients",
                &spec.topology.near_cache_clients,
                defaults.near_cache_clients as u64,
            ) as usize,
            near_cache_bound: Duration::from_millis(d.u64(
                "workload.near_cache_bound_ms",
                &w.near_cache_bound_ms,
                defaults.near_cache_bound.as_millis() as u64,
            )),
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
            // Set from the fault switches below.
            near_cache_ignores_resync: false,
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
        let database = database_spec.as_ref().map(|db| DatabasePlan {
            max_connections: d.u64("database.max_connections", &db.max_connections, 16) as usize,
            latency_ms: pair(&db.latency_ms, (1, 5)),
            connection_wait_ms: d.u64("database.connection_wait_ms", &db.connection_wait_ms, 0),
            pool_create_ms: d.u64("database.pool_create_ms", &db.pool_create_ms, 0),
            warm_up: db.warm_up.unwrap_or(true),
            breaker: db.breaker.unwrap_or(true),
            negative_cache_ms: d.u64("database.negative_cache_ms", &db.negative_cache_ms, 1000),
            query_timeout_ms: d.u64("database.query_timeout_ms", &db.query_timeout_ms, 2000),
            pool_size: d.u64("database.pool_size", &db.pool_size, 16) as usize,
        });
        let injection = super::node::fault_injection(&config_spec, database_spec.as_ref());
        let buggify = if spec.buggify == Some(true) {
            d.buggify_points()
        } else {
            Vec::new()
        };

        let fault_plans = faults
            .iter()
            .enumerate()
            .map(|(i, fault)| d.fault(fault, &format!("faults[{i}]"), nodes))
            .collect();
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
            leader_changes_max: d.opt("expect.leader_changes_max", &expect.leader_changes_max),
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
            evictions: expect.evictions.unwrap_or(false),
            memory_max_bytes,
            metrics,
            sometimes: expect
                .sometimes
                .as_ref()
                .map(|list| list.get_ref().clone())
                .unwrap_or_default(),
        };
        let mut workload = workload;
        workload.near_cache_ignores_resync = injection.near_cache_ignores_resync;
        let mut plan = Plan {
            name: self.name(),
            variant: variant.map(str::to_string),
            nodes,
            config,
            per_node,
            injection,
            election_timeout_ms: 0,
            workload,
            faults: fault_plans,
            expect,
            database,
            buggify,
            draws: d.draws,
        };
        plan.election_timeout_ms = plan
            .validated_nodes(&v, spec, variant_spec)
            .map_err(|e| e.to_string())?;
        Ok(plan)
    }
}

/// Draws ranges from the seed, one RNG per field path, and records every draw.
pub(super) struct Drawer {
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

    /// A seeded half of the product's fault points (at least one), recorded as a draw.
    fn buggify_points(&mut self) -> Vec<&'static str> {
        use hyperion::runtime::buggify::POINTS;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ path_hash("buggify"));
        let mut points: Vec<&'static str> = POINTS
            .iter()
            .map(|(point, _)| *point)
            .filter(|_| rng.random_bool(0.5))
            .collect();
        if points.is_empty() {
            points.push(POINTS[rng.random_range(0..POINTS.len())].0);
        }
        self.draws.push(Draw {
            field: "buggify".to_string(),
            value: points.join(", "),
            range: Some(format!("a seeded half of {} fault points", POINTS.len())),
        });
        points
    }

    fn u64(&mut self, field: &str, param: &Option<Param<u64>>, default: u64) -> u64 {
        param.as_ref().map_or(default, |p| self.draw(field, p))
    }

    pub(super) fn opt<T: Number>(&mut self, field: &str, param: &Option<Param<T>>) -> Option<T> {
        param.as_ref().map(|p| self.draw(field, p))
    }

    /// One value for every node, or (a range on a target naming several nodes) each node's
    /// own, drawn for every node of the topology.
    fn per_node<T: Number>(
        &mut self,
        field: &str,
        param: &Param<T>,
        many: bool,
        nodes: usize,
    ) -> PerNode<T> {
        if many && param.is_range() {
            PerNode::Each(
                (0..nodes)
                    .map(|n| self.draw(&format!("{field}[node{}]", n + 1), param))
                    .collect(),
            )
        } else {
            PerNode::One(self.draw(field, param))
        }
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

    /// A fault's steps: one, `repeat` of them, or one per node (`node = "each"`, node `k` in
    /// step `k`). The first step's draws keep the fault's own path (`faults[0].at_ms`), later
    /// ones are `faults[0].repeat[k].at_ms`.
    fn fault(&mut self, fault: &FaultSpec, at: &str, nodes: usize) -> FaultPlan {
        let each = fault
            .node
            .as_ref()
            .is_some_and(|n| NodeSpec::read(n.get_ref()) == Some(NodeSpec::Each));
        let steps = if each {
            nodes
        } else {
            fault.repeat.as_ref().map_or(1, |r| *r.get_ref() as usize)
        };
        let steps = (0..steps)
            .map(|step| {
                let at = if step == 0 {
                    at.to_string()
                } else {
                    format!("{at}.repeat[{step}]")
                };
                let at_ms = self.draw(&format!("{at}.at_ms"), &fault.at_ms);
                let duration_ms = self.opt(&format!("{at}.duration_ms"), &fault.duration_ms);
                let mut actions = vec![self.action(fault, &at, nodes, each.then_some(step))];
                for (j, with) in fault.with.iter().flatten().enumerate() {
                    actions.push(self.action(
                        with.get_ref(),
                        &format!("{at}.with[{j}]"),
                        nodes,
                        None,
                    ));
                }
                FaultStep {
                    at_ms,
                    duration_ms,
                    actions,
                }
            })
            .collect();
        FaultPlan { steps }
    }

    /// Draws the fields a (validated) fault sets: exactly those its kind takes.
    fn action<At>(
        &mut self,
        fault: &FaultFields<At>,
        at: &str,
        nodes: usize,
        in_turn: Option<usize>,
    ) -> Action {
        let kind = faults::kind(fault.kind.get_ref()).expect("the kind was validated at load");
        let target = |value: &toml::Spanned<toml::Value>| -> NodeRef {
            match NodeSpec::read(value.get_ref()) {
                Some(NodeSpec::Ref(node)) => node,
                Some(NodeSpec::Each) => {
                    NodeRef::Index(in_turn.expect("`each` is drawn one step per node"))
                }
                None => unreachable!("node targets were validated at load"),
            }
        };
        let mut action = Action::new(kind);
        action.node = fault.node.as_ref().map(target);
        action.from = fault.from.as_ref().map(target);
        action.to = fault.to.as_ref().map(target);
        action.groups = fault.groups.as_ref().map_or_else(Vec::new, |groups| {
            groups
                .get_ref()
                .iter()
                .map(|group| group.iter().map(|n| *n as usize - 1).collect())
                .collect()
        });
        let many = action.node.is_some_and(NodeRef::is_many);
        action.rate = fault
            .rate
            .as_ref()
            .map(|p| self.per_node(&format!("{at}.rate"), p, many, nodes));
        action.jump_ms = fault
            .jump_ms
            .as_ref()
            .map(|p| self.per_node(&format!("{at}.jump_ms"), p, many, nodes));
        action.packet_loss = self.opt(&format!("{at}.packet_loss"), &fault.packet_loss);
        action.latency_ms = fault.latency_ms.as_ref().map(PairSpec::get);
        action.requests_per_s = self.opt(&format!("{at}.requests_per_s"), &fault.requests_per_s);
        action.serves_per_s = self.opt(&format!("{at}.serves_per_s"), &fault.serves_per_s);
        action
    }
}
