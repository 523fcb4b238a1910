//! The system of record in simulation: write-behind, read-through, version floors and the
//! circuit breaker, through the production code against the simulated database.

use std::time::Duration;

use hyperion::db::{Availability, SimDatabase, SimDbConfig};
use hyperion::proto::CacheStatus;
use rand::SeedableRng;

use crate::cluster::{client_node, write_keys, DatabaseSetup, SimCluster};

/// The product's election timeout.
const ELECTION: Duration = Duration::from_millis(hyperion_raft::DEFAULT_ELECTION_TIMEOUT_MS);

fn database() -> SimDatabase {
    SimDatabase::new(
        SimDbConfig::default(),
        16,
        rand_chacha::ChaCha8Rng::seed_from_u64(madsim::rand::random()),
    )
}

/// Waits until the leader has written every pending mutation.
async fn drained(cluster: &SimCluster) {
    for _ in 0..500 {
        if let Some(leader) = cluster.leader() {
            if cluster.servers[leader].write_behind_backlog() == Some((0, 0)) {
                return;
            }
        }
        madsim::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the write-behind backlog did not drain in 10 s");
}

#[madsim::test]
async fn entries_survive_the_loss_of_the_whole_cluster() {
    let db = database();
    let cluster = SimCluster::start_with(3, |_| {}, Some(DatabaseSetup::new(db.clone())));
    cluster
        .wait_for_leader(ELECTION * 4)
        .await
        .expect("a leader");
    let client = cluster.client();
    let node = client_node(0);
    let written = write_keys(&node, &client, 60).await;
    node.spawn({
        let client = client.clone();
        async move {
            for i in 0..10u32 {
                client.delete(format!("k{i}").as_bytes(), 0).await.unwrap();
            }
        }
    })
    .await
    .unwrap();
    drained(&cluster).await;
    assert_eq!(
        db.row(b"k30").expect("written behind").version,
        written[30].1
    );
    assert!(db.row(b"k3").expect("a tombstone").deleted);

    // Every node loses its disk: the cluster starts over, empty, over the same database.
    for i in 0..3 {
        cluster.kill(i);
        cluster.servers[i].disk.wipe();
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster
        .wait_for_leader(ELECTION * 4)
        .await
        .expect("a new leader");
    let max_before = written.iter().map(|(_, v)| *v).max().unwrap();
    node.spawn(async move {
        for (i, (key, version)) in written.iter().enumerate() {
            let read = client.get(key.as_bytes(), false).await.unwrap();
            if i < 10 {
                assert_eq!(read.status, CacheStatus::Miss as i32, "{key} was deleted");
            } else {
                assert_eq!(read.status, CacheStatus::Hit as i32, "{key} read through");
                assert_eq!(
                    (read.value.as_slice(), read.version),
                    (key.as_bytes(), *version)
                );
            }
        }
        // New writes are never older than what the database holds (the version floor).
        let newer = client.set(b"k30", b"new", 0, 0).await.unwrap();
        assert!(
            newer.version > max_before,
            "{} <= {max_before}",
            newer.version
        );
    })
    .await
    .unwrap();
    drained(&cluster).await;
    assert_eq!(db.row(b"k30").unwrap().value, b"new");
}

#[madsim::test]
async fn concurrent_misses_for_one_key_make_one_query() {
    let db = database();
    let cluster = SimCluster::start_with(3, |_| {}, Some(DatabaseSetup::new(db.clone())));
    cluster.wait_for_leader(ELECTION * 4).await.unwrap();
    let client = cluster.client();
    // Write, drain, then lose the cache's copy by restarting every node on empty disks.
    let node = client_node(0);
    node.spawn({
        let client = client.clone();
        async move { client.set(b"hot", b"value", 0, 0).await.unwrap() }
    })
    .await
    .unwrap();
    drained(&cluster).await;
    for i in 0..3 {
        cluster.kill(i);
        cluster.servers[i].disk.wipe();
        cluster.restart(i);
    }
    cluster
        .wait_for_settled_leader(ELECTION * 4)
        .await
        .expect("every node knows the new leader");
    let loads_before = db.stats().loads;
    let hits = node
        .spawn(async move {
            let reads = (0..100).map(|_| {
                let client = client.clone();
                async move { client.get(b"hot", false).await }
            });
            futures::future::join_all(reads)
                .await
                .into_iter()
                .filter(|r| {
                    r.as_ref()
                        .is_ok_and(|r| r.status == CacheStatus::Hit as i32)
                })
                .count()
        })
        .await
        .unwrap();
    assert_eq!(hits, 100);
    let loads = db.stats().loads - loads_before;
    assert_eq!(
        loads, 1,
        "database loads for 100 concurrent misses of one key"
    );
}

#[madsim::test]
async fn the_breaker_opens_during_an_outage_and_misses_answer_fast() {
    let db = database();
    let cluster = SimCluster::start_with(3, |_| {}, Some(DatabaseSetup::new(db.clone())));
    cluster.wait_for_leader(ELECTION * 4).await.unwrap();
    let client = cluster.client();
    db.set_availability(Availability::Refusing);
    let node = client_node(0);
    let (late, elapsed_ms) = node
        .spawn(async move {
            // Distinct keys, so neither single-flight nor the negative cache hides the outage.
            for i in 0..60u32 {
                let _ = client.get(format!("missing-{i}").as_bytes(), false).await;
            }
            let started = hyperion::runtime::now();
            let late = client.get(b"missing-late", false).await.unwrap();
            (late, started.elapsed().as_millis())
        })
        .await
        .unwrap();
    assert_eq!(late.status, CacheStatus::Miss as i32);
    assert!(
        late.error_message.contains("circuit"),
        "{}",
        late.error_message
    );
    assert!(
        elapsed_ms < 50,
        "an open breaker answers at once, took {elapsed_ms} ms"
    );
    let leader = cluster.leader().unwrap();
    assert_eq!(
        cluster.servers[leader].database_breaker_state(),
        Some(1),
        "open"
    );

    // The database returns; after the cool-down, half-open probes close the breaker.
    db.set_availability(Availability::Up);
    madsim::time::sleep(Duration::from_secs(6)).await;
    let client = cluster.client();
    node.spawn(async move {
        for i in 0..5u32 {
            let _ = client.get(format!("probe-{i}").as_bytes(), false).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(
        cluster.servers[leader].database_breaker_state(),
        Some(0),
        "closed again"
    );
}
