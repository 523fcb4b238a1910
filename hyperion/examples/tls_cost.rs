//! What mTLS costs a `Get`, measured against plaintext in the same run: two one-node servers in
//! this process (a plaintext development node and an mTLS node, certificates made with rcgen),
//! the same client library against each, rounds alternating A B B A ... so drift of a shared
//! machine falls on both; each round's ratio is taken pair by pair and the median reported.
//!
//! ```sh
//! cargo run --release -p hyperion --example tls_cost -- 2 6 32
//! ```
//! Arguments: seconds per round (default 2), rounds (default 6), concurrent Gets (default 32).
//! Steady state: Gets over one established HTTP/2 connection. Handshake: a fresh client's first
//! Get (TCP connect, TLS handshake with client certificate, HTTP/2 setup, the request), 200 times
//! per mode. Rate limits are lifted on both nodes; everything is bounded in count and time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hyperion::client::{Client, ClientSecurity};
use hyperion::config::Config;
use hyperion::limits::RateLimits;
use hyperion::resilience::RetryPolicy;
use hyperion::runtime::{self, NodeClock};
use hyperion::server::Server;

#[path = "../tests/support/mod.rs"]
mod support;

/// Most Gets one task issues in a round (a bound beside the time bound).
const OPS_PER_TASK_MAX: usize = 1_000_000;
/// Fresh clients per mode for the handshake measurement.
const HANDSHAKES: usize = 200;

fn generous() -> RateLimits {
    RateLimits::UNLIMITED
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    support::write(dir, name, text).display().to_string()
}

async fn start(config: &Config) -> std::net::SocketAddr {
    let server = Server::bind(config, NodeClock::system())
        .await
        .expect("the node starts")
        .with_rate_limits(generous());
    let addr = server.local_addr();
    runtime::spawn(async move {
        let _ = server.serve(std::future::pending()).await;
    });
    addr
}

struct Round {
    gets: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn round(client: &Client, seconds: u64, concurrency: usize) -> Round {
    let started = runtime::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            runtime::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                for _ in 0..OPS_PER_TASK_MAX {
                    if started.elapsed() >= Duration::from_secs(seconds) {
                        break;
                    }
                    let sent = runtime::now();
                    match client.get(b"bench", false).await {
                        Ok(_) => latencies.push(sent.elapsed().as_micros() as u64),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, failed) = task.await.expect("a Get task");
        latencies_us.extend(latencies);
        errors += failed;
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    Round {
        gets: latencies_us.len(),
        errors,
        elapsed,
        latencies_us,
    }
}

fn one_attempt(client: Client) -> Client {
    client
        .with_retry(RetryPolicy {
            max_attempts: 1,
            ..hyperion::client::default_retry_policy()
        })
        .with_breaker(None)
}

/// Median first-Get latency of fresh clients, in microseconds.
async fn handshakes(addr: &str, security: &ClientSecurity) -> u64 {
    let mut latencies = Vec::with_capacity(HANDSHAKES);
    for _ in 0..HANDSHAKES {
        let client =
            one_attempt(Client::secured(addr, security.clone()).expect("a client")).pinned();
        let sent = runtime::now();
        client.get(b"bench", false).await.expect("a first Get");
        latencies.push(sent.elapsed().as_micros() as u64);
    }
    latencies.sort_unstable();
    percentile(&latencies, 0.5)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments are integers"))
        .collect();
    let seconds = args.first().copied().unwrap_or(2).clamp(1, 60);
    let rounds = args.get(1).copied().unwrap_or(6).clamp(2, 40) as usize;
    let concurrency = args.get(2).copied().unwrap_or(32).clamp(1, 1024) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench(seconds, rounds, concurrency));
}

async fn bench(seconds: u64, rounds: usize, concurrency: usize) {
    let dir = std::env::temp_dir().join(format!("hyperion-tls-cost-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");

    let mut plain_config = Config::development();
    plain_config.data_dir = dir.join("plain");
    plain_config.listen_addr = "127.0.0.1:0".parse().expect("an address");
    let plain_addr = start(&plain_config).await.to_string();

    let pki = support::Ca::new("benchmark CA");
    let (cert, key) = pki.issue("n1");
    let ca = write(&dir, "ca.pem", &pki.pem());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let env: BTreeMap<String, String> = [
        ("HYPERION_NODE_ID", "n1".to_string()),
        ("HYPERION_LISTEN_ADDR", format!("127.0.0.1:{port}")),
        ("HYPERION_CLUSTER_NODES", format!("n1=127.0.0.1:{port}")),
        ("HYPERION_DATA_DIR", dir.join("tls").display().to_string()),
        ("HYPERION_DEV_MODE", "false".to_string()),
        (
            "HYPERION_HMAC_KEY_FILE",
            write(&dir, "hmac", &"k".repeat(32)),
        ),
        ("HYPERION_TLS_CERT_FILE", write(&dir, "n1.pem", &cert)),
        ("HYPERION_TLS_KEY_FILE", write(&dir, "n1.key", &key)),
        ("HYPERION_TLS_CLIENT_CA_FILE", ca.clone()),
        ("LOG_LEVEL", "warn".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let tls_config = Config::from_env(&env).expect("a valid mTLS configuration");
    let tls_addr = start(&tls_config).await.to_string();
    let (client_cert, client_key) = pki.issue("bench-client");
    let client_cert = write(&dir, "client.pem", &client_cert);
    let client_key = write(&dir, "client.key", &client_key);
    let tls_security = ClientSecurity::from_files(
        Some(Path::new(&ca)),
        Some(Path::new(&client_cert)),
        Some(Path::new(&client_key)),
        None,
    )
    .expect("client TLS");

    let plain = Client::new(&plain_addr).expect("a client");
    let tls = Client::secured(&tls_addr, tls_security.clone()).expect("a client");
    for client in [&plain, &tls] {
        // A one-node cluster elects itself at once; the client retries until it has.
        client
            .set(b"bench", &[b'v'; 100], 0, 0)
            .await
            .expect("the first write");
    }
    let (plain, tls) = (one_attempt(plain), one_attempt(tls));

    println!(
        "tls_cost: {rounds} rounds of {seconds} s per mode, {concurrency} concurrent Gets of a \
         100-byte value, one HTTP/2 connection per mode, alternating order"
    );
    let mut ratios: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut results = [None, None];
        for secure in order {
            let client = if secure { &tls } else { &plain };
            results[usize::from(secure)] = Some(round(client, seconds, concurrency).await);
        }
        let [Some(p), Some(t)] = results else {
            unreachable!("both modes ran")
        };
        let throughput = |x: &Round| x.gets as f64 / x.elapsed.as_secs_f64();
        let latency = |x: &Round| {
            (
                percentile(&x.latencies_us, 0.5),
                percentile(&x.latencies_us, 0.99),
            )
        };
        let (pp50, pp99) = latency(&p);
        let (tp50, tp99) = latency(&t);
        println!(
            "round {r}: plaintext {:.0} Gets/s p50 {pp50} us p99 {pp99} us ({} errors) | mTLS \
             {:.0} Gets/s p50 {tp50} us p99 {tp99} us ({} errors)",
            throughput(&p),
            p.errors,
            throughput(&t),
            t.errors
        );
        ratios
            .entry("throughput")
            .or_default()
            .push(throughput(&t) / throughput(&p));
        ratios
            .entry("p50")
            .or_default()
            .push(tp50 as f64 / pp50.max(1) as f64);
        ratios
            .entry("p99")
            .or_default()
            .push(tp99 as f64 / pp99.max(1) as f64);
    }
    for (what, values) in &mut ratios {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(0.0, f64::max);
        println!(
            "mTLS/plaintext {what}: median {:.3} (min {min:.3}, max {max:.3})",
            median(values)
        );
    }
    let plain_first = handshakes(&plain_addr, &ClientSecurity::default()).await;
    let tls_first = handshakes(&tls_addr, &tls_security).await;
    println!(
        "first Get of a fresh client (median of {HANDSHAKES}): plaintext {plain_first} us, mTLS \
         {tls_first} us, ratio {:.2}",
        tls_first as f64 / plain_first.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
