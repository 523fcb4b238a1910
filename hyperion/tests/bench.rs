//! `hyperion-bench` run as a process against a real node on loopback: it preloads, measures Get
//! hits and misses apart, counts `RESOURCE_EXHAUSTED` apart when the node's rate limit refuses
//! it, and ends with one JSON object. Bounded: one measured second per run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hyperion::config::Config;
use hyperion::limits::RateLimits;
use hyperion::runtime::NodeClock;
use hyperion::server::Server;

/// Longest a run may take (one measured second, plus the preload and start-up).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

async fn bench(dir: &Path, addr: &str, args: &[&str]) -> serde_json::Value {
    let (out, err) = (dir.join("bench.stdout"), dir.join("bench.stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperion-bench"))
        .args([
            "--addr",
            addr,
            "--json-only",
            "--duration-s",
            "1",
            "--warmup-s",
            "0",
        ])
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("hyperion-bench starts");
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if waited > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hyperion-bench {args:?} still running after {RUN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    };
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(
        status.success(),
        "hyperion-bench failed: {}",
        std::fs::read_to_string(&err).unwrap()
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the last line is the JSON result ({e}): {stdout}"))
}

#[tokio::test]
async fn the_benchmark_measures_hits_misses_and_refusals_apart() {
    let dir = std::env::temp_dir().join(format!("hyperion-bench-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.join("data");
    // Gets are capped low so the run meets the limit; Sets (the preload) are not.
    let limits = RateLimits {
        get_per_sec: 300,
        set_per_sec: 1_000_000,
        batch_get_per_sec: 1_000_000,
        ..RateLimits::UNLIMITED
    };
    let server = Server::bind(&config, NodeClock::system())
        .await
        .unwrap()
        .with_rate_limits(limits);
    let addr = server.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = hyperion::runtime::spawn(server.serve(async move {
        let _ = stopped.await;
    }));

    let args = [
        "--mix",
        "get",
        "--keys",
        "200",
        "--miss-percent",
        "50",
        "--concurrency",
        "8",
    ];
    std::fs::create_dir_all(&dir).unwrap();
    let result = bench(&dir, &addr, &args).await;
    assert_eq!(result["settings"]["loop"], "closed");
    let hits = result["classes"]["get_hit"]["count"].as_u64().unwrap();
    let misses = result["classes"]["get_miss"]["count"].as_u64().unwrap();
    assert!(hits > 0 && misses > 0, "{result}");
    // Half the Gets ask for keys never written: hits and misses are near half each.
    let share = hits as f64 / (hits + misses) as f64;
    assert!((0.3..0.7).contains(&share), "hit share {share}: {result}");
    assert!(
        result["resource_exhausted"].as_u64().unwrap() > 0,
        "a 300 Get/s limit must refuse some of a closed loop's Gets: {result}"
    );
    for class in ["get_hit", "get_miss"] {
        let c = &result["classes"][class];
        assert!(c["p50_us"].as_u64() <= c["p99_us"].as_u64(), "{result}");
        assert!(c["p99_us"].as_u64() <= c["max_us"].as_u64(), "{result}");
    }

    let _ = stop.send(());
    served.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
