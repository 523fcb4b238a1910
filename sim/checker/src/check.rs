//! The per-key checker: the version-based fast path, then the bounded search where it is needed.
//! The rules are stated in the crate documentation; each `check_*` method implements one group,
//! `order.rs` the rules of the version order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, DefaultHasher};

use crate::config::CheckerConfig;
use crate::history::{History, Outcome};
use crate::key_op::{Event, KeyOp, VersionSource, NEVER};
use crate::matching::match_versions_to_writes;
use crate::order::{self, Positioned, AT_DELETE, AT_OBSERVE, AT_WRITE};
use crate::report::{
    render_bytes, render_operation, CheckReport, Verdict, Violation, ViolationKind,
};
use crate::search::{self, SearchOutcome};

/// At most this many violations are reported per key: one root cause (a lost write) can make
/// every later read wrong, and the first few say everything.
pub const VIOLATIONS_PER_KEY_MAX: usize = 8;

/// At most this many operations are shown in a violation's excerpt.
pub const EXCERPT_OPS_MAX: usize = 16;

/// Checks a whole history, key by key (keys in byte order, so the report is deterministic).
pub fn check(history: &History, config: &CheckerConfig) -> CheckReport {
    // One pass over the history, in order, normalizing each operation into its key's list (the
    // hasher has fixed keys: nothing depends on the process).
    let mut key_index: HashMap<&[u8], usize, BuildHasherDefault<DefaultHasher>> =
        HashMap::default();
    let mut by_key: Vec<(&[u8], Vec<KeyOp<'_>>)> = Vec::new();
    for operation in history.ops() {
        if *operation.effective_outcome() != Outcome::Fail {
            let key = operation.op.key();
            let index = *key_index.entry(key).or_insert_with(|| {
                by_key.push((key, Vec::new()));
                by_key.len() - 1
            });
            by_key[index].1.push(KeyOp::new(operation));
        }
    }
    by_key.sort_unstable_by_key(|(key, _)| *key);
    let keys_checked = by_key.len();
    let mut violations = Vec::new();
    let mut undecided_keys = Vec::new();
    let mut ops_checked = 0;
    for (key, ops) in by_key {
        ops_checked += ops.len();
        let key_config = CheckerConfig {
            allow_eviction: config.allow_eviction || config.evictable_keys.contains(key),
            clock_skew_ms: config.clock_skew_ms,
            search_steps_max: config.search_steps_max,
            evictable_keys: BTreeSet::new(),
            bounded_staleness: None,
        };
        let mut key_check = KeyCheck::new(key, ops, &key_config);
        key_check.run();
        if key_check.undecided {
            undecided_keys.push(render_bytes(key));
        }
        violations.extend(key_check.violations);
    }
    if let Some(bounded) = &config.bounded_staleness {
        violations.extend(crate::staleness::check_staleness(history, bounded));
    }
    let verdict = if !violations.is_empty() {
        Verdict::Violation(violations)
    } else if let Some(first) = undecided_keys.first() {
        Verdict::Unknown {
            reason: format!(
                "search budget of {} steps exhausted on {} key(s), first {first}",
                config.search_steps_max,
                undecided_keys.len()
            ),
        }
    } else {
        Verdict::Ok
    };
    CheckReport {
        verdict,
        keys_checked,
        ops_checked,
    }
}

/// An observed version that no acknowledged write produced.
struct Unexplained<'h> {
    version: u64,
    /// The value it was read with, if a Hit observed it.
    value: Option<&'h [u8]>,
    /// The earliest return among its observers: its write must have been invoked by then.
    deadline_ms: u64,
    observers: Vec<usize>,
}

struct KeyCheck<'h, 'c> {
    key: &'h [u8],
    ops: Vec<KeyOp<'h>>,
    config: &'c CheckerConfig,
    /// Every version known to have been produced, by an acknowledged write or (matched by value)
    /// an unknown one.
    versions: BTreeMap<u64, VersionSource<'h>>,
    violations: Vec<Violation>,
    undecided: bool,
}

impl<'h, 'c> KeyCheck<'h, 'c> {
    fn new(key: &'h [u8], ops: Vec<KeyOp<'h>>, config: &'c CheckerConfig) -> Self {
        KeyCheck {
            key,
            ops,
            config,
            versions: BTreeMap::new(),
            violations: Vec::new(),
            undecided: false,
        }
    }

    fn run(&mut self) {
        self.check_malformed();
        self.collect_acknowledged_versions();
        self.match_unknown_versions();
        self.check_cas();
        self.check_ttl();
        self.check_future_reads();
        let positioned = order::positioned(&self.ops, &self.versions);
        order::order_violations(&positioned, |earlier, later| {
            self.report_order_violation(earlier, later);
        });
        if !self.config.allow_eviction {
            let skew = self.config.clock_skew_ms;
            for (index, floor) in
                order::unexplained_absences(&self.ops, &self.versions, &positioned, skew)
            {
                let (version, _) = floor.position;
                self.report(
                    ViolationKind::LostWrite,
                    &[index, floor.op_index],
                    format!(
                        "the key was absent although version {version} was in place before the operation began and no delete, expiry or (disabled) eviction explains it"
                    ),
                );
            }
        }
        if self.violations.is_empty() && self.needs_search() {
            match search::search(&self.ops, &self.versions, self.config) {
                SearchOutcome::Linearizable => {}
                SearchOutcome::Exhausted => self.undecided = true,
                SearchOutcome::NotLinearizable { stuck_op_index } => self.report(
                    ViolationKind::NotLinearizable,
                    &[stuck_op_index],
                    format!(
                        "no linearization of the key's history exists; the search never got past op#{}",
                        self.ops[stuck_op_index].id().0
                    ),
                ),
            }
        }
    }

    /// Rule M: responses that cannot occur whatever the order.
    fn check_malformed(&mut self) {
        for index in 0..self.ops.len() {
            let message = match self.ops[index].event {
                Event::Hit { version: 0, .. } => "a hit with version 0",
                Event::Hit {
                    is_stale: true,
                    allow_stale: false,
                    ..
                } => "is_stale on a read that did not allow it",
                Event::Written { version: 0, .. } => "a write acknowledged with version 0",
                Event::Written {
                    version,
                    expected_version,
                    ..
                } if expected_version != 0 && version <= expected_version => {
                    "a compare-and-set produced a version not above the expected one"
                }
                Event::Deleted {
                    existed: true,
                    version: 0,
                    ..
                } => "a delete removed an entry of version 0",
                Event::Deleted {
                    existed: false,
                    version,
                    ..
                } if version != 0 => "a delete that removed nothing reports a version",
                _ => continue,
            };
            self.report(ViolationKind::MalformedResult, &[index], message.to_owned());
        }
    }

    /// Rule V-1: acknowledged writes have distinct versions.
    fn collect_acknowledged_versions(&mut self) {
        for index in 0..self.ops.len() {
            let op = self.ops[index];
            if let Event::Written {
                value,
                version,
                ttl_ms,
                ..
            } = op.event
            {
                if version == 0 {
                    continue;
                }
                if let Some(earlier) = self.versions.get(&version) {
                    let earlier_index = earlier.op_index;
                    self.report(
                        ViolationKind::DuplicateVersion,
                        &[index, earlier_index],
                        format!("two successful writes both report version {version}"),
                    );
                    continue;
                }
                self.versions.insert(
                    version,
                    VersionSource {
                        op_index: index,
                        value,
                        invoke_ms: op.invoke_ms,
                        return_ms: op.return_ms,
                        ttl_ms,
                        acknowledged: true,
                        value_observed: true,
                    },
                );
            }
        }
    }

    /// Rules V-2 and U: every observed version was produced by a write; one not produced by an
    /// acknowledged write must be matched to a distinct unknown-outcome Set of the same value
    /// invoked before the first observation of it returned.
    fn match_unknown_versions(&mut self) {
        let mut unexplained: BTreeMap<u64, Unexplained<'h>> = BTreeMap::new();
        for index in 0..self.ops.len() {
            let op = self.ops[index];
            let Some((version, value)) = op.observed() else {
                continue;
            };
            if let Some(source) = self.versions.get(&version) {
                if value.is_some_and(|value| value != source.value) {
                    let source_index = source.op_index;
                    self.report(
                        ViolationKind::PhantomValue,
                        &[index, source_index],
                        format!("read version {version} with a value its write did not write"),
                    );
                }
                continue;
            }
            let entry = unexplained.entry(version).or_insert(Unexplained {
                version,
                value,
                deadline_ms: NEVER,
                observers: Vec::new(),
            });
            if let (Some(seen), Some(value)) = (entry.value, value) {
                if seen != value {
                    let first = entry.observers[0];
                    self.report(
                        ViolationKind::PhantomValue,
                        &[index, first],
                        format!("version {version} observed with two different values"),
                    );
                    continue;
                }
            }
            entry.value = entry.value.or(value);
            entry.deadline_ms = entry.deadline_ms.min(op.return_ms);
            entry.observers.push(index);
        }
        let mut by_deadline: Vec<Unexplained<'h>> = unexplained.into_values().collect();
        by_deadline.sort_by_key(|unexplained| (unexplained.deadline_ms, unexplained.version));
        // Unknown Sets that may have produced each version, earliest invoked first.
        let mut unknown_sets: Vec<usize> = (0..self.ops.len())
            .filter(|&index| matches!(self.ops[index].event, Event::SetUnknown { .. }))
            .collect();
        unknown_sets.sort_by_key(|&index| (self.ops[index].invoke_ms, index));
        let eligible: Vec<Vec<usize>> = by_deadline
            .iter()
            .map(|unexplained| {
                let invoked_in_time = unknown_sets
                    .partition_point(|&index| self.ops[index].invoke_ms <= unexplained.deadline_ms);
                unknown_sets[..invoked_in_time]
                    .iter()
                    .copied()
                    .filter(|&index| match self.ops[index].event {
                        Event::SetUnknown { value: written, .. } => {
                            unexplained.value.is_none_or(|value| value == written)
                        }
                        _ => false,
                    })
                    .collect()
            })
            .collect();
        let matched = match_versions_to_writes(&eligible, self.ops.len());
        for (slot, unexplained) in by_deadline.into_iter().enumerate() {
            let Unexplained {
                version,
                value,
                observers,
                ..
            } = unexplained;
            let Some(index) = matched[slot] else {
                self.report(
                    ViolationKind::PhantomValue,
                    &observers,
                    format!(
                        "version {version} was observed but no write (acknowledged, or unknown with that value and invoked in time) produced it"
                    ),
                );
                continue;
            };
            // For TTL-2, the most permissive bound over all candidates: the shortest positive TTL
            // and the earliest invocation.
            let ttl_ms = eligible[slot]
                .iter()
                .filter_map(|&candidate| match self.ops[candidate].event {
                    Event::SetUnknown { ttl_ms, .. } if ttl_ms > 0 => Some(ttl_ms),
                    _ => None,
                })
                .min()
                .unwrap_or(0);
            let Event::SetUnknown { value: written, .. } = self.ops[index].event else {
                unreachable!("only unknown Sets are eligible")
            };
            self.versions.insert(
                version,
                VersionSource {
                    op_index: index,
                    value: written,
                    invoke_ms: self.ops[eligible[slot][0]].invoke_ms,
                    return_ms: NEVER,
                    ttl_ms,
                    acknowledged: false,
                    value_observed: value.is_some(),
                },
            );
        }
    }

    /// Rules C-1..C-4: compare-and-set.
    fn check_cas(&mut self) {
        let mut deletes_by_version: BTreeMap<u64, usize> = BTreeMap::new();
        // The first delete that removed each version.
        let mut first_delete: BTreeMap<u64, usize> = BTreeMap::new();
        for (index, op) in self.ops.iter().enumerate() {
            if let Event::Deleted {
                existed: true,
                version,
                ..
            } = op.event
            {
                first_delete.entry(version).or_insert(index);
            }
        }
        for index in 0..self.ops.len() {
            let op = self.ops[index];
            match op.event {
                Event::Written {
                    version,
                    expected_version,
                    ..
                } if expected_version != 0 && version > expected_version => {
                    if let Some((&between, source)) =
                        self.versions.range(expected_version + 1..version).next()
                    {
                        let between_index = source.op_index;
                        self.report(
                            ViolationKind::CasViolation,
                            &[index, between_index],
                            format!(
                                "compare-and-set on version {expected_version} succeeded as version {version}, but version {between} was written in between"
                            ),
                        );
                    } else if let Some(&delete_index) = first_delete.get(&expected_version) {
                        self.report(
                            ViolationKind::CasViolation,
                            &[index, delete_index],
                            format!("compare-and-set on version {expected_version} succeeded, but that version was deleted"),
                        );
                    }
                }
                Event::CasFailed {
                    current_version,
                    expected_version,
                } => {
                    if expected_version == 0 {
                        self.report(
                            ViolationKind::CasViolation,
                            &[index],
                            "an unconditional write failed its compare-and-set".to_owned(),
                        );
                    } else if current_version == expected_version {
                        self.report(
                            ViolationKind::CasViolation,
                            &[index],
                            format!("compare-and-set failed although the current version {current_version} was the expected one"),
                        );
                    }
                }
                Event::Deleted {
                    existed,
                    version,
                    expected_version,
                } => {
                    if expected_version != 0 && (!existed || version != expected_version) {
                        self.report(
                            ViolationKind::CasViolation,
                            &[index],
                            format!("a delete expecting version {expected_version} succeeded with existed={existed} version={version}"),
                        );
                    }
                    if existed && version != 0 {
                        if let Some(&first) = deletes_by_version.get(&version) {
                            self.report(
                                ViolationKind::DoubleDelete,
                                &[index, first],
                                format!("two deletes both removed version {version}"),
                            );
                        } else {
                            deletes_by_version.insert(version, index);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Rules TTL-1 and TTL-3.
    fn check_ttl(&mut self) {
        let skew = self.config.clock_skew_ms;
        for index in 0..self.ops.len() {
            let op = self.ops[index];
            let Some((version, _)) = op.observed() else {
                continue;
            };
            let stale = matches!(op.event, Event::Hit { is_stale: true, .. });
            let Some(source) = self.versions.get(&version).copied() else {
                continue;
            };
            if !stale && source.definitely_expired_at(op.invoke_ms, skew) {
                self.report(
                    ViolationKind::ExpiredServedFresh,
                    &[index, source.op_index],
                    format!(
                        "version {version} (ttl {} ms, written by {} ms) had expired by {} ms but was treated as live",
                        source.ttl_ms,
                        source.return_ms,
                        source.return_ms.saturating_add(source.ttl_ms).saturating_add(skew)
                    ),
                );
            } else if stale && !source.possibly_expired_by(op.return_ms, skew) {
                self.report(
                    ViolationKind::FreshServedStale,
                    &[index, source.op_index],
                    format!("version {version} (ttl {} ms) cannot have expired yet but was served stale", source.ttl_ms),
                );
            }
        }
    }

    /// Rule O-3 (for every observation, stale-allowed reads included): a version cannot be seen
    /// before its write was invoked.
    fn check_future_reads(&mut self) {
        for index in 0..self.ops.len() {
            let op = self.ops[index];
            let Some((version, _)) = op.observed() else {
                continue;
            };
            let Some(source) = self.versions.get(&version).copied() else {
                continue;
            };
            if op.return_ms < source.invoke_ms {
                self.report(
                    ViolationKind::FutureRead,
                    &[index, source.op_index],
                    format!("version {version} was observed before its write was invoked"),
                );
            }
        }
    }

    /// `earlier` sits lower in the version order than `later`, yet `later` returned before
    /// `earlier` was invoked. Names the rule from the two roles.
    fn report_order_violation(&mut self, earlier: Positioned, later: Positioned) {
        if self.violations.len() >= VIOLATIONS_PER_KEY_MAX {
            // Not reported anyway; and naming the rule may take a pass over the key.
            return;
        }
        let (low_version, low_role) = earlier.position;
        let (high_version, high_role) = later.position;
        let (kind, message) = match (low_role, high_role) {
            (AT_WRITE, AT_WRITE) => (
                ViolationKind::WriteOrderViolation,
                format!("the write of version {high_version} returned before the write of version {low_version} was invoked"),
            ),
            // Seeing one's own version before the write began is reported by check_future_reads.
            (AT_WRITE, _) if high_version == low_version => return,
            (AT_WRITE, _) => (
                ViolationKind::WriteOrderViolation,
                format!("version {high_version} was observed before the write of the smaller version {low_version} was invoked"),
            ),
            (_, AT_WRITE) => {
                let observed_later = self
                    .ops
                    .iter()
                    .any(|op| op.observed().is_some_and(|(version, _)| version >= high_version));
                if observed_later {
                    (
                        ViolationKind::StaleRead,
                        format!("observed version {low_version} after the write of version {high_version} had returned"),
                    )
                } else {
                    (
                        ViolationKind::LostWrite,
                        format!(
                            "the write of version {high_version} returned, is never observed, and a later operation observed version {low_version}"
                        ),
                    )
                }
            }
            (AT_OBSERVE, AT_DELETE) if high_version == low_version => (
                ViolationKind::StaleRead,
                format!("observed version {low_version} after the delete that removed it had returned"),
            ),
            (AT_OBSERVE, _) => (
                ViolationKind::NonMonotonicRead,
                format!("observed version {low_version} after an earlier operation had observed version {high_version}"),
            ),
            _ => (
                ViolationKind::StaleRead,
                format!("removed version {low_version} after an earlier operation had observed version {high_version}"),
            ),
        };
        self.report(kind, &[earlier.op_index, later.op_index], message);
    }

    /// The fast path decides keys made only of acknowledged writes and reads when eviction
    /// explains every absence; anything else also gets the bounded search.
    fn needs_search(&self) -> bool {
        self.ops.iter().any(|op| match op.event {
            Event::SetUnknown { .. } | Event::DeleteUnknown { .. } | Event::CasFailed { .. } => {
                true
            }
            Event::Written {
                expected_version, ..
            } => expected_version != 0,
            Event::Deleted {
                existed,
                expected_version,
                ..
            } => expected_version != 0 || !existed,
            Event::Miss { allow_stale: false } => !self.config.allow_eviction,
            Event::Hit { .. } | Event::Miss { .. } | Event::GetUnknown => false,
        })
    }

    fn report(&mut self, kind: ViolationKind, op_indexes: &[usize], message: String) {
        if self.violations.len() >= VIOLATIONS_PER_KEY_MAX {
            return;
        }
        let op_ids = op_indexes
            .iter()
            .map(|&index| self.ops[index].id())
            .collect();
        let excerpt = self.excerpt(op_indexes);
        self.violations.push(Violation {
            kind,
            key: self.key.to_vec(),
            op_ids,
            message,
            excerpt,
        });
    }

    /// The key's operations whose windows meet the span of the involved ones; involved first in
    /// priority, then the rest in invocation order, at most [`EXCERPT_OPS_MAX`].
    fn excerpt(&self, op_indexes: &[usize]) -> String {
        let span_start = op_indexes
            .iter()
            .map(|&index| self.ops[index].invoke_ms)
            .min()
            .unwrap_or(0);
        let span_end = op_indexes
            .iter()
            .map(|&index| {
                let op = self.ops[index];
                op.operation
                    .return_ms
                    .unwrap_or(op.invoke_ms)
                    .max(op.invoke_ms)
            })
            .max()
            .unwrap_or(0);
        let mut shown: Vec<usize> = op_indexes.to_vec();
        for (index, op) in self.ops.iter().enumerate() {
            if shown.len() >= EXCERPT_OPS_MAX {
                break;
            }
            let overlaps =
                op.invoke_ms <= span_end && op.operation.return_ms.unwrap_or(NEVER) >= span_start;
            if overlaps && !shown.contains(&index) {
                shown.push(index);
            }
        }
        shown.sort_unstable();
        shown.dedup();
        shown
            .iter()
            .map(|&index| {
                let marker = if op_indexes.contains(&index) {
                    "*"
                } else {
                    " "
                };
                format!(
                    "  {marker} {}\n",
                    render_operation(self.ops[index].operation)
                )
            })
            .collect()
    }
}
