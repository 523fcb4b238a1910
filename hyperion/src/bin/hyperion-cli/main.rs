//! `hyperion-cli`: call a Hyperion node from the shell.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hyperion::client::{Client, ClientSecurity};
use hyperion::proto::{CacheStatus, GetResponse};

/// Talk to a Hyperion node over gRPC.
#[derive(Parser)]
#[command(name = "hyperion-cli", version)]
struct Cli {
    /// The nodes' gRPC addresses, comma-separated (the client finds the leader).
    #[arg(long, env = "HYPERION_ADDR", default_value = "127.0.0.1:7000")]
    addr: String,
    /// Deadline of each command in milliseconds, retries through elections and redirects
    /// included (the default outlasts a leader crash's election).
    #[arg(long, default_value_t = hyperion::client::DEFAULT_DEADLINE.as_millis() as u64)]
    deadline_ms: u64,
    /// PEM CA certificates the nodes' certificates must chain to; turns TLS on (https://
    /// addresses need it too).
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
    /// A file holding an admin API key (for `status`).
    #[arg(long, env = "HYPERION_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
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
        /// The value (or use --value-file for binary data).
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
        #[arg(required = true)]
        keys: Vec<String>,
        #[arg(long)]
        allow_stale: bool,
    },
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
    line
}

fn security(cli: &Cli) -> Result<ClientSecurity, String> {
    let mut security = ClientSecurity::from_files(
        cli.ca.as_deref(),
        cli.cert.as_deref(),
        cli.key.as_deref(),
        cli.token_file.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    security.server_name = cli.server_name.clone();
    if let Some(path) = &cli.api_key_file {
        let key = std::fs::read_to_string(path)
            .map_err(|e| format!("--api-key-file {}: {e}", path.display()))?;
        security.api_key = Some(hyperion::secret::Secret::new(
            key.trim().as_bytes().to_vec(),
        ));
    }
    Ok(security)
}

async fn run(cli: Cli) -> Result<(), String> {
    let client = Client::secured(&cli.addr, security(&cli)?)
        .map_err(|e| e.to_string())?
        .with_call_deadline(Duration::from_millis(cli.deadline_ms));
    let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    match cli.command {
        Command::Get { key, allow_stale } => {
            let response = client
                .get(key.as_bytes(), allow_stale)
                .await
                .map_err(status)?;
            println!("{}", render(&response));
        }
        Command::Set {
            key,
            value,
            value_file,
            ttl_ms,
            expected_version,
        } => {
            let value = match (value, value_file) {
                (_, Some(path)) => std::fs::read(&path)
                    .map_err(|e| format!("--value-file {}: {e}", path.display()))?,
                (Some(value), None) => value.into_bytes(),
                (None, None) => unreachable!("clap requires a value or --value-file"),
            };
            let response = client
                .set(key.as_bytes(), &value, ttl_ms, expected_version)
                .await
                .map_err(status)?;
            println!("OK version={} ttl_ms={}", response.version, response.ttl_ms);
        }
        Command::Delete {
            key,
            expected_version,
        } => {
            let response = client
                .delete(key.as_bytes(), expected_version)
                .await
                .map_err(status)?;
            if response.existed {
                println!("DELETED version={}", response.version);
            } else {
                println!("NOT FOUND");
            }
        }
        Command::Status => {
            let mut unreachable = 0;
            for (addr, answer) in client.statuses().await {
                match answer {
                    Ok(status) => println!("{addr} {}", status_line(&status)),
                    Err(error) => {
                        unreachable += 1;
                        println!("{addr} UNREACHABLE {:?}: {}", error.code(), error.message());
                    }
                }
            }
            if unreachable > 0 {
                return Err(format!("{unreachable} node(s) unreachable"));
            }
        }
        Command::BatchGet { keys, allow_stale } => {
            let keys: Vec<Vec<u8>> = keys.into_iter().map(String::into_bytes).collect();
            for response in client.batch_get(&keys, allow_stale).await.map_err(status)? {
                println!("{}", render(&response));
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hyperion-cli: {message}");
            ExitCode::FAILURE
        }
    }
}
