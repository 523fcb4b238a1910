//! A small, bounded benchmark of the database layer against a real PostgreSQL/CockroachDB:
//! read-through load latency (through `DbClient`: breaker, cap, single-flight, retries) and
//! `write_batch` throughput, each next to a baseline from the same run — a prepared `SELECT 1` round
//! trip — so numbers can be compared across machines as ratios.
//!
//! ```sh
//! eval "$(ci/postgres start)"
//! cargo run --release -p hyperion --bin hyperion-db-bench
//! ```
//!
//! Reads `HYPERION_TEST_DATABASE_URL` and `HYPERION_TEST_DATABASE_PASSWORD_FILE`. It writes rows
//! under a `bench/<random>/` key prefix into the test database.

use std::time::Duration;

use clap::Parser;
use hyperion::config::Secret;
use hyperion::db::{
    Database, DbClient, DbClientConfig, Mutation, PgDatabase, PgSettings, StoredEntry,
};
use hyperion::runtime;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Parser)]
#[command(about = "Measure Hyperion's database layer against a real PostgreSQL")]
struct Args {
    /// Sequential round trips per latency measurement.
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Batches written per throughput measurement.
    #[arg(long, default_value_t = 100)]
    batches: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 100)]
    batch_rows: usize,
    /// Concurrent writers in the second throughput run.
    #[arg(long, default_value_t = 4)]
    writers: usize,
}

/// Bounds: the benchmark must finish in minutes on a shared machine.
const SAMPLES_MAX: usize = 100_000;
const ROWS_MAX: usize = 1_000_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

fn report(name: &str, mut samples: Vec<Duration>, baseline_p50: Option<Duration>) -> Duration {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    let ratio = baseline_p50
        .map(|b| {
            format!(
                "  ({:.2}x baseline p50)",
                p50.as_secs_f64() / b.as_secs_f64()
            )
        })
        .unwrap_or_default();
    println!(
        "{name:<34} n={:<6} p50={:>8.1}us  p99={:>8.1}us{ratio}",
        samples.len(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    p50
}

/// One plain tokio-postgres connection, outside the pool and the client.
async fn raw_client(
    url: &str,
    password_file: Option<&std::path::Path>,
) -> Result<tokio_postgres::Client, Box<dyn std::error::Error + Send + Sync>> {
    let (mut config, _, _) = hyperion::db::parse_dsn(url)?;
    if let Some(path) = password_file {
        config.password(std::fs::read(path)?.trim_ascii_end());
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    runtime::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    if args.samples == 0 || args.samples > SAMPLES_MAX {
        return Err(format!("--samples must be 1-{SAMPLES_MAX}").into());
    }
    if args.batch_rows == 0 || args.batch_rows > hyperion::db::WRITE_BATCH_MAX {
        return Err(format!("--batch-rows must be 1-{}", hyperion::db::WRITE_BATCH_MAX).into());
    }
    if args.writers == 0 || args.batches * args.batch_rows * args.writers.max(1) > ROWS_MAX {
        return Err(format!("at most {ROWS_MAX} rows per run, and at least one writer").into());
    }
    let url = std::env::var("HYPERION_TEST_DATABASE_URL")
        .map_err(|_| "HYPERION_TEST_DATABASE_URL is unset (eval \"$(ci/postgres start)\")")?;
    let settings = PgSettings {
        dsn: Secret::new(url.clone().into_bytes()),
        password_file: std::env::var_os("HYPERION_TEST_DATABASE_PASSWORD_FILE").map(Into::into),
        password: None,
        ca_file: None,
        pool_size: args.writers.max(4),
        connect_timeout: Duration::from_secs(5),
    };
    let db = PgDatabase::new(&settings)?;
    let config = DbClientConfig {
        max_concurrent_queries: settings.pool_size,
        ..DbClientConfig::default()
    };
    let client = DbClient::connect_and_warm(db.clone(), config, runtime::seeded_rng()).await?;
    let mut rng = ChaCha8Rng::seed_from_u64(runtime::entropy_seed());
    let prefix = format!("bench/{:016x}/", rng.random::<u64>());
    println!(
        "hyperion-db-bench: samples={} batches={}x{} rows writers={} (pool {})",
        args.samples, args.batches, args.batch_rows, args.writers, settings.pool_size
    );

    // Baseline: the cheapest round trip, through the same pool.
    for _ in 0..100 {
        db.ping().await?;
    }
    let mut pings = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let started = runtime::now();
        db.ping().await?;
        pings.push(runtime::now() - started);
    }
    let simple = report("SELECT 1 (pool, simple protocol)", pings, None);

    // The floor: a prepared `SELECT 1` on one raw tokio-postgres connection (plaintext DSNs only).
    let baseline = match raw_client(&url, settings.password_file.as_deref()).await {
        Ok(raw) => {
            let select_1 = raw.prepare("SELECT 1").await?;
            let mut samples = Vec::with_capacity(args.samples);
            for _ in 0..args.samples {
                let started = runtime::now();
                raw.query_one(&select_1, &[]).await?;
                samples.push(runtime::now() - started);
            }
            report("baseline SELECT 1 (raw, prepared)", samples, None)
        }
        Err(error) => {
            println!(
                "baseline SELECT 1 (raw, prepared): skipped ({error}); ratios use the simple one"
            );
            simple
        }
    };

    // Data for the loads: one batch of keys with 100-byte values.
    let keys: Vec<Vec<u8>> = (0..1_000)
        .map(|i| format!("{prefix}load/{i}").into_bytes())
        .collect();
    let rows: Vec<Mutation> = keys
        .iter()
        .map(|key| {
            Mutation::Upsert(StoredEntry {
                key: key.clone(),
                value: vec![b'v'; 100],
                version: 1,
                ttl_ms: 60_000,
                created_at_ms: 1,
            })
        })
        .collect();
    client.write_batch(&rows).await?;

    for (name, hit) in [
        ("load, hit (DbClient)", true),
        ("load, miss (DbClient)", false),
    ] {
        let mut samples = Vec::with_capacity(args.samples);
        for i in 0..args.samples {
            let key = if hit {
                keys[rng.random_range(0..keys.len())].clone()
            } else {
                format!("{prefix}absent/{i}").into_bytes()
            };
            let started = runtime::now();
            let loaded = client.load(&key, 0).await?;
            samples.push(runtime::now() - started);
            assert_eq!(loaded.is_some(), hit);
        }
        report(name, samples, Some(baseline));
    }
    let mut samples = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let key = &keys[rng.random_range(0..keys.len())];
        let started = runtime::now();
        db.load(key).await?;
        samples.push(runtime::now() - started);
    }
    report("load, hit (PgDatabase, no client)", samples, Some(baseline));

    // Write throughput: sequential batches, then concurrent writers.
    for writers in [1, args.writers] {
        let batches: Vec<Vec<Mutation>> = (0..args.batches * writers)
            .map(|b| {
                (0..args.batch_rows)
                    .map(|r| {
                        Mutation::Upsert(StoredEntry {
                            key: format!("{prefix}write{writers}/{b}/{r}").into_bytes(),
                            value: vec![b'w'; 100],
                            version: 1,
                            ttl_ms: 0,
                            created_at_ms: 1,
                        })
                    })
                    .collect()
            })
            .collect();
        let started = runtime::now();
        let mut latencies = Vec::with_capacity(batches.len());
        for chunk in batches.chunks(writers) {
            let timed = chunk.iter().map(|batch| async {
                let started = runtime::now();
                client
                    .write_batch(batch)
                    .await
                    .map(|()| runtime::now() - started)
            });
            for latency in futures::future::join_all(timed).await {
                latencies.push(latency?);
            }
        }
        let elapsed = runtime::now() - started;
        let rows = (batches.len() * args.batch_rows) as f64;
        let rows_per_s = rows / elapsed.as_secs_f64();
        let p50 = report(
            &format!("write_batch {} rows, {writers} writer(s)", args.batch_rows),
            latencies,
            Some(baseline),
        );
        println!(
            "{:<34} {rows_per_s:>10.0} rows/s  ({:.1} rows per baseline round trip; batch p50 {:.1} ms)",
            "",
            rows_per_s * baseline.as_secs_f64(),
            p50.as_secs_f64() * 1e3
        );
    }
    let metrics = client.metrics();
    println!(
        "client: attempts={} retries={} failures={} timeouts={} breaker_state={}",
        metrics.attempts,
        metrics.retries,
        metrics.attempt_failures,
        metrics.timeouts,
        metrics.breaker_state
    );
    Ok(())
}
