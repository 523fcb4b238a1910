//! The server over real HTTP/2 on loopback (tokio build): every RPC, every error status.

use std::time::Duration;

use hyperion::api::{CURRENT_VERSION_METADATA, RETRY_AFTER_MS_METADATA};
use hyperion::client::Client;
use hyperion::limits::RateLimits;
use hyperion::proto::{BatchGetRequest, CacheStatus, GetRequest, SetRequest};
use hyperion::runtime::NodeClock;
use hyperion::server::Server;
use tonic::Code;

mod local;
use local::{generous_limits, loopback_config, raw_client, start};

#[tokio::test]
async fn every_rpc_round_trips_over_http2() {
    let server = start(loopback_config(), generous_limits()).await;
    let client = Client::new(&server.addr.to_string()).unwrap();

    let first = client.set(b"greeting", b"hello", 0, 0).await.unwrap();
    assert_eq!(first.ttl_ms, 0);
    let hit = client.get(b"greeting", false).await.unwrap();
    assert_eq!(hit.status, CacheStatus::Hit as i32);
    assert_eq!(hit.value, b"hello");
    assert_eq!(hit.version, first.version);
    assert_eq!(hit.key, b"greeting");
    assert_eq!(hit.ttl_remaining_ms, 0, "no expiry, no hint");

    // Compare-and-set succeeds on the current version and moves it forward.
    let second = client
        .set(b"greeting", b"hi", 60_000, first.version)
        .await
        .unwrap();
    assert!(second.version > first.version);
    let hinted = client.get(b"greeting", false).await.unwrap();
    assert!(hinted.ttl_remaining_ms > 0 && hinted.ttl_remaining_ms <= 60_000);

    // Binary keys and a large compressible value (LZ4 inside, transparent outside).
    let key = vec![0u8, 159, 146, 150];
    let value: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
    client.set(&key, &value, 0, 0).await.unwrap();
    assert_eq!(client.get(&key, false).await.unwrap().value, value);

    // BatchGet: order kept, misses reported, and the client splits lists above 100 keys.
    let keys: Vec<Vec<u8>> = (0..250).map(|i| format!("k{i}").into_bytes()).collect();
    for key in keys.iter().step_by(2) {
        client.set(key, key, 0, 0).await.unwrap();
    }
    let batch = client.batch_get(&keys, false).await.unwrap();
    assert_eq!(batch.len(), 250);
    for (i, response) in batch.iter().enumerate() {
        assert_eq!(response.key, keys[i]);
        let expected = if i % 2 == 0 {
            CacheStatus::Hit
        } else {
            CacheStatus::Miss
        };
        assert_eq!(response.status, expected as i32, "key {i}");
    }

    // Operators' view: RaftService.Status (what `hyperion-cli status` prints).
    let mut raft = hyperion::raft_proto::raft_service_client::RaftServiceClient::connect(format!(
        "http://{}",
        server.addr
    ))
    .await
    .unwrap();
    let status = raft
        .status(hyperion::raft_proto::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.role, "leader");
    assert_eq!(status.leader_id, status.node_id);
    assert!(status.entries >= 127, "{status:?}");
    assert!(status.database.is_none(), "cache-only");
    let wrong_cluster = raft
        .status(hyperion::raft_proto::StatusRequest {
            cluster: "someone else".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong_cluster.code(), Code::FailedPrecondition);

    let deleted = client.delete(b"greeting", 0).await.unwrap();
    assert!(deleted.existed);
    assert_eq!(deleted.version, second.version);
    let again = client.delete(b"greeting", 0).await.unwrap();
    assert!(!again.existed);
    assert_eq!(again.version, 0);
    assert_eq!(
        client.get(b"greeting", false).await.unwrap().status,
        CacheStatus::Miss as i32
    );

    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_statuses_and_changes_nothing() {
    let server = start(loopback_config(), generous_limits()).await;
    let mut raw = raw_client(server.addr).await;
    let client = Client::new(&server.addr.to_string()).unwrap();
    let base = client.set(b"k", b"v", 0, 0).await.unwrap();

    let empty = client.set(b"", b"v", 0, 0).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(empty.message(), "key: must not be empty");

    let long_key = vec![b'x'; 4097];
    let long = client.get(&long_key, false).await.unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);
    assert!(
        long.message()
            .contains("4097 bytes exceeds the limit of 4096"),
        "{}",
        long.message()
    );

    let too_big = vec![1u8; 512 * 1024 + 1];
    let error = client.set(b"k", &too_big, 0, 0).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("max_value_size_kb (512 KiB"),
        "{}",
        error.message()
    );

    let cas = client
        .set(b"k", b"w", 0, base.version + 7)
        .await
        .unwrap_err();
    assert_eq!(cas.code(), Code::FailedPrecondition);
    assert_eq!(
        cas.metadata()
            .get(CURRENT_VERSION_METADATA)
            .unwrap()
            .to_str()
            .unwrap(),
        base.version.to_string()
    );
    let cas_missing = client.delete(b"absent", 3).await.unwrap_err();
    assert_eq!(cas_missing.code(), Code::FailedPrecondition);
    assert!(
        cas_missing.message().contains("current version 0"),
        "{}",
        cas_missing.message()
    );

    let timeout = raw
        .get(GetRequest {
            key: b"k".to_vec(),
            allow_stale: false,
            timeout_ms: 60_001,
            tracking_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(timeout.code(), Code::InvalidArgument);
    assert!(timeout.message().starts_with("timeout_ms:"));

    let keys: Vec<Vec<u8>> = (0..101).map(|i| vec![i as u8 + 1]).collect();
    let batch = raw
        .batch_get(BatchGetRequest {
            keys,
            allow_stale: false,
            timeout_ms: 0,
            tracking_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(batch.code(), Code::InvalidArgument);
    assert!(
        batch
            .message()
            .contains("101 keys exceeds the limit of 100"),
        "{}",
        batch.message()
    );
    let bad_index = raw
        .batch_get(BatchGetRequest {
            keys: vec![b"a".to_vec(), Vec::new()],
            allow_stale: false,
            timeout_ms: 0,
            tracking_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_index.message(), "keys[1]: must not be empty");
    let no_keys = raw
        .batch_get(BatchGetRequest {
            keys: Vec::new(),
            allow_stale: false,
            timeout_ms: 0,
            tracking_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(no_keys.code(), Code::InvalidArgument);

    // Nothing above changed the entry.
    let unchanged = client.get(b"k", false).await.unwrap();
    assert_eq!(
        (unchanged.value.as_slice(), unchanged.version),
        (&b"v"[..], base.version)
    );
    assert_eq!(server.replica.stats().entries, 1);
    server.stop().await;
}

#[tokio::test]
async fn corrupted_entries_are_never_served() {
    let server = start(loopback_config(), generous_limits()).await;
    let client = Client::new(&server.addr.to_string()).unwrap();
    client.set(b"account", b"balance=100", 0, 0).await.unwrap();
    assert!(server.replica.corrupt_for_test(b"account"));
    let poisoned = client.get(b"account", false).await.unwrap();
    assert_eq!(poisoned.status, CacheStatus::Error as i32);
    assert!(poisoned.value.is_empty());
    assert!(poisoned.error_message.contains("integrity"));
    assert_eq!(
        client.get(b"account", false).await.unwrap().status,
        CacheStatus::Miss as i32
    );
    assert_eq!(server.replica.stats().integrity_failures, 1);
    server.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_resource_exhausted_with_retry_after() {
    let limits = RateLimits {
        get_per_sec: 1_000_000,
        set_per_sec: 5,
        batch_get_per_sec: 2,
        admin_per_sec: 0,
    };
    let server = start(loopback_config(), limits).await;
    let mut raw = raw_client(server.addr).await;
    let mut refused = None;
    for i in 0..20u8 {
        let request = SetRequest {
            key: vec![b'k', i],
            value: vec![i],
            ttl_ms: 0,
            expected_version: 0,
        };
        if let Err(status) = raw.set(request).await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("20 quick writes exceed 5 per second");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("5 Set requests per second"),
        "{}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap(),
        "1"
    );
    assert!(status.metadata().get(RETRY_AFTER_MS_METADATA).is_some());
    server.stop().await;
}

#[tokio::test]
async fn product_limits_are_the_default() {
    assert_eq!(
        RateLimits::default(),
        RateLimits {
            get_per_sec: 10_000,
            set_per_sec: 1_000,
            batch_get_per_sec: 100,
            admin_per_sec: 10,
        }
    );
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_a_clear_error_within_the_warmup_budget() {
    // The 2025-01-08 lesson: the pool is proven before serving, within a bounded time.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = loopback_config();
    config.database_dsn = Some(hyperion::config::Secret::new(
        format!("postgresql://hyperion@127.0.0.1:{closed_port}/hyperion").into_bytes(),
    ));
    config.database.connect_timeout_ms = 200;
    config.database.query_timeout_ms = 300;
    config.database.warmup_timeout_ms = 1_000;
    let started = hyperion::runtime::now();
    let error = Server::bind(&config, NodeClock::system())
        .await
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(message.starts_with("COCKROACH_DSN:"), "{message}");
    assert!(message.contains("unreachable at start"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the warm-up budget"
    );
    let _ = std::fs::remove_dir_all(&config.data_dir);
}

/// The served node's invalidation hub sees the writes it applies, in log order, with the new
/// version (0 once deleted); a tracked key is reported with a broadcast prefix's keys.
#[tokio::test]
async fn applied_writes_reach_the_invalidation_hub_in_log_order() {
    use hyperion::watch::{Event, Reason};
    let server = start(loopback_config(), generous_limits()).await;
    let client = Client::new(&server.addr.to_string()).unwrap();
    let hub = server.replica.watch();
    let broadcast = hub.subscribe(vec![b"user:".to_vec()], None).unwrap();
    let tracking = hub.subscribe(vec![], None).unwrap();
    let first = client.set(b"user:1", b"a", 0, 0).await.unwrap();
    tracking.track(b"order:9", 0, || None);
    let second = client.set(b"user:1", b"b", 0, 0).await.unwrap();
    client.set(b"order:9", b"x", 0, 0).await.unwrap();
    client.delete(b"user:1", 0).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = tokio::time::timeout(Duration::from_secs(5), broadcast.next_batch())
            .await
            .expect("events within 5 s")
            .expect("open");
        seen.extend(batch.into_iter().filter_map(|event| match event {
            Event::Changed(change) => Some((change.version, change.reason, change.index)),
            _ => None,
        }));
    }
    assert_eq!(
        seen.iter().map(|(v, r, _)| (*v, *r)).collect::<Vec<_>>(),
        vec![
            (first.version, Reason::Set),
            (second.version, Reason::Set),
            (0, Reason::Delete)
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "log order: {seen:?}"
    );
    let tracked = tokio::time::timeout(Duration::from_secs(5), tracking.next_batch())
        .await
        .expect("the tracked key's change within 5 s")
        .expect("open");
    assert!(
        matches!(&tracked[..], [Event::Changed(c)] if c.key == b"order:9" && c.reason == Reason::Set),
        "{tracked:?}"
    );
    drop((broadcast, tracking));
    server.stop().await;
}
