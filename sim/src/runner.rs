//! Runs one [`Plan`] (a scenario file drawn for one seed) in the current madsim runtime: starts
//! the cluster with the config overrides, runs the workload and the fault timeline, samples
//! leaders, terms and memory into the [`Trace`], heals, and runs every checker.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use madsim::net::NetSim;

use crate::cluster::{DatabaseSetup, SimCluster};
use crate::monitor::Monitor;
use crate::scenarios::{check_history, heal_and_check, Findings};
use crate::spec::{
    Checker, DatabasePlan, Expect, FaultAction, FaultPlan, MetricLimits, NodeRef, Plan,
};
use crate::trace::{Event, Trace, TraceLine};
use crate::workload::{self, Recorder};
use hyperion::db::{SimDatabase, SimDbConfig};

/// How often leaders, terms and node liveness are sampled into the trace.
pub const ROLE_SAMPLE_INTERVAL: Duration = Duration::from_millis(5);
/// How often memory is sampled.
pub const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(1000);

/// What one run produced.
#[derive(Debug)]
pub struct RunReport {
    pub findings: Findings,
    pub trace: Vec<TraceLine>,
    /// Simulated time the whole run took, from cluster start to the last check.
    pub sim_ms: u64,
    /// Largest memory sample of any node (store-accounted + retained bytes).
    pub memory_peak_bytes: u64,
}

impl RunReport {
    /// A checker's findings.
    pub fn of(&self, checker: Checker) -> &[String] {
        match checker {
            Checker::Linearizability => &self.findings.linearizability,
            Checker::Raft => &self.findings.raft,
            Checker::Liveness => &self.findings.liveness,
            Checker::Memory => &self.findings.memory,
            Checker::Metrics => &self.findings.metrics,
        }
    }

    /// Whether a checker the expectations list under `violation` found something.
    pub fn violation_found(&self, expect: &Expect) -> bool {
        expect.violation.iter().any(|c| !self.of(*c).is_empty())
    }

    /// Judges the run against the expectations: `Ok(summary)` when met, `Err(summary)` when not.
    pub fn judge(&self, expect: &Expect) -> Result<String, String> {
        let failed: Vec<&str> = expect
            .pass
            .iter()
            .filter(|c| !self.of(**c).is_empty())
            .map(|c| c.name())
            .collect();
        let found: Vec<&str> = expect
            .violation
            .iter()
            .filter(|c| !self.of(**c).is_empty())
            .map(|c| c.name())
            .collect();
        let mut problems = Vec::new();
        if !failed.is_empty() {
            problems.push(format!(
                "must pass but found violations: {}",
                failed.join(", ")
            ));
        }
        if !expect.violation.is_empty() && found.is_empty() && !expect.violation_in_any_seed {
            problems.push(format!(
                "expected a violation from {} but none was found",
                expect
                    .violation
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ));
        }
        if problems.is_empty() {
            let mut met = Vec::new();
            if !expect.pass.is_empty() {
                met.push(format!(
                    "passed: {}",
                    expect
                        .pass
                        .iter()
                        .map(|c| c.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !found.is_empty() {
                met.push(format!("violation found as expected: {}", found.join(", ")));
            } else if !expect.violation.is_empty() {
                met.push(
                    "no violation in this seed (required of at least one of the seeds together)"
                        .to_string(),
                );
            }
            Ok(met.join("; "))
        } else {
            Err(problems.join("; "))
        }
    }
}

fn resolve(cluster: &SimCluster, node: NodeRef) -> Option<usize> {
    match node {
        NodeRef::Index(i) => Some(i),
        NodeRef::Leader => cluster.leader(),
        NodeRef::Follower => {
            let leader = cluster.leader();
            (0..cluster.servers.len())
                .find(|&i| Some(i) != leader && cluster.servers[i].status().is_some())
        }
    }
}

fn name(node: usize) -> String {
    format!("node{}", node + 1)
}

/// `node2 (the leader)` for a role-resolved node, `node2` for a numbered one.
fn who(n: usize, node: NodeRef) -> String {
    match node {
        NodeRef::Index(_) => name(n),
        _ => format!("{} ({node})", name(n)),
    }
}

fn names(nodes: &[usize]) -> String {
    nodes.iter().map(|&n| name(n)).collect::<Vec<_>>().join(",")
}

/// Shared state of the fault tasks: nodes they paused (resumed before the liveness check).
#[derive(Default)]
struct FaultState {
    paused: std::sync::Mutex<BTreeSet<usize>>,
}

/// Applies one fault at its time and undoes it after its duration.
async fn run_fault(
    cluster: Arc<SimCluster>,
    fault: FaultPlan,
    trace: Trace,
    state: Arc<FaultState>,
) {
    madsim::time::sleep(Duration::from_millis(fault.at_ms)).await;
    let for_ms = fault
        .duration_ms
        .map_or(String::new(), |d| format!(" for {d} ms"));
    let others =
        |n: usize| -> Vec<usize> { (0..cluster.servers.len()).filter(|&i| i != n).collect() };
    let skip = |what: &str, node: NodeRef| {
        trace.record(Event::Fault {
            text: format!("{what} {node}: skipped (no such node at that moment)"),
        });
    };
    // Each arm applies the fault and returns how to undo it (None: nothing to undo).
    let undo: Option<(String, Box<dyn FnOnce()>)> = match fault.action.clone() {
        FaultAction::Isolate(node) => {
            let Some(n) = resolve(&cluster, node) else {
                return skip("isolate", node);
            };
            cluster.isolate(n);
            trace.record(Event::Fault {
                text: format!("isolate {} from the other servers{for_ms}", who(n, node)),
            });
            let rest = others(n);
            let cluster = Arc::clone(&cluster);
            Some((
                format!("{} rejoins", name(n)),
                Box::new(move || cluster.unpartition(&[n], &rest)),
            ))
        }
        FaultAction::Partition(groups) => {
            for (i, a) in groups.iter().enumerate() {
                for b in &groups[i + 1..] {
                    cluster.partition(a, b);
                }
            }
            let shown = groups
                .iter()
                .map(|g| format!("[{}]", names(g)))
                .collect::<Vec<_>>()
                .join(" | ");
            trace.record(Event::Fault {
                text: format!("partition {shown}{for_ms}"),
            });
            let cluster = Arc::clone(&cluster);
            Some((
                format!("partition {shown} heals"),
                Box::new(move || {
                    for (i, a) in groups.iter().enumerate() {
                        for b in &groups[i + 1..] {
                            cluster.unpartition(a, b);
                        }
                    }
                }),
            ))
        }
        FaultAction::OneWay { from, to } => {
            let (Some(f), Some(t)) = (resolve(&cluster, from), resolve(&cluster, to)) else {
                return skip("one-way cut from", from);
            };
            cluster.cut_one_way(f, t);
            trace.record(Event::Fault {
                text: format!("cut {} -> {} (one way){for_ms}", name(f), name(t)),
            });
            let cluster = Arc::clone(&cluster);
            Some((
                format!("link {} -> {} restored", name(f), name(t)),
                Box::new(move || cluster.heal_one_way(f, t)),
            ))
        }
        FaultAction::Clock {
            node,
            rate,
            jump_ms,
        } => {
            let Some(n) = resolve(&cluster, node) else {
                return skip("clock of", node);
            };
            let clock = cluster.servers[n].clock.clone();
            let mut what = Vec::new();
            if let Some(rate) = rate {
                clock.set_rate(rate);
                what.push(format!("rate {rate}"));
            }
            if let Some(jump_ms) = jump_ms {
                clock.jump_ms(jump_ms);
                what.push(format!("jump {jump_ms:+} ms"));
            }
            trace.record(Event::Fault {
                text: format!("clock of {}: {}{for_ms}", who(n, node), what.join(", ")),
            });
            Some((
                format!("clock of {} back to rate 1", name(n)),
                Box::new(move || clock.set_rate(1.0)),
            ))
        }
        FaultAction::Pause(node) => {
            let Some(n) = resolve(&cluster, node) else {
                return skip("pause", node);
            };
            cluster.pause(n);
            state
                .paused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(n);
            trace.record(Event::Fault {
                text: format!("pause {}{for_ms}", who(n, node)),
            });
            let cluster = Arc::clone(&cluster);
            let state = Arc::clone(&state);
            Some((
                format!("resume {}", name(n)),
                Box::new(move || {
                    cluster.resume(n);
                    state
                        .paused
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&n);
                }),
            ))
        }
        FaultAction::Kill(node) | FaultAction::PowerLoss(node) => {
            let power = matches!(fault.action, FaultAction::PowerLoss(_));
            let Some(n) = resolve(&cluster, node) else {
                return skip(if power { "power loss of" } else { "kill" }, node);
            };
            if power {
                cluster.power_loss(n);
            } else {
                cluster.kill(n);
            }
            trace.record(Event::Fault {
                text: format!(
                    "{} {}{for_ms}",
                    if power {
                        "power loss (unsynced writes lost) of"
                    } else {
                        "kill"
                    },
                    who(n, node)
                ),
            });
            let cluster = Arc::clone(&cluster);
            Some((
                format!("restart {}", name(n)),
                Box::new(move || cluster.restart(n)),
            ))
        }
        FaultAction::Restart(node) => {
            let Some(n) = resolve(&cluster, node) else {
                return skip("restart", node);
            };
            // Always kill first: a restart without a kill keeps the sockets bound (DESIGN §3).
            cluster.kill(n);
            cluster.restart(n);
            trace.record(Event::Fault {
                text: format!("restart {}", who(n, node)),
            });
            None
        }
        FaultAction::Heal => {
            cluster.heal();
            trace.record(Event::Fault {
                text: "heal every link between servers".to_string(),
            });
            None
        }
        FaultAction::Net {
            packet_loss,
            latency_ms: (low, high),
        } => {
            NetSim::current().update_config(|config| {
                config.packet_loss_rate = packet_loss;
                config.send_latency = Duration::from_millis(low)..Duration::from_millis(high + 1);
            });
            trace.record(Event::Fault {
                text: format!(
                    "network: packet loss {packet_loss}, latency {low}-{high} ms{for_ms}"
                ),
            });
            Some((
                "network back to defaults".to_string(),
                Box::new(|| NetSim::current().update_config(|config| *config = Default::default())),
            ))
        }
    };
    if let (Some(duration_ms), Some((text, undo))) = (fault.duration_ms, undo) {
        madsim::time::sleep(Duration::from_millis(duration_ms)).await;
        undo();
        trace.record(Event::FaultEnd { text });
    }
}

/// Samples leaders, terms, node liveness and memory into the trace until `stop`; checks the
/// memory bound. Returns the memory findings and the peak.
async fn sample_timeline(
    cluster: Arc<SimCluster>,
    trace: Trace,
    stop: Arc<AtomicBool>,
    memory_max_bytes: Option<u64>,
) -> (Vec<String>, u64) {
    let n = cluster.servers.len();
    let mut running = vec![true; n];
    let mut leading: Vec<Option<u64>> = vec![None; n];
    let mut exceeded = vec![false; n];
    let mut findings = Vec::new();
    let mut peak = 0;
    let mut next_memory_ms = 0;
    loop {
        let now_ms = trace.now_ms();
        for (i, server) in cluster.servers.iter().enumerate() {
            let status = server.status();
            if status.is_some() != running[i] {
                running[i] = status.is_some();
                trace.record(if running[i] {
                    Event::NodeUp { node: i + 1 }
                } else {
                    Event::NodeDown { node: i + 1 }
                });
            }
            let now_leading = status
                .filter(|s| s.role == Some(hyperion_raft::Role::Leader))
                .map(|s| s.term);
            if now_leading != leading[i] {
                if let Some(term) = leading[i] {
                    trace.record(Event::StepDown { node: i + 1, term });
                }
                if let Some(term) = now_leading {
                    trace.record(Event::Leader { node: i + 1, term });
                }
                leading[i] = now_leading;
            }
        }
        let stopping = stop.load(Ordering::Relaxed);
        if now_ms >= next_memory_ms || stopping {
            next_memory_ms = now_ms + MEMORY_SAMPLE_INTERVAL.as_millis() as u64;
            for (i, server) in cluster.servers.iter().enumerate() {
                let (Some(stats), Some(retained_bytes)) =
                    (server.stats(), server.retained_read_bytes())
                else {
                    continue;
                };
                let total = stats.used_bytes + retained_bytes;
                peak = peak.max(total);
                trace.record(Event::Memory {
                    node: i + 1,
                    store_bytes: stats.used_bytes,
                    retained_bytes,
                    entries: stats.entries,
                });
                if let Some(max) = memory_max_bytes {
                    if total > max && !exceeded[i] {
                        exceeded[i] = true;
                        findings.push(format!(
                            "t={now_ms}ms node{} holds {total} bytes (store {} + retained {retained_bytes}), above the bound of {max}",
                            i + 1,
                            stats.used_bytes
                        ));
                    }
                }
            }
        }
        if stopping {
            return (findings, peak);
        }
        madsim::time::sleep(ROLE_SAMPLE_INTERVAL).await;
    }
}

/// Runs `plan` under the current madsim runtime (seed `seed`).
pub async fn run_plan(plan: &Plan, seed: u64) -> RunReport {
    let started = hyperion::runtime::now();
    let config = plan.config.clone();
    let database = plan.database.as_ref().map(|db| database_setup(db, seed));
    if let Some(setup) = &database {
        // The schema exists from earlier deploys: a lazily connecting node (the 2025-01-08
        // pre-fix) does not migrate it.
        use hyperion::db::Database;
        setup
            .db
            .migrate()
            .await
            .expect("the simulated database migrates");
    }
    let db_plan = plan.database.clone();
    let cluster = Arc::new(SimCluster::start_with(
        plan.nodes,
        |c| {
            config.apply(c);
            if let Some(db) = &db_plan {
                c.database.negative_cache_ms = db.negative_cache_ms;
                c.database.query_timeout_ms = db.query_timeout_ms;
                c.faults.no_read_through_single_flight = !db.single_flight;
                c.faults.join_stale_loads = db.join_stale_loads;
            }
        },
        database,
    ));
    let election_timeout = plan.config.election_timeout();
    let mut findings = Findings::default();
    let elected = cluster
        .wait_for_leader((election_timeout * 4).max(Duration::from_secs(6)))
        .await;
    let trace = Trace::starting_now();
    let recorder = Recorder::new();
    if elected.is_none() {
        let errors: Vec<String> = cluster
            .servers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.start_error().map(|e| format!("{}: {e}", name(i))))
            .collect();
        findings.liveness.push(format!(
            "no leader within 4 election timeouts of start{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(" (start errors: {})", errors.join("; "))
            }
        ));
        return finish(findings, &trace, started, 0);
    }
    trace.record(Event::Note {
        text: format!(
            "workload starts: {} cluster + {} pinned clients, {} keys, {} ms",
            plan.workload.cluster_clients,
            plan.workload.pinned_clients,
            plan.workload.keys,
            plan.workload.duration.as_millis()
        ),
    });
    if plan.workload.preload_keys > 0 {
        workload::preload(&cluster, &plan.workload, &recorder).await;
        trace.record(Event::Note {
            text: format!(
                "preloaded {} keys with TTL {} ms",
                plan.workload.preload_keys, plan.workload.preload_ttl_ms
            ),
        });
    }
    let monitor = Monitor::default();
    let monitor_task = madsim::task::spawn_local(
        monitor
            .clone()
            .run(Arc::clone(&cluster), hyperion::runtime::now()),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = madsim::task::spawn_local(sample_timeline(
        Arc::clone(&cluster),
        trace.clone(),
        Arc::clone(&stop),
        plan.expect.memory_max_bytes,
    ));
    let state = Arc::new(FaultState::default());
    let faults: Vec<_> = plan
        .faults
        .iter()
        .map(|fault| {
            madsim::task::spawn_local(run_fault(
                Arc::clone(&cluster),
                fault.clone(),
                trace.clone(),
                Arc::clone(&state),
            ))
        })
        .collect();
    workload::run(&cluster, &plan.workload, &recorder, seed).await;
    trace.record(Event::Note {
        text: "workload ends".to_string(),
    });
    for fault in faults {
        let _ = fault.await;
    }

    // Heal: resume paused nodes, network back to defaults, links and killed nodes in liveness.
    let paused: Vec<usize> = state
        .paused
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    for node in paused {
        cluster.resume(node);
    }
    NetSim::current().update_config(|config| *config = Default::default());
    trace.record(Event::Note {
        text: "heal everything; liveness check".to_string(),
    });
    heal_and_check(
        &cluster,
        monitor,
        monitor_task,
        election_timeout,
        &mut findings,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (memory, peak) = sampler.await.unwrap_or_default();
    findings.memory = memory;

    let history = recorder.history();
    findings.ops = history.ops().len();
    findings.linearizability = check_history(&history, plan.expect.clock_skew_ms);
    let metrics = Metrics::of(&history, cluster.database.as_ref());
    trace.record(Event::Note {
        text: metrics.render(),
    });
    findings.metrics = metrics.violations(&plan.expect.metrics);
    for op in history.ops() {
        trace.record_at(op.invoke_ms, Event::Op { op: op.clone() });
    }
    finish(findings, &trace, started, peak)
}

/// The simulated database and how nodes use it, for a drawn `[database]`.
fn database_setup(db: &DatabasePlan, seed: u64) -> DatabaseSetup {
    use rand::SeedableRng;
    let database = SimDatabase::new(
        SimDbConfig {
            latency_min: Duration::from_millis(db.latency_ms.0),
            latency_max: Duration::from_millis(db.latency_ms.1),
            connection_wait: Duration::from_millis(db.connection_wait_ms),
            pool_create: Duration::from_millis(db.pool_create_ms),
            ..SimDbConfig::default()
        },
        db.max_connections,
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xdb),
    );
    let mut client = hyperion::config::DatabaseConfig {
        pool_size: db.pool_size,
        query_timeout_ms: db.query_timeout_ms,
        ..Default::default()
    }
    .client_config();
    client.coalesce_loads = db.single_flight;
    if db.join_stale_loads {
        client.join_rule = hyperion::single_flight::JoinRule::AnyFlight;
    }
    if !db.breaker {
        // A breaker that never opens: the 2024-10-15 pre-fix.
        client.breaker.min_calls = u32::MAX;
    }
    DatabaseSetup {
        db: database,
        warm_up: db.warm_up,
        client,
    }
}

/// What the clients saw, and what the database went through.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub gets: usize,
    pub hits: usize,
    pub get_p50_ms: u64,
    pub get_p99_ms: u64,
    /// The first Get of the run succeeded (answered at all), if there was one.
    pub first_get_ok: Option<bool>,
    pub db_queries: u64,
    pub db_peak_concurrency: u64,
    pub db_refused: u64,
}

impl Metrics {
    pub fn of(history: &hyperion_checker::History, db: Option<&SimDatabase>) -> Metrics {
        use hyperion_checker::{Op, OpResult, Outcome};
        let mut latencies = Vec::new();
        let mut hits = 0;
        let mut first: Option<(u64, bool)> = None;
        for op in history.ops() {
            if !matches!(op.op, Op::Get { .. }) {
                continue;
            }
            let Some(returned) = op.return_ms else {
                continue;
            };
            latencies.push(returned - op.invoke_ms);
            let outcome = op.effective_outcome();
            if matches!(outcome, Outcome::Ok(OpResult::Hit { .. })) {
                hits += 1;
            }
            let ok = matches!(outcome, Outcome::Ok(_));
            if first.is_none_or(|(at, _)| op.invoke_ms < at) {
                first = Some((op.invoke_ms, ok));
            }
        }
        latencies.sort_unstable();
        let percentile = |p: usize| -> u64 {
            if latencies.is_empty() {
                0
            } else {
                latencies[((latencies.len() - 1) * p) / 100]
            }
        };
        let stats = db.map(SimDatabase::stats).unwrap_or_default();
        Metrics {
            gets: latencies.len(),
            hits,
            get_p50_ms: percentile(50),
            get_p99_ms: percentile(99),
            first_get_ok: first.map(|(_, ok)| ok),
            db_queries: stats.total_queries,
            db_peak_concurrency: stats.peak_concurrent,
            db_refused: stats.refused_over_cap,
        }
    }

    pub fn render(&self) -> String {
        let hit_rate = if self.gets == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / self.gets as f64
        };
        format!(
            "metrics: {} gets, hit rate {hit_rate:.1} %, get p50 {} ms, p99 {} ms; database: {} \
             queries, peak {} in flight, {} refused for lack of a connection{}",
            self.gets,
            self.get_p50_ms,
            self.get_p99_ms,
            self.db_queries,
            self.db_peak_concurrency,
            self.db_refused,
            match self.first_get_ok {
                Some(true) => "; first get answered",
                Some(false) => "; first get FAILED",
                None => "",
            }
        )
    }

    /// What exceeds the limits.
    pub fn violations(&self, limits: &MetricLimits) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(max) = limits.get_p99_ms_max {
            if self.get_p99_ms > max {
                found.push(format!("get p99 {} ms exceeds {max} ms", self.get_p99_ms));
            }
        }
        if let Some(max) = limits.db_peak_concurrency_max {
            if self.db_peak_concurrency > max {
                found.push(format!(
                    "database peak concurrency {} exceeds {max}",
                    self.db_peak_concurrency
                ));
            }
        }
        if let Some(max) = limits.db_refused_max {
            if self.db_refused > max {
                found.push(format!(
                    "database refused {} queries for lack of a connection (limit {max})",
                    self.db_refused
                ));
            }
        }
        if let Some(max) = limits.db_queries_max {
            if self.db_queries > max {
                found.push(format!(
                    "the database received {} queries (limit {max})",
                    self.db_queries
                ));
            }
        }
        if limits.first_get_ok && self.first_get_ok == Some(false) {
            found.push("the first Get of the run failed".to_string());
        }
        found
    }
}

/// Records the findings in the trace and assembles the report.
fn finish(
    findings: Findings,
    trace: &Trace,
    started: hyperion::runtime::Instant,
    memory_peak_bytes: u64,
) -> RunReport {
    let mut report = RunReport {
        findings,
        trace: Vec::new(),
        sim_ms: hyperion::runtime::now()
            .saturating_duration_since(started)
            .as_millis() as u64,
        memory_peak_bytes,
    };
    for checker in Checker::ALL {
        for text in report.of(checker) {
            trace.record(Event::Finding {
                checker: checker.name().to_string(),
                text: text.clone(),
            });
        }
    }
    report.trace = trace.lines();
    report
}
