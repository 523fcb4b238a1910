//! Shrinking a failing seed to a small regression (`hyperion-sim shrink FILE --seed N`).
//!
//! 1. The seed is run as drawn; what it found is the target: the checkers that found something,
//!    and for linearizability the kinds of violation (`StaleRead`, ...).
//! 2. The file is made concrete for that seed: a regression's variant is folded into the base
//!    (its config and database merged over the file's, its faults and retry replacing them), and
//!    every range the seed drew is replaced by the value it drew.
//! 3. Delta debugging, greedy: each candidate drops one fault, halves one fault's duration or
//!    repeat count, halves the workload's duration or keys, removes a client, or drops the cluster
//!    to 3 nodes; it is run deterministically with the same seed and kept if it still finds the
//!    target. Rounds repeat until none is kept, within [`RUNS_MAX`] runs.
//! 4. The result is a regression file with concrete values, the seed committed in its one
//!    variant, a placeholder postmortem for the engineer to fill in, and the before/after sizes.

use std::collections::BTreeSet;

use toml::{Table, Value};

use crate::runner::{run_seed, Executed};
use crate::spec::ScenarioFile;

/// Most candidate runs one shrink makes (the command's default).
pub const RUNS_MAX: usize = 60;

/// What a seed found: the checkers, and the linearizability violation kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub checkers: BTreeSet<&'static str>,
    pub kinds: BTreeSet<String>,
}

impl Target {
    fn of(executed: &Executed) -> Option<Target> {
        let report = executed.result.as_ref().ok()?;
        let checkers: BTreeSet<&'static str> = crate::spec::Checker::ALL
            .into_iter()
            .filter(|c| !report.of(*c).is_empty())
            .map(|c| c.name())
            .collect();
        let kinds = report
            .findings
            .linearizability
            .iter()
            .filter_map(|f| f.split_whitespace().next())
            .map(str::to_string)
            .collect();
        (!checkers.is_empty()).then_some(Target { checkers, kinds })
    }

    /// Whether `found` still shows this target (the same checkers, the same kinds among them).
    fn met_by(&self, found: &Target) -> bool {
        self.checkers.is_subset(&found.checkers)
            && (self.kinds.is_empty() || !self.kinds.is_disjoint(&found.kinds))
    }
}

/// The size of a scenario, for the before/after line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub faults: usize,
    pub fault_ms: u64,
    pub workload_ms: u64,
    pub clients: u64,
    pub keys: u64,
    pub nodes: u64,
    pub ops: usize,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} nodes, {} clients, {} keys, {} fault steps lasting {} ms, workload {} ms, {} operations",
            self.nodes, self.clients, self.keys, self.faults, self.fault_ms, self.workload_ms, self.ops
        )
    }
}

/// A shrink's outcome.
pub struct Shrunk {
    pub toml: String,
    pub before: Size,
    pub after: Size,
    pub runs: usize,
    pub target: Target,
}

fn int(value: &Value) -> Option<i64> {
    value.as_integer()
}

fn get<'a>(doc: &'a Table, section: &str, key: &str) -> Option<&'a Value> {
    doc.get(section)?.as_table()?.get(key)
}

fn size(doc: &Table, ops: usize) -> Size {
    let faults = doc.get("faults").and_then(Value::as_array);
    let steps =
        |f: &Value| int(f.get("repeat").unwrap_or(&Value::Integer(1))).unwrap_or(1) as usize;
    let fault_ms = faults.map_or(0, |fs| {
        fs.iter()
            .map(|f| {
                let each = f.get("duration_ms").and_then(int).unwrap_or(0) as u64;
                each * steps(f) as u64
            })
            .sum()
    });
    let number = |section: &str, key: &str, default: i64| {
        get(doc, section, key).and_then(int).unwrap_or(default) as u64
    };
    Size {
        faults: faults.map_or(0, |fs| fs.iter().map(steps).sum()),
        fault_ms,
        workload_ms: number("workload", "duration_ms", 10_000),
        clients: number("topology", "cluster_clients", 3)
            + number("topology", "pinned_clients", 3)
            + number("topology", "near_cache_clients", 0),
        keys: number("workload", "keys", 5),
        nodes: number("topology", "nodes", 3),
        ops,
    }
}

/// Parses a drawn value as TOML would hold it.
fn drawn_value(text: &str) -> Option<Value> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(Value::Integer(n));
    }
    if let Ok(x) = text.parse::<f64>() {
        return Some(Value::Float(x));
    }
    match text {
        "true" => Some(Value::Boolean(true)),
        "false" => Some(Value::Boolean(false)),
        _ => None,
    }
}

/// Sets `path` (`workload.keys`, `faults[2].at_ms`, `node.1.heartbeat_ms`) to `value`; false if
/// the path is not one a file can hold concretely (a per-node draw, a repeat's own time).
fn set_path(doc: &mut Table, path: &str, value: Value) -> bool {
    if path.contains("repeat[") || path.contains("[node") {
        return false;
    }
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut table = doc;
    for part in parts {
        let (name, index) = match part.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let entry = table
            .entry(name.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        let next = match (entry, index) {
            (Value::Array(items), Some(i)) => items.get_mut(i),
            (value @ Value::Table(_), None) => Some(value),
            _ => None,
        };
        match next.and_then(Value::as_table_mut) {
            Some(next) => table = next,
            None => return false,
        }
    }
    table.insert(last.to_string(), value);
    true
}

/// The file made concrete for `seed` (variant folded in, drawn ranges replaced), with the
/// draws that could not be made concrete.
fn concrete(
    file: &ScenarioFile,
    variant: Option<&str>,
    executed: &Executed,
) -> (Table, Vec<String>) {
    let mut doc: Table = toml::from_str(&file.source).expect("the file parsed when it was loaded");
    // The checkers' parameters (a TTL tolerance, a memory bound) stay; what must pass or fail
    // is decided by the target instead.
    let mut expect = doc
        .get("expect")
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default();
    if let Some(name) = variant {
        let variants = doc
            .remove("variant")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        if let Some(v) = variants
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(name))
        {
            for section in ["config", "database"] {
                if let Some(Value::Table(over)) = v.get(section) {
                    let base = doc
                        .entry(section.to_string())
                        .or_insert_with(|| Value::Table(Table::new()));
                    if let Value::Table(base) = base {
                        for (key, value) in over {
                            base.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
            if let Some(faults) = v.get("faults") {
                doc.insert("faults".to_string(), faults.clone());
            }
            if let Some(Value::Table(own)) = v.get("expect") {
                expect = own.clone();
            }
            if let Some(retry) = v.get("retry") {
                if let Some(Value::Table(workload)) = doc.get_mut("workload") {
                    workload.insert("retry".to_string(), retry.clone());
                }
            }
        }
    }
    doc.remove("variant");
    doc.remove("regression");
    for judged in ["pass", "violation", "violation_in", "sometimes"] {
        expect.remove(judged);
    }
    doc.insert("expect".to_string(), Value::Table(expect));
    let mut kept = Vec::new();
    for draw in &executed.plan.draws {
        let set =
            drawn_value(&draw.value).is_some_and(|value| set_path(&mut doc, &draw.field, value));
        if !set {
            kept.push(format!("{} (kept as a range)", draw.field));
        }
    }
    (doc, kept)
}

/// The candidates one step smaller than `doc`, most promising first.
fn candidates(doc: &Table) -> Vec<Table> {
    let mut out = Vec::new();
    let faults = doc
        .get("faults")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for i in (0..faults.len()).rev() {
        let mut smaller = doc.clone();
        let mut fs = faults.clone();
        fs.remove(i);
        smaller.insert("faults".to_string(), Value::Array(fs));
        out.push(smaller);
    }
    for (i, fault) in faults.iter().enumerate() {
        for key in ["repeat", "duration_ms"] {
            let low = if key == "repeat" { 1 } else { 100 };
            if let Some(n) = fault.get(key).and_then(int).filter(|n| *n > low) {
                let mut fs = faults.clone();
                if let Some(Value::Table(t)) = fs.get_mut(i) {
                    t.insert(key.to_string(), Value::Integer((n / 2).max(low)));
                }
                let mut smaller = doc.clone();
                smaller.insert("faults".to_string(), Value::Array(fs));
                out.push(smaller);
            }
        }
    }
    let mut halve = |section: &str, key: &str, low: i64| {
        if let Some(n) = get(doc, section, key).and_then(int).filter(|n| *n > low) {
            let mut smaller = doc.clone();
            set_path(
                &mut smaller,
                &format!("{section}.{key}"),
                Value::Integer((n / 2).max(low)),
            );
            out.push(smaller);
        }
    };
    halve("workload", "duration_ms", 1_000);
    halve("workload", "keys", 1);
    halve("topology", "cluster_clients", 0);
    halve("topology", "pinned_clients", 0);
    halve("topology", "near_cache_clients", 0);
    if get(doc, "topology", "nodes").and_then(int).unwrap_or(3) > 3 {
        let mut smaller = doc.clone();
        set_path(&mut smaller, "topology.nodes", Value::Integer(3));
        out.push(smaller);
    }
    out
}

/// Runs `doc` at `seed`; what it found.
fn try_run(path: &str, doc: &Table, seed: u64) -> Option<(Target, usize)> {
    let source = toml::to_string(doc).ok()?;
    let file = ScenarioFile::parse(path, &source).ok()?;
    let executed = run_seed(&file, None, seed).ok()?;
    let ops = executed.result.as_ref().map_or(0, |r| r.findings.ops);
    Target::of(&executed).map(|t| (t, ops))
}

/// Shrinks `seed` of `file` (its `variant`, for a regression). `progress` hears of every kept
/// candidate.
pub fn shrink(
    file: &ScenarioFile,
    variant: Option<&str>,
    seed: u64,
    runs_max: usize,
    mut progress: impl FnMut(&str),
) -> Result<Shrunk, String> {
    let executed = run_seed(file, variant, seed)?;
    let target = Target::of(&executed).ok_or_else(|| {
        format!(
            "seed {seed} finds no violation in {}: nothing to shrink",
            file.path
        )
    })?;
    let (mut doc, kept_ranges) = concrete(file, variant, &executed);
    let shrunk_path = format!("{}.shrunk.toml", file.path.trim_end_matches(".toml"));
    let Some((found, mut ops)) = try_run(&shrunk_path, &doc, seed) else {
        return Err(format!(
            "the concrete file of seed {seed} no longer finds the violation (draws kept as ranges: {})",
            if kept_ranges.is_empty() { "none".to_string() } else { kept_ranges.join(", ") }
        ));
    };
    if !target.met_by(&found) {
        return Err(format!("the concrete file finds {found:?}, not {target:?}"));
    }
    let before = size(&doc, executed.result.as_ref().map_or(0, |r| r.findings.ops));
    let mut runs = 1;
    'rounds: loop {
        let mut kept = false;
        for candidate in candidates(&doc) {
            if runs >= runs_max {
                break 'rounds;
            }
            runs += 1;
            if let Some((found, candidate_ops)) = try_run(&shrunk_path, &candidate, seed) {
                if target.met_by(&found) {
                    doc = candidate;
                    ops = candidate_ops;
                    kept = true;
                    progress(&format!("kept: {}", size(&doc, ops)));
                    break;
                }
            }
        }
        if !kept {
            break;
        }
    }
    let after = size(&doc, ops);
    Ok(Shrunk {
        toml: regression_text(
            file,
            variant,
            seed,
            &doc,
            &target,
            before,
            after,
            &kept_ranges,
        ),
        before,
        after,
        runs,
        target,
    })
}

#[allow(clippy::too_many_arguments)]
fn regression_text(
    file: &ScenarioFile,
    variant: Option<&str>,
    seed: u64,
    doc: &Table,
    target: &Target,
    before: Size,
    after: Size,
    kept_ranges: &[String],
) -> String {
    let mut doc = doc.clone();
    let name = format!(
        "{}-shrunk-seed-{seed}",
        doc.get("name")
            .and_then(Value::as_str)
            .unwrap_or("scenario")
    );
    doc.insert("name".to_string(), Value::String(name));
    doc.insert(
        "description".to_string(),
        Value::String(format!(
            "Shrunk from {} seed {seed}{}: {after}.",
            file.path,
            variant.map_or(String::new(), |v| format!(" (variant {v})"))
        )),
    );
    let mut regression = Table::new();
    regression.insert("date".to_string(), Value::String("YYYY-MM-DD".to_string()));
    regression.insert(
        "title".to_string(),
        Value::String(format!(
            "{} found by seed {seed}, shrunk",
            target
                .checkers
                .iter()
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )),
    );
    regression.insert(
        "postmortem".to_string(),
        Value::String(
            "TO FILL IN: what happened, why, and what the fix is. This file was shrunk by \
             `hyperion-sim shrink`; its one variant commits the seed that finds the violation."
                .to_string(),
        ),
    );
    doc.insert("regression".to_string(), Value::Table(regression));
    let mut expect = doc
        .remove("expect")
        .and_then(|e| e.as_table().cloned())
        .unwrap_or_default();
    expect.insert(
        "violation".to_string(),
        Value::Array(
            target
                .checkers
                .iter()
                .map(|c| Value::String(c.to_string()))
                .collect(),
        ),
    );
    expect.insert("pass".to_string(), Value::Array(Vec::new()));
    let mut found = Table::new();
    found.insert("name".to_string(), Value::String("found".to_string()));
    found.insert(
        "description".to_string(),
        Value::String(format!(
            "The shrunk schedule of seed {seed}: the violation is found."
        )),
    );
    found.insert(
        "seeds".to_string(),
        Value::Array(vec![Value::Integer(seed as i64)]),
    );
    found.insert("expect".to_string(), Value::Table(expect));
    doc.insert(
        "variant".to_string(),
        Value::Array(vec![Value::Table(found)]),
    );
    let header = format!(
        "# Shrunk by `hyperion-sim shrink {} --seed {seed}{}`.\n# Before: {before}.\n# After:  {after}.\n{}",
        file.path,
        variant.map_or(String::new(), |v| format!(" --variant {v}")),
        if kept_ranges.is_empty() {
            String::new()
        } else {
            format!("# Not concrete: {}.\n", kept_ranges.join(", "))
        }
    );
    format!("{header}{}", toml::to_string(&doc).unwrap_or_default())
}
