//! The scenario-file parser: good files, every kind of error (with file, line and field), drawing.

use std::time::Duration;

use hyperion::config::Config;
use hyperion::resilience::Jitter;

use crate::faults::{NodeRef, PerNode};
use crate::seeds::parse as parse_seed_range;
use crate::spec::{Checker, ScenarioFile, SpecError};

const GOOD: &str = r#"
name = "good"

[topology]
nodes = 5
cluster_clients = [1, 4]
pinned_clients = 0

[config]
heartbeat_ms = 100
election_timeout_ms = { min = 1000, max = 2000 }
unsafe_leader_reads = true
wal_sync = "always"

[workload]
duration_ms = 5000
write_percent = [10, 90]
ttl_ms = [100, 200]
value_bytes = [10, 20]

[workload.retry]
policy = "fixed"
max_attempts = 3
base_delay_ms = 40

[[faults]]
at_ms = [100, 900]
kind = "partition"
groups = [[1, 2], [3, 4, 5]]
duration_ms = 1500

[[faults]]
at_ms = 2000
kind = "clock"
node = "leader"
rate = [0.5, 0.9]

[expect]
violation = ["linearizability"]
"#;

fn parse(source: &str) -> Result<ScenarioFile, SpecError> {
    ScenarioFile::parse("test.toml", source)
}

/// Asserts that `source` is rejected at `line` naming `field`, with `needle` in the message.
fn rejects(source: &str, line: usize, field: &str, needle: &str) {
    let error = parse(source).expect_err("the file must be rejected");
    assert_eq!(error.file, "test.toml", "{error}");
    assert_eq!(error.line, line, "{error}");
    assert_eq!(error.field, field, "{error}");
    assert!(error.message.contains(needle), "{error}");
    let shown = error.to_string();
    assert!(
        shown.starts_with(&format!("test.toml:{line}: field `{field}`")),
        "{shown}"
    );
}

#[test]
fn a_good_file_parses_and_draws_within_its_ranges() {
    let file = parse(GOOD).unwrap();
    assert!(!file.is_regression());
    for seed in 0..50 {
        let plan = file.plan(seed, None).unwrap();
        assert_eq!(plan.nodes, 5);
        assert!((1..=4).contains(&plan.workload.cluster_clients));
        assert!((10..=90).contains(&plan.workload.write_percent));
        let timeout = plan.config.election_timeout_ms.unwrap();
        assert!((1000..=2000).contains(&timeout));
        assert!(plan.injection.unsafe_leader_reads);
        assert_eq!(plan.workload.ttl_ms, (100, 200));
        assert_eq!(plan.workload.value_bytes, (10, 20));
        assert_eq!(plan.workload.duration, Duration::from_millis(5000));
        let retry = plan.workload.retry.unwrap();
        assert_eq!(
            (retry.max_attempts, retry.jitter),
            (3, Jitter::None),
            "fixed = no jitter"
        );
        assert_eq!(retry.base_delay, retry.max_delay, "fixed = no growth");
        assert!((100..=900).contains(&plan.faults[0].steps[0].at_ms));
        let partition = &plan.faults[0].steps[0].actions[0];
        assert_eq!(partition.kind.name, "partition");
        assert_eq!(partition.groups, vec![vec![0, 1], vec![2, 3, 4]]);
        let clock = &plan.faults[1].steps[0].actions[0];
        assert_eq!(clock.kind.name, "clock", "a clock fault");
        assert_eq!(clock.node, Some(NodeRef::Leader));
        assert!((0.5..=0.9).contains(&clock.rate.as_ref().unwrap().of(0)));
        // Violation expected from linearizability; the others (not memory: no bound) must pass.
        assert_eq!(plan.expect.violation, vec![Checker::Linearizability]);
        assert_eq!(plan.expect.pass, vec![Checker::Raft, Checker::Liveness]);
        // Every ranged field is reported, fixed ones are not.
        let drawn: Vec<&str> = plan.draws.iter().map(|d| d.field.as_str()).collect();
        assert!(drawn.contains(&"config.election_timeout_ms"));
        assert!(drawn.contains(&"faults[1].rate"));
        assert!(!drawn.contains(&"topology.nodes"));
    }
}

#[test]
fn draws_are_a_function_of_the_seed() {
    let file = parse(GOOD).unwrap();
    let values = |seed| {
        file.plan(seed, None)
            .unwrap()
            .draws
            .into_iter()
            .map(|d| (d.field, d.value))
            .collect::<Vec<_>>()
    };
    assert_eq!(values(7), values(7));
    assert!((0..20).any(|seed| values(seed) != values(7)));
}

#[test]
fn config_overrides_apply_with_the_product_lease_default() {
    let file = parse("[config]\nelection_timeout_ms = 600\nheartbeat_ms = 60\n").unwrap();
    let plan = file.plan(1, None).unwrap();
    let mut config = Config::development();
    plan.configure(&mut config);
    assert_eq!(config.raft.election_timeout_ms, 600);
    assert_eq!(config.raft.heartbeat_ms, 60);
    assert_eq!(
        config.raft.lease_duration_ms, 400,
        "⅔ of the timeout when below 1000"
    );
    assert!(!config.faults.unsafe_leader_reads);
}

#[test]
fn an_empty_file_is_the_default_scenario() {
    let plan = parse("").unwrap().plan(3, None).unwrap();
    assert_eq!(plan.nodes, 3);
    assert!(plan.faults.is_empty());
    assert_eq!(
        plan.expect.pass,
        vec![Checker::Linearizability, Checker::Raft, Checker::Liveness]
    );
    assert!(plan.draws.is_empty());
}

#[test]
fn syntax_errors_name_line_and_key() {
    rejects(
        "[topology]\nnodes = 3\n\n[workload]\nkeys = = 4\n",
        5,
        "keys",
        "",
    );
}

#[test]
fn unknown_fields_are_rejected_with_their_line() {
    rejects(
        "[topology]\nnodes = 3\n\n[workload]\nkeyz = 4\n",
        5,
        "keyz",
        "unknown field `keyz`",
    );
    rejects("nmae = \"x\"\n", 1, "nmae", "unknown field");
}

#[test]
fn wrong_types_are_rejected_with_their_line() {
    rejects(
        "[topology]\nnodes = \"three\"\n",
        2,
        "nodes",
        "expected a number",
    );
    rejects("[topology]\nnodes = 2.5\n", 2, "nodes", "not allowed");
    rejects("[topology]\nnodes = [1, 2, 3]\n", 2, "nodes", "exactly two");
}

#[test]
fn inverted_ranges_are_rejected() {
    rejects(
        "[workload]\nkeys = 3\nwrite_percent = { min = 60, max = 20 }\n",
        3,
        "write_percent",
        "above max",
    );
    rejects(
        "[workload]\nttl_ms = [500, 100]\n",
        2,
        "workload.ttl_ms",
        "min <= max",
    );
}

#[test]
fn out_of_bounds_values_name_their_field() {
    rejects(
        "[workload]\nkeys = 3\nwrite_percent = [50, 101]\n",
        3,
        "workload.write_percent",
        "0..=100",
    );
    rejects("[topology]\nnodes = 9\n", 2, "topology.nodes", "1..=7");
    rejects(
        "[config]\nwal_sync = \"sometimes\"\n",
        2,
        "config.wal_sync",
        "always",
    );
}

#[test]
fn node_numbers_out_of_range_point_at_the_field() {
    rejects(
        "[topology]\nnodes = 3\n\n[[faults]]\nat_ms = 1\nkind = \"kill\"\nnode = 4\n",
        7,
        "faults[0].node",
        "out of range",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"kill\"\nnode = \"primary\"\n",
        4,
        "faults[0].node",
        "\"leader\"",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"partition\"\ngroups = [[1], [2, 7]]\n",
        4,
        "faults[0].groups",
        "node 7 is out of range",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"partition\"\ngroups = [[1, 2], [2, 3]]\n",
        4,
        "faults[0].groups",
        "two groups",
    );
}

#[test]
fn fault_kinds_and_their_fields_are_checked() {
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"meteor\"\n",
        3,
        "faults[0].kind",
        "unknown fault kind",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"kill\"\nnode = 1\ngroups = [[1], [2]]\n",
        5,
        "faults[0].groups",
        "does not apply",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"one_way\"\nfrom = 1\n",
        3,
        "faults[0].to",
        "needs `to`",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"clock\"\nnode = 1\n",
        3,
        "faults[0].rate",
        "`rate` or `jump_ms`",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"net\"\npacket_loss = 1.5\n",
        4,
        "faults[0].packet_loss",
        "[0, 1]",
    );
    rejects(
        "[[faults]]\nkind = \"heal\"\n",
        1,
        "faults",
        "missing field `at_ms`",
    );
}

#[test]
fn expectations_are_checked() {
    rejects(
        "[expect]\npass = [\"linearizability\", \"vibes\"]\n",
        2,
        "expect.pass",
        "unknown checker `vibes`",
    );
    rejects(
        "[expect]\npass = [\"raft\"]\nviolation = [\"raft\"]\n",
        3,
        "expect.violation",
        "both",
    );
    rejects(
        "[expect]\nviolation = [\"raft\"]\nviolation_in = \"most_seeds\"\n",
        3,
        "expect.violation_in",
        "any_seed",
    );
    rejects(
        "[expect]\nviolation_in = \"any_seed\"\n",
        2,
        "expect.violation_in",
        "non-empty `violation`",
    );
    rejects(
        "[expect]\nviolation = [\"memory\"]\n",
        2,
        "expect.memory_max_bytes",
        "needs `memory_max_bytes`",
    );
}

#[test]
fn retry_policies_are_checked_and_mapped() {
    rejects(
        "[workload.retry]\npolicy = \"hope\"\n",
        2,
        "workload.retry.policy",
        "exponential_jitter",
    );
    for (policy, attempts, jitter) in [
        ("none", 1, Jitter::Full),
        ("exponential", 4, Jitter::None),
        ("exponential_jitter", 4, Jitter::Full),
    ] {
        let file = parse(&format!("[workload.retry]\npolicy = \"{policy}\"\n")).unwrap();
        let retry = file.plan(1, None).unwrap().workload.retry.unwrap();
        assert_eq!(retry.max_attempts, attempts, "{policy}");
        if attempts > 1 {
            assert_eq!(retry.jitter, jitter, "{policy}");
        }
        retry.validate().unwrap();
    }
}

#[test]
fn a_database_section_draws_and_variants_override_it() {
    let file = parse(
        "[database]\nmax_connections = 16\nlatency_ms = [1, 5]\npool_create_ms = [100, 200]\n",
    )
    .unwrap();
    let plan = file.plan(3, None).unwrap();
    let db = plan.database.clone().expect("a database");
    assert_eq!(db.max_connections, 16);
    assert!((100..=200).contains(&db.pool_create_ms));
    assert!(
        db.warm_up && db.breaker && !plan.injection.no_read_through_single_flight,
        "the product's defaults"
    );
    assert!(plan
        .draws
        .iter()
        .any(|d| d.field == "database.pool_create_ms"));
}

#[test]
fn bad_database_fields_name_the_line() {
    rejects(
        "[topology]\nnodes = 3\n\n[database]\nmax_connections = 0\n",
        5,
        "database.max_connections",
        "within",
    );
    rejects(
        "[database]\nlatency_ms = [9, 1]\n",
        2,
        "database.latency_ms",
        "",
    );
}

const REGRESSION: &str = r#"
[regression]
date = "2024-12-03"
title = "t"
postmortem = "p"

[config]
election_timeout_ms = 1500

[[variant]]
name = "before-fix"
seeds = [7, 9]
config = { unsafe_leader_reads = true }
expect = { violation = ["linearizability"] }

[[variant]]
name = "after-fix"
seeds = "1..=4"
config = { lease_ms = 900 }
"#;

#[test]
fn regression_variants_override_config_and_expectations() {
    let file = parse(REGRESSION).unwrap();
    assert!(file.is_regression());
    assert_eq!(file.variants[0].seeds, vec![7, 9]);
    assert_eq!(file.variants[1].seeds, vec![1, 2, 3, 4]);
    let before = file.plan(7, Some("before-fix")).unwrap();
    assert!(before.injection.unsafe_leader_reads);
    assert_eq!(before.config.election_timeout_ms, Some(1500), "inherited");
    assert_eq!(before.expect.violation, vec![Checker::Linearizability]);
    let after = file.plan(1, Some("after-fix")).unwrap();
    assert!(!after.injection.unsafe_leader_reads);
    assert_eq!(after.config.lease_ms, Some(900));
    assert!(after.expect.violation.is_empty());
    assert!(file.plan(1, None).unwrap_err().contains("pick a variant"));
    assert!(file
        .plan(1, Some("nope"))
        .unwrap_err()
        .contains("no variant"));
}

#[test]
fn regression_errors_point_at_the_variant() {
    let bad_seeds = REGRESSION.replace("seeds = \"1..=4\"", "seeds = \"4..1\"");
    rejects(&bad_seeds, 18, "variant[1].seeds", "empty");
    let bad_node = REGRESSION.replace(
        "config = { lease_ms = 900 }",
        "config = { lease_ms = 900 }\nfaults = [{ at_ms = 1, kind = \"kill\", node = 0 }]",
    );
    rejects(&bad_node, 20, "variant[1].faults[0].node", "out of range");
    let duplicate = REGRESSION.replace("name = \"after-fix\"", "name = \"before-fix\"");
    rejects(&duplicate, 17, "variant[1].name", "duplicate");
    rejects(
        "[[variant]]\nname = \"x\"\nseeds = [1]\n",
        1,
        "variant",
        "[regression]",
    );
}

#[test]
fn seed_ranges() {
    assert_eq!(parse_seed_range("3..6").unwrap(), vec![3, 4, 5]);
    assert_eq!(parse_seed_range("3..=5").unwrap(), vec![3, 4, 5]);
    assert_eq!(parse_seed_range("42").unwrap(), vec![42]);
    assert!(parse_seed_range("6..3").is_err());
    assert!(parse_seed_range("a..b").is_err());
    assert!(parse_seed_range("0..1000000000").is_err(), "bounded");
}

#[test]
fn a_repeated_fault_draws_each_step_and_each_node_gets_its_turn() {
    let file = parse(
        "[[faults]]\nat_ms = [1000, 2999]\nrepeat = 2\nkind = \"isolate\"\nnode = \"leader\"\n\
         duration_ms = 1500\n\n[[faults]]\nat_ms = [100, 200]\nkind = \"kill\"\nnode = \"each\"\n\
         duration_ms = [200, 300]\n",
    )
    .unwrap();
    for seed in 0..20 {
        let plan = file.plan(seed, None).unwrap();
        let repeated = &plan.faults[0].steps;
        assert_eq!(repeated.len(), 2);
        for step in repeated {
            assert!((1000..=2999).contains(&step.at_ms));
            assert_eq!(step.duration_ms, Some(1500));
            assert_eq!(step.actions[0].node, Some(NodeRef::Leader));
        }
        let in_turn = &plan.faults[1].steps;
        let nodes: Vec<_> = in_turn.iter().map(|s| s.actions[0].node).collect();
        assert_eq!(
            nodes,
            (0..3).map(|i| Some(NodeRef::Index(i))).collect::<Vec<_>>()
        );
        assert!(in_turn
            .iter()
            .all(|s| (200..=300).contains(&s.duration_ms.unwrap())));
        let drawn: Vec<&str> = plan.draws.iter().map(|d| d.field.as_str()).collect();
        assert!(drawn.contains(&"faults[0].at_ms"), "{drawn:?}");
        assert!(drawn.contains(&"faults[0].repeat[1].at_ms"), "{drawn:?}");
        assert!(
            drawn.contains(&"faults[1].repeat[2].duration_ms"),
            "{drawn:?}"
        );
    }
    // Steps draw independently: some seed gives the two isolations different times.
    assert!((0..20).any(|seed| {
        let steps = &file.plan(seed, None).unwrap().faults[0].steps;
        steps[0].at_ms != steps[1].at_ms
    }));
}

#[test]
fn repetition_is_checked() {
    rejects(
        "[[faults]]\nat_ms = 1\nrepeat = 0\nkind = \"kill\"\nnode = 1\n",
        3,
        "faults[0].repeat",
        "1..=1000",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nrepeat = 2\nkind = \"kill\"\nnode = \"each\"\n",
        3,
        "faults[0].repeat",
        "once per node",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"restart\"\nnode = 1\nduration_ms = 5\n",
        5,
        "faults[0].duration_ms",
        "not undone",
    );
}

#[test]
fn a_fault_with_actions_applies_them_together_and_all_draws_per_node() {
    let file = parse(
        "[[faults]]\nat_ms = 10\nkind = \"isolate\"\nnode = \"leader\"\nduration_ms = 3000\n\
         with = [\n  { kind = \"clock\", node = \"leader\", rate = 0.5 },\n  \
         { kind = \"clock\", node = \"followers\", rate = 2.0 },\n]\n\n[[faults]]\nat_ms = 0\n\
         kind = \"clock\"\nnode = \"all\"\nrate = [1.0, 1.04]\njump_ms = 5\n",
    )
    .unwrap();
    let plan = file.plan(4, None).unwrap();
    let actions = &plan.faults[0].steps[0].actions;
    let kinds: Vec<&str> = actions.iter().map(|a| a.kind.name).collect();
    assert_eq!(kinds, ["isolate", "clock", "clock"]);
    assert_eq!(actions[2].node, Some(NodeRef::Followers));
    assert_eq!(actions[2].rate, Some(PerNode::One(2.0)));
    let all = &plan.faults[1].steps[0].actions[0];
    assert_eq!(
        all.jump_ms,
        Some(PerNode::One(5)),
        "a fixed value is shared"
    );
    let Some(PerNode::Each(rates)) = &all.rate else {
        panic!(
            "a range on every node draws one rate per node: {:?}",
            all.rate
        )
    };
    assert_eq!(rates.len(), 3);
    assert!(rates.iter().all(|r| (1.0..=1.04).contains(r)));
    let drawn: Vec<&str> = plan.draws.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        drawn,
        [
            "faults[1].rate[node1]",
            "faults[1].rate[node2]",
            "faults[1].rate[node3]"
        ]
    );
    // Each node's own draw: across seeds the three rates are not always equal.
    assert!((0..10).any(|seed| {
        let plan = file.plan(seed, None).unwrap();
        let rate = plan.faults[1].steps[0].actions[0].rate.clone().unwrap();
        rate.of(0) != rate.of(1) || rate.of(1) != rate.of(2)
    }));
}

#[test]
fn actions_with_a_fault_take_its_timing_and_targets_are_checked() {
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"isolate\"\nnode = 1\n\
         with = [{ kind = \"clock\", node = 1, rate = 0.5, at_ms = 3 }]\n",
        5,
        "faults[0].with[0].at_ms",
        "timing",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"isolate\"\nnode = 1\n\
         with = [{ kind = \"clock\", node = \"each\", rate = 0.5 }]\n",
        5,
        "faults[0].with[0].node",
        "\"all\"",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"isolate\"\nnode = 1\nwith = [{ kind = \"meteor\" }]\n",
        5,
        "faults[0].with[0].kind",
        "unknown fault kind",
    );
    rejects(
        "[[faults]]\nat_ms = 1\nkind = \"one_way\"\nfrom = \"all\"\nto = 2\n",
        4,
        "faults[0].from",
        "expected a node number",
    );
}

#[test]
fn the_product_validates_every_node_configuration() {
    // Cross-field: the election timeout must be at least twice the heartbeat.
    let file = parse("[config]\nheartbeat_ms = 100\nelection_timeout_ms = 150\n").unwrap();
    let error = file.plan(1, None).unwrap_err();
    assert!(
        error.starts_with("test.toml:3: field `config.election_timeout_ms`"),
        "{error}"
    );
    assert!(
        error.contains("HYPERION_RAFT_ELECTION_TIMEOUT_MS"),
        "{error}"
    );
    // The product's bound (64 MiB), not one of the simulator's own.
    let file = parse("[config]\nmax_value_size_kb = 100000\n").unwrap();
    let error = file.plan(1, None).unwrap_err();
    assert!(
        error.starts_with("test.toml:2: field `config.max_value_size_kb`"),
        "{error}"
    );
    assert!(error.contains("max_value_size_kb must be 1-"), "{error}");
    // A variant's override is named as the variant's.
    let unsafe_lease = REGRESSION.replace("lease_ms = 900", "lease_ms = 1480");
    let error = parse(&unsafe_lease)
        .unwrap()
        .plan(1, Some("after-fix"))
        .unwrap_err();
    assert!(
        error.starts_with("test.toml:19: field `variant[1].config.lease_ms`"),
        "{error}"
    );
    assert!(error.contains("HYPERION_RAFT_LEASE_MS"), "{error}");
    // The database client's settings too.
    let file = parse("[database]\npool_size = 5000\n").unwrap();
    let error = file.plan(1, None).unwrap_err();
    assert!(error.contains("field `database.pool_size`"), "{error}");
    assert!(error.contains("HYPERION_DB_POOL_SIZE"), "{error}");
}

#[test]
fn timings_left_out_follow_the_product_defaults() {
    let plan = parse("[config]\nheartbeat_ms = 100\n")
        .unwrap()
        .plan(1, None)
        .unwrap();
    let config = plan.node_config(0).unwrap();
    assert_eq!(
        config.raft.election_timeout_ms,
        hyperion_raft::default_election_timeout_ms(100)
    );
    assert_eq!(
        config.raft.lease_duration_ms,
        hyperion_raft::default_lease_ms(config.raft.election_timeout_ms)
    );
    assert_eq!(plan.election_timeout_ms, config.raft.election_timeout_ms);
    let default = parse("").unwrap().plan(1, None).unwrap();
    assert_eq!(
        default.election_timeout_ms,
        hyperion_raft::DEFAULT_ELECTION_TIMEOUT_MS
    );
}

#[test]
fn every_switch_maps_onto_the_products_fault_injection() {
    let file = parse(
        "[config]\nunsafe_leader_reads = true\nretain_read_values = true\n\
         disable_vote_stickiness = true\nskip_lease_validation = true\n\
         forget_term_and_vote = true\n\n[database]\nsingle_flight = false\n\
         join_stale_loads = true\n",
    )
    .unwrap();
    let plan = file.plan(1, None).unwrap();
    assert_eq!(
        plan.injection.enabled(),
        [
            "disable_vote_stickiness",
            "skip_lease_validation",
            "forget_term_and_vote",
            "unsafe_leader_reads",
            "retain_read_values",
            "no_read_through_single_flight",
            "join_stale_loads",
        ]
    );
    let config = plan.node_config(0).unwrap();
    assert_eq!(config.faults, plan.injection, "every node runs with it");
    let db = crate::spec::node::db_client_config(&config, plan.database.as_ref().unwrap());
    assert!(!db.coalesce_loads);
    assert_eq!(db.join_rule, hyperion::single_flight::JoinRule::AnyFlight);
    assert!(parse("")
        .unwrap()
        .plan(1, None)
        .unwrap()
        .injection
        .is_inert());
}

#[test]
fn switches_are_named_and_an_unknown_one_is_refused() {
    let every = hyperion::faults::FaultInjection::SWITCHES
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let file = parse(&format!("[config]\nswitches = [{every}]\n")).unwrap();
    assert_eq!(
        file.plan(1, None).unwrap().injection.enabled(),
        hyperion::faults::FaultInjection::SWITCHES
    );
    let error = parse("[config]\nswitches = [\"stale_lease_clock\", \"no_such\"]\n").unwrap_err();
    let text = error.to_string();
    assert!(text.contains("config.switches"), "{text}");
    assert!(
        text.contains("unknown fault-injection switch `no_such`"),
        "{text}"
    );
    assert!(
        text.contains("stale_lease_clock"),
        "lists the known ones: {text}"
    );
}
