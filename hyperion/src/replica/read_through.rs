//! Read-through: a linearizable `Get` that misses on the leader may load the key from the
//! system of record, answer with it, and fill it into the cache through the log (`Fill`), never
//! over a newer version. A fill is refused at apply when anything newer about the key is known
//! (see [`super::write_behind::WriteBehind::fill_allowed`]): a pending mutation (the database is
//! behind), an entry already present, or a delete, expiry or eviction applied after the fill's
//! read point. Removals are pruned below a replicated *fill horizon*; fills read before the
//! horizon are refused, so pruning never lets a stale fill through. This node's fills in flight
//! pin the horizon it proposes ([`Replica::fill_horizon`]).
//!
//! Concurrent misses of a key share one load ([`crate::single_flight`]): a miss joins a load only
//! if the load's read point covers its own, or nothing about the key changed since the load's read
//! point. A load runs to completion on its own (bounded by the database client's timeouts and
//! retries) and stays joinable until its fill is applied. Keys the database does not have are
//! remembered for a short while ([`super::negative_cache::NegativeCache`]).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::handle::{lock, Replica, Shared};
use super::types::{ReadAnswer, ReadOutcome, WriteRequest};
use crate::db::SystemOfRecord;
use crate::runtime;
use crate::single_flight::KeepAlive;

impl Replica {
    /// After a linearizable miss on the leader: loads `key` from the system of record and fills
    /// it through the log (see the module docs). Returns the answer to give, or `None` to keep the
    /// miss. The caller bounds the time; the load itself runs to completion (bounded by the
    /// database client), and later misses join it while it is still valid for them.
    pub async fn read_through(&self, key: &[u8]) -> Option<ReadAnswer> {
        let record = self.shared.record.clone()?;
        let read_at_index = {
            let machine = self.machine();
            if machine.write_behind.is_pending(key) {
                // The database is behind for this key: the cache's answer stands.
                return None;
            }
            machine.applied_index
        };
        if self.shared.faults.no_read_through_single_flight {
            return self
                .load_and_fill(record, key.to_vec(), read_at_index, None)
                .await;
        }
        let replica = self.clone();
        let owned_key = key.to_vec();
        let join_stale_loads = self.shared.faults.join_stale_loads;
        let shared = Arc::clone(&self.shared);
        // A flight read at an older point is still good if nothing about the key changed
        // since: no removal after it, nothing pending (the same rule its fill must pass).
        let unchanged_since = move |flight_read_point: u64| {
            lock(&shared.machine)
                .write_behind
                .fill_allowed(key, flight_read_point)
        };
        let (flight, joined) = self.shared.read_throughs.run_if(
            &owned_key.clone(),
            read_at_index,
            unchanged_since,
            move |keeper| {
                let load = async move {
                    let keep = keeper.keep();
                    replica
                        .load_and_fill(record, owned_key, read_at_index, keep)
                        .await
                };
                if join_stale_loads {
                    // The pre-fix behaviour: the load is driven by its waiters only.
                    return load.boxed();
                }
                // The load runs to completion on its own (bounded by the database client's
                // timeouts and retries), so a miss that gave up and retries can join it; it
                // stays joinable until its fill is applied.
                let load = runtime::spawn(load);
                async move { load.await.unwrap_or(None) }.boxed()
            },
        );
        crate::sometimes!(
            "read_through_joined",
            joined == crate::single_flight::Joined::Joined
        );
        flight.await
    }

    /// Remembers, for the negative-cache lifetime, that the database has no live row for `key`.
    fn remember_absent(&self, key: &[u8]) {
        if self.shared.negative_cache_ms > 0 {
            let until = runtime::now() + Duration::from_millis(self.shared.negative_cache_ms);
            lock(&self.shared.negative).remember(key, until);
        }
    }

    /// Registers a fill's read point until the returned guard is dropped, so the fill horizon
    /// cannot pass it while the load or the fill is in flight.
    fn register_fill(&self, read_at_index: u64) -> FillRegistration {
        let id = self
            .shared
            .next_fill_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.shared.fills_in_flight).insert(id, read_at_index);
        FillRegistration {
            shared: Arc::clone(&self.shared),
            id,
        }
    }

    async fn load_and_fill(
        &self,
        record: SystemOfRecord,
        key: Vec<u8>,
        read_at_index: u64,
        flight: Option<KeepAlive<Option<ReadAnswer>>>,
    ) -> Option<ReadAnswer> {
        if lock(&self.shared.negative).remembers(&key, runtime::now()) {
            return None;
        }
        let registration = self.register_fill(read_at_index);
        match record.load(&key, read_at_index).await {
            Ok(Some(mut entry)) => {
                // The cached copy's TTL starts again now: the system of record is authoritative
                // and a TTL bounds how long the cache keeps a copy.
                let now_ms = self.shared.cluster_now_ms(&self.machine());
                entry.created_at_ms = now_ms;
                // The database held this key's state as of some point after `read_at_index`
                // (nothing about the key was pending then, flushes only move forward, and the
                // query was issued after it: single-flight never hands out an older load),
                // which lies within every joined read: answering it is linearizable. The fill
                // into the cache proceeds on its own, checked at apply against anything newer.
                let response = ReadAnswer {
                    outcome: ReadOutcome::Hit {
                        value: entry.value.clone(),
                        version: entry.version,
                        is_stale: false,
                        ttl_remaining_ms: if self.shared.client_caching {
                            entry.ttl_ms
                        } else {
                            0
                        },
                    },
                    note: None,
                };
                let replica = self.clone();
                runtime::spawn(async move {
                    let _registration = registration;
                    let _flight = flight;
                    let _ = replica
                        .write(WriteRequest::Fill {
                            entry,
                            read_at_index,
                        })
                        .await;
                });
                Some(response)
            }
            Ok(None) => {
                self.remember_absent(&key);
                None
            }
            Err(error) => {
                tracing::debug!(%error, "read-through failed; answering MISS");
                let mut response = self.read_local(&key, false);
                response.note = Some(format!("system of record not consulted: {error}"));
                Some(response)
            }
        }
    }

    /// The fill horizon this leader may propose: no fill of its own that is still in flight
    /// read below it, and nothing is above the applied index.
    pub(super) fn fill_horizon(&self) -> u64 {
        let applied = self.machine().applied_index;
        lock(&self.shared.fills_in_flight)
            .values()
            .copied()
            .min()
            .unwrap_or(applied)
            .min(applied)
    }
}

/// Owns one entry of `fills_in_flight`: removed when the load or the fill it guards ends, in
/// whatever way (a miss that gave up drops it with its flight).
struct FillRegistration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for FillRegistration {
    fn drop(&mut self) {
        lock(&self.shared.fills_in_flight).remove(&self.id);
    }
}
