//! The committed scenario and regression files parse, and the determinism check can fail.

use std::path::{Path, PathBuf};

use crate::cli::{compare_traces, toml_files};
use crate::runner::{run_seed, Findings, RunReport};
use crate::spec::{Checker, Expect, ScenarioFile};

fn repo_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

#[test]
fn every_scenario_and_regression_file_parses_and_draws() {
    let mut count = 0;
    for (dir, regression) in [("scenarios", false), ("regressions", true)] {
        let files = toml_files(&repo_dir(dir)).unwrap();
        assert!(!files.is_empty(), "{dir}/ has no .toml files");
        for path in files {
            let file = ScenarioFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(file.is_regression(), regression, "{}", path.display());
            if regression {
                let info = file.spec.regression.as_ref().unwrap();
                assert!(!info.postmortem.trim().is_empty(), "{}", path.display());
                for variant in &file.variants {
                    for &seed in &variant.seeds {
                        file.plan(seed, Some(&variant.name)).unwrap();
                    }
                }
            } else {
                for seed in 0..20 {
                    file.plan(seed, None).unwrap();
                }
            }
            count += 1;
        }
    }
    assert!(count >= 4);
}

/// A short scenario for in-process runs.
const SMALL: &str = r#"
[workload]
duration_ms = 3000
[[faults]]
at_ms = [500, 1500]
kind = "isolate"
node = "leader"
duration_ms = 1000
"#;

#[test]
fn one_seed_twice_gives_one_trace_and_the_check_detects_divergence() {
    let file = ScenarioFile::parse("small.toml", SMALL).unwrap();
    let first = run_seed(&file, None, 5).unwrap();
    let again = run_seed(&file, None, 5).unwrap();
    let (a, b) = (first.trace_jsonl(), again.trace_jsonl());
    assert!(
        a.len() > 100,
        "a run records leaders, faults and operations"
    );
    let hash = compare_traces(&a, &b).expect("the same seed replays identically");
    assert_eq!(hash.len(), 64);

    // A different seed is a different run: the comparison must say so, and where.
    let other = run_seed(&file, None, 6).unwrap().trace_jsonl();
    let difference = compare_traces(&a, &other).expect_err("different seeds must differ");
    assert!(
        difference.contains("first difference at line"),
        "{difference}"
    );

    // A deliberately nondeterministic trace: one event changed in the middle.
    let mut tampered = a.clone();
    let middle = tampered.len() / 2;
    tampered[middle] = tampered[middle].replace("\"at_ms\":", "\"at_ms\":1");
    let difference = compare_traces(&a, &tampered).expect_err("a changed event is detected");
    assert!(
        difference.contains(&format!("line {}", middle + 1)),
        "{difference}"
    );
    // A truncated trace too.
    let difference = compare_traces(&a, &a[..a.len() - 1]).expect_err("a lost event");
    assert!(difference.contains("<end of trace>"), "{difference}");
}

fn report(findings: Findings) -> RunReport {
    RunReport {
        findings,
        trace: Vec::new(),
        sim_ms: 0,
        memory_peak_bytes: 0,
        history: Vec::new(),
    }
}

#[test]
fn expectations_are_judged() {
    let must_pass = Expect {
        pass: vec![Checker::Linearizability, Checker::Raft],
        violation: Vec::new(),
        violation_in_any_seed: false,
        clock_skew_ms: 5,
        evictions: false,
        memory_max_bytes: None,
        metrics: Default::default(),
        sometimes: Vec::new(),
    };
    let clean = report(Findings::default());
    assert!(clean.judge(&must_pass).is_ok());
    let stale = report(Findings {
        linearizability: vec!["StaleRead ...".to_string()],
        ..Findings::default()
    });
    assert!(stale
        .judge(&must_pass)
        .unwrap_err()
        .contains("linearizability"));

    let negative_control = Expect {
        pass: vec![Checker::Raft],
        violation: vec![Checker::Linearizability],
        ..must_pass
    };
    assert!(clean
        .judge(&negative_control)
        .unwrap_err()
        .contains("none was found"));
    assert!(stale
        .judge(&negative_control)
        .unwrap()
        .contains("as expected"));
    assert!(stale.violation_found(&negative_control));

    // Required of the seeds together: one run without it still meets its own expectations.
    let any_seed = Expect {
        violation_in_any_seed: true,
        ..negative_control.clone()
    };
    assert!(clean.judge(&any_seed).is_ok());
    assert!(!clean.violation_found(&any_seed));
    let raft = report(Findings {
        raft: vec!["two leaders".to_string()],
        ..Findings::default()
    });
    assert!(
        raft.judge(&any_seed).is_err(),
        "pass checkers still bind each run"
    );
}

#[test]
fn the_format_reference_lists_every_fault_kind_with_its_fields() {
    let readme = std::fs::read_to_string(repo_dir("scenarios").join("README.md")).unwrap();
    for kind in crate::faults::KINDS {
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{}` |", kind.name)))
            .unwrap_or_else(|| panic!("scenarios/README.md has no row for `{}`", kind.name));
        for field in crate::faults::Field::ALL
            .into_iter()
            .filter(|f| kind.takes(*f))
        {
            assert!(
                row.contains(&format!("`{}", field.name())),
                "the `{}` row does not name `{}`: {row}",
                kind.name,
                field.name()
            );
        }
    }
}

/// `expect.sometimes` is judged over the seeds together: a point that fired in one seed is
/// covered; one that fired in none fails the sweep, naming it.
#[test]
fn expected_coverage_is_judged_over_the_seeds() {
    use crate::runner::SeedTally;
    let expected = vec![
        "lease_read@partition".to_string(),
        "snapshot_installed".to_string(),
    ];
    let hits = |points: &[&str]| -> std::collections::BTreeMap<String, u64> {
        points.iter().map(|p| (p.to_string(), 1)).collect()
    };
    let mut tally = SeedTally::default();
    tally.add(1, true, false, false);
    tally.add_coverage(&hits(&["lease_read", "lease_read@partition"]), &expected);
    tally.add(2, true, false, false);
    tally.add_coverage(&hits(&["lease_read"]), &expected);
    let failure = tally
        .group_failure()
        .expect("snapshot_installed never fired");
    assert!(
        failure.contains("snapshot_installed never fired in 2 seeds"),
        "{failure}"
    );
    assert!(!failure.contains("lease_read@partition"), "{failure}");
    let lines = tally.coverage_lines().join("\n");
    assert!(lines.contains("lease_read@partition"), "{lines}");
    assert!(lines.contains("fired in    1/2 seeds  expected"), "{lines}");
    assert!(lines.contains("NEVER FIRED"), "{lines}");

    tally.add(3, true, false, false);
    tally.add_coverage(&hits(&["snapshot_installed"]), &expected);
    assert_eq!(tally.group_failure(), None);
}
