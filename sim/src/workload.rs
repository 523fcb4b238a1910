//! Client workloads that record every operation into a [`HistoryRecorder`] for the
//! linearizability checker.
//!
//! Each workload client runs on its own simulated client node. *Cluster* clients use the client
//! library as applications do (leader discovery, retries of writes that certainly did not
//! apply); *pinned* clients talk to one server only and never retry, so a node that wrongly
//! believes it leads is asked directly (how the split-brain incident surfaced).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyperion::api::{CURRENT_VERSION_METADATA, NOT_APPLIED_METADATA};
use hyperion::client::{
    certainly_not_applied, default_retry_policy, CachingClient, Client, NearCacheConfig,
};
use hyperion::proto::CacheStatus;
use hyperion::resilience::RetryPolicy;
use hyperion::runtime::Instant;
use hyperion_checker::{
    BoundedStaleness, ClientId, History, HistoryRecorder, Op, OpId, OpResult, Outcome,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tonic::{Code, Status};

use crate::cluster::{client_node, SimCluster};

/// Most operations one workload records (bounds memory and checking time).
pub const WORKLOAD_OPS_MAX: usize = 200_000;

/// What the clients do.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Clients using the cluster client (leader discovery, retries).
    pub cluster_clients: usize,
    /// Clients pinned to one server each (round-robin), without retries.
    pub pinned_clients: usize,
    /// Cluster clients with a near cache: a read is answered by the near cache when it may
    /// (recorded as a stale read, judged for bounded staleness), else by the cluster.
    pub near_cache_clients: usize,
    /// The near caches' staleness bound; they sync every fifth of it.
    pub near_cache_bound: Duration,
    /// Fault injection (`near_cache_ignores_resync`): the near caches ignore RESYNC.
    pub near_cache_ignores_resync: bool,
    /// Distinct keys: few keys mean contention, which is what finds bugs.
    pub keys: usize,
    /// How long clients keep issuing operations (simulated time).
    pub duration: Duration,
    /// Percent of operations that are writes (Set/Delete/CAS); the rest are reads.
    pub write_percent: u32,
    /// Percent of writes that are deletes.
    pub delete_percent: u32,
    /// Percent of writes that are compare-and-set.
    pub cas_percent: u32,
    /// Percent of reads that allow stale data.
    pub stale_read_percent: u32,
    /// Percent of Sets with a TTL, and its range in ms.
    pub ttl_percent: u32,
    pub ttl_ms: (u64, u64),
    /// Think time between a client's operations, in ms.
    pub think_ms: (u64, u64),
    /// Per-attempt deadline of every client.
    pub deadline: Duration,
    /// Retry policy of the cluster clients; `None` = the client library's default. Pinned
    /// clients never retry.
    pub retry: Option<RetryPolicy>,
    /// Size range of written values in bytes (a unique prefix padded to a drawn length; a size
    /// below the prefix's length leaves the prefix alone).
    pub value_bytes: (usize, usize),
    /// Keys `key0..` written before the workload starts (not recorded), all with
    /// `preload_ttl_ms` (0 = no expiry): the 2024-10-15 herd's 50,000 entries that expire
    /// together.
    pub preload_keys: usize,
    pub preload_ttl_ms: u64,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            cluster_clients: 3,
            pinned_clients: 3,
            near_cache_clients: 0,
            near_cache_bound: Duration::from_millis(500),
            near_cache_ignores_resync: false,
            keys: 6,
            duration: Duration::from_secs(12),
            write_percent: 40,
            delete_percent: 10,
            cas_percent: 20,
            stale_read_percent: 10,
            ttl_percent: 20,
            ttl_ms: (300, 3_000),
            think_ms: (5, 40),
            deadline: Duration::from_millis(800),
            retry: None,
            value_bytes: (0, 0),
            preload_keys: 0,
            preload_ttl_ms: 0,
        }
    }
}

/// Shared recorder plus the simulation's time origin.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<HistoryRecorder>>,
    origin: Instant,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            inner: Arc::new(Mutex::new(HistoryRecorder::with_max_ops(WORKLOAD_OPS_MAX))),
            origin: hyperion::runtime::now(),
        }
    }

    /// Simulated milliseconds since the workload started.
    pub fn now_ms(&self) -> u64 {
        hyperion::runtime::now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HistoryRecorder> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn invoke(&self, client: ClientId, op: Op) -> Option<OpId> {
        let now = self.now_ms();
        self.lock().invoke(client, op, now).ok()
    }

    fn complete(&self, id: OpId, outcome: Outcome) {
        let now = self.now_ms();
        self.lock()
            .complete(id, outcome, now)
            .expect("a recorded operation completes once, after it started");
    }

    /// The history so far.
    pub fn history(&self) -> History {
        self.lock().history().clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// How a failed call is recorded: `Fail` if it certainly did not apply, else `Unknown`.
fn failure_outcome(status: &Status) -> Outcome {
    match status.code() {
        Code::FailedPrecondition => {
            let current = status
                .metadata()
                .get(CURRENT_VERSION_METADATA)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            match current {
                Some(current_version) => Outcome::Ok(OpResult::CasFailed { current_version }),
                None => Outcome::Unknown,
            }
        }
        Code::InvalidArgument | Code::ResourceExhausted => Outcome::Fail,
        Code::Unavailable
            if status.metadata().get(NOT_APPLIED_METADATA).is_some()
                || certainly_not_applied(status) =>
        {
            Outcome::Fail
        }
        _ => Outcome::Unknown,
    }
}

struct WorkloadClient {
    id: ClientId,
    client: Client,
    /// Set for near-cache clients: reads try it first, writes go through it.
    near: Option<CachingClient>,
    spec: WorkloadSpec,
    recorder: Recorder,
    rng: ChaCha8Rng,
    /// Last version this client saw per key (the basis of its compare-and-sets).
    seen: Vec<u64>,
    seq: u64,
}

impl WorkloadClient {
    fn key(&mut self) -> (usize, Vec<u8>) {
        let index = self.rng.random_range(0..self.spec.keys);
        (index, format!("key{index}").into_bytes())
    }

    async fn step(&mut self) {
        let (index, key) = self.key();
        if self.rng.random_range(0..100) < self.spec.write_percent {
            self.write(index, key).await;
        } else {
            self.read(index, key).await;
        }
    }

    async fn read(&mut self, index: usize, key: Vec<u8>) {
        if let Some(near) = &self.near {
            if let Some(response) = near.lookup(&key) {
                // Answered from memory at once: a stale read, judged for bounded staleness.
                let op = Op::Get {
                    key,
                    allow_stale: true,
                };
                if let Some(id) = self.recorder.invoke(self.id, op) {
                    self.recorder.complete(
                        id,
                        Outcome::Ok(OpResult::Hit {
                            value: response.value,
                            version: response.version,
                            is_stale: false,
                            ttl_remaining_ms: Some(response.ttl_remaining_ms),
                        }),
                    );
                }
                return;
            }
        }
        let allow_stale =
            self.near.is_none() && self.rng.random_range(0..100) < self.spec.stale_read_percent;
        let Some(id) = self.recorder.invoke(
            self.id,
            Op::Get {
                key: key.clone(),
                allow_stale,
            },
        ) else {
            return;
        };
        let answer = match &self.near {
            Some(near) => near.get_from_cluster(&key).await,
            None => self.client.get(&key, allow_stale).await,
        };
        let outcome = match answer {
            Ok(response) => match CacheStatus::try_from(response.status) {
                Ok(CacheStatus::Hit) => {
                    if !allow_stale {
                        self.seen[index] = response.version;
                    }
                    Outcome::Ok(OpResult::Hit {
                        value: response.value,
                        version: response.version,
                        is_stale: response.is_stale,
                        ttl_remaining_ms: Some(response.ttl_remaining_ms),
                    })
                }
                Ok(CacheStatus::Miss) => Outcome::Ok(OpResult::Miss),
                _ => Outcome::Fail,
            },
            Err(status) => failure_outcome(&status),
        };
        self.recorder.complete(id, outcome);
    }

    async fn write(&mut self, index: usize, key: Vec<u8>) {
        self.seq += 1;
        let roll = self.rng.random_range(0..100);
        let expected_version = if self.rng.random_range(0..100) < self.spec.cas_percent {
            self.seen[index]
        } else {
            0
        };
        if roll < self.spec.delete_percent {
            let op = Op::Delete {
                key: key.clone(),
                expected_version,
            };
            let Some(id) = self.recorder.invoke(self.id, op) else {
                return;
            };
            let answer = match &self.near {
                Some(near) => near.delete(&key, expected_version).await,
                None => self.client.delete(&key, expected_version).await,
            };
            let outcome = match answer {
                Ok(response) => Outcome::Ok(OpResult::Deleted {
                    existed: response.existed,
                    version: response.version,
                }),
                Err(status) => failure_outcome(&status),
            };
            self.recorder.complete(id, outcome);
            return;
        }
        let mut value = format!("c{}-{}", self.id.0, self.seq).into_bytes();
        let (min_bytes, max_bytes) = self.spec.value_bytes;
        if max_bytes > value.len() {
            let size = self
                .rng
                .random_range(min_bytes.max(value.len())..=max_bytes);
            value.resize(size, b'.');
        }
        let ttl_ms = if self.rng.random_range(0..100) < self.spec.ttl_percent {
            self.rng
                .random_range(self.spec.ttl_ms.0..=self.spec.ttl_ms.1)
        } else {
            0
        };
        let op = Op::Set {
            key: key.clone(),
            value: value.clone(),
            ttl_ms,
            expected_version,
        };
        let Some(id) = self.recorder.invoke(self.id, op) else {
            return;
        };
        let answer = match &self.near {
            Some(near) => near.set(&key, &value, ttl_ms, expected_version).await,
            None => {
                self.client
                    .set(&key, &value, ttl_ms, expected_version)
                    .await
            }
        };
        let outcome = match answer {
            Ok(response) => {
                self.seen[index] = response.version;
                Outcome::Ok(OpResult::Written {
                    version: response.version,
                    ttl_ms: response.ttl_ms,
                })
            }
            Err(status) => failure_outcome(&status),
        };
        self.recorder.complete(id, outcome);
    }
}

/// Runs the workload against `cluster` and returns when every client has finished (each stops
/// issuing after `spec.duration` and finishes its last call within its deadline and retries).
/// Preload writes proposed to the leader at once (group commit batches them).
const PRELOAD_CONCURRENCY: usize = 2_000;

/// Writes `spec.preload_keys` keys before the workload, recording them in the history like any
/// write (so reads of them are checked). They go through the leader's log like every write, but
/// in-process rather than over simulated gRPC, whose server accepts one request at a time (a
/// simulator limit that would stretch 50,000 writes over minutes of simulated time, so they would
/// not expire together).
pub async fn preload(cluster: &SimCluster, spec: &WorkloadSpec, recorder: &Recorder) {
    use hyperion::replica::{WriteOutcome, WriteRequest};
    let keys: Vec<usize> = (0..spec.preload_keys).collect();
    for chunk in keys.chunks(PRELOAD_CONCURRENCY) {
        let writes = chunk.iter().map(|&i| async move {
            let key = format!("key{i}").into_bytes();
            let value = b"preloaded".to_vec();
            let op = Op::Set {
                key: key.clone(),
                value: value.clone(),
                ttl_ms: spec.preload_ttl_ms,
                expected_version: 0,
            };
            let Some(id) = recorder.invoke(ClientId(1_000), op) else {
                return;
            };
            for _ in 0..100 {
                let Some(replica) = cluster.leader().and_then(|l| cluster.servers[l].replica())
                else {
                    madsim::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let request = WriteRequest::Set {
                    key: key.clone(),
                    value: value.clone(),
                    ttl_ms: spec.preload_ttl_ms,
                    expected_version: 0,
                };
                match replica.write(request).await {
                    Ok(WriteOutcome::Set { version, ttl_ms }) => {
                        let written = OpResult::Written { version, ttl_ms };
                        recorder.complete(id, Outcome::Ok(written));
                        return;
                    }
                    Err(hyperion::replica::ReplicaError::NotLeader { .. })
                    | Err(hyperion::replica::ReplicaError::RecordBehind(_))
                    | Err(hyperion::replica::ReplicaError::Overloaded) => {
                        madsim::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(_) | Ok(_) => break,
                }
            }
            recorder.complete(id, Outcome::Unknown);
        });
        futures::future::join_all(writes).await;
    }
}

/// The bounded-staleness rule for the near-cache clients' reads, if there are any: client ids
/// follow the cluster and pinned clients'.
pub fn near_cache_staleness(spec: &WorkloadSpec) -> Option<BoundedStaleness> {
    let first = spec.cluster_clients + spec.pinned_clients;
    (spec.near_cache_clients > 0).then(|| BoundedStaleness {
        bound_ms: spec.near_cache_bound.as_millis() as u64,
        clients: (first..first + spec.near_cache_clients)
            .map(|c| ClientId(c as u64 + 1))
            .collect(),
    })
}

/// The near cache of a workload client: the scenario's bound, syncs every fifth of it.
fn near_cache_config(spec: &WorkloadSpec) -> NearCacheConfig {
    NearCacheConfig {
        staleness_bound: spec.near_cache_bound,
        sync_interval: spec.near_cache_bound / 5,
        ignore_resync: spec.near_cache_ignores_resync,
        ..NearCacheConfig::default()
    }
}

pub async fn run(cluster: &SimCluster, spec: &WorkloadSpec, recorder: &Recorder, seed: u64) {
    let total = spec.cluster_clients + spec.pinned_clients + spec.near_cache_clients;
    let near_from = spec.cluster_clients + spec.pinned_clients;
    let mut tasks = Vec::with_capacity(total);
    for c in 0..total {
        let client = if c < spec.cluster_clients || c >= near_from {
            match spec.retry {
                Some(policy) => cluster.client().with_retry(policy),
                None => cluster.client(),
            }
        } else {
            let server = (c - spec.cluster_clients) % cluster.servers.len();
            cluster.servers[server]
                .client()
                .pinned()
                .with_breaker(None)
                .with_retry(RetryPolicy {
                    max_attempts: 1,
                    ..default_retry_policy()
                })
        }
        .with_deadline(spec.deadline);
        let mut worker = WorkloadClient {
            id: ClientId(c as u64 + 1),
            client,
            spec: spec.clone(),
            recorder: recorder.clone(),
            rng: ChaCha8Rng::seed_from_u64(
                seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            seen: vec![0; spec.keys],
            seq: 0,
            near: None,
        };
        let duration = spec.duration;
        let near = (c >= near_from).then(|| near_cache_config(spec));
        tasks.push(client_node(c).spawn(async move {
            if let Some(config) = near {
                // Started on the client's own node: its Watch stream is that node's.
                let caching = worker
                    .client
                    .clone()
                    .with_near_cache(config)
                    .expect("the workload's near cache configuration is valid");
                worker.near = Some(caching);
            }
            let started = hyperion::runtime::now();
            while started.elapsed() < duration {
                worker.step().await;
                let think = worker
                    .rng
                    .random_range(worker.spec.think_ms.0..=worker.spec.think_ms.1);
                madsim::time::sleep(Duration::from_millis(think)).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("workload client finished");
    }
}
