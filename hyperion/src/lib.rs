//! Hyperion: a Raft-replicated, gRPC-fronted in-memory cache.
//!
//! Module map (see README "Architecture"):
//! - [`runtime`]: the seam between tokio and madsim — time, tasks, entropy, node clocks, listener.
//! - [`config`]: environment variables, feature flags, secrets from files.
//! - [`faults`]: every fault-injection switch, in one value (inert in production).
//! - [`secret`]: zeroized, never-printed secret bytes, from files or Vault.
//! - [`tls`]: rustls configurations (this node's certificate, the CAs, certificate identities).
//! - [`auth`]: caller identities (members, clients, tokens), the ACL, who may call what.
//! - [`reload`]: values that reload on SIGHUP and on file change.
//! - [`security`]: a node's TLS, authority and reloads, set up from its configuration.
//! - [`db`]: the system of record (PostgreSQL/CockroachDB, simulated database) and its client.
//! - [`resilience`]: retries with jittered backoff, circuit breaker.
//! - [`replica`]: the replicated node — Raft core driver, state machine, peer transport.
//! - [`api`]: the gRPC `CacheService` (validation, limits, status codes).
//! - [`health`]: the gRPC health service (`grpc.health.v1`), answering from readiness.
//! - [`limits`]: per-client rate limits.
//! - [`server`]: startup and graceful shutdown.
//! - [`timing`]: duration histograms handed explicitly to the code that times its own work.
//! - [`metrics`]: the Prometheus registry (recorded request metrics, node state at scrape).
//! - [`admin`]: the admin HTTP port's handlers, as plain functions.
//! - [`client`]: the Rust client used by the CLI, the simulator and benchmarks.
//! - [`telemetry`]: the log subscriber, and the spans exported over OTLP (key hashes, no bytes).
//! - [`single_flight`]: shared in-flight work per key, joinable only by requests it covers.

// The RPC handlers' futures (async-trait, spans, madsim-tonic's dispatch) nest deeper than
// the default limit in the simulation build.
#![recursion_limit = "256"]

pub mod admin;
pub mod api;
pub mod auth;
pub mod client;
pub mod config;
pub mod db;
pub mod faults;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod mirror;
pub mod reload;
pub mod replica;
pub mod resilience;
pub mod runtime;
pub mod secret;
pub mod security;
pub mod server;
pub mod shadow;
pub mod single_flight;
pub mod telemetry;
pub mod timing;
pub mod tls;
pub mod watch;

/// Generated protobuf and gRPC types (`proto/cache.proto`, package `hyperion.v1`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("hyperion.v1");
}

/// Generated peer-transport types (`proto/raft.proto`, package `hyperion.raft.v1`).
#[allow(clippy::all, missing_docs)]
pub mod raft_proto {
    tonic::include_proto!("hyperion.raft.v1");
}

/// Generated gRPC health-checking types (`proto/health.proto`, package `grpc.health.v1`).
#[allow(clippy::all, missing_docs)]
pub mod health_proto {
    tonic::include_proto!("grpc.health.v1");
}

/// The encoded descriptors of every `proto/*.proto` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hyperion_descriptor.bin"));
