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

use std::collections::{BTreeMap, BTreeSet};

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

struct Search<'a, 'h> {
    ops: &'a [KeyOp<'h>],
    versions: &'a BTreeMap<u64, VersionSource<'h>>,
    config: &'a CheckerConfig,
    /// Indexes into `ops` of the operations the search places, by invocation time.
    order: Vec<usize>,
}

struct Frame {
    linearized: Vec<u64>,
    state: State,
    successors: Vec<(usize, State)>,
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
    let search = Search {
        ops,
        versions,
        config,
        order,
    };
    search.run()
}

impl Search<'_, '_> {
    fn run(&self) -> SearchOutcome {
        let words = self.order.len().div_ceil(64);
        let start = Frame {
            linearized: vec![0; words],
            state: State {
                register: Register::Absent,
                last_version: 0,
            },
            successors: Vec::new(),
        };
        let mut steps = 0u64;
        let mut seen: BTreeSet<(Vec<u64>, State)> = BTreeSet::new();
        let mut deepest = (0usize, None::<usize>);
        if self.all_required_done(&start.linearized) {
            return SearchOutcome::Linearizable;
        }
        let mut stack = vec![start];
        let first = stack.last_mut().expect("just pushed");
        first.successors = self.successors(&first.linearized, first.state, &mut steps);
        while let Some(frame) = stack.last_mut() {
            if steps > self.config.search_steps_max {
                return SearchOutcome::Exhausted;
            }
            let Some((position, state)) = frame.successors.pop() else {
                let frame = stack.pop().expect("non-empty: just looked at it");
                let depth = self.linearized_required(&frame.linearized);
                if depth >= deepest.0 {
                    deepest = (depth, self.first_pending_required(&frame.linearized));
                }
                continue;
            };
            let mut linearized = frame.linearized.clone();
            linearized[position / 64] |= 1 << (position % 64);
            if self.all_required_done(&linearized) {
                return SearchOutcome::Linearizable;
            }
            if !seen.insert((linearized.clone(), state)) {
                continue;
            }
            let successors = self.successors(&linearized, state, &mut steps);
            stack.push(Frame {
                linearized,
                state,
                successors,
            });
        }
        let stuck = deepest
            .1
            .or_else(|| self.first_pending_required(&vec![0; words]));
        SearchOutcome::NotLinearizable {
            stuck_op_index: stuck.map_or(0, |position| self.order[position]),
        }
    }

    fn is_set(linearized: &[u64], position: usize) -> bool {
        linearized[position / 64] & (1 << (position % 64)) != 0
    }

    fn required(&self, position: usize) -> bool {
        self.ops[self.order[position]].return_ms != NEVER
    }

    fn all_required_done(&self, linearized: &[u64]) -> bool {
        (0..self.order.len())
            .all(|position| !self.required(position) || Self::is_set(linearized, position))
    }

    fn linearized_required(&self, linearized: &[u64]) -> usize {
        (0..self.order.len())
            .filter(|&position| self.required(position) && Self::is_set(linearized, position))
            .count()
    }

    /// The pending acknowledged operation that returned first (the one blocking progress).
    fn first_pending_required(&self, linearized: &[u64]) -> Option<usize> {
        (0..self.order.len())
            .filter(|&position| self.required(position) && !Self::is_set(linearized, position))
            .min_by_key(|&position| self.ops[self.order[position]].return_ms)
    }

    /// Every (operation, next state) that may be linearized next. A fitting state-preserving
    /// operation, if any, is the only successor (see the module docs).
    fn successors(&self, linearized: &[u64], state: State, steps: &mut u64) -> Vec<(usize, State)> {
        let earliest_pending_return = (0..self.order.len())
            .filter(|&position| !Self::is_set(linearized, position))
            .map(|position| self.ops[self.order[position]].return_ms)
            .min()
            .unwrap_or(NEVER);
        let mut successors = Vec::new();
        for position in 0..self.order.len() {
            let op = self.ops[self.order[position]];
            if op.invoke_ms > earliest_pending_return {
                break;
            }
            if Self::is_set(linearized, position) {
                continue;
            }
            *steps += 1;
            let next_states = self.apply(self.order[position], state);
            if Self::preserves_state(op) {
                if !next_states.is_empty() {
                    return vec![(position, state)];
                }
                continue;
            }
            successors.extend(next_states.into_iter().map(|next| (position, next)));
        }
        // Popped from the end: try earlier-invoked operations first.
        successors.reverse();
        successors
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

    /// The states `op` may lead to from `state` (empty: it cannot be linearized here).
    fn apply(&self, op_index: usize, state: State) -> Vec<State> {
        let op = self.ops[op_index];
        let register = state.register;
        let fits = |condition: bool| if condition { vec![state] } else { Vec::new() };
        let absent = State {
            register: Register::Absent,
            ..state
        };
        match op.event {
            Event::Hit { version, .. } => fits(Self::holds(register, version)),
            Event::Miss { .. } => {
                fits(register == Register::Absent || self.may_be_gone(register, op))
            }
            Event::CasFailed {
                current_version: 0, ..
            } => fits(register == Register::Absent || self.may_be_gone(register, op)),
            Event::CasFailed {
                current_version, ..
            } => fits(Self::holds(register, current_version)),
            Event::Written {
                version,
                expected_version,
                ..
            } => {
                let precondition = expected_version == 0 || Self::holds(register, expected_version);
                if precondition && version > state.last_version {
                    let writer = self
                        .versions
                        .get(&version)
                        .map_or(0, |source| source.op_index);
                    vec![State {
                        register: Register::Present { version, writer },
                        last_version: version,
                    }]
                } else {
                    Vec::new()
                }
            }
            Event::SetUnknown {
                value,
                expected_version,
                ..
            } => {
                if !Self::may_hold(register, expected_version) {
                    return Vec::new();
                }
                let writer = op_index;
                let mut next: Vec<State> = self
                    .versions
                    .range(state.last_version + 1..)
                    .filter(|(_, source)| {
                        !source.acknowledged && (!source.value_observed || source.value == value)
                    })
                    .map(|(&version, _)| State {
                        register: Register::Present { version, writer },
                        last_version: version,
                    })
                    .collect();
                next.push(State {
                    register: Register::Present { version: 0, writer },
                    ..state
                });
                next
            }
            Event::Deleted {
                existed: true,
                version,
                ..
            } => {
                if Self::holds(register, version) {
                    vec![absent]
                } else {
                    Vec::new()
                }
            }
            Event::Deleted { existed: false, .. } => {
                if register == Register::Absent || self.may_be_gone(register, op) {
                    vec![absent]
                } else {
                    Vec::new()
                }
            }
            Event::DeleteUnknown { expected_version } => {
                if Self::may_hold(register, expected_version) {
                    vec![absent]
                } else {
                    Vec::new()
                }
            }
            Event::GetUnknown => Vec::new(),
        }
    }
}
