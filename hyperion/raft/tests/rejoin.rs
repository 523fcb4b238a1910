//! A node that lost its durable state abstains from votes and elections until its log is
//! committed up to the index it was given (the leader's last index when it rejoined).

use hyperion_raft::{Config, Entry, EntryKind, Message, MessageBody, RaftNode, Recovered, Role};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn node(id: u64) -> RaftNode {
    RaftNode::new(
        id,
        vec![1, 2, 3],
        Config::default(),
        ChaCha8Rng::seed_from_u64(id),
        Recovered::default(),
        0,
    )
    .unwrap()
}

fn vote_request(term: u64) -> Message {
    Message {
        from: 2,
        to: 3,
        term,
        body: MessageBody::RequestVote {
            last_log_index: 0,
            last_log_term: 0,
            leader_transfer: false,
        },
    }
}

fn granted(node: &mut RaftNode) -> Option<bool> {
    let ready = node.ready();
    let durable = hyperion_raft::Durable::assert_persisted(&ready);
    let mut sent = ready.messages.clone();
    sent.extend(ready.persisted_messages.clone().release(durable));
    node.advance(durable);
    sent.iter().find_map(|m| match m.body {
        MessageBody::RequestVoteResponse { granted } => Some(granted),
        _ => None,
    })
}

#[test]
fn an_abstaining_node_neither_votes_nor_campaigns_until_caught_up() {
    // Control: a fresh node past its start-up stickiness grants the vote.
    let mut control = node(3);
    control.tick(10_000);
    control.step(vote_request(5)).unwrap();
    assert_eq!(granted(&mut control), Some(true));

    let mut rejoined = node(3);
    rejoined.abstain_until(2);
    assert!(rejoined.abstaining());
    for now in (0..=20_000).step_by(10) {
        rejoined.tick(now);
    }
    assert_eq!(
        rejoined.role(),
        Role::Follower,
        "no election while abstaining"
    );
    assert_eq!(rejoined.term(), 0);
    rejoined.step(vote_request(5)).unwrap();
    assert_eq!(
        granted(&mut rejoined),
        Some(false),
        "no vote while abstaining"
    );

    // The leader replicates and commits up to index 2: the node votes again.
    let entries = (1..=2)
        .map(|index| Entry {
            term: 5,
            index,
            kind: EntryKind::Command(vec![index as u8].into()),
        })
        .collect();
    rejoined
        .step(Message {
            from: 1,
            to: 3,
            term: 5,
            body: MessageBody::Append {
                prev_log_index: 0,
                prev_log_term: 0,
                entries,
                leader_commit: 2,
                round: 1,
            },
        })
        .unwrap();
    let _ = granted(&mut rejoined);
    assert_eq!(rejoined.commit_index(), 2);
    assert!(!rejoined.abstaining());
}
