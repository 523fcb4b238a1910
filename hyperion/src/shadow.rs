//! Shadow traffic: a share of the requests this node serves, mirrored to another cluster
//! (`HYPERION_SHADOW_ADDR`) to check a migration, never at the primary's expense.
//!
//! - **What:** `shadow_traffic_percent` of the keys (0-100, reloadable with the feature flags),
//!   chosen by a seeded hash of the key, so a key is mirrored always or never (its reads and
//!   writes both). Reads (`Get`, the chosen keys of a `BatchGet`) are sent after the primary
//!   answered and compared with its answer (status, and the value of a hit; versions differ
//!   between clusters); applied writes (`Set`, `Delete`) are replayed unconditionally.
//! - **Isolation:** the primary path only enqueues, without waiting: a full queue
//!   ([`QUEUE_REQUESTS_MAX`] requests or [`QUEUE_BYTES_MAX`] bytes) drops the request and counts
//!   it. A background task sends at most [`IN_FLIGHT_MAX`] at once, each with one attempt
//!   bounded by [`SHADOW_DEADLINE`]. A shadow cluster that is down or slow costs drops and
//!   errors, never primary latency.
//! - **Counted:** mirrored, dropped, errors, compared, mismatches ([`MirrorStats`]), in
//!   `/metrics`, `/admin/status` and `hyperion-cli status`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::client::{default_retry_policy, Client, ClientError, ClientSecurity};
use crate::mirror::{Mirror, MirrorStats};
use crate::proto::{CacheStatus, GetResponse};
use crate::resilience::RetryPolicy;

/// Most requests waiting for the shadow cluster.
pub const QUEUE_REQUESTS_MAX: usize = 1_024;
/// Most bytes (keys and written values) waiting for the shadow cluster.
pub const QUEUE_BYTES_MAX: usize = 16 << 20;
/// Most mirrored requests in flight at once.
pub const IN_FLIGHT_MAX: usize = 32;
/// One attempt per mirrored request, bounded by this.
pub const SHADOW_DEADLINE: Duration = Duration::from_millis(500);

/// One request on its way to the shadow cluster.
enum Mirrored {
    Get {
        key: Vec<u8>,
        allow_stale: bool,
        /// What the primary answered: its status, and a digest of a hit's value.
        primary: (i32, u64),
    },
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: u64,
    },
    Delete {
        key: Vec<u8>,
    },
}

impl Mirrored {
    fn bytes(&self) -> usize {
        match self {
            Mirrored::Get { key, .. } | Mirrored::Delete { key } => key.len(),
            Mirrored::Set { key, value, .. } => key.len() + value.len(),
        }
    }
}

#[derive(Default)]
struct Counters {
    mirrored: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    compared: AtomicU64,
    mismatches: AtomicU64,
    queued_bytes: AtomicUsize,
}

/// The shadow-traffic mirror of one node.
pub struct Shadow {
    percent: AtomicU8,
    seed: u64,
    queue: mpsc::Sender<Mirrored>,
    counters: Arc<Counters>,
}

fn digest(seed: u64, bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    seed.hash(&mut hasher);
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn answer_digest(answer: &GetResponse) -> (i32, u64) {
    let value = if answer.status == CacheStatus::Hit as i32 {
        digest(0, &answer.value)
    } else {
        0
    };
    (answer.status, value)
}

impl Shadow {
    /// Mirrors to the cluster at `addrs` (as `HYPERION_SHADOW_ADDR` lists it); starts the
    /// sending task.
    pub fn start(
        addrs: &str,
        security: ClientSecurity,
        percent: u8,
    ) -> Result<Arc<Shadow>, ClientError> {
        let client = Client::secured(addrs, security)?
            .with_call_deadline(SHADOW_DEADLINE)
            .with_retry(RetryPolicy {
                max_attempts: 1,
                max_total: SHADOW_DEADLINE,
                ..default_retry_policy()
            });
        let (queue, requests) = mpsc::channel(QUEUE_REQUESTS_MAX);
        let counters = Arc::new(Counters::default());
        crate::runtime::spawn(send_all(requests, client, Arc::clone(&counters)));
        Ok(Arc::new(Shadow {
            percent: AtomicU8::new(percent.min(100)),
            // Every node of the primary cluster draws the same keys for the same shadow.
            seed: digest(0x5eed, addrs.as_bytes()),
            queue,
            counters,
        }))
    }

    /// Whether `key` is mirrored at the current share: stable per key.
    pub fn chosen(&self, key: &[u8]) -> bool {
        let percent = u64::from(self.percent.load(Ordering::Relaxed));
        percent > 0 && digest(self.seed, key) % 100 < percent
    }

    fn enqueue(&self, request: Mirrored) {
        let bytes = request.bytes();
        let queued = self
            .counters
            .queued_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        if queued + bytes > QUEUE_BYTES_MAX || self.queue.try_send(request).is_err() {
            self.counters
                .queued_bytes
                .fetch_sub(bytes, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counters.mirrored.fetch_add(1, Ordering::Relaxed);
    }
}

impl Mirror for Shadow {
    fn wants(&self, key: &[u8]) -> bool {
        self.chosen(key)
    }

    fn get(&self, key: &[u8], allow_stale: bool, answer: &GetResponse) {
        if self.chosen(key) {
            self.enqueue(Mirrored::Get {
                key: key.to_vec(),
                allow_stale,
                primary: answer_digest(answer),
            });
        }
    }

    fn set(&self, key: &[u8], value: &[u8], ttl_ms: u64) {
        if self.chosen(key) {
            self.enqueue(Mirrored::Set {
                key: key.to_vec(),
                value: value.to_vec(),
                ttl_ms,
            });
        }
    }

    fn delete(&self, key: &[u8]) {
        if self.chosen(key) {
            self.enqueue(Mirrored::Delete { key: key.to_vec() });
        }
    }

    fn set_percent(&self, percent: u8) {
        self.percent.store(percent.min(100), Ordering::Relaxed);
    }

    fn stats(&self) -> MirrorStats {
        let c = &self.counters;
        MirrorStats {
            percent: self.percent.load(Ordering::Relaxed),
            mirrored: c.mirrored.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            compared: c.compared.load(Ordering::Relaxed),
            mismatches: c.mismatches.load(Ordering::Relaxed),
        }
    }
}

/// Sends the queued requests, [`IN_FLIGHT_MAX`] at a time, until the node drops its mirror.
async fn send_all(requests: mpsc::Receiver<Mirrored>, client: Client, counters: Arc<Counters>) {
    let requests = crate::runtime::receiver_stream(requests);
    requests
        .for_each_concurrent(IN_FLIGHT_MAX, |request| {
            let client = &client;
            let counters = &counters;
            async move {
                let bytes = request.bytes();
                send(client, counters, request).await;
                counters.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
            }
        })
        .await;
}

async fn send(client: &Client, counters: &Counters, request: Mirrored) {
    let failed = match request {
        Mirrored::Get {
            key,
            allow_stale,
            primary,
        } => match client.get(&key, allow_stale).await {
            Ok(answer) => {
                counters.compared.fetch_add(1, Ordering::Relaxed);
                if answer_digest(&answer) != primary {
                    counters.mismatches.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
            Err(_) => true,
        },
        Mirrored::Set { key, value, ttl_ms } => client.set(&key, &value, ttl_ms, 0).await.is_err(),
        Mirrored::Delete { key } => client.delete(&key, 0).await.is_err(),
    };
    if failed {
        counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_is_stable_per_key_and_follows_the_share() {
        let (queue, _requests) = mpsc::channel(1);
        let shadow = Shadow {
            percent: AtomicU8::new(30),
            seed: 7,
            queue,
            counters: Arc::default(),
        };
        let keys: Vec<Vec<u8>> = (0..10_000)
            .map(|i| format!("key{i}").into_bytes())
            .collect();
        let chosen: Vec<bool> = keys.iter().map(|k| shadow.chosen(k)).collect();
        assert_eq!(
            chosen,
            keys.iter().map(|k| shadow.chosen(k)).collect::<Vec<_>>()
        );
        let share = chosen.iter().filter(|c| **c).count();
        assert!((2_700..3_300).contains(&share), "{share} of 10000 at 30 %");
        shadow.set_percent(0);
        assert!(keys.iter().all(|k| !shadow.chosen(k)));
        shadow.set_percent(100);
        assert!(keys.iter().all(|k| shadow.chosen(k)));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (queue, _requests) = mpsc::channel(2);
        let shadow = Shadow {
            percent: AtomicU8::new(100),
            seed: 7,
            queue,
            counters: Arc::default(),
        };
        for i in 0..5u8 {
            shadow.delete(&[i]);
        }
        let stats = shadow.stats();
        assert_eq!((stats.mirrored, stats.dropped), (2, 3));
        // A write too large for the byte bound is dropped too.
        let (queue, _requests) = mpsc::channel(8);
        let big = Shadow { queue, ..shadow };
        big.set(b"k", &vec![0; QUEUE_BYTES_MAX], 0);
        assert_eq!(big.stats().dropped, 4);
    }
}
