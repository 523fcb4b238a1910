//! Lost read-index answers (a peer queue that overflowed, a batch that timed out) are ordinary;
//! a node must not wait for one for as long as the leader lives.
//!
//! - A follower whose forwarded read goes unanswered fails it after an election timeout
//!   (retryable). Before the fix the read stayed pending: its client timed out, and every such
//!   loss took one of the follower's `pending_reads_max` slots for good.
//! - A node that abstains until caught up (it may have lost acknowledged entries) asks again
//!   when its catch-up request goes unanswered. Before the fix it abstained until the leader
//!   changed, and since it does not vote, a leader crash could then leave no majority to elect
//!   the next one. (Found by the simulator: its `drop_read_index_response` fault point never
//!   fired in a sweep, because the product reads only on the leader, and the only read-index
//!   traffic left is this catch-up.)
//!
//! The harness loses every read-index answer under a stable leader;
//! `Mutations::keep_unanswered_reads` re-opens both holes, and the mutation tests show the
//! checks see them.

mod common;

use common::{Cluster, Opts};
use hyperion_raft::storage::SyncPolicy;
use hyperion_raft::{Config, Mutations, NodeId};

const READS: u64 = 40;

/// Issues `READS` reads at a follower whose read-index answers are all lost, waits ten election
/// timeouts under the same leader, and returns how many are still pending.
fn still_pending(mutations: Mutations) -> usize {
    let mut opts = Opts::new(3, 3);
    opts.drop_read_index_responses = true;
    opts.config = Config {
        mutations,
        ..opts.config
    };
    let election_timeout_ms = opts.config.election_timeout_ms;
    let mut c = Cluster::new(opts);
    c.advance(5_000);
    let leader = c.leader().expect("a leader");
    let follower: NodeId = (1..=3).find(|id| *id != leader).unwrap();
    let term = c.node(leader).unwrap().term();
    for _ in 0..READS {
        let id = c.next_request_id();
        c.read(follower, id)
            .expect("the follower forwards the read");
        c.advance(10);
    }
    c.advance(10 * election_timeout_ms);
    assert_eq!(c.leader(), Some(leader), "the same leader throughout");
    assert_eq!(c.node(leader).unwrap().term(), term);
    assert_eq!(c.first_violation(), None);
    c.checker
        .reads
        .keys()
        .filter(|(node, _)| *node == follower)
        .count()
}

#[test]
fn an_unanswered_read_index_request_fails_after_an_election_timeout() {
    assert_eq!(still_pending(Mutations::default()), 0);
}

/// The mutation test: keeping unanswered reads, every one of them is still pending.
#[test]
fn keeping_unanswered_reads_leaks_them() {
    let pending = still_pending(Mutations {
        keep_unanswered_reads: true,
        ..Mutations::default()
    });
    assert_eq!(pending, READS as usize);
}

/// A follower loses power (with `EverySec`, so it may have lost acknowledged entries) and
/// restarts abstaining; its catch-up request's answer is lost for a while. Returns whether it
/// still abstains long after answers flow again, under the same leader.
fn abstains_after_a_lost_catch_up(mutations: Mutations) -> bool {
    let mut opts = Opts::new(3, 4);
    opts.policy = SyncPolicy::EverySec;
    opts.config = Config {
        mutations,
        ..opts.config
    };
    let election_timeout_ms = opts.config.election_timeout_ms;
    let mut c = Cluster::new(opts);
    c.advance(5_000);
    let leader = c.leader().expect("a leader");
    let follower: NodeId = (1..=3).find(|id| *id != leader).unwrap();
    for i in 0..10 {
        c.propose(leader, format!("w{i}").as_bytes()).unwrap();
        c.advance(20);
    }
    c.power_loss(follower);
    c.opts.drop_read_index_responses = true;
    c.restart(follower);
    assert!(
        c.node(follower).unwrap().abstaining(),
        "a node that may have lost acknowledged entries abstains"
    );
    c.advance(3 * election_timeout_ms);
    assert!(
        c.node(follower).unwrap().abstaining(),
        "its catch-up answer was lost"
    );
    c.opts.drop_read_index_responses = false;
    c.advance(5 * election_timeout_ms);
    assert_eq!(c.leader(), Some(leader), "the same leader throughout");
    assert_eq!(c.first_violation(), None);
    c.node(follower).unwrap().abstaining()
}

#[test]
fn a_lost_catch_up_answer_is_asked_again() {
    assert!(!abstains_after_a_lost_catch_up(Mutations::default()));
}

/// The mutation test: waiting for the lost answer, the node abstains as long as the leader lives.
#[test]
fn waiting_for_a_lost_catch_up_answer_abstains_for_good() {
    assert!(abstains_after_a_lost_catch_up(Mutations {
        keep_unanswered_reads: true,
        ..Mutations::default()
    }));
}
