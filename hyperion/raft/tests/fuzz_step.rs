//! Fuzz target: [`RaftNode::step`] driven by arbitrary message sequences from its peers, mixed
//! with ticks, proposals, reads and Ready/advance cycles (proptest-driven).
//!
//! The property is the one the product promises for hostile input: no sequence of peer messages
//! reaches an assert of the core (a panic fails the case), and whatever the messages say, the
//! node's term and commit index never go back and the commit index never passes the log's end.
//!
//! Messages are generated relative to the node's state at the moment they are delivered (a
//! field is "the node's last index + 1", "its term", or a raw extreme such as `u64::MAX`), so the
//! generator reaches deep paths (a leader with followers, a follower with a log, pending reads)
//! instead of bouncing off the first check.
//!
//! Case count: `HYPERION_FUZZ_CASES` (CI runs a bounded default; the release notes report
//! million-case runs: `HYPERION_FUZZ_CASES=1000000 cargo test --release -p hyperion-raft --test
//! fuzz_step`).
//!
//! `validation_off_lets_the_fuzzer_crash_the_core` proves the target has teeth: with the
//! `skip_message_validation` mutation (the pre-fix core) the same generator finds a panic.

use hyperion_raft::{
    AppendReject, Config, Durable, Entry, EntryKind, Membership, Message, MessageBody, Mutations,
    NodeId, RaftNode, Recovered, Role, Snapshot, SnapshotMeta,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Cases per run: `HYPERION_FUZZ_CASES`, or a bounded default for CI.
fn cases() -> u32 {
    std::env::var("HYPERION_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// A number chosen relative to some state of the node, or raw.
#[derive(Debug, Clone, Copy)]
enum Sel {
    /// `base + delta` (saturating).
    Rel(i8),
    /// An absolute value.
    Raw(u64),
}

impl Sel {
    fn at(self, base: u64) -> u64 {
        match self {
            Sel::Rel(delta) => base.saturating_add_signed(i64::from(delta)),
            Sel::Raw(value) => value,
        }
    }
}

fn sel() -> impl Strategy<Value = Sel> {
    prop_oneof![
        6 => (-3i8..=3).prop_map(Sel::Rel),
        1 => prop_oneof![
            Just(0u64),
            Just(1u64),
            Just(u64::MAX),
            Just(u64::MAX - 1),
            Just(u64::MAX / 2),
            any::<u64>()
        ]
        .prop_map(Sel::Raw),
    ]
}

/// One message, its fields chosen relative to the node's state at delivery.
#[derive(Debug, Clone)]
struct RawMessage {
    from: NodeId,
    to_self: bool,
    kind: u8,
    term: Sel,
    a: Sel,
    b: Sel,
    c: Sel,
    round: Sel,
    entries: u8,
    contiguous: bool,
    flag: bool,
    data: Vec<u8>,
}

fn raw_message() -> impl Strategy<Value = RawMessage> {
    (
        (
            prop_oneof![8 => 2u64..=3, 1 => 0u64..=5],
            prop::bool::weighted(0.97),
            0u8..12,
        ),
        (sel(), sel(), sel(), sel(), sel()),
        (0u8..6, prop::bool::weighted(0.8), any::<bool>()),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(
            |((from, to_self, kind), (term, a, b, c, round), (entries, contiguous, flag), data)| {
                RawMessage {
                    from,
                    to_self,
                    kind,
                    term,
                    a,
                    b,
                    c,
                    round,
                    entries,
                    contiguous,
                    flag,
                    data,
                }
            },
        )
}

#[derive(Debug, Clone)]
enum Op {
    Tick(u16),
    Deliver(RawMessage),
    Propose(u8),
    Read,
    Ready,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u16..2_000).prop_map(Op::Tick),
        8 => raw_message().prop_map(Op::Deliver),
        1 => (1u8..4).prop_map(Op::Propose),
        1 => Just(Op::Read),
        2 => Just(Op::Ready),
    ]
}

/// The state a case starts from.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// A new follower.
    Fresh,
    /// A follower of node 2 holding entries 1..=5 (3 committed).
    Follower,
    /// The leader of term 2 with entries replicated to node 2.
    Leader,
}

struct Driver {
    node: RaftNode,
    now_ms: u64,
    next_read: u64,
    max_term: u64,
    max_commit: u64,
}

impl Driver {
    fn new(start: Start, mutations: Mutations) -> Driver {
        let config = Config {
            compaction_threshold_entries: 4,
            mutations,
            ..Config::default()
        };
        let rng = ChaCha8Rng::seed_from_u64(7);
        let node = RaftNode::new(1, vec![1, 2, 3], config, rng, Recovered::default(), 0)
            .expect("a valid node");
        let mut driver = Driver {
            node,
            now_ms: 0,
            next_read: 1,
            max_term: 0,
            max_commit: 0,
        };
        match start {
            Start::Fresh => {}
            Start::Follower => {
                let entries = (1..=5)
                    .map(|index| Entry {
                        term: 1,
                        index,
                        kind: EntryKind::Command(vec![index as u8].into()),
                    })
                    .collect();
                driver.step_ok(2, 1, append(0, 0, entries, 3, 1));
                driver.ready();
            }
            Start::Leader => {
                driver.tick(4_000);
                driver.ready();
                let term = driver.node.term() + 1;
                driver.step_ok(2, term, MessageBody::PreVoteResponse { granted: true });
                driver.ready();
                let term = driver.node.term();
                driver.step_ok(2, term, MessageBody::RequestVoteResponse { granted: true });
                driver.ready();
                assert_eq!(driver.node.role(), Role::Leader, "the setup elects node 1");
                let _ = driver.node.propose(vec![b"a".to_vec(), b"b".to_vec()]);
                driver.ready();
                let last = driver.node.last_index();
                driver.step_ok(
                    2,
                    term,
                    MessageBody::AppendResponse {
                        result: Ok(last),
                        round: 1,
                    },
                );
                driver.ready();
            }
        }
        driver
    }

    fn step_ok(&mut self, from: NodeId, term: u64, body: MessageBody) {
        let _ = self.node.step(Message {
            from,
            to: 1,
            term,
            body,
        });
    }

    fn tick(&mut self, ms: u64) {
        self.now_ms += ms;
        self.node.tick(self.now_ms);
    }

    /// Handles every Ready as a driver would (persisting is a no-op here), taking snapshots
    /// when asked.
    fn ready(&mut self) {
        for _ in 0..16 {
            if !self.node.has_ready() {
                break;
            }
            let ready = self.node.ready();
            let durable = Durable::assert_persisted(&ready);
            let _ = ready.persisted_messages.clone().release(durable);
            let snapshot_request = ready.snapshot_request;
            self.node.advance(durable);
            if let Some(index) = snapshot_request {
                let _ = self.node.snapshot_taken(index, vec![1, 2, 3]);
            }
        }
    }

    fn message(&self, raw: &RawMessage) -> Message {
        let node = &self.node;
        let term = raw.term.at(node.term());
        let last = node.last_index();
        let commit = node.commit_index();
        let round = raw.round.at(1);
        let body = match raw.kind {
            0 => MessageBody::PreVote {
                last_log_index: raw.a.at(last),
                last_log_term: raw.b.at(node.term()),
            },
            1 => MessageBody::PreVoteResponse { granted: raw.flag },
            2 => MessageBody::RequestVote {
                last_log_index: raw.a.at(last),
                last_log_term: raw.b.at(node.term()),
                leader_transfer: raw.flag,
            },
            3 => MessageBody::RequestVoteResponse { granted: raw.flag },
            4 => {
                let prev_log_index = raw.a.at(last);
                let prev_log_term = raw.b.at(node.term_at(prev_log_index).unwrap_or(term));
                let first = if raw.contiguous {
                    prev_log_index.saturating_add(1)
                } else {
                    raw.c.at(prev_log_index)
                };
                let entries = (0..u64::from(raw.entries))
                    .map(|i| Entry {
                        term: if raw.flag { term } else { raw.b.at(term) },
                        index: first.saturating_add(i),
                        kind: if i.is_multiple_of(2) {
                            EntryKind::Command(raw.data.clone().into())
                        } else {
                            EntryKind::NoOp
                        },
                    })
                    .collect();
                append(
                    prev_log_index,
                    prev_log_term,
                    entries,
                    raw.c.at(commit),
                    round,
                )
            }
            5 => MessageBody::AppendResponse {
                result: if raw.flag {
                    Ok(raw.a.at(last))
                } else {
                    Err(AppendReject {
                        rejected_prev_index: if raw.contiguous {
                            raw.a.at(last)
                        } else {
                            hyperion_raft::message::LOG_LOST
                        },
                        conflict_term: raw.entries.is_multiple_of(2).then(|| raw.b.at(node.term())),
                        conflict_index: raw.c.at(last),
                    })
                },
                round,
            },
            6 => MessageBody::Heartbeat {
                leader_commit: raw.a.at(commit),
                round,
            },
            7 => MessageBody::HeartbeatResponse { round },
            8 => MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: raw.a.at(commit),
                        term: raw.b.at(term),
                        membership: Membership {
                            voters: if raw.flag { vec![1, 2, 3] } else { vec![1, 2] },
                        },
                    },
                    data: raw.data.clone().into(),
                },
                round,
            },
            9 => MessageBody::TimeoutNow,
            10 => MessageBody::ReadIndexRequest {
                request_id: raw.a.at(1),
            },
            _ => MessageBody::ReadIndexResponse {
                request_id: raw.a.at(1),
                read_index: raw.flag.then(|| raw.b.at(commit)),
            },
        };
        Message {
            from: raw.from,
            to: if raw.to_self { 1 } else { 2 },
            term,
            body,
        }
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Tick(ms) => self.tick(u64::from(*ms)),
            Op::Deliver(raw) => {
                let message = self.message(raw);
                let _ = self.node.step(message);
            }
            Op::Propose(count) => {
                let _ = self
                    .node
                    .propose((0..*count).map(|i| vec![b'p', i]).collect());
            }
            Op::Read => {
                let id = self.next_read;
                self.next_read += 1;
                let _ = self.node.read_index(id);
            }
            Op::Ready => self.ready(),
        }
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let node = &self.node;
        prop_assert!(node.term() >= self.max_term, "term went back");
        prop_assert!(node.commit_index() >= self.max_commit, "commit went back");
        prop_assert!(
            node.commit_index() <= node.last_index(),
            "commit {} beyond the log's end {}",
            node.commit_index(),
            node.last_index()
        );
        self.max_term = node.term();
        self.max_commit = node.commit_index();
        Ok(())
    }
}

fn append(
    prev_log_index: u64,
    prev_log_term: u64,
    entries: Vec<Entry>,
    leader_commit: u64,
    round: u64,
) -> MessageBody {
    MessageBody::Append {
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit,
        round,
    }
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Fresh),
        Just(Start::Follower),
        Just(Start::Leader)
    ]
}

fn run_case(start: Start, ops: &[Op], mutations: &Mutations) -> Result<(), TestCaseError> {
    let mut driver = Driver::new(start, mutations.clone());
    driver.check()?;
    for op in ops {
        driver.run(op);
        driver.check()?;
    }
    driver.ready();
    driver.check()
}

fn strategy() -> impl Strategy<Value = (Start, Vec<Op>)> {
    (start(), prop::collection::vec(op(), 1..48))
}

proptest! {
    #![proptest_config(RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    })]

    /// No sequence of peer messages panics the core or moves its term or commit back.
    #[test]
    fn arbitrary_peer_messages_never_panic_the_core((start, ops) in strategy()) {
        run_case(start, &ops, &Mutations::default())?;
    }
}

#[test]
fn validation_off_lets_the_fuzzer_crash_the_core() {
    // The panics this provokes are the expected finding; keep the output readable.
    std::panic::set_hook(Box::new(|_| {}));
    let mutations = Mutations {
        skip_message_validation: true,
        ..Mutations::default()
    };
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 20_000,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..RunnerConfig::default()
    });
    let result = runner.run(&strategy(), |(start, ops)| {
        run_case(start, &ops, &mutations)
    });
    let _ = std::panic::take_hook();
    match result {
        Err(proptest::test_runner::TestError::Fail(reason, (start, ops))) => {
            eprintln!("found with validation off: {reason}\nstart {start:?}, ops {ops:#?}");
        }
        other => panic!("the fuzzer found no crash in the unvalidated core: {other:?}"),
    }
}
