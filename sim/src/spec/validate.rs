//! Validation of a parsed file: every check that needs no seed, each error naming the file, the
//! line and the field (`scenarios/x.toml:14: field `faults[1].node`: node 4 is out of range`).
//!
//! The simulator checks here only what is its own: the topology, the workload, the fault
//! timeline (against the fault table, [`crate::faults::KINDS`]), the simulated database and
//! the expectations. A node's configuration is the product's to judge: each seed's drawn
//! overrides are validated by `hyperion::config::Config::validate` when the plan is drawn
//! (`super::node`), so no bound of the product is repeated here.

use std::ops::Range;

use hyperion::faults::FaultInjection;
use toml::Spanned;

use super::format::{
    ConfigSpec, DatabaseSpec, ExpectSpec, FaultFields, FaultSpec, FileSpec, NodeSpec, PairSpec,
    Param, WithSpec, WorkloadFileSpec,
};
use super::plan::Checker;
use super::{SpecError, VariantInfo, CLIENTS_MAX, DURATION_MS_MAX, NODES_MAX};
use crate::faults::{self, Field, NodeRef};

/// Highest rate of an `overload` fault (bounds what one simulated second costs).
pub const OVERLOAD_RATE_MAX: u64 = 200_000;

/// Most times one fault may repeat (bounds the plan and the timeline).
pub const REPEAT_MAX: u64 = 1_000;

/// 1-based line of byte offset `offset`.
pub fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

/// The key written on the line of `offset` (`key = value` or `[table]`), for syntax errors.
pub fn key_at(source: &str, offset: usize) -> String {
    let offset = offset.min(source.len());
    let start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = source[offset..]
        .find('\n')
        .map_or(source.len(), |i| offset + i);
    let line = source[start..end].trim();
    if let Some((key, _)) = line.split_once('=') {
        return key.trim().to_string();
    }
    line.trim_matches(|c| c == '[' || c == ']')
        .trim()
        .to_string()
}

/// Which node targets a field accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accepts {
    /// One node: a number, `leader` or `follower` (`from`, `to`).
    One,
    /// Also several at once: `followers`, `all` (`node` of a `with` action).
    Many,
    /// Also every node in turn: `each` (`node` of a fault).
    InTurn,
}

/// Checks a file; the errors name where.
pub struct Validator<'a> {
    pub path: &'a str,
    pub source: &'a str,
}

impl Validator<'_> {
    pub fn error(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> SpecError {
        SpecError {
            file: self.path.to_string(),
            line: line_of(self.source, span.start),
            field: field.into(),
            message: message.into(),
        }
    }

    fn within(
        &self,
        param: &Option<Param<u64>>,
        field: &str,
        low: u64,
        high: u64,
    ) -> Result<(), SpecError> {
        if let Some(p) = param {
            if p.min < low || p.max > high {
                return Err(self.error(&p.span, field, format!("must be within {low}..={high}")));
            }
        }
        Ok(())
    }

    fn node(
        &self,
        value: &Spanned<toml::Value>,
        field: &str,
        nodes: u64,
        accepts: Accepts,
    ) -> Result<(), SpecError> {
        let mut names = vec!["\"leader\"", "\"follower\""];
        if accepts != Accepts::One {
            names.extend(["\"followers\"", "\"all\""]);
        }
        if accepts == Accepts::InTurn {
            names.push("\"each\"");
        }
        let expected = || {
            let (last, rest) = names.split_last().expect("names are listed above");
            format!(
                "expected a node number (1..={nodes}), {} or {last}, got {}",
                rest.join(", "),
                value.get_ref()
            )
        };
        match NodeSpec::read(value.get_ref()) {
            Some(NodeSpec::Ref(NodeRef::Index(i))) if i as u64 >= nodes => Err(self.error(
                &value.span(),
                field,
                format!(
                    "node {} is out of range: the topology has nodes 1..={nodes}",
                    i + 1
                ),
            )),
            None if matches!(value.get_ref(), toml::Value::Integer(_)) => Err(self.error(
                &value.span(),
                field,
                format!(
                    "node {} is out of range: the topology has nodes 1..={nodes}",
                    value.get_ref()
                ),
            )),
            Some(NodeSpec::Ref(r)) if r.is_many() && accepts == Accepts::One => {
                Err(self.error(&value.span(), field, expected()))
            }
            Some(NodeSpec::Each) if accepts != Accepts::InTurn => {
                Err(self.error(&value.span(), field, expected()))
            }
            Some(_) => Ok(()),
            None => Err(self.error(&value.span(), field, expected())),
        }
    }

    pub fn checkers(
        &self,
        list: &Option<Spanned<Vec<String>>>,
        field: &str,
    ) -> Result<Option<Vec<Checker>>, SpecError> {
        let Some(list) = list else { return Ok(None) };
        let mut out = Vec::new();
        for name in list.get_ref() {
            let checker = Checker::parse(name).ok_or_else(|| {
                self.error(
                    &list.span(),
                    field,
                    format!(
                        "unknown checker `{name}` (known: {})",
                        Checker::ALL.map(Checker::name).join(", ")
                    ),
                )
            })?;
            out.push(checker);
        }
        Ok(Some(out))
    }

    fn seeds(&self, value: &Spanned<toml::Value>, field: &str) -> Result<Vec<u64>, SpecError> {
        let seeds = match value.get_ref() {
            toml::Value::String(text) => {
                crate::seeds::parse(text).map_err(|e| self.error(&value.span(), field, e))?
            }
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
                    other => Err(self.error(
                        &value.span(),
                        field,
                        format!("a seed is a non-negative integer, got {other}"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(self.error(
                    &value.span(),
                    field,
                    format!(
                        "expected a list of seeds or a range string like \"1..40\", got {other}"
                    ),
                ))
            }
        };
        if seeds.is_empty() {
            return Err(self.error(&value.span(), field, "no seeds"));
        }
        Ok(seeds)
    }

    /// `[config]`: only what the simulator reads itself; the product validates the rest.
    fn config(&self, config: &ConfigSpec, prefix: &str) -> Result<(), SpecError> {
        if let Some(sync) = &config.wal_sync {
            if !matches!(sync.get_ref().as_str(), "always" | "everysec") {
                return Err(self.error(
                    &sync.span(),
                    format!("{prefix}wal_sync"),
                    "must be \"always\" or \"everysec\"",
                ));
            }
        }
        if let Some(switches) = &config.switches {
            let mut probe = FaultInjection::default();
            for name in switches.get_ref() {
                if probe.switch_mut(name).is_none() {
                    return Err(self.error(
                        &switches.span(),
                        format!("{prefix}switches"),
                        format!(
                            "unknown fault-injection switch `{name}` (known: {})",
                            FaultInjection::SWITCHES.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `[node.N]`: N a node of every drawn topology; the switches of fault injection apply to
    /// every node, so they belong in `[config]`.
    fn node_table(
        &self,
        number: &str,
        own: &Spanned<ConfigSpec>,
        nodes: u64,
    ) -> Result<(), SpecError> {
        let field = format!("node.{number}");
        match number.parse::<u64>() {
            Ok(n) if (1..=nodes).contains(&n) => {}
            _ => {
                return Err(self.error(
                    &own.span(),
                    field,
                    format!("`{number}` is not a node: the topology has nodes 1..={nodes}"),
                ))
            }
        }
        let spec = own.get_ref();
        let switches = [
            spec.unsafe_leader_reads,
            spec.retain_read_values,
            spec.disable_vote_stickiness,
            spec.skip_lease_validation,
            spec.forget_term_and_vote,
        ];
        if switches.iter().any(Option::is_some) || spec.switches.is_some() {
            return Err(self.error(
                &own.span(),
                field,
                "fault-injection switches apply to every node: set them in [config]",
            ));
        }
        self.config(spec, &format!("{field}."))
    }

    fn faults(&self, faults: &[FaultSpec], prefix: &str, nodes: u64) -> Result<(), SpecError> {
        for (i, fault) in faults.iter().enumerate() {
            self.fault(fault, &format!("{prefix}faults[{i}]"), nodes)?;
        }
        Ok(())
    }

    /// A `[[faults]]` entry: its action, its timing, and the actions it goes `with`.
    fn fault(&self, fault: &FaultSpec, at: &str, nodes: u64) -> Result<(), SpecError> {
        let kind = self.action(fault, at, nodes, Accepts::InTurn)?;
        if let Some(duration) = &fault.duration_ms {
            if kind.undone_by.is_none() {
                return Err(self.error(
                    &duration.span,
                    format!("{at}.duration_ms"),
                    format!(
                        "does not apply to a `{}` fault (it is not undone)",
                        kind.name
                    ),
                ));
            }
        }
        if let Some(repeat) = &fault.repeat {
            let count = *repeat.get_ref();
            if !(1..=REPEAT_MAX).contains(&count) {
                return Err(self.error(
                    &repeat.span(),
                    format!("{at}.repeat"),
                    format!("must be within 1..={REPEAT_MAX}"),
                ));
            }
            let each = fault
                .node
                .as_ref()
                .is_some_and(|n| NodeSpec::read(n.get_ref()) == Some(NodeSpec::Each));
            if each {
                return Err(self.error(
                    &repeat.span(),
                    format!("{at}.repeat"),
                    "does not combine with node = \"each\" (which repeats once per node)",
                ));
            }
        }
        for (j, with) in fault.with.iter().flatten().enumerate() {
            self.with(with, &format!("{at}.with[{j}]"), nodes)?;
        }
        Ok(())
    }

    /// An action of a `with` list: a kind and its fields, timed by the fault it goes with.
    fn with(&self, with: &Spanned<WithSpec>, at: &str, nodes: u64) -> Result<(), SpecError> {
        let action = with.get_ref();
        let timing = [
            ("at_ms", action.at_ms.as_ref().map(|p| p.span.clone())),
            (
                "duration_ms",
                action.duration_ms.as_ref().map(|p| p.span.clone()),
            ),
            ("repeat", action.repeat.as_ref().map(Spanned::span)),
            ("with", action.with.as_ref().map(|_| with.span())),
        ];
        if let Some((name, Some(span))) = timing.iter().find(|(_, span)| span.is_some()) {
            return Err(self.error(
                span,
                format!("{at}.{name}"),
                "an action `with` a fault takes its timing from the fault",
            ));
        }
        self.action(action, at, nodes, Accepts::Many).map(|_| ())
    }

    /// A fault's kind and the fields its row in the fault table needs or allows.
    fn action<At>(
        &self,
        fault: &FaultFields<At>,
        at: &str,
        nodes: u64,
        node_accepts: Accepts,
    ) -> Result<&'static faults::FaultKind, SpecError> {
        let name = fault.kind.get_ref().as_str();
        let kind = faults::kind(name).ok_or_else(|| {
            self.error(
                &fault.kind.span(),
                format!("{at}.kind"),
                format!(
                    "unknown fault kind `{name}` (known: {})",
                    faults::kind_names()
                ),
            )
        })?;
        for field in Field::ALL {
            match fault.span(field) {
                Some(span) if !kind.takes(field) => {
                    return Err(self.error(
                        &span,
                        format!("{at}.{}", field.name()),
                        format!("does not apply to a `{name}` fault"),
                    ))
                }
                None if kind.needs.contains(&field) => {
                    return Err(self.error(
                        &fault.kind.span(),
                        format!("{at}.{}", field.name()),
                        format!("a `{name}` fault needs `{}`", field.name()),
                    ))
                }
                _ => {}
            }
        }
        let one_of = kind.needs_one_of;
        if !one_of.is_empty() && one_of.iter().all(|f| fault.span(*f).is_none()) {
            return Err(self.error(
                &fault.kind.span(),
                format!("{at}.{}", one_of[0].name()),
                format!(
                    "a `{name}` fault needs {}",
                    one_of
                        .iter()
                        .map(|f| format!("`{}`", f.name()))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
        for (value, field, accepts) in [
            (&fault.node, "node", node_accepts),
            (&fault.from, "from", Accepts::One),
            (&fault.to, "to", Accepts::One),
        ] {
            if let Some(value) = value {
                self.node(value, &format!("{at}.{field}"), nodes, accepts)?;
            }
        }
        if let Some(groups) = &fault.groups {
            self.groups(groups, &format!("{at}.groups"), nodes)?;
        }
        if let Some(rate) = &fault.rate {
            if rate.min <= 0.0 || rate.max > 100.0 {
                return Err(self.error(
                    &rate.span,
                    format!("{at}.rate"),
                    "must be within (0, 100]",
                ));
            }
        }
        if let Some(loss) = &fault.packet_loss {
            if loss.min < 0.0 || loss.max > 1.0 {
                return Err(self.error(
                    &loss.span,
                    format!("{at}.packet_loss"),
                    "must be within [0, 1]",
                ));
            }
        }
        self.pair(&fault.latency_ms, &format!("{at}.latency_ms"), 60_000)?;
        self.within(
            &fault.requests_per_s,
            &format!("{at}.requests_per_s"),
            1,
            OVERLOAD_RATE_MAX,
        )?;
        self.within(
            &fault.serves_per_s,
            &format!("{at}.serves_per_s"),
            1,
            OVERLOAD_RATE_MAX,
        )?;
        Ok(kind)
    }

    fn groups(
        &self,
        groups: &Spanned<Vec<Vec<u64>>>,
        field: &str,
        nodes: u64,
    ) -> Result<(), SpecError> {
        let mut seen = Vec::new();
        for n in groups.get_ref().iter().flatten() {
            if !(1..=nodes).contains(n) {
                return Err(self.error(
                    &groups.span(),
                    field,
                    format!("node {n} is out of range: the topology has nodes 1..={nodes}"),
                ));
            }
            if seen.contains(n) {
                return Err(self.error(
                    &groups.span(),
                    field,
                    format!("node {n} is in two groups"),
                ));
            }
            seen.push(*n);
        }
        if groups.get_ref().iter().filter(|g| !g.is_empty()).count() < 2 {
            return Err(self.error(
                &groups.span(),
                field,
                "a partition needs at least two non-empty groups",
            ));
        }
        Ok(())
    }

    /// `[database]`: the simulated database's own settings (the nodes' client settings,
    /// `pool_size` and `query_timeout_ms`, are validated by the product with the node's
    /// configuration).
    fn database(&self, db: &DatabaseSpec, prefix: &str) -> Result<(), SpecError> {
        let field = |name: &str| format!("{prefix}database.{name}");
        self.within(&db.max_connections, &field("max_connections"), 1, 10_000)?;
        self.within(
            &db.connection_wait_ms,
            &field("connection_wait_ms"),
            0,
            60_000,
        )?;
        self.within(&db.pool_create_ms, &field("pool_create_ms"), 0, 60_000)?;
        // `Config::validate` does not bound the negative cache (only its variable's parser does).
        self.within(
            &db.negative_cache_ms,
            &field("negative_cache_ms"),
            0,
            3_600_000,
        )?;
        self.pair(&db.latency_ms, &field("latency_ms"), 60_000)
    }

    fn expect(&self, expect: &ExpectSpec, prefix: &str) -> Result<(), SpecError> {
        let pass = self.checkers(&expect.pass, &format!("{prefix}expect.pass"))?;
        let violation = self.checkers(&expect.violation, &format!("{prefix}expect.violation"))?;
        if let (Some(pass), Some(violation), Some(list)) = (&pass, &violation, &expect.violation) {
            if let Some(both) = violation.iter().find(|c| pass.contains(c)) {
                return Err(self.error(
                    &list.span(),
                    format!("{prefix}expect.violation"),
                    format!(
                        "checker `{}` cannot be in both `pass` and `violation`",
                        both.name()
                    ),
                ));
            }
        }
        if let Some(within) = &expect.violation_in {
            if !matches!(within.get_ref().as_str(), "every_seed" | "any_seed") {
                return Err(self.error(
                    &within.span(),
                    format!("{prefix}expect.violation_in"),
                    "must be \"every_seed\" or \"any_seed\"",
                ));
            }
            if violation.as_ref().is_none_or(Vec::is_empty) {
                return Err(self.error(
                    &within.span(),
                    format!("{prefix}expect.violation_in"),
                    "applies only with a non-empty `violation` list",
                ));
            }
        }
        let memory_listed = pass
            .iter()
            .chain(violation.iter())
            .flatten()
            .any(|c| *c == Checker::Memory);
        if memory_listed && expect.memory_max_bytes.is_none() {
            let span = expect
                .violation
                .as_ref()
                .or(expect.pass.as_ref())
                .map(Spanned::span)
                .unwrap_or(0..0);
            return Err(self.error(
                &span,
                format!("{prefix}expect.memory_max_bytes"),
                "the `memory` checker needs `memory_max_bytes`",
            ));
        }
        if let Some(list) = &expect.sometimes {
            use hyperion::runtime::buggify::is_coverage_name;
            use hyperion::runtime::coverage::{CONDITIONS, POINTS};
            if let Some(unknown) = list.get_ref().iter().find(|name| !is_coverage_name(name)) {
                return Err(self.error(
                    &list.span(),
                    format!("{prefix}expect.sometimes"),
                    format!(
                        "unknown coverage point `{unknown}` (points: {}; a point may name a \
                         fault condition active at the time as point@condition, one of: {})",
                        POINTS
                            .iter()
                            .map(|(p, _)| *p)
                            .collect::<Vec<_>>()
                            .join(", "),
                        CONDITIONS.join(", ")
                    ),
                ));
            }
        }
        self.within(
            &expect.clock_skew_ms,
            &format!("{prefix}expect.clock_skew_ms"),
            0,
            3_600_000,
        )
    }

    fn pair(&self, pair: &Option<PairSpec>, field: &str, high: u64) -> Result<(), SpecError> {
        if let Some(pair) = pair {
            let (a, b) = pair.get();
            if a > b || b > high {
                return Err(self.error(
                    &pair.0.span(),
                    field,
                    format!("must be [min, max] with min <= max <= {high}"),
                ));
            }
        }
        Ok(())
    }

    fn workload(&self, w: &WorkloadFileSpec) -> Result<(), SpecError> {
        self.within(&w.duration_ms, "workload.duration_ms", 1, DURATION_MS_MAX)?;
        self.within(&w.keys, "workload.keys", 1, 1_000_000)?;
        for (param, name) in [
            (&w.write_percent, "write_percent"),
            (&w.delete_percent, "delete_percent"),
            (&w.cas_percent, "cas_percent"),
            (&w.stale_read_percent, "stale_read_percent"),
            (&w.ttl_percent, "ttl_percent"),
        ] {
            self.within(param, &format!("workload.{name}"), 0, 100)?;
        }
        self.pair(&w.ttl_ms, "workload.ttl_ms", 86_400_000)?;
        self.pair(&w.think_ms, "workload.think_ms", 60_000)?;
        self.pair(&w.value_bytes, "workload.value_bytes", 512 * 1024)?;
        self.within(&w.deadline_ms, "workload.deadline_ms", 1, 60_000)?;
        // The near cache syncs every fifth of its bound: 50 ms keeps a sync every 10 ms at most.
        self.within(
            &w.near_cache_bound_ms,
            "workload.near_cache_bound_ms",
            50,
            60_000,
        )?;
        if let Some(retry) = &w.retry {
            if !matches!(
                retry.policy.get_ref().as_str(),
                "none" | "fixed" | "exponential" | "exponential_jitter"
            ) {
                return Err(self.error(
                    &retry.policy.span(),
                    "workload.retry.policy",
                    "must be one of none, fixed, exponential, exponential_jitter",
                ));
            }
            self.within(
                &retry.max_attempts,
                "workload.retry.max_attempts",
                1,
                hyperion::resilience::RETRY_ATTEMPTS_MAX as u64,
            )?;
            self.within(
                &retry.base_delay_ms,
                "workload.retry.base_delay_ms",
                0,
                60_000,
            )?;
            self.within(
                &retry.max_delay_ms,
                "workload.retry.max_delay_ms",
                0,
                600_000,
            )?;
            self.within(
                &retry.max_total_ms,
                "workload.retry.max_total_ms",
                0,
                600_000,
            )?;
            if let (Some(base), Some(max)) = (&retry.base_delay_ms, &retry.max_delay_ms) {
                if base.max > max.min {
                    return Err(self.error(
                        &max.span,
                        "workload.retry.max_delay_ms",
                        "must not be below base_delay_ms",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Validates a whole file; returns its variants with their committed seeds.
pub fn validate(v: &Validator<'_>, spec: &FileSpec) -> Result<Vec<VariantInfo>, SpecError> {
    v.within(&spec.topology.nodes, "topology.nodes", 1, NODES_MAX)?;
    v.within(
        &spec.topology.cluster_clients,
        "topology.cluster_clients",
        0,
        CLIENTS_MAX,
    )?;
    v.within(
        &spec.topology.pinned_clients,
        "topology.pinned_clients",
        0,
        CLIENTS_MAX,
    )?;
    v.within(
        &spec.topology.near_cache_clients,
        "topology.near_cache_clients",
        0,
        CLIENTS_MAX,
    )?;
    // Node numbers must exist for every drawn topology: check against the smallest.
    let nodes_min = spec.topology.nodes.as_ref().map_or(3, |p| p.min);
    v.config(&spec.config, "config.")?;
    for (number, own) in &spec.node {
        v.node_table(number, own, nodes_min)?;
    }
    v.workload(&spec.workload)?;
    v.faults(&spec.faults, "", nodes_min)?;
    v.expect(&spec.expect, "")?;
    if let Some(db) = &spec.database {
        v.database(db, "")?;
    }
    if spec.regression.is_some() == spec.variant.is_empty() {
        return Err(v.error(
            &(0..0),
            "variant",
            "a regression file has a [regression] table and at least one [[variant]]; a \
             scenario file has neither",
        ));
    }
    let mut variants = Vec::new();
    for (i, variant) in spec.variant.iter().enumerate() {
        let at = format!("variant[{i}].");
        if variants
            .iter()
            .any(|known: &VariantInfo| known.name == *variant.name.get_ref())
        {
            return Err(v.error(
                &variant.name.span(),
                format!("{at}name"),
                format!("duplicate variant name `{}`", variant.name.get_ref()),
            ));
        }
        v.config(&variant.config, &format!("{at}config."))?;
        if let Some(faults) = &variant.faults {
            v.faults(faults, &at, nodes_min)?;
        }
        if let Some(expect) = &variant.expect {
            v.expect(expect, &at)?;
        }
        if let Some(db) = &variant.database {
            v.database(db, &at)?;
        }
        variants.push(VariantInfo {
            name: variant.name.get_ref().clone(),
            description: variant.description.clone(),
            seeds: v.seeds(&variant.seeds, &format!("{at}seeds"))?,
        });
    }
    Ok(variants)
}
