//! Raft invariants checked from outside while a simulation runs: the monitor samples every
//! running server's status every few simulated milliseconds.
//!
//! - Election safety: at most one node is leader in any term.
//! - Terms never decrease on a node (they are durable, so not even across restarts).
//! - Lease safety: no two nodes hold a valid leader lease at the same simulated instant.
//! - State-machine safety (at the end): replicas that applied the same log index hold
//!   byte-identical state machines.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyperion_raft::Role;

use crate::cluster::SimCluster;

/// How often the monitor samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(5);
/// Most violations kept (the first ones matter).
pub const VIOLATIONS_MAX: usize = 16;

#[derive(Debug, Default)]
struct State {
    leaders_by_term: BTreeMap<u64, usize>,
    last_term: BTreeMap<usize, u64>,
    violations: Vec<String>,
    stopped: bool,
}

/// A running monitor; [`Monitor::stop`] ends it and returns what it found.
#[derive(Clone, Default)]
pub struct Monitor {
    state: Arc<Mutex<State>>,
}

impl Monitor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn violation(&self, text: String) {
        let mut state = self.lock();
        if state.violations.len() < VIOLATIONS_MAX {
            state.violations.push(text);
        }
    }

    /// Samples once.
    pub fn sample(&self, cluster: &SimCluster, at_ms: u64) {
        let now = hyperion::runtime::now();
        let statuses: Vec<_> = cluster
            .servers
            .iter()
            .enumerate()
            .filter_map(|(i, server)| server.status().map(|status| (i, status)))
            .collect();
        let mut leases = Vec::new();
        for (node, status) in &statuses {
            let mut state = self.lock();
            let previous = state.last_term.insert(*node, status.term).unwrap_or(0);
            let mut found = Vec::new();
            if status.term < previous {
                found.push(format!(
                    "t={at_ms}ms node{} term went back from {previous} to {}",
                    node + 1,
                    status.term
                ));
            }
            if status.role == Some(Role::Leader) {
                let leader = *state.leaders_by_term.entry(status.term).or_insert(*node);
                if leader != *node {
                    found.push(format!(
                        "t={at_ms}ms election safety: node{} and node{} both led term {}",
                        leader + 1,
                        node + 1,
                        status.term
                    ));
                }
            }
            drop(state);
            for text in found {
                self.violation(text);
            }
            if status.lease_expires_at.is_some_and(|until| until > now) {
                leases.push((*node, status.term));
            }
        }
        if leases.len() > 1 {
            self.violation(format!(
                "t={at_ms}ms lease safety: nodes (node, term) {:?} hold valid leases at once",
                leases.iter().map(|(n, t)| (n + 1, *t)).collect::<Vec<_>>()
            ));
        }
    }

    /// Samples every [`SAMPLE_INTERVAL`] until [`Monitor::stop`].
    pub async fn run(self, cluster: Arc<SimCluster>, origin: hyperion::runtime::Instant) {
        loop {
            if self.lock().stopped {
                return;
            }
            let at_ms = hyperion::runtime::now()
                .saturating_duration_since(origin)
                .as_millis() as u64;
            self.sample(&cluster, at_ms);
            madsim::time::sleep(SAMPLE_INTERVAL).await;
        }
    }

    /// Times leadership changed hands after the first leader seen: terms that had a leader,
    /// but the first.
    pub fn leader_changes(&self) -> u64 {
        (self.lock().leaders_by_term.len() as u64).saturating_sub(1)
    }

    /// Stops sampling and returns the violations found.
    pub fn stop(&self) -> Vec<String> {
        let mut state = self.lock();
        state.stopped = true;
        state.violations.clone()
    }
}

/// Checks state-machine safety: running replicas at the same applied index have identical
/// state. Returns the violations.
pub fn check_state_machines(cluster: &SimCluster) -> Vec<String> {
    let mut by_index: BTreeMap<u64, Vec<(usize, u64)>> = BTreeMap::new();
    for (i, server) in cluster.servers.iter().enumerate() {
        if let Some((index, digest)) = server.state_digest() {
            by_index.entry(index).or_default().push((i, digest));
        }
    }
    by_index
        .into_iter()
        .filter(|(_, digests)| digests.windows(2).any(|w| w[0].1 != w[1].1))
        .map(|(index, digests)| {
            format!(
                "state-machine safety: replicas at applied index {index} differ: {:?}",
                digests
                    .iter()
                    .map(|(n, d)| (n + 1, format!("{d:016x}")))
                    .collect::<Vec<_>>()
            )
        })
        .collect()
}
