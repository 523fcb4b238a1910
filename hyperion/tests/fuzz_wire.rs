//! Fuzz targets (proptest-driven) for the wire decoders: what a peer sends is bytes, and no
//! bytes may panic a node.
//!
//! - `peer_batches`: a valid batch of every message kind, encoded, then mutated (bytes flipped,
//!   inserted, removed, the encoding cut short), decoded as `MessageBatch` and admitted
//!   (`replica::inbound::admit`): decoding and admission return errors, never panic, and what is
//!   admitted round-trips through `to_wire`/`from_wire`, is addressed to this node and comes
//!   from the authenticated sender. Negative control: with `unvalidated_peer_input` (the pre-fix
//!   switch) the same generator finds a batch admitted that breaks this.
//! - `commands`: arbitrary and mutated command bytes through `Command::decode` and
//!   `Command::check`; a decoded command re-encodes to itself.
//! - `snapshots`: arbitrary and mutated snapshot bytes through `Machine::load`.
//!
//! Case count: `HYPERION_FUZZ_CASES` (a bounded default for CI; million-case runs:
//! `HYPERION_FUZZ_CASES=1000000 cargo test --release -p hyperion --test fuzz_wire`).

use hyperion::faults::FaultInjection;
use hyperion::raft_proto as pb;
use hyperion::replica::inbound::{admit_batch, Admission};
use hyperion::replica::machine::Machine;
use hyperion::replica::wire::{from_wire, to_wire, Command};
use hyperion_raft::{
    AppendReject, Entry, EntryKind, Membership, Message, MessageBody, Snapshot, SnapshotMeta,
};
use hyperion_store::{IntegrityKey, StoreConfig};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use prost::Message as _;

fn cases() -> u32 {
    std::env::var("HYPERION_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

fn runner() -> RunnerConfig {
    RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    }
}

/// A byte-level mutation of an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = bytes.len().max(1);
        match *mutation {
            Mutation::Flip { at, mask } if !bytes.is_empty() => bytes[at % len] ^= mask,
            Mutation::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
            Mutation::Remove { at } if !bytes.is_empty() => {
                bytes.remove(at % len);
            }
            Mutation::Truncate { at } => bytes.truncate(at % (bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

fn set_command(key: Vec<u8>, value: Vec<u8>) -> Vec<u8> {
    Command::Set {
        key,
        value,
        ttl_ms: 5,
        expected_version: 0,
        created_at_ms: 1_700_000_000_000,
    }
    .encode()
}

fn body() -> impl Strategy<Value = MessageBody> {
    let small = 0u64..16;
    prop_oneof![
        (small.clone(), small.clone()).prop_map(|(i, t)| MessageBody::PreVote {
            last_log_index: i,
            last_log_term: t
        }),
        any::<bool>().prop_map(|granted| MessageBody::RequestVoteResponse { granted }),
        (
            small.clone(),
            small.clone(),
            prop::collection::vec(
                (
                    prop::collection::vec(any::<u8>(), 0..6),
                    prop::collection::vec(any::<u8>(), 0..12)
                ),
                0..4
            ),
            small.clone()
        )
            .prop_map(|(prev, term, commands, commit)| MessageBody::Append {
                prev_log_index: prev,
                prev_log_term: term,
                entries: commands
                    .into_iter()
                    .enumerate()
                    .map(|(i, (key, value))| Entry {
                        term: term.max(1),
                        index: prev + 1 + i as u64,
                        kind: if key.is_empty() {
                            EntryKind::NoOp
                        } else {
                            EntryKind::Command(set_command(key, value).into())
                        },
                    })
                    .collect(),
                leader_commit: commit,
                round: 1,
            }),
        (small.clone(), any::<bool>(), small.clone()).prop_map(|(index, ok, hint)| {
            MessageBody::AppendResponse {
                result: if ok {
                    Ok(index)
                } else {
                    Err(AppendReject {
                        rejected_prev_index: index,
                        conflict_term: Some(hint),
                        conflict_index: hint + 1,
                    })
                },
                round: 2,
            }
        }),
        (small.clone(), small.clone()).prop_map(|(commit, round)| MessageBody::Heartbeat {
            leader_commit: commit,
            round
        }),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|data| {
            MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        index: 9,
                        term: 2,
                        membership: Membership {
                            voters: vec![1, 2, 3],
                        },
                    },
                    data: data.into(),
                },
                round: 3,
            }
        }),
        Just(MessageBody::TimeoutNow),
        small.prop_map(|request_id| MessageBody::ReadIndexResponse {
            request_id,
            read_index: Some(request_id),
        }),
    ]
}

fn batch() -> impl Strategy<Value = pb::MessageBatch> {
    prop::collection::vec((1u64..4, body()), 0..6).prop_map(|messages| pb::MessageBatch {
        cluster: "1,2,3".to_string(),
        messages: messages
            .into_iter()
            .map(|(from, body)| {
                to_wire(&Message {
                    from,
                    to: 1,
                    term: 3,
                    body,
                })
            })
            .collect(),
    })
}

fn machine() -> Machine {
    Machine::new(
        StoreConfig::with_defaults(IntegrityKey::new(vec![7; 32])),
        false,
        false,
    )
    .expect("a valid store configuration")
}

proptest! {
    #![proptest_config(runner())]

    #[test]
    fn peer_batches(
        batch in batch(),
        mutations in prop::collection::vec(mutation(), 0..4),
        sender in prop::option::of(1u64..4),
    ) {
        admitted_batches_are_sound(&FaultInjection::default(), batch, &mutations, sender)?;
    }

    #[test]
    fn commands(
        raw in prop::collection::vec(any::<u8>(), 0..64),
        key in prop::collection::vec(any::<u8>(), 0..8),
        mutations in prop::collection::vec(mutation(), 0..4),
        use_raw in any::<bool>(),
    ) {
        let bytes = if use_raw { raw } else { mutate(set_command(key, vec![1, 2, 3]), &mutations) };
        if let Ok(command) = Command::decode(&bytes) {
            let _ = command.check();
            prop_assert_eq!(Command::decode(&command.encode()).unwrap(), command);
        }
    }

    #[test]
    fn snapshots(
        raw in prop::collection::vec(any::<u8>(), 0..96),
        mutations in prop::collection::vec(mutation(), 0..4),
        use_raw in any::<bool>(),
    ) {
        let bytes = if use_raw { raw } else { mutate(SNAPSHOT.with(|s| s.clone()), &mutations) };
        let machine = machine();
        let _ = machine.load(&bytes);
    }
}

/// The `peer_batches` property: a mutated batch decodes and is admitted, or is refused; what is
/// admitted round-trips, is for node 1, and comes from `sender` when the transport named one.
fn admitted_batches_are_sound(
    faults: &FaultInjection,
    batch: pb::MessageBatch,
    mutations: &[Mutation],
    sender: Option<u64>,
) -> Result<(), TestCaseError> {
    let bytes = mutate(batch.encode_to_vec(), mutations);
    let Ok(decoded) = pb::MessageBatch::decode(bytes.as_slice()) else {
        return Ok(());
    };
    let admission = Admission { me: 1, sender };
    if let Ok(admitted) = admit_batch(faults, admission, decoded.messages.clone()) {
        for (message, wire) in admitted.iter().zip(&decoded.messages) {
            prop_assert_eq!(&from_wire(wire.clone()).unwrap(), message);
            prop_assert_eq!(&from_wire(to_wire(message)).unwrap(), message);
            if let Some(sender) = sender {
                prop_assert_eq!(message.from, sender);
            }
            prop_assert_eq!(message.to, 1);
        }
    }
    Ok(())
}

#[test]
fn admission_off_lets_the_fuzzer_find_a_forged_batch() {
    let faults = FaultInjection {
        unvalidated_peer_input: true,
        ..FaultInjection::default()
    };
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 20_000,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = (
        batch(),
        prop::collection::vec(mutation(), 0..4),
        prop::option::of(1u64..4),
    );
    let result = runner.run(&strategy, |(batch, mutations, sender)| {
        admitted_batches_are_sound(&faults, batch, &mutations, sender)
    });
    match result {
        Err(proptest::test_runner::TestError::Fail(reason, _)) => {
            eprintln!("found with admission off: {reason}");
        }
        other => panic!("the fuzzer found nothing with admission off: {other:?}"),
    }
}

thread_local! {
    /// A real snapshot of a machine holding a few entries, to mutate.
    static SNAPSHOT: Vec<u8> = {
        let mut machine = machine();
        for (index, key) in [b"a", b"b", b"c"].iter().enumerate() {
            machine
                .apply(
                    index as u64 + 1,
                    Command::decode(&set_command(key.to_vec(), b"value".to_vec())).unwrap(),
                )
                .unwrap();
        }
        machine.export()
    };
}
