//! The peer transport: `RaftService` over gRPC on each node's port.
//!
//! Outbound, each peer has its own bounded queue and sender task, so a slow or dead peer never
//! blocks the node loop or the other peers: when a queue is full the message is dropped (Raft
//! retransmits) and counted. Inbound, the service hands batches to the node loop's inbox without
//! waiting; a full inbox drops them the same way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyperion_raft::{Message, NodeId};
use tokio::sync::mpsc;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status};

use super::handle::Replica;
use super::inbound::{admit_batch, Admission, PEER_BATCH_MAX};
use super::types::Topology;
use super::wire::to_wire;
use crate::auth::{Authority, Operation};
use crate::faults::FaultInjection;
use crate::raft_proto as pb;
use crate::raft_proto::node_admin_server::NodeAdmin;
use crate::raft_proto::raft_service_client::RaftServiceClient;
use crate::raft_proto::raft_service_server::RaftService;
use crate::runtime::{self, FatalHandler};
use crate::tls::NodeTls;

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 1024;
/// Deadline of one `Send` call: longer than a heartbeat so a slow link still delivers, short
/// enough that a dead peer does not hold its queue for long.
pub const PEER_SEND_TIMEOUT: Duration = Duration::from_millis(500);
/// A batch's deadline grows by a millisecond per this many bytes beyond [`PEER_SEND_TIMEOUT`]:
/// a snapshot of a large cache is one message and needs seconds on the wire. The Raft core waits
/// at the same rate before it presumes a snapshot lost.
pub const PEER_BYTES_PER_MS_MIN: u64 = hyperion_raft::SNAPSHOT_BYTES_PER_MS_MIN;

/// The deadline of a `Send` carrying `bytes` of messages.
pub fn send_deadline(bytes: usize) -> Duration {
    PEER_SEND_TIMEOUT + Duration::from_millis(bytes as u64 / PEER_BYTES_PER_MS_MIN)
}

/// Pause after a failed `Send`, so a dead peer is not hammered.
pub const PEER_RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Largest peer message (a snapshot of a full cache travels whole).
pub const PEER_MESSAGE_BYTES_MAX: usize = 1 << 30;

/// Outbound links to every other voter.
pub struct Peers {
    queues: BTreeMap<NodeId, mpsc::Sender<Message>>,
    dropped: Arc<AtomicU64>,
}

impl Peers {
    /// Spawns one sender task per peer (a task the node cannot live without: a dead sender would
    /// cut this node off from its peer for good). `faults.shared_peer_inbox` makes the senders
    /// ignore refused batches (fault injection).
    /// `tls`: this node's TLS, whose certificate authenticates it to its peers and whose peer
    /// CA verifies them (production); without it channels are plaintext (development mode on
    /// loopback, and the simulator, where the sender states its identity in metadata instead).
    pub fn start(
        topology: &Topology,
        faults: &FaultInjection,
        fatal: &FatalHandler,
        tls: Option<&Arc<NodeTls>>,
    ) -> Peers {
        let dropped = Arc::new(AtomicU64::new(0));
        let cluster = topology.cluster_name();
        let identity = format!("member:{}", topology.name(topology.id));
        let mut queues = BTreeMap::new();
        for (&id, addr) in &topology.addresses {
            if id == topology.id {
                continue;
            }
            let (queue, outbox) = mpsc::channel(PEER_QUEUE_MAX);
            queues.insert(id, queue);
            let link = PeerLink {
                peer: id,
                addr: addr.clone(),
                security: tls.and_then(|tls| tls.peer_channel(topology.name(id))),
                identity: identity.clone(),
            };
            runtime::spawn_critical(
                "peer sender",
                fatal.clone(),
                faults.zombie_on_task_panic,
                send_loop(
                    link,
                    cluster.clone(),
                    outbox,
                    Arc::clone(&dropped),
                    faults.shared_peer_inbox,
                ),
            );
        }
        Peers { queues, dropped }
    }

    /// Queues messages for their recipients; drops (and counts) what does not fit.
    pub fn send_all(&self, messages: Vec<Message>) {
        for message in messages {
            match self.queues.get(&message.to) {
                Some(queue) => {
                    if queue.try_send(message).is_err() {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => tracing::warn!(to = message.to, "message for an unknown peer dropped"),
            }
        }
    }
}

/// How to reach one peer.
pub struct PeerLink {
    pub peer: NodeId,
    pub addr: String,
    /// TLS for the channel (its certificate must name the peer), if configured.
    pub security: Option<runtime::ChannelSecurity>,
    /// What this node's certificate proves, as the simulator states it (`member:<name>`).
    pub identity: String,
}

impl PeerLink {
    /// A `RaftService` client for the peer (lazily connected).
    pub fn client(&self) -> Option<RaftServiceClient<tonic::transport::Channel>> {
        let endpoint = match Endpoint::from_shared(format!("http://{}", self.addr)) {
            Ok(endpoint) => endpoint,
            Err(error) => {
                tracing::error!(peer = self.peer, addr = %self.addr, %error, "invalid peer address");
                return None;
            }
        };
        let channel = runtime::channel(endpoint, self.security.clone(), PEER_SEND_TIMEOUT);
        Some(
            RaftServiceClient::new(channel)
                .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
        )
    }

    /// A request to the peer: bounded by `timeout`, carrying this node's identity in
    /// simulation.
    pub fn request<T>(&self, message: T, timeout: Duration) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(timeout);
        runtime::state_simulated_identity(request.metadata_mut(), &self.identity);
        request
    }
}

async fn send_loop(
    link: PeerLink,
    cluster: String,
    mut outbox: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
    ignore_refusals: bool,
) {
    let peer = link.peer;
    let Some(client) = link.client() else {
        return;
    };
    while let Some(first) = outbox.recv().await {
        let mut batch = vec![to_wire(&first)];
        while batch.len() < PEER_BATCH_MAX {
            match outbox.try_recv() {
                Ok(message) => batch.push(to_wire(&message)),
                Err(_) => break,
            }
        }
        if crate::buggify!("reorder_peer_batch") {
            batch.reverse();
        }
        if crate::buggify!("duplicate_peer_batch") {
            let copy = pb::MessageBatch {
                cluster: cluster.clone(),
                messages: batch.clone(),
            };
            let request = link.request(copy, send_deadline(0));
            let _ = runtime::timeout(send_deadline(0), client.clone().send(request)).await;
        }
        let count = batch.len() as u64;
        let batch = pb::MessageBatch {
            cluster: cluster.clone(),
            messages: batch,
        };
        let deadline = send_deadline(prost::Message::encoded_len(&batch));
        let request = link.request(batch, deadline);
        let mut client = client.clone();
        let sent = runtime::timeout(deadline, client.send(request)).await;
        let (reached, accepted) = match sent {
            Ok(Ok(ack)) => (true, u64::from(ack.into_inner().accepted)),
            Ok(Err(status)) if is_refusal(&status) => {
                // The peer refuses this node (its certificate, or its messages): say why, but
                // not for every batch.
                if dropped.load(Ordering::Relaxed).is_power_of_two() {
                    tracing::error!(peer, code = ?status.code(), "peer refused our batch: {}", status.message());
                }
                (true, 0)
            }
            _ => (false, 0),
        };
        // The peer was unreachable, or its inbox was full and it refused the batch (with
        // `ignore_refusals`, the pre-fix behaviour, a refusal counted as delivered). Raft
        // retransmits; back off so an overloaded peer is not hammered.
        let refused = reached && accepted < count && !ignore_refusals;
        if !reached || refused {
            dropped.fetch_add(count - accepted, Ordering::Relaxed);
            tracing::trace!(peer, accepted, count, "peer batch not delivered");
            runtime::sleep(PEER_RETRY_PAUSE).await;
        }
    }
}

fn is_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied | tonic::Code::InvalidArgument
    )
}

/// The inbound side: `RaftService` for this node, and `NodeAdmin` (its status for operators).
#[derive(Clone)]
pub struct RaftApi {
    replica: Replica,
    cluster: String,
    authority: Arc<Authority>,
    /// Shadow traffic, reported by `Status`.
    mirror: Option<Arc<dyn crate::mirror::Mirror>>,
}

impl RaftApi {
    pub fn new(replica: Replica, authority: Arc<Authority>) -> RaftApi {
        let cluster = replica.topology().cluster_name();
        RaftApi {
            replica,
            cluster,
            authority,
            mirror: None,
        }
    }

    /// Reports the node's shadow traffic in `Status`.
    pub fn with_mirror(mut self, mirror: Arc<dyn crate::mirror::Mirror>) -> RaftApi {
        self.mirror = Some(mirror);
        self
    }

    fn check_cluster(&self, cluster: &str) -> Result<(), Status> {
        if cluster != self.cluster {
            return Err(Status::failed_precondition(format!(
                "cluster mismatch: this node belongs to `{}`, the peer to `{cluster}`",
                self.cluster
            )));
        }
        Ok(())
    }

    fn status_response(&self) -> pb::StatusResponse {
        let status = self.replica.status();
        let stats = self.replica.stats();
        let database = self.replica.record().map(|record| {
            let metrics = record.metrics();
            let (pending_mutations, pending_bytes) = self.replica.write_behind_backlog();
            pb::DatabaseStatus {
                breaker: match record.breaker_state() {
                    crate::resilience::BreakerState::Closed => "closed",
                    crate::resilience::BreakerState::Open => "open",
                    crate::resilience::BreakerState::HalfOpen => "half-open",
                }
                .to_string(),
                breaker_opened: metrics.breaker_opened,
                pending_mutations: pending_mutations as u64,
                pending_bytes,
                loads: metrics.loads,
                rows_written: metrics.rows_written,
                failed_attempts: metrics.attempt_failures,
            }
        });
        let watch = self.replica.watch().stats();
        let shadow = self.mirror.as_ref().map(|mirror| {
            let stats = mirror.stats();
            pb::ShadowStatus {
                percent: u32::from(stats.percent),
                mirrored: stats.mirrored,
                dropped: stats.dropped,
                errors: stats.errors,
                compared: stats.compared,
                mismatches: stats.mismatches,
            }
        });
        pb::StatusResponse {
            watch: Some(pb::WatchStatus {
                streams: watch.streams as u64,
                tracked_keys: watch.tracked_keys as u64,
                delivered: watch.delivered,
                resyncs: watch.resyncs,
                too_slow: watch.too_slow,
            }),
            shadow,
            node_id: self.replica.topology().id,
            term: status.term,
            commit_index: status.commit_index,
            last_index: status.last_index,
            leader_id: status.leader_id.unwrap_or(0),
            role: match status.role {
                Some(hyperion_raft::Role::Leader) => "leader",
                Some(hyperion_raft::Role::Candidate) => "candidate",
                Some(hyperion_raft::Role::PreCandidate) => "pre-candidate",
                Some(hyperion_raft::Role::Follower) | None => "follower",
            }
            .to_string(),
            applied_index: status.applied_index,
            entries: stats.entries as u64,
            used_bytes: stats.used_bytes,
            capacity_bytes: stats.capacity_bytes,
            database,
            abstaining: status.abstaining,
            invalid_peer_messages: self.replica.invalid_peer_messages(),
        }
    }
}

#[tonic::async_trait]
impl NodeAdmin for RaftApi {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.authority.authorize(&request, Operation::Admin, &[])?;
        let cluster = request.into_inner().cluster;
        if !cluster.is_empty() {
            self.check_cluster(&cluster)?;
        }
        Ok(Response::new(self.status_response()))
    }
}

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn send(
        &self,
        request: Request<pb::MessageBatch>,
    ) -> Result<Response<pb::SendAck>, Status> {
        let sender = self.authority.raft_sender(&request)?;
        let batch = request.into_inner();
        self.check_cluster(&batch.cluster)?;
        let count = batch.messages.len() as u64;
        let admission = Admission {
            me: self.replica.topology().id,
            sender,
        };
        let faults = self.replica.faults();
        let messages = match admit_batch(faults, admission, batch.messages) {
            Ok(messages) => messages,
            Err(refused) => {
                if !faults.unvalidated_peer_input {
                    self.replica.refused_peer_batch(count, &refused);
                }
                return Err(Status::invalid_argument(refused.to_string()));
            }
        };
        let count = messages.len() as u32;
        let accepted = if self.replica.deliver(messages) {
            count
        } else {
            0
        };
        Ok(Response::new(pb::SendAck { accepted }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.authority.raft_sender(&request)?;
        let cluster = request.into_inner().cluster;
        if !cluster.is_empty() {
            self.check_cluster(&cluster)?;
        }
        Ok(Response::new(self.status_response()))
    }
}
