//! Coverage assertions: named points in the product code that a simulation sweep proves it
//! reached (Antithesis' `sometimes`, FoundationDB's code probes), and invariants it checks.
//!
//! - [`sometimes!`](crate::sometimes)`(point, condition)`: the point fires when the condition
//!   holds. A sweep counts the seeds in which each point fired, and a scenario's
//!   `expect.sometimes` fails the sweep when one never did: a fault model that silently stopped
//!   reaching the state it was built for is caught.
//! - [`reachable!`](crate::reachable)`(point)`: the point fires whenever control passes.
//! - [`always!`](crate::always)`(point, condition)`: an invariant. In simulation a false
//!   condition is recorded, and the run's `raft` checker reports it; elsewhere it is a
//!   `debug_assert!`.
//!
//! In production builds the macros compile to nothing: the condition is type-checked and never
//! evaluated. In simulation each hit is counted under the point's name, and also under
//! `point@condition` for every fault condition the simulator has marked active ([`begin`] and
//! [`end`]): `lease_read@partition` is a lease read served while a partition was active.
//!
//! The registry is process-wide: every node of a run reports into it, and the simulator runs
//! one seed per process or calls [`reset`] between seeds. It is the one process-wide state in
//! code that runs in simulation, and it only ever receives: nothing the product decides reads
//! it.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Whether hits are recorded (simulation builds only).
pub const ENABLED: bool = super::SIMULATION;

/// Every point, with what its firing means. A point not listed here is a programming error.
pub const POINTS: &[(&str, &str)] = &[
    ("lease_read", "a linearizable read answered under the leader's lease"),
    (
        "read_index_round_10",
        "one Ready released at least 10 reads that a read-index round confirmed",
    ),
    ("snapshot_sent", "a leader sent a follower its snapshot"),
    ("snapshot_installed", "a follower installed its leader's snapshot"),
    ("cas_conflict", "a compare-and-set refused for a version mismatch"),
    (
        "read_through_joined",
        "a read-through miss joined another request's database load",
    ),
    ("wal_torn_tail", "a node restarted on a torn WAL tail and repaired it"),
    (
        "append_rejected_log_lost",
        "a follower rejected an append because it had lost its log",
    ),
    ("leader_elected", "a node became leader"),
    (
        "watch_resync",
        "an invalidation subscriber was sent a resync (full table, full queue, old resume, snapshot)",
    ),
    (
        "watch_resume_replayed",
        "a reconnecting invalidation subscriber had changes replayed from the node's history",
    ),
    (
        "watch_sync_answered",
        "a Watch stream's sync was answered after its read index applied",
    ),
    (
        "disk_out_of_space",
        "a node's device filled: it gave back its reserve and began refusing client writes",
    ),
    (
        "disk_full_write_refused",
        "a client write was refused because the leader's device is out of space",
    ),
    (
        "near_cache_hit",
        "a client's read was answered from its near cache",
    ),
    (
        "near_cache_fill_refused",
        "a near cache kept a read's answer out because the key changed while it was in flight",
    ),
    (
        "lease_checked_at_read_time",
        "(always) a lease read's lease is valid at the moment of the read, not only at the turn's tick",
    ),
];

/// The fault conditions the simulator marks active, as named in `point@condition`.
pub const CONDITIONS: &[&str] = &[
    "partition",
    "pause",
    "clock_skew",
    "crash",
    "disk_fault",
    "network",
    "overload",
];

/// What a run's points recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Hits per `point` and per `point@condition`.
    pub hits: BTreeMap<String, u64>,
    /// `always!` invariants that were false, each once per point with its first detail.
    pub broken: BTreeMap<String, String>,
}

struct Registry {
    coverage: Coverage,
    active: BTreeMap<&'static str, u32>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    coverage: Coverage {
        hits: BTreeMap::new(),
        broken: BTreeMap::new(),
    },
    active: BTreeMap::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `name` is a point, or a point and a condition (`lease_read@partition`). (Fault points
/// that fired are named by [`super::buggify`], which checks its own names.)
pub fn is_known(name: &str) -> bool {
    let (point, condition) = split(name);
    POINTS.iter().any(|(p, _)| *p == point) && condition.is_none_or(|c| CONDITIONS.contains(&c))
}

/// `point@condition` as its point and condition.
pub fn split(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((point, condition)) => (point, Some(condition)),
        None => (name, None),
    }
}

/// Records one hit of `point` (called by the macros).
pub fn hit(point: &'static str) {
    debug_assert!(is_known(point), "coverage point {point} is not in POINTS");
    record(point.to_string());
}

/// Records a hit of a point named at run time (a fault point that fired, say).
pub fn hit_named(point: String) {
    record(point);
}

fn record(point: String) {
    let mut registry = registry();
    let Registry { coverage, active } = &mut *registry;
    for (condition, _) in active.iter().filter(|(_, n)| **n > 0) {
        *coverage
            .hits
            .entry(format!("{point}@{condition}"))
            .or_default() += 1;
    }
    *coverage.hits.entry(point).or_default() += 1;
}

/// Records that the invariant `point` was false (called by [`always!`](crate::always)).
pub fn broken(point: &'static str, detail: String) {
    registry()
        .coverage
        .broken
        .entry(point.to_string())
        .or_insert(detail);
}

/// Marks a fault condition active (nested: each `begin` needs its `end`).
pub fn begin(condition: &'static str) {
    debug_assert!(
        CONDITIONS.contains(&condition),
        "unknown condition {condition}"
    );
    *registry().active.entry(condition).or_default() += 1;
}

/// Ends one `begin` of a fault condition.
pub fn end(condition: &'static str) {
    if let Some(n) = registry().active.get_mut(condition) {
        *n = n.saturating_sub(1);
    }
}

/// Ends every fault condition (the simulator heals everything).
pub fn end_all() {
    registry().active.clear();
}

/// Forgets every hit and condition (before a seed).
pub fn reset() {
    let mut registry = registry();
    registry.coverage = Coverage::default();
    registry.active.clear();
}

/// What the points recorded since the last [`reset`].
pub fn snapshot() -> Coverage {
    registry().coverage.clone()
}

/// Fires `point` when `condition` holds (simulation only; nothing in production).
#[macro_export]
macro_rules! sometimes {
    ($point:literal, $condition:expr) => {
        if $crate::runtime::coverage::ENABLED && ($condition) {
            $crate::runtime::coverage::hit($point);
        }
    };
}

/// Fires `point` whenever control passes here (simulation only).
#[macro_export]
macro_rules! reachable {
    ($point:literal) => {
        if $crate::runtime::coverage::ENABLED {
            $crate::runtime::coverage::hit($point);
        }
    };
}

/// An invariant: recorded when false in simulation (the run fails), a `debug_assert!` elsewhere.
/// The format arguments describe the failure.
#[macro_export]
macro_rules! always {
    ($point:literal, $condition:expr, $($detail:tt)+) => {
        if $crate::runtime::coverage::ENABLED {
            if !($condition) {
                $crate::runtime::coverage::broken($point, format!($($detail)+));
            }
        } else {
            debug_assert!($condition, $($detail)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_points_or_points_at_conditions() {
        assert!(is_known("lease_read"));
        assert!(is_known("lease_read@partition"));
        assert!(!is_known("lease_reads"));
        assert!(!is_known("lease_read@eclipse"));
        assert!(!is_known("@partition"));
    }

    #[test]
    fn production_builds_record_nothing() {
        // The macros compile to nothing outside simulation.
        if ENABLED {
            return;
        }
        crate::reachable!("leader_elected");
        crate::sometimes!("lease_read", true);
        assert_eq!(snapshot(), Coverage::default());
    }
}
