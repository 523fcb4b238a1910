//! `hyperion-cli`: call a Hyperion node from the shell — the cache over gRPC, the operator's
//! verbs over the admin HTTP port.
//!
//! Exit codes (README "CLI"): 0 success, 1 a miss (`get` MISS, `delete` of an absent key, a
//! `batch-get` with any miss), 2 a usage error (bad flags, unreadable input files), 3 the cluster
//! or node is unavailable (unreachable, no leader within the deadline, 502–504), 4 a refusal (the
//! node answered no: invalid argument, compare-and-set mismatch, auth, rate limit, 4xx), 5 any
//! other failure.

mod admin_http;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use hyperion::client::{Client, ClientSecurity};
use hyperion::proto::{CacheStatus, GetResponse};
use serde_json::json;

use admin_http::AdminTarget;
use hyperion::replica::EVICT_COUNT_MAX;

/// Talk to a Hyperion node.
#[derive(Parser)]
#[command(name = "hyperion-cli", version)]
struct Cli {
    /// The nodes' gRPC addresses, comma-separated (the client finds the leader).
    #[arg(long, env = "HYPERION_ADDR", default_value = "127.0.0.1:7000")]
    addr: String,
    /// One node's admin HTTP port, for step-down, evict, metrics, health and flags.
    #[arg(long, env = "HYPERION_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    admin_addr: String,
    /// A file holding an admin API key (the KEY of a `NAME:KEY` line), for `/admin/*` verbs.
    #[arg(long, env = "HYPERION_ADMIN_API_KEY_FILE")]
    admin_api_key_file: Option<PathBuf>,
    /// `text` for people, `json` (one JSON document on stdout) for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    /// Deadline of each command in milliseconds, retries through elections and redirects
    /// included (the default outlasts a leader crash's election).
    #[arg(long, default_value_t = hyperion::client::DEFAULT_DEADLINE.as_millis() as u64)]
    deadline_ms: u64,
    /// PEM CA certificates the nodes' certificates must chain to; turns TLS on for gRPC and
    /// the admin port (https:// addresses need it too).
    #[arg(long = "ca", env = "HYPERION_TLS_CA_FILE")]
    ca: Option<PathBuf>,
    /// PEM client certificate (mTLS), with --key.
    #[arg(long = "cert", env = "HYPERION_TLS_CLIENT_CERT_FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long = "key", env = "HYPERION_TLS_CLIENT_KEY_FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// The name the nodes' certificates must carry (default: each address's host).
    #[arg(long, env = "HYPERION_TLS_SERVER_NAME")]
    server_name: Option<String>,
    /// A file holding a bearer token (JWT) from the Auth Service.
    #[arg(long, env = "HYPERION_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// A file holding an admin API key (for `status`, over gRPC).
    #[arg(long, env = "HYPERION_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Read a key.
    Get {
        key: String,
        /// Return an expired entry (marked stale) rather than MISS.
        #[arg(long)]
        allow_stale: bool,
    },
    /// Write a key.
    Set {
        key: String,
        /// The value; `-` reads it from stdin (or use --value-file).
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        value_file: Option<PathBuf>,
        /// Time to live in milliseconds (0 = never expires).
        #[arg(long, default_value_t = 0)]
        ttl_ms: u64,
        /// Compare-and-set: write only if the current version is this (0 = unconditional).
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Delete a key.
    Delete {
        key: String,
        /// Compare-and-set: delete only if the current version is this (0 = unconditional).
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Each node's role, term, log position, cache size and system-of-record health.
    Status,
    /// Read many keys (split into calls of 100 keys).
    BatchGet {
        #[arg(required_unless_present = "keys_file")]
        keys: Vec<String>,
        /// Read the keys from this file, one per line (a progress bar shows on a terminal when
        /// there are many).
        #[arg(long, conflicts_with = "keys")]
        keys_file: Option<PathBuf>,
        #[arg(long)]
        allow_stale: bool,
    },
    /// Admin port: hand leadership to the most caught-up follower (on a follower: show the
    /// leader).
    StepDown,
    /// Admin port: evict COUNT entries through the log (send it to the leader's admin port).
    Evict {
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=EVICT_COUNT_MAX))]
        count: u64,
    },
    /// Admin port: the node's Prometheus metrics.
    Metrics,
    /// Admin port: liveness and readiness (exit 3 when not ready).
    Health,
    /// Admin port: feature flags.
    Flags {
        #[command(subcommand)]
        action: FlagsAction,
    },
}

#[derive(Subcommand)]
enum FlagsAction {
    /// Re-read the feature-flag file (HYPERION_FEATURE_FLAGS) on the node.
    Reload,
}

/// Most keys a `--keys-file` may hold (each is a request's worth of memory).
const KEYS_FILE_KEYS_MAX: usize = 1_000_000;
/// From this many keys on, `batch-get` shows a progress bar (on a terminal).
const PROGRESS_BAR_KEYS_MIN: usize = 1_000;
/// Largest value read from stdin or `--value-file` (the node's own limit is lower; this only
/// keeps the CLI's memory bounded).
const VALUE_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Miss = 1,
    Usage = 2,
    Unavailable = 3,
    Refused = 4,
    Failed = 5,
}

/// A command that did not succeed: its exit code and what to tell the operator.
#[derive(Debug)]
pub struct Failure {
    exit: Exit,
    message: String,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            message: message.into(),
        }
    }

    fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Usage, message)
    }
}

/// The exit code a failed RPC means.
fn rpc_failure(status: tonic::Status) -> Failure {
    use tonic::Code;
    let exit = match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
            Exit::Unavailable
        }
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::OutOfRange
        | Code::AlreadyExists
        | Code::NotFound => Exit::Refused,
        _ => Exit::Failed,
    };
    Failure::new(exit, format!("{:?}: {}", status.code(), status.message()))
}

fn render_value(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => format!("{text:?}"),
        Err(_) => format!(
            "0x{}",
            value.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

fn render(response: &GetResponse) -> String {
    let key = render_value(&response.key);
    match CacheStatus::try_from(response.status) {
        Ok(CacheStatus::Hit) => format!(
            "{key} HIT version={}{} ttl_remaining_ms={} value={}",
            response.version,
            if response.is_stale { " stale" } else { "" },
            response.ttl_remaining_ms,
            render_value(&response.value)
        ),
        Ok(CacheStatus::Miss) => format!("{key} MISS"),
        Ok(CacheStatus::Error) => format!("{key} ERROR {}", response.error_message),
        _ => format!("{key} unknown status {}", response.status),
    }
}

/// One node's status line (`NodeAdmin.Status`).
fn status_line(status: &hyperion::raft_proto::StatusResponse) -> String {
    let mut line = format!(
        "node={} role={} term={} leader={} commit={} applied={} entries={} used_bytes={}/{} \
         invalid_peer_messages={}",
        status.node_id,
        status.role,
        status.term,
        status.leader_id,
        status.commit_index,
        status.applied_index,
        status.entries,
        status.used_bytes,
        status.capacity_bytes,
        status.invalid_peer_messages
    );
    if let Some(db) = &status.database {
        line.push_str(&format!(
            " database: breaker={} (opened {} times) pending={} ({} bytes) loads={} rows_written={} failed_attempts={}",
            db.breaker,
            db.breaker_opened,
            db.pending_mutations,
            db.pending_bytes,
            db.loads,
            db.rows_written,
            db.failed_attempts
        ));
    }
    if let Some(watch) = &status.watch {
        line.push_str(&format!(
            " watch: streams={} tracked_keys={} resyncs={} too_slow={}",
            watch.streams, watch.tracked_keys, watch.resyncs, watch.too_slow
        ));
    }
    if let Some(shadow) = &status.shadow {
        line.push_str(&format!(
            " shadow: percent={} mirrored={} dropped={} errors={} compared={} mismatches={}",
            shadow.percent,
            shadow.mirrored,
            shadow.dropped,
            shadow.errors,
            shadow.compared,
            shadow.mismatches
        ));
    }
    line
}

/// A response as JSON: the value as text when it is UTF-8, else as hex (`value_hex`).
fn response_json(response: &GetResponse) -> serde_json::Value {
    let status = match CacheStatus::try_from(response.status) {
        Ok(CacheStatus::Hit) => "HIT",
        Ok(CacheStatus::Miss) => "MISS",
        Ok(CacheStatus::Error) => "ERROR",
        _ => "UNKNOWN",
    };
    let mut out = json!({ "key": String::from_utf8_lossy(&response.key), "status": status });
    if status == "HIT" {
        out["version"] = json!(response.version);
        out["stale"] = json!(response.is_stale);
        out["ttl_remaining_ms"] = json!(response.ttl_remaining_ms);
        match std::str::from_utf8(&response.value) {
            Ok(text) => out["value"] = json!(text),
            Err(_) => {
                let hex: String = response.value.iter().map(|b| format!("{b:02x}")).collect();
                out["value_hex"] = json!(hex);
            }
        }
    }
    if !response.error_message.is_empty() {
        out["error"] = json!(response.error_message);
    }
    out
}

fn is_miss(response: &GetResponse) -> bool {
    CacheStatus::try_from(response.status) == Ok(CacheStatus::Miss)
}

fn read_secret(path: &Path, flag: &str) -> Result<hyperion::secret::Secret, Failure> {
    let key = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("{flag} {}: {e}", path.display())))?;
    Ok(hyperion::secret::Secret::new(
        key.trim().as_bytes().to_vec(),
    ))
}

fn security(cli: &Cli) -> Result<ClientSecurity, Failure> {
    let mut security = ClientSecurity::from_files(
        cli.ca.as_deref(),
        cli.cert.as_deref(),
        cli.key.as_deref(),
        cli.token_file.as_deref(),
    )
    .map_err(|e| Failure::usage(e.to_string()))?;
    security.server_name = cli.server_name.clone();
    if let Some(path) = &cli.api_key_file {
        security.api_key = Some(read_secret(path, "--api-key-file")?);
    }
    Ok(security)
}

/// Reads a whole input (a file, or stdin for `-`), at most [`VALUE_BYTES_MAX`] bytes.
fn read_input(path: Option<&Path>, what: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    let read = match path {
        Some(path) => std::fs::File::open(path)
            .and_then(|file| file.take(VALUE_BYTES_MAX + 1).read_to_end(&mut bytes)),
        None => std::io::stdin()
            .lock()
            .take(VALUE_BYTES_MAX + 1)
            .read_to_end(&mut bytes),
    };
    read.map_err(|e| Failure::usage(format!("{what}: {e}")))?;
    if bytes.len() as u64 > VALUE_BYTES_MAX {
        return Err(Failure::usage(format!(
            "{what}: longer than {VALUE_BYTES_MAX} bytes"
        )));
    }
    Ok(bytes)
}

/// The keys of a `--keys-file`: one per line, empty lines skipped.
fn read_keys(path: &Path) -> Result<Vec<Vec<u8>>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("--keys-file {}: {e}", path.display())))?;
    let keys: Vec<Vec<u8>> = text
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| line.as_bytes().to_vec())
        .collect();
    if keys.is_empty() || keys.len() > KEYS_FILE_KEYS_MAX {
        return Err(Failure::usage(format!(
            "--keys-file {}: expected 1 to {KEYS_FILE_KEYS_MAX} keys, one per line, got {}",
            path.display(),
            keys.len()
        )));
    }
    Ok(keys)
}

/// Prints `value` as JSON or `text` as text, by `--output`.
fn emit(output: Output, value: serde_json::Value, text: impl FnOnce() -> String) {
    match output {
        Output::Json => println!("{value}"),
        Output::Text => println!("{}", text()),
    }
}

fn admin_target(cli: &Cli, security: &ClientSecurity, admin: bool) -> Result<AdminTarget, Failure> {
    let api_key = match (&cli.admin_api_key_file, admin) {
        (Some(path), true) => Some(read_secret(path, "--admin-api-key-file")?),
        (None, true) => {
            return Err(Failure::usage(
                "--admin-api-key-file (HYPERION_ADMIN_API_KEY_FILE): required for this verb",
            ))
        }
        (_, false) => None,
    };
    Ok(AdminTarget {
        addr: cli.admin_addr.clone(),
        tls: security.tls.clone(),
        server_name: cli.server_name.clone(),
        api_key,
        deadline: Duration::from_millis(cli.deadline_ms),
    })
}

/// A one-line summary of a step-down answer.
fn step_down_text(answer: &serde_json::Value) -> String {
    let leader = match (answer["leader_id"].as_u64(), answer["leader_addr"].as_str()) {
        (Some(id), Some(addr)) => format!("node {id} ({addr})"),
        (Some(id), None) => format!("node {id}"),
        _ => "unknown".to_string(),
    };
    if answer["stepped_down"] == json!(true) {
        let confirmed = if answer["confirmed"] == json!(true) {
            ""
        } else {
            " (not yet confirmed)"
        };
        format!("stepped down; the leader is {leader}{confirmed}")
    } else {
        format!("not the leader; the leader is {leader}")
    }
}

/// Prometheus text as `{"series{labels}": value}`.
fn metrics_json(text: &str) -> serde_json::Value {
    let samples: serde_json::Map<String, serde_json::Value> = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            Some((series.to_string(), json!(value)))
        })
        .collect();
    json!({ "samples": samples })
}

async fn admin(cli: &Cli, security: &ClientSecurity) -> Result<(), Failure> {
    let output = cli.output;
    match &cli.command {
        Command::StepDown => {
            let target = admin_target(cli, security, true)?;
            let answer = admin_http::call(&target, "POST", "/admin/raft/step-down")
                .await?
                .success("step-down")?
                .json();
            emit(output, answer.clone(), || step_down_text(&answer));
        }
        Command::Evict { count } => {
            let target = admin_target(cli, security, true)?;
            let path = format!("/admin/cache/evict?count={count}");
            let answer = admin_http::call(&target, "POST", &path)
                .await?
                .success("evict")?
                .json();
            emit(output, answer.clone(), || {
                format!("evicted {} of {count} requested", answer["evicted"])
            });
        }
        Command::Flags {
            action: FlagsAction::Reload,
        } => {
            let target = admin_target(cli, security, true)?;
            let answer = admin_http::call(&target, "POST", "/admin/flags/reload")
                .await?
                .success("flags reload")?
                .json();
            emit(output, answer.clone(), || {
                format!(
                    "reloaded (changed: {}): {}",
                    answer["changed"], answer["flags"]
                )
            });
        }
        Command::Metrics => {
            let target = admin_target(cli, security, false)?;
            let text = admin_http::call(&target, "GET", "/metrics")
                .await?
                .success("metrics")?
                .text();
            emit(output, metrics_json(&text), || text.trim_end().to_string());
        }
        Command::Health => {
            let target = admin_target(cli, security, false)?;
            let health = admin_http::call(&target, "GET", "/health").await?;
            let ready = admin_http::call(&target, "GET", "/ready").await?;
            let (live, is_ready) = (health.status == 200, ready.status == 200);
            let reason = ready.text().trim().to_string();
            emit(
                output,
                json!({ "live": live, "ready": is_ready, "detail": reason }),
                || format!("live: {live}; {reason}"),
            );
            if !is_ready {
                return Err(Failure::new(
                    Exit::Unavailable,
                    format!("the node is {reason}"),
                ));
            }
        }
        _ => unreachable!("admin() is only called for admin verbs"),
    }
    Ok(())
}

/// Runs the command: `Ok(false)` is a miss.
async fn run(cli: Cli) -> Result<bool, Failure> {
    let security = security(&cli)?;
    if matches!(
        cli.command,
        Command::StepDown
            | Command::Evict { .. }
            | Command::Metrics
            | Command::Health
            | Command::Flags { .. }
    ) {
        admin(&cli, &security).await?;
        return Ok(true);
    }
    let client = Client::secured(&cli.addr, security)
        .map_err(|e| Failure::usage(format!("--addr: {e}")))?
        .with_call_deadline(Duration::from_millis(cli.deadline_ms));
    let output = cli.output;
    match cli.command {
        Command::Get { key, allow_stale } => {
            let response = client
                .get(key.as_bytes(), allow_stale)
                .await
                .map_err(rpc_failure)?;
            emit(output, response_json(&response), || render(&response));
            return Ok(!is_miss(&response));
        }
        Command::Set {
            key,
            value,
            value_file,
            ttl_ms,
            expected_version,
        } => {
            let value = match (value, value_file) {
                (_, Some(path)) => {
                    read_input(Some(&path), &format!("--value-file {}", path.display()))?
                }
                (Some(value), None) if value == "-" => read_input(None, "stdin")?,
                (Some(value), None) => value.into_bytes(),
                (None, None) => {
                    return Err(Failure::usage("set: give a VALUE, `-` or --value-file"))
                }
            };
            let response = client
                .set(key.as_bytes(), &value, ttl_ms, expected_version)
                .await
                .map_err(rpc_failure)?;
            emit(
                output,
                json!({ "version": response.version, "ttl_ms": response.ttl_ms }),
                || format!("OK version={} ttl_ms={}", response.version, response.ttl_ms),
            );
        }
        Command::Delete {
            key,
            expected_version,
        } => {
            let response = client
                .delete(key.as_bytes(), expected_version)
                .await
                .map_err(rpc_failure)?;
            emit(
                output,
                json!({ "existed": response.existed, "version": response.version }),
                || match response.existed {
                    true => format!("DELETED version={}", response.version),
                    false => "NOT FOUND".to_string(),
                },
            );
            return Ok(response.existed);
        }
        Command::Status => {
            let mut unreachable = 0;
            let mut nodes = Vec::new();
            for (addr, answer) in client.statuses().await {
                match answer {
                    Ok(status) => {
                        if output == Output::Text {
                            println!("{addr} {}", status_line(&status));
                        }
                        nodes.push(status_json(&addr, &status));
                    }
                    Err(error) => {
                        unreachable += 1;
                        if output == Output::Text {
                            println!("{addr} UNREACHABLE {:?}: {}", error.code(), error.message());
                        }
                        nodes.push(json!({ "addr": addr, "error": error.message() }));
                    }
                }
            }
            if output == Output::Json {
                println!("{}", json!({ "nodes": nodes }));
            }
            if unreachable > 0 {
                return Err(Failure::new(
                    Exit::Unavailable,
                    format!("{unreachable} node(s) unreachable"),
                ));
            }
        }
        Command::BatchGet {
            keys,
            keys_file,
            allow_stale,
        } => {
            let keys = match keys_file {
                Some(path) => read_keys(&path)?,
                None => keys.into_iter().map(String::into_bytes).collect(),
            };
            let responses = batch_get(&client, &keys, allow_stale).await?;
            let misses = responses.iter().filter(|r| is_miss(r)).count();
            match output {
                Output::Json => {
                    let all: Vec<_> = responses.iter().map(response_json).collect();
                    println!("{}", json!({ "responses": all, "misses": misses }));
                }
                Output::Text => responses.iter().for_each(|r| println!("{}", render(r))),
            }
            return Ok(misses == 0);
        }
        Command::StepDown
        | Command::Evict { .. }
        | Command::Metrics
        | Command::Health
        | Command::Flags { .. } => unreachable!("admin verbs returned above"),
    }
    Ok(true)
}

/// `batch-get` in calls of at most 100 keys, with a progress bar on stderr (drawn only on a
/// terminal) from [`PROGRESS_BAR_KEYS_MIN`] keys on.
async fn batch_get(
    client: &Client,
    keys: &[Vec<u8>],
    allow_stale: bool,
) -> Result<Vec<GetResponse>, Failure> {
    let bar = (keys.len() >= PROGRESS_BAR_KEYS_MIN).then(|| {
        let bar = indicatif::ProgressBar::new(keys.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys ({eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut responses = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(hyperion::limits::BATCH_KEYS_MAX) {
        let answered = client
            .batch_get(chunk, allow_stale)
            .await
            .map_err(rpc_failure)?;
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
        responses.extend(answered);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(responses)
}

fn status_json(addr: &str, status: &hyperion::raft_proto::StatusResponse) -> serde_json::Value {
    let database = status.database.as_ref().map(|db| {
        json!({
            "breaker": db.breaker,
            "breaker_opened": db.breaker_opened,
            "pending_mutations": db.pending_mutations,
            "pending_bytes": db.pending_bytes,
            "loads": db.loads,
            "rows_written": db.rows_written,
            "failed_attempts": db.failed_attempts,
        })
    });
    json!({
        "addr": addr,
        "node_id": status.node_id,
        "role": status.role,
        "term": status.term,
        "leader_id": status.leader_id,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "entries": status.entries,
        "used_bytes": status.used_bytes,
        "capacity_bytes": status.capacity_bytes,
        "invalid_peer_messages": status.invalid_peer_messages,
        "database": database,
        "watch": status.watch.as_ref().map(|w| json!({
            "streams": w.streams,
            "tracked_keys": w.tracked_keys,
            "delivered": w.delivered,
            "resyncs": w.resyncs,
            "too_slow": w.too_slow,
        })),
        "shadow": status.shadow.as_ref().map(|s| json!({
            "percent": s.percent,
            "mirrored": s.mirrored,
            "dropped": s.dropped,
            "errors": s.errors,
            "compared": s.compared,
            "mismatches": s.mismatches,
        })),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version are successes; everything else is a usage error (exit 2).
            let _ = error.print();
            return match error.use_stderr() {
                true => ExitCode::from(Exit::Usage as u8),
                false => ExitCode::SUCCESS,
            };
        }
    };
    let output = cli.output;
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(Exit::Miss as u8),
        Err(failure) => {
            match output {
                Output::Json => eprintln!(
                    "{}",
                    json!({ "error": failure.message, "exit_code": failure.exit as u8 })
                ),
                Output::Text => eprintln!("hyperion-cli: {}", failure.message),
            }
            ExitCode::from(failure.exit as u8)
        }
    }
}
