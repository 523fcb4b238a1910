//! Data-driven transcript tests: every `testdata/*.txt` file is a script of commands (lines
//! starting with `> `) each followed by its expected output (lines indented by two spaces).
//! Comment (`#`) and blank lines are kept verbatim. The runner replays the commands on the
//! deterministic harness of `common/mod.rs` (all safety checkers active) and compares the whole
//! file; on a mismatch it fails with a line diff. `REWRITE=1 cargo test --test transcript`
//! regenerates the expected output (review the diff before committing!).
//!
//! Commands:
//! - `cluster n=3 seed=1 [auto=on|off] [latency=MS] [heartbeat=MS] [election=MS] [lease=MS]
//!   [tick=MS] [ratio=F] [rates=R1,R2,..] [compaction=N] [bytes=N] [inflight=N]
//!   [policy=always|everysec]` — a fresh cluster (`auto=on`: messages are delivered after
//!   `latency` ms; `auto=off`: they queue until `deliver`/`stabilize`).
//! - `advance MS` — move real time, ticking every node every `tick` ms.
//! - `skew ID MS` — jump node ID's clock forward (used to pick who times out first).
//! - `deliver [from=ID] [to=ID] [kind=NAME]`, `stabilize`, `drop [from=ID] [to=ID]`, `queue`.
//! - `partition 1 | 2 3`, `isolate ID`, `cut A B`, `heal`.
//! - `propose ID DATA...`, `read ID REQUEST_ID...` (one batch), `transfer ID TO`, `step-down ID`.
//! - `crash ID`, `power-loss ID`, `restart ID`.
//! - `status`, `log`.
//!
//! Every command prints the events it caused (role/term/commit/lease changes, delivered and
//! dropped messages, released and failed reads) and any safety violation.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Cluster, Opts};
use hyperion_raft::storage::SyncPolicy;
use hyperion_raft::{Config, NodeId};

struct Runner {
    cluster: Option<Cluster>,
    violations_seen: usize,
}

fn kv(args: &[&str]) -> BTreeMap<String, String> {
    args.iter()
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(s: &str) -> u64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

impl Runner {
    fn c(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("`cluster` must come first")
    }

    fn run(&mut self, line: &str) -> Vec<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (cmd, args) = (words[0], &words[1..]);
        let mut out = Vec::new();
        match cmd {
            "cluster" => {
                let kv = kv(args);
                let get = |k: &str, d: u64| kv.get(k).map_or(d, |v| num(v));
                let n = get("n", 3) as usize;
                let mut o = Opts::new(n, get("seed", 1));
                let tick = get("tick", 10);
                o.config = Config {
                    tick_interval_ms: tick,
                    heartbeat_ms: get("heartbeat", 150),
                    election_timeout_ms: get("election", 1500),
                    lease_duration_ms: get("lease", 1000),
                    compaction_threshold_entries: get("compaction", 10_000),
                    append_bytes_max: get("bytes", 1 << 20) as usize,
                    inflight_appends_max: get("inflight", 32) as usize,
                    max_clock_rate_ratio: kv
                        .get("ratio")
                        .map_or(1.05, |r| r.parse().expect("ratio")),
                    ..Config::default()
                };
                if let Err(e) = o.config.validate() {
                    out.push(format!("config rejected: {e}"));
                    return out;
                }
                o.tick_ms = tick;
                o.auto_deliver = kv.get("auto").is_none_or(|v| v == "on");
                let lat = get("latency", 5);
                o.latency_ms = (lat, lat);
                if let Some(rates) = kv.get("rates") {
                    o.rates_ppm = rates
                        .split(',')
                        .map(|r| (r.parse::<f64>().expect("rate") * 1e6) as u64)
                        .collect();
                }
                o.policy = match kv.get("policy").map(String::as_str) {
                    Some("everysec") => SyncPolicy::EverySec,
                    _ => SyncPolicy::Always,
                };
                o.record_events = true;
                // Readable clocks: every node starts at 0.
                o.random_offsets = false;
                self.cluster = Some(Cluster::new(o));
                self.violations_seen = 0;
            }
            "advance" => self.c().advance(num(args[0])),
            "skew" => {
                let c = self.c();
                c.nodes[(num(args[0]) - 1) as usize].offset_ms += num(args[1]);
            }
            "deliver" | "drop" => {
                let kv = kv(args);
                let c = self.c();
                let matches = |m: &hyperion_raft::Message| {
                    kv.get("from").is_none_or(|f| num(f) == m.from)
                        && kv.get("to").is_none_or(|t| num(t) == m.to)
                        && kv.get("kind").is_none_or(|k| k == m.body.name())
                };
                let all = std::mem::take(&mut c.net);
                let (picked, rest): (Vec<_>, Vec<_>) =
                    all.into_iter().partition(|m| matches(&m.msg));
                c.net = rest;
                for m in picked {
                    if cmd == "deliver" {
                        c.deliver(m.msg);
                    } else {
                        c.events.push(format!("dropped {}", m.msg));
                    }
                }
            }
            "stabilize" => {
                let c = self.c();
                for _ in 0..100 {
                    if c.net.is_empty() {
                        break;
                    }
                    for m in std::mem::take(&mut c.net) {
                        c.deliver(m.msg);
                    }
                }
            }
            "queue" => {
                for m in &self.c().net {
                    out.push(format!("queued {}", m.msg));
                }
            }
            "partition" => {
                let side: Vec<NodeId> = args
                    .iter()
                    .take_while(|a| **a != "|")
                    .map(|a| num(a))
                    .collect();
                self.c().partition(&side);
            }
            "isolate" => self.c().partition(&[num(args[0])]),
            "cut" => {
                let (a, b) = (num(args[0]), num(args[1]));
                self.c().blocked.insert((a, b));
                self.c().blocked.insert((b, a));
            }
            "heal" => self.c().heal(),
            "propose" => {
                let id = num(args[0]);
                for data in &args[1..] {
                    match self.c().propose(id, data.as_bytes()) {
                        Ok(r) => out.push(format!("n{id} proposed {data} at index {}", r.start)),
                        Err(e) => out.push(format!("n{id} rejected {data}: {e}")),
                    }
                }
            }
            "read" => {
                let id = num(args[0]);
                let rids: Vec<u64> = args[1..].iter().map(|a| num(a)).collect();
                for (rid, r) in rids.iter().zip(self.c().read_batch(id, &rids)) {
                    if let Err(e) = r {
                        out.push(format!("n{id} read {rid} rejected: {e}"));
                    }
                }
            }
            "transfer" => {
                let (id, to) = (num(args[0]), num(args[1]));
                if let Err(e) = self.c().transfer(id, to) {
                    out.push(format!("n{id} transfer rejected: {e}"));
                }
            }
            "step-down" => {
                let id = num(args[0]);
                if let Err(e) = self.c().step_down(id) {
                    out.push(format!("n{id} step-down rejected: {e}"));
                }
            }
            "crash" => self.c().crash(num(args[0])),
            "power-loss" => self.c().power_loss(num(args[0])),
            "restart" => self.c().restart(num(args[0])),
            "status" => {
                let c = self.c();
                for i in 0..c.nodes.len() {
                    let clock = c.clock_ms(i);
                    let id = i as NodeId + 1;
                    match c.nodes[i].node.as_ref() {
                        None => out.push(format!("n{id} down")),
                        Some(n) => {
                            let lease = match n.lease_valid_until() {
                                Some(u) if u > clock => format!("{}ms left", u - clock),
                                Some(_) => "expired".to_string(),
                                None => "none".to_string(),
                            };
                            out.push(format!(
                                "n{id} {:?} term={} leader={:?} commit={} applied={} last={} snapshot={} lease={lease}",
                                n.role(),
                                n.term(),
                                n.leader_id(),
                                n.commit_index(),
                                n.applied_index(),
                                n.last_index(),
                                n.snapshot_index(),
                            ));
                        }
                    }
                }
            }
            "log" => {
                let c = self.c();
                for i in 0..c.nodes.len() {
                    let id = i as NodeId + 1;
                    match c.nodes[i].node.as_ref() {
                        None => out.push(format!("n{id} down")),
                        Some(n) => {
                            let terms: Vec<String> = (n.snapshot_index() + 1..=n.last_index())
                                .map(|idx| format!("{idx}/{}", n.term_at(idx).unwrap_or(0)))
                                .collect();
                            out.push(format!(
                                "n{id} snapshot={}/{} [{}]",
                                n.snapshot_index(),
                                n.term_at(n.snapshot_index()).unwrap_or(0),
                                terms.join(" ")
                            ));
                        }
                    }
                }
            }
            other => panic!("unknown command `{other}`"),
        }
        let seen = self.violations_seen;
        let c = self.c();
        let mut events = std::mem::take(&mut c.events);
        events.append(&mut out);
        let violations = &c.checker.violations;
        for v in &violations[seen..] {
            events.push(format!("VIOLATION {v}"));
        }
        let total = violations.len();
        self.violations_seen = total;
        events
    }
}

fn run_file(path: &Path) -> (String, String, usize) {
    let expected = std::fs::read_to_string(path).expect("read transcript");
    let mut actual = String::new();
    let mut runner = Runner {
        cluster: None,
        violations_seen: 0,
    };
    for line in expected.lines() {
        if let Some(cmd) = line.strip_prefix("> ") {
            actual.push_str(line);
            actual.push('\n');
            for out in runner.run(cmd) {
                actual.push_str("  ");
                actual.push_str(&out);
                actual.push('\n');
            }
        } else if line.starts_with("  ") {
            // Expected output of the previous command: regenerated above.
        } else {
            actual.push_str(line);
            actual.push('\n');
        }
    }
    let violations = runner
        .cluster
        .as_ref()
        .map_or(0, |c| c.checker.violations.len());
    (expected, actual, violations)
}

fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let first = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let mut out = format!("first difference at line {}:\n", first + 1);
    let from = first.saturating_sub(3);
    for i in from..(first + 8).min(e.len().max(a.len())) {
        let (x, y) = (e.get(i).copied(), a.get(i).copied());
        if x == y {
            out.push_str(&format!("   {}\n", x.unwrap_or("")));
        } else {
            if let Some(x) = x {
                out.push_str(&format!(" - {x}\n"));
            }
            if let Some(y) = y {
                out.push_str(&format!(" + {y}\n"));
            }
        }
    }
    out
}

#[test]
fn transcripts() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no transcripts found");
    let rewrite = std::env::var("REWRITE").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for f in &files {
        let (expected, actual, violations) = run_file(f);
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if violations > 0 {
            failures.push(format!(
                "{name}: {violations} safety violation(s), see VIOLATION lines"
            ));
        }
        if expected != actual {
            if rewrite {
                std::fs::write(f, &actual).expect("rewrite transcript");
            } else {
                failures.push(format!(
                    "{name}: output differs (REWRITE=1 to regenerate)\n{}",
                    diff(&expected, &actual)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
