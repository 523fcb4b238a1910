//! `hyperion-sim`: run a scenario file for one seed, sweep seeds in parallel child processes,
//! replay every incident regression, and check that a seed replays identically.
//!
//! Every run prints its report ([`crate::report`]): a banner first, the timeline, the checkers'
//! verdicts and the one command that reproduces it; every failure in a sweep, a replay or a
//! determinism check prints the one command that replays it ([`crate::seeds::reproduce`]).
//! Seeds: `--seed N` / `--seeds A..B`, else `HYPERION_SIM_SEED` / `HYPERION_SIM_SEEDS`
//! ([`crate::seeds`]). Exit codes: 0 every expectation met, 1 an expectation unmet (or a
//! nondeterministic seed), 2 a usage or scenario-file error.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::runner::{run_seed, wall_clock, SeedTally};
use crate::seeds::{self, reproduce, Replay};
use crate::spec::ScenarioFile;
use crate::trace::{first_difference, hash};

/// Most parallel child processes.
pub const JOBS_MAX: usize = 64;

#[derive(Parser, Debug)]
#[command(
    name = "hyperion-sim",
    about = "Hyperion's deterministic simulator: scenario files, seed sweeps, incident regressions",
    after_help = "Build and run it with the madsim flags through ci/sim, e.g.\n  ci/sim run scenarios/leader-isolation.toml --seed 7\n  ci/sim replay\n\nWithout --seed/--seeds, HYPERION_SIM_SEED (the first seed) and HYPERION_SIM_SEEDS (how many)\nchoose the seeds."
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
        /// The seed (default: HYPERION_SIM_SEED, else 1 for a scenario and the committed seed
        /// for a regression variant).
        #[arg(long)]
        seed: Option<u64>,
        /// A regression's variant (default: every variant).
        #[arg(long)]
        variant: Option<String>,
        /// Writes the full event trace (JSON lines) to this file.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Writes the clients' history to this file as Porcupine operations (JSON; see
        /// scenarios/README.md).
        #[arg(long)]
        history: Option<PathBuf>,
        /// Writes the run as one self-contained HTML page (timeline, operations per key, the
        /// violation highlighted, the reproduce command).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Prints one JSON summary line instead of the report (used by sweep and replay).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Shrinks a failing seed to a small regression file with concrete values (delta debugging
    /// over the faults, their durations, the workload and the topology).
    Shrink {
        file: PathBuf,
        #[arg(long)]
        seed: u64,
        /// A regression's variant (required for a regression).
        #[arg(long)]
        variant: Option<String>,
        /// Where to write the shrunk file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Runs many seeds in parallel child processes and prints a summary table.
    Sweep {
        file: PathBuf,
        /// `A..B` (B excluded), `A..=B`, `N,M,..` or one seed (default: HYPERION_SIM_SEED and
        /// HYPERION_SIM_SEEDS).
        #[arg(long, alias = "seed")]
        seeds: Option<String>,
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// A regression's variant (default: every variant).
        #[arg(long)]
        variant: Option<String>,
        /// On the first seed that misses its expectations with a violation, shrinks it and
        /// writes the regression file here (see `shrink`).
        #[arg(long)]
        shrink_first_failure: Option<PathBuf>,
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
        /// `A..B`, `A..=B`, `N,M,..` or one seed (default: HYPERION_SIM_SEED and
        /// HYPERION_SIM_SEEDS, else 1 or a regression variant's first committed seed).
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
    /// Hits of the product's coverage points (per point and `point@condition`).
    #[serde(default)]
    pub coverage: BTreeMap<String, u64>,
    /// The points the plan's `expect.sometimes` requires of the seeds together.
    #[serde(default)]
    pub expect_sometimes: Vec<String>,
}

/// The commit the simulator was built from (for banners), or `unknown`.
pub fn git_commit() -> String {
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
            history,
            report,
            json,
        } => cmd_run(
            &file,
            seed,
            variant.as_deref(),
            Outputs {
                trace: trace.as_deref(),
                history: history.as_deref(),
                report: report.as_deref(),
            },
            json,
        ),
        Cmd::Shrink {
            file,
            seed,
            variant,
            out,
        } => cmd_shrink(&file, seed, variant.as_deref(), out.as_deref()),
        Cmd::Sweep {
            file,
            seeds,
            jobs,
            variant,
            shrink_first_failure,
        } => cmd_sweep(
            &file,
            seeds.as_deref(),
            jobs,
            variant.as_deref(),
            shrink_first_failure.as_deref(),
        ),
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

/// The seeds the command line names (`--seeds`), if it names any.
fn command_line_seeds(text: Option<&str>) -> Result<Option<Vec<u64>>, ExitCode> {
    text.map(seeds::parse).transpose().map_err(usage_error)
}

fn cmd_run(
    path: &Path,
    seed: Option<u64>,
    variant: Option<&str>,
    outputs: Outputs<'_>,
    json: bool,
) -> Result<ExitCode, ExitCode> {
    let Outputs {
        trace: trace_path,
        history: history_path,
        report: report_path,
    } = outputs;
    let file = load(path)?;
    let variants = variants_of(&file, variant)?;
    let commit = if json { String::new() } else { git_commit() };
    let mut all_met = true;
    for (variant, committed) in &variants {
        let chosen =
            seeds::select(seed.map(|seed| vec![seed]), &committed[..1]).map_err(usage_error)?;
        for seed in chosen {
            let executed = run_seed(&file, variant.as_deref(), seed).map_err(usage_error)?;
            let (met, verdict) = executed.verdict();
            all_met &= met;
            let jsonl = executed.trace_jsonl();
            if let Some(trace_path) = trace_path {
                let mut text = jsonl.join("\n");
                text.push('\n');
                std::fs::write(trace_path, text).map_err(|e| {
                    usage_error(format!("cannot write {}: {e}", trace_path.display()))
                })?;
            }
            if let Some(path) = report_path {
                let replay = reproduce(&file.path, variant.as_deref(), Replay::Run(&[seed]));
                let page = crate::report_html::render(&file, &executed, &replay.to_string());
                std::fs::write(path, page)
                    .map_err(|e| usage_error(format!("cannot write {}: {e}", path.display())))?;
                if !json {
                    println!("report written to {}", path.display());
                }
            }
            if let (Some(path), Ok(report)) = (history_path, &executed.result) {
                let history = hyperion_checker::porcupine_history(&report.history);
                let text = serde_json::to_string(&history).expect("JSON values serialize");
                std::fs::write(path, text)
                    .map_err(|e| usage_error(format!("cannot write {}: {e}", path.display())))?;
                if !json {
                    println!(
                        "history ({} operations, Porcupine format) written to {}",
                        report.history.len(),
                        path.display()
                    );
                }
            }
            if json {
                let summary = RunSummary {
                    file: file.path.clone(),
                    variant: variant.clone(),
                    seed,
                    met,
                    violation_found: executed.violation_found(),
                    violation_in_any_seed: executed.plan.expect.violation_in_any_seed,
                    verdict,
                    sim_ms: executed.result.as_ref().map_or(0, |r| r.sim_ms),
                    real_ms: executed.real_ms,
                    ops: executed.result.as_ref().map_or(0, |r| r.findings.ops),
                    trace_hash: hash(&jsonl),
                    coverage: executed.coverage.clone(),
                    expect_sometimes: executed.plan.expect.sometimes.clone(),
                };
                println!(
                    "{}",
                    serde_json::to_string(&summary).expect("a summary serializes (plain data)")
                );
            } else {
                emit(&crate::report::render(&file, &executed, &commit, &jsonl));
                if let Some(trace_path) = trace_path {
                    println!("trace written to {}", trace_path.display());
                }
            }
        }
    }
    Ok(if all_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn cmd_shrink(
    path: &Path,
    seed: u64,
    variant: Option<&str>,
    out: Option<&Path>,
) -> Result<ExitCode, ExitCode> {
    let file = load(path)?;
    eprintln!(
        "shrinking {} seed {seed}: each candidate is one deterministic run",
        file.path
    );
    let shrunk = crate::shrink::shrink(&file, variant, seed, crate::shrink::RUNS_MAX, |line| {
        eprintln!("  {line}")
    })
    .map_err(usage_error)?;
    eprintln!(
        "target: {:?}; {} runs
before: {}
after:  {}",
        shrunk.target, shrunk.runs, shrunk.before, shrunk.after
    );
    match out {
        Some(out) => {
            std::fs::write(out, &shrunk.toml)
                .map_err(|e| usage_error(format!("cannot write {}: {e}", out.display())))?;
            eprintln!(
                "written to {}; replay: ci/sim run {} --variant found",
                out.display(),
                out.display()
            );
        }
        None => emit(&shrunk.toml),
    }
    Ok(ExitCode::SUCCESS)
}

/// Files a run writes besides its report on stdout.
struct Outputs<'a> {
    trace: Option<&'a Path>,
    history: Option<&'a Path>,
    report: Option<&'a Path>,
}

/// Writes a report to stdout; a closed pipe (`| head`) is not an error worth a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
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

/// Draws every item's plan before any child runs: a seed whose nodes the product would refuse,
/// say, is a usage error naming the file and the field, not a failed run.
fn check_plans(file: &ScenarioFile, items: &[Item]) -> Result<(), ExitCode> {
    for item in items {
        file.plan(item.seed, item.variant.as_deref())
            .map_err(|error| usage_error(format!("seed {}: {error}", item.seed)))?;
    }
    Ok(())
}

/// Prints the summary table and the failures, each with the command that replays it; returns
/// whether every run met its expectations.
fn print_summary(results: &[(Item, Result<RunSummary, String>)], wall_s: f64) -> bool {
    #[derive(Default)]
    struct Row {
        tally: SeedTally,
        sim_ms: u64,
        real_ms: u64,
    }
    let mut rows: BTreeMap<(String, Option<String>), Row> = BTreeMap::new();
    let mut failures = Vec::new();
    for (item, result) in results {
        let row = rows
            .entry((item.file.clone(), item.variant.clone()))
            .or_default();
        match result {
            Ok(summary) => {
                row.sim_ms += summary.sim_ms;
                row.real_ms += summary.real_ms;
                row.tally.add(
                    item.seed,
                    summary.met,
                    summary.violation_found,
                    summary.violation_in_any_seed,
                );
                row.tally
                    .add_coverage(&summary.coverage, &summary.expect_sometimes);
                if !summary.met {
                    failures.push((item, summary.verdict.clone()));
                }
            }
            Err(error) => {
                row.tally.add(item.seed, false, false, false);
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
        let shown = variant.as_deref().unwrap_or("-");
        if let Some(note) = row.tally.any_seed_note() {
            notes.push(format!("{file} {shown}: {note}"));
        }
        if let Some(failure) = row.tally.group_failure() {
            group_failures.push(format!(
                "FAILED {file} {shown}: {failure}\n  {}",
                reproduce(file, variant.as_deref(), Replay::Run(&row.tally.seeds))
            ));
        }
        seeds += row.tally.seeds.len();
        sim_ms += row.sim_ms;
        println!(
            "{:<44} {:<12} {:>6} {:>6} {:>9.1} {:>9.1} {:>8.1}x",
            file,
            shown,
            row.tally.seeds.len(),
            row.tally.failed.len(),
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
    for ((file, variant), row) in &rows {
        let lines = row.tally.coverage_lines();
        if !lines.is_empty() {
            let shown = variant.as_deref().unwrap_or("-");
            println!("coverage of {file} {shown} (the product's sometimes!/reachable! points):");
            for line in lines {
                println!("{line}");
            }
        }
    }
    for failure in &group_failures {
        println!("{failure}");
    }
    for (item, why) in &failures {
        println!(
            "FAILED seed {}: {why}\n  {}",
            item.seed,
            reproduce(
                &item.file,
                item.variant.as_deref(),
                Replay::Run(&[item.seed])
            )
        );
    }
    failures.is_empty() && group_failures.is_empty()
}

fn cmd_sweep(
    path: &Path,
    seeds: Option<&str>,
    jobs: usize,
    variant: Option<&str>,
    shrink_to: Option<&Path>,
) -> Result<ExitCode, ExitCode> {
    let file = load(path)?;
    let seeds = match command_line_seeds(seeds)? {
        Some(seeds) => seeds,
        None => seeds::from_env().map_err(usage_error)?.ok_or_else(|| {
            usage_error(format!(
                "sweep needs --seeds A..B (or {} and {})",
                seeds::SEED_VAR,
                seeds::SEEDS_VAR
            ))
        })?,
    };
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
    check_plans(&file, &items)?;
    println!(
        "== hyperion-sim sweep | scenario {} | {} runs, {} jobs | commit {}",
        file.path,
        items.len(),
        jobs,
        git_commit()
    );
    let started = wall_clock();
    let results = run_items(&items, jobs, false);
    if print_summary(&results, started.elapsed().as_secs_f64()) {
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(out) = shrink_to {
        let failed = results
            .iter()
            .find(|(_, result)| result.as_ref().is_ok_and(|s| !s.met));
        match failed {
            Some((item, _)) => {
                println!("shrinking the first failing seed, {}", item.seed);
                cmd_shrink(path, item.seed, item.variant.as_deref(), Some(out))?;
            }
            None => println!("no failing seed ran to its end: nothing to shrink"),
        }
    }
    Ok(ExitCode::from(1))
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
        let first = items.len();
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
        check_plans(&file, &items[first..])?;
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
    let explicit = match command_line_seeds(seeds)? {
        Some(seeds) => Some(seeds),
        None => seeds::from_env().map_err(usage_error)?,
    };
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
                let replay =
                    reproduce(&file.path, variant.as_deref(), Replay::Determinism(&[seed]));
                if let Some(Err(error)) = summaries.iter().find(|r| r.is_err()) {
                    println!("FAIL {label}: a run did not finish: {error}\n  {replay}");
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
                        println!("FAIL {label}: nondeterministic\n{difference}\n  {replay}");
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
