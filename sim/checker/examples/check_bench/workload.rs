//! The benchmark's history: a correct cluster's clients, simulated event by event (see
//! `main.rs`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hyperion_checker::{ClientId, History, HistoryRecorder, Op, OpId, OpResult, Outcome};

/// Concurrent clients.
pub const CLIENTS: u64 = 48;
/// Percent of calls that are writes; of writes, deletes and compare-and-sets; of reads,
/// stale-allowed ones and `BatchGet`s (of 2 to `BATCH_KEYS_MAX` keys).
const WRITE_PERCENT: u64 = 40;
const DELETE_PERCENT: u64 = 10;
const CAS_PERCENT: u64 = 20;
const STALE_READ_PERCENT: u64 = 10;
const BATCH_GET_PERCENT: u64 = 5;
const BATCH_KEYS_MAX: u64 = 4;
/// Percent of Sets with a TTL, and its range.
const TTL_PERCENT: u64 = 20;
const TTL_MS: (u64, u64) = (300, 3_000);
/// Think time between a client's calls, and the backoff before a retry.
const THINK_MS: (u64, u64) = (5, 40);
const BACKOFF_MS: (u64, u64) = (10, 50);
/// A call's duration: usually short, sometimes slow; a timed-out call takes the deadline.
const DURATION_MS: (u64, u64) = (1, 10);
const SLOW_PERCENT: u64 = 5;
const SLOW_DURATION_MS: (u64, u64) = (10, 150);
const DEADLINE_MS: u64 = 800;
/// Outside outages: percent of calls that time out, and that are rejected up front.
const TIMEOUT_PERCENT: u64 = 2;
const REJECT_PERCENT: u64 = 1;
/// Percent of timed-out writes that were applied; of those, applied after the client gave up
/// (up to `LATE_MS` later).
const APPLIED_PERCENT: u64 = 50;
const LATE_PERCENT: u64 = 40;
const LATE_MS: u64 = 200;
/// A write that timed out is retried (as a new operation) at most this often.
const RETRIES_MAX: u32 = 2;
/// Every `OUTAGE_EVERY_MS` the leader is gone for `OUTAGE_MS`: calls are rejected
/// (`OUTAGE_REJECT_PERCENT`) or time out; the applied ones commit within `OUTAGE_COMMIT_MS` of
/// its end.
const OUTAGE_EVERY_MS: u64 = 7_000;
const OUTAGE_MS: u64 = 400;
const OUTAGE_REJECT_PERCENT: u64 = 40;
const OUTAGE_COMMIT_MS: u64 = 50;
/// Every node clock is within δ of simulated time; the checker is given ε = 2δ + 1, as the
/// simulator's default tolerance of 5 ms.
const CLOCK_DELTA_MS: u64 = 2;
pub const CLOCK_SKEW_MS: u64 = 2 * CLOCK_DELTA_MS + 1;
/// Stale-allowed reads are answered from one of the key's last `STALE_LAG_MAX + 1` states.
const STALE_LAG_MAX: usize = 2;

/// SplitMix64: small, seeded, good enough to draw a workload.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    fn range(&mut self, (low, high): (u64, u64)) -> u64 {
        low + self.below(high - low + 1)
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A clock's offset from simulated time, within ±δ.
    fn clock_offset(&mut self) -> i64 {
        self.range((0, 2 * CLOCK_DELTA_MS)) as i64 - CLOCK_DELTA_MS as i64
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    version: u64,
    created_ms: i64,
    ttl_ms: u64,
}

impl Entry {
    fn expired(&self, judge_ms: i64) -> bool {
        self.ttl_ms > 0 && judge_ms > self.created_ms + self.ttl_ms as i64
    }

    fn hit(&self, judge_ms: i64, is_stale: bool) -> OpResult {
        let remaining = if self.ttl_ms == 0 {
            0
        } else {
            (self.created_ms + self.ttl_ms as i64 - judge_ms).max(0) as u64
        };
        OpResult::Hit {
            value: self.value.clone(),
            version: self.version,
            is_stale,
            ttl_remaining_ms: Some(remaining),
        }
    }
}

/// The cluster's state: per key the current entry and the last few states (for stale reads).
struct Model {
    keys: Vec<Vec<Option<Entry>>>,
    next_version: u64,
}

impl Model {
    fn current(&self, key: usize) -> Option<&Entry> {
        self.keys[key].last().and_then(Option::as_ref)
    }

    fn live_version(&self, key: usize, judge_ms: i64) -> u64 {
        self.current(key)
            .filter(|entry| !entry.expired(judge_ms))
            .map_or(0, |entry| entry.version)
    }

    fn install(&mut self, key: usize, entry: Option<Entry>) {
        let states = &mut self.keys[key];
        if states.len() > STALE_LAG_MAX {
            states.remove(0);
        }
        states.push(entry);
    }

    /// Applies `request` at simulated time `at_ms`, on a node whose clock is `judge_ms`, with the
    /// leader stamping `created_at` at `stamp_ms`.
    fn apply(
        &mut self,
        request: &Request,
        judge_ms: i64,
        stamp_ms: i64,
        rng: &mut Rng,
    ) -> OpResult {
        match request {
            Request::Get {
                key,
                allow_stale: false,
            } => match self.current(*key) {
                Some(entry) if !entry.expired(judge_ms) => entry.hit(judge_ms, false),
                _ => OpResult::Miss,
            },
            Request::Get {
                key,
                allow_stale: true,
            } => {
                let states = &self.keys[*key];
                let lag = rng.below(states.len() as u64) as usize;
                match &states[states.len() - 1 - lag] {
                    Some(entry) => entry.hit(judge_ms, entry.expired(judge_ms)),
                    None => OpResult::Miss,
                }
            }
            Request::Set {
                key,
                value,
                ttl_ms,
                expected_version,
            } => {
                let current = self.live_version(*key, judge_ms);
                if *expected_version != 0 && current != *expected_version {
                    return OpResult::CasFailed {
                        current_version: current,
                    };
                }
                let version = self.next_version;
                self.next_version += 1;
                self.install(
                    *key,
                    Some(Entry {
                        value: value.clone(),
                        version,
                        created_ms: stamp_ms,
                        ttl_ms: *ttl_ms,
                    }),
                );
                OpResult::Written {
                    version,
                    ttl_ms: *ttl_ms,
                }
            }
            Request::Delete {
                key,
                expected_version,
            } => {
                let current = self.live_version(*key, judge_ms);
                if *expected_version != 0 && current != *expected_version {
                    return OpResult::CasFailed {
                        current_version: current,
                    };
                }
                // A delete is a log entry too: it consumes a version.
                self.next_version += 1;
                self.install(*key, None);
                OpResult::Deleted {
                    existed: current != 0,
                    version: current,
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Request {
    Get {
        key: usize,
        allow_stale: bool,
    },
    Set {
        key: usize,
        value: Vec<u8>,
        ttl_ms: u64,
        expected_version: u64,
    },
    Delete {
        key: usize,
        expected_version: u64,
    },
}

impl Request {
    fn key(&self) -> usize {
        match self {
            Request::Get { key, .. } | Request::Set { key, .. } | Request::Delete { key, .. } => {
                *key
            }
        }
    }

    fn op(&self, keys: &[Vec<u8>]) -> Op {
        match self {
            Request::Get { key, allow_stale } => Op::Get {
                key: keys[*key].clone(),
                allow_stale: *allow_stale,
            },
            Request::Set {
                key,
                value,
                ttl_ms,
                expected_version,
            } => Op::Set {
                key: keys[*key].clone(),
                value: value.clone(),
                ttl_ms: *ttl_ms,
                expected_version: *expected_version,
            },
            Request::Delete {
                key,
                expected_version,
            } => Op::Delete {
                key: keys[*key].clone(),
                expected_version: *expected_version,
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Ok,
    Fail,
    Unknown,
}

/// One call of a client: one operation, or one per key of a `BatchGet`.
struct Call {
    client: u64,
    members: Vec<(OpId, Request)>,
    results: Vec<Option<OpResult>>,
    fate: Fate,
    retries_left: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The client issues its next call.
    Ready { client: u64 },
    /// One member of a call takes effect.
    Apply { call: usize, member: usize },
    /// The call's answer (or the client's giving up) arrives.
    Return { call: usize },
}

struct Client {
    /// Last version seen per key (the basis of compare-and-sets), as the workload keeps it.
    seen: Vec<u64>,
    /// The key of the last linearizable read answered (compare-and-sets read, modify, write).
    last_read: Option<usize>,
    /// A write to send again after a timeout, with the retries left after it.
    retry: Option<(Request, u32)>,
    writes: u64,
}

/// Simulates the cluster and its clients until `ops` operations are recorded.
pub fn generate(ops: usize, keys: usize, seed: u64) -> History {
    let mut rng = Rng(seed);
    let key_names: Vec<Vec<u8>> = (0..keys)
        .map(|key| format!("key{key}").into_bytes())
        .collect();
    let mut model = Model {
        keys: vec![vec![None]; keys],
        next_version: 1,
    };
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client {
            seen: vec![0; keys],
            last_read: None,
            retry: None,
            writes: 0,
        })
        .collect();
    let mut recorder = HistoryRecorder::with_max_ops(ops);
    let mut calls: Vec<Call> = Vec::new();
    let mut events: BinaryHeap<Reverse<(u64, u64, Event)>> = BinaryHeap::new();
    let mut sequence = 0u64;
    let mut schedule = |events: &mut BinaryHeap<Reverse<(u64, u64, Event)>>, at_ms: u64, event| {
        sequence += 1;
        events.push(Reverse((at_ms, sequence, event)));
    };
    for client in 0..CLIENTS {
        let at_ms = rng.range(THINK_MS);
        schedule(&mut events, at_ms, Event::Ready { client });
    }
    while let Some(Reverse((now_ms, _, event))) = events.pop() {
        match event {
            Event::Ready { client } => {
                let room = ops - recorder.len();
                if room == 0 {
                    continue;
                }
                let state = &mut clients[client as usize];
                let (requests, retries_left) = match state.retry.take() {
                    Some((request, retries_left)) => (vec![request], retries_left),
                    None => (
                        next_requests(&mut rng, state, keys, room, client),
                        RETRIES_MAX,
                    ),
                };
                let outage_end_ms = (now_ms % OUTAGE_EVERY_MS >= OUTAGE_EVERY_MS - OUTAGE_MS)
                    .then(|| now_ms - now_ms % OUTAGE_EVERY_MS + OUTAGE_EVERY_MS);
                let (fate, duration_ms) = match outage_end_ms {
                    Some(_) if rng.percent(OUTAGE_REJECT_PERCENT) => {
                        (Fate::Fail, rng.range((1, 3)))
                    }
                    Some(_) => (Fate::Unknown, DEADLINE_MS),
                    None if rng.percent(REJECT_PERCENT) => (Fate::Fail, rng.range((1, 3))),
                    None if rng.percent(TIMEOUT_PERCENT) => (Fate::Unknown, DEADLINE_MS),
                    None if rng.percent(SLOW_PERCENT) => (Fate::Ok, rng.range(SLOW_DURATION_MS)),
                    None => (Fate::Ok, rng.range(DURATION_MS)),
                };
                let return_ms = now_ms + duration_ms;
                let ids = if requests.len() > 1 {
                    let names: Vec<Vec<u8>> = requests
                        .iter()
                        .map(|request| key_names[request.key()].clone())
                        .collect();
                    let allow_stale = matches!(
                        requests[0],
                        Request::Get {
                            allow_stale: true,
                            ..
                        }
                    );
                    recorder
                        .invoke_batch_get(ClientId(client), &names, allow_stale, now_ms)
                        .expect("the batch fits: its size is bounded by the room left")
                } else {
                    vec![recorder
                        .invoke(ClientId(client), requests[0].op(&key_names), now_ms)
                        .expect("room was checked")]
                };
                let call = calls.len();
                for (member, request) in requests.iter().enumerate() {
                    let is_write = !matches!(request, Request::Get { .. });
                    let apply_ms = match fate {
                        Fate::Ok => Some(rng.range((now_ms, return_ms))),
                        Fate::Fail => None,
                        // An unknown read has no effect worth modelling.
                        Fate::Unknown if !is_write || !rng.percent(APPLIED_PERCENT) => None,
                        Fate::Unknown => Some(match outage_end_ms {
                            Some(end_ms) => end_ms + rng.below(OUTAGE_COMMIT_MS),
                            None if rng.percent(LATE_PERCENT) => {
                                return_ms + rng.range((1, LATE_MS))
                            }
                            None => rng.range((now_ms, return_ms)),
                        }),
                    };
                    if let Some(apply_ms) = apply_ms {
                        schedule(&mut events, apply_ms, Event::Apply { call, member });
                    }
                }
                schedule(&mut events, return_ms, Event::Return { call });
                calls.push(Call {
                    client,
                    results: vec![None; requests.len()],
                    members: ids.into_iter().zip(requests).collect(),
                    fate,
                    retries_left,
                });
            }
            Event::Apply { call, member } => {
                let judge_ms = now_ms as i64 + rng.clock_offset();
                let stamp_ms = now_ms as i64 + rng.clock_offset();
                let result =
                    model.apply(&calls[call].members[member].1, judge_ms, stamp_ms, &mut rng);
                calls[call].results[member] = Some(result);
            }
            Event::Return { call } => {
                let call = &mut calls[call];
                let state = &mut clients[call.client as usize];
                for (member, (id, request)) in call.members.iter().enumerate() {
                    let outcome = match call.fate {
                        Fate::Ok => {
                            let result = call.results[member]
                                .take()
                                .expect("an acknowledged call was applied within its window");
                            if matches!(
                                request,
                                Request::Get {
                                    allow_stale: false,
                                    ..
                                }
                            ) {
                                state.last_read = Some(request.key());
                            }
                            match &result {
                                OpResult::Hit {
                                    version,
                                    is_stale: false,
                                    ..
                                } if matches!(
                                    request,
                                    Request::Get {
                                        allow_stale: false,
                                        ..
                                    }
                                ) =>
                                {
                                    state.seen[request.key()] = *version;
                                }
                                OpResult::Written { version, .. } => {
                                    state.seen[request.key()] = *version;
                                }
                                _ => {}
                            }
                            Outcome::Ok(result)
                        }
                        Fate::Fail => Outcome::Fail,
                        Fate::Unknown => Outcome::Unknown,
                    };
                    recorder
                        .complete(*id, outcome, now_ms)
                        .expect("a valid completion");
                }
                let timed_out_write =
                    call.fate == Fate::Unknown && !matches!(call.members[0].1, Request::Get { .. });
                let delay_ms = if timed_out_write && call.retries_left > 0 {
                    state.retry = Some((call.members[0].1.clone(), call.retries_left - 1));
                    rng.range(BACKOFF_MS)
                } else {
                    rng.range(THINK_MS)
                };
                let client = call.client;
                schedule(&mut events, now_ms + delay_ms, Event::Ready { client });
            }
        }
    }
    recorder.into_history()
}

/// A fresh call of `client`: a read of one key or a batch of a few, or a write (a
/// compare-and-set one of the key the client read last, expecting the version it saw last).
fn next_requests(
    rng: &mut Rng,
    state: &mut Client,
    keys: usize,
    room: usize,
    client: u64,
) -> Vec<Request> {
    let key = rng.below(keys as u64) as usize;
    if !rng.percent(WRITE_PERCENT) {
        let allow_stale = rng.percent(STALE_READ_PERCENT);
        let batch = if rng.percent(BATCH_GET_PERCENT) {
            rng.range((2, BATCH_KEYS_MAX)).min(room as u64)
        } else {
            1
        };
        return (0..batch)
            .map(|member| Request::Get {
                key: if member == 0 {
                    key
                } else {
                    rng.below(keys as u64) as usize
                },
                allow_stale,
            })
            .collect();
    }
    let is_delete = rng.percent(DELETE_PERCENT);
    let (key, expected_version) = if rng.percent(CAS_PERCENT) {
        let key = state.last_read.unwrap_or(key);
        (key, state.seen[key])
    } else {
        (key, 0)
    };
    if is_delete {
        return vec![Request::Delete {
            key,
            expected_version,
        }];
    }
    state.writes += 1;
    let ttl_ms = if rng.percent(TTL_PERCENT) {
        rng.range(TTL_MS)
    } else {
        0
    };
    vec![Request::Set {
        key,
        value: format!("c{client}-{}", state.writes).into_bytes(),
        ttl_ms,
        expected_version,
    }]
}
