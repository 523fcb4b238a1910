//! `hyperion`: the cache server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hyperion::config::Config;
use hyperion::runtime::{self, NodeClock};
use hyperion::server::Server;

/// mimalloc rather than the system allocator: with a million 100-byte entries the node's RSS is
/// lower and returns to the OS sooner (README: Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hyperion: a Raft-replicated, gRPC-fronted in-memory cache.
///
/// Configuration comes from environment variables (see README); with none set, `hyperion serve`
/// starts the embedded development node on 127.0.0.1:7000.
#[derive(Parser)]
#[command(name = "hyperion", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node until SIGINT/SIGTERM.
    Serve,
    /// Validate the configuration and print it (secrets redacted: only their sizes show), then
    /// exit.
    Config,
}

/// The configuration, its secrets fetched from their source (files, or Vault).
async fn load_config() -> Result<Config, ExitCode> {
    Config::load_process_env().await.map_err(|error| {
        eprintln!("hyperion: configuration error: {error}");
        ExitCode::from(2)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match load_config().await {
        Ok(config) => config,
        Err(code) => return code,
    };
    match cli.command {
        Command::Config => {
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Command::Serve => {
            let telemetry = match hyperion::telemetry::init(&config) {
                Ok(telemetry) => telemetry,
                Err(error) => {
                    eprintln!("hyperion: cannot start: {error}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(
                node_id = %config.node_id,
                listen = %config.listen_addr,
                data_dir = %config.data_dir.display(),
                cache_size_mb = config.cache_size_mb,
                "starting hyperion {}",
                env!("CARGO_PKG_VERSION")
            );
            let server = match Server::bind(&config, NodeClock::system()).await {
                Ok(server) => server,
                Err(error) => {
                    eprintln!("hyperion: cannot start: {error}");
                    telemetry.shutdown();
                    return ExitCode::FAILURE;
                }
            };
            let served = server.serve(runtime::shutdown_signal()).await;
            telemetry.shutdown();
            match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("hyperion: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
