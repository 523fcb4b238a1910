//! Attackers inside the simulated network: forged and malformed peer messages, callers with no
//! identity or the wrong one, and an ACL. The identities a certificate would prove in
//! production are stated in metadata here (the simulator has no TLS); the product's checks are
//! the same code in both builds.
//!
//! The regression of the report that started this: one malformed `Append` from a process that
//! is not a member killed a follower's node loop, and the process lived on as a zombie. With
//! the holes re-opened (`unauthenticated_raft`, `unvalidated_peer_input`, the Raft mutation
//! `skip_message_validation`, and the pre-fix `zombie_on_task_panic`) the same message freezes
//! the follower again; with the product as it is, it is refused, counted, and nothing changes.

use std::time::Duration;

use hyperion::auth::{AuthRules, PresentedCertificate};
use hyperion::client::{Client, ClientSecurity};
use hyperion::config::Config;
use hyperion::proto::CacheStatus;
use hyperion::raft_proto as pb;
use hyperion::raft_proto::raft_service_client::RaftServiceClient;
use hyperion::replica::wire::{to_wire, Command};
use hyperion_raft::{Entry, EntryKind, Membership, Message, MessageBody, Snapshot, SnapshotMeta};
use tonic::Code;

use crate::cluster::{client_node, write_keys, SimCluster};

const ELECTION: Duration = Duration::from_millis(hyperion_raft::DEFAULT_ELECTION_TIMEOUT_MS);

/// The attacker's simulated address (not a member's).
fn attacker() -> madsim::runtime::NodeHandle {
    madsim::runtime::Handle::current()
        .create_node()
        .name("mallory")
        .ip("10.0.9.9".parse().unwrap())
        .build()
}

fn strict(config: &mut Config) {
    config.security.rules = AuthRules {
        require_peer_identity: true,
        require_client_identity: false,
    };
}

/// One batch to `addr`, as `identity` (what its certificate would prove), holding `messages`.
async fn send(
    addr: String,
    cluster: String,
    identity: Option<PresentedCertificate>,
    messages: Vec<Message>,
) -> Result<pb::SendAck, tonic::Status> {
    let mut client = RaftServiceClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(pb::MessageBatch {
        cluster,
        messages: messages.iter().map(to_wire).collect(),
    });
    request.set_timeout(Duration::from_secs(1));
    if let Some(identity) = identity {
        request.metadata_mut().insert(
            hyperion::runtime::SIMULATED_IDENTITY_METADATA,
            identity.simulated().parse().unwrap(),
        );
    }
    client.send(request).await.map(tonic::Response::into_inner)
}

fn member(name: &str) -> Option<PresentedCertificate> {
    Some(PresentedCertificate::Member {
        name: name.to_string(),
    })
}

/// The report's message: an Append that matches the follower's log at `prev` (its last index
/// and term) but whose entries do not follow it, claiming the leader's id.
fn gapped_append(from: u64, to: u64, term: u64, prev: (u64, u64)) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Append {
            prev_log_index: prev.0,
            prev_log_term: prev.1,
            entries: vec![Entry {
                term,
                index: prev.0 + 5,
                kind: EntryKind::NoOp,
            }],
            leader_commit: 0,
            round: 1,
        },
    }
}

fn command_append(from: u64, to: u64, term: u64, command: Vec<u8>) -> Message {
    Message {
        from,
        to,
        term,
        body: MessageBody::Append {
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![Entry {
                term,
                index: 1,
                kind: EntryKind::Command(command.into()),
            }],
            leader_commit: 1,
            round: 1,
        },
    }
}

fn cluster_name(cluster: &SimCluster) -> String {
    cluster.servers[0]
        .replica()
        .expect("running")
        .topology()
        .cluster_name()
}

#[madsim::test]
async fn forged_and_malformed_peer_messages_are_refused_and_counted_and_change_nothing() {
    let cluster = SimCluster::start(3, strict);
    let leader = cluster.wait_for_settled_leader(ELECTION * 4).await.unwrap();
    let follower = (leader + 1) % 3;
    let (leader_id, follower_id) = (leader as u64 + 1, follower as u64 + 1);
    let other = (leader + 2) % 3;
    let (other_id, other_name) = (other as u64 + 1, format!("node{}", other + 1));
    let client = cluster.client();
    let (mallory, writer) = (attacker(), client_node(0));
    write_keys(&writer, &client, 5).await;
    let before = cluster.servers[follower].status().unwrap();
    let addr = cluster.servers[follower].addr.to_string();
    let name = cluster_name(&cluster);
    let term = before.term;
    let refusals = mallory
        .spawn(async move {
            let prev = (before.last_index, term);
            let gapped = || vec![gapped_append(leader_id, follower_id, term + 1, prev)];
            let mut codes = Vec::new();
            // No certificate at all.
            let none = send(addr.clone(), name.clone(), None, gapped()).await;
            codes.push(("no certificate", none.unwrap_err()));
            // A client's certificate.
            let client_cert = Some(PresentedCertificate::Client {
                name: "mallory".to_string(),
            });
            let client = send(addr.clone(), name.clone(), client_cert, gapped()).await;
            codes.push(("client certificate", client.unwrap_err()));
            // A certificate from the peer CA naming a node that is not a member.
            let outsider = send(addr.clone(), name.clone(), member("node4"), gapped()).await;
            codes.push(("non-member certificate", outsider.unwrap_err()));
            // A member's certificate (say, stolen from `other`), claiming to be the leader.
            let claims_other =
                send(addr.clone(), name.clone(), member(&other_name), gapped()).await;
            codes.push(("another member's id", claims_other.unwrap_err()));
            // As that member, under its own id: an undecodable command.
            let undecodable = vec![command_append(
                other_id,
                follower_id,
                term + 1,
                vec![0xff; 3],
            )];
            let garbage = send(addr.clone(), name.clone(), member(&other_name), undecodable).await;
            codes.push(("undecodable command", garbage.unwrap_err()));
            codes
        })
        .await
        .unwrap();
    let expected = [
        ("no certificate", Code::Unauthenticated),
        ("client certificate", Code::PermissionDenied),
        ("non-member certificate", Code::PermissionDenied),
        ("another member's id", Code::InvalidArgument),
        ("undecodable command", Code::InvalidArgument),
    ];
    for ((what, status), (expected_what, code)) in refusals.iter().zip(expected) {
        assert_eq!(*what, expected_what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        eprintln!("{what}: {:?} {}", status.code(), status.message());
    }
    assert!(
        refusals[3]
            .1
            .message()
            .contains("claimed by the certificate of"),
        "{:?}",
        refusals[3].1
    );

    // A member whose messages are implausible: the Raft core drops them (counted).
    let addr = cluster.servers[leader].addr.to_string();
    let name = cluster_name(&cluster);
    let sender = format!("node{}", other + 1);
    let from = other as u64 + 1;
    let ack = mallory
        .spawn(async move {
            let absurd = Message {
                from,
                to: leader_id,
                term: u64::MAX,
                body: MessageBody::Heartbeat {
                    leader_commit: 0,
                    round: 1,
                },
            };
            let forged_round = Message {
                from,
                to: leader_id,
                term,
                body: MessageBody::HeartbeatResponse { round: u64::MAX },
            };
            send(addr, name, member(&sender), vec![absurd, forged_round]).await
        })
        .await
        .unwrap()
        .expect("the batch itself is well formed");
    assert_eq!(ack.accepted, 2);

    // The cluster lives on: the same leader, writes apply on the follower, terms are sane.
    madsim::time::sleep(Duration::from_millis(500)).await;
    let written = write_keys(&writer, &client, 5).await;
    madsim::time::sleep(Duration::from_millis(500)).await;
    let after = cluster.servers[follower].status().unwrap();
    assert!(
        after.applied_index >= written.last().unwrap().1,
        "{after:?}"
    );
    assert_eq!(cluster.leader(), Some(leader));
    for server in &cluster.servers {
        let status = server.status().unwrap();
        assert!(status.term < 1000, "no forged term was adopted: {status:?}");
    }
    let invalid = |i: usize| {
        cluster.servers[i]
            .replica()
            .unwrap()
            .invalid_peer_messages()
    };
    assert!(
        invalid(follower) >= 2,
        "refused batches are counted: {}",
        invalid(follower)
    );
    assert!(invalid(leader) >= 2, "dropped messages are counted");
}

#[madsim::test]
async fn with_the_holes_reopened_one_malformed_append_freezes_a_follower() {
    let reopen = |config: &mut Config| {
        config.faults.unauthenticated_raft = true;
        config.faults.unvalidated_peer_input = true;
        config.faults.raft.skip_message_validation = true;
        config.faults.zombie_on_task_panic = true;
    };
    let cluster = SimCluster::start(3, reopen);
    let leader = cluster.wait_for_settled_leader(ELECTION * 4).await.unwrap();
    let follower = (leader + 1) % 3;
    let (leader_id, follower_id) = (leader as u64 + 1, follower as u64 + 1);
    let client = cluster.client();
    let writer = client_node(0);
    write_keys(&writer, &client, 3).await;
    let status = cluster.servers[follower].status().unwrap();
    let (term, prev) = (status.term, (status.last_index, status.term));
    let (addr, name) = (
        cluster.servers[follower].addr.to_string(),
        cluster_name(&cluster),
    );
    // From a process that is not a member, with no certificate.
    let sent = attacker()
        .spawn(async move {
            let gapped = gapped_append(leader_id, follower_id, term, prev);
            send(addr, name, None, vec![gapped]).await
        })
        .await
        .unwrap();
    assert!(sent.is_ok(), "the pre-fix transport takes it: {sent:?}");
    madsim::time::sleep(Duration::from_millis(300)).await;
    let frozen = cluster.servers[follower].status().unwrap();
    let written = write_keys(&writer, &client, 5).await;
    madsim::time::sleep(Duration::from_millis(500)).await;
    let later = cluster.servers[follower].status().unwrap();
    assert_eq!(
        later.applied_index, frozen.applied_index,
        "the follower's node loop died: it applies nothing more"
    );
    assert!(written.last().unwrap().1 > frozen.applied_index);
}

#[madsim::test]
async fn a_snapshot_that_does_not_load_is_refused_before_it_is_persisted() {
    let cluster = SimCluster::start(3, strict);
    let leader = cluster.wait_for_settled_leader(ELECTION * 4).await.unwrap();
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let (follower_id, other_id) = (follower as u64 + 1, other as u64 + 1);
    let client = cluster.client();
    let writer = client_node(0);
    write_keys(&writer, &client, 3).await;
    let before = cluster.servers[follower].status().unwrap();
    let (addr, name) = (
        cluster.servers[follower].addr.to_string(),
        cluster_name(&cluster),
    );
    let snapshot = Message {
        from: other_id,
        to: follower_id,
        term: before.term + 1,
        body: MessageBody::InstallSnapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: before.commit_index + 100,
                    term: before.term + 1,
                    membership: Membership {
                        voters: vec![1, 2, 3],
                    },
                },
                data: b"not a snapshot of anything".to_vec().into(),
            },
            round: 1,
        },
    };
    let sender = format!("node{other_id}");
    attacker()
        .spawn(async move { send(addr, name, member(&sender), vec![snapshot]).await })
        .await
        .unwrap()
        .expect("delivered to the node loop, which refuses it");
    madsim::time::sleep(Duration::from_millis(300)).await;
    let after = cluster.servers[follower].status().unwrap();
    assert_eq!(
        after.term, before.term,
        "the snapshot's term was not adopted"
    );
    assert!(
        cluster.servers[follower]
            .replica()
            .unwrap()
            .invalid_peer_messages()
            >= 1
    );
    // It restarts from its disk: nothing undecodable was persisted.
    cluster.kill(follower);
    cluster.restart(follower);
    madsim::time::sleep(ELECTION * 2).await;
    let written = write_keys(&writer, &client, 3).await;
    madsim::time::sleep(Duration::from_millis(500)).await;
    let restarted = cluster.servers[follower]
        .status()
        .expect("it started again");
    assert!(restarted.applied_index >= written.last().unwrap().1);
}

#[madsim::test]
async fn client_identities_and_the_acl_are_enforced_in_simulation() {
    let acl = std::env::temp_dir().join(format!("hyperion-sim-acl-{}", std::process::id()));
    std::fs::write(
        &acl,
        "[[rule]]\ncertificate = \"checkout\"\noperations = [\"read\", \"write\"]\nkey_prefixes = [\"cart/\"]\n",
    )
    .unwrap();
    let acl_path = acl.clone();
    let cluster = SimCluster::start(3, move |config| {
        strict(config);
        config.security.rules.require_client_identity = true;
        config.security.acl_file = Some(acl_path.clone());
    });
    cluster.wait_for_settled_leader(ELECTION * 4).await.unwrap();
    let as_client = |identity: Option<&str>| {
        Client::cluster_secured(
            &cluster.addrs(),
            ClientSecurity {
                simulated_identity: identity.map(str::to_string),
                ..ClientSecurity::default()
            },
        )
        .unwrap()
        .with_retry(hyperion::resilience::RetryPolicy {
            max_attempts: 3,
            ..hyperion::client::default_retry_policy()
        })
    };
    let checkout = as_client(Some("client:checkout"));
    let stranger = as_client(Some("client:stranger"));
    let anonymous = as_client(None);
    client_node(0)
        .spawn(async move {
            checkout.set(b"cart/1", b"two apples", 0, 0).await.unwrap();
            let hit = checkout.get(b"cart/1", false).await.unwrap();
            assert_eq!(hit.status, CacheStatus::Hit as i32);
            let denied = checkout.set(b"user/42", b"x", 0, 0).await.unwrap_err();
            assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
            assert_eq!(
                denied.message(),
                "`checkout` may not write this key (HYPERION_ACL_FILE)"
            );
            let stranger = stranger.get(b"cart/1", false).await.unwrap_err();
            assert_eq!(stranger.code(), Code::PermissionDenied);
            let anonymous = anonymous.get(b"cart/1", false).await.unwrap_err();
            assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
        })
        .await
        .unwrap();
    let _ = std::fs::remove_file(&acl);
}

#[test]
fn the_product_refuses_undecodable_commands_before_proposing() {
    let command = Command::Set {
        key: Vec::new(),
        value: Vec::new(),
        ttl_ms: 0,
        expected_version: 0,
        created_at_ms: 0,
    };
    assert_eq!(command.check().unwrap_err().field, "set.key");
}
