//! A real multi-host cluster, as near as one machine gets to one (tokio build, Linux, root):
//! network namespaces `hyperion-<pid>-{n1,n2,n3,client}`, each with one end of a veth pair on
//! 10.77.0.0/24, the other ends on a bridge inside a fifth namespace `hyperion-<pid>-lan`, so
//! nothing of the host's own network is touched. Three `hyperion serve` processes with mTLS on
//! 10.77.0.11-13 (node certificates from a node CA, client certificates from a client CA,
//! made with rcgen for each run); the test's client side runs in the client namespace.
//!
//! Checks: writes and linearizable reads; a plaintext client, a client without a certificate,
//! a certificate from another CA and a client certificate calling `RaftService` each get their
//! status; a forged `Append` from a non-member is refused and changes nothing; then, under
//! load, `tc netem` loss and delay on one follower's link (a `tbf` rate limit where the kernel
//! has no netem), the leader's link cut (`ip link set
//! down`), healed, and `kill -9` of the leader: no acknowledged write is lost and the recorded
//! history is linearizable (checked by `hyperion-checker`, the simulator's checker).
//!
//! Lifecycle: a guard kills the nodes and deletes the namespaces however the test ends, and a
//! run first deletes namespaces left behind by runs whose process no longer exists (killed
//! before their guard ran). Every load loop is bounded in operations and in time.
//!
//! Without root or `ip netns` the test says so and passes, unless `HYPERION_REQUIRE_NETNS=1`
//! (set by `ci/test`), where it fails. Run it alone:
//! `sudo -E HYPERION_REQUIRE_NETNS=1 cargo nextest run -p hyperion --test netns`.

mod support;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyperion::client::{certainly_not_applied, Client, ClientSecurity};
use hyperion::proto::CacheStatus;
use hyperion::raft_proto::raft_service_client::RaftServiceClient;
use hyperion::raft_proto::{message, Append, Entry, Message, MessageBatch};
use hyperion::resilience::RetryPolicy;
use hyperion::runtime::ChannelSecurity;
use hyperion::secret::Secret;
use hyperion_checker::{
    check, CheckerConfig, ClientId, HistoryRecorder, Op, OpId, OpResult, Outcome, Verdict,
};
use support::Ca;
use tonic::Code;

/// The namespaces' subnet (inside them only; the host never sees it).
const SUBNET: &str = "10.77.0";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const PORT: u16 = 7000;
/// Bounds on the load: operations per task, and time in all.
const OPS_PER_TASK_MAX: u32 = 2_000;
const LOAD_TIME_MAX: Duration = Duration::from_secs(40);
/// Bound on waiting for a leader after a fault.
const LEADER_WAIT_MAX: Duration = Duration::from_secs(20);

fn node_addr(i: usize) -> String {
    format!("{SUBNET}.{}:{PORT}", 11 + i)
}

/// Runs `ip` (or `tc`) with `args`; the error is its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) {
    run("ip", args).unwrap_or_else(|e| panic!("{e}"));
}

/// The namespaces, the node processes and their files; torn down on drop, however the test
/// ends.
struct Topology {
    prefix: String,
    namespaces: Vec<String>,
    nodes: Vec<Option<Child>>,
    dir: PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for namespace in self.namespaces.iter().rev() {
            if let Err(e) = run("ip", &["netns", "delete", namespace]) {
                eprintln!("cleanup: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Topology {
    fn namespace(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn lan(&self) -> String {
        self.namespace("lan")
    }

    /// Adds namespace `name`, its veth pair (`eth0` inside, `v-<name>` on the bridge) and
    /// `address`.
    fn attach(&mut self, name: &str, address: &str) {
        let namespace = self.namespace(name);
        ip(&["netns", "add", &namespace]);
        self.namespaces.push(namespace.clone());
        let lan = self.lan();
        let port = format!("v-{name}");
        ip(&[
            "-n", &lan, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &namespace,
        ]);
        ip(&["-n", &lan, "link", "set", &port, "master", "br0", "up"]);
        ip(&[
            "-n",
            &namespace,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &namespace, "link", "set", "eth0", "up"]);
        ip(&["-n", &namespace, "link", "set", "lo", "up"]);
    }

    /// The bridge port of `name` up or down (the cable pulled, or plugged back in).
    fn link(&self, name: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.lan(),
            "link",
            "set",
            &format!("v-{name}"),
            state,
        ]);
    }

    /// Degrades the bridge port of `name` (traffic towards that node): `tc netem` delay and
    /// loss where the kernel has netem, else a `tbf` rate limit (a slow, queueing link).
    /// Returns what was applied.
    fn degrade(&self, name: &str) -> &'static str {
        let lan = self.lan();
        let port = format!("v-{name}");
        let qdisc = ["-n", lan.as_str(), "qdisc", "add", "dev", &port, "root"];
        let netem = ["netem", "delay", "20ms", "10ms", "loss", "10%"];
        match run("tc", &[&qdisc[..], &netem[..]].concat()) {
            Ok(()) => "netem: 20±10 ms delay, 10 % loss",
            Err(e) if e.contains("qdisc kind is unknown") => {
                let tbf = ["tbf", "rate", "2mbit", "burst", "16kbit", "latency", "50ms"];
                run("tc", &[&qdisc[..], &tbf[..]].concat()).unwrap_or_else(|e| panic!("{e}"));
                "tbf: 2 Mbit/s, up to 50 ms queueing (this kernel has no netem)"
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// Removes what [`Topology::degrade`] applied.
    fn restore(&self, name: &str) {
        let port = format!("v-{name}");
        run(
            "tc",
            &["-n", &self.lan(), "qdisc", "del", "dev", &port, "root"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Deletes namespaces of earlier runs whose process is gone (killed before their guard ran).
fn delete_stale_namespaces() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("hyperion-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "delete", name]);
        }
    }
}

/// Builds the bridge namespace, or says why namespaces cannot be made here.
fn lan(prefix: &str) -> Result<Topology, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".to_string());
    }
    delete_stale_namespaces();
    let mut topology = Topology {
        prefix: prefix.to_string(),
        namespaces: Vec::new(),
        nodes: Vec::new(),
        dir: std::env::temp_dir().join(prefix),
    };
    let lan = topology.lan();
    run("ip", &["netns", "add", &lan])?;
    topology.namespaces.push(lan.clone());
    run("ip", &["-n", &lan, "link", "add", "br0", "type", "bridge"])?;
    run("ip", &["-n", &lan, "link", "set", "br0", "up"])?;
    Ok(topology)
}

/// Moves this thread, and every thread it starts from now on, into `namespace`.
fn enter(namespace: &str) {
    let file = std::fs::File::open(format!("/run/netns/{namespace}"))
        .unwrap_or_else(|e| panic!("namespace {namespace}: {e}"));
    // SAFETY: setns only reads the descriptor, which `file` keeps open during the call; it
    // changes the network namespace of the calling thread and nothing else.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns {namespace}: {}",
        std::io::Error::last_os_error()
    );
}

/// The certificates of a run. The files every node reads (the CAs, the HMAC key) are written
/// once, before any node starts: a node reading a file while it is rewritten would see it
/// truncated.
struct Pki {
    dir: PathBuf,
    node_ca: Ca,
    client_ca: Ca,
    node_ca_file: PathBuf,
    client_ca_file: PathBuf,
    hmac_key_file: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let node_ca = Ca::new("Hyperion test node CA");
        let client_ca = Ca::new("Hyperion test client CA");
        Pki {
            node_ca_file: support::write(dir, "node-ca.pem", &node_ca.pem()),
            client_ca_file: support::write(dir, "client-ca.pem", &client_ca.pem()),
            hmac_key_file: support::write(dir, "hmac.key", &"k".repeat(32)),
            dir: dir.to_path_buf(),
            node_ca,
            client_ca,
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        support::write(&self.dir, name, text)
    }

    /// TLS that trusts the node CA, with `identity` as the client certificate.
    fn security(&self, name: &str, identity: Option<(String, String)>) -> ClientSecurity {
        let ca = &self.node_ca_file;
        let files = identity.map(|(cert, key)| {
            (
                self.write(&format!("{name}.pem"), &cert),
                self.write(&format!("{name}.key"), &key),
            )
        });
        ClientSecurity::from_files(
            Some(ca),
            files.as_ref().map(|(cert, _)| cert.as_path()),
            files.as_ref().map(|(_, key)| key.as_path()),
            None,
        )
        .unwrap()
    }
}

fn start_node(topology: &mut Topology, pki: &Pki, i: usize) -> Child {
    let name = NODES[i];
    let members = (0..NODES.len())
        .map(|j| format!("{}={}", NODES[j], node_addr(j)))
        .collect::<Vec<_>>()
        .join(",");
    let ip_address = format!("{SUBNET}.{}", 11 + i);
    let (cert, key) = pki.node_ca.issue_for(name, &[&ip_address]);
    let env: BTreeMap<&str, String> = [
        ("HYPERION_NODE_ID", name.to_string()),
        ("HYPERION_LISTEN_ADDR", node_addr(i)),
        ("HYPERION_CLUSTER_NODES", members),
        (
            "HYPERION_DATA_DIR",
            topology.dir.join(name).display().to_string(),
        ),
        ("HYPERION_DEV_MODE", "false".to_string()),
        (
            "HYPERION_HMAC_KEY_FILE",
            pki.hmac_key_file.display().to_string(),
        ),
        (
            "HYPERION_TLS_CERT_FILE",
            pki.write(&format!("{name}.pem"), &cert)
                .display()
                .to_string(),
        ),
        (
            "HYPERION_TLS_KEY_FILE",
            pki.write(&format!("{name}.key"), &key)
                .display()
                .to_string(),
        ),
        (
            "HYPERION_TLS_CLIENT_CA_FILE",
            pki.client_ca_file.display().to_string(),
        ),
        (
            "HYPERION_TLS_PEER_CA_FILE",
            pki.node_ca_file.display().to_string(),
        ),
        // Faster elections than production (1.5 s) keep the test short.
        ("HYPERION_RAFT_HEARTBEAT_MS", "50".to_string()),
        ("LOG_LEVEL", "warn".to_string()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ]
    .into_iter()
    .collect();
    Command::new("ip")
        .args(["netns", "exec", &topology.namespace(name)])
        .arg(env!("CARGO_BIN_EXE_hyperion"))
        .arg("serve")
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("hyperion starts")
}

fn one_attempt(client: Client, deadline: Duration) -> Client {
    client
        .with_retry(RetryPolicy {
            max_attempts: 1,
            ..hyperion::client::default_retry_policy()
        })
        .with_breaker(None)
        .with_deadline(deadline)
}

/// The node every live node names as leader, if they agree and it says so itself; with
/// `quorum_only`, a majority's agreement suffices (a node cut off may still believe in an old
/// leader).
async fn agreed_leader(admin: &Client, live: &[bool], quorum_only: bool) -> Option<usize> {
    let mut votes = BTreeMap::<u64, usize>::new();
    let mut claims = BTreeMap::<u64, u64>::new();
    let mut answered = 0;
    for (i, (_, status)) in admin.statuses().await.into_iter().enumerate() {
        if !live.get(i).copied().unwrap_or(false) {
            continue;
        }
        let Ok(status) = status else {
            continue;
        };
        answered += 1;
        if status.leader_id != 0 {
            *votes.entry(status.leader_id).or_default() += 1;
        }
        if status.role == "leader" {
            claims.insert(status.node_id, status.term);
        }
    }
    let needed = if quorum_only {
        NODES.len() / 2 + 1
    } else {
        live.iter().filter(|&&up| up).count()
    };
    let (&leader, &count) = votes.iter().max_by_key(|(_, &count)| count)?;
    if count < needed || answered < needed || !claims.contains_key(&leader) {
        return None;
    }
    // Raft ids are positions in HYPERION_CLUSTER_NODES, from 1.
    Some(usize::try_from(leader).ok()? - 1)
}

async fn wait_for_leader(admin: &Client, live: &[bool], quorum_only: bool) -> usize {
    let started = hyperion::runtime::now();
    while started.elapsed() < LEADER_WAIT_MAX {
        if let Some(leader) = agreed_leader(admin, live, quorum_only).await {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no agreed leader within {LEADER_WAIT_MAX:?} (live: {live:?})");
}

/// The client history, timed from the start of the test in milliseconds (invocations rounded
/// down, returns up: the checker then never sees an order that did not happen).
struct Recorder {
    history: Mutex<HistoryRecorder>,
    started: hyperion::runtime::Instant,
}

impl Recorder {
    fn invoke(&self, client: u64, op: Op) -> OpId {
        let at = self.started.elapsed().as_millis() as u64;
        self.history
            .lock()
            .unwrap()
            .invoke(ClientId(client), op, at)
            .expect("the history has room")
    }

    fn complete(&self, id: OpId, outcome: Outcome) {
        let at = self.started.elapsed().as_millis() as u64 + 1;
        self.history
            .lock()
            .unwrap()
            .complete(id, outcome, at)
            .unwrap();
    }
}

/// How a failed call is recorded: `Fail` only if it certainly did not apply.
fn failure(status: &tonic::Status) -> Outcome {
    match status.code() {
        Code::InvalidArgument | Code::ResourceExhausted => Outcome::Fail,
        Code::Unavailable if certainly_not_applied(status) => Outcome::Fail,
        _ => Outcome::Unknown,
    }
}

async fn get_recorded(client: &Client, recorder: &Recorder, who: u64, key: &[u8]) -> Outcome {
    let id = recorder.invoke(
        who,
        Op::Get {
            key: key.to_vec(),
            allow_stale: false,
        },
    );
    let outcome = match client.get(key, false).await {
        Ok(read) if read.status == CacheStatus::Hit as i32 => Outcome::Ok(OpResult::Hit {
            value: read.value,
            version: read.version,
            is_stale: read.is_stale,
            ttl_remaining_ms: None,
        }),
        Ok(read) if read.status == CacheStatus::Miss as i32 => Outcome::Ok(OpResult::Miss),
        Ok(_) => Outcome::Fail,
        Err(status) => failure(&status),
    };
    recorder.complete(id, outcome.clone());
    outcome
}

fn keys() -> Vec<Vec<u8>> {
    (0..6).map(|k| format!("key-{k}").into_bytes()).collect()
}

/// A writer: overwrites its two keys with fresh values, one attempt per operation.
async fn writer(client: Client, recorder: Arc<Recorder>, w: u64, stop: Arc<AtomicBool>) -> usize {
    let keys = keys();
    let started = hyperion::runtime::now();
    let mut acknowledged = 0;
    for i in 0..OPS_PER_TASK_MAX {
        if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_TIME_MAX {
            break;
        }
        let key = keys[(w as usize * 2 + i as usize % 2) % keys.len()].clone();
        let value = format!("w{w}-{i}").into_bytes();
        let id = recorder.invoke(
            w,
            Op::Set {
                key: key.clone(),
                value: value.clone(),
                ttl_ms: 0,
                expected_version: 0,
            },
        );
        let outcome = match client.set(&key, &value, 0, 0).await {
            Ok(written) => {
                acknowledged += 1;
                Outcome::Ok(OpResult::Written {
                    version: written.version,
                    ttl_ms: written.ttl_ms,
                })
            }
            Err(status) => failure(&status),
        };
        recorder.complete(id, outcome);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    acknowledged
}

/// A reader: linearizable reads of every key in turn.
async fn reader(client: Client, recorder: Arc<Recorder>, r: u64, stop: Arc<AtomicBool>) -> usize {
    let keys = keys();
    let started = hyperion::runtime::now();
    let mut hits = 0;
    for i in 0..OPS_PER_TASK_MAX {
        if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_TIME_MAX {
            break;
        }
        let key = &keys[(i as usize + r as usize) % keys.len()];
        if let Outcome::Ok(OpResult::Hit { .. }) = get_recorded(&client, &recorder, r, key).await {
            hits += 1;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    hits
}

#[test]
fn three_hosts_with_mtls_survive_attackers_a_cut_link_and_kill_9() {
    let prefix = format!("hyperion-{}", std::process::id());
    let mut topology = match lan(&prefix) {
        Ok(topology) => topology,
        Err(why) if std::env::var("HYPERION_REQUIRE_NETNS").as_deref() != Ok("1") => {
            eprintln!("skipped: network namespaces are not available here ({why}); set HYPERION_REQUIRE_NETNS=1 to make this a failure");
            return;
        }
        Err(why) => {
            panic!("HYPERION_REQUIRE_NETNS=1 but network namespaces are not available: {why}")
        }
    };
    for (i, name) in NODES.iter().enumerate() {
        topology.attach(name, &format!("{SUBNET}.{}", 11 + i));
    }
    topology.attach("client", &format!("{SUBNET}.100"));
    let _ = std::fs::remove_dir_all(&topology.dir);
    std::fs::create_dir_all(&topology.dir).unwrap();
    let pki = Pki::new(&topology.dir);
    for i in 0..NODES.len() {
        let child = start_node(&mut topology, &pki, i);
        topology.nodes.push(Some(child));
    }
    // From here on this thread, and the runtime's threads it starts, live in the client
    // namespace: every connection the test makes leaves from 10.77.0.100.
    enter(&topology.namespace("client"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(scenario(&mut topology, &pki));
}

async fn scenario(topology: &mut Topology, pki: &Pki) {
    let addrs: Vec<String> = (0..NODES.len()).map(node_addr).collect();
    let alice = pki.security("alice", Some(pki.client_ca.issue_for("alice", &[])));
    let admin = one_attempt(
        Client::cluster_secured(&addrs, alice.clone()).unwrap(),
        Duration::from_millis(500),
    )
    .pinned();
    let mut live = vec![true; NODES.len()];
    let first = wait_for_leader(&admin, &live, false).await;
    eprintln!("leader: {}", NODES[first]);

    // Writes and linearizable reads, over mTLS between three addresses of the subnet.
    let client = Client::cluster_secured(&addrs, alice.clone()).unwrap();
    let written = client.set(b"greeting", b"hello", 0, 0).await.unwrap();
    let read = client.get(b"greeting", false).await.unwrap();
    assert_eq!(
        (read.status, read.value.as_slice(), read.version),
        (CacheStatus::Hit as i32, &b"hello"[..], written.version)
    );

    attackers(pki, &addrs, first).await;
    // The forged Append changed nothing: the same leader, and writes go on.
    assert_eq!(wait_for_leader(&admin, &live, false).await, first);
    client.set(b"greeting", b"still here", 0, 0).await.unwrap();

    // Load, recorded: three writers, two readers.
    let recorder = Arc::new(Recorder {
        history: Mutex::new(HistoryRecorder::new()),
        started: hyperion::runtime::now(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let worker = one_attempt(
        Client::cluster_secured(&addrs, alice.clone()).unwrap(),
        Duration::from_secs(1),
    );
    let writers: Vec<_> = (0..3)
        .map(|w| {
            hyperion::runtime::spawn(writer(
                worker.clone(),
                Arc::clone(&recorder),
                w,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let readers: Vec<_> = (10..12)
        .map(|r| {
            hyperion::runtime::spawn(reader(
                worker.clone(),
                Arc::clone(&recorder),
                r,
                Arc::clone(&stop),
            ))
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(800)).await;
    let follower = (first + 1) % NODES.len();
    let degraded = topology.degrade(NODES[follower]);
    eprintln!("link towards {} degraded: {degraded}", NODES[follower]);
    tokio::time::sleep(Duration::from_millis(700)).await;

    topology.link(NODES[first], false);
    eprintln!("link of {} (the leader) cut", NODES[first]);
    let mut others = live.clone();
    others[first] = false;
    let second = wait_for_leader(&admin, &others, true).await;
    assert_ne!(second, first);
    eprintln!("new leader while cut: {}", NODES[second]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    topology.link(NODES[first], true);
    topology.restore(NODES[follower]);
    let healed = wait_for_leader(&admin, &live, false).await;
    eprintln!("healed; leader {}", NODES[healed]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut victim = topology.nodes[healed].take().expect("the leader's process");
    victim.kill().expect("kill -9 of the leader");
    victim.wait().expect("reaped");
    live[healed] = false;
    let last = wait_for_leader(&admin, &live, true).await;
    assert_ne!(last, healed);
    eprintln!(
        "{} killed with SIGKILL; leader {}",
        NODES[healed], NODES[last]
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = 0;
    for writer in writers {
        acknowledged += writer.await.expect("writer finished");
    }
    let mut hits = 0;
    for reader in readers {
        hits += reader.await.expect("reader finished");
    }

    // Final reads of every key, recorded too: each must see its last acknowledged write.
    for key in keys() {
        let mut outcome = Outcome::Unknown;
        for _ in 0..20 {
            outcome = get_recorded(&client, &recorder, 99, &key).await;
            if matches!(outcome, Outcome::Ok(_)) {
                break;
            }
        }
        assert!(matches!(outcome, Outcome::Ok(_)), "final read of {key:?}");
    }
    let history = recorder.history.lock().unwrap().history().clone();
    let mut newest_acknowledged = BTreeMap::<Vec<u8>, u64>::new();
    let mut final_read = BTreeMap::<Vec<u8>, u64>::new();
    for operation in history.ops() {
        match (&operation.op, operation.effective_outcome()) {
            (Op::Set { key, .. }, Outcome::Ok(OpResult::Written { version, .. })) => {
                let newest = newest_acknowledged.entry(key.clone()).or_default();
                *newest = (*newest).max(*version);
            }
            (Op::Get { key, .. }, Outcome::Ok(OpResult::Hit { version, .. }))
                if operation.client == ClientId(99) =>
            {
                final_read.insert(key.clone(), *version);
            }
            _ => {}
        }
    }
    let lost: Vec<_> = newest_acknowledged
        .iter()
        .filter(|(key, version)| final_read.get(*key).is_none_or(|read| read < version))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let report = check(
        &history,
        &CheckerConfig {
            allow_eviction: false,
            ..CheckerConfig::default()
        },
    );
    eprintln!(
        "{acknowledged} writes acknowledged, {hits} read hits, {} operations: {report}",
        history.ops().len()
    );
    assert!(
        matches!(report.verdict, Verdict::Ok),
        "the history is not shown linearizable: {report}"
    );
    assert!(acknowledged >= 200, "the cluster kept taking writes");
    assert!(hits >= 100, "the cluster kept serving reads");
}

/// Every attacker of the threat model, from the client namespace; each status is printed.
async fn attackers(pki: &Pki, addrs: &[String], leader: usize) {
    let target = addrs[(leader + 1) % addrs.len()].clone();
    let single = |security: ClientSecurity| {
        one_attempt(
            Client::secured(&target, security).unwrap(),
            Duration::from_secs(2),
        )
        .pinned()
    };
    let plaintext = single(ClientSecurity::default())
        .get(b"greeting", true)
        .await
        .unwrap_err();
    assert!(
        std::error::Error::source(&plaintext).is_some()
            && matches!(
                plaintext.code(),
                Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
            ),
        "a plaintext client gets a transport error, no answer: {plaintext:?}"
    );
    eprintln!(
        "plaintext client: {:?} {}",
        plaintext.code(),
        plaintext.message()
    );

    let anonymous = single(pki.security("anonymous", None))
        .get(b"greeting", true)
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    eprintln!(
        "no client certificate: {:?} {}",
        anonymous.code(),
        anonymous.message()
    );

    let other_ca = Ca::new("Another CA");
    let stranger = single(pki.security("stranger", Some(other_ca.issue_for("alice", &[]))))
        .get(b"greeting", true)
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::PermissionDenied, "{stranger:?}");
    eprintln!(
        "certificate from another CA: {:?} {}",
        stranger.code(),
        stranger.message()
    );

    // A forged Append: term far ahead, claiming to come from the leader, with an undecodable
    // command. Sent with a client certificate, and with a node-CA certificate naming no member.
    let forged = MessageBatch {
        cluster: String::new(),
        messages: vec![Message {
            from: leader as u64 + 1,
            to: ((leader + 1) % addrs.len()) as u64 + 1,
            term: 1_000,
            body: Some(message::Body::Append(Append {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![Entry {
                    term: 1_000,
                    index: 1,
                    command: Some(vec![0xff; 64].into()),
                }],
                leader_commit: 1,
                round: u64::MAX,
            })),
        }],
    };
    for (who, identity) in [
        ("client certificate", pki.client_ca.issue_for("alice", &[])),
        (
            "non-member node-CA certificate",
            pki.node_ca.issue_for("intruder", &[]),
        ),
    ] {
        let status = raft_client(pki, &target, &identity)
            .send(forged.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{who}: {status:?}");
        eprintln!(
            "forged Append on RaftService, {who}: {:?} {}",
            status.code(),
            status.message()
        );
    }
}

fn raft_client(
    pki: &Pki,
    target: &str,
    (cert, key): &(String, String),
) -> RaftServiceClient<tonic::transport::Channel> {
    let tls = hyperion::tls::client_config(
        pki.node_ca.pem().as_bytes(),
        Some((
            &Secret::new(cert.clone().into_bytes()),
            &Secret::new(key.clone().into_bytes()),
        )),
    )
    .unwrap();
    let host = target.rsplit_once(':').unwrap().0.to_string();
    RaftServiceClient::new(hyperion::runtime::channel(
        tonic::transport::Endpoint::from_shared(format!("http://{target}")).unwrap(),
        Some(ChannelSecurity {
            tls,
            server_name: host.try_into().unwrap(),
        }),
        Duration::from_secs(2),
    ))
}
