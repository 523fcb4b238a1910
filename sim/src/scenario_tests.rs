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

/// Reads and parses a committed scenario or regression file (`path` from the repository root).
fn load(path: &str) -> ScenarioFile {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path))
            .unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    ScenarioFile::parse(path, &source).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `scenarios/<name>.toml` over the chosen seeds; fails the test if a seed misses its
/// expectations, or if no seed found a violation the file requires of the seeds together.
fn sweep(name: &str) {
    let path = format!("scenarios/{name}.toml");
    let file = load(&path);
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
        tally.add_coverage(&executed.coverage, &executed.plan.expect.sometimes);
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

/// The coverage expectations can fail: the leader-partitioned scenario with its partition taken
/// out (a fault model that silently stopped reaching the state it was built for) must fail its
/// `expect.sometimes`, naming the point no seed reached. Every run still meets its own
/// expectations: only the sweep's coverage judges it.
#[test]
fn a_fault_model_that_stopped_partitioning_fails_its_coverage() {
    let path = "scenarios/leader-partitioned-in-the-minority.toml";
    let source = load(path).source;
    let start = source.find("[[faults]]").expect("the scenario has a fault");
    let end = source[start..]
        .find("\n\n")
        .map_or(source.len(), |at| start + at);
    let weakened = format!("{}{}", &source[..start], &source[end..]);
    let file = ScenarioFile::parse(path, &weakened).unwrap_or_else(|e| panic!("{e}"));
    assert!(file.plan(1, None).unwrap().faults.is_empty());
    let mut tally = SeedTally::default();
    for seed in 1..=3 {
        let executed = run_seed(&file, None, seed).unwrap_or_else(|e| panic!("{e}"));
        let (met, verdict) = executed.verdict();
        assert!(met, "seed {seed}: {verdict}");
        tally.add(seed, met, false, false);
        tally.add_coverage(&executed.coverage, &executed.plan.expect.sometimes);
    }
    assert!(tally.fired.contains_key("lease_read"), "{:?}", tally.fired);
    let failure = tally
        .group_failure()
        .expect("no partition, so no lease read during one");
    assert!(
        failure.contains("lease_read@partition") && failure.contains("never fired in 3 seeds"),
        "{failure}"
    );
}

/// `always!` invariants are checked in simulation: the stale-lease regression's pre-fix clock
/// (a lease checked against the turn's old tick after a pause) breaks
/// `lease_checked_at_read_time`, and the `raft` checker reports it; the fixed product does not.
#[test]
fn an_always_invariant_catches_a_lease_checked_against_a_stale_clock() {
    let path = "regressions/2026-12-01-stale-lease-after-pause.toml";
    let file = load(path);
    let broken = |variant: &str| -> Vec<String> {
        let executed = run_seed(&file, Some(variant), 1).unwrap_or_else(|e| panic!("{e}"));
        let report = executed.result.unwrap_or_else(|panic| panic!("{panic}"));
        report
            .findings
            .raft
            .into_iter()
            .filter(|f| f.contains("always!(lease_checked_at_read_time)"))
            .collect()
    };
    assert!(
        !broken("before-fix").is_empty(),
        "the stale lease clock went unnoticed"
    );
    assert_eq!(broken("after-fix"), Vec::<String>::new());
}

/// BUGGIFY: a scenario with `buggify = true` has each seed enable a seeded subset of the
/// product's fault points (the same subset every time the seed is drawn, listed in the banner),
/// only enabled points fire, and a scenario without it enables none.
#[test]
fn buggify_enables_a_seeded_subset_of_fault_points_and_only_those_fire() {
    let file = load("scenarios/buggify.toml");
    let plans: Vec<Vec<&str>> = (1..=6)
        .map(|seed| file.plan(seed, None).unwrap().buggify)
        .collect();
    assert!(plans.iter().all(|points| !points.is_empty()));
    assert!(
        plans.windows(2).any(|w| w[0] != w[1]),
        "seeds draw different subsets"
    );
    assert_eq!(
        plans[0],
        file.plan(1, None).unwrap().buggify,
        "a seed replays its subset"
    );

    let executed = run_seed(&file, None, 1).unwrap_or_else(|e| panic!("{e}"));
    let (met, verdict) = executed.verdict();
    assert!(met, "{verdict}");
    let enabled = &executed.plan.buggify;
    let fired: Vec<&str> = executed
        .coverage
        .keys()
        .filter_map(|k| k.strip_prefix("buggify."))
        .filter(|k| !k.contains('@'))
        .collect();
    assert!(!fired.is_empty(), "no enabled point fired: {enabled:?}");
    assert!(
        fired.iter().all(|point| enabled.contains(point)),
        "fired {fired:?}, enabled {enabled:?}"
    );
    let jsonl = executed.trace_jsonl();
    let report = crate::report::render(&file, &executed, "test", &jsonl);
    assert!(
        report.contains(&format!("drawn: buggify = {}", enabled.join(", "))),
        "the banner names the enabled points"
    );

    let plain = load("scenarios/leader-partitioned-in-the-minority.toml");
    assert!(plain.plan(1, None).unwrap().buggify.is_empty());
}

/// A run's history exports as Porcupine operations: one per recorded operation, in invocation
/// order, with the fields Porcupine's `Operation` has.
#[test]
fn a_runs_history_exports_as_porcupine_operations() {
    let path = "scenarios/leader-partitioned-in-the-minority.toml";
    let file = load(path);
    let executed = run_seed(&file, None, 1).unwrap_or_else(|e| panic!("{e}"));
    let report = executed.result.unwrap_or_else(|panic| panic!("{panic}"));
    let exported = hyperion_checker::porcupine_history(&report.history);
    let ops = exported.as_array().expect("an array of operations");
    assert_eq!(ops.len(), report.findings.ops);
    assert!(ops.len() > 100, "{} operations", ops.len());
    for op in ops {
        for field in ["ClientId", "Input", "Call", "Output", "Return"] {
            assert!(!op[field].is_null(), "{field} missing in {op}");
        }
        assert!(op["Call"].as_u64() <= op["Return"].as_u64(), "{op}");
    }
    assert!(ops
        .windows(2)
        .all(|w| w[0]["Call"].as_u64() <= w[1]["Call"].as_u64()));
}

/// The HTML report of a failing seed holds the reproduce command, the timeline, and the
/// violation's operations marked (`ci/browser-report` renders it in Chromium).
#[test]
fn the_html_report_of_a_failing_seed_marks_the_violations_operations() {
    let path = "regressions/2024-12-03-split-brain.toml";
    let file = load(path);
    let executed = run_seed(&file, Some("before-fix"), 2).unwrap_or_else(|e| panic!("{e}"));
    let replay = reproduce(path, Some("before-fix"), Replay::Run(&[2])).to_string();
    let page = crate::report_html::render(&file, &executed, &replay);
    let report = executed.result.as_ref().unwrap();
    let finding = report
        .findings
        .linearizability
        .first()
        .expect("seed 2 finds a stale read");
    let starred: Vec<&str> = finding
        .lines()
        .filter(|l| l.trim_start().starts_with("* "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert!(!starred.is_empty(), "{finding}");
    for op in &starred {
        assert!(
            page.contains(&format!("data-violation-op=\"{op}\"")),
            "{op} not marked"
        );
    }
    assert!(page.contains(&crate::report_html::escape(&replay)));
    assert!(page.contains("node1") && page.contains("<svg"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no network resources"
    );
}

/// Shrinking: a seed of the split-brain regression's pre-fix variant that finds the stale read
/// shrinks (here within a few candidate runs, to keep the test short) to a smaller concrete
/// regression file, and that file, run at its committed seed, still finds the stale read.
#[test]
fn a_split_brain_seed_shrinks_to_a_smaller_file_that_still_finds_the_stale_read() {
    let path = "regressions/2024-12-03-split-brain.toml";
    let file = load(path);
    let shrunk = crate::shrink::shrink(&file, Some("before-fix"), 2, 8, |line| eprintln!("{line}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        shrunk.target.kinds.contains("StaleRead"),
        "{:?}",
        shrunk.target
    );
    assert!(
        shrunk.after.fault_ms < shrunk.before.fault_ms,
        "before {}, after {}",
        shrunk.before,
        shrunk.after
    );
    assert!(shrunk.toml.contains("postmortem") && shrunk.toml.contains("seeds = [2]"));
    let out = ScenarioFile::parse("regressions/shrunk.toml", &shrunk.toml)
        .unwrap_or_else(|e| panic!("the shrunk file parses: {e}\n{}", shrunk.toml));
    let executed = run_seed(&out, Some("found"), 2).unwrap_or_else(|e| panic!("{e}"));
    let (met, verdict) = executed.verdict();
    assert!(met, "the shrunk file still finds the violation: {verdict}");
    let report = executed.result.unwrap();
    assert!(report
        .findings
        .linearizability
        .iter()
        .any(|f| f.starts_with("StaleRead")));
}
