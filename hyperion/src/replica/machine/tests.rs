//! Tests of the replicated state machine ([`super`]).

use super::*;
use hyperion_store::IntegrityKey;

fn machine(write_behind: bool, capacity_bytes: u64) -> Machine {
    let mut config = StoreConfig::with_defaults(IntegrityKey::new(vec![7; 32]));
    config.capacity_bytes = capacity_bytes;
    config.max_value_bytes = 4096;
    config.eviction_batch_size = 1;
    config.compression = false;
    config.reads_update_recency = false;
    // One replica alone: its own settings apply from the start (as if the cluster's settings,
    // the same, had been applied first).
    Machine::new(config, write_behind, true).unwrap()
}

fn set(key: &str, value: &[u8], expected_version: u64) -> Command {
    Command::Set {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        ttl_ms: 0,
        expected_version,
        created_at_ms: 1_000,
    }
}

#[test]
fn versions_are_log_indexes_and_a_refused_write_changes_nothing() {
    let mut m = machine(false, 1 << 20);
    assert_eq!(
        m.apply(3, set("k", b"a", 0)).unwrap(),
        WriteOutcome::Set {
            version: 3,
            ttl_ms: 0
        }
    );
    let before = m.digest();
    let refused = m.apply(4, set("k", b"b", 2)).unwrap_err();
    assert!(
        matches!(refused, StoreError::VersionMismatch { current: 3, .. }),
        "{refused:?}"
    );
    assert_eq!(m.digest(), before, "a refused CAS changes nothing");
    assert_eq!(m.applied_index(), 4);
    let deleted = m
        .apply(
            5,
            Command::Delete {
                key: b"k".to_vec(),
                expected_version: 3,
                created_at_ms: 1_001,
            },
        )
        .unwrap();
    assert_eq!(
        deleted,
        WriteOutcome::Deleted {
            existed: true,
            version: 3
        }
    );
    assert_eq!(
        m.read(b"k", 1_002, false, TtlHint::On).outcome,
        ReadOutcome::Miss
    );
}

#[test]
fn an_expiring_entry_never_hints_that_it_never_expires() {
    let mut m = machine(false, 1 << 20);
    let command = Command::Set {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ttl_ms: 100,
        expected_version: 0,
        created_at_ms: 1_000,
    };
    m.apply(3, command).unwrap();
    let hint = |m: &mut Machine, now_ms, hint| match m.read(b"k", now_ms, false, hint).outcome {
        ReadOutcome::Hit {
            ttl_remaining_ms, ..
        } => Some(ttl_remaining_ms),
        _ => None,
    };
    assert_eq!(hint(&mut m, 1_040, TtlHint::On), Some(60));
    // The entry is served in its last millisecond: the hint says it expires, not "never".
    assert_eq!(hint(&mut m, 1_100, TtlHint::On), Some(1));
    assert_eq!(hint(&mut m, 1_100, TtlHint::ZeroInLastMillisecond), Some(0));
    assert_eq!(hint(&mut m, 1_040, TtlHint::Off), Some(0));
    assert_eq!(hint(&mut m, 1_101, TtlHint::On), None, "expired");
}

#[test]
fn export_and_import_carry_the_whole_state() {
    let mut m = machine(true, 1 << 20);
    m.apply_noop(1);
    m.apply(2, set("a", b"1", 0)).unwrap();
    m.apply(3, set("b", b"2", 0)).unwrap();
    let mut copy = machine(true, 1 << 20);
    copy.import(&m.export(), 3).unwrap();
    assert_eq!(copy.digest(), m.digest());
    assert_eq!(copy.applied_index(), 3);
    assert_eq!(copy.write_behind.pending_count(), 2);
    let error = copy.import(b"\xff\xff", 9).unwrap_err();
    assert!(matches!(error, SnapshotLoadError::Decode(_)), "{error}");
    assert_eq!(copy.digest(), m.digest(), "a failed import changes nothing");
    // The hand-framed export is the message prost would encode.
    let encoded = crate::raft_proto::MachineSnapshot {
        store: m.store.export_snapshot().to_vec(),
        write_behind: m.write_behind.encode(),
        settings: m.settings.as_ref().map(settings_to_wire),
    };
    let exported = crate::raft_proto::MachineSnapshot::decode(&m.export()[..]).unwrap();
    assert_eq!(exported, encoded);
    assert_eq!(
        m.export(),
        encoded.encode_to_vec(),
        "the same bytes, fields in order"
    );
}

#[test]
fn an_eviction_refuses_fills_read_before_it() {
    // Room for one 4 KB entry and one small one (the largest entry must fit: 8448 bytes):
    // the second 4 KB write evicts the first.
    let mut m = machine(true, 8600);
    m.apply(1, set("a", &[1; 4000], 0)).unwrap();
    m.apply(2, set("b", &[2; 100], 0)).unwrap();
    m.apply(3, set("c", &[3; 4000], 0)).unwrap();
    assert_eq!(
        m.read(b"a", 1_000, false, TtlHint::Off).outcome,
        ReadOutcome::Miss
    );
    m.apply(
        4,
        Command::Flushed {
            written: vec![(b"a".to_vec(), 1), (b"b".to_vec(), 2), (b"c".to_vec(), 3)],
            fill_horizon: 0,
        },
    )
    .unwrap();
    let fill = |read_at_index| Command::Fill {
        entry: StoredEntry {
            key: b"a".to_vec(),
            value: vec![1; 4000],
            version: 1,
            ttl_ms: 0,
            created_at_ms: 1_000,
        },
        read_at_index,
    };
    assert_eq!(
        m.apply(5, fill(2)).unwrap(),
        WriteOutcome::Filled { stored: false },
        "read before the eviction at index 3"
    );
    assert_eq!(
        m.apply(6, fill(4)).unwrap(),
        WriteOutcome::Filled { stored: true }
    );
}

fn replicas(capacities: [u64; 2], local_settings: bool) -> [Machine; 2] {
    capacities.map(|capacity| {
        let mut config = StoreConfig::with_defaults(IntegrityKey::new(vec![7; 32]));
        config.capacity_bytes = capacity;
        config.max_value_bytes = 4096;
        config.eviction_batch_size = 1;
        config.compression = false;
        config.reads_update_recency = false;
        config.drop_corrupt_on_read = false;
        Machine::new(config, false, local_settings).unwrap()
    })
}

/// Safety hole 7: replicas whose own cache sizes differ evict differently, unless they apply
/// the cluster's settings from the log (the leader's, here the first replica's).
#[test]
fn replicated_settings_make_replicas_with_different_configurations_agree() {
    for local_settings in [true, false] {
        let mut machines = replicas([20_000, 200_000], local_settings);
        let settings = machines[0].local_settings();
        for machine in &mut machines {
            machine
                .apply(1, Command::Settings(settings.clone()))
                .unwrap();
            for i in 0..30u64 {
                let key = format!("k{i}");
                machine
                    .apply(2 + i, set(&key, &[i as u8; 1000], 0))
                    .unwrap();
            }
        }
        let agree = machines[0].digest() == machines[1].digest();
        assert_eq!(
            agree, !local_settings,
            "local_settings={local_settings}: the replicas must agree exactly when the \
             settings are replicated"
        );
    }
}

#[test]
fn a_snapshot_carries_the_cluster_settings_to_a_smaller_node() {
    let [mut big, mut small] = replicas([200_000, 20_000], false);
    let settings = big.local_settings();
    big.apply(1, Command::Settings(settings.clone())).unwrap();
    for i in 0..100u64 {
        big.apply(2 + i, set(&format!("k{i}"), &[1; 1000], 0))
            .unwrap();
    }
    // More than the small node's own capacity: it loads under the cluster's settings.
    small.import(&big.export(), 101).unwrap();
    assert_eq!(small.digest(), big.digest());
    assert_eq!(small.applied_settings().store, settings.store);
}

/// Safety hole 6: an entry damaged on one replica is never served there, and its removal
/// goes through the log, so the replicas stay equal apart from the damaged bytes.
#[test]
fn a_corrupt_entry_is_removed_through_the_log() {
    let mut machines = replicas([200_000, 200_000], false);
    for machine in &mut machines {
        machine.apply(1, set("k", b"value", 0)).unwrap();
    }
    assert!(machines[1].store.corrupt_value_for_test(b"k"));
    assert_eq!(
        machines[1].read(b"k", 1_000, false, TtlHint::Off).outcome,
        ReadOutcome::Corrupt { version: 1 }
    );
    assert_eq!(
        machines[0].digest(),
        machines[1].digest(),
        "quarantined, not diverged"
    );
    for machine in &mut machines {
        machine
            .apply(
                2,
                Command::Remove {
                    key: b"k".to_vec(),
                    version: 1,
                },
            )
            .unwrap();
        assert_eq!(
            machine.read(b"k", 1_000, false, TtlHint::Off).outcome,
            ReadOutcome::Miss
        );
    }
    assert_eq!(machines[0].digest(), machines[1].digest());
}

/// Invalidation events: what each command changed, in order, with the new version (0 when
/// the key is gone); a refused write changes nothing and reports nothing.
#[test]
fn applied_commands_report_their_changes() {
    use crate::watch::Reason;
    // Room for one 4 KB entry and one small one: the second 4 KB write evicts the first.
    let mut m = machine(false, 8600);
    m.apply(1, set("a", &[1; 4000], 0)).unwrap();
    m.apply(2, set("b", &[2; 100], 0)).unwrap();
    assert!(m.apply(3, set("b", b"x", 1)).is_err());
    m.apply(4, set("c", &[3; 4000], 0)).unwrap();
    let delete = |key: &str| Command::Delete {
        key: key.as_bytes().to_vec(),
        expected_version: 0,
        created_at_ms: 1_001,
    };
    m.apply(5, delete("b")).unwrap();
    m.apply(6, delete("never-written")).unwrap();
    let changes: Vec<(String, u64, Reason, u64)> = m
        .take_changes()
        .into_iter()
        .map(|c| {
            (
                String::from_utf8(c.key).unwrap(),
                c.version,
                c.reason,
                c.index,
            )
        })
        .collect();
    let at = |key: &str, version, reason, index| (key.to_string(), version, reason, index);
    assert_eq!(
        changes,
        vec![
            at("a", 1, Reason::Set, 1),
            at("b", 2, Reason::Set, 2),
            at("a", 0, Reason::Evict, 4),
            at("c", 4, Reason::Set, 4),
            at("b", 0, Reason::Delete, 5),
        ]
    );
    assert!(m.take_changes().is_empty(), "taken once");
}

#[test]
#[should_panic(expected = "applied after")]
fn applying_out_of_order_is_a_bug() {
    let mut m = machine(false, 1 << 20);
    m.apply_noop(2);
    m.apply_noop(2);
}
