//! A real `hyperion serve` process whose storage fails while it runs must end, with one clear log
//! line and a non-zero status, instead of living on as a zombie (answering `Status` and stale
//! reads from frozen state). Here its Raft directory disappears under it, so the next snapshot
//! cannot be written. Bounded in time; loopback only.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use hyperion::client::Client;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_storage_fails_exits_with_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("hyperion-fatal-exit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperion"))
        .arg("serve")
        .env_clear()
        .env("HYPERION_LISTEN_ADDR", &addr)
        .env("HYPERION_ADMIN_ADDR", "127.0.0.1:0")
        .env("HYPERION_DATA_DIR", &dir)
        .env("HYPERION_RAFT_SNAPSHOT_ENTRIES", "10")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hyperion starts");
    let client = Client::new(&addr).unwrap();
    let mut written = 0;
    for attempt in 0..200 {
        if client.set(b"k", b"v", 0, 0).await.is_ok() {
            written += 1;
            break;
        }
        assert!(attempt < 199, "the node never took a write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The disk under the node goes away: the WAL still appends to its open file, but the next
    // snapshot (every 10 entries) cannot be created.
    std::fs::remove_dir_all(dir.join("raft")).expect("remove the Raft directory");
    let started = hyperion::runtime::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the node lives on after its storage failed ({written} writes)"
        );
        if client.set(b"k", b"v", 0, 0).await.is_ok() {
            written += 1;
        }
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(74), "EX_IOERR; stderr:\n{stderr}");
    let fatal: Vec<&str> = stderr.lines().filter(|l| l.contains("fatal:")).collect();
    assert_eq!(fatal.len(), 1, "one clear line; stderr:\n{stderr}");
    assert!(
        fatal[0].contains("storage failed") && fatal[0].contains("snapshot"),
        "{}",
        fatal[0]
    );
}
