//! The event trace of one run: leader and term changes, nodes going down and up, faults applied
//! and undone, memory samples, every client operation and every finding, each stamped with
//! simulated milliseconds since the workload started.
//!
//! Contract: the trace is deterministic — it is built in the order the single-threaded simulator
//! executes, from sim-time stamps and ordered collections only — so one seed run twice yields
//! the same lines and the same [`Trace::hash`]. `hyperion-sim check-determinism` relies on it
//! (madsim's own check misses divergence that does not touch its RNG or timers, DESIGN §3).

use std::sync::{Arc, Mutex, PoisonError};

use hyperion::runtime::Instant;
use hyperion_checker::{Op, OpResult, Operation, Outcome};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Most trace lines kept besides operations (bounds memory; the first ones matter).
pub const EVENTS_MAX: usize = 100_000;

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `node` (1-based) became leader of `term`.
    Leader { node: usize, term: u64 },
    /// `node` stopped leading `term`.
    StepDown { node: usize, term: u64 },
    /// `node` stopped running (killed, power loss, failed start).
    NodeDown { node: usize },
    /// `node` runs again (restarted and recovered).
    NodeUp { node: usize },
    /// A fault was applied (or skipped, e.g. "isolate the leader" without a leader).
    Fault { text: String },
    /// A fault was undone.
    FaultEnd { text: String },
    /// A node's memory: bytes the store accounts, bytes held outside it (fault injection).
    Memory {
        node: usize,
        store_bytes: u64,
        retained_bytes: u64,
        entries: usize,
    },
    /// `node`'s clock now reads `offset_ms` ahead of (negative: behind) where it would without
    /// clock faults; recorded when it moved by at least [`CLOCK_OFFSET_STEP_MS`].
    Clock { node: usize, offset_ms: i64 },
    /// Something notable (workload start and end, heal, ...).
    Note { text: String },
    /// One client operation of the recorded history.
    Op { op: Operation },
    /// A checker's finding.
    Finding { checker: String, text: String },
}

/// How far a node's clock offset moves before the trace records it again.
pub const CLOCK_OFFSET_STEP_MS: i64 = 10;

/// One trace line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceLine {
    pub at_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// A shared, append-only trace.
#[derive(Clone)]
pub struct Trace {
    lines: Arc<Mutex<Vec<TraceLine>>>,
    origin: Instant,
}

impl Trace {
    /// A trace whose time 0 is now.
    pub fn starting_now() -> Trace {
        Trace {
            lines: Arc::new(Mutex::new(Vec::new())),
            origin: hyperion::runtime::now(),
        }
    }

    /// The instant the trace counts its milliseconds from.
    pub fn origin(&self) -> hyperion::runtime::Instant {
        self.origin
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<TraceLine>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulated ms since the origin.
    pub fn now_ms(&self) -> u64 {
        hyperion::runtime::now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64
    }

    /// Records `event` now.
    pub fn record(&self, event: Event) {
        let at_ms = self.now_ms();
        self.record_at(at_ms, event);
    }

    /// Records `event` at `at_ms`. An operation's values longer than [`TRACE_VALUE_BYTES_MAX`]
    /// are kept as their first bytes, their length and a digest of the whole value (a trace of
    /// large values would otherwise cost more than the run).
    pub fn record_at(&self, at_ms: u64, mut event: Event) {
        if let Event::Op { op } = &mut event {
            shorten_values(op);
        }
        let mut lines = self.lock();
        if matches!(event, Event::Op { .. }) || lines.len() < EVENTS_MAX {
            lines.push(TraceLine { at_ms, event });
        }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<TraceLine> {
        self.lock().clone()
    }
}

/// The trace as JSON lines.
/// Longest value an operation keeps whole in the trace.
pub const TRACE_VALUE_BYTES_MAX: usize = 64;

fn shorten(value: &mut Vec<u8>) {
    if value.len() <= TRACE_VALUE_BYTES_MAX {
        return;
    }
    let digest = Sha256::digest(&value[..]);
    let mut short = value[..32].to_vec();
    short.extend_from_slice(
        format!(
            "...({} bytes, sha256 {:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}{:02x})",
            value.len(),
            digest[0],
            digest[1],
            digest[2],
            digest[3],
            digest[4],
            digest[5],
            digest[6],
            digest[7]
        )
        .as_bytes(),
    );
    *value = short;
}

fn shorten_values(op: &mut Operation) {
    if let Op::Set { value, .. } = &mut op.op {
        shorten(value);
    }
    if let Some(Outcome::Ok(OpResult::Hit { value, .. })) = &mut op.outcome {
        shorten(value);
    }
}

pub fn to_jsonl(lines: &[TraceLine]) -> Vec<String> {
    lines
        .iter()
        .map(|line| serde_json::to_string(line).expect("trace lines serialize (plain data)"))
        .collect()
}

/// SHA-256 of the JSON lines (each followed by `\n`), hex.
pub fn hash(jsonl: &[String]) -> String {
    let mut hasher = Sha256::new();
    for line in jsonl {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where two traces first differ: the 0-based line number and both lines (`<end>` past the end
/// of the shorter one). `None` when they are identical.
pub fn first_difference(a: &[String], b: &[String]) -> Option<(usize, String, String)> {
    let end = || "<end of trace>".to_string();
    (0..a.len().max(b.len())).find_map(|i| {
        let (x, y) = (a.get(i), b.get(i));
        (x != y).then(|| {
            (
                i,
                x.cloned().unwrap_or_else(end),
                y.cloned().unwrap_or_else(end),
            )
        })
    })
}

/// The human-readable timeline: everything but operations and findings, one line per event;
/// memory samples (only `with_memory`) of one instant share a line.
pub fn render_timeline(lines: &[TraceLine], with_memory: bool) -> String {
    let mut out = String::new();
    let mut memory: Option<(u64, String)> = None;
    let flush = |out: &mut String, memory: &mut Option<(u64, String)>| {
        if let Some((at_ms, text)) = memory.take() {
            out.push_str(&format!(
                "{at_ms:>8} ms  memory (store + retained bytes):{text}\n"
            ));
        }
    };
    for line in lines {
        if let Event::Memory {
            node,
            store_bytes,
            retained_bytes,
            ..
        } = &line.event
        {
            if with_memory {
                if memory.as_ref().is_some_and(|(at, _)| *at != line.at_ms) {
                    flush(&mut out, &mut memory);
                }
                let entry = memory.get_or_insert_with(|| (line.at_ms, String::new()));
                entry
                    .1
                    .push_str(&format!("  node{node} {store_bytes}+{retained_bytes}"));
            }
            continue;
        }
        let text = match &line.event {
            Event::Leader { node, term } => format!("node{node} leads term {term}"),
            Event::StepDown { node, term } => format!("node{node} stops leading term {term}"),
            Event::NodeDown { node } => format!("node{node} is down"),
            Event::NodeUp { node } => format!("node{node} is up"),
            Event::Fault { text } => format!("FAULT {text}"),
            Event::FaultEnd { text } => format!("UNDO  {text}"),
            Event::Note { text } => text.clone(),
            // Clock offsets move continuously under drift: the HTML report draws them.
            Event::Memory { .. }
            | Event::Clock { .. }
            | Event::Op { .. }
            | Event::Finding { .. } => continue,
        };
        flush(&mut out, &mut memory);
        out.push_str(&format!("{:>8} ms  {text}\n", line.at_ms));
    }
    flush(&mut out, &mut memory);
    out
}
