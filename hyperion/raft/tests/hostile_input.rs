//! Regressions for peer messages that crashed or corrupted the core before it validated them
//! (the holes the `fuzz_step` target finds when `skip_message_validation` re-opens them). Each
//! test sends one hostile message twice: to the validating core, which drops it with an error
//! naming the field and changes nothing; and to the pre-fix core, where the same message reaches
//! an assert (the node loop panicked) or releases reads that were never confirmed.

use std::panic::{catch_unwind, AssertUnwindSafe};

use hyperion_raft::message::LOG_LOST;
use hyperion_raft::{
    AppendReject, Config, Durable, Entry, EntryKind, Membership, Message, MessageBody, Mutations,
    RaftNode, Recovered, Role, Snapshot, SnapshotMeta, StepError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn node(validate: bool) -> RaftNode {
    let config = Config {
        mutations: Mutations {
            skip_message_validation: !validate,
            ..Mutations::default()
        },
        ..Config::default()
    };
    let rng = ChaCha8Rng::seed_from_u64(1);
    RaftNode::new(1, vec![1, 2, 3], config, rng, Recovered::default(), 0).unwrap()
}

fn drain(node: &mut RaftNode) -> Vec<Message> {
    let mut sent = Vec::new();
    while node.has_ready() {
        let ready = node.ready();
        let durable = Durable::assert_persisted(&ready);
        sent.extend(ready.messages.clone());
        sent.extend(ready.persisted_messages.clone().release(durable));
        node.advance(durable);
    }
    sent
}

fn message(term: u64, body: MessageBody) -> Message {
    Message {
        from: 2,
        to: 1,
        term,
        body,
    }
}

/// Node 1 as the leader of its term, with node 2's acknowledgement of the no-op.
fn leader(validate: bool) -> RaftNode {
    let mut n = node(validate);
    n.tick(4_000);
    drain(&mut n);
    let term = n.term() + 1;
    n.step(message(
        term,
        MessageBody::PreVoteResponse { granted: true },
    ))
    .unwrap();
    drain(&mut n);
    let term = n.term();
    n.step(message(
        term,
        MessageBody::RequestVoteResponse { granted: true },
    ))
    .unwrap();
    drain(&mut n);
    assert_eq!(n.role(), Role::Leader);
    n
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Command(vec![b'x'].into()),
    }
}

fn invalid_field(result: Result<(), StepError>) -> &'static str {
    match result {
        Err(StepError::Invalid(invalid)) => invalid.field,
        other => panic!("expected the message to be dropped as invalid, got {other:?}"),
    }
}

fn panics(f: impl FnOnce()) -> String {
    let error = catch_unwind(AssertUnwindSafe(f)).expect_err("the pre-fix core panics");
    error
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| error.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// The report's repro: one Append whose entries do not follow `prev_log_index` killed the
/// follower's node loop (`malformed append`).
#[test]
fn an_append_with_gapped_entries_is_dropped() {
    let gapped = || {
        message(
            1,
            MessageBody::Append {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![entry(1, 5)],
                leader_commit: 0,
                round: 1,
            },
        )
    };
    let mut n = node(true);
    assert_eq!(invalid_field(n.step(gapped())), "entries");
    assert_eq!((n.term(), n.last_index()), (0, 0), "nothing changed");

    let mut n = node(false);
    assert!(panics(|| drop(n.step(gapped()))).contains("malformed append"));
}

/// A term of u64::MAX was adopted and persisted; every later election overflowed.
#[test]
fn an_absurd_term_jump_is_never_adopted() {
    let forged = || {
        message(
            u64::MAX,
            MessageBody::Heartbeat {
                leader_commit: 0,
                round: 1,
            },
        )
    };
    let mut n = node(true);
    assert_eq!(invalid_field(n.step(forged())), "term");
    assert_eq!(n.term(), 0);
    assert!(!n.has_ready(), "nothing to persist");

    let mut n = node(false);
    n.step(forged()).unwrap();
    assert_eq!(n.term(), u64::MAX, "the pre-fix core adopts the term");
    // The next election cannot name a term: it overflows (a debug build's arithmetic check, or
    // the core's "term must only grow" assert once it wrapped).
    let crash = panics(|| {
        n.tick(100_000);
        n.step(message(u64::MAX, MessageBody::TimeoutNow)).unwrap();
    });
    assert!(
        crash.contains("overflow") || crash.contains("term must only grow"),
        "{crash}"
    );
}

/// A forged acknowledgement of an index the leader never had tripped its assert.
#[test]
fn a_match_beyond_the_leaders_log_is_dropped() {
    let forged = |n: &RaftNode| {
        message(
            n.term(),
            MessageBody::AppendResponse {
                result: Ok(n.last_index() + 100),
                round: 1,
            },
        )
    };
    let mut n = leader(true);
    let commit = n.commit_index();
    assert_eq!(invalid_field(n.step(forged(&n))), "match_index");
    assert_eq!(n.commit_index(), commit);

    let mut n = leader(false);
    let m = forged(&n);
    assert!(panics(|| drop(n.step(m))).contains("matched beyond"));
}

/// A forged HeartbeatResponse with a huge round released pending read-index reads without any
/// confirmation by a quorum.
#[test]
fn a_forged_round_confirms_no_read() {
    for validate in [true, false] {
        let mut n = leader(validate);
        // Node 2 acknowledges the no-op (so the term has a committed entry), then falls silent
        // until the lease has run out: the read must wait for a heartbeat round.
        let ack = message(
            n.term(),
            MessageBody::AppendResponse {
                result: Ok(n.last_index()),
                round: 1,
            },
        );
        n.step(ack).unwrap();
        drain(&mut n);
        n.tick(n.now_ms() + 1_200);
        drain(&mut n);
        assert_eq!(n.role(), Role::Leader);
        assert!(!n.has_valid_lease(n.now_ms()));
        n.read_index(7).unwrap();
        let ready = n.ready();
        let durable = Durable::assert_persisted(&ready);
        n.advance(durable);
        let forged = message(n.term(), MessageBody::HeartbeatResponse { round: u64::MAX });
        let result = n.step(forged);
        let released: Vec<u64> = {
            let ready = n.ready();
            let durable = Durable::assert_persisted(&ready);
            let reads = ready.reads.iter().map(|r| r.request_id).collect();
            n.advance(durable);
            reads
        };
        if validate {
            assert_eq!(invalid_field(result), "round");
            assert!(released.is_empty(), "no read released by a forged round");
        } else {
            assert_eq!(released, vec![7], "the pre-fix core releases the read");
        }
    }
}

/// An Append claiming the leader's own term from another node hit the election-safety assert.
#[test]
fn a_second_leader_in_our_term_is_dropped() {
    let forged = |n: &RaftNode| {
        message(
            n.term(),
            MessageBody::Heartbeat {
                leader_commit: 0,
                round: 1,
            },
        )
    };
    let mut n = leader(true);
    assert_eq!(invalid_field(n.step(forged(&n))), "term");
    assert_eq!(n.role(), Role::Leader);

    let mut n = leader(false);
    let m = forged(&n);
    assert!(panics(|| drop(n.step(m))).contains("election safety"));
}

/// A lost-log report with conflict index 0 underflowed the leader's match index.
#[test]
fn a_lost_log_report_for_index_zero_is_dropped() {
    let forged = |n: &RaftNode| {
        message(
            n.term(),
            MessageBody::AppendResponse {
                result: Err(AppendReject {
                    rejected_prev_index: LOG_LOST,
                    conflict_term: None,
                    conflict_index: 0,
                }),
                round: 1,
            },
        )
    };
    let mut n = leader(true);
    assert_eq!(invalid_field(n.step(forged(&n))), "conflict_index");

    let mut n = leader(false);
    let m = forged(&n);
    assert!(panics(|| drop(n.step(m))).contains("overflow"));
}

/// A snapshot at the end of the index space overflowed the log's arithmetic once the node led.
#[test]
fn a_snapshot_at_an_absurd_index_is_dropped() {
    let forged = || {
        message(
            1,
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: u64::MAX,
                        term: 1,
                        membership: Membership {
                            voters: vec![1, 2, 3],
                        },
                    },
                    data: Vec::new().into(),
                },
                round: 1,
            },
        )
    };
    let mut n = node(true);
    assert_eq!(invalid_field(n.step(forged())), "snapshot.index");
    assert_eq!(n.snapshot_index(), 0);
    assert!(!n.has_ready());

    let mut n = node(false);
    n.step(forged()).unwrap();
    assert_eq!(n.snapshot_index(), u64::MAX, "the pre-fix core takes it");
    assert!(panics(|| {
        drain(&mut n);
        n.step(message(1, MessageBody::TimeoutNow)).unwrap();
        drain(&mut n);
        n.step(message(
            2,
            MessageBody::RequestVoteResponse { granted: true },
        ))
        .unwrap();
        drain(&mut n);
    })
    .contains("overflow"));
}
