//! What request metrics cost on the Get path: two single-node servers in one process, one with
//! `HYPERION_METRICS` on and one with it off, each read by its own client over loopback in
//! alternating rounds (so drift on a shared machine hits both alike). Prints the Gets per second
//! of each and their ratio. Bounded: `ROUNDS` rounds of `GETS_PER_ROUND` sequential Gets per
//! server, and at most `WALL_TIME_MAX` in all.
//!
//!   cargo run --release -p hyperion --example get_metrics_cost

use std::time::Duration;

use hyperion::config::Config;
use hyperion::limits::RateLimits;
use hyperion::runtime::NodeClock;
use hyperion::server::Server;

const ROUNDS: usize = 10;
const GETS_PER_ROUND: usize = 2_000;
const WALL_TIME_MAX: Duration = Duration::from_secs(120);

async fn node(metrics: bool, dir: &std::path::Path) -> (hyperion::client::Client, impl Drop) {
    let mut config = Config::development();
    config.listen_addr = "127.0.0.1:0".parse().expect("a loopback address");
    config.ops.admin_addr = None;
    config.ops.metrics = metrics;
    config.data_dir = dir.join(if metrics { "on" } else { "off" });
    let server = Server::bind(&config, NodeClock::system())
        .await
        .expect("a node starts")
        .with_rate_limits(RateLimits::UNLIMITED);
    let addr = server.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    hyperion::runtime::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let client = hyperion::client::Client::new(&addr).expect("a client");
    client
        .set(b"bench", &[7u8; 100], 0, 0)
        .await
        .expect("the node takes a write once it elected itself");
    (client, StopOnDrop(Some(stop)))
}

struct StopOnDrop(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            let _ = stop.send(());
        }
    }
}

/// Gets per second of one round.
async fn round(client: &hyperion::client::Client) -> f64 {
    let start = hyperion::runtime::now();
    for _ in 0..GETS_PER_ROUND {
        client.get(b"bench", false).await.expect("a Get answers");
    }
    GETS_PER_ROUND as f64 / start.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("hyperion-metrics-cost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (on, _stop_on) = node(true, &dir).await;
    let (off, _stop_off) = node(false, &dir).await;
    // Warm both up (connections, caches) before measuring.
    round(&on).await;
    round(&off).await;
    let started = hyperion::runtime::now();
    let (mut on_rates, mut off_rates) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        if started.elapsed() > WALL_TIME_MAX {
            break;
        }
        if i % 2 == 0 {
            on_rates.push(round(&on).await);
            off_rates.push(round(&off).await);
        } else {
            off_rates.push(round(&off).await);
            on_rates.push(round(&on).await);
        }
    }
    let (on_rate, off_rate) = (median(on_rates.clone()), median(off_rates.clone()));
    println!(
        "rounds: {} x {GETS_PER_ROUND} sequential Gets per server (one client each, loopback)",
        on_rates.len()
    );
    println!("metrics on:  median {on_rate:.0} Get/s, rounds {on_rates:.0?}");
    println!("metrics off: median {off_rate:.0} Get/s, rounds {off_rates:.0?}");
    println!("ratio on/off: {:.3}", on_rate / off_rate);
    let _ = std::fs::remove_dir_all(&dir);
}
