//! The gRPC `CacheService`: validation, rate limits, deadlines, and the mapping of replica outcomes
//! to responses and status codes. Behaviour lives in [`crate::replica`]; this layer stays thin.
//!
//! Routing: writes and default (linearizable) reads are served by the leader only; other nodes
//! answer `UNAVAILABLE` with the leader's address in `x-hyperion-leader` (and its Raft id in
//! `x-hyperion-leader-id`) when one is known, so clients redirect. `allow_stale` reads are served
//! by any node from its local state.
//!
//! Everything here runs in simulation too (madsim-tonic calls handlers directly), which is why
//! limits are checked in the handlers rather than in tower layers.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use hyperion_store::StoreError;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tracing::{Instrument, Span};

use crate::auth::{Authority, Caller, Operation};
use crate::faults::FaultInjection;
use crate::limits::{
    Endpoint, RateLimiter, Throttled, BATCH_KEYS_MAX, DEFAULT_TIMEOUT_MS, KEY_BYTES_MAX,
    TIMEOUT_MS_MAX, WRITE_TIMEOUT,
};
use crate::metrics::{Metrics, Rpc};
use crate::mirror::Mirror;
use crate::proto::cache_service_server::CacheService;
use crate::proto::{
    BatchGetRequest, CacheStatus, DeleteRequest, DeleteResponse, GetRequest, GetResponse,
    SetRequest, SetResponse, WatchRequest,
};
use crate::replica::{ReadAnswer, ReadOutcome, Replica, ReplicaError, WriteOutcome, WriteRequest};
use crate::runtime;
use crate::telemetry;

pub mod watch;

/// Response metadata carrying the current version on a compare-and-set mismatch.
pub const CURRENT_VERSION_METADATA: &str = "x-hyperion-current-version";
/// Response metadata with the throttling delay in milliseconds (`retry-after` has seconds).
pub const RETRY_AFTER_MS_METADATA: &str = "x-hyperion-retry-after-ms";
/// Response metadata naming the leader's address on a redirect.
pub const LEADER_METADATA: &str = "x-hyperion-leader";
/// Response metadata naming the leader's Raft id on a redirect.
pub const LEADER_ID_METADATA: &str = "x-hyperion-leader-id";
/// Response metadata on refusals of requests that certainly did not apply (safe to resend).
pub const NOT_APPLIED_METADATA: &str = "x-hyperion-not-applied";
/// The service implementation.
#[derive(Clone)]
pub struct CacheApi {
    replica: Replica,
    limiter: Arc<RateLimiter>,
    authority: Arc<Authority>,
    metrics: Arc<Metrics>,
    /// Resolves when the node begins to shut down: open Watch streams end, so a graceful
    /// shutdown is not held up by them.
    shutdown: Option<crate::health::ShutdownSignal>,
    /// Where served requests are mirrored (shadow traffic), if anywhere.
    mirror: Option<Arc<dyn Mirror>>,
}

impl CacheApi {
    pub fn new(replica: Replica, limiter: Arc<RateLimiter>, authority: Arc<Authority>) -> CacheApi {
        CacheApi {
            replica,
            limiter,
            authority,
            metrics: Arc::new(Metrics::new(false)),
            shutdown: None,
            mirror: None,
        }
    }

    /// Mirrors served requests to `mirror` (shadow traffic).
    pub fn with_mirror(mut self, mirror: Arc<dyn Mirror>) -> CacheApi {
        self.mirror = Some(mirror);
        self
    }

    /// Ends open Watch streams when `shutdown` resolves.
    pub fn with_shutdown(mut self, shutdown: crate::health::ShutdownSignal) -> CacheApi {
        self.shutdown = Some(shutdown);
        self
    }

    /// Records requests in `metrics` (the node's registry).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> CacheApi {
        self.metrics = metrics;
        self
    }

    /// Records an RPC's outcome on its span and in the request metrics.
    fn finish<T>(
        &self,
        rpc: Rpc,
        span: &Span,
        result: &Result<T, Status>,
        started: runtime::Instant,
    ) {
        telemetry::record_outcome(span, result);
        if self.metrics.recording() {
            let took = runtime::now().saturating_duration_since(started);
            self.metrics
                .observe_request(rpc, result.as_ref().err().map(Status::code), took);
        }
    }

    /// Waits for a linearizable read point (or not, for stale reads), bounded by `timeout`.
    async fn read_barrier(&self, allow_stale: bool, timeout: Duration) -> Result<(), Status> {
        if allow_stale {
            return Ok(());
        }
        runtime::timeout(timeout, self.replica.linearizable_barrier())
            .await
            .map_err(|_| deadline_exceeded(timeout))?
            .map_err(replica_error_status)
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteOutcome, Status> {
        match runtime::timeout(WRITE_TIMEOUT, self.replica.write(request)).await {
            Ok(outcome) => outcome.map_err(replica_error_status),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the write did not commit within {} ms; its outcome is unknown (it may still apply)",
                WRITE_TIMEOUT.as_millis()
            ))),
        }
    }

    /// The largest gRPC message this service needs: a largest value, or a BatchGet stream item,
    /// with room for framing and the key.
    pub fn max_message_bytes(max_value_bytes: usize) -> usize {
        max_value_bytes.saturating_mul(2).max(4 << 20)
    }

    /// Tracks the key `answer` read for the Watch stream `tracking_id` (0: none), if that stream
    /// is open on this node and belongs to `caller`, held at the version answered (0 unless a
    /// fresh HIT); whether it is tracked.
    fn track_for_read(&self, caller: &Caller, tracking_id: u64, answer: &GetResponse) -> bool {
        if tracking_id == 0 || self.replica.faults().track_before_read {
            return false;
        }
        let fresh_hit = answer.status == CacheStatus::Hit as i32 && !answer.is_stale;
        let held = if fresh_hit { answer.version } else { 0 };
        self.replica.watch().track_for_read(
            tracking_id,
            &watch::owner_of(caller),
            &answer.key,
            held,
            || self.replica.current_version(&answer.key),
        )
    }

    /// Fault injection (`track_before_read`, the pre-fix behaviour): registers the key before
    /// it is read, holding nothing; whether it did.
    fn track_before_read(&self, caller: &Caller, tracking_id: u64, key: &[u8]) -> bool {
        tracking_id != 0
            && self.replica.faults().track_before_read
            && self.replica.watch().track_for_read(
                tracking_id,
                &watch::owner_of(caller),
                key,
                0,
                || None,
            )
    }

    fn throttle<T>(&self, request: &Request<T>, endpoint: Endpoint) -> Result<(), Status> {
        let client: Option<IpAddr> = runtime::remote_addr(request).map(|addr| addr.ip());
        self.limiter
            .check(client, endpoint, 1, runtime::now())
            .map_err(|throttled| {
                self.metrics.observe_rate_limited(endpoint);
                throttled_status(throttled)
            })
    }
}

fn throttled_status(throttled: Throttled) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "rate limit of {} {} requests per second per client exceeded; retry after {} ms",
        throttled.limit_per_sec,
        throttled.endpoint.name(),
        throttled.retry_after.as_millis().max(1)
    ));
    // `retry-after` is whole seconds (HTTP semantics), rounded up so clients never retry early.
    let retry_secs =
        throttled.retry_after.as_secs() + u64::from(throttled.retry_after.subsec_nanos() > 0);
    let metadata = status.metadata_mut();
    metadata.insert("retry-after", MetadataValue::from(retry_secs.max(1)));
    metadata.insert(
        RETRY_AFTER_MS_METADATA,
        MetadataValue::from(
            u64::try_from(throttled.retry_after.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        ),
    );
    status
}

/// Checks one key; `field` names it in the error (`key`, `keys[3]`).
fn validate_key(field: &str, key: &[u8]) -> Result<(), Status> {
    validate_bytes(field, key, false)
}

/// Checks a key or key prefix (which may be empty where `allow_empty`): at most
/// [`KEY_BYTES_MAX`] bytes; `field` names it in the error.
fn validate_bytes(field: &str, bytes: &[u8], allow_empty: bool) -> Result<(), Status> {
    if bytes.is_empty() && !allow_empty {
        return Err(Status::invalid_argument(format!(
            "{field}: must not be empty"
        )));
    }
    if bytes.len() > KEY_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "{field}: {} bytes exceeds the limit of {KEY_BYTES_MAX} bytes",
            bytes.len()
        )));
    }
    Ok(())
}

/// Checks a `Get`: its key and timeout; the wait budget on success.
pub fn check_get(request: &GetRequest) -> Result<Duration, Status> {
    validate_key("key", &request.key)?;
    read_timeout(request.timeout_ms)
}

/// Checks a `Set`: its key and value size.
pub fn check_set(request: &SetRequest, max_value_bytes: usize) -> Result<(), Status> {
    validate_key("key", &request.key)?;
    if request.value.len() > max_value_bytes {
        return Err(store_error_status(StoreError::ValueTooLarge {
            len: request.value.len(),
            max: max_value_bytes,
        }));
    }
    Ok(())
}

/// Checks a `Delete`: its key.
pub fn check_delete(request: &DeleteRequest) -> Result<(), Status> {
    validate_key("key", &request.key)
}

/// Checks a `BatchGet`: the number of keys, each key (named by position), the timeout; the wait
/// budget on success. (`faults.unbounded_batch_get` lifts the key count's bound.)
pub fn check_batch_get(
    request: &BatchGetRequest,
    faults: &FaultInjection,
) -> Result<Duration, Status> {
    if request.keys.is_empty() {
        return Err(Status::invalid_argument("keys: must list at least one key"));
    }
    if request.keys.len() > BATCH_KEYS_MAX && !faults.unbounded_batch_get {
        return Err(Status::invalid_argument(format!(
            "keys: {} keys exceeds the limit of {BATCH_KEYS_MAX} per BatchGet; split the batch",
            request.keys.len()
        )));
    }
    for (index, key) in request.keys.iter().enumerate() {
        validate_key(&format!("keys[{index}]"), key)?;
    }
    read_timeout(request.timeout_ms)
}

/// The wait budget of a read: `timeout_ms` 0 → the default.
fn read_timeout(timeout_ms: u32) -> Result<Duration, Status> {
    match timeout_ms {
        0 => Ok(Duration::from_millis(u64::from(DEFAULT_TIMEOUT_MS))),
        ms if ms > TIMEOUT_MS_MAX => Err(Status::invalid_argument(format!(
            "timeout_ms: {ms} exceeds the limit of {TIMEOUT_MS_MAX}"
        ))),
        ms => Ok(Duration::from_millis(u64::from(ms))),
    }
}

fn deadline_exceeded(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "no answer within timeout_ms ({} ms)",
        timeout.as_millis()
    ))
}

/// Maps a replica refusal to the status a client sees. Refusals of requests that certainly did
/// not apply carry [`NOT_APPLIED_METADATA`].
fn replica_error_status(error: ReplicaError) -> Status {
    let not_applied = matches!(
        error,
        ReplicaError::NotLeader { .. }
            | ReplicaError::WriteDropped
            | ReplicaError::Overloaded
            | ReplicaError::Stopped
            | ReplicaError::RecordBehind(_)
            | ReplicaError::InvalidCommand(_)
            | ReplicaError::OutOfSpace
    );
    let mut status = replica_error_status_inner(error);
    if not_applied {
        status
            .metadata_mut()
            .insert(NOT_APPLIED_METADATA, MetadataValue::from_static("1"));
    }
    status
}

fn replica_error_status_inner(error: ReplicaError) -> Status {
    match error {
        ReplicaError::NotLeader {
            leader: Some((id, addr)),
        } => {
            let mut status = Status::unavailable(format!(
                "this node is not the leader; the leader is node {id} at {addr}"
            ));
            if let Ok(value) = addr.parse::<MetadataValue<tonic::metadata::Ascii>>() {
                status.metadata_mut().insert(LEADER_METADATA, value);
            }
            status
                .metadata_mut()
                .insert(LEADER_ID_METADATA, MetadataValue::from(id));
            status
        }
        ReplicaError::NotLeader { leader: None } => Status::unavailable(
            "no leader is known (an election is in progress or this node is partitioned); retry",
        ),
        ReplicaError::WriteDropped => Status::unavailable(
            "leadership changed before the write committed; it was not applied; retry",
        ),
        ReplicaError::ReadAborted => {
            Status::unavailable("leadership changed before the read was confirmed; retry")
        }
        ReplicaError::OutcomeUnknown => Status::unknown(
            "leadership changed while the write was in flight; its outcome is unknown",
        ),
        ReplicaError::Overloaded => {
            Status::unavailable("this node has too many queued requests; retry with backoff")
        }
        ReplicaError::Stopped => Status::unavailable("this node is shutting down"),
        ReplicaError::RecordBehind(reason) => Status::unavailable(reason),
        ReplicaError::InvalidCommand(reason) => Status::invalid_argument(reason),
        ReplicaError::OutOfSpace => Status::resource_exhausted(
            "this node's HYPERION_DATA_DIR is out of space: writes are refused (not applied) until \
             space is freed; reads are served",
        ),
        ReplicaError::Store(error) => store_error_status(error),
    }
}

/// The protobuf answer to a read of `key`.
fn get_response(key: Vec<u8>, answer: ReadAnswer) -> GetResponse {
    let mut response = GetResponse {
        key,
        error_message: answer.note.unwrap_or_default(),
        ..GetResponse::default()
    };
    match answer.outcome {
        ReadOutcome::Hit {
            value,
            version,
            is_stale,
            ttl_remaining_ms,
        } => {
            response.status = CacheStatus::Hit as i32;
            response.value = value;
            response.version = version;
            response.is_stale = is_stale;
            response.ttl_remaining_ms = ttl_remaining_ms;
        }
        ReadOutcome::Miss => response.status = CacheStatus::Miss as i32,
        ReadOutcome::Corrupt { .. } => {
            response.status = CacheStatus::Error as i32;
            response.error_message =
                "entry failed its integrity check; it is not served, and is being removed"
                    .to_string();
        }
    }
    response
}

/// Maps an engine refusal to the status a client sees; messages name the field.
fn store_error_status(error: StoreError) -> Status {
    match error {
        StoreError::EmptyKey => Status::invalid_argument("key: must not be empty"),
        StoreError::KeyTooLarge { len, max } => {
            Status::invalid_argument(format!("key: {len} bytes exceeds the limit of {max} bytes"))
        }
        StoreError::ValueTooLarge { len, max } => Status::invalid_argument(format!(
            "value: {len} bytes exceeds max_value_size_kb ({} KiB = {max} bytes)",
            max / 1024
        )),
        StoreError::VersionMismatch { expected, current } => {
            let mut status = Status::failed_precondition(format!(
                "expected_version {expected} does not match the current version {current}"
            ));
            status
                .metadata_mut()
                .insert(CURRENT_VERSION_METADATA, MetadataValue::from(current));
            status
        }
    }
}

type GetStream = Pin<Box<dyn Stream<Item = Result<GetResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl CacheService for CacheApi {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let span = telemetry::rpc_span(Rpc::Get, Some(&request.get_ref().key), 1);
        let started = runtime::now();
        let result = async {
            self.throttle(&request, Endpoint::Get)?;
            let caller = self.authority.authorize(
                &request,
                Operation::Read,
                &[request.get_ref().key.as_slice()],
            )?;
            let request = request.into_inner();
            let timeout = check_get(&request)?;
            let started = runtime::now();
            let mirror = |response: Result<Response<GetResponse>, Status>| {
                if let (Some(mirror), Ok(answer)) = (&self.mirror, &response) {
                    mirror.get(&request.key, request.allow_stale, answer.get_ref());
                }
                response
            };
            let before = self.track_before_read(&caller, request.tracking_id, &request.key);
            self.read_barrier(request.allow_stale, timeout).await?;
            let answer = self.replica.read_local(&request.key, request.allow_stale);
            // Tracked once answered, against the version answered: a change applied since is
            // reported at once, every later one as it applies.
            let respond = |answer| {
                let mut response = get_response(request.key.clone(), answer);
                response.tracked =
                    before || self.track_for_read(&caller, request.tracking_id, &response);
                Ok(Response::new(response))
            };
            if request.allow_stale || answer.outcome != ReadOutcome::Miss {
                return mirror(respond(answer));
            }
            // A linearizable miss on the leader: read through to the system of record, within
            // what is left of the read's time budget.
            let left = timeout.saturating_sub(started.elapsed());
            match runtime::timeout(left, self.replica.read_through(&request.key)).await {
                Ok(Some(filled)) => mirror(respond(filled)),
                Ok(None) => mirror(respond(answer)),
                Err(_) => Err(deadline_exceeded(timeout)),
            }
        }
        .instrument(span.clone())
        .await;
        self.finish(Rpc::Get, &span, &result, started);
        result
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        let span = telemetry::rpc_span(Rpc::Set, Some(&request.get_ref().key), 1);
        let started = runtime::now();
        let result = async {
            self.throttle(&request, Endpoint::Set)?;
            self.authority.authorize(
                &request,
                Operation::Write,
                &[request.get_ref().key.as_slice()],
            )?;
            let request = request.into_inner();
            // The cluster's limit as the log last set it (it follows reloaded flags).
            check_set(&request, self.replica.max_value_bytes())?;
            // Shadow traffic needs the written entry after the write consumed it: copied only for
            // a key the mirror wants.
            let mirrored = self
                .mirror
                .as_ref()
                .filter(|mirror| mirror.wants(&request.key))
                .map(|mirror| {
                    let (key, value) = (request.key.clone(), request.value.clone());
                    (Arc::clone(mirror), key, value)
                });
            let outcome = self
                .write(WriteRequest::Set {
                    key: request.key,
                    value: request.value,
                    ttl_ms: request.ttl_ms,
                    expected_version: request.expected_version,
                })
                .await?;
            match outcome {
                WriteOutcome::Set { version, ttl_ms } => {
                    if let Some((mirror, key, value)) = mirrored {
                        mirror.set(&key, &value, ttl_ms);
                    }
                    Ok(Response::new(SetResponse { version, ttl_ms }))
                }
                other => Err(Status::internal(format!("a Set applied as {other:?}"))),
            }
        }
        .instrument(span.clone())
        .await;
        self.finish(Rpc::Set, &span, &result, started);
        result
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let span = telemetry::rpc_span(Rpc::Delete, Some(&request.get_ref().key), 1);
        let started = runtime::now();
        let result = async {
            self.throttle(&request, Endpoint::Set)?;
            self.authority.authorize(
                &request,
                Operation::Write,
                &[request.get_ref().key.as_slice()],
            )?;
            let request = request.into_inner();
            check_delete(&request)?;
            let key = self
                .mirror
                .as_ref()
                .filter(|mirror| mirror.wants(&request.key))
                .map(|_| request.key.clone());
            let outcome = self
                .write(WriteRequest::Delete {
                    key: request.key,
                    expected_version: request.expected_version,
                })
                .await?;
            match outcome {
                WriteOutcome::Deleted { existed, version } => {
                    if let (Some(mirror), Some(key)) = (&self.mirror, key) {
                        mirror.delete(&key);
                    }
                    Ok(Response::new(DeleteResponse { existed, version }))
                }
                other => Err(Status::internal(format!("a Delete applied as {other:?}"))),
            }
        }
        .instrument(span.clone())
        .await;
        self.finish(Rpc::Delete, &span, &result, started);
        result
    }

    type BatchGetStream = GetStream;

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<Self::BatchGetStream>, Status> {
        let keys = &request.get_ref().keys;
        let span = telemetry::rpc_span(Rpc::BatchGet, keys.first().map(Vec::as_slice), keys.len());
        let started = runtime::now();
        let result = async {
            self.throttle(&request, Endpoint::BatchGet)?;
            let keys: Vec<&[u8]> = request
                .get_ref()
                .keys
                .iter()
                .take(BATCH_KEYS_MAX + 1)
                .map(Vec::as_slice)
                .collect();
            let caller = self.authority.authorize(&request, Operation::Read, &keys)?;
            let request = request.into_inner();
            let timeout = check_batch_get(&request, self.replica.faults())?;
            // One leadership confirmation serves the whole batch.
            self.read_barrier(request.allow_stale, timeout).await?;
            let mut responses: Vec<Result<GetResponse, Status>> = request
                .keys
                .iter()
                .map(|key| {
                    let answer = self.replica.read_local(key, request.allow_stale);
                    let mut response = get_response(key.clone(), answer);
                    response.tracked = self.track_for_read(&caller, request.tracking_id, &response);
                    Ok(response)
                })
                .collect();
            if let Some(mirror) = &self.mirror {
                for answer in responses.iter().flatten() {
                    mirror.get(&answer.key, request.allow_stale, answer);
                }
            }
            if crate::buggify!("cut_batch_get_stream") {
                responses.truncate(responses.len() / 2);
                responses.push(Err(Status::unavailable(
                    "the connection closed mid-stream (simulated fault)",
                )));
            }
            let stream: GetStream = Box::pin(futures::stream::iter(responses));
            Ok(Response::new(stream))
        }
        .instrument(span.clone())
        .await;
        self.finish(Rpc::BatchGet, &span, &result, started);
        result
    }

    type WatchStream = watch::WatchStream;

    async fn watch(
        &self,
        request: Request<tonic::Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Opening a stream costs what a BatchGet does: it counts against that limit.
        self.throttle(&request, Endpoint::BatchGet)?;
        let caller = self.authority.authenticate(&request)?;
        if !self.replica.client_caching() {
            return Err(Status::failed_precondition(
                "enable_client_caching is off on this node: Watch (client-side caching) is \
                 unavailable",
            ));
        }
        watch::open(
            self.replica.clone(),
            Arc::clone(&self.authority),
            caller,
            request,
            self.shutdown.clone(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_timeout_defaults_and_bounds() {
        assert_eq!(read_timeout(0).unwrap(), Duration::from_millis(100));
        assert_eq!(read_timeout(250).unwrap(), Duration::from_millis(250));
        let error = read_timeout(60_001).unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(
            error.message().starts_with("timeout_ms:"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn key_validation_names_the_field() {
        assert!(validate_key("key", b"k").is_ok());
        let empty = validate_key("keys[2]", b"").unwrap_err();
        assert_eq!(empty.message(), "keys[2]: must not be empty");
        let long = validate_key("key", &[0u8; KEY_BYTES_MAX + 1]).unwrap_err();
        assert!(
            long.message()
                .contains("4097 bytes exceeds the limit of 4096"),
            "{}",
            long.message()
        );
    }

    #[test]
    fn throttling_sets_retry_after_metadata() {
        let status = throttled_status(Throttled {
            endpoint: Endpoint::Set,
            limit_per_sec: 1000,
            retry_after: Duration::from_millis(1),
        });
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
        assert_eq!(status.metadata().get(RETRY_AFTER_MS_METADATA).unwrap(), "1");
        assert!(status.message().contains("1000 Set requests per second"));
    }

    #[test]
    fn redirects_name_the_leader() {
        let status = replica_error_status(ReplicaError::NotLeader {
            leader: Some((2, "127.0.0.1:7002".to_string())),
        });
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.metadata().get(LEADER_METADATA).unwrap(),
            "127.0.0.1:7002"
        );
        assert_eq!(status.metadata().get(LEADER_ID_METADATA).unwrap(), "2");
        let election = replica_error_status(ReplicaError::NotLeader { leader: None });
        assert_eq!(election.code(), tonic::Code::Unavailable);
        assert!(election.metadata().get(LEADER_METADATA).is_none());
        assert!(election.metadata().get(NOT_APPLIED_METADATA).is_some());
        let unknown = replica_error_status(ReplicaError::OutcomeUnknown);
        assert_eq!(unknown.code(), tonic::Code::Unknown);
        assert!(unknown.metadata().get(NOT_APPLIED_METADATA).is_none());
    }

    #[test]
    fn version_mismatch_carries_the_current_version() {
        let status = store_error_status(StoreError::VersionMismatch {
            expected: 3,
            current: 5,
        });
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            status.metadata().get(CURRENT_VERSION_METADATA).unwrap(),
            "5"
        );
        let too_big = store_error_status(StoreError::ValueTooLarge {
            len: 600_000,
            max: 524_288,
        });
        assert!(too_big
            .message()
            .starts_with("value: 600000 bytes exceeds max_value_size_kb (512 KiB"));
    }
}
