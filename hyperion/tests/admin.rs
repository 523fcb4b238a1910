//! The admin HTTP port over real HTTP/1.1 on loopback: metrics after writes, health and
//! readiness, Bearer auth (401, 403, 429 with Retry-After), bounded eviction through the log,
//! step-down on a one-voter cluster, flag reloads (admin endpoint, file change, SIGHUP) that keep
//! the old flags on a bad file, and a value limit that follows a reload.

use std::net::SocketAddr;
use std::time::Duration;

use hyperion::config::Config;
use hyperion::runtime::NodeClock;
use hyperion::secret::Secret;
use hyperion::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One request on its own connection (`Connection: close`), read to the end.
async fn http(addr: SocketAddr, method: &str, target: &str, key: Option<&str>) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = key.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    let request =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

#[tokio::test]
async fn the_admin_port_serves_the_runbook() {
    let dir = std::env::temp_dir().join(format!("hyperion-admin-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let flags = dir.join("flags.json");
    std::fs::write(&flags, r#"{"enable_compression": true}"#).unwrap();
    let mut config = Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.ops.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    config.ops.flags_file = Some(flags.clone());
    config.data_dir = dir.join("data");
    // The smallest log allowed between snapshots, so the writes below take one.
    config.raft.snapshot_entries = hyperion::config::SNAPSHOT_ENTRIES_MIN;
    config.security.admin_key_names = vec!["oncall".to_string()];
    config.security.admin_api_keys = vec![Secret::new(b"s3cret-admin-key".to_vec())];
    let server = Server::bind(&config, NodeClock::system()).await.unwrap();
    let admin = server.admin_addr().expect("an admin port");
    let grpc = server.local_addr();
    let replica = server.replica();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = hyperion::runtime::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    for _ in 0..200 {
        if replica.status().leader_id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(http(admin, "GET", "/health", None).await.status, 200);
    let ready = http(admin, "GET", "/ready", None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    let client = hyperion::client::Client::new(&grpc.to_string()).unwrap();
    for i in 0..20 {
        client
            .set(format!("k{i}").as_bytes(), &[7u8; 100], 0, 0)
            .await
            .unwrap();
    }
    client.get(b"k1", false).await.unwrap();
    let metrics = http(admin, "GET", "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    let gauge = |name: &str| -> u64 {
        let prefix = format!("{name} ");
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("{name} is exported"))
            .parse()
            .unwrap()
    };
    let size = gauge("hyperion_cache_size_bytes");
    assert!(size > 20 * 100, "size {size}");
    // The process's real footprint beside the cache's accounting, and the log between them.
    let resident = gauge("hyperion_process_resident_bytes");
    assert!(resident > size, "resident {resident}, accounted {size}");
    let log = gauge("hyperion_raft_log_bytes");
    assert!(log < resident, "log {log}, resident {resident}");
    assert!(
        metrics
            .body
            .contains("hyperion_requests_total{rpc=\"Set\",code=\"OK\"} 20"),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("hyperion_cache_entries 20"));
    // Timed where the work happens: the WAL's fsyncs and the snapshot the writes caused.
    let count = |name: &str| -> u64 {
        let prefix = format!("{name}_count ");
        metrics
            .body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} is exported:\n{}", metrics.body))
            .parse()
            .unwrap()
    };
    assert!(count("hyperion_raft_wal_fsync_duration_seconds") > 0);
    assert!(count("hyperion_raft_snapshot_duration_seconds") > 0);
    // No system of record here: the family is exported, with nothing timed.
    assert!(metrics
        .body
        .contains("# TYPE hyperion_db_query_duration_seconds histogram"));

    // Auth: none, wrong, right.
    assert_eq!(http(admin, "GET", "/admin/status", None).await.status, 401);
    assert_eq!(
        http(admin, "GET", "/admin/status", Some("wrong"))
            .await
            .status,
        403
    );
    let status = http(admin, "GET", "/admin/status", Some("s3cret-admin-key")).await;
    assert_eq!(status.status, 200, "{}", status.body);
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(status["role"], "leader");
    assert_eq!(status["entries"], 20);

    // Eviction is bounded, and goes through the log.
    let refused = http(
        admin,
        "POST",
        "/admin/cache/evict?count=1000001",
        Some("s3cret-admin-key"),
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("count"), "{}", refused.body);
    let evicted = http(
        admin,
        "POST",
        "/admin/cache/evict?count=5",
        Some("s3cret-admin-key"),
    )
    .await;
    assert_eq!(evicted.status, 200, "{}", evicted.body);
    assert!(evicted.body.contains("\"evicted\":5"), "{}", evicted.body);
    assert_eq!(replica.stats().entries, 15);

    // One voter: nobody to hand leadership to.
    let step_down = http(
        admin,
        "POST",
        "/admin/raft/step-down",
        Some("s3cret-admin-key"),
    )
    .await;
    assert_eq!(step_down.status, 409, "{}", step_down.body);

    // A bad flag file keeps the old flags and says why; a good one reloads.
    std::fs::write(&flags, r#"{"enable_compresion": true}"#).unwrap();
    let bad = http(
        admin,
        "POST",
        "/admin/flags/reload",
        Some("s3cret-admin-key"),
    )
    .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("enable_compresion"), "{}", bad.body);

    // 10 admin requests per second per key: the 11th within the second is refused.
    let mut throttled = None;
    for _ in 0..12 {
        let answer = http(admin, "GET", "/admin/status", Some("s3cret-admin-key")).await;
        if answer.status == 429 {
            throttled = Some(answer);
            break;
        }
    }
    let throttled = throttled.expect("429 within 12 requests");
    assert!(
        throttled
            .head
            .to_ascii_lowercase()
            .contains("retry-after: 1"),
        "{}",
        throttled.head
    );

    let _ = stop.send(());
    served.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_feature_flags_reload_when_their_file_changes() {
    let dir = std::env::temp_dir().join(format!("hyperion-flags-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let flags = dir.join("flags.json");
    std::fs::write(&flags, r#"{"enable_compression": true}"#).unwrap();
    let mut config = Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.ops.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    config.ops.flags_file = Some(flags.clone());
    config.data_dir = dir.join("data");
    config.security.admin_key_names = vec!["oncall".to_string()];
    config.security.admin_api_keys = vec![Secret::new(b"s3cret-admin-key".to_vec())];
    let server = Server::bind(&config, NodeClock::system()).await.unwrap();
    let admin = server.admin_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = hyperion::runtime::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    // Let the watcher take its first look at the file before it changes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A changed file (longer, so its stamp differs even within one mtime tick) is picked up by
    // the watcher: a manual reload afterwards finds nothing changed.
    std::fs::write(
        &flags,
        r#"{"enable_compression": false, "enable_batching": false}"#,
    )
    .unwrap();
    tokio::time::sleep(hyperion::reload::FILE_POLL_INTERVAL * 2 + Duration::from_millis(500)).await;
    let reload = http(
        admin,
        "POST",
        "/admin/flags/reload",
        Some("s3cret-admin-key"),
    )
    .await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    let answer: serde_json::Value = serde_json::from_str(&reload.body).unwrap();
    assert_eq!(
        answer["changed"], false,
        "the watcher did not reload: {}",
        reload.body
    );
    assert!(
        answer["flags"]
            .as_str()
            .unwrap()
            .contains("enable_batching: false"),
        "{answer}"
    );
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGHUP to this process (the node under test runs in it).
fn hangup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn the_feature_flags_reload_on_sighup() {
    let dir = std::env::temp_dir().join(format!("hyperion-sighup-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let flags = dir.join("flags.json");
    let reference = dir.join("mtime-reference");
    std::fs::write(
        &flags,
        r#"{"enable_compression": true , "max_value_size_kb": 512}"#,
    )
    .unwrap();
    let mut config = Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.ops.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    config.ops.flags_file = Some(flags.clone());
    config.data_dir = dir.join("data");
    config.security.admin_key_names = vec!["oncall".to_string()];
    config.security.admin_api_keys = vec![Secret::new(b"s3cret-admin-key".to_vec())];
    let server = Server::bind(&config, NodeClock::system()).await.unwrap();
    let admin = server.admin_addr().unwrap();
    let client = hyperion::client::Client::new(&server.local_addr().to_string()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = hyperion::runtime::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let value = vec![7u8; 3 * 1024];
    client.set(b"before", &value, 0, 0).await.unwrap();
    // A change the file watcher cannot see: same length, and the old modification time put
    // back. Only the SIGHUP makes the node read the file again.
    let touch = |from: &std::path::Path, to: &std::path::Path| {
        let status = std::process::Command::new("touch")
            .arg("-r")
            .arg(from)
            .arg(to)
            .status()
            .expect("touch runs");
        assert!(status.success());
    };
    std::fs::write(&reference, "").unwrap();
    touch(&flags, &reference);
    std::fs::write(
        &flags,
        r#"{"enable_compression": false, "max_value_size_kb":   2}"#,
    )
    .unwrap();
    touch(&reference, &flags);
    tokio::time::sleep(hyperion::reload::FILE_POLL_INTERVAL + Duration::from_millis(500)).await;
    hangup();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Reloading again finds nothing new: the SIGHUP already took the file.
    let reload = http(
        admin,
        "POST",
        "/admin/flags/reload",
        Some("s3cret-admin-key"),
    )
    .await;
    assert_eq!(reload.status, 200, "{}", reload.body);
    let answer: serde_json::Value = serde_json::from_str(&reload.body).unwrap();
    assert_eq!(
        answer["changed"], false,
        "SIGHUP did not reload the flags: {}",
        reload.body
    );
    assert!(
        answer["flags"]
            .as_str()
            .unwrap()
            .contains("enable_compression: false"),
        "{answer}"
    );
    // The lowered value limit went through the log, and the API follows it.
    let refused = client.set(b"after", &value, 0, 0).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("max_value_size_kb"),
        "{refused:?}"
    );
    client.set(b"after", &value[..2048], 0, 0).await.unwrap();
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
