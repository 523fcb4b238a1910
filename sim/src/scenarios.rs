//! The cluster scenarios run in CI: a workload recorded for the linearizability checker, a fault
//! schedule, the Raft-invariant monitor, then heal and check liveness, convergence and history.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyperion::config::Config;
use hyperion_checker::{check, CheckerConfig, History, Verdict};

use crate::cluster::{client_node, SimCluster};
use crate::monitor::{check_state_machines, Monitor};
use crate::workload::{self, Recorder, WorkloadSpec};

/// The product's election timeout (10 × the 150 ms heartbeat).
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1500);
/// Liveness bound: after the faults heal, a leader and a served write within this many election
/// timeouts.
pub const LIVENESS_ELECTION_TIMEOUTS: u32 = 5;

/// A fault schedule: runs alongside the workload, from its start.
pub type Faults = Box<dyn Fn(Arc<SimCluster>, u64) -> Pin<Box<dyn Future<Output = ()>>>>;

/// One scenario.
pub struct Scenario {
    pub nodes: usize,
    pub tweak: fn(&mut Config),
    pub workload: WorkloadSpec,
    pub faults: Faults,
    /// ε for the checker's TTL rules (combined clock error), in ms.
    pub clock_skew_ms: u64,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Findings {
    pub linearizability: Vec<String>,
    pub raft: Vec<String>,
    pub liveness: Vec<String>,
    /// Memory bound exceeded (scenario files with `memory_max_bytes`).
    pub memory: Vec<String>,
    /// Latency or database thresholds exceeded (scenario files with metric limits).
    pub metrics: Vec<String>,
    pub ops: usize,
}

impl Findings {
    pub fn is_clean(&self) -> bool {
        self.linearizability.is_empty()
            && self.raft.is_empty()
            && self.liveness.is_empty()
            && self.memory.is_empty()
            && self.metrics.is_empty()
    }

    pub fn render(&self) -> String {
        let mut text = format!("{} operations checked\n", self.ops);
        for (title, items) in [
            ("linearizability", &self.linearizability),
            ("raft invariants", &self.raft),
            ("liveness", &self.liveness),
            ("memory", &self.memory),
            ("metrics", &self.metrics),
        ] {
            for item in items {
                text.push_str(&format!("[{title}] {item}\n"));
            }
        }
        text
    }
}

/// Runs a scenario under the current madsim runtime (one seed).
pub async fn run(scenario: &Scenario, seed: u64) -> Findings {
    let cluster = Arc::new(SimCluster::start(scenario.nodes, scenario.tweak));
    let mut findings = Findings::default();
    if cluster
        .wait_for_leader(ELECTION_TIMEOUT * 4)
        .await
        .is_none()
    {
        findings
            .liveness
            .push("no leader within 4 election timeouts of start".to_string());
        return findings;
    }
    let recorder = Recorder::new();
    let monitor = Monitor::default();
    let monitor_task = madsim::task::spawn_local(
        monitor
            .clone()
            .run(Arc::clone(&cluster), hyperion::runtime::now()),
    );
    let faults = madsim::task::spawn_local((scenario.faults)(Arc::clone(&cluster), seed));
    workload::run(&cluster, &scenario.workload, &recorder, seed).await;
    let _ = faults.await;

    heal_and_check(
        &cluster,
        monitor,
        monitor_task,
        ELECTION_TIMEOUT,
        &mut findings,
    )
    .await;

    let history = recorder.history();
    findings.ops = history.ops().len();
    findings.linearizability = check_history(&history, scenario.clock_skew_ms);
    findings
}

/// Heals every fault (links, killed nodes), then checks liveness: a leader and a served write
/// within [`LIVENESS_ELECTION_TIMEOUTS`] election timeouts. Returns the failure, if any.
pub async fn heal_and_check_liveness(
    cluster: &SimCluster,
    election_timeout: Duration,
) -> Option<String> {
    cluster.heal();
    for (i, server) in cluster.servers.iter().enumerate() {
        if server.status().is_none() {
            cluster.restart(i);
        }
    }
    let bound = election_timeout * LIVENESS_ELECTION_TIMEOUTS;
    let healed_at = hyperion::runtime::now();
    let probe = cluster.client().with_deadline(Duration::from_millis(500));
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
    None
}

/// After the faults: heals and checks liveness, lets followers catch up, stops the Raft monitor
/// and compares the state machines; records what it finds in `findings`.
pub async fn heal_and_check(
    cluster: &SimCluster,
    monitor: Monitor,
    monitor_task: madsim::task::JoinHandle<()>,
    election_timeout: Duration,
    findings: &mut Findings,
) {
    if let Some(failure) = heal_and_check_liveness(cluster, election_timeout).await {
        findings.liveness.push(failure);
    }
    // Let followers catch up, then compare state machines.
    madsim::time::sleep(election_timeout).await;
    findings.raft.extend(monitor.stop());
    let _ = monitor_task.await;
    findings.raft.extend(check_state_machines(cluster));
}

/// Runs the linearizability checker over `history` (no eviction, TTL tolerance ε =
/// `clock_skew_ms`); returns one rendered violation (with its history excerpt) per finding.
pub fn check_history(history: &History, clock_skew_ms: u64) -> Vec<String> {
    let report = check(
        history,
        &CheckerConfig {
            allow_eviction: false,
            clock_skew_ms,
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

/// Runs a scenario for one seed and turns findings into a test result.
pub async fn expect_clean(scenario: Scenario, seed: u64) -> Result<(), String> {
    let findings = run(&scenario, seed).await;
    eprintln!(
        "seed {seed}: {} operations, {} findings",
        findings.ops,
        findings.linearizability.len() + findings.raft.len() + findings.liveness.len()
    );
    if findings.is_clean() {
        Ok(())
    } else {
        Err(findings.render())
    }
}

/// The time of a fault, drawn from the seed within `[from_ms, to_ms)`.
pub fn draw_ms(seed: u64, salt: u64, from_ms: u64, to_ms: u64) -> u64 {
    use rand::{Rng, SeedableRng};
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ salt.wrapping_mul(0xa076_1d64_78bd_642f));
    rng.random_range(from_ms..to_ms)
}
