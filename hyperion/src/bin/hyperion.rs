//! `hyperion`: the cache server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hyperion::config::{Config, LogFormat};
use hyperion::runtime::{self, NodeClock};
use hyperion::server::Server;

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

fn init_logging(filter: &str, format: LogFormat) {
    // The filter was validated with the configuration.
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // One JSON object per line: timestamp, level, target, message and fields.
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
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
            init_logging(&config.log_level, config.ops.log_format);
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
                    return ExitCode::FAILURE;
                }
            };
            match server.serve(runtime::shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("hyperion: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
