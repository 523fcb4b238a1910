//! Runs one [`Plan`] (a scenario file drawn for one seed) in a madsim runtime: starts the
//! cluster with the plan's node configuration, runs the workload and the fault timeline,
//! samples leaders, terms and memory into the [`Trace`], heals, and runs every checker.
//!
//! Checkers: `linearizability` (the recorded client history, `hyperion_checker`), `raft` (the
//! invariant monitor throughout, then the replicas' state machines compared), `liveness` (a
//! leader and a served write within [`LIVENESS_ELECTION_TIMEOUTS`] election timeouts of the
//! heal, then every node applying that write within as many more; and no node exiting except
//! a storage failure while its disk was failing), `memory` and `metrics` (when the plan sets
//! their bounds).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyperion::db::{SimDatabase, SimDbConfig};
use hyperion::runtime::coverage;
use hyperion_checker::{check, CheckerConfig, History, Verdict};

use crate::cluster::{client_node, DatabaseSetup, SimCluster, EXIT_RESTART_MAX};
use crate::faults::{self, Applied, FaultState, Firing};
use crate::metrics::Metrics;
use crate::monitor::{check_state_machines, Monitor};
use crate::spec::{node::db_client_config, Checker, Expect, FaultPlan, Plan, ScenarioFile};
use crate::trace::{to_jsonl, Event, Trace, TraceLine};
use crate::workload::{self, Recorder};

/// How often leaders, terms and node liveness are sampled into the trace.
pub const ROLE_SAMPLE_INTERVAL: Duration = Duration::from_millis(5);
/// How often memory is sampled.
pub const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(1000);
/// Liveness bound: after the faults heal, a leader and a served write within this many election
/// timeouts.
pub const LIVENESS_ELECTION_TIMEOUTS: u32 = 5;
/// Simulated-time limit of one seed: a run that has not finished by then ends in a panic (and
/// fails its expectations).
pub const SEED_TIME_LIMIT: Duration = Duration::from_secs(600);

/// What a run's checkers found.
#[derive(Debug, Default)]
pub struct Findings {
    pub linearizability: Vec<String>,
    pub raft: Vec<String>,
    pub liveness: Vec<String>,
    /// Memory bound exceeded (`expect.memory_max_bytes`).
    pub memory: Vec<String>,
    /// Latency or database thresholds exceeded (the `expect` metric limits).
    pub metrics: Vec<String>,
    pub ops: usize,
}

/// What one run produced.
#[derive(Debug)]
pub struct RunReport {
    pub findings: Findings,
    pub trace: Vec<TraceLine>,
    /// Simulated time the whole run took, from cluster start to the last check.
    pub sim_ms: u64,
    /// Largest memory sample of any node (store-accounted + retained bytes).
    pub memory_peak_bytes: u64,
    /// The clients' recorded history (what the linearizability checker judged).
    pub history: Vec<hyperion_checker::Operation>,
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

/// Applies one `[[faults]]` entry's steps in turn: each at its time, undone after its
/// duration. The actions of a step see one moment of the cluster: their targets are resolved
/// before any is applied, and if one names no node (no leader, say) the step is skipped.
async fn run_fault(
    cluster: Arc<SimCluster>,
    fault: FaultPlan,
    trace: Trace,
    state: Arc<FaultState>,
) {
    for step in &fault.steps {
        madsim::time::sleep(Duration::from_millis(step.at_ms)).await;
        let for_ms = step
            .duration_ms
            .map_or(String::new(), |d| format!(" for {d} ms"));
        let targets: Option<Vec<_>> = step
            .actions
            .iter()
            .map(|action| action.resolve(&cluster))
            .collect();
        let Some(targets) = targets else {
            trace.record(Event::Fault {
                text: format!(
                    "{}: skipped (no such node at that moment)",
                    step.actions[0].described()
                ),
            });
            continue;
        };
        let mut undos = Vec::new();
        let mut conditions = Vec::new();
        for (action, targets) in step.actions.iter().zip(&targets) {
            if let Some(condition) = faults::coverage_condition(action.kind.name) {
                coverage::begin(condition);
                conditions.push(condition);
            }
            let Applied { text, undo } = (action.kind.apply)(&Firing {
                cluster: &cluster,
                state: &state,
                action,
                targets,
                for_ms: for_ms.clone(),
            });
            trace.record(Event::Fault { text });
            undos.extend(undo);
        }
        if let Some(duration_ms) = step.duration_ms {
            madsim::time::sleep(Duration::from_millis(duration_ms)).await;
            for undo in undos {
                (undo.run)();
                trace.record(Event::FaultEnd { text: undo.text });
            }
            for condition in conditions {
                coverage::end(condition);
            }
        }
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
    // Each clock's reading against the trace's at the first sample (what it reads without
    // faults), and the offset last recorded.
    let clock_base: Vec<i64> = cluster
        .servers
        .iter()
        .map(|server| server.clock.now_ms() as i64 - trace.now_ms() as i64)
        .collect();
    let mut clock_shown = vec![0i64; n];
    loop {
        let now_ms = trace.now_ms();
        for (i, server) in cluster.servers.iter().enumerate() {
            let offset_ms = server.clock.now_ms() as i64 - now_ms as i64 - clock_base[i];
            if (offset_ms - clock_shown[i]).abs() >= crate::trace::CLOCK_OFFSET_STEP_MS {
                clock_shown[i] = offset_ms;
                trace.record(Event::Clock {
                    node: i + 1,
                    offset_ms,
                });
            }
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
    let database = plan.database.as_ref().map(|db| {
        let node = plan
            .node_config(0)
            .expect("every node's configuration was validated when the plan was drawn");
        DatabaseSetup {
            db: SimDatabase::new(
                SimDbConfig {
                    latency_min: Duration::from_millis(db.latency_ms.0),
                    latency_max: Duration::from_millis(db.latency_ms.1),
                    connection_wait: Duration::from_millis(db.connection_wait_ms),
                    pool_create: Duration::from_millis(db.pool_create_ms),
                    ..SimDbConfig::default()
                },
                db.max_connections,
                rand::SeedableRng::seed_from_u64(seed ^ 0xdb),
            ),
            warm_up: db.warm_up,
            client: db_client_config(&node, db),
        }
    });
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
    // Code-level fault points from here on (the set-up above is the deploy, not the run).
    hyperion::runtime::buggify::configure(&plan.buggify, seed);
    let cluster = Arc::new(SimCluster::start_with(
        plan.nodes,
        |config| plan.configure(config),
        database,
    ));
    let election_timeout = plan.election_timeout();
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
            .filter_map(|(i, s)| s.start_error().map(|e| format!("node{}: {e}", i + 1)))
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
            "workload starts: {} cluster + {} pinned + {} near-cache clients, {} keys, {} ms",
            plan.workload.cluster_clients,
            plan.workload.pinned_clients,
            plan.workload.near_cache_clients,
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
    state.resume_all(&cluster);
    faults::reset_network();
    coverage::end_all();
    trace.record(Event::Note {
        text: "heal everything; liveness check".to_string(),
    });
    if let Some(failure) = heal_and_check_liveness(&cluster, election_timeout).await {
        findings.liveness.push(failure);
    }
    findings
        .liveness
        .extend(check_exits(&cluster, &trace, trace.origin()));
    // Let followers catch up, then compare state machines.
    madsim::time::sleep(election_timeout).await;
    findings.raft.extend(monitor.stop());
    let _ = monitor_task.await;
    findings.raft.extend(check_state_machines(&cluster));
    stop.store(true, Ordering::Relaxed);
    let (memory, peak) = sampler.await.unwrap_or_default();
    findings.memory = memory;

    let history = recorder.history();
    findings.ops = history.ops().len();
    findings.linearizability = check_history(
        &history,
        plan.expect.evictions,
        plan.expect.clock_skew_ms,
        state.damaged_keys(),
        workload::near_cache_staleness(&plan.workload),
    );
    let mut metrics = Metrics::of(&history, cluster.database.as_ref());
    metrics.leader_changes = monitor.leader_changes();
    trace.record(Event::Note {
        text: metrics.render(),
    });
    findings.metrics = metrics.violations(&plan.expect.metrics);
    for op in history.ops() {
        trace.record_at(op.invoke_ms, Event::Op { op: op.clone() });
    }
    let operations = history.ops().to_vec();
    for (point, detail) in coverage::snapshot().broken {
        findings
            .raft
            .push(format!("always!({point}) was false: {detail}"));
    }
    let mut report = finish(findings, &trace, started, peak);
    report.history = operations;
    report
}

/// Heals every link and restarts every stopped node, then checks liveness: a leader and a
/// served write within [`LIVENESS_ELECTION_TIMEOUTS`] election timeouts. Returns the failure,
/// if any.
async fn heal_and_check_liveness(
    cluster: &SimCluster,
    election_timeout: Duration,
) -> Option<String> {
    cluster.heal();
    for (i, server) in cluster.servers.iter().enumerate() {
        if server.status().is_none() {
            cluster.restart(i);
        }
    }
    // Nodes that exited on their own come back when their supervisor restarts them.
    let waited = hyperion::runtime::now();
    while cluster.servers.iter().any(|s| s.awaiting_restart())
        && waited.elapsed() < EXIT_RESTART_MAX
    {
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
    let bound = election_timeout * LIVENESS_ELECTION_TIMEOUTS;
    let healed_at = hyperion::runtime::now();
    // No breaker: the probe asks every 50 ms, and a breaker opened by the failures before the
    // election would refuse the first attempts after it.
    let probe = cluster
        .client()
        .with_breaker(None)
        .with_deadline(Duration::from_millis(500));
    let served = client_node(100)
        .spawn(async move {
            loop {
                if probe.set(b"liveness-probe", b"ok", 0, 0).await.is_ok() {
                    return true;
                }
                if healed_at.elapsed() > bound {
                    return false;
                }
                madsim::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or(false);
    if !served || healed_at.elapsed() > bound {
        return Some(format!(
            "no write served within {LIVENESS_ELECTION_TIMEOUTS} election timeouts after heal"
        ));
    }
    caught_up(cluster, bound).await
}

/// After the probe write: every node applies what the cluster committed within `bound`. A node
/// that answers but never applies (a zombie whose node loop died, a follower stuck in a loop
/// of refused appends) is a liveness failure.
async fn caught_up(cluster: &SimCluster, bound: Duration) -> Option<String> {
    let target = cluster
        .servers
        .iter()
        .filter_map(|server| server.status())
        .map(|status| status.commit_index)
        .max()
        .unwrap_or(0);
    let since = hyperion::runtime::now();
    loop {
        let behind: Vec<String> = cluster
            .servers
            .iter()
            .enumerate()
            .filter_map(|(i, server)| match server.status() {
                Some(status) if status.applied_index >= target => None,
                Some(status) => Some(format!(
                    "node{} applied {} (role {:?}, term {})",
                    i + 1,
                    status.applied_index,
                    status.role,
                    status.term
                )),
                None => Some(format!("node{} is not running", i + 1)),
            })
            .collect();
        if behind.is_empty() {
            return None;
        }
        if since.elapsed() > bound {
            return Some(format!(
                "not every node applied the committed index {target} within \
                 {LIVENESS_ELECTION_TIMEOUTS} election timeouts of the probe write: {}",
                behind.join("; ")
            ));
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every node's own exits, in the trace; those not explained by a failing disk are findings (a
/// task that panicked, a refused configuration).
fn check_exits(
    cluster: &SimCluster,
    trace: &Trace,
    origin: hyperion::runtime::Instant,
) -> Vec<String> {
    let mut findings = Vec::new();
    for (i, server) in cluster.servers.iter().enumerate() {
        for exit in server.exits() {
            let at_ms = exit.at.saturating_duration_since(origin).as_millis() as u64;
            let text = format!(
                "node{} exited (status {}): {}",
                i + 1,
                exit.exit.code,
                exit.exit.reason
            );
            trace.record_at(at_ms, Event::Note { text: text.clone() });
            let expected =
                exit.exit.code == hyperion::runtime::EXIT_STORAGE_FAILED && exit.disk_failing;
            if !expected {
                findings.push(format!("t={at_ms}ms {text}"));
            }
        }
    }
    findings
}

/// Runs the linearizability checker over `history` (absences explained by eviction only when
/// the scenario allows evictions, or for keys a fault damaged; TTL tolerance ε =
/// `clock_skew_ms`; near-cache reads judged for bounded staleness); returns one rendered
/// violation (with its history excerpt) per finding.
fn check_history(
    history: &History,
    allow_eviction: bool,
    clock_skew_ms: u64,
    damaged: std::collections::BTreeSet<Vec<u8>>,
    bounded_staleness: Option<hyperion_checker::BoundedStaleness>,
) -> Vec<String> {
    let report = check(
        history,
        &CheckerConfig {
            allow_eviction,
            clock_skew_ms,
            evictable_keys: damaged,
            bounded_staleness,
            ..CheckerConfig::default()
        },
    );
    match &report.verdict {
        Verdict::Ok => Vec::new(),
        Verdict::Violation(violations) => violations.iter().map(|v| v.to_string()).collect(),
        Verdict::Unknown { reason } => {
            tracing::warn!(%reason, "checker could not decide");
            Vec::new()
        }
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
        history: Vec::new(),
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

/// One executed run: the plan, and the report (or the panic that ended it).
pub struct Executed {
    pub seed: u64,
    pub plan: Plan,
    pub result: Result<RunReport, String>,
    /// Hits of the product's coverage points, per point and per `point@condition`.
    pub coverage: BTreeMap<String, u64>,
    /// Wall-clock time the run took (for throughput only; nothing decides on it).
    pub real_ms: u64,
}

impl Executed {
    /// Met, and the verdict text.
    pub fn verdict(&self) -> (bool, String) {
        match &self.result {
            Ok(report) => match report.judge(&self.plan.expect) {
                Ok(text) => (true, text),
                Err(text) => (false, text),
            },
            Err(panic) => (false, format!("the run panicked: {panic}")),
        }
    }

    /// Whether a checker listed under `expect.violation` found something.
    pub fn violation_found(&self) -> bool {
        self.result
            .as_ref()
            .is_ok_and(|report| report.violation_found(&self.plan.expect))
    }

    /// The trace as JSON lines (empty after a panic).
    pub fn trace_jsonl(&self) -> Vec<String> {
        self.result
            .as_ref()
            .map(|r| to_jsonl(&r.trace))
            .unwrap_or_default()
    }
}

/// Wall-clock time, for throughput only (seeds/s and the simulated/real ratio). The simulator
/// itself never reads it: nothing a run decides depends on it, so determinism is unaffected.
#[allow(clippy::disallowed_methods)]
pub fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

/// Runs one seed of `file` (a regression's `variant`) in a fresh madsim runtime seeded with it;
/// `Err` when the seed's plan cannot be drawn (no such variant, a configuration the product
/// refuses).
pub fn run_seed(file: &ScenarioFile, variant: Option<&str>, seed: u64) -> Result<Executed, String> {
    let plan = file.plan(seed, variant)?;
    let mut runtime =
        madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(SEED_TIME_LIMIT);
    let started = wall_clock();
    coverage::reset();
    let result = catch_unwind(AssertUnwindSafe(|| runtime.block_on(run_plan(&plan, seed))))
        .map_err(|panic| panic_text(panic.as_ref()));
    let real_ms = started.elapsed().as_millis() as u64;
    hyperion::runtime::buggify::configure(&[], 0);
    Ok(Executed {
        seed,
        plan,
        result,
        coverage: coverage::snapshot().hits,
        real_ms,
    })
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// The verdict over the seeds of one file (variant): every run must meet its own expectations,
/// a violation required of the seeds together (`violation_in = "any_seed"`) must be found by at
/// least one of them, and every coverage point of `expect.sometimes` must fire in at least one.
#[derive(Debug, Clone, Default)]
pub struct SeedTally {
    pub seeds: Vec<u64>,
    /// Seeds whose run did not meet its expectations.
    pub failed: Vec<u64>,
    /// Some seed must find the violation.
    pub any_seed: bool,
    /// Seeds whose run found it.
    pub found: Vec<u64>,
    /// Per coverage point (and `point@condition`): the seeds in which it fired.
    pub fired: BTreeMap<String, usize>,
    /// The points `expect.sometimes` requires.
    pub expected: BTreeSet<String>,
}

impl SeedTally {
    /// Counts one run.
    pub fn add(&mut self, seed: u64, met: bool, violation_found: bool, any_seed: bool) {
        self.seeds.push(seed);
        if !met {
            self.failed.push(seed);
        }
        if violation_found {
            self.found.push(seed);
        }
        self.any_seed |= any_seed;
    }

    /// Counts one run's coverage: the points that fired, and those its plan expects.
    pub fn add_coverage(&mut self, hits: &BTreeMap<String, u64>, expected: &[String]) {
        for (point, _) in hits.iter().filter(|(_, n)| **n > 0) {
            *self.fired.entry(point.clone()).or_default() += 1;
        }
        self.expected.extend(expected.iter().cloned());
    }

    /// The expected coverage points that fired in no seed.
    pub fn never_fired(&self) -> Vec<&str> {
        self.expected
            .iter()
            .filter(|point| !self.fired.contains_key(*point))
            .map(String::as_str)
            .collect()
    }

    /// What fails only for the seeds together: a required violation that none found, or an
    /// expected coverage point that never fired.
    pub fn group_failure(&self) -> Option<String> {
        let mut failures = Vec::new();
        if self.any_seed && self.found.is_empty() {
            failures.push("no seed found the expected violation".to_string());
        }
        let never = self.never_fired();
        if !never.is_empty() {
            failures.push(format!(
                "expect.sometimes: {} never fired in {} seeds (the fault model no longer reaches it)",
                never.join(", "),
                self.seeds.len()
            ));
        }
        (!failures.is_empty()).then(|| failures.join("; "))
    }

    /// The note a sweep prints about a violation required of the seeds together.
    pub fn any_seed_note(&self) -> Option<String> {
        self.any_seed.then(|| {
            format!(
                "the expected violation was found in {} of {} seeds (at least one must)",
                self.found.len(),
                self.seeds.len()
            )
        })
    }

    /// One line per coverage point that fired, or that is expected: `point  fired in N/M
    /// seeds`, expected ones marked.
    pub fn coverage_lines(&self) -> Vec<String> {
        let mut points: BTreeSet<&String> = self.fired.keys().collect();
        points.extend(self.expected.iter());
        points
            .into_iter()
            .map(|point| {
                let fired = self.fired.get(point).copied().unwrap_or(0);
                let mark = match (self.expected.contains(point), fired) {
                    (true, 0) => "  expected: NEVER FIRED",
                    (true, _) => "  expected",
                    _ => "",
                };
                format!(
                    "  {point:<44} fired in {fired:>4}/{} seeds{mark}",
                    self.seeds.len()
                )
            })
            .collect()
    }
}
