//! The log a node holds in memory is bounded in bytes as well as in entries.
//!
//! Before the fix compaction counted entries only: 10,000 entries of 512 KB values are 5 GB of
//! log in memory whatever the cache's cap says (the 2024-11-22 incident, "RSS grew 4 GB →
//! 12 GB, OOM-killed", by another road). The harness writes large values under an entry
//! threshold that never fires and checks every node's log stays near the byte threshold;
//! `Mutations::ignore_log_bytes` re-opens the hole, and the second test shows the check sees it.

mod common;

use common::{Cluster, Opts};
use hyperion_raft::{Config, Mutations, NodeId, ENTRY_OVERHEAD_BYTES};

const THRESHOLD_BYTES: u64 = 256 << 10;
const VALUE_BYTES: usize = 16 << 10;
const WRITES: usize = 300;

/// Writes `WRITES` values of `VALUE_BYTES` through the leader of a 3-node cluster (one follower
/// crashed for a while, so it catches up by snapshot) and returns the most log memory any node
/// held at any step.
fn largest_log(mutations: Mutations) -> u64 {
    let mut opts = Opts::new(3, 11);
    opts.config = Config {
        compaction_threshold_entries: 1_000_000,
        compaction_threshold_bytes: THRESHOLD_BYTES,
        append_bytes_max: 64 << 10,
        mutations,
        ..opts.config
    };
    let mut c = Cluster::new(opts);
    c.advance(5_000);
    let mut largest = 0;
    let mut written = 0;
    for step in 0..WRITES * 4 {
        if step == WRITES / 3 {
            c.crash(3);
        }
        if step == WRITES {
            c.restart(3);
        }
        if written < WRITES {
            if let Some(leader) = c.leader() {
                let value = vec![(step % 251) as u8; VALUE_BYTES];
                if c.propose(leader, &value).is_ok() {
                    written += 1;
                }
            }
        }
        c.advance(10);
        for id in 1..=3 as NodeId {
            if let Some(node) = c.node(id) {
                largest = largest.max(node.log_bytes());
            }
        }
        assert_eq!(c.first_violation(), None, "safety violation at step {step}");
    }
    assert_eq!(written, WRITES, "the cluster stopped taking writes");
    for id in 1..=3 as NodeId {
        let node = c.node(id).expect("every node is up at the end");
        assert!(
            node.applied_index() > WRITES as u64,
            "node {id} applied {} of {WRITES} writes",
            node.applied_index()
        );
    }
    largest
}

/// Applied entries are compacted once they hold the threshold; what can exceed it is the
/// entry that crossed it, plus entries proposed but not yet applied (a few heartbeats' worth).
fn bound() -> u64 {
    THRESHOLD_BYTES + 8 * (VALUE_BYTES + ENTRY_OVERHEAD_BYTES) as u64
}

#[test]
fn the_log_in_memory_stays_within_its_byte_threshold() {
    let largest = largest_log(Mutations::default());
    assert!(
        largest <= bound(),
        "a node held {largest} bytes of log (bound {})",
        bound()
    );
}

/// The mutation test: counting entries only, the log grows with every write.
#[test]
fn counting_entries_only_lets_the_log_grow_past_the_threshold() {
    let largest = largest_log(Mutations {
        ignore_log_bytes: true,
        ..Mutations::default()
    });
    let written = (WRITES * (VALUE_BYTES + ENTRY_OVERHEAD_BYTES)) as u64;
    assert!(
        largest > written / 2 && largest > 4 * bound(),
        "with the hole open a node held only {largest} bytes of log ({written} written)"
    );
}
