//! The Rust client of Hyperion: one client for the CLI, the simulator's workloads and benchmarks.
//!
//! Every call carries a deadline (a clogged link otherwise hangs until the peer's timeout), and
//! BatchGet splits key lists into calls of at most [`crate::api::BATCH_KEYS_MAX`] keys.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::api::BATCH_KEYS_MAX;
use crate::proto::cache_service_client::CacheServiceClient;
use crate::proto::{
    BatchGetRequest, DeleteRequest, DeleteResponse, GetRequest, GetResponse, SetRequest,
    SetResponse,
};
use crate::runtime;

/// Default per-call deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(2);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address `{addr}`: {source}")]
    Address {
        addr: String,
        source: tonic::transport::Error,
    },
}

/// A connection to one Hyperion node.
#[derive(Clone, Debug)]
pub struct Client {
    inner: CacheServiceClient<Channel>,
    deadline: Duration,
}

impl Client {
    /// A client for `addr` (`http://host:port`, or `host:port`). The connection is made lazily on
    /// the first call, so a node that is down shows up as `UNAVAILABLE` on that call.
    pub fn new(addr: &str) -> Result<Client, ClientError> {
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|source| ClientError::Address {
                addr: addr.to_string(),
                source,
            })?
            .connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        Ok(Client {
            inner: CacheServiceClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// Sets the per-call deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Client {
        self.deadline = deadline;
        self
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.deadline);
        request
    }

    /// Bounds a call by the deadline on this side too, whatever the transport does.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        runtime::timeout(self.deadline, call)
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "no answer within the client deadline ({} ms)",
                    self.deadline.as_millis()
                )))
            })
    }

    /// Reads one key.
    pub async fn get(&mut self, key: &[u8], allow_stale: bool) -> Result<GetResponse, Status> {
        let request = self.request(GetRequest {
            key: key.to_vec(),
            allow_stale,
            timeout_ms: 0,
        });
        let mut inner = self.inner.clone();
        self.bounded(async move { inner.get(request).await.map(|r| r.into_inner()) })
            .await
    }

    /// Writes one key; `expected_version` 0 is unconditional.
    pub async fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        expected_version: u64,
    ) -> Result<SetResponse, Status> {
        let request = self.request(SetRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ttl_ms,
            expected_version,
        });
        let mut inner = self.inner.clone();
        self.bounded(async move { inner.set(request).await.map(|r| r.into_inner()) })
            .await
    }

    /// Removes one key; `expected_version` 0 is unconditional.
    pub async fn delete(
        &mut self,
        key: &[u8],
        expected_version: u64,
    ) -> Result<DeleteResponse, Status> {
        let request = self.request(DeleteRequest {
            key: key.to_vec(),
            expected_version,
        });
        let mut inner = self.inner.clone();
        self.bounded(async move { inner.delete(request).await.map(|r| r.into_inner()) })
            .await
    }

    /// Reads any number of keys, in calls of at most [`BATCH_KEYS_MAX`]; responses come back in
    /// the order of `keys`.
    pub async fn batch_get(
        &mut self,
        keys: &[Vec<u8>],
        allow_stale: bool,
    ) -> Result<Vec<GetResponse>, Status> {
        let mut responses = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_KEYS_MAX) {
            let request = self.request(BatchGetRequest {
                keys: chunk.to_vec(),
                allow_stale,
                timeout_ms: 0,
            });
            let mut inner = self.inner.clone();
            let chunk_responses = self
                .bounded(async move {
                    let mut stream = inner.batch_get(request).await?.into_inner();
                    let mut received = Vec::with_capacity(chunk.len());
                    while let Some(response) = stream.message().await? {
                        received.push(response);
                    }
                    Ok(received)
                })
                .await?;
            if chunk_responses.len() != chunk.len() {
                return Err(Status::internal(format!(
                    "BatchGet answered {} of {} keys",
                    chunk_responses.len(),
                    chunk.len()
                )));
            }
            responses.extend(chunk_responses);
        }
        Ok(responses)
    }
}
