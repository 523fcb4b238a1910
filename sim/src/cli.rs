//! `hyperion-sim`: run a scenario file for one seed, sweep seeds in parallel child processes,
//! replay every incident regression, and check that a seed replays identically.
//!
//! Every run prints a banner first (seed, scenario, commit, drawn parameters), then the timeline
//! in simulated time, the checkers' verdicts, the findings with their history excerpts, and the
//! one command that reproduces it. Exit codes: 0 every expectation met, 1 an expectation unmet
//! (or a nondeterministic seed), 2 a usage or scenario-file error.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::runner::{run_plan, RunReport};
use crate::spec::{parse_seed_range, Checker, Plan, ScenarioFile};
use crate::sweep::{panic_text, SEED_TIME_LIMIT};
use crate::trace::{first_difference, hash, render_timeline, to_jsonl};

/// Findings of one checker printed in a run's output (the rest are in `--trace`).
pub const FINDINGS_SHOWN_MAX: usize = 2;
/// Lines of one finding printed (its history excerpt included).
pub const FINDING_LINES_MAX: usize = 40;
/// Most parallel child processes.
pub const JOBS_MAX: usize = 64;

#[derive(Parser, Debug)]
#[command(
    name = "hyperion-sim",
    about = "Hyperion's deterministic simulator: scenario files, seed sweeps, incident regressions",
    after_help = "Build and run it with the madsim flags through ci/sim, e.g.\n  ci/sim run scenarios/leader-isolation.toml --seed 7\n  ci/sim replay"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Runs one seed of a scenario (or every variant of a regression at its committed seed).
    Run {
        file: PathBuf,
        /// The seed (default: 1 for a scenario, the committed seed for a regression variant).
        #[arg(long)]
        seed: Option<u64>,
        /// A regression's variant (default: every variant).
        #[arg(long)]
        variant: Option<String>,
        /// Writes the full event trace (JSON lines) to this file.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Prints one JSON summary line instead of the report (used by sweep and replay).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Runs many seeds in parallel child processes and prints a summary table.
    Sweep {
        file: PathBuf,
        /// `A..B` (B excluded), `A..=B` or one seed.
        #[arg(long)]
        seeds: String,
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// A regression's variant (default: every variant).
        #[arg(long)]
        variant: Option<String>,
    },
    /// Replays every regression in a directory: every variant at every committed seed.
    Replay {
        #[arg(long, default_value = "regressions")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        jobs: usize,
    },
    /// Runs each seed twice in separate processes and compares the event-trace hashes.
    CheckDeterminism {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `A..B`, `A..=B` or one seed (default: 1, or a regression's committed seeds' first).
        #[arg(long, alias = "seed")]
        seeds: Option<String>,
        #[arg(long)]
        variant: Option<String>,
    },
}

/// What a child process reports about one run (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub file: String,
    pub variant: Option<String>,
    pub seed: u64,
    pub met: bool,
    /// A checker listed under `expect.violation` found something.
    pub violation_found: bool,
    /// The violation is required of the seeds together (`violation_in = "any_seed"`).
    pub violation_in_any_seed: bool,
    pub verdict: String,
    pub sim_ms: u64,
    pub real_ms: u64,
    pub ops: usize,
    pub trace_hash: String,
}

/// Wall-clock time, for throughput only (seeds/s and the simulated/real ratio). The simulator
/// itself never reads it: nothing a run decides depends on it, so determinism is unaffected.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

fn git_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// The one command that reproduces a run.
pub fn repro_command(file: &str, variant: Option<&str>, seed: u64) -> String {
    match variant {
        Some(v) => format!("ci/sim run {file} --seed {seed} --variant {v}"),
        None => format!("ci/sim run {file} --seed {seed}"),
    }
}

/// One executed run: the plan, and the report (or the panic that ended it).
pub struct Executed {
    pub plan: Plan,
    pub result: Result<RunReport, String>,
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

    /// The trace as JSON lines (empty after a panic).
    pub fn trace_jsonl(&self) -> Vec<String> {
        self.result
            .as_ref()
            .map(|r| to_jsonl(&r.trace))
            .unwrap_or_default()
    }
}

/// Runs one seed of `file` (a regression's `variant`) in a fresh madsim runtime.
pub fn execute(file: &ScenarioFile, variant: Option<&str>, seed: u64) -> Result<Executed, String> {
    let plan = file.plan(seed, variant)?;
    let mut runtime =
        madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
    runtime.set_time_limit(SEED_TIME_LIMIT);
    let started = wall_clock();
    let result = catch_unwind(AssertUnwindSafe(|| runtime.block_on(run_plan(&plan, seed))))
        .map_err(|panic| panic_text(panic.as_ref()));
    let real_ms = started.elapsed().as_millis() as u64;
    Ok(Executed {
        plan,
        result,
        real_ms,
    })
}

fn load(path: &Path) -> Result<ScenarioFile, ExitCode> {
    ScenarioFile::load(path).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(2)
    })
}

/// Entry point of the `hyperion-sim` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run {
            file,
            seed,
            variant,
            trace,
            json,
        } => cmd_run(&file, seed, variant.as_deref(), trace.as_deref(), json),
        Cmd::Sweep {
            file,
            seeds,
            jobs,
            variant,
        } => cmd_sweep(&file, &seeds, jobs, variant.as_deref()),
        Cmd::Replay { dir, jobs } => cmd_replay(&dir, jobs),
        Cmd::CheckDeterminism {
            files,
            seeds,
            variant,
        } => cmd_check_determinism(&files, seeds.as_deref(), variant.as_deref()),
    };
    result.unwrap_or_else(|code| code)
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// A variant's name (`None` for a plain scenario) and its committed seeds.
type VariantSeeds = (Option<String>, Vec<u64>);

/// The variants (with their seeds) a command runs: every one, or the named one.
fn variants_of(file: &ScenarioFile, variant: Option<&str>) -> Result<Vec<VariantSeeds>, ExitCode> {
    if !file.is_regression() {
        if variant.is_some() {
            return Err(usage_error(format!(
                "{} is a scenario, not a regression: it has no variants",
                file.path
            )));
        }
        return Ok(vec![(None, vec![1])]);
    }
    let chosen: Vec<_> = file
        .variants
        .iter()
        .filter(|v| variant.is_none_or(|name| v.name == name))
        .map(|v| (Some(v.name.clone()), v.seeds.clone()))
        .collect();
    if chosen.is_empty() {
        return Err(usage_error(format!(
            "{} has no variant `{}` (it has: {})",
            file.path,
            variant.unwrap_or_default(),
            file.variants
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(chosen)
}

fn cmd_run(
    path: &Path,
    seed: Option<u64>,
    variant: Option<&str>,
    trace_path: Option<&Path>,
    json: bool,
) -> Result<ExitCode, ExitCode> {
    let file = load(path)?;
    let variants = variants_of(&file, variant)?;
    let commit = if json { String::new() } else { git_commit() };
    let mut all_met = true;
    for (variant, seeds) in &variants {
        let seed = seed.unwrap_or(seeds[0]);
        let executed = execute(&file, variant.as_deref(), seed).map_err(usage_error)?;
        let (met, verdict) = executed.verdict();
        all_met &= met;
        let jsonl = executed.trace_jsonl();
        if let Some(trace_path) = trace_path {
            let mut text = jsonl.join("\n");
            text.push('\n');
            std::fs::write(trace_path, text)
                .map_err(|e| usage_error(format!("cannot write {}: {e}", trace_path.display())))?;
        }
        if json {
            let summary = RunSummary {
                file: file.path.clone(),
                variant: variant.clone(),
                seed,
                met,
                violation_found: executed
                    .result
                    .as_ref()
                    .is_ok_and(|r| r.violation_found(&executed.plan.expect)),
                violation_in_any_seed: executed.plan.expect.violation_in_any_seed,
                verdict,
                sim_ms: executed.result.as_ref().map_or(0, |r| r.sim_ms),
                real_ms: executed.real_ms,
                ops: executed.result.as_ref().map_or(0, |r| r.findings.ops),
                trace_hash: hash(&jsonl),
            };
            println!(
                "{}",
                serde_json::to_string(&summary).expect("a summary serializes (plain data)")
            );
        } else {
            emit(&print_report(
                &file,
                &executed,
                seed,
                &commit,
                &jsonl,
                seeds.len(),
            ));
            if let Some(trace_path) = trace_path {
                println!("trace written to {}", trace_path.display());
            }
        }
    }
    Ok(if all_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Appends one formatted line to a report.
macro_rules! say {
    ($out:ident, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

/// Writes a report to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// The human-readable report of one run.
fn print_report(
    file: &ScenarioFile,
    executed: &Executed,
    seed: u64,
    commit: &str,
    jsonl: &[String],
    committed_seeds: usize,
) -> String {
    let mut out = String::new();
    let plan = &executed.plan;
    let variant = plan.variant.as_deref();
    say!(
        out,
        "== hyperion-sim | seed {seed} | scenario {} ({}){} | commit {commit}",
        plan.name,
        file.path,
        variant.map_or(String::new(), |v| format!(" | variant {v}"))
    );
    if let Some(v) = variant.and_then(|v| file.variants.iter().find(|x| x.name == v)) {
        if let Some(description) = &v.description {
            say!(out, "   {description}");
        }
        if committed_seeds > 1 {
            say!(
                out,
                "   (this variant commits {committed_seeds} seeds; `ci/sim replay` runs them all)"
            );
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
    let report = match &executed.result {
        Ok(report) => report,
        Err(panic) => {
            say!(
                out,
                "== the run panicked (a bug: an assertion failed)\n{panic}"
            );
            say!(
                out,
                "== verdict: EXPECTATION NOT MET\nreproduce: {}",
                repro_command(&file.path, variant, seed)
            );
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
    say!(
        out,
        "reproduce: {}",
        repro_command(&file.path, variant, seed)
    );
    out
}

/// One run for a child process.
#[derive(Debug, Clone)]
struct Item {
    file: String,
    variant: Option<String>,
    seed: u64,
    trace: Option<PathBuf>,
}

fn spawn_child(item: &Item) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg(&item.file)
        .arg("--seed")
        .arg(item.seed.to_string())
        .arg("--json");
    if let Some(variant) = &item.variant {
        command.arg("--variant").arg(variant);
    }
    if let Some(trace) = &item.trace {
        command.arg("--trace").arg(trace);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

fn collect_child(child: Child) -> Result<RunSummary, String> {
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str::<RunSummary>(line).ok())
        .ok_or_else(|| {
            let stderr = String::from_utf8_lossy(&output.stderr);
            format!(
                "child exited with {} without a summary: {}",
                output.status,
                stderr.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
            )
        })
}

/// Runs `items` in up to `jobs` child processes (each seed is its own madsim runtime in its own
/// process), oldest first; prints progress to stderr.
fn run_items(items: &[Item], jobs: usize, quiet: bool) -> Vec<(Item, Result<RunSummary, String>)> {
    let jobs = jobs.clamp(1, JOBS_MAX);
    let started = wall_clock();
    let tty = std::io::stderr().is_terminal();
    let every = (items.len() / 10).max(1);
    let mut running: std::collections::VecDeque<(Item, Result<Child, String>)> = Default::default();
    let mut done = Vec::with_capacity(items.len());
    let mut failed = 0;
    let mut next = 0;
    while done.len() < items.len() {
        while running.len() < jobs && next < items.len() {
            let item = items[next].clone();
            next += 1;
            let child = spawn_child(&item).map_err(|e| e.to_string());
            running.push_back((item, child));
        }
        let Some((item, child)) = running.pop_front() else {
            break;
        };
        let result = child.and_then(collect_child);
        if !result.as_ref().is_ok_and(|s| s.met) {
            failed += 1;
        }
        done.push((item, result));
        let elapsed = started.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "[{}/{}] {failed} failed, {:.2} seeds/s",
            done.len(),
            items.len(),
            done.len() as f64 / elapsed
        );
        if quiet {
            continue;
        }
        if tty {
            eprint!("\r{line}   ");
            if done.len() == items.len() {
                eprintln!();
            }
        } else if done.len() % every == 0 || done.len() == items.len() {
            eprintln!("{line}");
        }
    }
    done
}

/// Prints the summary table and the failures; returns whether every run met its expectations.
fn print_summary(results: &[(Item, Result<RunSummary, String>)], wall_s: f64) -> bool {
    #[derive(Default)]
    struct Row {
        seeds: usize,
        failed: usize,
        sim_ms: u64,
        real_ms: u64,
        /// Some seed must find the violation, and how many did.
        any_seed: bool,
        found: usize,
    }
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut failures = Vec::new();
    for (item, result) in results {
        let row = rows
            .entry((
                item.file.clone(),
                item.variant.clone().unwrap_or_else(|| "-".to_string()),
            ))
            .or_default();
        row.seeds += 1;
        match result {
            Ok(summary) => {
                row.sim_ms += summary.sim_ms;
                row.real_ms += summary.real_ms;
                row.any_seed |= summary.violation_in_any_seed;
                row.found += usize::from(summary.violation_found);
                if !summary.met {
                    row.failed += 1;
                    failures.push((item, summary.verdict.clone()));
                }
            }
            Err(error) => {
                row.failed += 1;
                failures.push((item, error.clone()));
            }
        }
    }
    println!(
        "{:<44} {:<12} {:>6} {:>6} {:>9} {:>9} {:>9}",
        "scenario", "variant", "seeds", "failed", "sim s", "cpu s", "sim/cpu"
    );
    let (mut seeds, mut sim_ms) = (0, 0);
    let mut group_failures = Vec::new();
    let mut notes = Vec::new();
    for ((file, variant), row) in &rows {
        if row.any_seed {
            notes.push(format!(
                "{file} {variant}: the expected violation was found in {} of {} seeds (at least one must)",
                row.found, row.seeds
            ));
            if row.found == 0 {
                group_failures.push(format!(
                    "FAILED {file} {variant}: no seed found the expected violation"
                ));
            }
        }
        seeds += row.seeds;
        sim_ms += row.sim_ms;
        println!(
            "{:<44} {:<12} {:>6} {:>6} {:>9.1} {:>9.1} {:>8.1}x",
            file,
            variant,
            row.seeds,
            row.failed,
            row.sim_ms as f64 / 1000.0,
            row.real_ms as f64 / 1000.0,
            row.sim_ms as f64 / row.real_ms.max(1) as f64
        );
    }
    let wall_s = wall_s.max(1e-3);
    println!(
        "total: {seeds} seeds in {wall_s:.1} s wall = {:.2} seeds/s ({:.0} seeds/min); simulated/real time {:.1}x",
        seeds as f64 / wall_s,
        seeds as f64 * 60.0 / wall_s,
        sim_ms as f64 / 1000.0 / wall_s
    );
    for note in &notes {
        println!("{note}");
    }
    for failure in &group_failures {
        println!("{failure}");
    }
    for (item, why) in &failures {
        println!(
            "FAILED seed {}: {why}\n  reproduce: {}",
            item.seed,
            repro_command(&item.file, item.variant.as_deref(), item.seed)
        );
    }
    failures.is_empty() && group_failures.is_empty()
}

fn cmd_sweep(
    path: &Path,
    seeds: &str,
    jobs: usize,
    variant: Option<&str>,
) -> Result<ExitCode, ExitCode> {
    let file = load(path)?;
    let seeds = parse_seed_range(seeds).map_err(usage_error)?;
    let items: Vec<Item> = variants_of(&file, variant)?
        .into_iter()
        .flat_map(|(variant, _)| {
            let file = file.path.clone();
            seeds.iter().map(move |&seed| Item {
                file: file.clone(),
                variant: variant.clone(),
                seed,
                trace: None,
            })
        })
        .collect();
    println!(
        "== hyperion-sim sweep | scenario {} | {} runs, {} jobs | commit {}",
        file.path,
        items.len(),
        jobs,
        git_commit()
    );
    Ok(run_and_summarize(&items, jobs))
}

/// Runs `items` in child processes and prints the summary; exit 1 if any expectation failed.
fn run_and_summarize(items: &[Item], jobs: usize) -> ExitCode {
    let started = wall_clock();
    let results = run_items(items, jobs, false);
    if print_summary(&results, started.elapsed().as_secs_f64()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Every `.toml` file in `dir`, sorted.
pub fn toml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn cmd_replay(dir: &Path, jobs: usize) -> Result<ExitCode, ExitCode> {
    let paths =
        toml_files(dir).map_err(|e| usage_error(format!("cannot read {}: {e}", dir.display())))?;
    let mut items = Vec::new();
    for path in &paths {
        let file = load(path)?;
        if !file.is_regression() {
            return Err(usage_error(format!(
                "{} has no [regression] table",
                file.path
            )));
        }
        println!(
            "== {} — {} ({})",
            file.path,
            file.spec
                .regression
                .as_ref()
                .map_or("", |r| r.title.as_str()),
            file.spec
                .regression
                .as_ref()
                .map_or("", |r| r.date.as_str())
        );
        for variant in &file.variants {
            println!(
                "   variant {:<12} {} seed(s): {}",
                variant.name,
                variant.seeds.len(),
                variant.description.as_deref().unwrap_or("")
            );
            items.extend(variant.seeds.iter().map(|&seed| Item {
                file: file.path.clone(),
                variant: Some(variant.name.clone()),
                seed,
                trace: None,
            }));
        }
    }
    println!(
        "== hyperion-sim replay | {} regressions, {} runs, {jobs} jobs | commit {}",
        paths.len(),
        items.len(),
        git_commit()
    );
    Ok(run_and_summarize(&items, jobs))
}

/// Compares two runs of one seed: `Ok(hash)` when their traces agree, else the first
/// difference.
pub fn compare_traces(a: &[String], b: &[String]) -> Result<String, String> {
    let (hash_a, hash_b) = (hash(a), hash(b));
    if hash_a == hash_b {
        return Ok(hash_a);
    }
    let (line, left, right) =
        first_difference(a, b).expect("traces with different hashes differ somewhere");
    Err(format!(
        "trace hashes differ ({} vs {}); first difference at line {}:\n  run 1: {left}\n  run 2: {right}",
        &hash_a[..16],
        &hash_b[..16],
        line + 1
    ))
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

fn cmd_check_determinism(
    paths: &[PathBuf],
    seeds: Option<&str>,
    variant: Option<&str>,
) -> Result<ExitCode, ExitCode> {
    let explicit = seeds
        .map(parse_seed_range)
        .transpose()
        .map_err(usage_error)?;
    let mut checked = 0;
    let mut diverged = Vec::new();
    let started = wall_clock();
    let temp = std::env::temp_dir();
    for path in paths {
        let file = load(path)?;
        for (variant, committed) in variants_of(&file, variant)? {
            let seeds = explicit.clone().unwrap_or_else(|| vec![committed[0]]);
            for seed in seeds {
                let runs: Vec<Item> = ["a", "b"]
                    .iter()
                    .map(|run| Item {
                        file: file.path.clone(),
                        variant: variant.clone(),
                        seed,
                        trace: Some(temp.join(format!(
                            "hyperion-sim-determinism-{}-{checked}-{run}.jsonl",
                            std::process::id()
                        ))),
                    })
                    .collect();
                let results = run_items(&runs, 2, true);
                let traces: Vec<Vec<String>> = runs
                    .iter()
                    .map(|r| read_lines(r.trace.as_deref().expect("set above")))
                    .collect();
                for run in &runs {
                    let _ = std::fs::remove_file(run.trace.as_deref().expect("set above"));
                }
                checked += 1;
                let label = format!(
                    "{}{} seed {seed}",
                    file.path,
                    variant
                        .as_deref()
                        .map_or(String::new(), |v| format!(" [{v}]"))
                );
                let summaries: Vec<_> = results.iter().map(|(_, r)| r.clone()).collect();
                if let Some(Err(error)) = summaries.iter().find(|r| r.is_err()) {
                    println!("FAIL {label}: a run did not finish: {error}");
                    diverged.push(label);
                    continue;
                }
                match compare_traces(&traces[0], &traces[1]) {
                    Ok(hash) => println!(
                        "ok   {label}: identical trace ({} events) sha256 {}",
                        traces[0].len(),
                        &hash[..16]
                    ),
                    Err(difference) => {
                        println!("FAIL {label}: nondeterministic\n{difference}");
                        diverged.push(label);
                    }
                }
            }
        }
    }
    println!(
        "determinism: {checked} seed(s) run twice in {:.1} s, {} diverged",
        started.elapsed().as_secs_f64(),
        diverged.len()
    );
    Ok(if diverged.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
