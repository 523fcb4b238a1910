//! Single-node simulations: the production server and client over madsim-tonic.

use std::time::Duration;

use hyperion::proto::CacheStatus;
use tonic::Code;

use crate::cluster::{client_node, cut_link, heal_link, SimCluster, SimServer};

/// A one-node cluster whose node has elected itself.
async fn single() -> SimServer {
    let mut cluster = SimCluster::start(1, |_| {});
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("a single node elects itself");
    cluster.servers.remove(0)
}

fn no_retries() -> hyperion::resilience::RetryPolicy {
    hyperion::resilience::RetryPolicy {
        max_attempts: 1,
        ..hyperion::client::default_retry_policy()
    }
}

/// Lets a freshly started client node settle.
async fn settle() {
    madsim::time::sleep(Duration::from_millis(10)).await;
}

/// The simulated gRPC server serves requests concurrently, as a real HTTP/2 server does: 64
/// Gets sent at once finish within a few round trips of madsim's 1-10 ms link latency. The
/// published madsim-tonic server took one connection at a time, each after at least 1 ms of
/// simulated time, and waited for its request before the next (two connections per request:
/// 64 Gets took at least 128 ms, about 140 ms measured). `sim/vendor/madsim-tonic/PATCHED.md`.
#[madsim::test]
async fn concurrent_requests_are_served_concurrently() {
    let server = single().await;
    let client_node = client_node(0);
    let client = server.client();
    client_node
        .spawn(async move {
            settle().await;
            client.set(b"k", b"v", 0, 0).await.unwrap();
            let started = hyperion::runtime::now();
            let gets = (0..64).map(|_| {
                let client = client.clone();
                async move { client.get(b"k", false).await }
            });
            for answer in futures::future::join_all(gets).await {
                assert_eq!(answer.unwrap().value, b"v");
            }
            let all = started.elapsed();
            assert!(
                all < Duration::from_millis(64),
                "64 concurrent Gets took {all:?} of simulated time"
            );
        })
        .await
        .unwrap();
}

#[madsim::test]
async fn set_get_batch_get_delete_over_simulated_grpc() {
    let server = single().await;
    let client_node = client_node(0);
    let client = server.client();
    client_node
        .spawn(async move {
            settle().await;
            let first = client.set(b"user:1", b"alice", 0, 0).await.unwrap();
            let second = client.set(b"user:2", b"bob", 0, 0).await.unwrap();
            assert!(second.version > first.version, "versions grow");

            let hit = client.get(b"user:1", false).await.unwrap();
            assert_eq!(hit.status, CacheStatus::Hit as i32);
            assert_eq!(hit.value, b"alice");
            assert_eq!(hit.version, first.version);

            let keys: Vec<Vec<u8>> = vec![b"user:2".to_vec(), b"nope".to_vec(), b"user:1".to_vec()];
            let batch = client.batch_get(&keys, false).await.unwrap();
            let statuses: Vec<i32> = batch.iter().map(|r| r.status).collect();
            assert_eq!(
                statuses,
                vec![
                    CacheStatus::Hit as i32,
                    CacheStatus::Miss as i32,
                    CacheStatus::Hit as i32
                ]
            );
            assert_eq!(batch[0].key, b"user:2");
            assert_eq!(batch[0].value, b"bob");

            let cas = client
                .set(b"user:1", b"mallory", 0, first.version + 100)
                .await
                .unwrap_err();
            assert_eq!(cas.code(), Code::FailedPrecondition);

            let deleted = client.delete(b"user:1", first.version).await.unwrap();
            assert!(deleted.existed);
            assert_eq!(deleted.version, first.version);
            let gone = client.get(b"user:1", false).await.unwrap();
            assert_eq!(gone.status, CacheStatus::Miss as i32);

            let empty = client.get(b"", false).await.unwrap_err();
            assert_eq!(empty.code(), Code::InvalidArgument);
        })
        .await
        .unwrap();
}

#[madsim::test]
async fn clogged_link_gives_unavailable_and_heals() {
    let server = single().await;
    let client_node = client_node(0);
    let server_handle = server.handle.clone();
    let client = server
        .client()
        .with_deadline(Duration::from_millis(500))
        .with_retry(no_retries());
    let node = client_node.clone();
    client_node
        .spawn(async move {
            settle().await;
            client.set(b"k", b"v", 0, 0).await.unwrap();
            cut_link(&node, &server_handle);
            let error = client.get(b"k", false).await.unwrap_err();
            assert_eq!(error.code(), Code::Unavailable, "{error:?}");
            heal_link(&node, &server_handle);
            let hit = client.get(b"k", false).await.unwrap();
            assert_eq!(hit.value, b"v");
        })
        .await
        .unwrap();
}

#[madsim::test]
async fn ttl_expires_on_the_node_clock_and_stale_reads_see_it() {
    let server = single().await;
    let clock = server.clock.clone();
    let client_node = client_node(0);
    let client = server.client();
    client_node
        .spawn(async move {
            settle().await;
            let written = client.set(b"session", b"token", 1_000, 0).await.unwrap();
            assert_eq!(written.ttl_ms, 1_000, "no staggering unless configured");
            let fresh = client.get(b"session", false).await.unwrap();
            assert_eq!(fresh.status, CacheStatus::Hit as i32);
            assert!(fresh.ttl_remaining_ms > 0 && fresh.ttl_remaining_ms <= 1_000);

            madsim::time::sleep(Duration::from_millis(1_200)).await;
            let expired = client.get(b"session", false).await.unwrap();
            assert_eq!(expired.status, CacheStatus::Miss as i32);
            let stale = client.get(b"session", true).await.unwrap();
            assert_eq!(stale.status, CacheStatus::Hit as i32);
            assert!(stale.is_stale);
            assert_eq!(stale.value, b"token");

            // A node clock running ahead expires entries early on that node: time is data.
            client.set(b"other", b"x", 10_000, 0).await.unwrap();
            clock.jump_ms(20_000);
            let skewed = client.get(b"other", false).await.unwrap();
            assert_eq!(skewed.status, CacheStatus::Miss as i32);

            // After the stale grace (5 s) the reaper frees expired entries.
            madsim::time::sleep(Duration::from_secs(6)).await;
            let reaped = client.get(b"session", true).await.unwrap();
            assert_eq!(reaped.status, CacheStatus::Miss as i32);
        })
        .await
        .unwrap();
}

#[madsim::test]
async fn rate_limit_applies_per_client_in_simulation() {
    let server = single().await;
    let client_node = client_node(0);
    let client = server.client();
    client_node
        .spawn(async move {
            settle().await;
            // BatchGet allows 100 calls per second per client: 150 concurrent calls within a few
            // simulated milliseconds exceed it.
            let keys = vec![b"k".to_vec()];
            let calls = (0..150).map(|_| {
                let client = client.clone();
                let keys = keys.clone();
                async move { client.batch_get(&keys, false).await }
            });
            let results = futures::future::join_all(calls).await;
            let served = results.iter().filter(|r| r.is_ok()).count();
            // A second's budget, plus what refilled while the calls were in flight.
            assert!((100..150).contains(&served), "{served} of 150 served");
            let refused = results.into_iter().find_map(Result::err).unwrap();
            assert_eq!(refused.code(), Code::ResourceExhausted);
            assert!(refused.metadata().get("retry-after").is_some());
        })
        .await
        .unwrap();
}
