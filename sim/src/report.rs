//! The human-readable report of one run: a banner first (seed, scenario, commit, the
//! fault-injection switches, every drawn parameter), then the timeline in simulated time, the
//! checkers' verdicts, the findings with their history excerpts, the verdict, and last the one
//! command that reproduces the run.

use crate::runner::Executed;
use crate::seeds::{reproduce, Replay};
use crate::spec::{Checker, ScenarioFile};
use crate::trace::{hash, render_timeline};

/// Findings of one checker printed in a run's output (the rest are in `--trace`).
pub const FINDINGS_SHOWN_MAX: usize = 2;
/// Lines of one finding printed (its history excerpt included).
pub const FINDING_LINES_MAX: usize = 40;

/// Appends one formatted line to a report.
macro_rules! say {
    ($out:ident, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// The banner: what ran, and everything a replay must set the same way.
fn banner(out: &mut String, file: &ScenarioFile, executed: &Executed, commit: &str) {
    let plan = &executed.plan;
    let variant = plan.variant.as_deref();
    say!(
        out,
        "== hyperion-sim | seed {} | scenario {} ({}){} | commit {commit}",
        executed.seed,
        plan.name,
        file.path,
        variant.map_or(String::new(), |v| format!(" | variant {v}"))
    );
    if let Some(v) = variant.and_then(|v| file.variants.iter().find(|x| x.name == v)) {
        if let Some(description) = &v.description {
            say!(out, "   {description}");
        }
        if v.seeds.len() > 1 {
            say!(
                out,
                "   (this variant commits {} seeds; `ci/sim replay` runs them all)",
                v.seeds.len()
            );
        }
    }
    let switches = plan.injection.enabled();
    say!(
        out,
        "   fault injection: {}",
        if switches.is_empty() {
            "none".to_string()
        } else {
            switches.join(", ")
        }
    );
    if let Some(db) = &plan.database {
        let mut pre_fix = Vec::new();
        if !db.breaker {
            pre_fix.push("a breaker that never opens");
        }
        if !db.warm_up {
            pre_fix.push("a pool created by the first query");
        }
        if !pre_fix.is_empty() {
            say!(out, "   database client (pre-fix): {}", pre_fix.join(", "));
        }
    }
    if plan.draws.is_empty() {
        say!(out, "   drawn: none (every parameter is fixed by the file)");
    }
    for draw in &plan.draws {
        say!(
            out,
            "   drawn: {} = {}{}",
            draw.field,
            draw.value,
            draw.range
                .as_ref()
                .map_or(String::new(), |r| format!("  (from {r})"))
        );
    }
}

/// The report of one run; `jsonl` is its trace (for the hash).
pub fn render(file: &ScenarioFile, executed: &Executed, commit: &str, jsonl: &[String]) -> String {
    let mut out = String::new();
    let plan = &executed.plan;
    let replay = reproduce(
        &file.path,
        plan.variant.as_deref(),
        Replay::Run(&[executed.seed]),
    );
    banner(&mut out, file, executed, commit);
    let report = match &executed.result {
        Ok(report) => report,
        Err(panic) => {
            say!(
                out,
                "== the run panicked (a bug: an assertion failed)\n{panic}"
            );
            say!(out, "== verdict: EXPECTATION NOT MET\n{replay}");
            return out;
        }
    };
    say!(out, "== timeline (simulated ms since the workload started)");
    out.push_str(&render_timeline(
        &report.trace,
        plan.expect.memory_max_bytes.is_some(),
    ));
    say!(
        out,
        "== checkers ({} client operations checked)",
        report.findings.ops
    );
    for checker in Checker::ALL {
        let found = report.of(checker);
        let role = if plan.expect.pass.contains(&checker) {
            "must pass"
        } else if plan.expect.violation.contains(&checker) {
            "a violation is expected"
        } else {
            "not judged"
        };
        let state = if checker == Checker::Memory && plan.expect.memory_max_bytes.is_none() {
            "not checked".to_string()
        } else if found.is_empty() {
            "PASS".to_string()
        } else {
            format!("{} finding(s)", found.len())
        };
        let extra = if checker == Checker::Memory {
            plan.expect.memory_max_bytes.map_or(String::new(), |max| {
                format!(
                    ", peak {} bytes/node, bound {max}",
                    report.memory_peak_bytes
                )
            })
        } else {
            String::new()
        };
        say!(out, "   {:<16} {state:<14} ({role}{extra})", checker.name());
    }
    for checker in Checker::ALL {
        let found = report.of(checker);
        for finding in found.iter().take(FINDINGS_SHOWN_MAX) {
            say!(out, "-- [{}]", checker.name());
            for line in finding.lines().take(FINDING_LINES_MAX) {
                say!(out, "   {line}");
            }
        }
        if found.len() > FINDINGS_SHOWN_MAX {
            say!(
                out,
                "-- [{}] ... and {} more (see --trace)",
                checker.name(),
                found.len() - FINDINGS_SHOWN_MAX
            );
        }
    }
    say!(
        out,
        "== coverage (the product's sometimes!/reachable! points this seed reached)"
    );
    let fired: Vec<String> = executed
        .coverage
        .iter()
        .map(|(point, hits)| format!("{point}×{hits}"))
        .collect();
    say!(out, "   {}", fired.join("  "));
    let missed: Vec<&String> = plan
        .expect
        .sometimes
        .iter()
        .filter(|p| !executed.coverage.contains_key(*p))
        .collect();
    if !missed.is_empty() {
        say!(
            out,
            "   expected by expect.sometimes, not reached in this seed (a sweep needs one seed to): {}",
            missed.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    let (met, verdict) = executed.verdict();
    say!(
        out,
        "== verdict: {} — {verdict}",
        if met {
            "EXPECTATION MET"
        } else {
            "EXPECTATION NOT MET"
        }
    );
    say!(
        out,
        "   simulated {:.1} s in {:.1} s real ({:.1}x); trace sha256 {}",
        report.sim_ms as f64 / 1000.0,
        executed.real_ms as f64 / 1000.0,
        report.sim_ms as f64 / executed.real_ms.max(1) as f64,
        &hash(jsonl)[..16]
    );
    say!(out, "{replay}");
    out
}
