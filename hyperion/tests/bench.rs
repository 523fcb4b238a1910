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

/// A free loopback port (bound, then released for a server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process the test started; killed when dropped.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `argv` and waits until it listens on `port` (at most 30 s).
async fn start_listening(argv: &[&str], port: u16) -> Started {
    let child = Command::new(argv[0])
        .args(&argv[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", argv[0]));
    let started = Started(child);
    for _ in 0..1_500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return started;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{} did not listen on {port} within 30 s", argv[0]);
}

#[tokio::test]
async fn the_echo_server_answers_the_benchmark_and_its_cpu_is_counted() {
    let dir = std::env::temp_dir().join(format!("hyperion-bench-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let echo = start_listening(
        &[env!("CARGO_BIN_EXE_hyperion-bench"), "--serve-echo", &addr],
        port,
    )
    .await;
    let pid = echo.0.id().to_string();
    for (mix, class) in [("get", "get_hit"), ("batch-get", "batch_get")] {
        let result = bench(
            &dir,
            &addr,
            &[
                "--mix",
                mix,
                "--no-preload",
                "--batch-size",
                "10",
                "--server-pid",
                &pid,
            ],
        )
        .await;
        assert!(
            result["classes"][class]["count"].as_u64().unwrap() > 0,
            "{result}"
        );
        assert!(result["errors"].as_object().unwrap().is_empty(), "{result}");
        let cpu = result["server_cpu_us_per_op"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu < 1e6, "server CPU per op {cpu}: {result}");
    }
    drop(echo);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether the real servers `ci/compare` measures are installed; `HYPERION_REQUIRE_COMPARE=1`
/// (CI) makes their absence a failure rather than a skip.
fn compared_servers_present() -> bool {
    let present = ["redis-server", "memcached", "etcd"].iter().all(|binary| {
        Command::new(binary)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if !present {
        assert!(
            std::env::var("HYPERION_REQUIRE_COMPARE").as_deref() != Ok("1"),
            "HYPERION_REQUIRE_COMPARE=1 but redis-server, memcached or etcd is missing \
             (Debian: redis-server memcached etcd-server)"
        );
        eprintln!("skipped: redis-server, memcached or etcd is not installed");
    }
    present
}

/// The bench's own clients of Redis (RESP), memcached (text protocol) and etcd (gRPC) against
/// the real servers from Debian's packages: what `ci/compare` measures them with.
#[tokio::test]
async fn the_benchmark_drives_redis_memcached_and_etcd() {
    if !compared_servers_present() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hyperion-bench-others-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let redis_port = free_port();
    let redis_port_text = redis_port.to_string();
    let _redis = start_listening(
        &[
            "redis-server",
            "--port",
            &redis_port_text,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        redis_port,
    )
    .await;
    let memcached_port = free_port();
    let memcached_port_text = memcached_port.to_string();
    let _memcached = start_listening(
        &[
            "memcached",
            "-l",
            "127.0.0.1",
            "-p",
            &memcached_port_text,
            "-U",
            "0",
            "-u",
            "nobody",
        ],
        memcached_port,
    )
    .await;
    let (etcd_port, etcd_peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer}");
    let etcd_dir = dir.join("etcd").display().to_string();
    let initial = format!("e0={peer_url}");
    let _etcd = start_listening(
        &[
            "etcd",
            "--name",
            "e0",
            "--data-dir",
            &etcd_dir,
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &initial,
        ],
        etcd_port,
    )
    .await;
    let targets = [
        ("redis", redis_port, true),
        ("memcached", memcached_port, true),
        ("etcd", etcd_port, false),
    ];
    for (target, port, batches) in targets {
        let addr = format!("127.0.0.1:{port}");
        // Half the Gets miss: the clients tell a hit from a miss.
        let common = ["--target", target, "--keys", "100", "--concurrency", "4"];
        let gets = bench(
            &dir,
            &addr,
            &[&common[..], &["--mix", "get", "--miss-percent", "50"]].concat(),
        )
        .await;
        let hits = gets["classes"]["get_hit"]["count"].as_u64().unwrap_or(0);
        let misses = gets["classes"]["get_miss"]["count"].as_u64().unwrap_or(0);
        assert!(hits > 0 && misses > 0, "{target}: {gets}");
        assert!(
            gets["errors"].as_object().unwrap().is_empty(),
            "{target}: {gets}"
        );
        let sets = bench(&dir, &addr, &[&common[..], &["--mix", "set"]].concat()).await;
        assert!(
            sets["classes"]["set"]["count"].as_u64().unwrap() > 0,
            "{target}: {sets}"
        );
        if batches {
            let batch = bench(
                &dir,
                &addr,
                &[&common[..], &["--mix", "batch-get", "--batch-size", "10"]].concat(),
            )
            .await;
            // Every key was written: each batch finds all ten.
            let keys = batch["batch_get_keys"].as_u64().unwrap_or(0);
            let count = batch["classes"]["batch_get"]["count"].as_u64().unwrap();
            assert!(count > 0 && keys == count * 10, "{target}: {batch}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
