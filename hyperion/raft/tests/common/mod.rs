//! Deterministic in-process cluster harness (no async, no threads): N Raft cores, each with a
//! `SimDisk`-backed `Storage`, over a simulated network with loss, duplication, reordering
//! (random latency), partitions (per directed link), crashes, power loss and per-node clock
//! rates. Real time is the harness's global clock `now_us`; node `i` reads
//! `offset_i + rate_i × now`.
//!
//! After every event the [`Checker`] verifies election safety, log matching, leader
//! completeness, state-machine safety, monotonic term/commit/applied, lease safety (at no real
//! instant do two nodes hold a valid lease) and read linearizability (a released read index is
//! ≥ every index known committed when the read was issued).
//!
//! `HARNESS_TRACE=1` prints every Ready handled (for debugging a failing seed).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use hyperion_raft::storage::{SimDisk, Storage, StorageError, SyncPolicy};
use hyperion_raft::{Config, Entry, EntryKind, Message, MessageBody, NodeId, RaftNode, Role};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Harness parameters.
#[derive(Clone, Debug)]
pub struct Opts {
    pub n: usize,
    pub seed: u64,
    pub config: Config,
    pub policy: SyncPolicy,
    /// Clock rate of each node in parts per million (1_000_000 = real time).
    pub rates_ppm: Vec<u64>,
    /// Deliver messages automatically after a random latency; otherwise queue them for
    /// explicit `deliver` (transcripts).
    pub auto_deliver: bool,
    pub latency_ms: (u64, u64),
    /// Extra latency of every InstallSnapshot message: the time a large snapshot takes on the
    /// wire (the harness's snapshots are a few bytes; production ones can be gigabytes).
    pub snapshot_transfer_ms: u64,
    /// Lose every read-index answer (a peer queue that overflowed, a batch lost to a timeout).
    pub drop_read_index_responses: bool,
    pub loss: f64,
    pub duplicate: f64,
    /// Global interval between ticks of every node.
    pub tick_ms: u64,
    /// Record human-readable events (transcripts); off in the randomized tests for speed.
    pub record_events: bool,
    /// Give each node clock a random offset (off in transcripts for readable times).
    pub random_offsets: bool,
}

impl Opts {
    pub fn new(n: usize, seed: u64) -> Opts {
        Opts {
            n,
            seed,
            // Small bounds so that batching, the in-flight window, compaction and
            // InstallSnapshot are exercised by short scenarios.
            config: Config {
                tick_interval_ms: 25,
                inflight_appends_max: 3,
                append_bytes_max: 8,
                compaction_threshold_entries: 6,
                ..Config::default()
            },
            policy: SyncPolicy::Always,
            rates_ppm: vec![1_000_000; n],
            auto_deliver: true,
            latency_ms: (1, 20),
            snapshot_transfer_ms: 0,
            drop_read_index_responses: false,
            loss: 0.0,
            duplicate: 0.0,
            tick_ms: 25,
            record_events: false,
            random_offsets: true,
        }
    }
}

/// The deterministic state machine: a hash chain over applied entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sm {
    pub applied: u64,
    pub hash: u64,
}

impl Sm {
    fn apply(&mut self, e: &Entry) {
        assert_eq!(
            e.index,
            self.applied + 1,
            "state machine applied out of order"
        );
        let mut h = self.hash ^ 0xcbf2_9ce4_8422_2325;
        let data: &[u8] = match &e.kind {
            EntryKind::NoOp => b"",
            EntryKind::Command(d) => d,
        };
        for b in e
            .index
            .to_le_bytes()
            .iter()
            .chain(e.term.to_le_bytes().iter())
            .chain(data)
        {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.hash = h;
        self.applied = e.index;
    }
    fn encode(&self) -> Vec<u8> {
        let mut v = self.applied.to_le_bytes().to_vec();
        v.extend_from_slice(&self.hash.to_le_bytes());
        v
    }
    fn decode(data: &[u8]) -> Sm {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&data[..8]);
        b.copy_from_slice(&data[8..16]);
        Sm {
            applied: u64::from_le_bytes(a),
            hash: u64::from_le_bytes(b),
        }
    }
}

pub struct Slot {
    pub id: NodeId,
    pub disk: SimDisk,
    pub storage: Option<Storage<SimDisk>>,
    pub node: Option<RaftNode>,
    pub sm: Sm,
    pub rate_ppm: u64,
    pub offset_ms: u64,
    pub restarts: u64,
    /// Times the node was wiped and rejoined (its WAL was corrupt).
    pub rejoins: u64,
    /// Observations for the monotonicity checks (reset on restart except `durable_term`).
    pub seen_term: u64,
    pub seen_commit: u64,
    pub seen_applied: u64,
    pub seen_role: Role,
    pub seen_lease: bool,
    pub durable_term: u64,
}

#[derive(Clone, Debug)]
pub struct InFlight {
    pub deliver_at_us: u64,
    pub seq: u64,
    pub msg: Message,
}

/// Safety checker state.
#[derive(Default)]
pub struct Checker {
    pub leaders: BTreeMap<u64, NodeId>,
    /// (index, term) → (payload, previous entry's term): log matching.
    pub entries: BTreeMap<(u64, u64), (EntryKind, Option<u64>)>,
    /// index → entry, for everything any node applied.
    pub committed: BTreeMap<u64, Entry>,
    /// index → state-machine hash after applying it.
    pub sm_hash: BTreeMap<u64, u64>,
    pub max_commit: u64,
    pub reads: BTreeMap<(NodeId, u64), u64>,
    pub violations: Vec<String>,
    pub reads_served: u64,
    pub lease_reads_possible: u64,
    pub max_term: u64,
    /// (voter, term) → the candidate it voted for: each node votes once per term (§5.2).
    pub votes: BTreeMap<(NodeId, u64), NodeId>,
    /// Coverage counters: message kinds sent, snapshots, reads.
    pub stats: BTreeMap<&'static str, u64>,
}

pub struct Cluster {
    pub opts: Opts,
    pub now_us: u64,
    pub nodes: Vec<Slot>,
    pub net: Vec<InFlight>,
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    pub rng: ChaCha8Rng,
    pub checker: Checker,
    pub events: Vec<String>,
    next_seq: u64,
    next_tick_us: u64,
    next_request: u64,
}

impl Cluster {
    pub fn new(opts: Opts) -> Cluster {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let nodes = (0..opts.n)
            .map(|i| Slot {
                id: i as NodeId + 1,
                disk: SimDisk::new(opts.seed.wrapping_mul(31).wrapping_add(i as u64)),
                storage: None,
                node: None,
                sm: Sm::default(),
                rate_ppm: opts.rates_ppm[i],
                offset_ms: if opts.random_offsets {
                    rng.random_range(0..1_000_000)
                } else {
                    0
                },
                restarts: 0,
                rejoins: 0,
                seen_term: 0,
                seen_commit: 0,
                seen_applied: 0,
                seen_role: Role::Follower,
                seen_lease: false,
                durable_term: 0,
            })
            .collect();
        let mut c = Cluster {
            opts,
            now_us: 0,
            nodes,
            net: Vec::new(),
            blocked: BTreeSet::new(),
            rng,
            checker: Checker::default(),
            events: Vec::new(),
            next_seq: 0,
            next_tick_us: 0,
            next_request: 1,
        };
        for i in 0..c.opts.n {
            c.start(i);
        }
        c
    }

    pub fn voters(&self) -> Vec<NodeId> {
        (1..=self.opts.n as NodeId).collect()
    }

    pub fn clock_ms(&self, i: usize) -> u64 {
        let s = &self.nodes[i];
        s.offset_ms + (u128::from(self.now_us) * u128::from(s.rate_ppm) / 1_000_000_000) as u64
    }

    pub fn node(&self, id: NodeId) -> Option<&RaftNode> {
        self.nodes[(id - 1) as usize].node.as_ref()
    }

    fn start(&mut self, i: usize) {
        let clock = self.clock_ms(i);
        let policy = self.opts.policy;
        let voters = self.voters();
        let slot = &mut self.nodes[i];
        let mutations = &self.opts.config.mutations;
        let mut wiped = false;
        let (storage, recovered) =
            match Storage::open_with(slot.disk.clone(), policy, clock, mutations) {
                Ok(opened) => opened,
                Err(StorageError::CorruptWal { .. }) => {
                    // What the operator does (the error says so): wipe the node and rejoin it,
                    // abstaining until it has caught up.
                    slot.disk.wipe();
                    let (mut storage, mut recovered) =
                        Storage::open_with(slot.disk.clone(), policy, clock, mutations)
                            .expect("an empty disk opens");
                    storage.begin_catch_up().expect("sim disk");
                    recovered.unsynced_loss_possible = true;
                    slot.rejoins += 1;
                    wiped = true;
                    (storage, recovered)
                }
                Err(error) => panic!("sim disk recovery: {error}"),
            };
        if wiped {
            slot.durable_term = 0;
        } else if recovered.hard_state.term < slot.durable_term && !mutations.forget_term_and_vote {
            self.checker.violations.push(format!(
                "durability: n{} recovered term {} below its synced term {}",
                slot.id, recovered.hard_state.term, slot.durable_term
            ));
        }
        slot.sm = match &recovered.snapshot {
            Some(s) => Sm::decode(&s.data),
            None => Sm::default(),
        };
        let rng = ChaCha8Rng::seed_from_u64(
            self.opts.seed ^ (slot.id << 48) ^ (slot.restarts << 32) ^ 0x5eed,
        );
        let node = RaftNode::new(
            slot.id,
            voters,
            self.opts.config.clone(),
            rng,
            recovered,
            clock,
        )
        .expect("valid node");
        slot.seen_term = node.term();
        slot.seen_commit = node.commit_index();
        slot.seen_applied = node.applied_index();
        slot.seen_role = Role::Follower;
        slot.seen_lease = false;
        slot.node = Some(node);
        slot.storage = Some(storage);
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[(id - 1) as usize].node.is_some()
    }

    pub fn crash(&mut self, id: NodeId) {
        let slot = &mut self.nodes[(id - 1) as usize];
        if slot.node.take().is_some() {
            slot.storage = None;
            slot.disk.crash();
            if self.opts.record_events {
                self.events.push(format!("n{id} crashed"));
            }
        }
    }

    pub fn power_loss(&mut self, id: NodeId) {
        let slot = &mut self.nodes[(id - 1) as usize];
        slot.node = None;
        slot.storage = None;
        slot.disk.power_loss();
        if self.opts.record_events {
            self.events.push(format!("n{id} lost power"));
        }
    }

    pub fn restart(&mut self, id: NodeId) {
        let i = (id - 1) as usize;
        if self.nodes[i].node.is_some() {
            return;
        }
        self.nodes[i].restarts += 1;
        self.start(i);
        let n = self.nodes[i]
            .node
            .as_ref()
            .map(|n| (n.term(), n.last_index(), n.commit_index()));
        if let Some((t, l, c)) = n {
            self.events
                .push(format!("n{id} restarted term={t} last={l} commit={c}"));
        }
        self.check();
    }

    /// Advances global time by `ms`, ticking every node every `tick_ms` and (in auto mode)
    /// delivering messages when due.
    pub fn advance(&mut self, ms: u64) {
        let target = self.now_us + ms * 1000;
        loop {
            let next_msg = if self.opts.auto_deliver {
                self.net.iter().map(|m| (m.deliver_at_us, m.seq)).min()
            } else {
                None
            };
            let next_tick = self.next_tick_us;
            match next_msg {
                Some((at, seq)) if at <= next_tick && at <= target => {
                    self.now_us = self.now_us.max(at);
                    let pos = self.net.iter().position(|m| m.seq == seq).expect("present");
                    let m = self.net.swap_remove(pos);
                    self.deliver(m.msg);
                }
                _ if next_tick <= target => {
                    self.now_us = self.now_us.max(next_tick);
                    self.next_tick_us = next_tick + self.opts.tick_ms * 1000;
                    self.tick_all();
                }
                _ => break,
            }
        }
        self.now_us = target;
    }

    pub fn tick_all(&mut self) {
        for i in 0..self.nodes.len() {
            let clock = self.clock_ms(i);
            let slot = &mut self.nodes[i];
            if let (Some(node), Some(storage)) = (slot.node.as_mut(), slot.storage.as_mut()) {
                node.tick(clock);
                storage.tick(clock).expect("sim disk");
                self.process(i);
            }
        }
        self.check();
    }

    fn link_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked.contains(&(from, to))
    }

    /// Delivers one message now (if its link is open and the target is up).
    pub fn deliver(&mut self, msg: Message) {
        if self.link_blocked(msg.from, msg.to) {
            if !self.opts.auto_deliver && self.opts.record_events {
                self.events.push(format!("dropped {msg}"));
            }
            return;
        }
        let i = (msg.to - 1) as usize;
        let clock = self.clock_ms(i);
        if !self.opts.auto_deliver && self.opts.record_events {
            self.events.push(format!("{msg}"));
        }
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        node.tick(clock);
        node.step(msg).expect("well-addressed message");
        self.process(i);
        self.check();
    }

    fn enqueue(&mut self, msg: Message) {
        *self.checker.stats.entry(msg.body.name()).or_default() += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        if !self.opts.auto_deliver {
            self.net.push(InFlight {
                deliver_at_us: self.now_us,
                seq,
                msg,
            });
            return;
        }
        if self.link_blocked(msg.from, msg.to) || self.rng.random_bool(self.opts.loss) {
            return;
        }
        if self.opts.drop_read_index_responses
            && matches!(msg.body, MessageBody::ReadIndexResponse { .. })
        {
            return;
        }
        let (mut lo, mut hi) = self.opts.latency_ms;
        if matches!(msg.body, MessageBody::InstallSnapshot { .. }) {
            lo += self.opts.snapshot_transfer_ms;
            hi += self.opts.snapshot_transfer_ms;
        }
        let copies = if self.rng.random_bool(self.opts.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = self.now_us + self.rng.random_range(lo * 1000..=hi * 1000);
            let seq = self.next_seq;
            self.next_seq += 1;
            self.net.push(InFlight {
                deliver_at_us: at,
                seq,
                msg: msg.clone(),
            });
        }
    }

    /// Handles every pending Ready of node `i` the way a server would.
    pub fn process(&mut self, i: usize) {
        loop {
            let clock = self.clock_ms(i);
            let slot = &mut self.nodes[i];
            let id = slot.id;
            let (Some(node), Some(storage)) = (slot.node.as_mut(), slot.storage.as_mut()) else {
                return;
            };
            if !node.has_ready() {
                return;
            }
            let ready = node.ready();
            for e in &ready.entries {
                let prev = if e.index > 1 {
                    node.term_at(e.index - 1)
                } else {
                    Some(0)
                };
                let key = (e.index, e.term);
                match self.checker.entries.get(&key) {
                    Some((kind, p)) => {
                        if *kind != e.kind || (p.is_some() && prev.is_some() && *p != prev) {
                            self.checker.violations.push(format!(
                                "log matching: n{id} has {key:?} = {:?}/prev {prev:?}, seen {kind:?}/prev {p:?}",
                                e.kind
                            ));
                        }
                    }
                    None => {
                        self.checker.entries.insert(key, (e.kind.clone(), prev));
                    }
                }
            }
            if std::env::var("HARNESS_TRACE").is_ok() {
                eprintln!(
                    "n{id} t={} ready#{} hs={:?} snap={:?} install={} entries={:?} committed={:?} stable?",
                    self.now_us,
                    ready.number,
                    ready.hard_state,
                    ready.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)),
                    ready.snapshot_install,
                    ready.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
                    ready.committed_entries.iter().map(|e| e.index).collect::<Vec<_>>(),
                );
            }
            let durable = storage.persist(&ready, clock).expect("sim disk");
            if let Some(hs) = ready.hard_state {
                slot.durable_term = slot.durable_term.max(hs.term);
                // A node's vote for itself elects it only if it is a candidate in that term; a
                // follower's own vote only blocks voting again (after a rejoin).
                let counts = |v: NodeId| v != id || node.role() != Role::Follower;
                if let Some(v) = hs.vote.filter(|&v| counts(v)) {
                    match self.checker.votes.insert((id, hs.term), v) {
                        Some(old) if old != v => self.checker.violations.push(format!(
                            "vote safety: n{id} voted for n{old} and n{v} in term {}",
                            hs.term
                        )),
                        _ => {}
                    }
                }
            }
            if ready.snapshot.is_some() {
                let key = if ready.snapshot_install {
                    "snapshot_installed"
                } else {
                    "snapshot_taken"
                };
                *self.checker.stats.entry(key).or_default() += 1;
            }
            if let (Some(s), true) = (&ready.snapshot, ready.snapshot_install) {
                slot.sm = Sm::decode(&s.data);
                assert_eq!(slot.sm.applied, s.meta.index);
                check_sm(&mut self.checker, id, &slot.sm);
            }
            for e in &ready.committed_entries {
                slot.sm.apply(e);
                check_sm(&mut self.checker, id, &slot.sm);
                match self.checker.committed.get(&e.index) {
                    Some(c) if c != e => self.checker.violations.push(format!(
                        "state machine safety: n{id} applied {e:?} but {c:?} was applied"
                    )),
                    Some(_) => {}
                    None => {
                        self.checker.committed.insert(e.index, e.clone());
                    }
                }
            }
            for r in &ready.reads {
                assert!(slot.sm.applied >= r.index, "read released before apply");
                self.checker.reads_served += 1;
                if let Some(min) = self.checker.reads.remove(&(id, r.request_id)) {
                    if r.index < min {
                        self.checker.violations.push(format!(
                            "stale read: n{id} read {} at index {} < {min} committed before it",
                            r.request_id, r.index
                        ));
                    }
                }
                self.events
                    .push(format!("n{id} read {} ok index={}", r.request_id, r.index));
            }
            for (rid, err) in &ready.failed_reads {
                self.checker.reads.remove(&(id, *rid));
                if self.opts.record_events {
                    self.events.push(format!("n{id} read {rid} failed: {err}"));
                }
            }
            if let Some(index) = ready.snapshot_request {
                assert_eq!(slot.sm.applied, index);
                node.snapshot_taken(index, slot.sm.encode())
                    .expect("snapshot in range");
            }
            let mut out = ready.messages;
            out.extend(ready.persisted_messages.release(durable));
            node.advance(durable);
            if storage.catching_up() && !node.abstaining() {
                storage.mark_caught_up().expect("sim disk");
            }
            for m in out {
                self.enqueue(m);
            }
        }
    }

    /// Runs every safety check; records violations.
    pub fn check(&mut self) {
        let mut leases = Vec::new();
        for i in 0..self.nodes.len() {
            let clock = self.clock_ms(i);
            let slot = &mut self.nodes[i];
            let id = slot.id;
            let Some(node) = slot.node.as_ref() else {
                continue;
            };
            let ck = &mut self.checker;
            ck.max_commit = ck.max_commit.max(node.commit_index());
            ck.max_term = ck.max_term.max(node.term());
            if node.term() < slot.seen_term {
                ck.violations.push(format!("n{id} term decreased"));
            }
            if node.commit_index() < slot.seen_commit {
                ck.violations.push(format!("n{id} commit decreased"));
            }
            if node.applied_index() < slot.seen_applied {
                ck.violations.push(format!("n{id} applied decreased"));
            }
            let role = node.role();
            let newly_leader = role == Role::Leader
                && (slot.seen_role != Role::Leader || slot.seen_term != node.term());
            if (role != slot.seen_role || node.term() != slot.seen_term) && self.opts.record_events
            {
                self.events.push(format!(
                    "n{id} is {role:?} term={} last={} commit={}",
                    node.term(),
                    node.last_index(),
                    node.commit_index()
                ));
            }
            if self.opts.record_events
                && node.commit_index() > slot.seen_commit
                && role == slot.seen_role
            {
                self.events
                    .push(format!("n{id} commit={}", node.commit_index()));
            }
            let lease = node.has_valid_lease(clock);
            if self.opts.record_events && lease != slot.seen_lease {
                self.events.push(format!(
                    "n{id} lease {}",
                    if lease { "acquired" } else { "lost" }
                ));
            }
            slot.seen_lease = lease;
            slot.seen_term = node.term();
            slot.seen_commit = node.commit_index();
            slot.seen_applied = node.applied_index();
            slot.seen_role = role;
            if role == Role::Leader {
                match ck.leaders.get(&node.term()) {
                    Some(other) if *other != id => ck.violations.push(format!(
                        "election safety: n{id} and n{other} both lead term {}",
                        node.term()
                    )),
                    Some(_) => {}
                    None => {
                        ck.leaders.insert(node.term(), id);
                    }
                }
                if newly_leader {
                    for (index, e) in &ck.committed {
                        if *index <= node.snapshot_index() {
                            continue;
                        }
                        if node.term_at(*index) != Some(e.term) {
                            ck.violations.push(format!(
                                "leader completeness: n{id} leads term {} without committed {index}/{}",
                                node.term(),
                                e.term
                            ));
                            break;
                        }
                    }
                }
                if node.has_valid_lease(clock) {
                    leases.push((id, node.term(), node.lease_valid_until()));
                }
            }
        }
        if leases.len() > 1 {
            self.checker.violations.push(format!(
                "lease safety: at t={}us several valid leases {leases:?}",
                self.now_us
            ));
        }
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> Result<std::ops::Range<u64>, String> {
        let i = (id - 1) as usize;
        let clock = self.clock_ms(i);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return Err("down".into());
        };
        node.tick(clock);
        let r = node.propose(vec![data.to_vec()]).map_err(|e| e.to_string());
        self.process(i);
        self.check();
        r
    }

    pub fn read(&mut self, id: NodeId, request_id: u64) -> Result<(), String> {
        self.read_batch(id, &[request_id]).remove(0)
    }

    /// Issues several reads before the node's next Ready (they share one heartbeat round).
    pub fn read_batch(&mut self, id: NodeId, request_ids: &[u64]) -> Vec<Result<(), String>> {
        let i = (id - 1) as usize;
        let clock = self.clock_ms(i);
        let min = self.checker.max_commit;
        let Some(node) = self.nodes[i].node.as_mut() else {
            return request_ids.iter().map(|_| Err("down".into())).collect();
        };
        node.tick(clock);
        let mut results = Vec::new();
        for rid in request_ids {
            let r = node.read_index(*rid).map_err(|e| e.to_string());
            if r.is_ok() {
                self.checker.reads.insert((id, *rid), min);
            }
            results.push(r);
        }
        self.process(i);
        self.check();
        results
    }

    pub fn next_request_id(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    pub fn transfer(&mut self, id: NodeId, to: NodeId) -> Result<(), String> {
        let i = (id - 1) as usize;
        let clock = self.clock_ms(i);
        let Some(node) = self.nodes[i].node.as_mut() else {
            return Err("down".into());
        };
        node.tick(clock);
        let r = node.transfer_leader(to).map_err(|e| e.to_string());
        self.process(i);
        self.check();
        r
    }

    pub fn step_down(&mut self, id: NodeId) -> Result<(), String> {
        let i = (id - 1) as usize;
        let Some(node) = self.nodes[i].node.as_mut() else {
            return Err("down".into());
        };
        let r = node.step_down().map_err(|e| e.to_string());
        self.process(i);
        self.check();
        r
    }

    /// Symmetric partition: links between `side` and the rest are cut.
    pub fn partition(&mut self, side: &[NodeId]) {
        self.blocked.clear();
        for a in 1..=self.opts.n as NodeId {
            for b in 1..=self.opts.n as NodeId {
                if side.contains(&a) != side.contains(&b) {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|s| s.node.as_ref())
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    pub fn first_violation(&self) -> Option<&String> {
        self.checker.violations.first()
    }
}

fn check_sm(ck: &mut Checker, id: NodeId, sm: &Sm) {
    match ck.sm_hash.get(&sm.applied) {
        Some(h) if *h != sm.hash => ck.violations.push(format!(
            "state machine safety: n{id} state differs at applied index {}",
            sm.applied
        )),
        Some(_) => {}
        None => {
            ck.sm_hash.insert(sm.applied, sm.hash);
        }
    }
}
