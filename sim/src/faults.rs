//! Fault kinds, declared once: [`KINDS`] says, for every kind a scenario file may name, which
//! fields it takes, what undoes it, and how it is applied to a running cluster.
//!
//! Contract: the parser checks a `[[faults]]` entry against its kind's row (fields needed,
//! allowed, at least one of), the planner draws exactly the fields the row lists into an
//! [`Action`], and the runner calls the row's `apply`, which changes the cluster and returns
//! the timeline's text and how to undo it. Nothing else matches on a kind's name, so adding a
//! kind is adding a row and its `apply` function (and a line in `scenarios/README.md`'s table,
//! which a test checks).
//!
//! Node targets ([`NodeRef`]) are resolved when the fault fires: `leader` and `follower` name
//! whoever holds the role at that moment.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use madsim::net::NetSim;

use crate::cluster::SimCluster;

/// A field a fault kind may take, besides the timing every fault has (`at_ms`, `duration_ms`,
/// `repeat`, `with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The target: a node number, `leader`, `follower`, `followers`, `all` or `each`.
    Node,
    /// `partition`: groups of node numbers.
    Groups,
    /// `one_way`: the sending node.
    From,
    /// `one_way`: the receiving node.
    To,
    /// `clock`: the clock's rate (1.0 = true time).
    Rate,
    /// `clock`: a step of the clock, in ms.
    JumpMs,
    /// `net`: the probability that a packet is lost.
    PacketLoss,
    /// `net`: the send latency range, per packet.
    LatencyMs,
    /// `overload`: reads per second sent to the node.
    RequestsPerS,
    /// `overload`: client requests per second the node's CPU can serve.
    ServesPerS,
}

impl Field {
    /// Every field, in the order errors are reported.
    pub const ALL: [Field; 10] = [
        Field::Node,
        Field::Groups,
        Field::From,
        Field::To,
        Field::Rate,
        Field::JumpMs,
        Field::PacketLoss,
        Field::LatencyMs,
        Field::RequestsPerS,
        Field::ServesPerS,
    ];

    /// The field's name in a file.
    pub fn name(self) -> &'static str {
        match self {
            Field::Node => "node",
            Field::Groups => "groups",
            Field::From => "from",
            Field::To => "to",
            Field::Rate => "rate",
            Field::JumpMs => "jump_ms",
            Field::PacketLoss => "packet_loss",
            Field::LatencyMs => "latency_ms",
            Field::RequestsPerS => "requests_per_s",
            Field::ServesPerS => "serves_per_s",
        }
    }
}

/// One row of the fault table.
pub struct FaultKind {
    /// The name in files (`kind = "isolate"`).
    pub name: &'static str,
    /// Fields the kind cannot do without.
    pub needs: &'static [Field],
    /// Fields it may take.
    pub allows: &'static [Field],
    /// Of these it needs at least one.
    pub needs_one_of: &'static [Field],
    /// What undoes it once `duration_ms` passed; `None`: it takes no `duration_ms`.
    pub undone_by: Option<&'static str>,
    /// Applies the fault; returns the timeline's text and the undo (if it can be undone).
    pub apply: fn(&Firing<'_>) -> Applied,
}

impl FaultKind {
    /// Whether the kind takes `field` at all.
    pub fn takes(&self, field: Field) -> bool {
        self.needs.contains(&field)
            || self.allows.contains(&field)
            || self.needs_one_of.contains(&field)
    }
}

impl fmt::Debug for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Rows are compared by name: a name is declared once.
impl PartialEq for FaultKind {
    fn eq(&self, other: &FaultKind) -> bool {
        self.name == other.name
    }
}

/// Every fault kind (see the module docs; `scenarios/README.md` documents each one).
pub const KINDS: &[FaultKind] = &[
    FaultKind {
        name: "isolate",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("restoring that node's links"),
        apply: isolate,
    },
    FaultKind {
        name: "partition",
        needs: &[Field::Groups],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("restoring the links between the groups"),
        apply: partition,
    },
    FaultKind {
        name: "one_way",
        needs: &[Field::From, Field::To],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("restoring that direction"),
        apply: one_way,
    },
    FaultKind {
        name: "clock",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[Field::Rate, Field::JumpMs],
        undone_by: Some("rate back to 1.0"),
        apply: clock,
    },
    FaultKind {
        name: "pause",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("resume"),
        apply: pause,
    },
    FaultKind {
        name: "pause_in_turn",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("resume"),
        apply: pause_in_turn,
    },
    FaultKind {
        name: "kill",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("restart (recovers from its disk)"),
        apply: kill,
    },
    FaultKind {
        name: "power_loss",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("restart"),
        apply: power_loss,
    },
    FaultKind {
        name: "disk_eio",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("the disk working again"),
        apply: disk_eio,
    },
    FaultKind {
        name: "disk_full",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("space freed on the disk"),
        apply: disk_full,
    },
    FaultKind {
        name: "bit_rot",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[],
        undone_by: None,
        apply: bit_rot,
    },
    FaultKind {
        name: "restart",
        needs: &[Field::Node],
        allows: &[],
        needs_one_of: &[],
        undone_by: None,
        apply: restart,
    },
    FaultKind {
        name: "overload",
        needs: &[Field::Node, Field::RequestsPerS, Field::ServesPerS],
        allows: &[],
        needs_one_of: &[],
        undone_by: Some("the clients stopping and the CPU recovering"),
        apply: overload,
    },
    FaultKind {
        name: "heal",
        needs: &[],
        allows: &[],
        needs_one_of: &[],
        undone_by: None,
        apply: heal,
    },
    FaultKind {
        name: "net",
        needs: &[],
        allows: &[Field::PacketLoss, Field::LatencyMs],
        needs_one_of: &[],
        undone_by: Some("network defaults"),
        apply: net,
    },
];

/// The row named `name`.
pub fn kind(name: &str) -> Option<&'static FaultKind> {
    KINDS.iter().find(|kind| kind.name == name)
}

/// Every kind's name, for error messages.
pub fn kind_names() -> String {
    KINDS
        .iter()
        .map(|kind| kind.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A node a fault targets, resolved when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// 0-based index.
    Index(usize),
    /// The leader (the fault is skipped if there is none).
    Leader,
    /// The lowest-numbered running non-leader.
    Follower,
    /// Every server but the leader (every server if none leads).
    Followers,
    /// Every server.
    All,
}

impl NodeRef {
    /// Whether it can name more than one server.
    pub fn is_many(self) -> bool {
        matches!(self, NodeRef::Followers | NodeRef::All)
    }

    /// The servers it names now (0-based), or `None` when there is no such node.
    pub fn resolve(self, cluster: &SimCluster) -> Option<Vec<usize>> {
        let servers = 0..cluster.servers.len();
        match self {
            NodeRef::Index(i) => Some(vec![i]),
            NodeRef::Leader => cluster.leader().map(|leader| vec![leader]),
            NodeRef::Follower => {
                let leader = cluster.leader();
                servers
                    .clone()
                    .find(|&i| Some(i) != leader && cluster.servers[i].status().is_some())
                    .map(|i| vec![i])
            }
            NodeRef::Followers => {
                let leader = cluster.leader();
                Some(servers.filter(|&i| Some(i) != leader).collect())
            }
            NodeRef::All => Some(servers.collect()),
        }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeRef::Index(i) => write!(f, "node{}", i + 1),
            NodeRef::Leader => f.write_str("the leader"),
            NodeRef::Follower => f.write_str("a follower"),
            NodeRef::Followers => f.write_str("the followers"),
            NodeRef::All => f.write_str("every node"),
        }
    }
}

/// A drawn value: the same for every node the fault applies to, or each node's own (a range on
/// a target that names several nodes draws one value per node).
#[derive(Debug, Clone, PartialEq)]
pub enum PerNode<T> {
    One(T),
    /// Indexed by node (0-based), one per server of the topology.
    Each(Vec<T>),
}

impl<T: Copy> PerNode<T> {
    /// The value for `node` (0-based).
    pub fn of(&self, node: usize) -> T {
        match self {
            PerNode::One(value) => *value,
            PerNode::Each(values) => values[node],
        }
    }
}

/// One fault drawn for a seed: its kind and the values of the fields the kind takes.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub kind: &'static FaultKind,
    pub node: Option<NodeRef>,
    /// 0-based node indexes.
    pub groups: Vec<Vec<usize>>,
    pub from: Option<NodeRef>,
    pub to: Option<NodeRef>,
    pub rate: Option<PerNode<f64>>,
    pub jump_ms: Option<PerNode<i64>>,
    pub packet_loss: Option<f64>,
    pub latency_ms: Option<(u64, u64)>,
    pub requests_per_s: Option<u64>,
    pub serves_per_s: Option<u64>,
}

impl Action {
    /// An action of `kind` with no fields set.
    pub fn new(kind: &'static FaultKind) -> Action {
        Action {
            kind,
            node: None,
            groups: Vec::new(),
            from: None,
            to: None,
            rate: None,
            jump_ms: None,
            packet_loss: None,
            latency_ms: None,
            requests_per_s: None,
            serves_per_s: None,
        }
    }

    /// Resolves the targets now; `None` when one of them names no node at this moment.
    pub fn resolve(&self, cluster: &SimCluster) -> Option<Targets> {
        let single = |node: Option<NodeRef>| -> Option<Option<usize>> {
            match node {
                None => Some(None),
                Some(node) => node.resolve(cluster).map(|nodes| nodes.first().copied()),
            }
        };
        Some(Targets {
            nodes: match self.node {
                None => Vec::new(),
                Some(node) => node.resolve(cluster)?,
            },
            from: single(self.from)?,
            to: single(self.to)?,
        })
    }

    /// The targets as written, for a skipped fault's line.
    pub fn described(&self) -> String {
        let mut parts = Vec::new();
        if let Some(node) = self.node {
            parts.push(node.to_string());
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            parts.push(format!("from {from} to {to}"));
        }
        format!("{} {}", self.kind.name, parts.join(" "))
    }
}

/// An action's targets, resolved when it fires (0-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    pub nodes: Vec<usize>,
    pub from: Option<usize>,
    pub to: Option<usize>,
}

/// State the fault tasks share: nodes they paused (resumed before the liveness check).
#[derive(Default)]
pub struct FaultState {
    paused: Mutex<BTreeSet<usize>>,
    /// Keys whose stored copy a `bit_rot` fault damaged somewhere (their removal is legal).
    damaged: Mutex<BTreeSet<Vec<u8>>>,
    /// Running `overload` faults: their clients' stop flag and the nodes whose CPU they slow.
    overloads: Mutex<Vec<(Arc<std::sync::atomic::AtomicBool>, Vec<usize>)>>,
}

impl FaultState {
    fn paused(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        self.paused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keys a `bit_rot` fault damaged.
    pub fn damaged_keys(&self) -> BTreeSet<Vec<u8>> {
        self.damaged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Resumes every node a fault paused and did not resume, and ends every overload.
    pub fn resume_all(&self, cluster: &SimCluster) {
        let paused = std::mem::take(&mut *self.paused());
        for node in paused {
            cluster.resume(node);
        }
        let overloads = std::mem::take(
            &mut *self
                .overloads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for (stop, nodes) in overloads {
            end_overload(cluster, &stop, &nodes);
        }
    }
}

/// A fault firing: the cluster, the action and its resolved targets.
pub struct Firing<'a> {
    pub cluster: &'a Arc<SimCluster>,
    pub state: &'a Arc<FaultState>,
    pub action: &'a Action,
    pub targets: &'a Targets,
    /// `" for 1500 ms"` when the fault will be undone, else empty.
    pub for_ms: String,
}

impl Firing<'_> {
    /// `node2 (the leader)` for a role, `node2` for a numbered node.
    fn who(&self) -> String {
        let nodes = names(&self.targets.nodes);
        match self.action.node {
            None | Some(NodeRef::Index(_)) => nodes,
            Some(role) => format!("{nodes} ({role})"),
        }
    }
}

/// The coverage condition (`point@condition`, see `hyperion::runtime::coverage`) a fault of this
/// kind makes active: from its start until it is undone, or until the heal for a fault with no
/// duration. `restart` and `heal` end faults rather than start one.
pub fn coverage_condition(kind: &str) -> Option<&'static str> {
    match kind {
        "isolate" | "partition" | "one_way" => Some("partition"),
        "clock" => Some("clock_skew"),
        "pause" | "pause_in_turn" => Some("pause"),
        "kill" | "power_loss" => Some("crash"),
        "disk_eio" | "bit_rot" | "disk_full" => Some("disk_fault"),
        "overload" => Some("overload"),
        "net" => Some("network"),
        _ => None,
    }
}

/// What applying a fault did.
pub struct Applied {
    /// The timeline's `FAULT` line.
    pub text: String,
    /// How to undo it (`None`: nothing to undo).
    pub undo: Option<Undo>,
}

/// How to undo an applied fault.
pub struct Undo {
    /// The timeline's `UNDO` line.
    pub text: String,
    pub run: Box<dyn FnOnce()>,
}

fn undo(text: impl Into<String>, run: impl FnOnce() + 'static) -> Option<Undo> {
    Some(Undo {
        text: text.into(),
        run: Box::new(run),
    })
}

fn name(node: usize) -> String {
    format!("node{}", node + 1)
}

fn names(nodes: &[usize]) -> String {
    nodes.iter().map(|&n| name(n)).collect::<Vec<_>>().join(",")
}

fn isolate(f: &Firing<'_>) -> Applied {
    let nodes = f.targets.nodes.clone();
    for &n in &nodes {
        f.cluster.isolate(n);
    }
    let cluster = Arc::clone(f.cluster);
    Applied {
        text: format!("isolate {} from the other servers{}", f.who(), f.for_ms),
        undo: undo(
            format!(
                "{} {}",
                names(&nodes),
                if nodes.len() == 1 {
                    "rejoins"
                } else {
                    "rejoin"
                }
            ),
            move || {
                for &n in &nodes {
                    let rest: Vec<usize> = (0..cluster.servers.len()).filter(|&i| i != n).collect();
                    cluster.unpartition(&[n], &rest);
                }
            },
        ),
    }
}

fn partition(f: &Firing<'_>) -> Applied {
    let groups = f.action.groups.clone();
    for (i, a) in groups.iter().enumerate() {
        for b in &groups[i + 1..] {
            f.cluster.partition(a, b);
        }
    }
    let shown = groups
        .iter()
        .map(|g| format!("[{}]", names(g)))
        .collect::<Vec<_>>()
        .join(" | ");
    let cluster = Arc::clone(f.cluster);
    Applied {
        text: format!("partition {shown}{}", f.for_ms),
        undo: undo(format!("partition {shown} heals"), move || {
            for (i, a) in groups.iter().enumerate() {
                for b in &groups[i + 1..] {
                    cluster.unpartition(a, b);
                }
            }
        }),
    }
}

fn one_way(f: &Firing<'_>) -> Applied {
    // Needed fields, resolved by `Action::resolve`.
    let (Some(from), Some(to)) = (f.targets.from, f.targets.to) else {
        unreachable!("a one_way fault has `from` and `to` (validated at load)")
    };
    f.cluster.cut_one_way(from, to);
    let cluster = Arc::clone(f.cluster);
    Applied {
        text: format!("cut {} -> {} (one way){}", name(from), name(to), f.for_ms),
        undo: undo(
            format!("link {} -> {} restored", name(from), name(to)),
            move || cluster.heal_one_way(from, to),
        ),
    }
}

fn clock(f: &Firing<'_>) -> Applied {
    let mut shown = Vec::new();
    let mut clocks = Vec::new();
    for &n in &f.targets.nodes {
        let clock = f.cluster.servers[n].clock.clone();
        let mut what = Vec::new();
        if let Some(rate) = &f.action.rate {
            clock.set_rate(rate.of(n));
            what.push(format!("rate {}", rate.of(n)));
        }
        if let Some(jump_ms) = &f.action.jump_ms {
            clock.jump_ms(jump_ms.of(n));
            what.push(format!("jump {:+} ms", jump_ms.of(n)));
        }
        shown.push((n, what.join(", ")));
        clocks.push(clock);
    }
    let text = match shown.as_slice() {
        [(_, what)] => format!("clock of {}: {what}{}", f.who(), f.for_ms),
        [(_, what), rest @ ..] if rest.iter().all(|(_, other)| other == what) => {
            format!("clocks of {}: {what}{}", f.who(), f.for_ms)
        }
        _ => format!(
            "clocks of {}: {}{}",
            f.who(),
            shown
                .iter()
                .map(|(n, what)| format!("{} {what}", name(*n)))
                .collect::<Vec<_>>()
                .join("; "),
            f.for_ms
        ),
    };
    Applied {
        text,
        undo: undo(
            format!("clock of {} back to rate 1", names(&f.targets.nodes)),
            move || {
                for clock in clocks {
                    clock.set_rate(1.0);
                }
            },
        ),
    }
}

fn pause(f: &Firing<'_>) -> Applied {
    let nodes = f.targets.nodes.clone();
    for &n in &nodes {
        f.cluster.pause(n);
        f.state.paused().insert(n);
    }
    let (cluster, state) = (Arc::clone(f.cluster), Arc::clone(f.state));
    Applied {
        text: format!("pause {}{}", f.who(), f.for_ms),
        undo: undo(format!("resume {}", names(&nodes)), move || {
            for n in nodes {
                cluster.resume(n);
                state.paused().remove(&n);
            }
        }),
    }
}

/// Pauses the targets the next time their node loop reaches its preemption point: inside a turn,
/// after the tick and before the inputs are served (a SIGSTOP landing mid-turn).
fn pause_in_turn(f: &Firing<'_>) -> Applied {
    let nodes = f.targets.nodes.clone();
    for &n in &nodes {
        hyperion::runtime::sim::pause_at_next_preemption_point(f.cluster.servers[n].handle.id());
        f.state.paused().insert(n);
    }
    let (cluster, state) = (Arc::clone(f.cluster), Arc::clone(f.state));
    Applied {
        text: format!(
            "pause {} inside a turn of its node loop{}",
            f.who(),
            f.for_ms
        ),
        undo: undo(format!("resume {}", names(&nodes)), move || {
            for n in nodes {
                cluster.resume(n);
                state.paused().remove(&n);
            }
        }),
    }
}

/// Kills the targets (cutting their power first with `power_loss`); undone by a restart.
fn stop(f: &Firing<'_>, power_loss: bool) -> Applied {
    let nodes = f.targets.nodes.clone();
    for &n in &nodes {
        if power_loss {
            f.cluster.power_loss(n);
        } else {
            f.cluster.kill(n);
        }
    }
    let what = if power_loss {
        "power loss (unsynced writes lost) of"
    } else {
        "kill"
    };
    let cluster = Arc::clone(f.cluster);
    Applied {
        text: format!("{what} {}{}", f.who(), f.for_ms),
        undo: undo(format!("restart {}", names(&nodes)), move || {
            for n in nodes {
                cluster.restart(n);
            }
        }),
    }
}

/// The targets' disks fail every sync with EIO until undone (the node must exit, never retry).
fn disk_eio(f: &Firing<'_>) -> Applied {
    let nodes = f.targets.nodes.clone();
    for &n in &nodes {
        f.cluster.servers[n].disk.fail_syncs(true);
    }
    let cluster = Arc::clone(f.cluster);
    Applied {
        text: format!("disk of {} fails every sync (EIO){}", f.who(), f.for_ms),
        undo: undo(
            format!("disk of {} works again", names(&nodes)),
            move || {
                for n in nodes {
                    cluster.servers[n].disk.fail_syncs(false);
                }
            },
        ),
    }
}

/// The targets' disks are full: not one more byte fits (ENOSPC) until undone. The node must
/// give back its reserve, refuse client writes, and go on.
fn disk_full(f: &Firing<'_>) -> Applied {
    let nodes = f.targets.nodes.clone();
    for &n in &nodes {
        let disk = &f.cluster.servers[n].disk;
        disk.set_capacity(Some(disk.used_bytes()));
    }
    let cluster = Arc::clone(f.cluster);
    Applied {
        text: format!("disk of {} is full (ENOSPC){}", f.who(), f.for_ms),
        undo: undo(
            format!("disk of {} has space again", names(&nodes)),
            move || {
                for n in nodes {
                    cluster.servers[n].disk.set_capacity(None);
                }
            },
        ),
    }
}

/// Flips a bit of one stored entry (seeded choice) on each target replica.
fn bit_rot(f: &Firing<'_>) -> Applied {
    let mut shown = Vec::new();
    for &n in &f.targets.nodes {
        let pick = madsim::rand::random::<u64>();
        let damaged = f.cluster.servers[n]
            .replica()
            .and_then(|replica| replica.inject_bit_rot(pick));
        shown.push(match damaged {
            Some(key) => {
                let text = format!("{} (key {:?})", name(n), String::from_utf8_lossy(&key));
                f.state
                    .damaged
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key);
                text
            }
            None => format!("{} (nothing stored)", name(n)),
        });
    }
    Applied {
        text: format!("bit rot in a stored entry of {}", shown.join(", ")),
        undo: None,
    }
}

fn kill(f: &Firing<'_>) -> Applied {
    stop(f, false)
}

fn power_loss(f: &Firing<'_>) -> Applied {
    stop(f, true)
}

fn restart(f: &Firing<'_>) -> Applied {
    for &n in &f.targets.nodes {
        // Always kill first: a restart without a kill keeps the sockets bound (DESIGN §3).
        f.cluster.kill(n);
        f.cluster.restart(n);
    }
    Applied {
        text: format!("restart {}", f.who()),
        undo: None,
    }
}

fn heal(f: &Firing<'_>) -> Applied {
    f.cluster.heal();
    Applied {
        text: "heal every link between servers".to_string(),
        undo: None,
    }
}

/// How often an `overload` fault's clients send their next burst.
pub const OVERLOAD_TICK: Duration = Duration::from_millis(1);

/// Clients flood the targets with linearizable reads at `requests_per_s`, and each target's
/// CPU serves at most `serves_per_s` client requests (a node loop that cannot keep up: a
/// throttled or shared CPU). The reads enter where a Get does below the API layer (whose
/// per-client rate limit a flood from many addresses passes); their answers are dropped.
fn overload(f: &Firing<'_>) -> Applied {
    // Needed fields, validated at load.
    let (Some(rate), Some(serves)) = (f.action.requests_per_s, f.action.serves_per_s) else {
        unreachable!("an overload fault has `requests_per_s` and `serves_per_s`")
    };
    let nodes = f.targets.nodes.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cost = Duration::from_nanos(1_000_000_000 / serves);
    for &n in &nodes {
        let server = &f.cluster.servers[n];
        hyperion::runtime::sim::set_cpu_cost(server.handle.id(), cost);
        let Some(replica) = server.replica() else {
            continue;
        };
        let stop = Arc::clone(&stop);
        server.handle.spawn(async move {
            let per_tick = (rate / 1000).max(1);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..per_tick {
                    let replica = replica.clone();
                    madsim::task::spawn(async move {
                        let _ = replica.linearizable_barrier().await;
                    });
                }
                madsim::time::sleep(OVERLOAD_TICK).await;
            }
        });
    }
    f.state
        .overloads
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((Arc::clone(&stop), nodes.clone()));
    let cluster = Arc::clone(f.cluster);
    Applied {
        text: format!(
            "overload {}: clients send {rate} reads/s, its CPU serves {serves} requests/s{}",
            f.who(),
            f.for_ms
        ),
        undo: undo(format!("load on {} ends", names(&nodes)), move || {
            end_overload(&cluster, &stop, &nodes);
        }),
    }
}

fn end_overload(cluster: &SimCluster, stop: &std::sync::atomic::AtomicBool, nodes: &[usize]) {
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for &n in nodes {
        hyperion::runtime::sim::set_cpu_cost(cluster.servers[n].handle.id(), Duration::ZERO);
    }
}

/// The `net` fault's latency when the file gives none, in ms.
pub const NET_LATENCY_MS_DEFAULT: (u64, u64) = (1, 10);

fn net(f: &Firing<'_>) -> Applied {
    let packet_loss = f.action.packet_loss.unwrap_or(0.0);
    let (low, high) = f.action.latency_ms.unwrap_or(NET_LATENCY_MS_DEFAULT);
    NetSim::current().update_config(|config| {
        config.packet_loss_rate = packet_loss;
        config.send_latency = Duration::from_millis(low)..Duration::from_millis(high + 1);
    });
    Applied {
        text: format!(
            "network: packet loss {packet_loss}, latency {low}-{high} ms{}",
            f.for_ms
        ),
        undo: undo("network back to defaults", reset_network),
    }
}

/// Puts the simulated network back to madsim's defaults (no loss, default latency).
pub fn reset_network() {
    NetSim::current().update_config(|config| *config = Default::default());
}
