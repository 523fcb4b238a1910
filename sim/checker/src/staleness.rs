//! Bounded staleness: the rules for reads served by a client's near cache.
//!
//! A near-cache read is recorded as a `Get` with `allow_stale` by one of the clients named in
//! [`BoundedStaleness::clients`] (those clients send no other stale reads). The linearizability
//! checker judges it as any stale read (rules M, V, U, O-3, TTL); these rules add what the near
//! cache promises:
//!
//! - **S-1** (`StaleBeyondBound`) A near read of version `v` invoked at `t` must not miss a version
//!   the cluster had moved past before `t − bound`: no operation that returned before
//!   `t − bound` may prove the key was past `v`. Proofs: a Set acknowledged with version `w > v`;
//!   any Hit of a version `c > v` (the write of `c` was applied by then, so `v` was superseded); a
//!   `CasFailed{c > v}`; a Delete that removed version `u ≥ v`.
//! - **S-2** (`OlderThanOwn`) Nor may it be older than what the same client itself wrote or read
//!   (a proof of the same kinds, by that client) before `t`.
//!
//! Only definite outcomes are proofs: a write whose outcome is unknown proves nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{ClientId, History, Op, OpId, OpResult, Operation, Outcome};
use crate::report::{render_bytes, render_operation, Violation, ViolationKind};

/// The near-cache reads to judge, and their bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedStaleness {
    /// The promised bound, in the history's milliseconds.
    pub bound_ms: u64,
    /// The clients whose `allow_stale` Gets were served by a near cache.
    pub clients: BTreeSet<ClientId>,
}

/// That the key was past `floor - 1` (every version below `floor` superseded) by `return_ms`.
#[derive(Debug, Clone, Copy)]
struct Proof {
    return_ms: u64,
    floor: u64,
    client: ClientId,
    id: OpId,
}

fn proof_of(operation: &Operation) -> Option<Proof> {
    let return_ms = operation.return_ms?;
    let Outcome::Ok(result) = operation.effective_outcome() else {
        return None;
    };
    let floor = match (&operation.op, result) {
        (Op::Set { .. }, OpResult::Written { version, .. }) => *version,
        (Op::Get { .. }, OpResult::Hit { version, .. }) => *version,
        (_, OpResult::CasFailed { current_version }) if *current_version > 0 => *current_version,
        (
            Op::Delete { .. },
            OpResult::Deleted {
                existed: true,
                version,
            },
        ) => version.saturating_add(1),
        _ => return None,
    };
    Some(Proof {
        return_ms,
        floor,
        client: operation.client,
        id: operation.id,
    })
}

/// Checks every near-cache read of `history` against S-1 and S-2.
pub fn check_staleness(history: &History, bounded: &BoundedStaleness) -> Vec<Violation> {
    let mut proofs: BTreeMap<&[u8], Vec<Proof>> = BTreeMap::new();
    let mut near_reads: BTreeMap<&[u8], Vec<(&Operation, u64)>> = BTreeMap::new();
    for operation in history.ops() {
        let key = operation.op.key();
        if let Some(proof) = proof_of(operation) {
            proofs.entry(key).or_default().push(proof);
        }
        let is_near = matches!(
            operation.op,
            Op::Get {
                allow_stale: true,
                ..
            }
        ) && bounded.clients.contains(&operation.client);
        if let (true, Outcome::Ok(OpResult::Hit { version, .. })) =
            (is_near, operation.effective_outcome())
        {
            near_reads
                .entry(key)
                .or_default()
                .push((operation, *version));
        }
    }
    let mut violations = Vec::new();
    for (key, reads) in near_reads {
        let Some(key_proofs) = proofs.get(key) else {
            continue;
        };
        let everyone = Newest::new(key_proofs.iter().copied());
        let mut by_client: BTreeMap<ClientId, Newest> = BTreeMap::new();
        for (read, version) in reads {
            let horizon = read.invoke_ms.saturating_sub(bounded.bound_ms);
            if let Some(proof) = everyone.before(horizon).filter(|p| p.floor > version) {
                violations.push(violation(
                    history,
                    ViolationKind::StaleBeyondBound,
                    key,
                    read,
                    &proof,
                    format!(
                        "a near-cache read invoked at {} ms returned version {version}, but version \
                         {} or later was already in place at {} ms, more than the bound of {} ms \
                         earlier",
                        read.invoke_ms, proof.floor, proof.return_ms, bounded.bound_ms
                    ),
                ));
                continue;
            }
            let own = by_client.entry(read.client).or_insert_with(|| {
                Newest::new(
                    key_proofs
                        .iter()
                        .copied()
                        .filter(|p| p.client == read.client),
                )
            });
            if let Some(proof) = own.before(read.invoke_ms).filter(|p| p.floor > version) {
                violations.push(violation(
                    history,
                    ViolationKind::OlderThanOwn,
                    key,
                    read,
                    &proof,
                    format!(
                        "a near-cache read returned version {version}, older than version {} \
                         this client itself wrote or read at {} ms",
                        proof.floor, proof.return_ms
                    ),
                ));
            }
        }
    }
    violations
}

/// Proofs by return time, with the highest floor among those returned before any time.
struct Newest {
    return_ms: Vec<u64>,
    /// `highest[i]`: the proof with the highest floor among the first `i + 1` by return time.
    highest: Vec<Proof>,
}

impl Newest {
    fn new(proofs: impl Iterator<Item = Proof>) -> Newest {
        let mut sorted: Vec<Proof> = proofs.collect();
        sorted.sort_by_key(|p| (p.return_ms, p.id));
        let mut highest: Vec<Proof> = Vec::with_capacity(sorted.len());
        for proof in &sorted {
            let best = match highest.last() {
                Some(best) if best.floor >= proof.floor => *best,
                _ => *proof,
            };
            highest.push(best);
        }
        Newest {
            return_ms: sorted.iter().map(|p| p.return_ms).collect(),
            highest,
        }
    }

    /// The proof with the highest floor among those that returned strictly before `time_ms`.
    fn before(&self, time_ms: u64) -> Option<Proof> {
        let count = self.return_ms.partition_point(|&r| r < time_ms);
        count.checked_sub(1).map(|last| self.highest[last])
    }
}

fn violation(
    history: &History,
    kind: ViolationKind,
    key: &[u8],
    read: &Operation,
    proof: &Proof,
    message: String,
) -> Violation {
    let mut excerpt = String::new();
    for id in [read.id, proof.id] {
        if let Some(operation) = history.op(id) {
            excerpt.push_str("  * ");
            excerpt.push_str(&render_operation(operation));
            excerpt.push('\n');
        }
    }
    Violation {
        kind,
        key: key.to_vec(),
        op_ids: vec![read.id, proof.id],
        message: format!("{message} (key {})", render_bytes(key)),
        excerpt,
    }
}
