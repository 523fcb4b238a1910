//! `hyperion-bench`: load generator for a running Hyperion node or cluster, on the Rust client
//! library.
//!
//! ```sh
//! hyperion-bench --addr 127.0.0.1:50051 --mix ycsb-b --keys 100000 --concurrency 50 --duration-s 10
//! hyperion-bench --addr 127.0.0.1:50051 --mix get --rate 20000 --duration-s 10   # open loop
//! ```
//!
//! - **Closed loop** (default): `--concurrency` workers, each sending its next request when the
//!   last one answered.
//! - **Open loop** (`--rate R`): requests are due at a fixed rate; `--concurrency` workers take
//!   the due times in turn, and each latency is measured from the request's *intended* start, so
//!   a server that stalls is charged for the requests it delayed (no coordinated omission).
//! - Latencies go into HDR histograms (p50, p99, p999, max), measured apart for Get hits, Get
//!   misses (`--miss-percent` of Gets ask for keys never written), Sets and BatchGets; errors are
//!   counted by gRPC code, `RESOURCE_EXHAUSTED` apart.
//! - A node's per-client rate limits (10,000 Get/s by default) cap a benchmark from one host:
//!   start the node with them lifted (`HYPERION_RATE_LIMIT_GET=1000000`, `_SET`, `_BATCH_GET`);
//!   refusals show up as `RESOURCE_EXHAUSTED`.
//! - The key space is written first for read mixes (`--no-preload` skips it). Warm-up
//!   (`--warmup-s`) runs the workload unmeasured. A progress bar goes to stderr when it is a
//!   terminal; the table, then one JSON object, go to stdout (`--json-only` prints the JSON alone).
//!
//! - `--near-cache-entries N` gives each connection's client a near cache of N entries (kept
//!   coherent by a Watch stream; `--near-cache-bound-ms`): Gets it answers count as `near hits`,
//!   the share of Gets it answered is reported as `near_cache_hit_rate`.
//!
//! - `--target etcd|redis|memcached` drives those systems with the same loop (see `targets.rs`),
//!   and `--serve-echo ADDR` serves Hyperion's protocol with no cache behind it (`echo.rs`), so
//!   `ci/compare` measures everything side by side. `--server-pid PID` reports the server's CPU
//!   time per measured operation (from `/proc/PID/stat`).
//!
//! Values are `--value-bytes` random bytes (seeded), so no server can compress them.
//!
//! Every loop is bounded in time (`--duration-s` ≤ 1 hour) and in count (`--ops-max`).

mod echo;
mod stats;
mod targets;
mod workload;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hyperion::client::{CachingClient, Client, ClientSecurity, NearCacheConfig, Source};
use hyperion::proto::CacheStatus;
use hyperion::resilience::RetryPolicy;
use hyperion::runtime;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use stats::{Class, Stats};
use targets::Target;
use workload::{Distribution, Generator, Mix, Op, Zipfian};

/// Bounds: a benchmark must end, and fit in memory.
const DURATION_S_MAX: u64 = 3_600;
const CONCURRENCY_MAX: usize = 4_096;
const KEYS_MAX: u64 = 100_000_000;
const VALUE_BYTES_MAX: usize = 4 << 20;
const CONNECTIONS_MAX: usize = 256;
const PRELOAD_CONCURRENCY: usize = 64;
const READY_WAIT: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(about = "Load generator for Hyperion: closed or open loop, HDR latencies, YCSB mixes")]
struct Args {
    /// Node addresses, comma-separated (the client follows the leader); for etcd, Redis and
    /// memcached the first is used.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// The system driven.
    #[arg(long, value_enum, default_value_t = Target::Hyperion)]
    target: Target,
    /// Serve Hyperion's protocol with no cache on this address instead of benchmarking (the
    /// transport's ceiling for `ci/compare`), until Ctrl-C.
    #[arg(long)]
    serve_echo: Option<std::net::SocketAddr>,
    /// Reads served from any node's local state (Hyperion's `allow_stale`, etcd's serializable
    /// range) instead of linearizable ones.
    #[arg(long)]
    allow_stale: bool,
    /// Reports this process's CPU time per measured operation (Linux `/proc/PID/stat`).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Operation mix.
    #[arg(long, value_enum, default_value_t = Mix::Get)]
    mix: Mix,
    /// Keys in the key space.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    /// Skew of the zipfian distribution (0 < theta < 1).
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Percentage of Gets that ask for keys never written (measured as misses).
    #[arg(long, default_value_t = 0)]
    miss_percent: u32,
    /// Keys per BatchGet (`--mix batch-get`).
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Concurrent requests (closed loop), or workers taking the due times (open loop).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Open loop: requests per second, due at fixed intervals. Without it, a closed loop.
    #[arg(long)]
    rate: Option<u64>,
    /// Client connections the workers are spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Unmeasured seconds before.
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Most operations measured (a bound beside the duration).
    #[arg(long, default_value_t = 100_000_000)]
    ops_max: u64,
    /// Do not write the key space first.
    #[arg(long)]
    no_preload: bool,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the JSON result only.
    #[arg(long)]
    json_only: bool,
    /// CA certificate (PEM) for a node with TLS; with --cert and --key for mTLS.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    #[arg(long)]
    cert: Option<std::path::PathBuf>,
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// A file holding a bearer token (JWT) for a node that requires one.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Near cache entries per client connection (0: no near cache).
    #[arg(long, default_value_t = 0)]
    near_cache_entries: usize,
    /// The near cache's staleness bound, ms.
    #[arg(long, default_value_t = 500)]
    near_cache_bound_ms: u64,
}

impl Args {
    fn check(&self) -> Result<(), String> {
        let within = |name: &str, value: u64, low: u64, high: u64| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(format!("--{name} must be in {low}..={high}, got {value}"))
            }
        };
        within("duration-s", self.duration_s, 1, DURATION_S_MAX)?;
        within("warmup-s", self.warmup_s, 0, DURATION_S_MAX)?;
        within(
            "concurrency",
            self.concurrency as u64,
            1,
            CONCURRENCY_MAX as u64,
        )?;
        within(
            "connections",
            self.connections as u64,
            1,
            CONNECTIONS_MAX as u64,
        )?;
        within("keys", self.keys, 1, KEYS_MAX)?;
        within(
            "value-bytes",
            self.value_bytes as u64,
            0,
            VALUE_BYTES_MAX as u64,
        )?;
        within("miss-percent", u64::from(self.miss_percent), 0, 100)?;
        within(
            "batch-size",
            self.batch_size as u64,
            1,
            hyperion::limits::BATCH_KEYS_MAX as u64,
        )?;
        within("ops-max", self.ops_max, 1, u64::MAX)?;
        within(
            "near-cache-entries",
            self.near_cache_entries as u64,
            0,
            KEYS_MAX,
        )?;
        within("near-cache-bound-ms", self.near_cache_bound_ms, 50, 60_000)?;
        if self.target != Target::Hyperion && self.near_cache_entries > 0 {
            return Err("--near-cache-entries needs --target hyperion".into());
        }
        if self.target == Target::Etcd && self.mix == Mix::BatchGet {
            return Err("--mix batch-get: etcd has no multi-key get of listed keys".into());
        }
        if let Some(rate) = self.rate {
            within("rate", rate, 1, 10_000_000)?;
        }
        if self.distribution == Distribution::Zipfian
            && !(self.zipf_theta > 0.0 && self.zipf_theta < 1.0)
        {
            return Err(format!(
                "--zipf-theta must be between 0 and 1 (exclusive), got {}",
                self.zipf_theta
            ));
        }
        Ok(())
    }

    fn settings(&self) -> serde_json::Value {
        json!({
            "addr": self.addr,
            "target": self.target,
            "allow_stale": self.allow_stale,
            "mix": self.mix,
            "keys": self.keys,
            "distribution": self.distribution,
            "zipf_theta": self.zipf_theta,
            "value_bytes": self.value_bytes,
            "miss_percent": self.miss_percent,
            "batch_size": self.batch_size,
            "concurrency": self.concurrency,
            "loop": if self.rate.is_some() { "open" } else { "closed" },
            "rate": self.rate,
            "connections": self.connections,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "seed": self.seed,
            "near_cache_entries": self.near_cache_entries,
            "near_cache_bound_ms": self.near_cache_bound_ms,
        })
    }
}

/// What the workers share.
struct Run {
    clients: Vec<BenchClient>,
    value: Vec<u8>,
    allow_stale: bool,
    /// Open loop: the next due slot, and the time between slots.
    next_slot: AtomicU64,
    interval_ns: Option<u64>,
    started: runtime::Instant,
    /// Measuring (after warm-up) until `stop`.
    measuring: AtomicBool,
    stop: AtomicBool,
    measured_ops: AtomicU64,
    ops_max: u64,
}

fn client(args: &Args) -> Result<Client, String> {
    let addrs: Vec<String> = args.addr.split(',').map(|a| a.trim().to_string()).collect();
    let security = ClientSecurity::from_files(
        args.ca.as_deref(),
        args.cert.as_deref(),
        args.key.as_deref(),
        args.token_file.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    let client = Client::cluster_secured(&addrs, security).map_err(|e| e.to_string())?;
    // Every attempt is measured: no retries, no breaker.
    Ok(client
        .with_retry(RetryPolicy {
            max_attempts: 1,
            ..hyperion::client::default_retry_policy()
        })
        .with_breaker(None))
}

/// A connection's client: Hyperion's (plain, or with a near cache), or another system's.
enum BenchClient {
    Plain(Client),
    Near(CachingClient),
    Etcd(targets::Etcd),
    Redis(tokio::sync::Mutex<targets::Redis>),
    Memcached(tokio::sync::Mutex<targets::Memcached>),
}

/// What a read of one key found.
struct Found {
    hit: bool,
    /// Answered by the near cache.
    near: bool,
}

impl BenchClient {
    async fn connect(args: &Args, near_cache: bool) -> Result<BenchClient, String> {
        let addr = args.addr.split(',').next().unwrap_or_default().trim();
        match args.target {
            Target::Hyperion => {
                let plain = client(args)?;
                if !near_cache || args.near_cache_entries == 0 {
                    return Ok(BenchClient::Plain(plain));
                }
                let bound = Duration::from_millis(args.near_cache_bound_ms);
                let config = NearCacheConfig {
                    max_entries: args.near_cache_entries,
                    max_bytes: args
                        .near_cache_entries
                        .saturating_mul(args.value_bytes + 256),
                    staleness_bound: bound,
                    sync_interval: bound / 5,
                    ..NearCacheConfig::default()
                };
                plain
                    .with_near_cache(config)
                    .map(BenchClient::Near)
                    .map_err(|e| format!("--near-cache-entries: {e}"))
            }
            Target::Etcd => targets::Etcd::connect(addr, args.allow_stale)
                .await
                .map(BenchClient::Etcd)
                .map_err(|s| s.message().to_string()),
            Target::Redis => targets::Redis::connect(addr)
                .await
                .map(|c| BenchClient::Redis(tokio::sync::Mutex::new(c)))
                .map_err(|s| s.message().to_string()),
            Target::Memcached => targets::Memcached::connect(addr)
                .await
                .map(|c| BenchClient::Memcached(tokio::sync::Mutex::new(c)))
                .map_err(|s| s.message().to_string()),
        }
    }

    async fn get(&self, key: &[u8], allow_stale: bool) -> Result<Found, tonic::Status> {
        let hit = |answer: &hyperion::proto::GetResponse| answer.status == CacheStatus::Hit as i32;
        match self {
            BenchClient::Plain(client) => client.get(key, allow_stale).await.map(|answer| Found {
                hit: hit(&answer),
                near: false,
            }),
            BenchClient::Near(near) => near.get(key).await.map(|(answer, source)| Found {
                hit: hit(&answer),
                near: source == Source::Near,
            }),
            BenchClient::Etcd(etcd) => etcd.get(key).await.map(|hit| Found { hit, near: false }),
            BenchClient::Redis(redis) => {
                let hit = redis.lock().await.get(key).await?;
                Ok(Found { hit, near: false })
            }
            BenchClient::Memcached(memcached) => {
                let hit = memcached.lock().await.get(key).await?;
                Ok(Found { hit, near: false })
            }
        }
    }

    async fn set(&self, key: &[u8], value: &[u8]) -> Result<(), tonic::Status> {
        match self {
            BenchClient::Plain(client) => client.set(key, value, 0, 0).await.map(|_| ()),
            BenchClient::Near(near) => near.set(key, value, 0, 0).await.map(|_| ()),
            BenchClient::Etcd(etcd) => etcd.set(key, value).await,
            BenchClient::Redis(redis) => redis.lock().await.set(key, value).await,
            BenchClient::Memcached(memcached) => memcached.lock().await.set(key, value).await,
        }
    }

    /// How many of `keys` were found (hits).
    async fn batch_get(&self, keys: &[Vec<u8>], allow_stale: bool) -> Result<u64, tonic::Status> {
        let hits = |answers: Vec<hyperion::proto::GetResponse>| {
            answers
                .iter()
                .filter(|answer| answer.status == CacheStatus::Hit as i32)
                .count() as u64
        };
        match self {
            BenchClient::Plain(client) => client.batch_get(keys, allow_stale).await.map(hits),
            BenchClient::Near(near) => near.client().batch_get(keys, allow_stale).await.map(hits),
            BenchClient::Etcd(_) => Err(tonic::Status::unimplemented(
                "etcd has no multi-key get of listed keys",
            )),
            BenchClient::Redis(redis) => redis.lock().await.mget(keys).await,
            BenchClient::Memcached(memcached) => memcached.lock().await.get_multi(keys).await,
        }
    }
}

/// Sends one operation; records it when measuring.
async fn send(
    run: &Run,
    client: &BenchClient,
    op: Op,
    intended: runtime::Instant,
    stats: &mut Stats,
) {
    let mut near_hit = false;
    let (class, outcome) = match op {
        Op::Get { id, absent } => {
            let key = workload::key(id, absent);
            match client.get(&key, run.allow_stale).await {
                Ok(found) => {
                    near_hit = found.near;
                    let class = if found.hit {
                        Class::GetHit
                    } else {
                        Class::GetMiss
                    };
                    (class, Ok(0))
                }
                Err(status) => (Class::GetHit, Err(status)),
            }
        }
        Op::Set { id } => {
            let key = workload::key(id, false);
            (Class::Set, client.set(&key, &run.value).await.map(|_| 0))
        }
        Op::BatchGet { ids } => {
            let keys: Vec<Vec<u8>> = ids.iter().map(|id| workload::key(*id, false)).collect();
            let answered = client.batch_get(&keys, run.allow_stale).await;
            (Class::BatchGet, answered)
        }
    };
    if !run.measuring.load(Ordering::Relaxed) {
        return;
    }
    stats.near_hits += u64::from(near_hit);
    run.measured_ops.fetch_add(1, Ordering::Relaxed);
    match outcome {
        Ok(keys) => {
            stats.record(class, runtime::now().saturating_duration_since(intended));
            stats.batch_keys += keys;
        }
        Err(status) => stats.record_error(status.code()),
    }
}

async fn worker(run: Arc<Run>, index: usize, mut generator: Generator) -> Stats {
    let client = &run.clients[index % run.clients.len()];
    let mut stats = Stats::default();
    while !run.stop.load(Ordering::Relaxed)
        && run.measured_ops.load(Ordering::Relaxed) < run.ops_max
    {
        let intended = match run.interval_ns {
            Some(interval_ns) => {
                let slot = run.next_slot.fetch_add(1, Ordering::Relaxed);
                let due = run.started + Duration::from_nanos(interval_ns.saturating_mul(slot));
                let now = runtime::now();
                if due > now {
                    runtime::sleep(due - now).await;
                }
                due
            }
            None => runtime::now(),
        };
        if run.stop.load(Ordering::Relaxed) {
            break;
        }
        send(&run, client, generator.next_op(), intended, &mut stats).await;
    }
    stats
}

/// Waits until the target answers a read (Hyperion: a leader is known), at most `READY_WAIT`.
async fn wait_ready(args: &Args) -> Result<(), String> {
    let started = runtime::now();
    let mut probe = None;
    loop {
        if probe.is_none() {
            match BenchClient::connect(args, false).await {
                Ok(client) => probe = Some(client),
                Err(error) if started.elapsed() >= READY_WAIT => return Err(error),
                Err(_) => {}
            }
        }
        if let Some(client) = &probe {
            match client.get(b"bench:ready-probe", args.allow_stale).await {
                Ok(_) => return Ok(()),
                Err(status) if started.elapsed() >= READY_WAIT => {
                    return Err(format!(
                        "{} did not answer within {READY_WAIT:?}: {} {}",
                        args.addr,
                        status.code(),
                        status.message()
                    ))
                }
                Err(_) => {}
            }
        }
        runtime::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes every key once, `PRELOAD_CONCURRENCY` at a time (Hyperion's client with its retries:
/// the preload is not measured).
async fn preload(args: &Args, value: &[u8]) -> Result<(), String> {
    let writers = if args.target.connection_per_worker() {
        let mut writers = Vec::with_capacity(PRELOAD_CONCURRENCY);
        for _ in 0..PRELOAD_CONCURRENCY {
            writers.push(Arc::new(BenchClient::connect(args, false).await?));
        }
        writers
    } else if args.target == Target::Hyperion {
        let retrying = client(args)?.with_retry(hyperion::client::default_retry_policy());
        vec![Arc::new(BenchClient::Plain(retrying))]
    } else {
        vec![Arc::new(BenchClient::connect(args, false).await?)]
    };
    let next = Arc::new(AtomicU64::new(0));
    let progress = progress_bar(args, args.keys, "preload");
    let mut tasks = Vec::new();
    for index in 0..PRELOAD_CONCURRENCY {
        let writer = Arc::clone(&writers[index % writers.len()]);
        let (value, next, keys) = (value.to_vec(), next.clone(), args.keys);
        let progress = progress.clone();
        tasks.push(runtime::spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= keys {
                    return Ok::<(), String>(());
                }
                writer
                    .set(&workload::key(id, false), &value)
                    .await
                    .map_err(|s| {
                        format!("preload of key {id} failed: {} {}", s.code(), s.message())
                    })?;
                if let Some(bar) = &progress {
                    bar.inc(1);
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(())
}

/// CPU seconds (user + system) process `pid` has used: fields 14 and 15 of `/proc/PID/stat`, in
/// clock ticks of 1/100 s (`USER_HZ`, fixed at 100 in Linux's ABI on the platforms it runs on).
fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("--server-pid: {path}: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<u64>().ok());
    // After the name, field 3 is index 0: utime (14) is index 11, stime (15) index 12.
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Ok((user + system) as f64 / 100.0),
        _ => Err(format!("--server-pid: {path} has no CPU times")),
    }
}

fn progress_bar(args: &Args, length: u64, what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if args.json_only || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(length);
    let template = format!("{what} {{bar:40}} {{pos}}/{{len}} ({{eta}} left)");
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match bench(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hyperion-bench: {error}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn bench(args: &Args) -> Result<(), String> {
    if let Some(addr) = args.serve_echo {
        return echo::serve(addr, args.value_bytes).await;
    }
    args.check()?;
    // Random bytes: a value no server can compress (Hyperion's LZ4 would shrink a pattern).
    let mut value = vec![0u8; args.value_bytes];
    rand::RngCore::fill_bytes(&mut ChaCha8Rng::seed_from_u64(args.seed), &mut value);
    wait_ready(args).await?;
    if args.mix.reads() && !args.no_preload {
        preload(args, &value).await?;
    }
    let count = if args.target.connection_per_worker() {
        args.concurrency
    } else {
        args.connections
    };
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        clients.push(BenchClient::connect(args, true).await?);
    }
    let zipfian = (args.distribution == Distribution::Zipfian)
        .then(|| Zipfian::new(args.keys, args.zipf_theta));
    let run = Arc::new(Run {
        clients,
        value,
        allow_stale: args.allow_stale,
        next_slot: AtomicU64::new(0),
        interval_ns: args.rate.map(|rate| 1_000_000_000 / rate.max(1)),
        started: runtime::now(),
        measuring: AtomicBool::new(args.warmup_s == 0),
        stop: AtomicBool::new(false),
        measured_ops: AtomicU64::new(0),
        ops_max: args.ops_max,
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|index| {
            let generator = Generator::new(
                args.mix,
                args.keys,
                zipfian.clone(),
                args.miss_percent,
                args.batch_size,
                ChaCha8Rng::seed_from_u64(
                    args.seed
                        .wrapping_mul(0x9e37_79b9)
                        .wrapping_add(index as u64),
                ),
            );
            runtime::spawn(worker(Arc::clone(&run), index, generator))
        })
        .collect();
    runtime::sleep(Duration::from_secs(args.warmup_s)).await;
    run.measuring.store(true, Ordering::Relaxed);
    let measured_from = runtime::now();
    let cpu_from = args.server_pid.map(cpu_seconds).transpose()?;
    let progress = progress_bar(args, args.duration_s, "measuring (s)");
    for _ in 0..args.duration_s {
        runtime::sleep(Duration::from_secs(1)).await;
        if let Some(bar) = &progress {
            bar.inc(1);
        }
        if run.measured_ops.load(Ordering::Relaxed) >= run.ops_max {
            break;
        }
    }
    run.stop.store(true, Ordering::Relaxed);
    let elapsed = measured_from.elapsed();
    let server_cpu_s = match (cpu_from, args.server_pid) {
        (Some(from), Some(pid)) => Some(cpu_seconds(pid)? - from),
        _ => None,
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let mut total = Stats::default();
    for worker in workers {
        total.merge(&worker.await.map_err(|e| e.to_string())?);
    }
    let mut report = total.json(elapsed, args.settings());
    if let Some(cpu_s) = server_cpu_s {
        // The operations measured are those answered by the time the CPU was read (the few in
        // flight then are counted too: a bias below 0.1 % at 50 in flight over 10 s).
        let ops = total.ops().max(1) as f64;
        report["server_cpu_s"] = json!(cpu_s);
        report["server_cpu_us_per_op"] = json!(cpu_s * 1e6 / ops);
    }
    if !args.json_only {
        println!(
            "hyperion-bench: {} loop, target {:?}, mix {}, {} keys ({}), {} B values, concurrency {}, {:.1} s measured",
            if args.rate.is_some() { "open" } else { "closed" },
            args.target,
            report["settings"]["mix"].as_str().unwrap_or("?"),
            args.keys,
            report["settings"]["distribution"].as_str().unwrap_or("?"),
            args.value_bytes,
            args.concurrency,
            elapsed.as_secs_f64()
        );
        print!("{}", total.table(elapsed));
        if let Some(cpu_s) = server_cpu_s {
            println!(
                "server CPU: {cpu_s:.2} s, {:.1} µs per operation",
                cpu_s * 1e6 / total.ops().max(1) as f64
            );
        }
    }
    println!("{report}");
    Ok(())
}
