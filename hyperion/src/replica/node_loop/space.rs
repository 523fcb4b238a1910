//! A full device (ENOSPC) is not a failed one: the node refuses client writes and goes on.
//!
//! Every node holds a reserve file (`HYPERION_DISK_RESERVE_MB`) it can give back. When a write
//! of the Raft state fails for lack of space (nothing stored was damaged: the storage layer
//! leaves the WAL and the snapshot as they were), the node gives the reserve back, writes again,
//! and from then on refuses client writes (`ReplicaError::OutOfSpace`, `RESOURCE_EXHAUSTED` to
//! clients, nothing applied), hands its leadership to a follower if it led, and goes on with what
//! it cannot refuse: its peers' entries, votes, the leader's no-ops and expirations, in the space
//! the reserve freed. Every [`RESERVE_RETRY_MS`] it tries to take the reserve back; once it can,
//! it accepts writes again. A write that fails for lack of space even after the reserve was given
//! back, or any other storage failure, stops the node (exit 74, one line).

use std::sync::atomic::Ordering;

use hyperion_raft::storage::StorageError;
use hyperion_raft::{Durable, Ready, Role};

use super::{storage_failed, NodeLoop};

/// How often a node out of space tries to take its reserve back.
pub(in crate::replica) const RESERVE_RETRY_MS: u64 = 1_000;

/// The node's standing with its device.
#[derive(Debug, Clone, Copy, Default)]
pub(in crate::replica) struct Space {
    /// The reserve file is on the device.
    pub reserve_held: bool,
    /// Client writes are refused until the reserve could be taken back.
    pub out_of_space: bool,
    /// When to try taking the reserve back next (monotonic ms).
    pub next_try_ms: u64,
}

impl NodeLoop {
    /// Persists `ready`; see the module docs for a write refused for lack of space.
    pub(super) fn persist_ready(&mut self, ready: &Ready) -> Durable {
        match self.storage.persist(ready, self.raft_now_ms) {
            Ok(durable) => durable,
            Err(error) if error.is_out_of_space() => {
                self.run_out_of_space(&error);
                match self.storage.persist(ready, self.raft_now_ms) {
                    Ok(durable) => durable,
                    Err(error) if error.is_out_of_space() => storage_failed(
                        &self.shared,
                        &self.fatal,
                        &format!(
                            "{error}, even after the {} MiB reserve was given back: free space in \
                             HYPERION_DATA_DIR (or raise HYPERION_DISK_RESERVE_MB) and restart",
                            self.config.disk_reserve_bytes >> 20
                        ),
                    ),
                    Err(error) => storage_failed(&self.shared, &self.fatal, &error),
                }
            }
            Err(error) => storage_failed(&self.shared, &self.fatal, &error),
        }
    }

    /// Gives the reserve back and begins refusing client writes.
    fn run_out_of_space(&mut self, error: &StorageError) {
        if !self.space.out_of_space {
            crate::reachable!("disk_out_of_space");
            tracing::error!(
                %error,
                "HYPERION_DATA_DIR is out of space: client writes are refused until space is \
                 freed (reads go on); giving back the reserve to carry on"
            );
            self.space.out_of_space = true;
            self.shared.out_of_space.store(true, Ordering::Relaxed);
            if self.raft.role() == Role::Leader {
                if let Some(to) = self.raft.most_caught_up_follower() {
                    if self.raft.transfer_leader(to).is_ok() {
                        tracing::warn!(to, "out of space: handing leadership to a follower");
                    }
                }
            }
        }
        if self.space.reserve_held {
            if let Err(error) = self.storage.release_reserve() {
                storage_failed(&self.shared, &self.fatal, &error);
            }
            self.space.reserve_held = false;
        }
        self.space.next_try_ms = self.raft_now_ms + RESERVE_RETRY_MS;
    }

    /// While out of space, now and then: takes the reserve back, and accepts writes again once
    /// that worked.
    pub(super) fn retry_reserve(&mut self) {
        if !self.space.out_of_space || self.raft_now_ms < self.space.next_try_ms {
            return;
        }
        match self.storage.reserve(self.config.disk_reserve_bytes) {
            Ok(()) => {
                tracing::info!("HYPERION_DATA_DIR has space again: client writes are accepted");
                self.space = super::space::Space {
                    reserve_held: self.config.disk_reserve_bytes > 0,
                    out_of_space: false,
                    next_try_ms: 0,
                };
                self.shared.out_of_space.store(false, Ordering::Relaxed);
            }
            Err(error) if error.is_out_of_space() => {
                self.space.next_try_ms = self.raft_now_ms + RESERVE_RETRY_MS;
            }
            Err(error) => storage_failed(&self.shared, &self.fatal, &error),
        }
    }
}
