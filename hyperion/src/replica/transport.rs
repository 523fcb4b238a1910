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
use super::types::Topology;
use super::wire::{from_wire, to_wire};
use crate::faults::FaultInjection;
use crate::raft_proto as pb;
use crate::raft_proto::raft_service_client::RaftServiceClient;
use crate::raft_proto::raft_service_server::RaftService;
use crate::runtime::{self, FatalHandler};

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 1024;
/// Most messages sent in one `Send` call.
pub const PEER_BATCH_MAX: usize = 128;
/// Deadline of one `Send` call: longer than a heartbeat so a slow link still delivers, short
/// enough that a dead peer does not hold its queue for long.
pub const PEER_SEND_TIMEOUT: Duration = Duration::from_millis(500);
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
    pub fn start(topology: &Topology, faults: &FaultInjection, fatal: &FatalHandler) -> Peers {
        let dropped = Arc::new(AtomicU64::new(0));
        let cluster = topology.cluster_name();
        let mut queues = BTreeMap::new();
        for (&id, addr) in &topology.addresses {
            if id == topology.id {
                continue;
            }
            let (queue, outbox) = mpsc::channel(PEER_QUEUE_MAX);
            queues.insert(id, queue);
            runtime::spawn_critical(
                "peer sender",
                fatal.clone(),
                faults.zombie_on_task_panic,
                send_loop(
                    id,
                    addr.clone(),
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

async fn send_loop(
    peer: NodeId,
    addr: String,
    cluster: String,
    mut outbox: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
    ignore_refusals: bool,
) {
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(endpoint) => endpoint.connect_timeout(PEER_SEND_TIMEOUT),
        Err(error) => {
            tracing::error!(peer, %addr, %error, "invalid peer address; no messages will reach it");
            return;
        }
    };
    let client = RaftServiceClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
    while let Some(first) = outbox.recv().await {
        let mut batch = vec![to_wire(&first)];
        while batch.len() < PEER_BATCH_MAX {
            match outbox.try_recv() {
                Ok(message) => batch.push(to_wire(&message)),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let mut request = Request::new(pb::MessageBatch {
            cluster: cluster.clone(),
            messages: batch,
        });
        request.set_timeout(PEER_SEND_TIMEOUT);
        let mut client = client.clone();
        let sent = runtime::timeout(PEER_SEND_TIMEOUT, client.send(request)).await;
        let (reached, accepted) = match sent {
            Ok(Ok(ack)) => (true, u64::from(ack.into_inner().accepted)),
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

/// The inbound side: `RaftService` for this node.
#[derive(Clone)]
pub struct RaftApi {
    replica: Replica,
    cluster: String,
}

impl RaftApi {
    pub fn new(replica: Replica) -> RaftApi {
        let cluster = replica.topology().cluster_name();
        RaftApi { replica, cluster }
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
}

#[tonic::async_trait]
impl RaftService for RaftApi {
    async fn send(
        &self,
        request: Request<pb::MessageBatch>,
    ) -> Result<Response<pb::SendAck>, Status> {
        let batch = request.into_inner();
        self.check_cluster(&batch.cluster)?;
        let me = self.replica.topology().id;
        let mut messages = Vec::with_capacity(batch.messages.len());
        for message in batch.messages {
            let message =
                from_wire(message).map_err(|e| Status::invalid_argument(e.to_string()))?;
            if message.to != me {
                return Err(Status::invalid_argument(format!(
                    "message for node {} delivered to node {me}",
                    message.to
                )));
            }
            messages.push(message);
        }
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
        let cluster = request.into_inner().cluster;
        if !cluster.is_empty() {
            self.check_cluster(&cluster)?;
        }
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
        Ok(Response::new(pb::StatusResponse {
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
        }))
    }
}
