//! Measures how long a node holding N entries takes from process start to its first served read,
//! after a clean shutdown and after a crash (no clean-shutdown marker: the WAL tail is replayed).
//!
//! ```sh
//! cargo run --release -p hyperion --example restart_to_first_read -- 1000000 100
//! ```
//! Arguments: entries (default 1,000,000), value bytes (default 100). The data directory is a
//! fresh one under the system's temporary directory, removed at the end; every phase runs on its
//! own runtime, so dropping it ends the node as a crash would.

use std::time::Duration;

use hyperion::config::Config;
use hyperion::replica::{ReadOutcome, Replica, WriteRequest};
use hyperion::runtime::{self, NodeClock};
use hyperion::server::Server;

/// Writes in flight at once while loading.
const CONCURRENCY: usize = 512;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::development();
    config.data_dir = dir.to_path_buf();
    config.listen_addr = "127.0.0.1:0".parse().expect("an address");
    config.cache_size_mb = 8192;
    config
}

async fn load(replica: &Replica, entries: usize, value_bytes: usize) {
    let value = vec![b'v'; value_bytes];
    let mut next = 0;
    while next < entries {
        let batch: Vec<_> = (next..(next + CONCURRENCY).min(entries))
            .map(|i| {
                let replica = replica.clone();
                let value = value.clone();
                runtime::spawn(async move {
                    replica
                        .write(WriteRequest::Set {
                            key: format!("key-{i:08}").into_bytes(),
                            value,
                            ttl_ms: 0,
                            expected_version: 0,
                        })
                        .await
                        .expect("a write on a one-node cluster")
                })
            })
            .collect();
        next += batch.len();
        for write in batch {
            write.await.expect("the write task");
        }
    }
}

/// Starts the node and waits for its first linearizable read of `key`; returns (recovered,
/// first read) durations from the start.
async fn first_read(dir: &std::path::Path, key: &[u8]) -> (Duration, Duration, Server) {
    let started = runtime::now();
    let server = Server::bind(&config(dir), NodeClock::system())
        .await
        .expect("the node starts");
    let recovered = started.elapsed();
    let replica = server.replica();
    loop {
        if replica.linearizable_barrier().await.is_ok() {
            if let ReadOutcome::Hit { .. } = replica.read_local(key, false).outcome {
                return (recovered, started.elapsed(), server);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let entries: usize = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("entries"));
    let value_bytes: usize = args.next().map_or(100, |a| a.parse().expect("value bytes"));
    let dir = std::env::temp_dir().join(format!("hyperion-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = format!("key-{:08}", entries - 1).into_bytes();

    let loaded = runtime::now();
    runtime().block_on(async {
        let server = Server::bind(&config(&dir), NodeClock::system())
            .await
            .expect("the node starts");
        // A one-voter cluster elects itself at its first tick; wait for that (at most 10 s).
        let deadline = runtime::now() + Duration::from_secs(10);
        while server.replica().linearizable_barrier().await.is_err() {
            assert!(
                runtime::now() < deadline,
                "the node never led its one-voter cluster"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        load(&server.replica(), entries, value_bytes).await;
        // No clean stop: the runtime is dropped with the node loop running (a crash).
    });
    println!(
        "loaded {entries} entries of {value_bytes} B in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );

    // First after the crash above, then after a clean shutdown of that restart.
    for (what, stop_cleanly) in [("crash", true), ("clean shutdown", false)] {
        runtime().block_on(async {
            let (recovered, read, server) = first_read(&dir, &key).await;
            println!(
                "after a {what}: recovered in {:.3} s, first read served at {:.3} s",
                recovered.as_secs_f64(),
                read.as_secs_f64()
            );
            if stop_cleanly {
                server.replica().stop().await;
            }
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}
