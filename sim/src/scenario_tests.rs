//! The cluster scenarios CI runs as tests: each is a file in `scenarios/`, run by the runner
//! over its seeds in process. (a) leader crash under load, (b) leader partitioned in the
//! minority, (c) a partition exactly as long as the election timeout, (d) every node restarted
//! in turn, (e) clock skew within the bound; and the negative controls, whose files require a
//! violation that some seed must find (clocks drifting beyond the bound, reads served without
//! lease or read-index).
//!
//! Seeds: [`SEEDS`] per scenario from seed 1, or what `HYPERION_SIM_SEED` / `HYPERION_SIM_SEEDS`
//! ask for (`crate::seeds`). A failing seed prints its report, which ends with the one command
//! that replays it.

use std::path::Path;

use crate::runner::{run_seed, SeedTally};
use crate::seeds::{self, reproduce, Replay};
use crate::spec::ScenarioFile;

/// Seeds per scenario in a default run (CI); `HYPERION_SIM_SEEDS` raises it.
const SEEDS: u64 = 20;

/// Runs `scenarios/<name>.toml` over the chosen seeds; fails the test if a seed misses its
/// expectations, or if no seed found a violation the file requires of the seeds together.
fn sweep(name: &str) {
    let path = format!("scenarios/{name}.toml");
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&path))
            .unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let file = ScenarioFile::parse(&path, &source).unwrap_or_else(|e| panic!("{e}"));
    let default: Vec<u64> = (1..=SEEDS).collect();
    let chosen = seeds::select(None, &default).unwrap_or_else(|e| panic!("{e}"));
    let mut tally = SeedTally::default();
    for &seed in &chosen {
        let executed = run_seed(&file, None, seed).unwrap_or_else(|e| panic!("{e}"));
        let (met, verdict) = executed.verdict();
        tally.add(
            seed,
            met,
            executed.violation_found(),
            executed.plan.expect.violation_in_any_seed,
        );
        eprintln!("{path} seed {seed}: {verdict}");
        if !met {
            let jsonl = executed.trace_jsonl();
            eprintln!(
                "\n{}",
                crate::report::render(&file, &executed, &crate::cli::git_commit(), &jsonl)
            );
        }
    }
    if let Some(note) = tally.any_seed_note() {
        eprintln!("{path}: {note} (seeds {:?})", tally.found);
    }
    if let Some(failure) = tally.group_failure() {
        eprintln!(
            "\nFAILED {path}: {failure}\n{}",
            reproduce(&path, None, Replay::Run(&tally.seeds))
        );
    }
    let mut failures = Vec::new();
    if !tally.failed.is_empty() {
        failures.push(format!(
            "seeds {:?} missed their expectations",
            tally.failed
        ));
    }
    failures.extend(tally.group_failure());
    assert!(
        failures.is_empty(),
        "{path}: {} (the reproduce lines above replay each failure)",
        failures.join("; ")
    );
}

/// (a) The leader crashes under load and comes back.
#[test]
fn a_leader_crash_under_load() {
    sweep("leader-crash-under-load");
}

/// (b) The leader is cut off from the other servers (clients still reach it) and heals.
#[test]
fn b_leader_partitioned_in_the_minority() {
    sweep("leader-partitioned-in-the-minority");
}

/// (c) The 2024-12-03 incident: a partition exactly as long as the 1.5 s election timeout.
#[test]
fn c_partition_as_long_as_the_election_timeout() {
    sweep("partition-as-long-as-the-election-timeout");
}

/// (d) Every node restarts in turn (a rolling restart), leader included, with frequent snapshots.
#[test]
fn d_restart_every_node_in_turn() {
    sweep("restart-every-node-in-turn");
}

/// (e) Clock skew within the configured bound, with leader isolations forcing elections.
#[test]
fn e_clock_skew_within_the_bound() {
    sweep("clock-skew-within-the-bound");
}

/// Negative control: clocks drifting far beyond the configured bound must be detected by the
/// linearizability checker or the Raft invariants in some seed.
#[test]
fn negative_control_drift_beyond_the_bound_is_detected() {
    sweep("negative-control-drift-beyond-the-bound");
}

/// Negative control for the linearizability checker itself: reads without lease or read-index
/// must be caught in some seed.
#[test]
fn negative_control_unsafe_leader_reads_are_caught_by_the_checker() {
    sweep("negative-control-unsafe-leader-reads");
}
