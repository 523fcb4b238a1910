//! Mutation tests: each deliberately broken variant of the core must make the harness report a
//! safety violation. A checker that cannot fail proves nothing.
//!
//! Each test runs seeded random scenarios (the same generator as `sim.rs`) until the first
//! violation, and asserts one is found within a bounded number of seeds; it also prints the
//! seed and violation so the finding can be replayed.

mod common;

use common::{Cluster, Opts};
use hyperion_raft::{Config, Mutations, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A fault schedule biased towards what breaks leases and votes: one-way link cuts, isolated
/// leaders, crashes and restarts, with steady reads and writes.
fn run_random(opts: Opts, seed: u64, steps: usize, latency_max_ms: u64) -> Option<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabcdef);
    let mut opts = opts;
    opts.seed = seed;
    opts.latency_ms = (1, latency_max_ms);
    let n = opts.n as u64;
    let mut c = Cluster::new(opts);
    let mut request = 0u64;
    for _ in 0..steps {
        let pick = |rng: &mut ChaCha8Rng| -> NodeId { rng.random_range(1..=n) };
        match rng.random_range(0..100) {
            0..=29 => c.advance(rng.random_range(1..600)),
            30..=44 => {
                let target = c.leader().unwrap_or_else(|| pick(&mut rng));
                request += 1;
                let _ = c.propose(target, format!("w{request}").as_bytes());
            }
            45..=59 => {
                request += 1;
                let who = pick(&mut rng);
                let _ = c.read(who, request);
            }
            60..=67 => {
                let (a, b) = (pick(&mut rng), pick(&mut rng));
                if a != b {
                    c.blocked.insert((a, b));
                }
            }
            68..=69 => {
                if let Some(l) = c.leader() {
                    c.partition(&[l]);
                }
            }
            70..=71 => {
                // Partial partition: the leader and one follower cannot talk, everyone else can.
                let other = pick(&mut rng);
                if let Some(l) = c.leader().filter(|l| *l != other) {
                    c.blocked.insert((l, other));
                    c.blocked.insert((other, l));
                }
            }
            72..=79 => c.heal(),
            80..=85 => {
                let who = pick(&mut rng);
                c.crash(who);
            }
            86..=95 => {
                for id in 1..=n {
                    if !c.is_up(id) && rng.random_bool(0.5) {
                        c.restart(id);
                    }
                }
            }
            _ => {
                if let Some(l) = c.leader() {
                    let _ = c.transfer(l, pick(&mut rng));
                }
            }
        }
        c.advance(5);
        if let Some(v) = c.first_violation() {
            return Some(v.clone());
        }
    }
    None
}

fn find_violation(
    opts: Opts,
    seeds: u64,
    steps: usize,
    latency_max_ms: u64,
) -> Option<(u64, String)> {
    (0..seeds)
        .find_map(|seed| run_random(opts.clone(), seed, steps, latency_max_ms).map(|v| (seed, v)))
}

fn mutated(n: usize, mutations: Mutations) -> Opts {
    let mut o = Opts::new(n, 0);
    o.config.mutations = mutations;
    o
}

/// Control: the unmutated core passes the very same schedules.
#[test]
fn control_correct_core_passes_the_mutation_schedules() {
    let mut drifted = Opts::new(3, 0);
    drifted.rates_ppm = vec![1_000_000, 1_049_000, 1_020_000];
    for (opts, latency) in [
        (Opts::new(3, 0), 30),
        (drifted, 30),
        (Opts::new(3, 0), 2500),
    ] {
        if let Some((seed, v)) = find_violation(opts, 40, 300, latency) {
            panic!("correct core violated safety at seed {seed}: {v}");
        }
    }
}

#[test]
fn vote_stickiness_disabled_is_caught() {
    let opts = mutated(
        3,
        Mutations {
            disable_vote_stickiness: true,
            ..Mutations::default()
        },
    );
    let (seed, v) = find_violation(opts, 1000, 300, 30).expect("no violation found");
    println!("seed {seed}: {v}");
    assert!(v.contains("lease") || v.contains("stale read"), "{v}");
}

#[test]
fn lease_longer_than_election_timeout_under_drift_is_caught() {
    let mut opts = mutated(
        3,
        Mutations {
            skip_lease_validation: true,
            ..Mutations::default()
        },
    );
    // 1450 ms lease vs 1500 ms election timeout, clocks 30 % apart: 1450 × 1.3 ≫ 1475.
    opts.config = Config {
        lease_duration_ms: 1450,
        max_clock_rate_ratio: 1.3,
        ..opts.config
    };
    opts.rates_ppm = vec![1_000_000, 1_300_000, 1_300_000];
    let (seed, v) = find_violation(opts, 200, 300, 30).expect("no violation found");
    println!("seed {seed}: {v}");
    assert!(v.contains("lease") || v.contains("stale read"), "{v}");
}

#[test]
fn term_and_vote_not_persisted_is_caught() {
    let opts = mutated(
        3,
        Mutations {
            forget_term_and_vote: true,
            ..Mutations::default()
        },
    );
    let (seed, v) = find_violation(opts, 300, 300, 2500).expect("no violation found");
    println!("seed {seed}: {v}");
    assert!(
        v.contains("vote safety") || v.contains("election safety"),
        "{v}"
    );
}
