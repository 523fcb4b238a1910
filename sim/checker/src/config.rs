//! The checker's parameters.

use std::collections::BTreeSet;

/// The default step budget of the bounded search, per key. One step tries to linearize one
/// operation in one search state. Reads are placed greedily, so a correct history usually needs
/// about one step per operation; the budget leaves room for backtracking over unknown outcomes.
/// It also bounds memory: at most one memoized state per step, each about 100 bytes plus 8 per
/// operation left pending behind a later one it linearized (usually a few; 100,000 steps: some
/// 10 MB).
pub const SEARCH_STEPS_MAX: u64 = 100_000;

/// Checker parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckerConfig {
    /// A cache may evict: any absence (Miss, `Deleted{existed: false}`, `CasFailed{0}`) is
    /// explained by eviction. Turn off for runs whose cache is big enough never to evict; then an
    /// absence must be explained by a delete, an expiry or the key never having been written.
    pub allow_eviction: bool,
    /// ε: how far apart, in milliseconds, the clock that stamps `created_at` and the clock that
    /// later judges expiry may be, relative to simulated time, together. If every node clock is
    /// within δ of simulated time, use ε = 2δ.
    pub clock_skew_ms: u64,
    /// Step budget of the bounded search per key ([`SEARCH_STEPS_MAX`] by default).
    pub search_steps_max: u64,
    /// Keys that may lose their value at any time although `allow_eviction` is off, as by an
    /// eviction (the simulator damaged a stored copy of them, and a damaged entry is removed).
    pub evictable_keys: BTreeSet<Vec<u8>>,
    /// Near-cache reads to judge for bounded staleness (rules S-1, S-2), if any.
    pub bounded_staleness: Option<crate::staleness::BoundedStaleness>,
}

impl Default for CheckerConfig {
    fn default() -> Self {
        CheckerConfig {
            allow_eviction: true,
            clock_skew_ms: 0,
            search_steps_max: SEARCH_STEPS_MAX,
            evictable_keys: BTreeSet::new(),
            bounded_staleness: None,
        }
    }
}
