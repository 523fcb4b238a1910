//! Hyperion's deterministic simulator: real Hyperion servers and clients inside madsim, on a
//! simulated network, with one global virtual clock and per-node [`NodeClock`]s, all drawn from
//! one seed.
//!
//! The simulator only exists in the madsim build (`RUSTFLAGS="--cfg madsim"`, see `ci/sim`); in a
//! normal build this crate is empty. Servers run the production code path
//! ([`hyperion::server::Server`]) — there is no separate fake server.
//!
//! Scenarios are data: files (`scenarios/*.toml`, `regressions/*.toml`) parsed, validated and
//! drawn for a seed by [`spec`], their faults declared once in [`faults`], run by [`runner`],
//! reported by [`report`], and driven by the `hyperion-sim` CLI ([`cli`]; `ci/sim
//! run|sweep|replay|...`) and by the `scenario_tests` layer. Seeds follow one protocol
//! ([`seeds`]: `--seed N`, or `HYPERION_SIM_SEED`/`HYPERION_SIM_SEEDS`), and every failure prints
//! the one command that replays it. The plain `#[madsim::test]` unit tests are madsim's own:
//! madsim prints their seed on failure, and `MADSIM_TEST_SEED=<seed> ci/sim test <name>` reruns
//! one.
#![cfg(madsim)]

pub mod cli;
pub mod cluster;
pub mod faults;
pub mod metrics;
pub mod monitor;
pub mod report;
pub mod report_html;
pub mod runner;
pub mod seeds;
pub mod shrink;
pub mod spec;
pub mod trace;
pub mod workload;

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod database_tests;
#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod scenario_tests;
#[cfg(test)]
mod spec_tests;
#[cfg(test)]
mod tests;
