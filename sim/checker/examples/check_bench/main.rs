//! How long the linearizability checker takes on a simulation-sized history.
//!
//! Builds a seeded, deterministic client history of a correct cluster, then times [`check`] on
//! it over several repetitions and prints the median and the slowest, and operations per second.
//! The history is what the simulator's workload records (the mix of `sim/src/workload.rs`): many
//! clients, each issuing one call after another with think time between; reads (some
//! stale-allowed, some `BatchGet`s) and writes (Sets with and without TTL, Deletes,
//! read-modify-write compare-and-sets); calls that time out (`Unknown`, applied or not, possibly
//! after the client gave up) and are retried as new operations; calls rejected up front
//! (`Fail`); and leader outages, during which every call fails or times out and the accepted
//! writes commit when the new leader takes over. Every call that takes effect does so at
//! one instant against a sequential model of the cache: Raft-like versions (one log index per
//! write or delete, across all keys), TTLs stamped and judged on clocks within δ of simulated
//! time. Such a history is linearizable, and the run fails unless the checker finds no violation.
//!
//! Then one stale read is injected (a linearizable Get answered with an older version of its key
//! although a newer write had returned before the Get began) and the run fails unless the checker
//! reports it.
//!
//! Bounded: at most [`HISTORY_OPS_MAX`] operations and [`REPETITIONS_MAX`] repetitions. The
//! workload and the model are in `workload.rs`.
//!
//!   cargo run --release -p hyperion-checker --example check_bench -- [ops] [keys] [seed] [repetitions]

use std::collections::BTreeMap;
use std::time::Duration;

use hyperion_checker::{
    check, CheckReport, CheckerConfig, History, HistoryRecorder, Op, OpId, OpResult, Outcome,
    Verdict, HISTORY_OPS_MAX,
};

mod workload;

use workload::{generate, CLIENTS, CLOCK_SKEW_MS};

const OPS_DEFAULT: usize = 100_000;
const KEYS_DEFAULT: usize = 1_000;
const SEED_DEFAULT: u64 = 1;
const REPETITIONS_DEFAULT: usize = 7;
const REPETITIONS_MAX: usize = 100;

/// The history again, with operation `tampered` answered `outcome` instead.
fn replay(history: &History, tampered: OpId, outcome: &Outcome) -> History {
    let ops = history.ops();
    let mut recorder = HistoryRecorder::with_max_ops(ops.len());
    let mut index = 0;
    while index < ops.len() {
        let operation = &ops[index];
        match (operation.batch, &operation.op) {
            (Some(batch), Op::Get { allow_stale, .. }) => {
                let members = ops[index..]
                    .iter()
                    .take_while(|other| other.batch == Some(batch))
                    .count();
                let keys: Vec<Vec<u8>> = ops[index..index + members]
                    .iter()
                    .map(|member| member.op.key().to_vec())
                    .collect();
                recorder
                    .invoke_batch_get(operation.client, &keys, *allow_stale, operation.invoke_ms)
                    .expect("same size as the original");
                index += members;
            }
            _ => {
                recorder
                    .invoke(operation.client, operation.op.clone(), operation.invoke_ms)
                    .expect("same size as the original");
                index += 1;
            }
        }
    }
    for operation in ops {
        if let (Some(return_ms), Some(original)) = (operation.return_ms, &operation.outcome) {
            let outcome = if operation.id == tampered {
                outcome.clone()
            } else {
                original.clone()
            };
            recorder
                .complete(operation.id, outcome, return_ms)
                .expect("a valid completion");
        }
    }
    recorder.into_history()
}

/// A linearizable Get that saw version `v` of its key, whose write had returned before the Get
/// began, to be answered with the key's previous acknowledged version instead (the latest one
/// below `v`): a stale read. Searched from the middle of the history on.
fn stale_read(history: &History) -> Option<(OpId, Outcome)> {
    let ops = history.ops();
    // Per key, the acknowledged Sets by version: value and return time.
    type Written<'h> = BTreeMap<u64, (&'h [u8], Option<u64>)>;
    let mut written: BTreeMap<&[u8], Written<'_>> = BTreeMap::new();
    for operation in ops {
        if let (Op::Set { key, value, .. }, Outcome::Ok(OpResult::Written { version, .. })) =
            (&operation.op, operation.effective_outcome())
        {
            written
                .entry(key)
                .or_default()
                .insert(*version, (value, operation.return_ms));
        }
    }
    ops[ops.len() / 2..].iter().find_map(|read| {
        let (
            Op::Get {
                key,
                allow_stale: false,
            },
            Outcome::Ok(OpResult::Hit { version, .. }),
        ) = (&read.op, read.effective_outcome())
        else {
            return None;
        };
        let versions = written.get(key.as_slice())?;
        let (_, newer_return_ms) = versions.get(version)?;
        if newer_return_ms.is_none_or(|return_ms| return_ms >= read.invoke_ms) {
            return None;
        }
        let (&older, &(value, _)) = versions.range(..version).next_back()?;
        Some((
            read.id,
            Outcome::Ok(OpResult::Hit {
                value: value.to_vec(),
                version: older,
                is_stale: false,
                ttl_remaining_ms: None,
            }),
        ))
    })
}

/// Wall-clock time, to measure the checker; nothing the history or the verdict holds depends on
/// it.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

fn timed_check(history: &History, config: &CheckerConfig) -> (CheckReport, Duration) {
    let start = wall_clock();
    let report = check(history, config);
    (report, start.elapsed())
}

fn argument<T: std::str::FromStr>(args: &[String], index: usize, default: T, what: &str) -> T {
    args.get(index).map_or(default, |text| {
        text.parse()
            .unwrap_or_else(|_| panic!("{what}: expected a number, got {text:?}"))
    })
}

/// FNV-1a over the history's trace, to see that a seed gives the same history every time.
fn fingerprint(history: &History) -> u64 {
    let mut trace = Vec::new();
    history.write_jsonl(&mut trace).expect("in-memory write");
    trace.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the history is made of, in one line.
fn mix(history: &History) -> String {
    let ops = history.ops();
    let share = |matches: &dyn Fn(&hyperion_checker::Operation) -> bool| {
        ops.iter().filter(|operation| matches(operation)).count()
    };
    let mut per_key: BTreeMap<&[u8], usize> = BTreeMap::new();
    for operation in ops {
        *per_key.entry(operation.op.key()).or_default() += 1;
    }
    format!(
        "mix: {} gets ({} stale-allowed, {} in batches), {} sets ({} with ttl, {} cas), {} deletes ({} cas), {} cas failed; ops per key {}..{}",
        share(&|o| matches!(o.op, Op::Get { .. })),
        share(&|o| matches!(o.op, Op::Get { allow_stale: true, .. })),
        share(&|o| o.batch.is_some()),
        share(&|o| matches!(o.op, Op::Set { .. })),
        share(&|o| matches!(o.op, Op::Set { ttl_ms, .. } if ttl_ms > 0)),
        share(&|o| matches!(o.op, Op::Set { expected_version, .. } if expected_version > 0)),
        share(&|o| matches!(o.op, Op::Delete { .. })),
        share(&|o| matches!(o.op, Op::Delete { expected_version, .. } if expected_version > 0)),
        share(&|o| matches!(o.effective_outcome(), Outcome::Ok(OpResult::CasFailed { .. }))),
        per_key.values().min().unwrap_or(&0),
        per_key.values().max().unwrap_or(&0),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ops: usize = argument(&args, 0, OPS_DEFAULT, "ops");
    let keys: usize = argument(&args, 1, KEYS_DEFAULT, "keys");
    let seed: u64 = argument(&args, 2, SEED_DEFAULT, "seed");
    let repetitions: usize = argument(&args, 3, REPETITIONS_DEFAULT, "repetitions");
    assert!(
        (1..=HISTORY_OPS_MAX).contains(&ops),
        "ops: 1..={HISTORY_OPS_MAX}"
    );
    assert!(keys >= 1, "keys: at least 1");
    assert!(
        (1..=REPETITIONS_MAX).contains(&repetitions),
        "repetitions: 1..={REPETITIONS_MAX}"
    );

    let start = wall_clock();
    let history = generate(ops, keys, seed);
    let generated = start.elapsed();
    let config = CheckerConfig {
        allow_eviction: false,
        clock_skew_ms: CLOCK_SKEW_MS,
        ..CheckerConfig::default()
    };
    let count = |outcome: fn(&Outcome) -> bool| {
        history
            .ops()
            .iter()
            .filter(|operation| outcome(operation.effective_outcome()))
            .count()
    };
    let span_ms = history
        .ops()
        .iter()
        .filter_map(|operation| operation.return_ms)
        .max()
        .unwrap_or(0);
    println!(
        "history: {} ops over {keys} keys, seed {seed}, {CLIENTS} clients, {:.1} s simulated, fingerprint {:016x}, generated in {:.0} ms",
        history.ops().len(),
        span_ms as f64 / 1000.0,
        fingerprint(&history),
        generated.as_secs_f64() * 1000.0
    );
    println!(
        "  outcomes: {} ok, {} unknown, {} fail; config: no eviction, clock skew {CLOCK_SKEW_MS} ms",
        count(|outcome| matches!(outcome, Outcome::Ok(_))),
        count(|outcome| matches!(outcome, Outcome::Unknown)),
        count(|outcome| matches!(outcome, Outcome::Fail)),
    );
    println!("  {}", mix(&history));

    let mut times = Vec::with_capacity(repetitions);
    let mut first_report = None;
    for _ in 0..repetitions {
        let (report, elapsed) = timed_check(&history, &config);
        times.push(elapsed);
        if let Some(first) = &first_report {
            assert_eq!(&report, first, "the checker is deterministic");
        } else {
            first_report = Some(report);
        }
    }
    let report = first_report.expect("at least one repetition");
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!("correct history: {report}");
    println!(
        "  check: {repetitions} repetitions, median {:.1} ms, max {:.1} ms, min {:.1} ms, {:.0} ops/s (median)",
        median.as_secs_f64() * 1000.0,
        max.as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        history.ops().len() as f64 / median.as_secs_f64()
    );
    assert!(
        report.is_violation_free(),
        "a correct cluster's history was rejected:\n{report}"
    );
    if let Verdict::Unknown { reason } = &report.verdict {
        println!("  note: undecided ({reason})");
    }

    let Some((tampered, outcome)) = stale_read(&history) else {
        println!("stale read: no candidate read in this history (too few operations per key)");
        return;
    };
    let broken = replay(&history, tampered, &outcome);
    let (report, elapsed) = timed_check(&broken, &config);
    let caught = report
        .violations()
        .iter()
        .find(|violation| violation.op_ids.contains(&tampered));
    let Some(violation) = caught else {
        panic!(
            "the stale read op#{} was not reported:\n{report}",
            tampered.0
        );
    };
    println!(
        "stale read injected at op#{}: caught as {:?} ({} violation(s) in all) in {:.1} ms: {}",
        tampered.0,
        violation.kind,
        report.violations().len(),
        elapsed.as_secs_f64() * 1000.0,
        violation.message
    );
}
