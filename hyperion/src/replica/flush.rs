//! The leader's flush loop: writes the oldest pending mutations of the replicated write-behind
//! backlog ([`super::write_behind`]) to the system of record, and proposes what was stored.

use hyperion_raft::Role;

use super::handle::Replica;
use super::types::WriteRequest;
use super::write_behind::FLUSH_INTERVAL;
use crate::db::{Mutation, SystemOfRecord};
use crate::runtime;

/// The leader's write-behind: stores the oldest pending mutations in batches and proposes what
/// was stored; first learns the version floor of a cluster that started empty.
pub(super) async fn flush_loop(replica: Replica, record: SystemOfRecord) {
    loop {
        runtime::sleep(FLUSH_INTERVAL).await;
        if replica.status().role != Some(Role::Leader) {
            continue;
        }
        let (floor_known, batch, removals, horizon) = {
            let machine = replica.machine();
            (
                machine.write_behind.version_floor_known(),
                machine.write_behind.oldest(crate::db::WRITE_BATCH_MAX),
                machine.write_behind.removed_count(),
                machine.write_behind.fill_horizon(),
            )
        };
        if !floor_known {
            match record.max_version().await {
                Ok(version) => {
                    let _ = replica.write(WriteRequest::VersionFloor { version }).await;
                }
                Err(error) => tracing::warn!(%error, "cannot read the database's version floor"),
            }
            continue;
        }
        if batch.is_empty() {
            // Nothing to write, but removals are remembered until the fill horizon passes them:
            // move it on, so that memory is bounded even when writes stop.
            let fill_horizon = replica.fill_horizon();
            if removals > 0 && fill_horizon > horizon {
                let _ = replica
                    .write(WriteRequest::Flushed {
                        written: Vec::new(),
                        fill_horizon,
                    })
                    .await;
            }
            continue;
        }
        let mutations: Vec<Mutation> = batch.iter().map(|(_, m)| m.clone()).collect();
        match record.write_batch(&mutations).await {
            Ok(()) => {
                let written = batch
                    .into_iter()
                    .map(|(index, mutation)| (mutation.key().to_vec(), index))
                    .collect();
                let fill_horizon = replica.fill_horizon();
                let _ = replica
                    .write(WriteRequest::Flushed {
                        written,
                        fill_horizon,
                    })
                    .await;
            }
            Err(error) => {
                // The client already retried and the breaker counts it; try again next round.
                tracing::debug!(%error, "write-behind batch failed");
            }
        }
    }
}
