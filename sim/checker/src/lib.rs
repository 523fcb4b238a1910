//! Hyperion's client-history recorder and per-key linearizability checker.
//!
//! Pure and synchronous: no async, no clock, no randomness, no simulator-only code paths. The simulator's
//! workloads record every client operation in a [`HistoryRecorder`] (times are simulated
//! milliseconds read from the simulation clock by the caller), and [`check`] judges the history
//! afterwards against the cache's semantics (DESIGN §5, §8).
//!
//! # Recording (what a simulator workload does)
//! - Record each RPC attempt as its own operation (a retry is a new `invoke`): a retried write
//!   whose first attempt timed out may be applied twice, under two versions.
//! - Get/Set/Delete: `invoke(client, op, now_ms)` just before sending, `complete(id, outcome,
//!   now_ms)` when the answer (or the error) arrives. `BatchGet`: [`HistoryRecorder::invoke_batch_get`]
//!   (one Get per requested key, duplicates included, one shared invocation time), then complete
//!   each id when its key's response arrives; ids the stream never answered complete as `Unknown`
//!   (or `Fail` if the call was rejected up front).
//! - `OK` → [`Outcome::Ok`] with the decoded [`OpResult`]. `FAILED_PRECONDITION` on a
//!   compare-and-set → `Ok(CasFailed{current})` from `x-hyperion-current-version`.
//! - [`Outcome::Fail`] only when the operation *definitely* did not take effect:
//!   `INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, `UNAVAILABLE` from a non-leader that rejected it
//!   before proposing, a connection refused before the request was sent; a Get answered `ERROR`
//!   (integrity) carries no information and is `Fail` too.
//! - [`Outcome::Unknown`] otherwise: `DEADLINE_EXCEEDED`, `CANCELLED`, a transport error after
//!   sending, `UNAVAILABLE` or `INTERNAL` from a node that may have proposed (leader stepping down
//!   mid-request). It may take effect at any time after its invocation, even after the client
//!   gave up. Operations never completed count as `Unknown`. For reads `Fail` and `Unknown` are
//!   equivalent: neither constrains anything.
//!
//! # Model
//! Per key, the cache is a register: absent, or present with `(value, version, created_at,
//! ttl_ms)`. Every successful Set gets a fresh version, strictly increasing along the
//! linearization (the Raft log index), and unique per key. `expected_version == 0` is
//! unconditional; otherwise the Set/Delete happens only if the current version equals it, where
//! an absent or expired key has version 0, else it answers `CasFailed{current}`. Delete answers
//! `existed` = a live entry was removed, and that entry's version (0 if none). The leader stamps
//! `created_at` in cluster time, and the entry is expired when a judging clock reads past
//! `created_at + ttl_ms` (`ttl_ms == 0`: never). With ε = [`CheckerConfig::clock_skew_ms`] the
//! combined error of the stamping and judging clocks against simulated time, a write
//! linearized at `t_w` is certainly live for a read at `t_r < t_w + ttl − ε` and certainly
//! expired at `t_r > t_w + ttl + ε`. Reads with `allow_stale` may be answered by any node from
//! its local state, so they are not linearizable: only rules M, V, U, O-3 and TTL apply to them.
//!
//! # Rules (fast path, near-linear in the key's history)
//! Positions order a key's operations by version: `(v, 0)` the write of `v`, `(v, 1)` any
//! linearizable operation that observes `v` live (a fresh Hit, `CasFailed{v}`), `(v, 2)` the
//! delete that removed `v`. "A before B" in real time means A returned strictly before B was
//! invoked. Unknown-outcome operations return at infinity.
//! - **M** A response that cannot occur is `MalformedResult` (version 0 written or hit, `is_stale`
//!   without `allow_stale`, a CAS Set whose version is not above the expected one, ...).
//! - **V-1** Two acknowledged Sets of one key with one version: `DuplicateVersion`.
//! - **V-2** A Hit's value must be the value written with its version: else `PhantomValue`.
//! - **U** A version observed (by a Hit, a `CasFailed`, a Delete that removed it, a successful CAS
//!   expecting it) that no acknowledged Set produced must be matched to a distinct `Unknown` Set
//!   of the key — of the same value if a Hit saw it — invoked before the first observation of it
//!   returned (maximum bipartite matching); unmatched: `PhantomValue`. A matched version is
//!   given the most permissive TTL of its candidate writers (earliest invocation, shortest TTL).
//! - **O-1/O-2/W-1** For positions `p(a) < p(b)`, b must not be before a in real time. Named from
//!   the roles: write/write `WriteOrderViolation`; observation below a write `StaleRead`, or
//!   `LostWrite` if no operation ever observes that write's version or a later one; observation
//!   of `v` after the delete of `v` `StaleRead`; observation below a later-invoked observation
//!   `NonMonotonicRead`. Together these say a read sees no older version than the newest write
//!   or read that completed before it was invoked, and (O-3) no version whose write was invoked
//!   after it returned (`FutureRead`, checked for every read).
//! - **C-1** A successful CAS Set on `e` with version `v`: no known version lies in `(e, v)` and
//!   `e` was not deleted (that some write produced `e` is rule U). **C-2** A
//!   `CasFailed{c}` needs `expected != 0` and `c != expected`. **C-3** A CAS Delete on `e` must
//!   remove exactly `e`. **C-4** Two deletes removing one version: `DoubleDelete`. All but C-4 are
//!   `CasViolation`.
//! - **TTL-1** An operation treating version `v` as live (fresh Hit, `CasFailed{v}`, a Delete that
//!   removed `v`, a CAS on `v`) invoked after `return(write v) + ttl + ε` is `ExpiredServedFresh`
//!   (acknowledged writes only: an unknown write may have been applied arbitrarily late).
//!   **TTL-2** an entry *may* have expired by time `t` iff `t + ε > invoke(write) + ttl` (the
//!   requested TTL for unknown writes, which the server only lengthens). **TTL-3** A Hit with
//!   `is_stale` on an entry that may not have expired by the read's return is `FreshServedStale`.
//! - **A** (only with `allow_eviction == false`; with eviction any absence is explained) An
//!   absence — a linearizable Miss, `Deleted{existed: false}`, `CasFailed{0}` — needs a place
//!   where the key may be absent between its floor (highest position completed before it was
//!   invoked) and its ceiling (lowest position invoked after it returned): nothing completed
//!   before it, a delete (acknowledged, or unknown invoked before it returned), or an entry that
//!   may have expired by its return. Otherwise `LostWrite`.
//!
//! # Near-cache reads (bounded staleness)
//! With [`CheckerConfig::bounded_staleness`], the `allow_stale` Gets of the named clients are
//! near-cache reads: besides the stale-read rules they must not miss a version the cluster had
//! moved past more than the bound before they were invoked (S-1), nor be older than their own
//! client's earlier writes and reads (S-2); see `src/staleness.rs`.
//!
//! # Bounded search
//! A key whose fast path found no violation but which has unknown-outcome writes or deletes,
//! compare-and-sets, deletes of nothing, or (without eviction) Misses is also searched for a
//! linearization (Wing–Gong with memoization; see `src/search.rs`) within
//! [`CheckerConfig::search_steps_max`] steps. None exists: `NotLinearizable`. Budget spent: the
//! verdict is `Unknown` (unless another key has a violation).
//!
//! # Known approximations
//! Each operation's TTL is judged against its own window, not the times chosen for the other
//! operations; with eviction allowed, an absence does not end the entry (a local eviction does not
//! remove it from other replicas); an unknown compare-and-set is allowed to apply on top of a
//! version nobody observed. All three only make the checker more permissive, never stricter.

mod check;
mod config;
mod history;
mod key_op;
mod matching;
mod order;
mod porcupine;
mod report;
mod search;
mod staleness;

pub use check::{check, EXCERPT_OPS_MAX, VIOLATIONS_PER_KEY_MAX};
pub use config::{CheckerConfig, SEARCH_STEPS_MAX};
pub use history::{
    ClientId, History, HistoryRecorder, Op, OpId, OpResult, Operation, Outcome, RecordError,
    HISTORY_OPS_MAX,
};
pub use porcupine::porcupine_history;
pub use report::{render_bytes, render_operation, CheckReport, Verdict, Violation, ViolationKind};
pub use staleness::BoundedStaleness;

#[cfg(test)]
mod tests;
