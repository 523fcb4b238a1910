//! Shadow traffic between two clusters on loopback (tokio build): a share of the primary's
//! requests is mirrored, stable per key, reads are compared, and a shadow that is down or slow
//! costs the primary nothing but dropped mirrors.

use std::time::Duration;

use hyperion::client::Client;
use hyperion::proto::CacheStatus;

mod local;
use local::{generous_limits, loopback_config, start, Running};

async fn primary_mirroring_to(shadow_addr: String, percent: u8) -> Running {
    let mut config = loopback_config();
    config.shadow_addr = Some(shadow_addr);
    config.flags.shadow_traffic_percent = percent;
    start(config, generous_limits()).await
}

/// The primary's shadow counters, from its `NodeAdmin.Status` (what `hyperion-cli status`
/// shows).
async fn shadow_status(client: &Client) -> hyperion::raft_proto::ShadowStatus {
    let (_, status) = client.statuses().await.remove(0);
    status
        .expect("status")
        .shadow
        .expect("shadow traffic is configured")
}

/// Waits (bounded) until `done` holds for the primary's shadow counters.
async fn wait_for(
    client: &Client,
    done: impl Fn(&hyperion::raft_proto::ShadowStatus) -> bool,
) -> hyperion::raft_proto::ShadowStatus {
    for _ in 0..200 {
        let status = shadow_status(client).await;
        if done(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    shadow_status(client).await
}

#[tokio::test]
async fn every_request_is_mirrored_at_100_percent_and_reads_are_compared() {
    let shadow = start(loopback_config(), generous_limits()).await;
    let primary = primary_mirroring_to(shadow.addr.to_string(), 100).await;
    let client = Client::new(&primary.addr.to_string()).unwrap();
    let shadow_client = Client::new(&shadow.addr.to_string()).unwrap();
    for i in 0..20 {
        let key = format!("k{i}");
        client.set(key.as_bytes(), b"v", 60_000, 0).await.unwrap();
    }
    // Writes first (the shadow must hold them before reads compare).
    let status = wait_for(&client, |s| s.mirrored >= 20 && s.errors == 0).await;
    assert_eq!((status.mirrored, status.dropped, status.errors), (20, 0, 0));
    for _ in 0..100 {
        let status = shadow_status(&client).await;
        let hit = shadow_client.get(b"k19", false).await.unwrap();
        if hit.status == CacheStatus::Hit as i32 || status.mirrored > 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for i in 0..20 {
        let key = format!("k{i}");
        client.get(key.as_bytes(), false).await.unwrap();
    }
    let keys: Vec<Vec<u8>> = (0..5).map(|i| format!("k{i}").into_bytes()).collect();
    client.batch_get(&keys, false).await.unwrap();
    client.delete(b"k0", 0).await.unwrap();
    let status = wait_for(&client, |s| s.compared >= 25 && s.mirrored >= 46).await;
    assert_eq!(status.compared, 25, "{status:?}");
    assert_eq!(status.mismatches, 0, "{status:?}");
    assert_eq!(status.percent, 100);
    // The shadow cluster holds the writes (and the delete).
    let mirrored = shadow_client.get(b"k7", false).await.unwrap();
    assert_eq!(mirrored.status, CacheStatus::Hit as i32);
    assert_eq!(mirrored.value, b"v");
    let deleted = shadow_client.get(b"k0", false).await.unwrap();
    assert_eq!(deleted.status, CacheStatus::Miss as i32);
    // A migration that went wrong: the shadow holds another value; a read finds it out.
    shadow_client.set(b"k3", b"other", 0, 0).await.unwrap();
    client.get(b"k3", false).await.unwrap();
    let status = wait_for(&client, |s| s.compared >= 26).await;
    assert_eq!(status.mismatches, 1, "{status:?}");
    primary.stop().await;
    shadow.stop().await;
}

#[tokio::test]
async fn a_share_of_keys_is_mirrored_always_or_never() {
    let shadow = start(loopback_config(), generous_limits()).await;
    let primary = primary_mirroring_to(shadow.addr.to_string(), 30).await;
    let client = Client::new(&primary.addr.to_string()).unwrap();
    let shadow_client = Client::new(&shadow.addr.to_string()).unwrap();
    for i in 0..200 {
        let key = format!("key{i}");
        client.set(key.as_bytes(), b"v", 0, 0).await.unwrap();
        client.set(key.as_bytes(), b"w", 0, 0).await.unwrap();
    }
    // Enqueued as each write was answered: the count is final.
    let status = shadow_status(&client).await;
    assert_eq!((status.dropped, status.errors), (0, 0), "{status:?}");
    let mirrored_keys = status.mirrored / 2;
    assert!(
        (40..=80).contains(&mirrored_keys),
        "{mirrored_keys} of 200 keys at 30 %"
    );
    // Each key's two writes went together: a mirrored key holds the second value (once the
    // shadow has applied what was sent; bounded wait).
    let mut present = 0;
    for _ in 0..100 {
        present = 0;
        let mut second = true;
        for i in 0..200 {
            let key = format!("key{i}");
            let read = shadow_client.get(key.as_bytes(), false).await.unwrap();
            if read.status == CacheStatus::Hit as i32 {
                present += 1;
                second &= read.value == b"w";
            }
        }
        if present == mirrored_keys && second {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(present, mirrored_keys, "{status:?}");
    primary.stop().await;
    shadow.stop().await;
}

/// Latencies of `count` sequential Gets, sorted, in microseconds.
async fn get_latencies_us(client: &Client, count: usize) -> Vec<u128> {
    let mut took = Vec::with_capacity(count);
    for i in 0..count {
        let key = format!("key{}", i % 50);
        let started = hyperion::runtime::now();
        client
            .get(key.as_bytes(), false)
            .await
            .expect("the primary answers");
        took.push(started.elapsed().as_micros());
    }
    took.sort_unstable();
    took
}

fn p99(sorted: &[u128]) -> u128 {
    sorted[(sorted.len() - 1) * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_down_or_slow_adds_no_latency_or_errors_to_the_primary() {
    const GETS: usize = 2_000;
    let shadow = start(loopback_config(), generous_limits()).await;
    let healthy = primary_mirroring_to(shadow.addr.to_string(), 100).await;
    // Slow: accepts connections and never answers (each mirrored request waits its deadline).
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let slow = primary_mirroring_to(black_hole.local_addr().unwrap().to_string(), 100).await;
    // Down: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let down = primary_mirroring_to(down_addr, 100).await;
    let mut p99s = Vec::new();
    for (name, node) in [("healthy", &healthy), ("slow", &slow), ("down", &down)] {
        let client = Client::new(&node.addr.to_string()).unwrap();
        for i in 0..50 {
            let key = format!("key{i}");
            client.set(key.as_bytes(), b"v", 0, 0).await.unwrap();
        }
        let took = get_latencies_us(&client, GETS).await;
        let status = shadow_status(&client).await;
        eprintln!(
            "shadow {name}: primary Get p50 {} us, p99 {} us; {status:?}",
            took[took.len() / 2],
            p99(&took)
        );
        p99s.push(p99(&took));
        match name {
            "slow" => assert!(status.dropped > 0, "a full queue drops: {status:?}"),
            "down" => assert!(status.errors > 0, "{status:?}"),
            // A healthy shadow drops nothing; on a loaded test machine one mirrored request in
            // a hundred may still miss the mirror's 500 ms deadline (an error, never the
            // primary's).
            _ => assert!(
                status.dropped == 0 && status.errors * 100 <= status.mirrored,
                "{status:?}"
            ),
        }
    }
    eprintln!(
        "primary Get p99 ratio to a healthy shadow: slow {:.2}, down {:.2}",
        p99s[1] as f64 / p99s[0] as f64,
        p99s[2] as f64 / p99s[0] as f64
    );
    // Structural, not a performance target: had any request waited for the shadow, its p99
    // would be the mirror's deadline (500 ms).
    let deadline_us = hyperion::shadow::SHADOW_DEADLINE.as_micros();
    assert!(
        p99s.iter().all(|p| *p < deadline_us / 5),
        "no primary request waits for the shadow: {p99s:?}"
    );
    drop(black_hole);
    for node in [healthy, slow, down, shadow] {
        node.stop().await;
    }
}
