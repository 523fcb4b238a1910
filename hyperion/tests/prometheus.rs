//! A real Prometheus (Debian's package) scrapes a node's admin port on loopback, and its query
//! API reports `hyperion_cache_size_bytes` above 0 after writes.
//!
//! Prometheus runs with its own config file and data directory in a temp dir, listening on
//! loopback, scraping every second; it is killed when the test ends, however it ends. Without a
//! `prometheus` binary the test says so and passes, unless `HYPERION_REQUIRE_PROMETHEUS=1` (set
//! by ci/test, which installs it) makes that a failure. `HYPERION_PROMETHEUS_BIN` names another
//! binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyperion::config::Config;
use hyperion::runtime::NodeClock;
use hyperion::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the test waits for Prometheus to start and to report the scraped value.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// Kills and reaps Prometheus when dropped (also when an assertion fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HYPERION_PROMETHEUS_BIN") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
}

fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `target` on its own connection; the body, or `None` if the server is not answering yet.
async fn get(addr: SocketAddr, target: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// The value of the first series of an instant query answer, if there is one.
fn first_value(body: &str) -> Option<f64> {
    let answer: serde_json::Value = serde_json::from_str(body).ok()?;
    answer["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

fn write_config(dir: &Path, admin: SocketAddr) -> PathBuf {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
             - job_name: hyperion\n    static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_cache_size() {
    let Some(binary) = prometheus_binary() else {
        let required = std::env::var("HYPERION_REQUIRE_PROMETHEUS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "HYPERION_REQUIRE_PROMETHEUS=1 but no prometheus binary on PATH \
             (apt-get install prometheus, or set HYPERION_PROMETHEUS_BIN)"
        );
        eprintln!("SKIPPED: no prometheus binary on PATH (apt-get install prometheus)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("hyperion-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let mut config = Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.ops.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    config.data_dir = dir.join("data");
    let server = Server::bind(&config, NodeClock::system()).await.unwrap();
    let admin = server.admin_addr().unwrap();
    let grpc = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = hyperion::runtime::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let client = hyperion::client::Client::new(&grpc.to_string()).unwrap();
    for i in 0..10 {
        client
            .set(format!("scraped-{i}").as_bytes(), &[1u8; 256], 0, 0)
            .await
            .unwrap();
    }

    let web: SocketAddr = format!("127.0.0.1:{}", free_loopback_port())
        .parse()
        .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let prometheus = Running(
        Command::new(&binary)
            .arg(format!(
                "--config.file={}",
                write_config(&dir, admin).display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display())),
    );

    let query = "/api/v1/query?query=hyperion_cache_size_bytes%7Bjob%3D%22hyperion%22%7D";
    let mut waited = Duration::ZERO;
    let mut last = None;
    let size = loop {
        if let Some((200, body)) = get(web, query).await {
            if let Some(value) = first_value(&body) {
                break value;
            }
            last = Some(body);
        }
        assert!(
            waited < PROMETHEUS_WAIT,
            "Prometheus reported no hyperion_cache_size_bytes within {PROMETHEUS_WAIT:?}; last \
             answer: {last:?}; its log: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        waited += Duration::from_millis(250);
    };
    assert!(
        size > 0.0,
        "hyperion_cache_size_bytes is {size} after 10 writes"
    );
    let up = get(web, "/api/v1/query?query=up%7Bjob%3D%22hyperion%22%7D").await;
    assert_eq!(up.and_then(|(_, body)| first_value(&body)), Some(1.0));

    drop(prometheus);
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
