//! The gRPC `CacheService`: validation, rate limits, deadlines, and the mapping of engine outcomes
//! to responses and status codes. Behaviour lives in [`crate::node`]; this layer stays thin.
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

use crate::limits::{Endpoint, RateLimiter, Throttled};
use crate::node::CacheNode;
use crate::proto::cache_service_server::CacheService;
use crate::proto::{
    BatchGetRequest, DeleteRequest, DeleteResponse, GetRequest, GetResponse, SetRequest,
    SetResponse,
};
use crate::runtime;

/// `timeout_ms` of 0 means this (the product's default).
pub const DEFAULT_TIMEOUT_MS: u32 = 100;
/// Largest accepted `timeout_ms`: a minute. Longer waits hold server resources for nothing.
pub const TIMEOUT_MS_MAX: u32 = 60_000;
/// Most keys in one BatchGet (the product's limit; the client library splits larger lists).
pub const BATCH_KEYS_MAX: usize = 100;
/// Most bytes of a key (enforced by the engine too; here so BatchGet can name the bad index).
pub const KEY_BYTES_MAX: usize = hyperion_store::DEFAULT_MAX_KEY_BYTES;
/// Response metadata carrying the current version on a compare-and-set mismatch.
pub const CURRENT_VERSION_METADATA: &str = "x-hyperion-current-version";
/// Response metadata with the throttling delay in milliseconds (`retry-after` has seconds).
pub const RETRY_AFTER_MS_METADATA: &str = "x-hyperion-retry-after-ms";

/// The service implementation.
#[derive(Clone)]
pub struct CacheApi {
    node: Arc<CacheNode>,
    limiter: Arc<RateLimiter>,
}

impl CacheApi {
    pub fn new(node: Arc<CacheNode>, limiter: Arc<RateLimiter>) -> CacheApi {
        CacheApi { node, limiter }
    }

    /// The largest gRPC message this service needs: a largest value, or a BatchGet stream item,
    /// with room for framing and the key.
    pub fn max_message_bytes(max_value_bytes: usize) -> usize {
        max_value_bytes.saturating_mul(2).max(4 << 20)
    }

    fn throttle<T>(&self, request: &Request<T>, endpoint: Endpoint) -> Result<(), Status> {
        let client: Option<IpAddr> = request.remote_addr().map(|addr| addr.ip());
        self.limiter
            .check(client, endpoint, 1, runtime::now())
            .map_err(throttled_status)
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
    if key.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field}: must not be empty"
        )));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "{field}: {} bytes exceeds the limit of {KEY_BYTES_MAX} bytes",
            key.len()
        )));
    }
    Ok(())
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
        self.throttle(&request, Endpoint::Get)?;
        let request = request.into_inner();
        validate_key("key", &request.key)?;
        let timeout = read_timeout(request.timeout_ms)?;
        let node = Arc::clone(&self.node);
        let read = async move { node.get(&request.key, request.allow_stale) };
        let response = runtime::timeout(timeout, read)
            .await
            .map_err(|_| deadline_exceeded(timeout))?;
        Ok(Response::new(response))
    }

    async fn set(&self, request: Request<SetRequest>) -> Result<Response<SetResponse>, Status> {
        self.throttle(&request, Endpoint::Set)?;
        let request = request.into_inner();
        validate_key("key", &request.key)?;
        let written = self
            .node
            .set(
                &request.key,
                &request.value,
                request.ttl_ms,
                request.expected_version,
            )
            .map_err(store_error_status)?;
        Ok(Response::new(SetResponse {
            version: written.version,
            ttl_ms: written.ttl_ms,
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.throttle(&request, Endpoint::Set)?;
        let request = request.into_inner();
        validate_key("key", &request.key)?;
        let deleted = self
            .node
            .delete(&request.key, request.expected_version)
            .map_err(store_error_status)?;
        Ok(Response::new(DeleteResponse {
            existed: deleted.existed,
            version: deleted.version,
        }))
    }

    type BatchGetStream = GetStream;

    async fn batch_get(
        &self,
        request: Request<BatchGetRequest>,
    ) -> Result<Response<Self::BatchGetStream>, Status> {
        self.throttle(&request, Endpoint::BatchGet)?;
        let request = request.into_inner();
        if request.keys.is_empty() {
            return Err(Status::invalid_argument("keys: must list at least one key"));
        }
        if request.keys.len() > BATCH_KEYS_MAX {
            return Err(Status::invalid_argument(format!(
                "keys: {} keys exceeds the limit of {BATCH_KEYS_MAX} per BatchGet; split the batch",
                request.keys.len()
            )));
        }
        for (index, key) in request.keys.iter().enumerate() {
            validate_key(&format!("keys[{index}]"), key)?;
        }
        let timeout = read_timeout(request.timeout_ms)?;
        let node = Arc::clone(&self.node);
        let read = async move {
            request
                .keys
                .iter()
                .map(|key| Ok(node.get(key, request.allow_stale)))
                .collect::<Vec<_>>()
        };
        let responses = runtime::timeout(timeout, read)
            .await
            .map_err(|_| deadline_exceeded(timeout))?;
        let stream: GetStream = Box::pin(futures::stream::iter(responses));
        Ok(Response::new(stream))
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
