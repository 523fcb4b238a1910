//! The bounded search: Wing & Gong's linearizability search (with Lowe's memoization of
//! (linearized set, state) pairs, as in Horn & Kroening's and Lowe's WGL variants) over one key's
//! subhistory, for what the version order alone does not decide: unknown-outcome writes and
//! deletes (applied or not, and with which version), compare-and-set preconditions, and the
//! placement of absences.
//!
//! Model state: the register (absent, or present with a version and the write that made it) and
//! the highest version installed so far (versions must increase). Each step linearizes one
//! operation that no pending acknowledged operation precedes in real time. Operations that do
//! not change the state (reads, failed compare-and-sets) are linearized greedily as soon as they
//! fit: placing a fitting read earlier never removes a solution. Unknown-outcome operations may
//! be linearized at any point after their invocation, or never. Stale-allowed reads are not
//! linearizable and are left to the fast path.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::config::CheckerConfig;
use crate::key_op::{Event, KeyOp, VersionSource, NEVER};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    Linearizable,
    /// The step budget ran out before an answer.
    Exhausted,
    /// No linearization exists; `stuck_op_index` (into the key's operations) is the pending
    /// acknowledged operation that the deepest partial linearization could not place.
    NotLinearizable {
        stuck_op_index: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Register {
    Absent,
    /// `version == 0`: installed by an unknown-outcome write with a version nobody observed.
    /// `writer` indexes the key's operations (for the TTL of an unobserved version).
    Present {
        version: u64,
        writer: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct State {
    register: Register,
    last_version: u64,
}

impl State {
    fn hash(&self) -> u64 {
        let register = match self.register {
            Register::Absent => mix(u64::MAX),
            Register::Present { version, writer } => mix(version ^ mix(writer as u64)),
        };
        mix(self.last_version ^ register)
    }
}

/// The SplitMix64 finalizer: a well-mixed 64-bit hash of `x`.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The linearized set's part of a search node's hash: the XOR of one key per linearized position
/// (Zobrist hashing), so a successor's hash follows from its parent's in one step.
fn position_key(position: usize) -> u64 {
    mix(position as u64 ^ 0x5bd1_e995_0000_0000)
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = mix(self.0 ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// No index: the end of a hash chain.
const NONE: usize = usize::MAX;

/// One (linearized set, state) pair the search reached. The set is stored as what it lacks:
/// every position below `high` is linearized except the node's *open* positions (ascending, in
/// [`Nodes::open`]), and none from `high` on. That takes room for the operations still pending
/// among the linearized ones, usually a few, where a bit set takes a bit per operation of the key.
#[derive(Debug, Clone, Copy)]
struct Node {
    state: State,
    /// [`position_key`] of every linearized position, XORed.
    set_hash: u64,
    /// The next node whose full hash is the same (a chain through [`Nodes::meta`]).
    next: usize,
    /// Acknowledged operations linearized.
    required_done: usize,
    /// One past the highest linearized position (0 if none).
    high: usize,
    /// The node's open positions: `Nodes::open[open_start..open_start + open_len]`.
    open_start: usize,
    open_len: usize,
}

/// Every node reached, and the memo of Lowe's variant: a node is expanded once.
struct Nodes {
    meta: Vec<Node>,
    /// The open positions of every node, one node after the other.
    open: Vec<usize>,
    /// Full hash (set and state) → the last node with it; earlier ones follow `Node::next`.
    chains: HashMap<u64, usize, BuildHasherDefault<Prehashed>>,
}

impl Nodes {
    fn open(&self, node: Node) -> &[usize] {
        &self.open[node.open_start..node.open_start + node.open_len]
    }

    /// The open positions of `parent`'s set plus `position` (not in it) into `open`, and that
    /// set's `high`.
    fn open_after(&self, parent: Node, position: usize, open: &mut Vec<usize>) -> usize {
        open.clear();
        let parent_open = self.open(parent);
        if position < parent.high {
            open.extend(parent_open.iter().filter(|&&other| other != position));
            parent.high
        } else {
            open.extend_from_slice(parent_open);
            open.extend(parent.high..position);
            position + 1
        }
    }

    /// Whether the search reached `state` with the set `(high, open)` (whose
    /// [`Node::set_hash`] is `set_hash`) already.
    fn contains(&self, set_hash: u64, high: usize, open: &[usize], state: State) -> bool {
        let mut candidate = self
            .chains
            .get(&(set_hash ^ state.hash()))
            .copied()
            .unwrap_or(NONE);
        while candidate != NONE {
            let node = self.meta[candidate];
            if node.set_hash == set_hash
                && node.state == state
                && node.high == high
                && self.open(node) == open
            {
                return true;
            }
            candidate = node.next;
        }
        false
    }

    /// Adds a node with the open positions `open` (`node`'s own `open_*` and `next` are set
    /// here) to the memo; returns its index.
    fn push(&mut self, mut node: Node, open: &[usize]) -> usize {
        let index = self.meta.len();
        node.open_start = self.open.len();
        node.open_len = open.len();
        self.open.extend_from_slice(open);
        let head = self.chains.insert(node.set_hash ^ node.state.hash(), index);
        node.next = head.unwrap_or(NONE);
        self.meta.push(node);
        index
    }
}

struct Search<'a, 'h> {
    ops: &'a [KeyOp<'h>],
    versions: &'a BTreeMap<u64, VersionSource<'h>>,
    /// The versions matched to unknown-outcome writes, ascending: what an unknown Set may install.
    unacknowledged: Vec<(u64, VersionSource<'h>)>,
    config: &'a CheckerConfig,
    /// Indexes into `ops` of the operations the search places, by invocation time. A *position*
    /// indexes this.
    order: Vec<usize>,
    /// Per position: the operation's invocation and return ([`NEVER`] if unknown).
    invoke_ms: Vec<u64>,
    return_ms: Vec<u64>,
    /// Per position: an acknowledged operation (one that must be linearized).
    required: Vec<bool>,
    required_count: usize,
    /// `suffix[p]` for `p` in `0..=len`: the earliest return among positions `p..` ([`NEVER`] if
    /// none), and the lowest acknowledged position that returns then (`None` if none).
    suffix: Vec<(u64, Option<usize>)>,
}

/// A node being expanded. Its successors not tried yet are in the shared successor stack from
/// `start` up to the next frame's `start` (to the top for the innermost frame).
struct Frame {
    node: usize,
    start: usize,
}

pub(crate) fn search(
    ops: &[KeyOp<'_>],
    versions: &BTreeMap<u64, VersionSource<'_>>,
    config: &CheckerConfig,
) -> SearchOutcome {
    let mut order: Vec<usize> = (0..ops.len())
        .filter(|&index| match ops[index].event {
            Event::Hit { allow_stale, .. } | Event::Miss { allow_stale } => !allow_stale,
            Event::GetUnknown => false,
            _ => true,
        })
        .collect();
    order.sort_by_key(|&index| (ops[index].invoke_ms, index));
    let invoke_ms: Vec<u64> = order.iter().map(|&index| ops[index].invoke_ms).collect();
    let return_ms: Vec<u64> = order.iter().map(|&index| ops[index].return_ms).collect();
    let required: Vec<bool> = return_ms
        .iter()
        .map(|&returned| returned != NEVER)
        .collect();
    let required_count = required.iter().filter(|&&required| required).count();
    let mut suffix = vec![(NEVER, None); order.len() + 1];
    for position in (0..order.len()).rev() {
        let (earliest, first) = suffix[position + 1];
        suffix[position] = if return_ms[position] != NEVER && return_ms[position] <= earliest {
            (return_ms[position], Some(position))
        } else {
            (earliest, first)
        };
    }
    let unacknowledged = versions
        .iter()
        .filter(|(_, source)| !source.acknowledged)
        .map(|(&version, &source)| (version, source))
        .collect();
    let search = Search {
        ops,
        versions,
        unacknowledged,
        config,
        order,
        invoke_ms,
        return_ms,
        required,
        required_count,
        suffix,
    };
    search.run()
}

impl Search<'_, '_> {
    fn run(&self) -> SearchOutcome {
        if self.required_count == 0 {
            return SearchOutcome::Linearizable;
        }
        let mut nodes = Nodes {
            meta: Vec::new(),
            open: Vec::new(),
            chains: HashMap::default(),
        };
        // The start node is expanded but not memoized: no successor has an empty set.
        nodes.meta.push(Node {
            state: State {
                register: Register::Absent,
                last_version: 0,
            },
            set_hash: 0,
            next: NONE,
            required_done: 0,
            high: 0,
            open_start: 0,
            open_len: 0,
        });
        let mut steps = 0u64;
        let mut deepest = (0usize, None::<usize>);
        // The successors of every frame on the stack, the innermost frame's on top.
        let mut pending: Vec<(usize, State)> = Vec::new();
        let mut open = Vec::new();
        self.successors(&nodes, 0, &mut steps, &mut pending);
        let mut stack = vec![Frame { node: 0, start: 0 }];
        while let Some(frame) = stack.last() {
            if steps > self.config.search_steps_max {
                return SearchOutcome::Exhausted;
            }
            let next = if pending.len() > frame.start {
                pending.pop()
            } else {
                None
            };
            let Some((position, state)) = next else {
                let frame = stack.pop().expect("non-empty: just looked at it");
                let node = nodes.meta[frame.node];
                if node.required_done >= deepest.0 {
                    deepest = (
                        node.required_done,
                        self.first_pending_required(nodes.open(node), node.high),
                    );
                }
                continue;
            };
            let parent = nodes.meta[frame.node];
            let required_done = parent.required_done + usize::from(self.required[position]);
            if required_done == self.required_count {
                return SearchOutcome::Linearizable;
            }
            let set_hash = parent.set_hash ^ position_key(position);
            let high = nodes.open_after(parent, position, &mut open);
            if nodes.contains(set_hash, high, &open, state) {
                continue;
            }
            let node = Node {
                state,
                set_hash,
                next: NONE,
                required_done,
                high,
                open_start: 0,
                open_len: 0,
            };
            let index = nodes.push(node, &open);
            let start = pending.len();
            self.successors(&nodes, index, &mut steps, &mut pending);
            stack.push(Frame { node: index, start });
        }
        let stuck = deepest.1.or(self.suffix[0].1);
        SearchOutcome::NotLinearizable {
            stuck_op_index: stuck.map_or(0, |position| self.order[position]),
        }
    }

    /// The earliest return among the operations not linearized in the set `(high, open)`
    /// ([`NEVER`] if none is acknowledged).
    fn earliest_pending_return(&self, open: &[usize], high: usize) -> u64 {
        open.iter()
            .map(|&position| self.return_ms[position])
            .fold(self.suffix[high].0, u64::min)
    }

    /// The pending acknowledged operation that returned first (the one blocking progress), the
    /// lowest position among equals, in the set `(high, open)`.
    fn first_pending_required(&self, open: &[usize], high: usize) -> Option<usize> {
        let mut first: Option<usize> = None;
        for &position in open {
            if self.required[position]
                && first.is_none_or(|best| self.return_ms[position] < self.return_ms[best])
            {
                first = Some(position);
            }
        }
        match (first, self.suffix[high].1) {
            (Some(below), Some(above)) if self.return_ms[above] < self.return_ms[below] => {
                Some(above)
            }
            (Some(below), _) => Some(below),
            (None, above) => above,
        }
    }

    /// Appends every (operation, next state) that may be linearized next from `node` to `out`, to
    /// be popped from the end. A fitting state-preserving operation, if any, is the only successor
    /// (see the module docs).
    fn successors(
        &self,
        nodes: &Nodes,
        node: usize,
        steps: &mut u64,
        out: &mut Vec<(usize, State)>,
    ) {
        let start = out.len();
        let meta = nodes.meta[node];
        let state = meta.state;
        let open = nodes.open(meta);
        let earliest_pending_return = self.earliest_pending_return(open, meta.high);
        let pending = open.iter().copied().chain(meta.high..self.order.len());
        for position in pending {
            if self.invoke_ms[position] > earliest_pending_return {
                break;
            }
            *steps += 1;
            let op_index = self.order[position];
            let before = out.len();
            self.apply(op_index, state, position, out);
            if Self::preserves_state(self.ops[op_index]) && out.len() > before {
                out.truncate(start);
                out.push((position, state));
                return;
            }
        }
        // Popped from the end: try earlier-invoked operations first.
        out[start..].reverse();
    }

    fn preserves_state(op: KeyOp<'_>) -> bool {
        matches!(
            op.event,
            Event::Hit { .. } | Event::Miss { .. } | Event::CasFailed { .. }
        )
    }

    /// The register may have expired (or been evicted) by the time `op` returned.
    fn may_be_gone(&self, register: Register, op: KeyOp<'_>) -> bool {
        let skew = self.config.clock_skew_ms;
        self.config.allow_eviction
            || match register {
                Register::Absent => true,
                Register::Present { version: 0, writer } => match self.ops[writer].event {
                    Event::SetUnknown { ttl_ms, .. } => {
                        ttl_ms > 0
                            && op.return_ms.saturating_add(skew)
                                > self.ops[writer].invoke_ms.saturating_add(ttl_ms)
                    }
                    _ => false,
                },
                Register::Present { version, .. } => self
                    .versions
                    .get(&version)
                    .is_some_and(|source| source.possibly_expired_by(op.return_ms, skew)),
            }
    }

    fn holds(register: Register, expected_version: u64) -> bool {
        matches!(register, Register::Present { version, .. } if version == expected_version && version != 0)
    }

    /// The precondition of an unknown-outcome compare-and-set: the expected version is current, or
    /// the current version is one nobody observed (which may be the expected one).
    fn may_hold(register: Register, expected_version: u64) -> bool {
        expected_version == 0
            || Self::holds(register, expected_version)
            || matches!(register, Register::Present { version: 0, .. })
    }

    /// Appends `(position, next)` for every state `next` that `op` may lead to from `state`
    /// (none: it cannot be linearized here).
    fn apply(&self, op_index: usize, state: State, position: usize, out: &mut Vec<(usize, State)>) {
        let op = self.ops[op_index];
        let register = state.register;
        let mut fits = |condition: bool, next: State| {
            if condition {
                out.push((position, next));
            }
        };
        let absent = State {
            register: Register::Absent,
            ..state
        };
        match op.event {
            Event::Hit { version, .. } => fits(Self::holds(register, version), state),
            Event::Miss { .. } => fits(
                register == Register::Absent || self.may_be_gone(register, op),
                state,
            ),
            Event::CasFailed {
                current_version: 0, ..
            } => fits(
                register == Register::Absent || self.may_be_gone(register, op),
                state,
            ),
            Event::CasFailed {
                current_version, ..
            } => fits(Self::holds(register, current_version), state),
            Event::Written {
                version,
                expected_version,
                ..
            } => {
                let precondition = expected_version == 0 || Self::holds(register, expected_version);
                let writer = self
                    .versions
                    .get(&version)
                    .map_or(0, |source| source.op_index);
                fits(
                    precondition && version > state.last_version,
                    State {
                        register: Register::Present { version, writer },
                        last_version: version,
                    },
                );
            }
            Event::SetUnknown {
                value,
                expected_version,
                ..
            } => {
                if !Self::may_hold(register, expected_version) {
                    return;
                }
                let writer = op_index;
                let above = self
                    .unacknowledged
                    .partition_point(|&(version, _)| version <= state.last_version);
                for &(version, source) in &self.unacknowledged[above..] {
                    if !source.value_observed || source.value == value {
                        out.push((
                            position,
                            State {
                                register: Register::Present { version, writer },
                                last_version: version,
                            },
                        ));
                    }
                }
                out.push((
                    position,
                    State {
                        register: Register::Present { version: 0, writer },
                        ..state
                    },
                ));
            }
            Event::Deleted {
                existed: true,
                version,
                ..
            } => fits(Self::holds(register, version), absent),
            Event::Deleted { existed: false, .. } => fits(
                register == Register::Absent || self.may_be_gone(register, op),
                absent,
            ),
            Event::DeleteUnknown { expected_version } => {
                fits(Self::may_hold(register, expected_version), absent)
            }
            Event::GetUnknown => {}
        }
    }
}
