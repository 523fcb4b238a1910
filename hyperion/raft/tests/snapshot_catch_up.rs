//! A follower that fell behind the compaction point catches up with one snapshot, even when the
//! snapshot takes many heartbeats to arrive.
//!
//! Before the fix every heartbeat response from a follower still waiting for its snapshot sent
//! the snapshot again: with a multi-gigabyte cache, each copy queued behind the previous one and
//! the follower never rejoined. The harness delays InstallSnapshot by a transfer time longer
//! than a dozen heartbeats and counts the copies; `Mutations::resend_snapshot_every_heartbeat`
//! re-opens the hole, and the second test shows the count sees it. The last two: snapshot
//! bytes are released once no follower needs them, and rebuilt when one does.

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

/// A node holds its snapshot's bytes only while a follower may need them: once every follower
/// is past it they are released (the state machine can rebuild them). A new leader whose bytes
/// were released rebuilds a snapshot for a follower behind its compaction point.
/// Returns the bytes held by all nodes once caught up, by the new leader before it needs them,
/// and the snapshots sent to the follower that was away.
fn released_and_rebuilt(mutations: Mutations) -> (usize, usize, u64) {
    let mut opts = Opts::new(3, 11);
    opts.config = Config {
        mutations,
        ..opts.config
    };
    let mut c = Cluster::new(opts);
    c.advance(5_000);
    let write = |c: &mut Cluster, count: usize, tag: &str| {
        let mut written = 0;
        for _ in 0..400 {
            if let Some(leader) = c.leader() {
                if c.propose(leader, format!("{tag}{written}").as_bytes())
                    .is_ok()
                {
                    written += 1;
                }
            }
            c.advance(20);
            if written == count {
                return;
            }
        }
        panic!("{written} of {count} writes taken");
    };
    write(&mut c, 20, "a");
    c.advance(1_000);
    // Everyone caught up past every snapshot: nobody needs the bytes.
    let held: usize = (1..=3)
        .map(|id| c.node(id).unwrap().snapshot_bytes_held())
        .sum();
    // A follower away while the others compact past it, then a new leader.
    let first = c.leader().expect("a leader");
    let away = if first == 3 { 2 } else { 3 };
    c.crash(away);
    write(&mut c, 20, "b");
    c.crash(first);
    c.restart(first);
    c.advance(3_000);
    // Leadership goes to the node that was a follower throughout: it released its bytes.
    let restarted_leader = c.leader().expect("a leader after the restart");
    let other = (1..=3)
        .find(|id| *id != away && *id != restarted_leader)
        .unwrap();
    c.transfer(restarted_leader, other)
        .expect("leadership transfer");
    c.advance(2_000);
    let leader = c.leader().expect("a leader after the transfer");
    assert_eq!(leader, other);
    let held_by_new_leader = c.node(leader).unwrap().snapshot_bytes_held();
    let target = c.node(leader).unwrap().commit_index();
    let before = c.checker.stats.get("Snapshot").copied().unwrap_or(0);
    c.restart(away);
    for _ in 0..100 {
        c.advance(100);
        if c.node(away).unwrap().applied_index() >= target {
            break;
        }
    }
    assert_eq!(c.first_violation(), None);
    assert!(
        c.node(away).unwrap().applied_index() >= target,
        "node {away} applied {} of {target}",
        c.node(away).unwrap().applied_index()
    );
    let sent = c.checker.stats.get("Snapshot").copied().unwrap_or(0) - before;
    (held, held_by_new_leader, sent)
}

#[test]
fn snapshot_bytes_are_released_and_rebuilt_for_a_follower_that_needs_them() {
    let (held, held_by_new_leader, sent) = released_and_rebuilt(Mutations::default());
    assert_eq!(held, 0, "snapshot bytes held with every follower caught up");
    assert_eq!(
        held_by_new_leader, 0,
        "a follower turned leader held its bytes"
    );
    assert!(
        sent >= 1,
        "the follower behind the compaction point got a rebuilt snapshot"
    );
}

/// The comparison that shows the check above can fail: holding the bytes for good.
#[test]
fn holding_snapshot_bytes_for_good_is_seen() {
    let (held, held_by_new_leader, _) = released_and_rebuilt(Mutations {
        hold_snapshot_bytes: true,
        ..Mutations::default()
    });
    assert!(
        held > 0 && held_by_new_leader > 0,
        "the held bytes are seen"
    );
}
