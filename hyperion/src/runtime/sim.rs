//! Simulation only (compiled under madsim): faults that must land at a given point of the
//! product's code.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use madsim::task::NodeId;

thread_local! {
    // One simulation runs on one thread: its nodes' pending requests.
    static PAUSE_IN_TURN: RefCell<BTreeSet<NodeId>> = const { RefCell::new(BTreeSet::new()) };
    // Simulated CPU time one client request costs on a node (none by default).
    static CPU_COST: RefCell<BTreeMap<NodeId, Duration>> = const { RefCell::new(BTreeMap::new()) };
}

/// Sets what one client request costs `node`'s CPU ([`super::spend_cpu`]); zero (the
/// default) makes work free, as simulated time otherwise is.
pub fn set_cpu_cost(node: NodeId, per_request: Duration) {
    CPU_COST.with(|costs| {
        let mut costs = costs.borrow_mut();
        if per_request.is_zero() {
            costs.remove(&node);
        } else {
            costs.insert(node, per_request);
        }
    });
}

/// The CPU time `requests` client requests cost the current node.
pub(super) fn cpu_time(requests: usize) -> Duration {
    let node = madsim::plugin::node();
    CPU_COST.with(|costs| {
        costs
            .borrow()
            .get(&node)
            .map_or(Duration::ZERO, |cost| *cost * requests as u32)
    })
}

/// Asks that `node` be paused (as by SIGSTOP) the next time one of its tasks reaches a
/// [`super::preemption_point`]: inside a turn of its node loop, after the tick and before
/// the inputs are served. The caller resumes it (`Handle::resume`) and calls
/// [`cancel_pause_request`] when the pause is over, in case no turn came.
pub fn pause_at_next_preemption_point(node: NodeId) {
    PAUSE_IN_TURN.with(|nodes| nodes.borrow_mut().insert(node));
}

/// Withdraws a request of [`pause_at_next_preemption_point`]; returns whether it was still
/// pending (the node never reached a preemption point).
pub fn cancel_pause_request(node: NodeId) -> bool {
    PAUSE_IN_TURN.with(|nodes| nodes.borrow_mut().remove(&node))
}

/// At a preemption point: pauses the current node if that was asked. The task goes on to
/// its next await, where the paused node stops being scheduled.
pub(super) fn pause_here_if_asked() -> bool {
    let node = madsim::plugin::node();
    let asked = PAUSE_IN_TURN.with(|nodes| nodes.borrow_mut().remove(&node));
    if asked {
        madsim::runtime::Handle::current().pause(node);
    }
    asked
}
