//! `hyperion-cli` as an operator runs it, against a real node on loopback: values from stdin
//! and from a file, `--output json` on every verb, `batch-get --keys-file`, the admin verbs over
//! the admin HTTP port, and the documented exit codes (1 miss, 2 usage, 3 unavailable,
//! 4 refusal).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use hyperion::config::Config;
use hyperion::runtime::NodeClock;
use hyperion::secret::Secret;
use hyperion::server::Server;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// Longest one CLI run may take before the test kills it and fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the CLI with `args` (and `stdin`). Its output goes to files and the exit is polled, so
/// the node in this process keeps serving meanwhile.
async fn cli(dir: &Path, base: &[String], args: &[&str], stdin: Option<&[u8]>) -> Run {
    let (out, err) = (dir.join("cli.stdout"), dir.join("cli.stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_hyperion-cli"))
        .args(base)
        .args(args)
        .env_remove("HYPERION_ADDR")
        .env_remove("HYPERION_ADMIN_ADDR")
        .env_remove("HYPERION_ADMIN_API_KEY_FILE")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if waited > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hyperion-cli {args:?} still running after {RUN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += Duration::from_millis(10);
    };
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test]
async fn the_cli_reads_writes_administers_and_exits_with_the_documented_codes() {
    let dir = std::env::temp_dir().join(format!("hyperion-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = Config::development();
    config.listen_addr = "127.0.0.1:0".parse().unwrap();
    config.ops.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    config.data_dir = dir.join("data");
    config.security.admin_key_names = vec!["oncall".to_string()];
    config.security.admin_api_keys = vec![Secret::new(b"cli-admin-key".to_vec())];
    let server = Server::bind(&config, NodeClock::system()).await.unwrap();
    let admin = server.admin_addr().unwrap().to_string();
    let grpc = server.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = hyperion::runtime::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    let key_file = write(&dir, "admin.key", b"cli-admin-key\n");
    let wrong_key_file = write(&dir, "wrong.key", b"not-the-key\n");
    let base: Vec<String> = [
        "--addr",
        &grpc,
        "--admin-addr",
        &admin,
        "--deadline-ms",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    fn json<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["--output", "json"], args].concat()
    }
    let with_key: Vec<String> = [
        base.clone(),
        vec![
            "--admin-api-key-file".into(),
            key_file.display().to_string(),
        ],
    ]
    .concat();

    // A value from stdin, then from a file; read back as JSON.
    let set = cli(
        &dir,
        &base,
        &json(&["set", "from-stdin", "-"]),
        Some(b"piped value"),
    )
    .await;
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(set.json()["version"].as_u64().unwrap() > 0);
    let got = cli(&dir, &base, &json(&["get", "from-stdin"]), None).await;
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert_eq!(got.json()["status"], "HIT");
    assert_eq!(got.json()["value"], "piped value");
    let binary = write(&dir, "value.bin", &[0xff, 0x00, 0x7f]);
    let binary = binary.display().to_string();
    let set = cli(
        &dir,
        &base,
        &["set", "from-file", "--value-file", &binary],
        None,
    )
    .await;
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(set.stdout.starts_with("OK version="), "{}", set.stdout);
    assert_eq!(
        cli(&dir, &base, &json(&["get", "from-file"]), None)
            .await
            .json()["value_hex"],
        "ff007f"
    );

    // A miss is exit 1, in text and JSON.
    let miss = cli(&dir, &base, &["get", "absent"], None).await;
    assert_eq!((miss.code, miss.stdout.trim()), (1, "\"absent\" MISS"));
    assert_eq!(
        cli(&dir, &base, &json(&["get", "absent"]), None)
            .await
            .json()["status"],
        "MISS"
    );
    assert_eq!(cli(&dir, &base, &["delete", "absent"], None).await.code, 1);

    // batch-get from a keys file (long enough for the progress bar, which hides off a terminal).
    let keys: String = (0..1_200).map(|i| format!("batch-{i}\n")).collect();
    let keys_file = write(&dir, "keys.txt", format!("from-stdin\n{keys}").as_bytes());
    let keys_file = keys_file.display().to_string();
    let batch = cli(
        &dir,
        &base,
        &json(&["batch-get", "--keys-file", &keys_file]),
        None,
    )
    .await;
    assert_eq!(
        batch.code, 1,
        "misses among the keys: exit 1; {}",
        batch.stderr
    );
    let batch = batch.json();
    assert_eq!(batch["responses"].as_array().unwrap().len(), 1_201);
    assert_eq!(batch["responses"][0]["value"], "piped value");
    assert_eq!(batch["misses"], 1_200);

    // A refusal (compare-and-set mismatch) is exit 4.
    let cas = cli(
        &dir,
        &base,
        &["set", "from-stdin", "v", "--expected-version", "999999"],
        None,
    )
    .await;
    assert_eq!(cas.code, 4, "{}", cas.stderr);
    assert!(cas.stderr.contains("FailedPrecondition"), "{}", cas.stderr);

    // Usage errors are exit 2 and name the flag.
    let zero = cli(&dir, &with_key, &["evict", "--count", "0"], None).await;
    assert_eq!(zero.code, 2, "{}", zero.stderr);
    assert!(zero.stderr.contains("--count"), "{}", zero.stderr);
    let no_key = cli(&dir, &base, &["step-down"], None).await;
    assert_eq!(no_key.code, 2);
    assert!(
        no_key.stderr.contains("--admin-api-key-file"),
        "{}",
        no_key.stderr
    );
    let missing_file = cli(
        &dir,
        &base,
        &["set", "k", "--value-file", "/nonexistent/value"],
        None,
    )
    .await;
    assert_eq!(missing_file.code, 2, "{}", missing_file.stderr);

    // Admin verbs over the admin port.
    let metrics = cli(&dir, &base, &json(&["metrics"]), None).await;
    assert_eq!(metrics.code, 0, "{}", metrics.stderr);
    let size = metrics.json()["samples"]["hyperion_cache_size_bytes"]
        .as_f64()
        .unwrap();
    assert!(size > 0.0, "{size}");
    let text = cli(&dir, &base, &["metrics"], None).await;
    assert!(
        text.stdout
            .contains("# TYPE hyperion_cache_size_bytes gauge"),
        "{}",
        text.stdout
    );
    let health = cli(&dir, &base, &json(&["health"]), None).await;
    assert_eq!(health.code, 0, "{}", health.stderr);
    assert_eq!(health.json()["ready"], true);
    let evict = cli(&dir, &with_key, &json(&["evict", "--count", "1"]), None).await;
    assert_eq!(evict.code, 0, "{}", evict.stderr);
    assert_eq!(evict.json()["evicted"], 1);
    // One voter: step-down is refused (409), and so is a reload without a flag file (409).
    let step_down = cli(&dir, &with_key, &["step-down"], None).await;
    assert_eq!(step_down.code, 4, "{}", step_down.stderr);
    assert!(step_down.stderr.contains("409"), "{}", step_down.stderr);
    let reload = cli(&dir, &with_key, &json(&["flags", "reload"]), None).await;
    assert_eq!(reload.code, 4, "{}", reload.stderr);
    let refusal: serde_json::Value = serde_json::from_str(reload.stderr.trim()).unwrap();
    assert_eq!(refusal["exit_code"], 4);
    assert!(refusal["error"]
        .as_str()
        .unwrap()
        .contains("HYPERION_FEATURE_FLAGS"));
    let wrong = [
        base.clone(),
        vec![
            "--admin-api-key-file".into(),
            wrong_key_file.display().to_string(),
        ],
    ]
    .concat();
    let forbidden = cli(&dir, &wrong, &["evict", "--count", "1"], None).await;
    assert_eq!(forbidden.code, 4, "{}", forbidden.stderr);
    assert!(forbidden.stderr.contains("403"), "{}", forbidden.stderr);

    let _ = stop.send(());
    served.await.unwrap().unwrap();

    // The node is gone: the cluster and its admin port are unavailable (exit 3).
    let quick: Vec<String> = [
        "--addr",
        &grpc,
        "--admin-addr",
        &admin,
        "--deadline-ms",
        "300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let down = cli(&dir, &quick, &["get", "from-stdin"], None).await;
    assert_eq!(down.code, 3, "{}", down.stderr);
    let down = cli(&dir, &quick, &["health"], None).await;
    assert_eq!(down.code, 3, "{}", down.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
