//! Hyperion's deterministic simulator: real Hyperion servers and clients inside madsim, on a
//! simulated network, with one global virtual clock and per-node [`NodeClock`]s, all drawn from
//! one seed.
//!
//! The simulator only exists in the madsim build (`RUSTFLAGS="--cfg madsim"`, see `ci/sim`); in a
//! normal build this crate is empty. Servers run the production code path
//! ([`hyperion::server::Server`]) — there is no separate fake server.
//!
//! Every test prints its seed on failure (madsim's test harness); rerun one with
//! `MADSIM_TEST_SEED=<seed> ci/sim test <name>`.
//!
//! Scenario files (`scenarios/*.toml`, `regressions/*.toml`) are parsed by [`spec`], run by
//! [`runner`] and driven by the `hyperion-sim` CLI ([`cli`]; `ci/sim run|sweep|replay|...`).
#![cfg(madsim)]

pub mod cli;
pub mod cluster;
pub mod monitor;
pub mod runner;
pub mod scenarios;
pub mod spec;
pub mod sweep;
pub mod trace;
pub mod workload;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod database_tests;
#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod scenario_tests;
#[cfg(test)]
mod spec_tests;
#[cfg(test)]
mod tests;
