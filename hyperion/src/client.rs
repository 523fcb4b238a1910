//! The Rust client of Hyperion: one client for the CLI, the simulator's workloads and benchmarks.
//!
//! - **Leader discovery**: the client knows every node's address; it sends to the node it believes
//!   leads, follows `x-hyperion-leader` redirects, and tries the next node when one is down or has
//!   no leader yet. `allow_stale` reads may be answered by any node.
//! - **Deadlines**: every attempt carries one (a clogged link otherwise hangs until the peer's
//!   timeout).
//! - **Retries**: [`retry_with_backoff`] with exponential backoff and full jitter (the 2024-10-15
//!   lesson), bounded by attempts and total time. Reads are retried on any transient failure.
//!   Writes are retried only when they certainly did not apply (the server said so, or the
//!   connection was never made); a write whose outcome is unknown (timeout, `UNKNOWN`) is
//!   returned to the caller, because re-sending it could apply it twice.
//! - **Circuit breaker**: opens at 50 % failures over a window and then fails fast with
//!   `UNAVAILABLE` until its half-open probes succeed.
//! - **BatchGet** splits key lists into calls of at most [`BATCH_KEYS_MAX`] keys and returns the
//!   answers in request order.
//! - **Security** ([`ClientSecurity`]): TLS is on when a CA is configured
//!   (`HYPERION_TLS_CA_FILE`) or an address is `https://`; each server's certificate must name
//!   the host of its address (or `HYPERION_TLS_SERVER_NAME`); a client certificate
//!   (`HYPERION_TLS_CLIENT_CERT_FILE`, `HYPERION_TLS_CLIENT_KEY_FILE`) and a bearer token
//!   (`HYPERION_TOKEN_FILE`) identify the client. In simulation the client states the identity
//!   its certificate would prove instead.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::api::{LEADER_METADATA, NOT_APPLIED_METADATA};
use crate::limits::BATCH_KEYS_MAX;
use crate::proto::cache_service_client::CacheServiceClient;
use crate::proto::{
    BatchGetRequest, DeleteRequest, DeleteResponse, GetRequest, GetResponse, SetRequest,
    SetResponse,
};
use crate::resilience::{retry_with_backoff, BreakerConfig, CircuitBreaker, Jitter, RetryPolicy};
use crate::runtime;
use crate::secret::Secret;

pub mod near;
pub use near::{CachingClient, NearCacheConfig, NearCacheStats, Source};

/// Default deadline of one call, every retry and redirect included. It must outlast a leader
/// crash: followers notice after a randomized election timeout (1.5-3 s at the product's
/// defaults), elect, and the call is redirected to the winner. 5 s covers the longest timeout, a
/// lost first election round and the redirect.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Longest one attempt may take within a call's deadline, so a node that accepted the connection
/// and hangs leaves time to try another.
pub const ATTEMPT_DEADLINE_MAX: Duration = Duration::from_secs(2);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Most nodes a client addresses (the largest cluster).
pub const NODES_MAX: usize = crate::config::CLUSTER_NODES_MAX;

/// The client's default retry policy: retries until [`DEFAULT_DEADLINE`] (bounded by the
/// policy's attempt maximum too), 25 ms doubling to 1 s, full jitter. Bounded by time, not by a
/// small attempt count: eight quick attempts ended within about 1.3 s, before a new leader could
/// be elected.
pub fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: crate::resilience::RETRY_ATTEMPTS_MAX,
        base_delay: Duration::from_millis(25),
        max_delay: Duration::from_secs(1),
        max_total: DEFAULT_DEADLINE,
        jitter: Jitter::Full,
    }
}

/// Why the client could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server address `{addr}`: {source}")]
    Address {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("a client needs 1 to {NODES_MAX} node addresses, got {0}")]
    NodeCount(usize),
    #[error("`{0}` is an https:// address, but no CA is configured (HYPERION_TLS_CA_FILE, --ca)")]
    HttpsWithoutCa(String),
    #[error("{0}")]
    Security(String),
}

/// How a client secures its channels and identifies itself (see the module docs).
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// TLS (the CA and, optionally, a client certificate); `None` is plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The name every server's certificate must carry; default: the host of its address.
    pub server_name: Option<String>,
    /// A bearer token, sent as `authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// An admin API key (`x-hyperion-api-key`), for `NodeAdmin.Status`.
    pub api_key: Option<Secret>,
    /// In simulation: the identity this client's certificate would prove (`client:<name>`).
    pub simulated_identity: Option<String>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("tls", &self.tls.is_some())
            .field("server_name", &self.server_name)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl ClientSecurity {
    /// TLS and a token from files: `ca` (PEM CAs) turns TLS on; `cert` and `key` (PEM) are the
    /// client certificate; `token` a file holding a bearer token.
    pub fn from_files(
        ca: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
        token: Option<&std::path::Path>,
    ) -> Result<ClientSecurity, ClientError> {
        use crate::secret::{read_secret_file, SecretName};
        let fail = |e: String| ClientError::Security(e);
        let read = |variable: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| fail(format!("{variable} ({}): {e}", path.display())))
        };
        let tls = match (ca, cert, key) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(fail(
                    "HYPERION_TLS_CLIENT_CERT_FILE needs HYPERION_TLS_CA_FILE (--ca): the                      servers' certificates must be verified"
                        .to_string(),
                ))
            }
            (Some(ca), cert, key) => {
                let ca_pem = read("HYPERION_TLS_CA_FILE", ca)?;
                let identity = match (cert, key) {
                    (Some(cert), Some(key)) => Some((
                        read_secret_file(cert, SecretName::TlsCert).map_err(|e| fail(e.to_string()))?,
                        read_secret_file(key, SecretName::TlsKey).map_err(|e| fail(e.to_string()))?,
                    )),
                    (None, None) => None,
                    _ => {
                        return Err(fail(
                            "HYPERION_TLS_CLIENT_CERT_FILE and HYPERION_TLS_CLIENT_KEY_FILE                              (--cert, --key) go together"
                                .to_string(),
                        ))
                    }
                };
                let identity = identity.as_ref().map(|(cert, key)| (cert, key));
                Some(crate::tls::client_config(&ca_pem, identity).map_err(|e| fail(e.to_string()))?)
            }
        };
        let token = match token {
            None => None,
            Some(path) => {
                let token = read_secret_file(path, SecretName::DbPassword).map_err(|e| {
                    fail(format!(
                        "HYPERION_TOKEN_FILE ({}): {}",
                        path.display(),
                        e.problem
                    ))
                })?;
                let trimmed = String::from_utf8_lossy(token.expose()).trim().to_string();
                Some(Secret::new(trimmed.into_bytes()))
            }
        };
        Ok(ClientSecurity {
            tls,
            server_name: None,
            token,
            api_key: None,
            simulated_identity: None,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data behind the locks; a panic elsewhere cannot leave it half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone)]
struct Node {
    addr: String,
    stub: CacheServiceClient<Channel>,
    channel: Channel,
}

impl Node {
    fn new(addr: &str, security: &ClientSecurity) -> Result<Node, ClientError> {
        let https = addr.trim().starts_with("https://");
        let addr = normalize(addr);
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|source| {
            ClientError::Address {
                addr: addr.clone(),
                source,
            }
        })?;
        let channel_security = match &security.tls {
            None if https => return Err(ClientError::HttpsWithoutCa(addr)),
            None => None,
            Some(tls) => {
                let host = addr
                    .rsplit_once(':')
                    .map_or(addr.as_str(), |(host, _)| host);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = security.server_name.as_deref().unwrap_or(host);
                let server_name = rustls_pki_types::ServerName::try_from(name.to_string())
                    .map_err(|e| ClientError::Security(format!("server name `{name}`: {e}")))?;
                Some(runtime::ChannelSecurity {
                    tls: Arc::clone(tls),
                    server_name,
                })
            }
        };
        let channel = runtime::channel(endpoint, channel_security, DEFAULT_CONNECT_TIMEOUT);
        let stub = CacheServiceClient::new(channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Node {
            addr,
            stub,
            channel,
        })
    }
}

struct Shared {
    /// Known nodes: the configured ones, plus leaders learned from redirects (up to
    /// [`NODES_MAX`]).
    nodes: Mutex<Vec<Node>>,
    /// Index of the node believed to lead.
    leader: Mutex<usize>,
    breaker: Option<Mutex<CircuitBreaker>>,
    rng: Mutex<ChaCha8Rng>,
    security: ClientSecurity,
}

/// A client of one Hyperion cluster. Cheap to clone; clones share leader knowledge, the breaker
/// and the jitter RNG.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    deadline: Duration,
    retry: RetryPolicy,
    /// Talks to its configured nodes only (see [`Client::pinned`]).
    pinned: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes = lock(&self.shared.nodes);
        let addrs: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
        f.debug_struct("Client")
            .field("nodes", &addrs)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

fn normalize(addr: &str) -> String {
    let addr = addr.trim();
    let addr = addr.strip_prefix("http://").unwrap_or(addr);
    addr.strip_prefix("https://").unwrap_or(addr).to_string()
}

impl Client {
    /// A client for the nodes in `addrs`: `host:port`, `http://host:port` or
    /// `https://host:port`, comma-separated. Connections are made lazily on first use, so a node
    /// that is down shows up as a retry.
    pub fn new(addrs: &str) -> Result<Client, ClientError> {
        Client::secured(addrs, ClientSecurity::default())
    }

    /// [`Client::new`] with TLS and credentials.
    pub fn secured(addrs: &str, security: ClientSecurity) -> Result<Client, ClientError> {
        let addrs: Vec<String> = addrs.split(',').map(|a| a.trim().to_string()).collect();
        Client::cluster_secured(&addrs, security)
    }

    /// A client for the given node addresses.
    pub fn cluster(addrs: &[String]) -> Result<Client, ClientError> {
        Client::cluster_secured(addrs, ClientSecurity::default())
    }

    /// [`Client::cluster`] with TLS and credentials.
    pub fn cluster_secured(
        addrs: &[String],
        security: ClientSecurity,
    ) -> Result<Client, ClientError> {
        if addrs.is_empty() || addrs.len() > NODES_MAX {
            return Err(ClientError::NodeCount(addrs.len()));
        }
        let nodes = addrs
            .iter()
            .map(|addr| Node::new(addr, &security))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            shared: Arc::new(Shared {
                nodes: Mutex::new(nodes),
                leader: Mutex::new(0),
                breaker: Some(Mutex::new(CircuitBreaker::new(BreakerConfig::product()))),
                rng: Mutex::new(runtime::seeded_rng()),
                security,
            }),
            deadline: ATTEMPT_DEADLINE_MAX,
            retry: default_retry_policy(),
            pinned: false,
        })
    }

    /// Talks to its configured nodes only: a redirect is answered to the caller as it came, and
    /// the client never learns a node from it. For asking one node what it says (a probe, a
    /// debugging session, a test of that node's answers).
    pub fn pinned(mut self) -> Client {
        self.pinned = true;
        self
    }

    /// Sets the per-attempt deadline (the call's retries are bounded by the retry policy).
    pub fn with_deadline(mut self, deadline: Duration) -> Client {
        self.deadline = deadline;
        self
    }

    /// Bounds each call, retries and redirects included, by `deadline`: attempts go on until it
    /// passes (each at most [`ATTEMPT_DEADLINE_MAX`]), and a call still running then answers
    /// `DEADLINE_EXCEEDED`. What the CLI's `--deadline-ms` sets.
    pub fn with_call_deadline(mut self, deadline: Duration) -> Client {
        self.deadline = deadline.min(ATTEMPT_DEADLINE_MAX);
        self.retry.max_total = deadline;
        self.retry.max_attempts = crate::resilience::RETRY_ATTEMPTS_MAX;
        self
    }

    /// Sets the retry policy (`max_attempts: 1` disables retries).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Client {
        assert!(retry.validate().is_ok(), "{:?}", retry.validate());
        self.retry = retry;
        self
    }

    /// Replaces the circuit breaker (`None` disables it). Clones made before share the old one.
    pub fn with_breaker(mut self, breaker: Option<BreakerConfig>) -> Client {
        let shared = Shared {
            nodes: Mutex::new(lock(&self.shared.nodes).clone()),
            leader: Mutex::new(*lock(&self.shared.leader)),
            breaker: breaker.map(|config| Mutex::new(CircuitBreaker::new(config))),
            rng: Mutex::new(runtime::seeded_rng()),
            security: self.shared.security.clone(),
        };
        self.shared = Arc::new(shared);
        self
    }

    /// The address of the node the client currently believes leads.
    pub fn leader_hint(&self) -> String {
        lock(&self.shared.nodes)[*lock(&self.shared.leader)]
            .addr
            .clone()
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = self.request_without_deadline(message);
        request.set_timeout(self.deadline);
        request
    }

    /// A request with the client's credentials and no gRPC deadline (a long-lived stream).
    fn request_without_deadline<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let security = &self.shared.security;
        if let Some(token) = &security.token {
            let value = [b"Bearer ".as_slice(), token.expose()].concat();
            if let Ok(mut value) = tonic::metadata::MetadataValue::try_from(value.as_slice()) {
                value.set_sensitive(true);
                request.metadata_mut().insert("authorization", value);
            }
        }
        if let Some(key) = &security.api_key {
            if let Ok(mut value) = tonic::metadata::MetadataValue::try_from(key.expose()) {
                value.set_sensitive(true);
                request
                    .metadata_mut()
                    .insert(crate::auth::API_KEY_METADATA, value);
            }
        }
        if let Some(identity) = &security.simulated_identity {
            runtime::state_simulated_identity(request.metadata_mut(), identity);
        }
        request
    }

    /// Every configured node's `NodeAdmin.Status`, in order, with its address (one attempt
    /// each, within the deadline).
    pub async fn statuses(
        &self,
    ) -> Vec<(String, Result<crate::raft_proto::StatusResponse, Status>)> {
        use crate::raft_proto::node_admin_client::NodeAdminClient;
        let nodes = lock(&self.shared.nodes).clone();
        let mut answers = Vec::with_capacity(nodes.len());
        for node in nodes {
            let mut admin = NodeAdminClient::new(node.channel.clone());
            let request = self.request(crate::raft_proto::StatusRequest::default());
            let answer = match runtime::timeout(self.deadline, admin.status(request)).await {
                Ok(answer) => answer.map(tonic::Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded("no answer within the deadline")),
            };
            answers.push((node.addr.clone(), answer));
        }
        answers
    }

    /// Learns from a failure where to send the next attempt: the hinted leader (added to the
    /// known nodes if new), or the next known node.
    fn redirect(&self, tried: usize, status: &Status) {
        if self.pinned {
            return;
        }
        let mut nodes = lock(&self.shared.nodes);
        let hinted = status
            .metadata()
            .get(LEADER_METADATA)
            .and_then(|value| value.to_str().ok())
            .map(normalize)
            .and_then(|addr| match nodes.iter().position(|n| n.addr == addr) {
                Some(known) => Some(known),
                None if nodes.len() < NODES_MAX => {
                    let node = Node::new(&addr, &self.shared.security).ok()?;
                    nodes.push(node);
                    Some(nodes.len() - 1)
                }
                None => None,
            });
        let next = hinted.unwrap_or((tried + 1) % nodes.len());
        drop(nodes);
        let mut leader = lock(&self.shared.leader);
        if *leader == tried {
            *leader = next;
        }
    }

    /// One call to one node, through the breaker, bounded by the deadline.
    async fn attempt<T, F, Fut>(&self, node: usize, call: &F) -> Result<T, Status>
    where
        F: Fn(CacheServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let ticket = match &self.shared.breaker {
            Some(breaker) => match lock(breaker).try_acquire(runtime::now()) {
                Ok(ticket) => Some(ticket),
                Err(rejected) => {
                    return Err(Status::unavailable(format!(
                        "circuit breaker open: too many recent failures; retry in {} ms",
                        rejected.retry_after.as_millis()
                    )))
                }
            },
            None => None,
        };
        let stub = lock(&self.shared.nodes)[node].stub.clone();
        let result = runtime::timeout(self.deadline, call(stub))
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "no answer within the client deadline ({} ms)",
                    self.deadline.as_millis()
                )))
            });
        if let (Some(breaker), Some(ticket)) = (&self.shared.breaker, ticket) {
            let mut breaker = lock(breaker);
            match &result {
                // A redirect is routing, not a failure: the node answered and named the leader.
                Err(status) if status.metadata().get(LEADER_METADATA).is_some() => {
                    breaker.record_abandoned(ticket)
                }
                Err(status) if is_transient(status) => {
                    breaker.record_failure(ticket, runtime::now())
                }
                _ => breaker.record_success(ticket, runtime::now()),
            }
        }
        if let Err(status) = &result {
            if is_transient(status) {
                self.redirect(node, status);
            }
        }
        result
    }

    /// Runs `call` against the leader with redirects and retries. `write` selects the stricter
    /// retry rule for non-idempotent calls.
    async fn call<T, F, Fut>(&self, write: bool, call: F) -> Result<T, Status>
    where
        F: Fn(CacheServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut rng = lock(&self.shared.rng).clone();
        // Advance the shared RNG so concurrent calls draw different jitter.
        let _ = rand::Rng::random::<u64>(&mut *lock(&self.shared.rng));
        let retriable = |status: &Status| {
            if write {
                certainly_not_applied(status)
            } else {
                is_transient(status) && status.code() != Code::ResourceExhausted
            }
        };
        let retried = retry_with_backoff(&self.retry, &mut rng, retriable, || {
            let node = *lock(&self.shared.leader);
            self.attempt(node, &call)
        });
        // The policy starts no retry past `max_total`; this also ends an attempt that would run
        // past it, so the call's deadline holds.
        let total = self.retry.max_total.max(self.deadline);
        runtime::timeout(total, retried).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(format!(
                "no answer within the call's deadline ({} ms){}",
                total.as_millis(),
                if write {
                    "; a write's outcome is unknown"
                } else {
                    ""
                }
            )))
        })
    }

    /// Reads one key (linearizable unless `allow_stale`).
    pub async fn get(&self, key: &[u8], allow_stale: bool) -> Result<GetResponse, Status> {
        let message = GetRequest {
            key: key.to_vec(),
            allow_stale,
            ..GetRequest::default()
        };
        self.call(false, |mut stub| {
            let request = self.request(message.clone());
            async move { stub.get(request).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// A linearizable read of `key` that asks the serving node to track it for the Watch stream
    /// `tracking_id` (0: none); `tracked` in the answer says whether it did.
    pub async fn get_tracked(&self, key: &[u8], tracking_id: u64) -> Result<GetResponse, Status> {
        let message = GetRequest {
            key: key.to_vec(),
            tracking_id,
            ..GetRequest::default()
        };
        self.call(false, |mut stub| {
            let request = self.request(message.clone());
            async move { stub.get(request).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Writes one key; `expected_version` 0 is unconditional.
    pub async fn set(
        &self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        expected_version: u64,
    ) -> Result<SetResponse, Status> {
        let message = SetRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ttl_ms,
            expected_version,
        };
        self.call(true, |mut stub| {
            let request = self.request(message.clone());
            async move { stub.set(request).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Removes one key; `expected_version` 0 is unconditional.
    pub async fn delete(
        &self,
        key: &[u8],
        expected_version: u64,
    ) -> Result<DeleteResponse, Status> {
        let message = DeleteRequest {
            key: key.to_vec(),
            expected_version,
        };
        self.call(true, |mut stub| {
            let request = self.request(message.clone());
            async move { stub.delete(request).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Reads any number of keys, in calls of at most [`BATCH_KEYS_MAX`]; responses come back in
    /// the order of `keys`.
    pub async fn batch_get(
        &self,
        keys: &[Vec<u8>],
        allow_stale: bool,
    ) -> Result<Vec<GetResponse>, Status> {
        let mut responses = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_KEYS_MAX) {
            let message = BatchGetRequest {
                keys: chunk.to_vec(),
                allow_stale,
                ..BatchGetRequest::default()
            };
            let chunk_responses = self
                .call(false, |mut stub| {
                    let request = self.request(message.clone());
                    async move {
                        let mut stream = stub.batch_get(request).await?.into_inner();
                        let mut received = Vec::with_capacity(BATCH_KEYS_MAX);
                        while let Some(response) = stream.message().await? {
                            received.push(response);
                        }
                        Ok(received)
                    }
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

impl Client {
    /// Opens a `Watch` stream on the node the client believes leads (where its reads go, so
    /// they can name the stream in `tracking_id`), sending `requests` on it. A failure moves
    /// the client's choice on as any failed call does.
    pub async fn open_watch(
        &self,
        requests: impl futures::Stream<Item = crate::proto::WatchRequest> + Send + 'static,
    ) -> Result<tonic::Streaming<crate::proto::WatchEvent>, Status> {
        let node = *lock(&self.shared.leader);
        let mut stub = lock(&self.shared.nodes)[node].stub.clone();
        let request = self.request_without_deadline(requests);
        let opened = runtime::timeout(self.deadline, stub.watch(request))
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "Watch: no answer within the client deadline ({} ms)",
                    self.deadline.as_millis()
                )))
            });
        match opened {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => {
                if is_transient(&status) {
                    self.redirect(node, &status);
                }
                Err(status)
            }
        }
    }
}

/// Failures that say nothing about the request itself: the node, the network or the cluster's
/// leadership. These count against the breaker and make reads retry elsewhere.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Aborted
    )
}

/// Whether a failed write certainly did not apply, so sending it again cannot apply it twice:
/// the server marked it not applied (a redirect, no leader, overload, leadership lost before
/// commit), or the connection was never established.
pub fn certainly_not_applied(status: &Status) -> bool {
    if status.code() != Code::Unavailable {
        return false;
    }
    status.metadata().get(NOT_APPLIED_METADATA).is_some()
        || status.message().starts_with("circuit breaker open")
        || runtime::is_connect_failure(status)
}
