//! A follower that fell behind the compaction point catches up with one snapshot, even when the
//! snapshot takes many heartbeats to arrive.
//!
//! Before the fix every heartbeat response from a follower still waiting for its snapshot sent
//! the snapshot again: with a multi-gigabyte cache, each copy queued behind the previous one and
//! the follower never rejoined. The harness delays InstallSnapshot by a transfer time longer
//! than a dozen heartbeats and counts the copies; `Mutations::resend_snapshot_every_heartbeat`
//! re-opens the hole, and the second test shows the count sees it.

mod common;

use common::{Cluster, Opts};
use hyperion_raft::{Config, Mutations};

const TRANSFER_MS: u64 = 2_000;

/// Crashes node 3, writes past the compaction point, restarts it, and returns how many
/// snapshots the cluster sent before node 3 applied everything.
fn snapshots_sent(mutations: Mutations) -> u64 {
    let mut opts = Opts::new(3, 5);
    opts.snapshot_transfer_ms = TRANSFER_MS;
    opts.config = Config {
        mutations,
        ..opts.config
    };
    let heartbeat_ms = opts.config.heartbeat_ms;
    assert!(TRANSFER_MS > 10 * heartbeat_ms);
    let mut c = Cluster::new(opts);
    c.advance(5_000);
    c.crash(3);
    let mut written = 0;
    for _ in 0..200 {
        if let Some(leader) = c.leader() {
            if c.propose(leader, format!("w{written}").as_bytes()).is_ok() {
                written += 1;
            }
        }
        c.advance(20);
        if written == 40 {
            break;
        }
    }
    assert_eq!(written, 40, "the two live nodes stopped taking writes");
    let leader = c.leader().expect("a leader");
    let target = c.node(leader).unwrap().commit_index();
    assert!(
        c.node(leader).unwrap().snapshot_index() > 0,
        "the log was compacted"
    );
    let before = c.checker.stats.get("Snapshot").copied().unwrap_or(0);
    c.restart(3);
    for _ in 0..100 {
        c.advance(100);
        if c.node(3).unwrap().applied_index() >= target {
            break;
        }
    }
    assert_eq!(c.first_violation(), None);
    assert!(
        c.node(3).unwrap().applied_index() >= target,
        "node 3 applied {} of {target}",
        c.node(3).unwrap().applied_index()
    );
    c.checker.stats.get("Snapshot").copied().unwrap_or(0) - before
}

#[test]
fn a_slow_snapshot_is_sent_once() {
    let sent = snapshots_sent(Mutations::default());
    assert_eq!(sent, 1, "{sent} snapshots sent to one follower");
}

/// The mutation test: resending on every heartbeat response sends a copy per heartbeat.
#[test]
fn resending_on_every_heartbeat_floods_the_follower() {
    let sent = snapshots_sent(Mutations {
        resend_snapshot_every_heartbeat: true,
        ..Mutations::default()
    });
    assert!(sent >= 5, "only {sent} snapshots sent with the hole open");
}
