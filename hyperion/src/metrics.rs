//! The node's Prometheus metrics (`GET /metrics` on the admin port), with `prometheus-client`.
//!
//! Two kinds, one registry:
//! - **Recorded** on the request path: requests by RPC and status code, a duration histogram per
//!   RPC, rate-limited requests by endpoint. `HYPERION_METRICS=false` stops the recording (the
//!   one knob that measures what it costs); the families stay, empty.
//! - **Timed** where the work happens, through [`crate::timing::Timer`]s this registry hands out
//!   ([`Metrics::raft_timers`], [`Metrics::query_timers`]): WAL fsyncs, snapshots, and
//!   system-of-record queries by result. `HYPERION_METRICS=false` hands out timers that are off.
//! - **Read** from the node at scrape time ([`Metrics::encode`] takes a [`NodeSample`]): the
//!   cache's gauges and counters, Raft's position and lease, the system of record's breaker,
//!   backlog and queries. A scrape never waits on the node loop: the sample is the state the loop
//!   last published.
//!
//! Runs in both builds (the crate is plain Rust); the simulator calls [`Metrics::encode`]
//! directly, as the admin handler does.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::db::QueryTimers;
use crate::limits::Endpoint;
use crate::replica::types::RaftTimers;
use crate::timing::Timer;

pub use crate::limits::Rpc;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rpc: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Request-duration buckets: 50 µs doubling to about 1.6 s (16 buckets), covering a lease read
/// on loopback up to a write that waits out an election.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Snapshot-duration buckets: 1 ms doubling to about 33 s (16 buckets); a snapshot copies the
/// whole cache.
fn snapshot_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The results a system-of-record query is counted and timed by.
const QUERY_RESULTS: [&str; 3] = ["ok", "error", "timeout"];

/// What a scrape reads from the node (the last published state).
#[derive(Debug, Clone, Default)]
pub struct NodeSample {
    pub store: hyperion_store::StoreStats,
    pub raft: crate::replica::RaftStatus,
    /// The node sees a valid leader lease of its own now.
    pub lease_valid: bool,
    pub leader_changes: u64,
    pub invalid_peer_messages: u64,
    pub snapshots: u64,
    /// Write-behind backlog: mutations and bytes.
    pub backlog: (usize, u64),
    pub database: Option<crate::db::DbMetrics>,
    /// The process's resident set, where the runtime can tell it.
    pub resident_bytes: Option<u64>,
    /// Client-side caching: the invalidation hub.
    pub watch: crate::watch::WatchStats,
    /// Shadow traffic, if configured.
    pub shadow: Option<crate::mirror::MirrorStats>,
}

/// The gauges and counters read from a [`NodeSample`] at scrape time. Counters only move forward:
/// each scrape adds what the node's own counter gained since the last one.
struct Sampled {
    size_bytes: Gauge,
    entries: Gauge,
    capacity_bytes: Gauge,
    hits: Counter,
    misses: Counter,
    stale_hits: Counter,
    evictions: Counter,
    expirations: Counter,
    integrity_failures: Counter,
    term: Gauge,
    role: Family<RoleLabels, Gauge>,
    commit_index: Gauge,
    applied_index: Gauge,
    log_bytes: Gauge,
    resident_bytes: Gauge,
    lease_valid: Gauge,
    leader_changes: Counter,
    invalid_peer_messages: Counter,
    snapshots: Counter,
    breaker_state: Gauge,
    backlog_bytes: Gauge,
    backlog_mutations: Gauge,
    queries: Family<ResultLabels, Counter>,
    watch_streams: Gauge,
    watch_tracked_keys: Gauge,
    watch_events: Counter,
    watch_resyncs: Counter,
    watch_too_slow: Counter,
    shadow_mirrored: Counter,
    shadow_dropped: Counter,
    shadow_errors: Counter,
    shadow_compared: Counter,
    shadow_mismatches: Counter,
}

/// The node's metrics registry.
pub struct Metrics {
    recording: bool,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RpcLabels, Histogram, fn() -> Histogram>,
    rate_limited: Family<EndpointLabels, Counter>,
    wal_fsync_durations: Histogram,
    snapshot_durations: Histogram,
    query_durations: Family<ResultLabels, Histogram, fn() -> Histogram>,
    sampled: Sampled,
    /// Held while a scrape refreshes the sampled metrics and encodes the registry, so two
    /// concurrent scrapes cannot add a counter's gain twice.
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("recording", &self.recording)
            .finish_non_exhaustive()
    }
}

fn bump(counter: &Counter, now: u64) {
    let seen = counter.get();
    if now > seen {
        counter.inc_by(now - seen);
    }
}

fn set(gauge: &Gauge, value: u64) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

impl Metrics {
    /// A registry; `recording` false leaves the request families empty (`HYPERION_METRICS`).
    pub fn new(recording: bool) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let rate_limited = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "hyperion_requests",
            "gRPC requests by RPC and status code",
            requests.clone(),
        );
        registry.register(
            "hyperion_request_duration_seconds",
            "gRPC request duration by RPC",
            durations.clone(),
        );
        registry.register(
            "hyperion_rate_limited",
            "Requests refused over a rate limit, by endpoint",
            rate_limited.clone(),
        );
        let wal_fsync_durations = duration_histogram();
        let snapshot_durations = snapshot_histogram();
        let query_durations =
            Family::<ResultLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "hyperion_raft_wal_fsync_duration_seconds",
            "Duration of each fsync of the Raft write-ahead log",
            wal_fsync_durations.clone(),
        );
        registry.register(
            "hyperion_raft_snapshot_duration_seconds",
            "Duration of each snapshot this node took of its state machine",
            snapshot_durations.clone(),
        );
        registry.register(
            "hyperion_db_query_duration_seconds",
            "System-of-record query attempt duration by result (ok, error, timeout)",
            query_durations.clone(),
        );
        let sampled = Sampled {
            size_bytes: Gauge::default(),
            entries: Gauge::default(),
            capacity_bytes: Gauge::default(),
            hits: Counter::default(),
            misses: Counter::default(),
            stale_hits: Counter::default(),
            evictions: Counter::default(),
            expirations: Counter::default(),
            integrity_failures: Counter::default(),
            term: Gauge::default(),
            role: Family::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            log_bytes: Gauge::default(),
            resident_bytes: Gauge::default(),
            lease_valid: Gauge::default(),
            leader_changes: Counter::default(),
            invalid_peer_messages: Counter::default(),
            snapshots: Counter::default(),
            breaker_state: Gauge::default(),
            backlog_bytes: Gauge::default(),
            backlog_mutations: Gauge::default(),
            queries: Family::default(),
            watch_streams: Gauge::default(),
            watch_tracked_keys: Gauge::default(),
            watch_events: Counter::default(),
            watch_resyncs: Counter::default(),
            watch_too_slow: Counter::default(),
            shadow_mirrored: Counter::default(),
            shadow_dropped: Counter::default(),
            shadow_errors: Counter::default(),
            shadow_compared: Counter::default(),
            shadow_mismatches: Counter::default(),
        };
        let s = &sampled;
        let gauges: [(&str, &str, &Gauge); 14] = [
            (
                "hyperion_cache_size_bytes",
                "Bytes charged against the cache's capacity (keys, values, 256 per entry)",
                &s.size_bytes,
            ),
            (
                "hyperion_cache_entries",
                "Entries held, expired ones not yet reaped included",
                &s.entries,
            ),
            (
                "hyperion_cache_capacity_bytes",
                "The cache's memory budget (HYPERION_CACHE_SIZE_MB)",
                &s.capacity_bytes,
            ),
            (
                "hyperion_process_resident_bytes",
                "Resident set of the process (VmRSS), beside the cache's own accounting",
                &s.resident_bytes,
            ),
            (
                "hyperion_raft_log_bytes",
                "Memory the Raft log after the last snapshot holds (bounded by HYPERION_RAFT_LOG_MEMORY_MB)",
                &s.log_bytes,
            ),
            ("hyperion_raft_term", "Current Raft term", &s.term),
            (
                "hyperion_raft_commit_index",
                "Highest log index known committed",
                &s.commit_index,
            ),
            (
                "hyperion_raft_applied_index",
                "Highest log index applied to the cache",
                &s.applied_index,
            ),
            (
                "hyperion_raft_lease_valid",
                "1 while this node leads under a valid lease",
                &s.lease_valid,
            ),
            (
                "hyperion_db_breaker_state",
                "System-of-record breaker: 0 closed, 1 open, 2 half-open",
                &s.breaker_state,
            ),
            (
                "hyperion_db_backlog_bytes",
                "Write-behind backlog not yet in the system of record, bytes",
                &s.backlog_bytes,
            ),
            (
                "hyperion_db_backlog_mutations",
                "Write-behind backlog not yet in the system of record, mutations",
                &s.backlog_mutations,
            ),
            (
                "hyperion_watch_streams",
                "Open Watch (invalidation) streams on this node",
                &s.watch_streams,
            ),
            (
                "hyperion_watch_tracked_keys",
                "Keys in this node's invalidation tracking table",
                &s.watch_tracked_keys,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        let counters: [(&str, &str, &Counter); 17] = [
            ("hyperion_cache_hits", "Fresh hits", &s.hits),
            (
                "hyperion_cache_misses",
                "Misses (absent, or expired without allow_stale)",
                &s.misses,
            ),
            (
                "hyperion_cache_stale_hits",
                "Expired entries served with is_stale",
                &s.stale_hits,
            ),
            (
                "hyperion_cache_evictions",
                "Entries evicted for capacity or by the admin endpoint",
                &s.evictions,
            ),
            (
                "hyperion_cache_expirations",
                "Expired entries removed by the reaper",
                &s.expirations,
            ),
            (
                "hyperion_cache_integrity_failures",
                "Entries dropped because their HMAC did not verify",
                &s.integrity_failures,
            ),
            (
                "hyperion_raft_leader_changes",
                "Times this node saw the leader change",
                &s.leader_changes,
            ),
            (
                "hyperion_raft_invalid_peer_messages",
                "Peer messages refused by validation",
                &s.invalid_peer_messages,
            ),
            (
                "hyperion_raft_snapshots",
                "Snapshots this node took of its state machine",
                &s.snapshots,
            ),
            (
                "hyperion_watch_events",
                "Invalidation events queued to Watch subscribers",
                &s.watch_events,
            ),
            (
                "hyperion_watch_resyncs",
                "Resyncs sent to Watch subscribers (full table or queue, old resume, snapshot)",
                &s.watch_resyncs,
            ),
            (
                "hyperion_watch_too_slow",
                "Watch subscribers closed for falling behind their queue twice",
                &s.watch_too_slow,
            ),
            (
                "hyperion_shadow_mirrored",
                "Requests queued for the shadow cluster",
                &s.shadow_mirrored,
            ),
            (
                "hyperion_shadow_dropped",
                "Requests chosen for the shadow cluster but dropped (its queue was full)",
                &s.shadow_dropped,
            ),
            (
                "hyperion_shadow_errors",
                "Mirrored requests the shadow cluster failed or did not answer in time",
                &s.shadow_errors,
            ),
            (
                "hyperion_shadow_compared",
                "Mirrored reads whose answers were compared with the primary's",
                &s.shadow_compared,
            ),
            (
                "hyperion_shadow_mismatches",
                "Mirrored reads the shadow cluster answered differently (status or value)",
                &s.shadow_mismatches,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "hyperion_raft_role",
            "1 for this node's Raft role",
            s.role.clone(),
        );
        registry.register(
            "hyperion_db_queries",
            "System-of-record query attempts by result (ok, error, timeout)",
            s.queries.clone(),
        );
        Metrics {
            recording,
            requests,
            durations,
            rate_limited,
            wal_fsync_durations,
            snapshot_durations,
            query_durations,
            sampled,
            registry: Mutex::new(registry),
        }
    }

    /// Whether requests are recorded.
    pub fn recording(&self) -> bool {
        self.recording
    }

    /// Records one finished request: its RPC, its status code (`OK` on success) and duration.
    pub fn observe_request(&self, rpc: Rpc, code: Option<tonic::Code>, took: Duration) {
        if !self.recording {
            return;
        }
        self.requests
            .get_or_create(&RequestLabels {
                rpc: rpc.name(),
                code: code_name(code),
            })
            .inc();
        self.durations
            .get_or_create(&RpcLabels { rpc: rpc.name() })
            .observe(took.as_secs_f64());
    }

    fn timer(&self, histogram: &Histogram) -> Timer {
        if self.recording {
            Timer::recording(histogram.clone())
        } else {
            Timer::off()
        }
    }

    /// The timers of the WAL's fsyncs and of snapshots, for the replica.
    pub fn raft_timers(&self) -> RaftTimers {
        RaftTimers {
            wal_fsync: self.timer(&self.wal_fsync_durations),
            snapshot: self.timer(&self.snapshot_durations),
        }
    }

    /// The timers of system-of-record queries by result, for the database client.
    pub fn query_timers(&self) -> QueryTimers {
        let [ok, error, timeout] = QUERY_RESULTS.map(|result| {
            if !self.recording {
                return Timer::off();
            }
            let labels = ResultLabels { result };
            self.timer(&self.query_durations.get_or_create(&labels))
        });
        QueryTimers { ok, error, timeout }
    }

    /// Records one request refused over its rate limit.
    pub fn observe_rate_limited(&self, endpoint: Endpoint) {
        if !self.recording {
            return;
        }
        self.rate_limited
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.name(),
            })
            .inc();
    }

    /// The text exposition format (`text/plain; version=0.0.4` compatible, OpenMetrics text),
    /// with the sampled metrics refreshed from `sample`.
    pub fn encode(&self, sample: &NodeSample) -> String {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let s = &self.sampled;
        set(&s.size_bytes, sample.store.used_bytes);
        set(&s.entries, sample.store.entries as u64);
        set(&s.capacity_bytes, sample.store.capacity_bytes);
        bump(&s.hits, sample.store.hits);
        bump(&s.misses, sample.store.misses);
        bump(&s.stale_hits, sample.store.stale_hits);
        bump(&s.evictions, sample.store.evictions);
        bump(&s.expirations, sample.store.expirations);
        bump(&s.integrity_failures, sample.store.integrity_failures);
        set(&s.term, sample.raft.term);
        set(&s.commit_index, sample.raft.commit_index);
        set(&s.applied_index, sample.raft.applied_index);
        set(&s.log_bytes, sample.raft.log_bytes);
        set(&s.resident_bytes, sample.resident_bytes.unwrap_or(0));
        set(&s.lease_valid, u64::from(sample.lease_valid));
        bump(&s.leader_changes, sample.leader_changes);
        bump(&s.invalid_peer_messages, sample.invalid_peer_messages);
        bump(&s.snapshots, sample.snapshots);
        let this_role = role_name(sample.raft.role);
        for role in ["leader", "follower", "candidate", "precandidate", "none"] {
            let value = i64::from(role == this_role);
            s.role.get_or_create(&RoleLabels { role }).set(value);
        }
        set(&s.backlog_mutations, sample.backlog.0 as u64);
        set(&s.watch_streams, sample.watch.streams as u64);
        set(&s.watch_tracked_keys, sample.watch.tracked_keys as u64);
        bump(&s.watch_events, sample.watch.delivered);
        bump(&s.watch_resyncs, sample.watch.resyncs);
        bump(&s.watch_too_slow, sample.watch.too_slow);
        if let Some(shadow) = &sample.shadow {
            bump(&s.shadow_mirrored, shadow.mirrored);
            bump(&s.shadow_dropped, shadow.dropped);
            bump(&s.shadow_errors, shadow.errors);
            bump(&s.shadow_compared, shadow.compared);
            bump(&s.shadow_mismatches, shadow.mismatches);
        }
        set(&s.backlog_bytes, sample.backlog.1);
        if let Some(db) = &sample.database {
            set(&s.breaker_state, u64::from(db.breaker_state));
            let failed = db.attempt_failures;
            let values = [
                db.attempts.saturating_sub(failed),
                failed.saturating_sub(db.timeouts),
                db.timeouts,
            ];
            for (result, value) in QUERY_RESULTS.into_iter().zip(values) {
                bump(&s.queries.get_or_create(&ResultLabels { result }), value);
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// The Raft role's name as metrics and `/admin/status` give it (`none` before the core runs).
pub fn role_name(role: Option<hyperion_raft::Role>) -> &'static str {
    use hyperion_raft::Role;
    match role {
        Some(Role::Leader) => "leader",
        Some(Role::Follower) => "follower",
        Some(Role::Candidate) => "candidate",
        Some(Role::PreCandidate) => "precandidate",
        None => "none",
    }
}

/// The gRPC status code's canonical name (`OK` for success).
pub fn code_name(code: Option<tonic::Code>) -> &'static str {
    use tonic::Code;
    match code {
        None | Some(Code::Ok) => "OK",
        Some(Code::Cancelled) => "CANCELLED",
        Some(Code::Unknown) => "UNKNOWN",
        Some(Code::InvalidArgument) => "INVALID_ARGUMENT",
        Some(Code::DeadlineExceeded) => "DEADLINE_EXCEEDED",
        Some(Code::NotFound) => "NOT_FOUND",
        Some(Code::AlreadyExists) => "ALREADY_EXISTS",
        Some(Code::PermissionDenied) => "PERMISSION_DENIED",
        Some(Code::ResourceExhausted) => "RESOURCE_EXHAUSTED",
        Some(Code::FailedPrecondition) => "FAILED_PRECONDITION",
        Some(Code::Aborted) => "ABORTED",
        Some(Code::OutOfRange) => "OUT_OF_RANGE",
        Some(Code::Unimplemented) => "UNIMPLEMENTED",
        Some(Code::Internal) => "INTERNAL",
        Some(Code::Unavailable) => "UNAVAILABLE",
        Some(Code::DataLoss) => "DATA_LOSS",
        Some(Code::Unauthenticated) => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exposition_holds_the_recorded_timed_and_sampled_metrics() {
        let metrics = Metrics::new(true);
        let raft = metrics.raft_timers();
        raft.wal_fsync.time(|| ());
        raft.wal_fsync.time(|| ());
        raft.snapshot.time(|| ());
        metrics.query_timers().timeout.time(|| ());
        metrics.observe_request(Rpc::Get, None, Duration::from_micros(80));
        metrics.observe_request(
            Rpc::Set,
            Some(tonic::Code::Unavailable),
            Duration::from_millis(3),
        );
        metrics.observe_rate_limited(Endpoint::BatchGet);
        let mut sample = NodeSample::default();
        sample.store.used_bytes = 4242;
        sample.store.hits = 7;
        sample.raft.role = Some(hyperion_raft::Role::Leader);
        sample.raft.term = 3;
        sample.raft.log_bytes = 65536;
        sample.resident_bytes = Some(1 << 30);
        let text = metrics.encode(&sample);
        for line in [
            "hyperion_raft_log_bytes 65536",
            "hyperion_process_resident_bytes 1073741824",
            "hyperion_cache_size_bytes 4242",
            "hyperion_cache_hits_total 7",
            "hyperion_raft_term 3",
            "hyperion_raft_role{role=\"leader\"} 1",
            "hyperion_raft_role{role=\"follower\"} 0",
            "hyperion_requests_total{rpc=\"Get\",code=\"OK\"} 1",
            "hyperion_requests_total{rpc=\"Set\",code=\"UNAVAILABLE\"} 1",
            "hyperion_rate_limited_total{endpoint=\"BatchGet\"} 1",
            "hyperion_request_duration_seconds_count{rpc=\"Get\"} 1",
            "hyperion_raft_wal_fsync_duration_seconds_count 2",
            "hyperion_raft_snapshot_duration_seconds_count 1",
            "hyperion_db_query_duration_seconds_count{result=\"timeout\"} 1",
            "hyperion_db_query_duration_seconds_count{result=\"ok\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // Counters follow the node's counter forward, never back.
        sample.store.hits = 9;
        assert!(metrics
            .encode(&sample)
            .contains("hyperion_cache_hits_total 9\n"));
        sample.store.hits = 5;
        assert!(metrics
            .encode(&sample)
            .contains("hyperion_cache_hits_total 9\n"));
    }

    #[tokio::test]
    async fn recording_off_keeps_the_recorded_and_timed_families_empty() {
        let metrics = Metrics::new(false);
        metrics.observe_request(Rpc::Get, None, Duration::from_micros(80));
        metrics.observe_rate_limited(Endpoint::Get);
        let raft = metrics.raft_timers();
        raft.wal_fsync.time(|| ());
        raft.snapshot.time(|| ());
        metrics.query_timers().ok.time(|| ());
        let text = metrics.encode(&NodeSample::default());
        assert!(!text.contains("hyperion_requests_total{"), "{text}");
        assert!(
            text.contains("hyperion_raft_wal_fsync_duration_seconds_count 0"),
            "{text}"
        );
        assert!(
            text.contains("hyperion_raft_snapshot_duration_seconds_count 0"),
            "{text}"
        );
        assert!(
            !text.contains("hyperion_db_query_duration_seconds_count{"),
            "{text}"
        );
        assert!(text.contains("hyperion_cache_size_bytes 0"), "{text}");
    }
}
