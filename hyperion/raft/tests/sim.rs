//! Randomized, deterministic cluster tests of the Raft core (see `common/mod.rs` for the
//! harness and the invariants checked after every event), driven by proptest with shrinking.
//!
//! Case counts are fixed here (not by `PROPTEST_CASES`) so CI time stays bounded; a failure
//! prints the minimized scenario, which replays deterministically.

mod common;

use common::{Cluster, Opts};
use hyperion_raft::storage::SyncPolicy;
use hyperion_raft::{Mutations, NodeId, Role};
use proptest::prelude::*;

/// Case count: fixed for CI; `RAFT_SIM_CASES` overrides it for longer local hunts.
fn cases(default: u32) -> u32 {
    std::env::var("RAFT_SIM_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Debug)]
pub enum Action {
    Wait(u64),
    Propose(u8),
    Read(u8),
    Partition(u8),
    OneWay(u8, u8),
    CutLink(u8, u8),
    Heal,
    Crash(u8),
    Restart(u8),
    PowerLoss(u8),
    Transfer(u8),
    StepDown,
    /// Cut the current leader off from every other node (and remember it).
    IsolateLeader,
    /// Power loss of the node `IsolateLeader` last cut off.
    PowerLossIsolated,
    /// Latent media damage: a bit flips in the synced first half of a node's WAL (offset by the
    /// second number), then the node restarts.
    BitRot(u8, u16),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (1u64..2500).prop_map(Action::Wait),
        6 => any::<u8>().prop_map(Action::Propose),
        4 => any::<u8>().prop_map(Action::Read),
        1 => any::<u8>().prop_map(Action::Partition),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Action::OneWay(a, b)),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Action::CutLink(a, b)),
        1 => Just(Action::Heal),
        1 => any::<u8>().prop_map(Action::Crash),
        2 => any::<u8>().prop_map(Action::Restart),
        1 => any::<u8>().prop_map(Action::PowerLoss),
        1 => any::<u8>().prop_map(Action::Transfer),
        1 => Just(Action::StepDown),
    ]
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub n: usize,
    pub seed: u64,
    /// Clock rate of each node above real time, in ppm (< 50_000: ratio < 1.05).
    pub drift_ppm: Vec<u64>,
    pub loss_percent: u8,
    pub actions: Vec<Action>,
}

fn scenario(max_actions: usize) -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![3 => Just(3usize), 1 => Just(5usize)],
        any::<u64>(),
        0u8..3,
    )
        .prop_flat_map(move |(n, seed, loss)| {
            (
                proptest::collection::vec(0u64..50_000, n),
                proptest::collection::vec(action(), 1..max_actions),
            )
                .prop_map(move |(drift_ppm, actions)| Scenario {
                    n,
                    seed,
                    drift_ppm,
                    loss_percent: [0, 2, 15][loss as usize],
                    actions,
                })
        })
}

/// Runs a scenario; returns the first violation.
pub fn run(sc: &Scenario, base: &Opts) -> Result<Cluster, String> {
    let mut opts = base.clone();
    opts.n = sc.n;
    opts.seed = sc.seed;
    opts.rates_ppm = sc.drift_ppm.iter().map(|d| 1_000_000 + d).collect();
    opts.loss = f64::from(sc.loss_percent) / 100.0;
    opts.duplicate = if sc.loss_percent > 0 { 0.05 } else { 0.0 };
    let mut c = Cluster::new(opts);
    let n = sc.n as u64;
    let pick = |x: u8| -> NodeId { u64::from(x) % n + 1 };
    let mut next_id = 0u64;
    let mut isolated = None;
    for a in &sc.actions {
        match a {
            Action::Wait(ms) => c.advance(*ms),
            Action::Propose(x) => {
                // A burst of 1–4 proposals, 10 ms apart.
                for _ in 0..=(x % 4) {
                    let target = c.leader().unwrap_or(pick(*x));
                    next_id += 1;
                    let _ = c.propose(target, format!("w{next_id}").as_bytes());
                    c.advance(10);
                }
            }
            Action::Read(x) => {
                // 1–3 reads at once (they share a heartbeat round).
                for k in 0..=(x % 3) {
                    next_id += 1;
                    let _ = c.read(pick(x.wrapping_add(k)), next_id);
                }
            }
            Action::Partition(mask) => {
                let side: Vec<NodeId> = (1..=n)
                    .filter(|i| mask & (1 << ((i - 1) % 8)) != 0)
                    .collect();
                c.partition(&side);
            }
            Action::OneWay(a, b) => {
                let (from, to) = (pick(*a), pick(*b));
                if from != to {
                    c.blocked.insert((from, to));
                }
            }
            Action::CutLink(a, b) => {
                let (x, y) = (pick(*a), pick(*b));
                if x != y {
                    c.blocked.insert((x, y));
                    c.blocked.insert((y, x));
                }
            }
            Action::Heal => c.heal(),
            Action::Crash(x) => c.crash(pick(*x)),
            Action::Restart(x) => c.restart(pick(*x)),
            Action::PowerLoss(x) => c.power_loss(pick(*x)),
            Action::Transfer(x) => {
                if let Some(l) = c.leader() {
                    let _ = c.transfer(l, pick(*x));
                }
            }
            Action::StepDown => {
                if let Some(l) = c.leader() {
                    let _ = c.step_down(l);
                }
            }
            Action::IsolateLeader => {
                if let Some(l) = c.leader() {
                    c.partition(&[l]);
                    isolated = Some(l);
                }
            }
            Action::PowerLossIsolated => {
                if let Some(id) = isolated {
                    c.power_loss(id);
                }
            }
            Action::BitRot(x, at) => {
                let id = pick(*x);
                let disk = c.nodes[(id - 1) as usize].disk.clone();
                let synced = disk.durable_len("wal").unwrap_or(0);
                if synced > 16 {
                    let offset = usize::from(*at) % (synced / 2);
                    disk.flip_bits("wal", offset, 0x10);
                    c.crash(id);
                    c.restart(id);
                }
            }
        }
        c.advance(10);
        if let Some(v) = c.first_violation() {
            return Err(v.clone());
        }
    }
    // Heal everything and let the cluster settle: safety must still hold.
    c.heal();
    for id in 1..=n {
        c.restart(id);
    }
    c.advance(8_000);
    match c.first_violation() {
        Some(v) => Err(v.clone()),
        None => Ok(c),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4000), max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// All safety invariants hold under loss, duplication, reordering, partitions, crashes,
    /// power loss (with `Always`) and clock rates within the configured ratio.
    #[test]
    fn safety_under_faults(sc in scenario(60)) {
        let r = run(&sc, &Opts::new(sc.n, sc.seed));
        prop_assert!(r.is_ok(), "{}", r.err().unwrap_or_default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1000), max_shrink_iters: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    /// With `EverySec`, crashes (not power loss) lose nothing: the same invariants hold.
    #[test]
    fn everysec_safe_under_process_crashes(sc in scenario(30)) {
        let mut sc = sc;
        for a in &mut sc.actions {
            if let Action::PowerLoss(x) = a {
                *a = Action::Crash(*x);
            }
        }
        let mut opts = Opts::new(sc.n, sc.seed);
        opts.policy = SyncPolicy::EverySec;
        let r = run(&sc, &opts);
        prop_assert!(r.is_ok(), "{}", r.err().unwrap_or_default());
    }
}

/// Liveness after heal: a quiet, connected cluster elects a leader and commits and reads.
#[test]
fn liveness_after_heal() {
    for seed in 0..20 {
        let mut c = Cluster::new(Opts::new(if seed % 2 == 0 { 3 } else { 5 }, seed));
        c.advance(6_000);
        let leader = c.leader().expect("a leader within 4 election timeouts");
        let range = c.propose(leader, b"x").expect("leader accepts");
        c.advance(1_000);
        let node = c.node(leader).expect("up");
        assert_eq!(node.role(), Role::Leader);
        assert!(
            node.commit_index() >= range.end - 1,
            "seed {seed}: write not committed"
        );
        c.read(leader, 1).expect("read accepted");
        c.advance(500);
        assert!(c.checker.reads_served >= 1, "seed {seed}: read not served");
        assert!(c.first_violation().is_none(), "{:?}", c.first_violation());
    }
}

/// The generator must actually exercise the protocol: every message kind, snapshots, reads.
#[test]
fn scenarios_cover_the_protocol() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut stats = std::collections::BTreeMap::new();
    let (mut reads, mut committed) = (0, 0);
    for _ in 0..100 {
        let sc = scenario(60)
            .new_tree(&mut runner)
            .expect("strategy")
            .current();
        let c = run(&sc, &Opts::new(sc.n, sc.seed)).expect("safe");
        for (k, v) in &c.checker.stats {
            *stats.entry(*k).or_insert(0u64) += v;
        }
        reads += c.checker.reads_served;
        committed += c.checker.committed.len();
    }
    println!("coverage over 100 scenarios: {stats:?}, reads served {reads}, committed {committed}");
    for kind in [
        "PreVote",
        "PreVoteResp",
        "Vote",
        "VoteResp",
        "App",
        "AppResp",
        "Heartbeat",
        "HeartbeatResp",
        "Snapshot",
        "TimeoutNow",
        "ReadIndex",
        "ReadIndexResp",
        "snapshot_installed",
        "snapshot_taken",
    ] {
        assert!(
            stats.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} in 100 scenarios"
        );
    }
    assert!(
        reads > 50 && committed > 500,
        "too little traffic: {reads} reads, {committed} entries"
    );
}

/// Keeps the first power loss of a scenario and turns later ones into crashes: one node loses
/// power once (a minority), every other stop is a process crash.
fn one_power_loss(mut sc: Scenario) -> Scenario {
    let mut seen = false;
    for a in &mut sc.actions {
        if let Action::PowerLoss(x) = a {
            if seen {
                *a = Action::Crash(*x);
            }
            seen = true;
        }
    }
    sc
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), max_shrink_iters: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// With `EverySec`, one node losing power (its unsynced appends kept up to any byte, the
    /// last one possibly torn) loses nothing the cluster committed and applies nothing it did not:
    /// every invariant holds.
    #[test]
    fn everysec_safe_under_one_power_loss(sc in scenario(60).prop_map(one_power_loss)) {
        let mut opts = Opts::new(sc.n, sc.seed);
        opts.policy = SyncPolicy::EverySec;
        let r = run(&sc, &opts);
        prop_assert!(r.is_ok(), "{}", r.err().unwrap_or_default());
    }
}

/// The first scenario of `strategy` (deterministic generation) whose run under `opts_for` finds
/// a violation, within `cases`; with the violation.
fn first_failure(
    strategy: impl Strategy<Value = Scenario>,
    cases: u32,
    opts_for: impl Fn(&Scenario) -> Opts,
) -> Option<(u32, String)> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for case in 0..cases {
        let sc = strategy.new_tree(&mut runner).expect("strategy").current();
        if let Err(violation) = run(&sc, &opts_for(&sc)) {
            return Some((case, violation));
        }
    }
    None
}

fn everysec_opts(sc: &Scenario, mutate: impl Fn(&mut Mutations)) -> Opts {
    let mut opts = Opts::new(sc.n, sc.seed);
    opts.policy = SyncPolicy::EverySec;
    mutate(&mut opts.config.mutations);
    opts
}

/// Regression (safety hole 2): with the commit written before the entries of the same Ready and
/// a heartbeat committing up to the last index, one power loss makes a node apply entries that
/// were never committed. The switch `unverified_commit` re-opens the hole; the harness finds it.
#[test]
fn regression_unverified_commit_applies_entries_that_were_never_committed() {
    let found = first_failure(partitioned_leader_then_power_loss(), 500, |sc| {
        everysec_opts(sc, |m| m.unverified_commit = true)
    });
    let (case, violation) = found.expect("the pre-fix commit rule must be caught");
    println!("unverified_commit caught at case {case}: {violation}");
}

/// Regression (safety hole 4): a node that lost unsynced entries to a power loss and votes at
/// once can elect a leader without entries that were committed with its acknowledgement. The
/// switch `vote_after_power_loss` re-opens the hole; the harness finds it.
#[test]
fn regression_voting_after_a_power_loss_loses_committed_entries() {
    let found = first_failure(scenario(60).prop_map(one_power_loss), 3000, |sc| {
        everysec_opts(sc, |m| m.vote_after_power_loss = true)
    });
    let (case, violation) = found.expect("voting right after a power loss must be caught");
    println!("vote_after_power_loss caught at case {case}: {violation}");
}

/// The schedule of safety hole 2: a leader is cut off with an uncommitted suffix, the majority
/// elects another leader and commits different entries at those indexes, the partition heals (the
/// old leader's suffix is replaced, unsynced), and the old leader loses power within the sync
/// interval, then restarts.
fn partitioned_leader_then_power_loss() -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        2500u64..4000,
        1u8..4,
        1u8..5,
        1600u64..4000,
        1u8..5,
        0u64..900,
        prop_oneof![Just(3usize), Just(5usize)],
    )
        .prop_map(
            |(seed, elect_ms, before, suffix, reelect_ms, after, heal_ms, n)| {
                let mut actions = vec![Action::Wait(elect_ms)];
                actions.extend((0..before).map(Action::Propose));
                actions.push(Action::Wait(200));
                actions.push(Action::IsolateLeader);
                actions.extend((0..suffix).map(|x| Action::Propose(x * 4)));
                actions.push(Action::Wait(reelect_ms));
                actions.extend((0..after).map(Action::Propose));
                actions.push(Action::Wait(100));
                actions.push(Action::Heal);
                actions.push(Action::Wait(heal_ms));
                actions.push(Action::PowerLossIsolated);
                Scenario {
                    n,
                    seed,
                    drift_ppm: vec![0; n],
                    loss_percent: 0,
                    actions,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(500), max_shrink_iters: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Safety hole 2's schedule with `EverySec`: the old leader's restart applies only committed
    /// entries, and leader and follower converge.
    #[test]
    fn everysec_safe_when_a_cut_off_leader_loses_power(sc in partitioned_leader_then_power_loss()) {
        let mut opts = Opts::new(sc.n, sc.seed);
        opts.policy = SyncPolicy::EverySec;
        let r = run(&sc, &opts);
        prop_assert!(r.is_ok(), "{}", r.err().unwrap_or_default());
    }
}

/// Scenarios with one bit flip in a node's synced WAL among the usual faults.
fn with_bit_rot() -> impl Strategy<Value = Scenario> {
    (scenario(40), any::<u8>(), any::<u16>(), 0usize..40).prop_map(|(mut sc, x, at, pos)| {
        let pos = pos.min(sc.actions.len());
        sc.actions.insert(pos, Action::BitRot(x, at));
        sc
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(500), max_shrink_iters: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// Safety hole 8: a WAL damaged before its end is refused (the node is wiped and rejoins,
    /// abstaining until it caught up), so no synced vote is lost and every invariant holds.
    #[test]
    fn safe_under_wal_bit_rot(sc in with_bit_rot()) {
        let r = run(&sc, &Opts::new(sc.n, sc.seed));
        prop_assert!(r.is_ok(), "{}", r.err().unwrap_or_default());
    }
}

/// Regression (safety hole 8): taking a bit flip in the middle of the WAL for a torn tail drops
/// the synced term and vote records after it, and the node can vote twice in one term. The switch
/// `wal_corruption_as_torn_tail` re-opens the hole; the harness finds it.
#[test]
fn regression_mid_wal_corruption_taken_for_a_torn_tail_allows_a_double_vote() {
    let found = first_failure(with_bit_rot(), 2000, |sc| {
        let mut opts = Opts::new(sc.n, sc.seed);
        opts.config.mutations.wal_corruption_as_torn_tail = true;
        opts
    });
    let (case, violation) = found.expect("mid-WAL corruption taken for a torn tail must be caught");
    println!("wal_corruption_as_torn_tail caught at case {case}: {violation}");
}
