//! A real three-process cluster on loopback (tokio build): writes under load through the client
//! library, `kill -9` of the leader, a new leader within seconds, and every acknowledged write
//! readable afterwards. Bounded in time; loopback only.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyperion::client::Client;
use hyperion::proto::CacheStatus;
use hyperion::raft_proto::raft_service_client::RaftServiceClient;
use hyperion::raft_proto::StatusRequest;

/// Kills the processes and removes their data when the test ends, however it ends.
struct Cluster {
    children: Vec<Option<Child>>,
    addrs: Vec<String>,
    dir: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn start_cluster() -> Cluster {
    start_cluster_with(&[])
}

/// [`start_cluster`] with more environment variables for every node.
fn start_cluster_with(extra: &[(&str, &str)]) -> Cluster {
    let dir = std::env::temp_dir().join(format!("hyperion-processes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let members = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("n{}={addr}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let children = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let child = Command::new(env!("CARGO_BIN_EXE_hyperion"))
                .arg("serve")
                .env_clear()
                .env("HYPERION_CLUSTER_NODES", &members)
                .env("HYPERION_NODE_ID", format!("n{}", i + 1))
                .env("HYPERION_LISTEN_ADDR", addr)
                .env("HYPERION_ADMIN_ADDR", "127.0.0.1:0")
                .env("HYPERION_DATA_DIR", dir.join(format!("n{}", i + 1)))
                // Faster elections than production (500 ms) keep the test short.
                .env("HYPERION_RAFT_HEARTBEAT_MS", "50")
                .env("LOG_LEVEL", "warn")
                .envs(extra.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("hyperion starts");
            Some(child)
        })
        .collect();
    Cluster {
        children,
        addrs,
        dir,
    }
}

/// The cluster's member list as a Status request names it (`1=host:port,...`).
fn member_list(cluster: &Cluster) -> String {
    cluster
        .addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{}={addr}", i + 1))
        .collect::<Vec<_>>()
        .join(",")
}

/// The leader's index according to the nodes' Status RPC, if a reachable node names one.
async fn leader(cluster: &Cluster) -> Option<usize> {
    let name = member_list(cluster);
    for (i, addr) in cluster.addrs.iter().enumerate() {
        if cluster.children[i].is_none() {
            continue;
        }
        let Ok(mut raft) = RaftServiceClient::connect(format!("http://{addr}")).await else {
            continue;
        };
        let Ok(status) = raft
            .status(StatusRequest {
                cluster: name.clone(),
            })
            .await
        else {
            continue;
        };
        let status = status.into_inner();
        if status.leader_id == status.node_id {
            return Some(i);
        }
    }
    None
}

async fn wait_for_leader(cluster: &Cluster, within: Duration) -> Option<(usize, Duration)> {
    let started = hyperion::runtime::now();
    while started.elapsed() < within {
        if let Some(leader) = leader(cluster).await {
            return Some((leader, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_loses_no_acknowledged_write() {
    let mut cluster = start_cluster();
    let (first, elected_after) = wait_for_leader(&cluster, Duration::from_secs(20))
        .await
        .expect("a leader within 20 s of start");
    eprintln!("first leader: node {} after {elected_after:?}", first + 1);
    let client = Client::cluster(&cluster.addrs).unwrap();

    // Writes under load: 4 writers, bounded in count and time.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            hyperion::runtime::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut failed = 0;
                let started = hyperion::runtime::now();
                for i in 0..150u32 {
                    if started.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    let key = format!("w{w}-{i}");
                    match client.set(key.as_bytes(), key.as_bytes(), 0, 0).await {
                        Ok(written) => acknowledged.push((key, written.version)),
                        Err(_) => failed += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (acknowledged, failed)
            })
        })
        .collect();

    // Let the load run, then kill -9 the leader.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut victim = cluster.children[first].take().expect("leader process");
    victim.kill().expect("kill -9 the leader");
    victim.wait().expect("reaped");
    let killed_at = hyperion::runtime::now();
    let (second, _) = wait_for_leader(&cluster, Duration::from_secs(10))
        .await
        .expect("a new leader within 10 s of the kill");
    let failover = killed_at.elapsed();
    assert_ne!(second, first);
    eprintln!(
        "new leader: node {} {failover:?} after the kill",
        second + 1
    );

    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for writer in writers {
        let (acks, fails) = writer.await.expect("writer finished");
        acknowledged.extend(acks);
        failed += fails;
    }
    eprintln!(
        "{} writes acknowledged, {failed} failed",
        acknowledged.len()
    );
    assert!(acknowledged.len() >= 300, "the cluster kept taking writes");

    let mut lost = Vec::new();
    for (key, version) in &acknowledged {
        let read = client
            .get(key.as_bytes(), false)
            .await
            .expect("linearizable read");
        if read.status != CacheStatus::Hit as i32
            || read.version != *version
            || read.value != key.as_bytes()
        {
            lost.push(key.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
}

/// One node's Status answer (with the cluster's own member list, as an operator's CLI sends it).
async fn status(cluster: &Cluster, node: usize) -> Option<hyperion::raft_proto::StatusResponse> {
    let mut raft = RaftServiceClient::connect(format!("http://{}", cluster.addrs[node]))
        .await
        .ok()?;
    let answer = raft.status(StatusRequest {
        cluster: member_list(cluster),
    });
    tokio::time::timeout(Duration::from_secs(2), answer)
        .await
        .ok()?
        .ok()
        .map(|r| r.into_inner())
}

/// A follower paused (`SIGSTOP`) while the leader writes 30 snapshot thresholds' worth of
/// entries catches up once resumed, by a snapshot and then the log, with no leader change: the
/// same leader in the same term before and after, and the follower back in that term with every
/// entry applied. Reads are served throughout; the longest is printed (a performance figure, not
/// asserted: `ci/compare` and the simulator's `follower-catch-up.toml` bound it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_with_no_leader_change() {
    const WRITES: u32 = 3_000;
    // The per-client Set limit (1,000/s) is lifted: the writes come from one loopback client.
    let cluster = start_cluster_with(&[
        ("HYPERION_RAFT_SNAPSHOT_ENTRIES", "100"),
        ("HYPERION_RATE_LIMIT_SET", "0"),
    ]);
    let (leader, _) = wait_for_leader(&cluster, Duration::from_secs(20))
        .await
        .expect("a leader within 20 s of start");
    let before = status(&cluster, leader).await.expect("the leader's status");
    let follower = (leader + 1) % 3;
    let pid = cluster.children[follower].as_ref().expect("follower").id();
    let signal = |name: &str| {
        let sent = Command::new("kill").args([name, &pid.to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill {name} {pid}");
    };
    signal("-STOP");
    // The client asks the leader only: a paused node would hold a request until its deadline.
    let client = Client::cluster(std::slice::from_ref(&cluster.addrs[leader])).unwrap();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = client.clone();
            hyperion::runtime::spawn(async move {
                for i in (w..WRITES).step_by(8) {
                    let key = format!("catch-up-{i}");
                    client
                        .set(key.as_bytes(), &[b'x'; 200], 0, 0)
                        .await
                        .unwrap_or_else(|e| panic!("write {i} while a follower is paused: {e}"));
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer finished");
    }
    let written = status(&cluster, leader).await.expect("the leader's status");
    signal("-CONT");

    // Until the follower has applied everything the leader had committed, reads keep being
    // served by the leader; bounded at 30 s.
    let resumed = hyperion::runtime::now();
    let mut longest_read = Duration::ZERO;
    let caught_up = loop {
        let read_started = hyperion::runtime::now();
        let read = client
            .get(b"catch-up-0", false)
            .await
            .expect("a read during catch-up");
        assert_eq!(read.status, CacheStatus::Hit as i32);
        longest_read = longest_read.max(read_started.elapsed());
        if let Some(now) = status(&cluster, follower).await {
            if now.applied_index >= written.commit_index {
                break now;
            }
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(30),
            "the follower did not catch up within 30 s of resuming"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "follower caught up {:?} after resuming ({WRITES} writes, applied index {}); longest read \
         meanwhile {longest_read:?}",
        resumed.elapsed(),
        caught_up.applied_index
    );
    let after = status(&cluster, leader).await.expect("the leader's status");
    assert_eq!(
        after.leader_id, before.leader_id,
        "leadership changed hands"
    );
    assert_eq!(
        after.term, before.term,
        "a new term began: an election happened"
    );
    assert_eq!(
        caught_up.term, before.term,
        "the follower is in the leader's term"
    );
    assert_eq!(caught_up.leader_id, before.leader_id);
    assert_eq!(
        caught_up.entries, after.entries,
        "the follower holds what the leader holds"
    );
    let on_follower = Client::cluster(std::slice::from_ref(&cluster.addrs[follower])).unwrap();
    let last = format!("catch-up-{}", WRITES - 1);
    let read = on_follower
        .get(last.as_bytes(), true)
        .await
        .expect("a local read");
    assert_eq!(
        read.status,
        CacheStatus::Hit as i32,
        "the follower has the last write"
    );
}

/// Near caches against a real three-process cluster: each round fills every near cache with a
/// key, waits until they serve it from memory, writes the key through another client, and
/// measures how long each near cache keeps serving the old version (the invalidation delay).
/// Halfway, the leader is killed: the near caches' streams reconnect elsewhere and resume. No
/// near cache may serve a version older than an acknowledged write for longer than its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_caches_stay_coherent_across_a_leader_kill() {
    use hyperion::client::NearCacheConfig;
    const ROUNDS: usize = 60;
    const BOUND: Duration = Duration::from_millis(250);
    let mut cluster = start_cluster();
    let (first, _) = wait_for_leader(&cluster, Duration::from_secs(20))
        .await
        .expect("a leader within 20 s of start");
    let writer = Client::cluster(&cluster.addrs).unwrap();
    let config = NearCacheConfig {
        staleness_bound: BOUND,
        sync_interval: Duration::from_millis(25),
        ..NearCacheConfig::default()
    };
    // Two tracking near caches, and one that also subscribes to every key (broadcast).
    let near: Vec<_> = (0..3)
        .map(|i| {
            let config = NearCacheConfig {
                prefixes: if i == 2 { vec![Vec::new()] } else { Vec::new() },
                ..config.clone()
            };
            Client::cluster(&cluster.addrs)
                .unwrap()
                .with_near_cache(config)
                .unwrap()
        })
        .collect();
    let mut delays_us: Vec<u128> = Vec::new();
    let mut beyond_bound = Vec::new();
    let started = hyperion::runtime::now();
    for round in 0..ROUNDS {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        if round == ROUNDS / 2 {
            let mut victim = cluster.children[first].take().expect("leader process");
            victim.kill().expect("kill -9 the leader");
            victim.wait().expect("reaped");
            wait_for_leader(&cluster, Duration::from_secs(10))
                .await
                .expect("a new leader within 10 s of the kill");
        }
        let key = format!("key{}", round % 8);
        let Ok(old) = writer.set(key.as_bytes(), b"old", 0, 0).await else {
            continue;
        };
        // Fill every near cache, then wait (bounded) until each serves it from memory.
        let deadline = hyperion::runtime::now() + Duration::from_secs(3);
        let mut filled = vec![false; near.len()];
        while filled.iter().any(|f| !f) && hyperion::runtime::now() < deadline {
            for (i, cache) in near.iter().enumerate() {
                match cache.lookup(key.as_bytes()) {
                    Some(hit) if hit.version == old.version => filled[i] = true,
                    Some(_) => {}
                    None => {
                        let _ = cache.get_from_cluster(key.as_bytes()).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let new = writer
            .set(key.as_bytes(), b"new", 0, 0)
            .await
            .expect("the write is acknowledged");
        let acknowledged = hyperion::runtime::now();
        let mut pending: Vec<usize> = (0..near.len()).filter(|&i| filled[i]).collect();
        while !pending.is_empty() {
            let now = hyperion::runtime::now();
            pending.retain(|&i| match near[i].lookup(key.as_bytes()) {
                Some(hit) if hit.version < new.version => {
                    if now.duration_since(acknowledged) > BOUND {
                        beyond_bound.push((round, i, hit.version, new.version));
                        return false;
                    }
                    true
                }
                _ => {
                    delays_us.push(now.duration_since(acknowledged).as_micros());
                    false
                }
            });
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    assert!(
        beyond_bound.is_empty(),
        "near caches served versions older than an acknowledged write past the {BOUND:?} \
         bound (round, cache, served, written): {beyond_bound:?}"
    );
    delays_us.sort_unstable();
    assert!(
        delays_us.len() >= ROUNDS,
        "measured {} invalidations",
        delays_us.len()
    );
    let at = |q: f64| delays_us[((delays_us.len() - 1) as f64 * q) as usize];
    let stats: Vec<_> = near.iter().map(|cache| cache.stats()).collect();
    eprintln!(
        "invalidation delay after the write's acknowledgement over {} invalidations: p50 {} us, \
         p99 {} us, max {} us; near caches: {stats:?}",
        delays_us.len(),
        at(0.5),
        at(0.99),
        delays_us[delays_us.len() - 1]
    );
    assert!(
        stats.iter().all(|s| s.streams_opened >= 1 && s.hits > 0),
        "{stats:?}"
    );
}

async fn next_event(
    events: &mut tonic::Streaming<hyperion::proto::WatchEvent>,
) -> hyperion::proto::WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open")
        .expect("not ended")
}

/// A Watch stream on the node at `addr`, broadcasting `prefix`, resumed after an index if
/// given, past its READY event; with the sender that keeps its requests open.
async fn watch_prefix(
    addr: &str,
    prefix: &[u8],
    resume_after: Option<u64>,
) -> (
    tokio::sync::mpsc::Sender<hyperion::proto::WatchRequest>,
    tonic::Streaming<hyperion::proto::WatchEvent>,
) {
    use hyperion::proto::cache_service_client::CacheServiceClient;
    use hyperion::proto::watch_request::Command;
    use hyperion::proto::{WatchEventKind, WatchOpen, WatchRequest};
    let (requests, receiver) = tokio::sync::mpsc::channel(4);
    requests
        .try_send(WatchRequest {
            command: Some(Command::Open(WatchOpen {
                prefixes: vec![prefix.to_vec()],
                resume: resume_after.is_some(),
                resume_after_index: resume_after.unwrap_or(0),
            })),
        })
        .unwrap();
    let mut events = CacheServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
        .watch(hyperion::runtime::receiver_stream(receiver))
        .await
        .unwrap()
        .into_inner();
    let ready = next_event(&mut events).await;
    assert_eq!(ready.kind, WatchEventKind::EventReady as i32, "{ready:?}");
    (requests, events)
}

/// A Watch stream on one node of a real cluster, dropped, then resumed on another node: the
/// broadcast changes it missed are replayed there; resumed from further back than that node's
/// history (two changes here), it is told to resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_resumes_on_another_node_or_resyncs() {
    use hyperion::proto::WatchEventKind;
    let cluster = start_cluster_with(&[("HYPERION_WATCH_HISTORY_EVENTS", "2")]);
    let (leader, _) = wait_for_leader(&cluster, Duration::from_secs(20))
        .await
        .expect("a leader within 20 s of start");
    let other = (leader + 1) % cluster.addrs.len();
    let writer = Client::cluster(&cluster.addrs).unwrap();
    // On the leader: see one change, remember its index.
    let (_keep, mut events) = watch_prefix(&cluster.addrs[leader], b"r:", None).await;
    writer.set(b"r:1", b"a", 0, 0).await.unwrap();
    let seen = next_event(&mut events).await;
    drop(events);
    // Missed while away: one change. Resumed on a follower, it is replayed there.
    let missed = writer.set(b"r:2", b"b", 0, 0).await.unwrap();
    writer.set(b"other", b"-", 0, 0).await.unwrap();
    let (_keep, mut resumed) = watch_prefix(&cluster.addrs[other], b"r:", Some(seen.index)).await;
    let replayed = loop {
        let event = next_event(&mut resumed).await;
        if event.kind == WatchEventKind::EventChanged as i32 {
            break event;
        }
        assert_eq!(
            event.kind,
            WatchEventKind::EventProgress as i32,
            "{event:?}"
        );
    };
    assert_eq!(
        (replayed.key.as_slice(), replayed.version),
        (b"r:2".as_slice(), missed.version)
    );
    drop(resumed);
    // Further back than the follower's history of two changes: RESYNC.
    for i in 0..4u8 {
        writer.set(b"other", &[i], 0, 0).await.unwrap();
    }
    let (_keep, mut stale) = watch_prefix(&cluster.addrs[other], b"r:", Some(seen.index)).await;
    let event = next_event(&mut stale).await;
    assert_eq!(event.kind, WatchEventKind::EventResync as i32, "{event:?}");
}
