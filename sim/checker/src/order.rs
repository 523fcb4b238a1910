//! Rules O-1, O-2, W-1 and A: the operations that have a place in a key's version order, where
//! real time contradicts that order, and absences that fit nowhere in it.

use std::collections::BTreeMap;

use crate::key_op::{Event, KeyOp, VersionSource, NEVER};

/// A position in the key's version order: (version, 0) the write installing it, (version, 1) an
/// operation observing it live, (version, 2) the delete removing it.
pub(crate) type Position = (u64, u8);

pub(crate) const AT_WRITE: u8 = 0;
pub(crate) const AT_OBSERVE: u8 = 1;
pub(crate) const AT_DELETE: u8 = 2;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Positioned {
    pub(crate) op_index: usize,
    pub(crate) position: Position,
    pub(crate) invoke_ms: u64,
    pub(crate) return_ms: u64,
}

/// The operations that have a place in the version order (the linearizable skeleton).
pub(crate) fn positioned(
    ops: &[KeyOp<'_>],
    versions: &BTreeMap<u64, VersionSource<'_>>,
) -> Vec<Positioned> {
    let mut positioned = Vec::new();
    for (&version, source) in versions {
        positioned.push(Positioned {
            op_index: source.op_index,
            position: (version, AT_WRITE),
            // For a version matched to an unknown Set, the earliest invocation of every Set
            // that could have produced it: another eligible Set may be the real one.
            invoke_ms: source.invoke_ms,
            return_ms: source.return_ms,
        });
    }
    for (index, op) in ops.iter().enumerate() {
        let position = match op.event {
            Event::Hit {
                version,
                is_stale: false,
                allow_stale: false,
                ..
            } => (version, AT_OBSERVE),
            Event::CasFailed {
                current_version, ..
            } if current_version != 0 => (current_version, AT_OBSERVE),
            Event::Deleted {
                existed: true,
                version,
                ..
            } => (version, AT_DELETE),
            _ => continue,
        };
        if position.0 != 0 && versions.contains_key(&position.0) {
            positioned.push(Positioned {
                op_index: index,
                position,
                invoke_ms: op.invoke_ms,
                return_ms: op.return_ms,
            });
        }
    }
    positioned
}

/// Rules O-1, O-2 and W-1: the version order must be realizable in real time. For every pair
/// with position(a) < position(b), b must not have returned before a was invoked. Checked in
/// one sweep from the highest position down, keeping the earliest return seen above; `found`
/// gets each (earlier, later) pair that breaks it.
pub(crate) fn order_violations(
    positioned: &[Positioned],
    mut found: impl FnMut(Positioned, Positioned),
) {
    let mut order: Vec<usize> = (0..positioned.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(positioned[index].position));
    let mut earliest_above: Option<Positioned> = None;
    let mut group_start = 0;
    while group_start < order.len() {
        let position = positioned[order[group_start]].position;
        let group_end = order[group_start..]
            .iter()
            .position(|&index| positioned[index].position != position)
            .map_or(order.len(), |offset| group_start + offset);
        for &index in &order[group_start..group_end] {
            let earlier = positioned[index];
            if let Some(later) = earliest_above {
                if later.return_ms < earlier.invoke_ms {
                    found(earlier, later);
                }
            }
        }
        for &index in &order[group_start..group_end] {
            let candidate = positioned[index];
            if earliest_above.is_none_or(|best| candidate.return_ms < best.return_ms) {
                earliest_above = Some(candidate);
            }
        }
        group_start = group_end;
    }
}

/// Rule A (only without eviction): every absence — a linearizable Miss, a delete that removed
/// nothing, a compare-and-set failing on version 0 — must fit somewhere the key can be absent:
/// before its first write, after a delete, or after an expiry, between the latest position
/// that completed before it (floor) and the earliest invoked after it (ceiling). Returns each
/// absence that fits nowhere, with its floor.
pub(crate) fn unexplained_absences(
    ops: &[KeyOp<'_>],
    versions: &BTreeMap<u64, VersionSource<'_>>,
    positioned: &[Positioned],
    skew: u64,
) -> Vec<(usize, Positioned)> {
    let mut unexplained = Vec::new();
    let mut by_return: Vec<Positioned> = positioned.to_vec();
    by_return.sort_by_key(|entry| entry.return_ms);
    let mut floor_prefix: Vec<Positioned> = Vec::with_capacity(by_return.len());
    for entry in &by_return {
        let best = match floor_prefix.last() {
            Some(best) if best.position >= entry.position => *best,
            _ => *entry,
        };
        floor_prefix.push(best);
    }
    let mut by_invoke: Vec<Positioned> = positioned.to_vec();
    by_invoke.sort_by_key(|entry| entry.invoke_ms);
    let mut ceiling_suffix: Vec<Positioned> = by_invoke.clone();
    for index in (0..ceiling_suffix.len().saturating_sub(1)).rev() {
        if ceiling_suffix[index + 1].position < ceiling_suffix[index].position {
            ceiling_suffix[index] = ceiling_suffix[index + 1];
        }
    }
    let removals = Removals::new(ops);
    for (index, op) in ops.iter().enumerate() {
        let is_absence = matches!(
            op.event,
            Event::Miss { allow_stale: false }
                | Event::Deleted { existed: false, .. }
                | Event::CasFailed {
                    current_version: 0,
                    ..
                }
        );
        if !is_absence {
            continue;
        }
        let completed_before = by_return.partition_point(|entry| entry.return_ms < op.invoke_ms);
        let Some(floor) = completed_before.checked_sub(1).map(|at| floor_prefix[at]) else {
            continue;
        };
        let invoked_after = by_invoke.partition_point(|entry| entry.invoke_ms <= op.return_ms);
        let ceiling = ceiling_suffix
            .get(invoked_after)
            .map(|entry| entry.position);
        let below_ceiling = |position: Position| ceiling.is_none_or(|ceiling| position <= ceiling);
        // Versions from the floor's up, while their positions are below the ceiling.
        let (floor_version, _) = floor.position;
        let explained_by_delete = removals
            .unknown_delete_invoked_ms
            .is_some_and(|invoked_ms| invoked_ms <= op.return_ms)
            || removals
                .delete_invoked_ms
                .range(floor_version..)
                .take_while(|(&version, _)| {
                    ceiling.is_none_or(|ceiling| (version, AT_DELETE) < ceiling)
                })
                .any(|(&version, &invoked_ms)| {
                    invoked_ms <= op.return_ms && floor.position <= (version, AT_DELETE)
                });
        let explained_by_expiry = versions
            .range(floor_version..)
            .take_while(|(&version, _)| below_ceiling((version, AT_OBSERVE)))
            .any(|(&version, source)| {
                floor.position <= (version, AT_OBSERVE)
                    && source.invoke_ms <= op.return_ms
                    && source.possibly_expired_by(op.return_ms, skew)
            })
            // An unknown Set nobody observed may have installed an entry that then expired.
            || removals.unknown_set_expired_by(op.return_ms, skew);
        if !explained_by_delete && !explained_by_expiry {
            unexplained.push((index, floor));
        }
    }
    unexplained
}

/// What may have removed a key's entry, indexed for rule A.
struct Removals {
    /// The earliest invocation of an unknown-outcome delete.
    unknown_delete_invoked_ms: Option<u64>,
    /// Per version, the earliest invocation of a delete that removed it.
    delete_invoked_ms: BTreeMap<u64, u64>,
    /// Unknown-outcome Sets with a TTL by invocation: (invocation, the earliest `invoke + ttl`
    /// among them up to this one).
    unknown_sets: Vec<(u64, u64)>,
}

impl Removals {
    fn new(ops: &[KeyOp<'_>]) -> Self {
        let mut removals = Removals {
            unknown_delete_invoked_ms: None,
            delete_invoked_ms: BTreeMap::new(),
            unknown_sets: Vec::new(),
        };
        for op in ops {
            match op.event {
                Event::DeleteUnknown { .. } => {
                    let earliest = removals.unknown_delete_invoked_ms.get_or_insert(NEVER);
                    *earliest = (*earliest).min(op.invoke_ms);
                }
                Event::Deleted {
                    existed: true,
                    version,
                    ..
                } => {
                    let earliest = removals.delete_invoked_ms.entry(version).or_insert(NEVER);
                    *earliest = (*earliest).min(op.invoke_ms);
                }
                Event::SetUnknown { ttl_ms, .. } if ttl_ms > 0 => removals
                    .unknown_sets
                    .push((op.invoke_ms, op.invoke_ms.saturating_add(ttl_ms))),
                _ => {}
            }
        }
        removals.unknown_sets.sort_unstable();
        let mut earliest = NEVER;
        for (_, expiry_ms) in &mut removals.unknown_sets {
            earliest = earliest.min(*expiry_ms);
            *expiry_ms = earliest;
        }
        removals
    }

    /// TTL-2 for an unknown Set: one invoked by `by_ms` may have installed an entry that expired
    /// by then.
    fn unknown_set_expired_by(&self, by_ms: u64, clock_skew_ms: u64) -> bool {
        self.unknown_sets
            .partition_point(|&(invoked_ms, _)| invoked_ms <= by_ms)
            .checked_sub(1)
            .is_some_and(|last| by_ms.saturating_add(clock_skew_ms) > self.unknown_sets[last].1)
    }
}
