//! Code-level fault points (FoundationDB's BUGGIFY): places in the product code where, in
//! simulation, a seed may make something unusual but legal happen (a delay, a duplicate, a lost
//! reply), so that sweeps reach the paths the network faults alone rarely do.
//!
//! [`buggify!`](crate::buggify)`("point")` is `false` in production builds, where it compiles to
//! nothing. In simulation a scenario that sets `buggify = true` has each seed enable a seeded
//! subset of [`POINTS`] (the run's banner lists them); an enabled point then fires with
//! probability [`FIRE_PROBABILITY`] each time it is reached, drawn from an RNG seeded by the
//! seed, so a run replays exactly. Seeds of other scenarios enable nothing.
//!
//! A point that fires counts as the coverage point `buggify.<point>` (a sweep's coverage table
//! shows how often each fired; `expect.sometimes` can require one). Like the coverage registry,
//! this state is process-wide and reset by the simulator for each
//! seed; in production it is never read.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Whether fault points can fire (simulation builds only).
pub const ENABLED: bool = super::SIMULATION;

/// How often an enabled point fires when reached.
pub const FIRE_PROBABILITY: f64 = 0.25;

/// Every fault point, with what it does when it fires.
pub const POINTS: &[(&str, &str)] = &[
    (
        "delay_before_persist",
        "the node loop waits 1-20 ms before it persists, applies and releases a turn's work",
    ),
    (
        "duplicate_peer_batch",
        "a batch of peer messages is sent twice",
    ),
    (
        "reorder_peer_batch",
        "a batch of peer messages is sent in reverse order",
    ),
    (
        "drop_read_index_response",
        "a follower loses the leader's answer to its read-index request",
    ),
    (
        "early_snapshot",
        "a node snapshots its state machine and compacts its log long before the threshold",
    ),
    (
        "slow_database",
        "a system-of-record query takes 50-500 ms longer",
    ),
    (
        "lost_database_reply",
        "a system-of-record write commits, and its reply is lost (the client sees an error)",
    ),
    (
        "cut_batch_get_stream",
        "a BatchGet stream ends with UNAVAILABLE halfway, as when its connection closes",
    ),
    (
        "cut_watch_stream",
        "a Watch stream ends with UNAVAILABLE between two events, as when its connection closes",
    ),
];

struct State {
    enabled: BTreeSet<&'static str>,
    rng: Option<ChaCha8Rng>,
}

static STATE: Mutex<State> = Mutex::new(State {
    enabled: BTreeSet::new(),
    rng: None,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `name` is a fault point.
pub fn is_known(name: &str) -> bool {
    POINTS.iter().any(|(point, _)| *point == name)
}

/// Enables `points` for the run about to start, firing with an RNG seeded by `seed` (an empty
/// list disables every point).
pub fn configure(points: &[&'static str], seed: u64) {
    let mut state = state();
    state.enabled = points.iter().copied().collect();
    state.rng = (!points.is_empty()).then(|| ChaCha8Rng::seed_from_u64(seed ^ 0x0b06_61f7));
}

/// The points enabled for this run.
pub fn enabled_points() -> Vec<&'static str> {
    state().enabled.iter().copied().collect()
}

/// Whether `point` fires now (called by the macro).
pub fn fires(point: &'static str) -> bool {
    debug_assert!(is_known(point), "fault point {point} is not in POINTS");
    let mut state = state();
    if !state.enabled.contains(point) {
        return false;
    }
    let fired = state
        .rng
        .as_mut()
        .is_some_and(|rng| rng.random_bool(FIRE_PROBABILITY));
    drop(state);
    if fired {
        super::coverage::hit_named(format!("{COVERAGE_PREFIX}{point}"));
    }
    fired
}

/// Prefix of the coverage point a fault point counts as when it fires (`buggify.early_snapshot`).
pub const COVERAGE_PREFIX: &str = "buggify.";

/// Whether `name` is a coverage name: a coverage point, or a fault point that fired
/// (`buggify.early_snapshot`), either with an optional `@condition`.
pub fn is_coverage_name(name: &str) -> bool {
    let (point, condition) = super::coverage::split(name);
    match point.strip_prefix(COVERAGE_PREFIX) {
        Some(fault_point) => {
            is_known(fault_point)
                && condition.is_none_or(|c| super::coverage::CONDITIONS.contains(&c))
        }
        None => super::coverage::is_known(name),
    }
}

/// A seeded draw in `low..=high` for a firing point's size (a delay, say); `low` when no run
/// enabled fault points.
pub fn draw(low: u64, high: u64) -> u64 {
    match state().rng.as_mut() {
        Some(rng) => rng.random_range(low..=high.max(low)),
        None => low,
    }
}

/// `true` when the fault point fires (simulation only; `false` and nothing in production).
#[macro_export]
macro_rules! buggify {
    ($point:literal) => {
        $crate::runtime::buggify::ENABLED && $crate::runtime::buggify::fires($point)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_names_include_fault_points_that_fired() {
        assert!(is_coverage_name("lease_read@partition"));
        assert!(is_coverage_name("buggify.early_snapshot@crash"));
        assert!(!is_coverage_name("buggify.lease_read"));
        assert!(!is_coverage_name("buggify.early_snapshot@eclipse"));
    }

    #[test]
    fn production_builds_never_fire() {
        if ENABLED {
            return;
        }
        configure(&["early_snapshot"], 1);
        assert!(!(0..100).any(|_| crate::buggify!("early_snapshot")));
        configure(&[], 0);
    }

    #[test]
    fn an_enabled_point_fires_at_its_probability_and_replays() {
        let run = |seed| {
            configure(&["slow_database"], seed);
            let fired: Vec<bool> = (0..400).map(|_| fires("slow_database")).collect();
            assert!(!fires("early_snapshot"), "only enabled points fire");
            configure(&[], 0);
            fired
        };
        let first = run(9);
        assert_eq!(first, run(9), "the same seed fires the same way");
        let count = first.iter().filter(|f| **f).count();
        assert!((60..140).contains(&count), "{count} of 400 at 25 %");
    }
}
