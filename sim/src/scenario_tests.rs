//! Seeded cluster scenarios, each over many seeds (see [`crate::sweep`]): no linearizability
//! violation, Raft invariants intact, liveness after heal. And the negative control: with the
//! lease made unsafe, some seed must produce a detected violation.

use std::sync::Arc;
use std::time::Duration;

use hyperion::config::Config;

use crate::cluster::SimCluster;
use crate::scenarios::{draw_ms, expect_clean, run, Faults, Scenario, ELECTION_TIMEOUT};
use crate::sweep::{run_seed, seeds, sweep};
use crate::workload::WorkloadSpec;

/// Seeds per scenario in a default run (CI); raise with `HYPERION_SIM_SEEDS`.
const SEEDS: u64 = 20;

fn defaults(_: &mut Config) {}

fn faults<F, Fut>(f: F) -> Faults
where
    F: Fn(Arc<SimCluster>, u64) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    Box::new(move |cluster, seed| Box::pin(f(cluster, seed)))
}

async fn sleep_ms(ms: u64) {
    madsim::time::sleep(Duration::from_millis(ms)).await;
}

fn scenario(faults: Faults) -> Scenario {
    Scenario {
        nodes: 3,
        tweak: defaults,
        workload: WorkloadSpec::default(),
        faults,
        clock_skew_ms: 5,
    }
}

/// (a) The leader crashes under load and comes back.
#[test]
fn a_leader_crash_under_load() {
    sweep("scenario_tests::a_leader_crash_under_load", SEEDS, |seed| {
        expect_clean(
            scenario(faults(|cluster, seed| async move {
                sleep_ms(draw_ms(seed, 1, 1_000, 4_000)).await;
                let Some(leader) = cluster.leader() else {
                    return;
                };
                cluster.kill(leader);
                sleep_ms(draw_ms(seed, 2, 1_000, 5_000)).await;
                cluster.restart(leader);
            })),
            seed,
        )
    });
}

/// (b) The leader is cut off from the other servers (clients still reach it) and heals.
#[test]
fn b_leader_partitioned_in_the_minority() {
    sweep(
        "scenario_tests::b_leader_partitioned_in_the_minority",
        SEEDS,
        |seed| {
            expect_clean(
                scenario(faults(|cluster, seed| async move {
                    sleep_ms(draw_ms(seed, 1, 1_000, 4_000)).await;
                    let Some(leader) = cluster.leader() else {
                        return;
                    };
                    cluster.isolate(leader);
                    sleep_ms(draw_ms(seed, 2, 2_000, 6_000)).await;
                    cluster.heal();
                })),
                seed,
            )
        },
    );
}

/// (c) The 2024-12-03 incident: a partition exactly as long as the 1.5 s election timeout.
#[test]
fn c_partition_as_long_as_the_election_timeout() {
    sweep(
        "scenario_tests::c_partition_as_long_as_the_election_timeout",
        SEEDS,
        |seed| {
            expect_clean(
                scenario(faults(|cluster, seed| async move {
                    for round in 0..2 {
                        sleep_ms(draw_ms(seed, 10 + round, 1_000, 3_000)).await;
                        let Some(leader) = cluster.leader() else {
                            continue;
                        };
                        cluster.isolate(leader);
                        madsim::time::sleep(ELECTION_TIMEOUT).await;
                        cluster.heal();
                    }
                })),
                seed,
            )
        },
    );
}

fn frequent_snapshots(config: &mut Config) {
    // Compaction every 100 entries: restarted nodes recover from snapshots, and followers that
    // fell behind receive InstallSnapshot.
    config.raft.snapshot_entries = 100;
}

/// (d) Every node restarts in turn (a rolling restart), leader included, with frequent snapshots.
#[test]
fn d_restart_every_node_in_turn() {
    sweep(
        "scenario_tests::d_restart_every_node_in_turn",
        SEEDS,
        |seed| {
            let mut scenario = scenario(faults(|cluster, seed| async move {
                for node in 0..cluster.servers.len() {
                    sleep_ms(draw_ms(seed, node as u64, 1_000, 2_500)).await;
                    cluster.kill(node);
                    sleep_ms(draw_ms(seed, 10 + node as u64, 200, 1_500)).await;
                    cluster.restart(node);
                }
            }));
            scenario.tweak = frequent_snapshots;
            expect_clean(scenario, seed)
        },
    );
}

/// Clock rates drawn within the configured bound (max ratio 1.05 between nodes: rates in
/// [1.0, 1.04]) plus offsets, with leader isolations forcing elections under skew.
async fn skewed_clocks(cluster: Arc<SimCluster>, seed: u64) {
    for (i, server) in cluster.servers.iter().enumerate() {
        let rate = 1.0 + draw_ms(seed, 20 + i as u64, 0, 40) as f64 / 1000.0;
        server.clock.set_rate(rate);
        server
            .clock
            .jump_ms(draw_ms(seed, 30 + i as u64, 0, 100) as i64 - 50);
    }
    for round in 0..2 {
        sleep_ms(draw_ms(seed, 40 + round, 1_500, 3_500)).await;
        let Some(leader) = cluster.leader() else {
            continue;
        };
        cluster.isolate(leader);
        sleep_ms(draw_ms(seed, 50 + round, 1_000, 3_000)).await;
        cluster.heal();
    }
}

/// ε for skewed runs: offsets up to ±50 ms and drift up to 4 % over the run, for the stamping
/// and the judging clock together.
const SKEW_EPSILON_MS: u64 = 2 * (50 + 40 * 20);

/// (e) Clock skew within the configured bound.
#[test]
fn e_clock_skew_within_the_bound() {
    sweep(
        "scenario_tests::e_clock_skew_within_the_bound",
        SEEDS,
        |seed| {
            let mut scenario = scenario(faults(skewed_clocks));
            scenario.clock_skew_ms = SKEW_EPSILON_MS;
            expect_clean(scenario, seed)
        },
    );
}

/// Negative control: clocks drifting far beyond the configured bound (the leader's at 0.5×, the
/// others' at 2×, a ratio of 4 against the 1.05 the lease was validated for) while the leader
/// is cut off. The followers elect a new leader while the old one still trusts its lease, so
/// some seed must produce a violation the checkers detect. A checker that cannot fail proves
/// nothing.
#[test]
fn negative_control_drift_beyond_the_bound_is_detected() {
    let mut detected = Vec::new();
    let mut linearizability = 0;
    for seed in seeds(SEEDS) {
        let result = run_seed(seed, &|seed| async move {
            let mut scenario = scenario(faults(|cluster, seed| async move {
                for round in 0..3 {
                    sleep_ms(draw_ms(seed, 60 + round, 1_000, 2_500)).await;
                    let Some(leader) = cluster.leader() else {
                        continue;
                    };
                    for (i, server) in cluster.servers.iter().enumerate() {
                        server.clock.set_rate(if i == leader { 0.5 } else { 2.0 });
                    }
                    cluster.isolate(leader);
                    sleep_ms(3_000).await;
                    cluster.heal();
                    for server in &cluster.servers {
                        server.clock.set_rate(1.0);
                    }
                }
            }));
            scenario.workload.write_percent = 50;
            scenario.clock_skew_ms = 10_000;
            let findings = run(&scenario, seed).await;
            if findings.linearizability.is_empty() && findings.raft.is_empty() {
                Ok(())
            } else {
                Err(findings.render())
            }
        });
        if let Err(found) = result {
            if found.contains("[linearizability]") {
                linearizability += 1;
            }
            detected.push((seed, found));
        }
    }
    assert!(
        !detected.is_empty(),
        "no seed detected a violation with clocks beyond the bound: the checkers are blind"
    );
    let (seed, found) = detected
        .iter()
        .find(|(_, found)| found.contains("[linearizability]"))
        .unwrap_or(&detected[0]);
    eprintln!(
        "negative control: {} seed(s) detected ({linearizability} by the linearizability checker); \
         e.g. seed {seed}:\n{}",
        detected.len(),
        found.lines().take(30).collect::<Vec<_>>().join("\n")
    );
}

fn unsafe_leader_reads(config: &mut Config) {
    config.faults.unsafe_leader_reads = true;
}

/// Negative control for the linearizability checker itself: reads served by whoever believes it
/// leads, without lease or read-index (the 2024-12-03 pre-fix behaviour), while the leader is
/// cut off and its clock runs slow (so it keeps believing). Stale reads must be found.
#[test]
fn negative_control_unsafe_leader_reads_are_caught_by_the_checker() {
    let mut caught = 0;
    let mut example = None;
    let runs = seeds(SEEDS);
    for &seed in &runs {
        let result = run_seed(seed, &|seed| async move {
            let mut scenario = scenario(faults(|cluster, seed| async move {
                for round in 0..3 {
                    sleep_ms(draw_ms(seed, 70 + round, 1_000, 2_500)).await;
                    let Some(leader) = cluster.leader() else {
                        continue;
                    };
                    cluster.servers[leader].clock.set_rate(0.5);
                    cluster.isolate(leader);
                    sleep_ms(3_000).await;
                    cluster.heal();
                    cluster.servers[leader].clock.set_rate(1.0);
                }
            }));
            scenario.tweak = unsafe_leader_reads;
            scenario.workload.write_percent = 50;
            scenario.clock_skew_ms = 10_000;
            let findings = run(&scenario, seed).await;
            if findings.linearizability.is_empty() {
                Ok(())
            } else {
                Err(findings.render())
            }
        });
        if let Err(found) = result {
            caught += 1;
            example.get_or_insert((seed, found));
        }
    }
    let (seed, found) = example.expect("unsafe leader reads went undetected in every seed");
    eprintln!(
        "negative control: stale reads caught in {caught} of {} seeds; e.g. seed {seed}:\n{}",
        runs.len(),
        found.lines().take(30).collect::<Vec<_>>().join("\n")
    );
}
