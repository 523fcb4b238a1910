//! A real node whose data directory fills up (tokio build): its data directory is a small tmpfs
//! the test mounts (root; `HYPERION_REQUIRE_TMPFS=1` turns a skip into a failure). Writes are
//! refused with `RESOURCE_EXHAUSTED` naming `HYPERION_DATA_DIR` once the device is full, the node
//! goes on serving reads, nothing acknowledged is lost, and once the tmpfs is grown writes are
//! accepted again. The mount is removed however the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hyperion::client::Client;
use hyperion::proto::CacheStatus;
use tonic::Code;

/// The tmpfs and the node on it; unmounted and killed on drop.
struct Mounted {
    dir: PathBuf,
    node: Option<Child>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut node) = self.node.take() {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn mount_tmpfs(dir: &Path, size_mb: u64) -> bool {
    std::fs::create_dir_all(dir).is_ok()
        && run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_mb}m"))
            .arg("tmpfs")
            .arg(dir))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_dir_refuses_writes_clearly_and_loses_nothing() {
    let required = std::env::var("HYPERION_REQUIRE_TMPFS").is_ok_and(|v| v == "1");
    let dir = std::env::temp_dir().join(format!("hyperion-disk-full-{}", std::process::id()));
    if !is_root() || !mount_tmpfs(&dir, 12) {
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            !required,
            "HYPERION_REQUIRE_TMPFS=1 but a tmpfs cannot be mounted (needs root)"
        );
        eprintln!("skipped: mounting a tmpfs needs root (HYPERION_REQUIRE_TMPFS=1 to require it)");
        return;
    }
    let mut mounted = Mounted {
        dir: dir.clone(),
        node: None,
    };
    let addr = format!("127.0.0.1:{}", free_port());
    mounted.node = Some(
        Command::new(env!("CARGO_BIN_EXE_hyperion"))
            .arg("serve")
            .env_clear()
            .env("HYPERION_LISTEN_ADDR", &addr)
            .env("HYPERION_ADMIN_ADDR", "off")
            .env("HYPERION_DATA_DIR", dir.join("data"))
            .env("HYPERION_DISK_RESERVE_MB", "2")
            .env("HYPERION_RATE_LIMIT_SET", "0")
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hyperion starts"),
    );
    let client = Client::new(&addr).unwrap();
    let value = vec![b'v'; 64 << 10];
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    // 12 MiB fill after fewer than 200 values of 64 KiB; bounded in count.
    for i in 0..400 {
        let key = format!("k{i}");
        match client.set(key.as_bytes(), &value, 0, 0).await {
            Ok(written) => acknowledged.push((key, written.version)),
            Err(status) if status.code() == Code::ResourceExhausted => {
                refusal = Some(status);
                break;
            }
            Err(status) if acknowledged.is_empty() && i < 100 => {
                // Not serving yet (electing itself).
                eprintln!("before the first write: {status}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("write {i} failed otherwise: {status}"),
        }
    }
    let refusal = refusal.expect("writes are refused once the data directory is full");
    assert!(
        refusal
            .message()
            .contains("HYPERION_DATA_DIR is out of space"),
        "{}",
        refusal.message()
    );
    assert!(
        refusal
            .metadata()
            .get(hyperion::api::NOT_APPLIED_METADATA)
            .is_some(),
        "a refused write is marked not applied"
    );
    eprintln!(
        "{} writes of 64 KiB acknowledged before the 12 MiB tmpfs filled: {}",
        acknowledged.len(),
        refusal.message()
    );
    assert!(
        acknowledged.len() >= 50,
        "the reserve was not the only space"
    );
    let node = mounted.node.as_mut().expect("started");
    assert!(
        node.try_wait().expect("status").is_none(),
        "the node goes on running"
    );
    // Reads go on, and every acknowledged write is there.
    for (key, version) in &acknowledged {
        let read = client
            .get(key.as_bytes(), false)
            .await
            .expect("reads are served");
        assert_eq!(
            (read.status, read.version),
            (CacheStatus::Hit as i32, *version),
            "{key}"
        );
    }
    // Space again: writes are accepted within a few reserve retries.
    assert!(
        run(Command::new("mount")
            .args(["-o", "remount,size=64m"])
            .arg(&dir)),
        "the tmpfs grows"
    );
    let mut accepted = None;
    for _ in 0..100 {
        match client.set(b"after", b"space", 0, 0).await {
            Ok(written) => {
                accepted = Some(written.version);
                break;
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("after growing the tmpfs: {status}"),
        }
    }
    assert!(
        accepted.is_some(),
        "writes accepted again within 10 s of space returning"
    );
    for (key, version) in &acknowledged {
        let read = client.get(key.as_bytes(), false).await.unwrap();
        assert_eq!(read.version, *version, "{key}");
    }
}
