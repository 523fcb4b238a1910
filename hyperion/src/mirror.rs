//! What the API layer hands a request mirror (shadow traffic, [`crate::shadow`]): the requests it
//! served and their answers, after they were answered. Implementations decide what to mirror and
//! must never block or fail the caller: the primary path gains no latency and no errors.

use crate::proto::GetResponse;

/// Counters of a request mirror.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// The share of requests mirrored (`shadow_traffic_percent`).
    pub percent: u8,
    /// Requests queued for the shadow cluster.
    pub mirrored: u64,
    /// Requests chosen but dropped because the queue was full (the shadow is down or slow).
    pub dropped: u64,
    /// Mirrored requests the shadow cluster answered with an error (or not in time).
    pub errors: u64,
    /// Mirrored reads whose answers were compared with the primary's.
    pub compared: u64,
    /// Of those, answers that differed (status, or value of a hit).
    pub mismatches: u64,
}

/// A sink for served requests. Every method returns at once.
pub trait Mirror: Send + Sync {
    /// Whether requests on `key` are mirrored now (callers copy what a request needs only then).
    fn wants(&self, key: &[u8]) -> bool;
    /// A `Get` (or one key of a `BatchGet`) of `key` answered `answer`.
    fn get(&self, key: &[u8], allow_stale: bool, answer: &GetResponse);
    /// A `Set` that was applied.
    fn set(&self, key: &[u8], value: &[u8], ttl_ms: u64);
    /// A `Delete` that was applied.
    fn delete(&self, key: &[u8]);
    /// Reloaded feature flags: the share to mirror from now on.
    fn set_percent(&self, percent: u8);
    fn stats(&self) -> MirrorStats;
}
