//! The admin HTTP port's handlers, as plain functions of a request: `/metrics`, `/health`,
//! `/ready`, `/admin/status`, `/admin/raft/step-down`, `/admin/cache/evict?count=N`,
//! `/admin/flags/reload`. The production build serves them over HTTP (the runtime seam's
//! `serve_http`); simulation tests call [`Admin::handle`] directly.
//!
//! Auth: `/metrics`, `/health` and `/ready` are open (read-only, no secrets). `/admin/*` needs
//! `Authorization: Bearer <key>` with a key of the `admin-api-keys` secret (compared in constant
//! time): none is 401, a wrong one 403, and each key may make `HYPERION_RATE_LIMIT_ADMIN`
//! requests per second (429 with `Retry-After` beyond).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::config::FeatureFlags;
use crate::limits::{ClientKey, Endpoint, RateLimiter};
use crate::metrics::{Metrics, NodeSample};
use crate::replica::{Replica, ReplicaError, WriteOutcome, WriteRequest, EVICT_COUNT_MAX};
use crate::runtime::{self, HttpRequest, HttpResponse};
use crate::secret::Secret;

/// `/ready` needs this node to have applied to within this many entries of its commit index (a
/// node further behind would serve stale `allow_stale` reads and slow reads at the leader).
pub const READY_APPLY_LAG_MAX: u64 = 1_000;
/// How long `step-down` waits for the new leader to be known before answering with the
/// transfer's target alone.
pub const STEP_DOWN_WAIT: Duration = Duration::from_secs(3);
/// Bound on the wait for a forced eviction to commit and apply.
pub const EVICT_TIMEOUT: Duration = crate::limits::WRITE_TIMEOUT;

/// One admin API key: its name (logged) and the key (never logged).
#[derive(Clone)]
pub struct AdminKey {
    pub name: String,
    pub key: Secret,
}

/// The admin port's state: the node, its metrics, the keys and the flag file.
pub struct Admin {
    replica: Replica,
    metrics: Arc<Metrics>,
    keys: Vec<AdminKey>,
    limiter: RateLimiter,
    /// `HYPERION_FEATURE_FLAGS`, if set.
    flags_file: Option<PathBuf>,
    flags: std::sync::Mutex<FeatureFlags>,
    /// Shadow traffic, if configured (its share follows reloaded flags).
    mirror: Option<Arc<dyn crate::mirror::Mirror>>,
}

fn watch_json(stats: crate::watch::WatchStats) -> serde_json::Value {
    json!({
        "streams": stats.streams,
        "tracked_keys": stats.tracked_keys,
        "delivered": stats.delivered,
        "resyncs": stats.resyncs,
        "too_slow": stats.too_slow,
    })
}

fn shadow_json(stats: crate::mirror::MirrorStats) -> serde_json::Value {
    json!({
        "percent": stats.percent,
        "mirrored": stats.mirrored,
        "dropped": stats.dropped,
        "errors": stats.errors,
        "compared": stats.compared,
        "mismatches": stats.mismatches,
    })
}

fn text(status: u16, body: impl Into<String>) -> HttpResponse {
    HttpResponse {
        status,
        content_type: "text/plain; charset=utf-8",
        body: body.into().into_bytes(),
        retry_after_s: None,
    }
}

fn json_response(status: u16, value: serde_json::Value) -> HttpResponse {
    HttpResponse {
        status,
        content_type: "application/json",
        body: format!("{value}\n").into_bytes(),
        retry_after_s: None,
    }
}

fn error(status: u16, message: impl Into<String>) -> HttpResponse {
    json_response(status, json!({ "error": message.into() }))
}

/// The count of `count=N` in a query string, or the error that names the parameter.
pub fn evict_count(query: &str) -> Result<u64, String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("count="))
        .ok_or_else(|| "count: required, e.g. ?count=10000".to_string())?;
    let count: u64 = raw
        .parse()
        .map_err(|_| format!("count: expected an integer in 1..={EVICT_COUNT_MAX}, got `{raw}`"))?;
    if !(1..=EVICT_COUNT_MAX).contains(&count) {
        return Err(format!(
            "count: expected an integer in 1..={EVICT_COUNT_MAX}, got {count}; evict in several \
             requests"
        ));
    }
    Ok(count)
}

/// Ready: the node loop runs, a leader is known, and this node applied to within
/// [`READY_APPLY_LAG_MAX`] of its commit index. (Warm-up precedes serving: a node whose system
/// of record could not be warmed up does not serve at all.) `Err` says why not. `/ready` and the
/// gRPC health service both answer from this.
pub fn readiness(replica: &Replica) -> Result<(), String> {
    if !replica.is_running() {
        return Err("the node loop has stopped".to_string());
    }
    let status = replica.status();
    if status.leader_id.is_none() {
        return Err("no leader is known (an election is in progress)".to_string());
    }
    let lag = status.commit_index.saturating_sub(status.applied_index);
    if lag > READY_APPLY_LAG_MAX {
        return Err(format!(
            "applied index {} is {lag} entries behind the commit index {} (at most \
             {READY_APPLY_LAG_MAX})",
            status.applied_index, status.commit_index
        ));
    }
    Ok(())
}

impl Admin {
    pub fn new(
        replica: Replica,
        metrics: Arc<Metrics>,
        keys: Vec<AdminKey>,
        limiter: RateLimiter,
        flags_file: Option<PathBuf>,
        flags: FeatureFlags,
    ) -> Admin {
        Admin {
            replica,
            metrics,
            keys,
            limiter,
            flags_file,
            flags: std::sync::Mutex::new(flags),
            mirror: None,
        }
    }

    /// Reports (and reloads the share of) the node's shadow traffic.
    pub fn with_mirror(mut self, mirror: Arc<dyn crate::mirror::Mirror>) -> Admin {
        self.mirror = Some(mirror);
        self
    }

    /// Answers one request.
    pub async fn handle(&self, request: HttpRequest) -> HttpResponse {
        let method = request.method.as_str();
        match (method, request.path.as_str()) {
            ("GET", "/metrics") => self.metrics_text(),
            ("GET", "/health") => self.health(),
            ("GET", "/ready") => match self.readiness() {
                Ok(()) => text(200, "ready\n"),
                Err(reason) => text(503, format!("not ready: {reason}\n")),
            },
            (_, "/metrics" | "/health" | "/ready") => error(405, "use GET"),
            (_, path) if path.starts_with("/admin/") => {
                let key = match self.authenticate(request.authorization.as_deref()) {
                    Ok(key) => key,
                    Err(refusal) => return refusal,
                };
                tracing::info!(key = %key, method, path, "admin request");
                match (method, path) {
                    ("GET", "/admin/status") => json_response(200, self.status_json()),
                    ("POST", "/admin/raft/step-down") => self.step_down().await,
                    ("POST", "/admin/cache/evict") => self.evict(&request.query).await,
                    ("POST", "/admin/flags/reload") => self.reload_flags(),
                    (
                        _,
                        "/admin/status"
                        | "/admin/raft/step-down"
                        | "/admin/cache/evict"
                        | "/admin/flags/reload",
                    ) => error(405, "wrong method: GET /admin/status, POST for the others"),
                    _ => error(404, format!("no admin endpoint {path}")),
                }
            }
            (_, path) => error(404, format!("no endpoint {path}")),
        }
    }

    /// The name of the key presented, or the refusal (401 none, 403 wrong, 429 too many).
    fn authenticate(&self, authorization: Option<&str>) -> Result<String, HttpResponse> {
        let Some(header) = authorization else {
            return Err(error(
                401,
                "authorization: missing; send `Authorization: Bearer <admin API key>`",
            ));
        };
        let Some(presented) = header.strip_prefix("Bearer ") else {
            return Err(error(
                401,
                "authorization: expected `Bearer <admin API key>`",
            ));
        };
        let presented = Secret::new(presented.trim().as_bytes().to_vec());
        // Every key is compared (in constant time), so the answer's timing does not say which
        // key was close.
        let mut matched = None;
        for key in &self.keys {
            if key.key == presented && matched.is_none() {
                matched = Some(key.name.clone());
            }
        }
        let Some(name) = matched else {
            return Err(error(403, "authorization: not a valid admin API key"));
        };
        match self.limiter.check_key(
            ClientKey::ApiKey(name.clone()),
            Endpoint::Admin,
            1,
            runtime::now(),
        ) {
            Ok(()) => Ok(name),
            Err(throttled) => {
                self.metrics.observe_rate_limited(Endpoint::Admin);
                let mut refusal = error(
                    429,
                    format!(
                        "rate limit of {} admin requests per second per key exceeded",
                        throttled.limit_per_sec
                    ),
                );
                let secs = throttled.retry_after.as_secs()
                    + u64::from(throttled.retry_after.subsec_nanos() > 0);
                refusal.retry_after_s = Some(secs.max(1));
                Err(refusal)
            }
        }
    }

    /// The node's state, as a scrape reads it.
    pub fn sample(&self) -> NodeSample {
        let raft = self.replica.status();
        let (leader_changes, snapshots) = self.replica.ops_counters();
        NodeSample {
            store: self.replica.stats(),
            raft,
            lease_valid: raft
                .lease_expires_at
                .is_some_and(|until| until > runtime::now()),
            leader_changes,
            invalid_peer_messages: self.replica.invalid_peer_messages(),
            snapshots,
            backlog: self.replica.write_behind_backlog(),
            database: self.replica.record().map(|record| record.metrics()),
            resident_bytes: runtime::resident_bytes(),
            watch: self.replica.watch().stats(),
            shadow: self.mirror.as_ref().map(|mirror| mirror.stats()),
        }
    }

    fn metrics_text(&self) -> HttpResponse {
        HttpResponse {
            status: 200,
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: self.metrics.encode(&self.sample()).into_bytes(),
            retry_after_s: None,
        }
    }

    fn health(&self) -> HttpResponse {
        if self.replica.is_running() {
            text(200, "ok\n")
        } else {
            text(503, "the node loop has stopped\n")
        }
    }

    /// See [`readiness`].
    pub fn readiness(&self) -> Result<(), String> {
        readiness(&self.replica)
    }

    /// What `hyperion-cli status` shows, as JSON.
    pub fn status_json(&self) -> serde_json::Value {
        let status = self.replica.status();
        let stats = self.replica.stats();
        let topology = self.replica.topology();
        let (pending_mutations, pending_bytes) = self.replica.write_behind_backlog();
        let database = self.replica.record().map(|record| {
            let db = record.metrics();
            let breaker = ["closed", "open", "half-open"].get(usize::from(db.breaker_state));
            json!({
                "breaker": breaker,
                "breaker_opened": db.breaker_opened,
                "pending_mutations": pending_mutations,
                "pending_bytes": pending_bytes,
                "loads": db.loads,
                "rows_written": db.rows_written,
                "failed_attempts": db.attempt_failures,
            })
        });
        json!({
            "node_id": topology.id,
            "node_name": topology.name(topology.id),
            "role": crate::metrics::role_name(status.role),
            "term": status.term,
            "leader_id": status.leader_id,
            "leader_addr": status.leader_id.and_then(|id| topology.addresses.get(&id)),
            "commit_index": status.commit_index,
            "applied_index": status.applied_index,
            "last_index": status.last_index,
            "entries": stats.entries,
            "used_bytes": stats.used_bytes,
            "capacity_bytes": stats.capacity_bytes,
            "invalid_peer_messages": self.replica.invalid_peer_messages(),
            "ready": self.readiness().is_ok(),
            "database": database,
            "watch": watch_json(self.replica.watch().stats()),
            "shadow": self.mirror.as_ref().map(|mirror| shadow_json(mirror.stats())),
        })
    }

    fn leader_json(&self, id: Option<u64>) -> serde_json::Value {
        let topology = self.replica.topology();
        json!({
            "leader_id": id,
            "leader_name": id.map(|id| topology.name(id)),
            "leader_addr": id.and_then(|id| topology.addresses.get(&id)),
        })
    }

    /// On the leader: suspend the lease, transfer to the most caught-up follower, answer the
    /// new leader. On a follower: answer the current leader.
    async fn step_down(&self) -> HttpResponse {
        let me = self.replica.topology().id;
        match self.replica.transfer_leadership().await {
            Ok(target) => {
                let deadline = runtime::now() + STEP_DOWN_WAIT;
                let mut leader = None;
                while runtime::now() < deadline {
                    let known = self.replica.status().leader_id;
                    if known.is_some() && known != Some(me) {
                        leader = known;
                        break;
                    }
                    runtime::sleep(Duration::from_millis(20)).await;
                }
                let mut body = self.leader_json(leader.or(Some(target)));
                body["stepped_down"] = json!(true);
                body["transferred_to"] = json!(target);
                body["confirmed"] = json!(leader.is_some());
                json_response(200, body)
            }
            Err(ReplicaError::NotLeader { leader }) => {
                let leader_id = leader.map(|(id, _)| id);
                if leader_id == Some(me) {
                    return error(
                        409,
                        "this node leads a one-voter cluster: nobody to hand to",
                    );
                }
                let mut body = self.leader_json(leader_id);
                body["stepped_down"] = json!(false);
                body["reason"] = json!("this node is not the leader");
                json_response(200, body)
            }
            Err(other) => error(503, other.to_string()),
        }
    }

    /// Evicts `count` entries through the log; answers how many were evicted.
    async fn evict(&self, query: &str) -> HttpResponse {
        let count = match evict_count(query) {
            Ok(count) => count,
            Err(message) => return error(400, message),
        };
        let write = self.replica.write(WriteRequest::Evict { count });
        match runtime::timeout(EVICT_TIMEOUT, write).await {
            Ok(Ok(WriteOutcome::Evicted { count: evicted })) => {
                json_response(200, json!({ "requested": count, "evicted": evicted }))
            }
            Ok(Ok(other)) => error(500, format!("an eviction applied as {other:?}")),
            Ok(Err(ReplicaError::NotLeader { leader })) => {
                let mut body = self.leader_json(leader.map(|(id, _)| id));
                // Nodes know each other's gRPC addresses, not their admin ports: the answer names
                // the leader, and its gRPC address as `leader_addr`.
                body["error"] = json!(
                    "evictions go through the log: send this to the admin port of the leader \
                     named here (leader_addr is its gRPC address)"
                );
                json_response(421, body)
            }
            Ok(Err(other)) => error(503, other.to_string()),
            Err(_) => error(
                504,
                "the eviction did not commit in time; it may still apply",
            ),
        }
    }

    /// Re-reads the flag file. An invalid file keeps the old flags and says why; the flags that
    /// change how writes apply are handed to the node, which proposes them through the log.
    pub fn reload_flags(&self) -> HttpResponse {
        let Some(path) = &self.flags_file else {
            return error(
                409,
                "HYPERION_FEATURE_FLAGS is not set: there is no flag file to reload",
            );
        };
        match crate::config::load_flags(path) {
            Ok(flags) => {
                let mut current = self.flags.lock().unwrap_or_else(|p| p.into_inner());
                let changed = *current != flags;
                tracing::info!(changed, flags = ?flags, "feature flags reloaded");
                *current = flags.clone();
                drop(current);
                if let Some(mirror) = &self.mirror {
                    mirror.set_percent(flags.shadow_traffic_percent);
                }
                let settings = flags.apply_to(self.replica.local_apply_settings());
                if let Err(why) = self.replica.reload_apply_settings(settings) {
                    return error(503, format!("the node did not take the flags: {why}"));
                }
                json_response(
                    200,
                    json!({ "reloaded": true, "changed": changed, "flags": format!("{flags:?}") }),
                )
            }
            Err(why) => {
                tracing::warn!(error = %why, "feature flags not reloaded; the old flags stay");
                error(422, format!("{why}; the old flags stay in force"))
            }
        }
    }
}
