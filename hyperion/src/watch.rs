//! Invalidation events from the applied log: the server side of client-side caching.
//!
//! Every replica feeds the changes its state machine applies ([`Change`]: key, new version,
//! reason, log index) into its [`WatchHub`], in log order. Subscribers receive the changes that
//! concern them:
//!
//! - **tracking:** keys the subscriber read (registered with the version it holds); a tracked key
//!   is reported once, then forgotten until it is read again (as in Redis's client tracking). A
//!   `Set` to a version no newer than the one held (a node behind the holder catching up) is
//!   not a change for the holder: the key stays tracked and nothing is reported;
//! - **broadcast:** every key under the subscriber's prefixes.
//!
//! Bounds, and what crossing one does (never a silent drop):
//!
//! - the tracking table holds at most `tracking_max_keys` keys per node; when it is full, the
//!   subscriber tracking the most keys loses all of them and receives [`Event::Resync`];
//! - each subscriber's queue holds at most `queue_max_events`; on overflow the queue is replaced
//!   by one [`Event::Resync`]; a subscriber whose queue overflows again before it took that
//!   resync is too slow and is closed ([`Closed::TooSlow`]), so writes never wait for a reader;
//! - the history kept for resumption holds the last `history_max_events` changes; a subscriber
//!   resuming from an older index (or across a snapshot install) gets [`Event::Resync`].
//!
//! Plain synchronous state behind one mutex: the node loop publishes without awaiting, in both
//! builds. Lock order: a caller that also locks the state machine takes the hub's lock first
//! ([`WatchHub::track`] takes `current_version` as a closure for that reason); the node loop
//! publishes after releasing the machine.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Why a key changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Set,
    Delete,
    Expire,
    Evict,
}

/// One change the state machine applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// The key's new version; 0 when the key is gone (delete, expiry, eviction).
    pub version: u64,
    pub reason: Reason,
    /// The log index whose application made the change.
    pub index: u64,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Changed(Change),
    /// Flush everything cached from this node: some changes could not be delivered.
    Resync {
        index: u64,
    },
    /// Every change applied up to `index` has been delivered before this event. `sync_id` names
    /// the subscriber's sync request this answers (0: a progress mark nobody asked for).
    Progress {
        index: u64,
        sync_id: u64,
    },
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    #[error("the subscriber fell behind its queue of {0} events twice; reconnect and resume")]
    TooSlow(usize),
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("this node serves at most {0} invalidation streams; retry later or use another node")]
    TooManyStreams(usize),
    #[error("prefixes: {count} prefixes exceeds the limit of {max} per stream")]
    TooManyPrefixes { count: usize, max: usize },
}

/// Default bound of the tracking table, per node (`HYPERION_TRACKING_MAX_KEYS`).
pub const TRACKING_MAX_KEYS_DEFAULT: usize = 1_000_000;
/// Default bound of each subscriber's queue (`HYPERION_WATCH_QUEUE_EVENTS`): a burst of this
/// many changes can wait for a reader before it resyncs.
pub const QUEUE_EVENTS_DEFAULT: usize = 10_000;
/// Default number of changes kept for resumption (`HYPERION_WATCH_HISTORY_EVENTS`).
pub const HISTORY_EVENTS_DEFAULT: usize = 100_000;
/// The history's bound in bytes, whatever its count: keys are up to 4 KiB.
pub const HISTORY_BYTES_MAX: usize = 8 << 20;
/// Most streams a node serves at once.
pub const STREAMS_MAX: usize = 1_024;
/// Most broadcast prefixes per stream.
pub const PREFIXES_MAX: usize = 64;

/// The hub's bounds (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    pub tracking_max_keys: usize,
    pub queue_max_events: usize,
    pub history_max_events: usize,
    /// The history's bound in bytes (keys plus a fixed cost per change), whatever their count.
    pub history_max_bytes: usize,
    pub streams_max: usize,
    pub prefixes_max: usize,
}

impl Default for WatchLimits {
    fn default() -> WatchLimits {
        WatchLimits {
            tracking_max_keys: TRACKING_MAX_KEYS_DEFAULT,
            queue_max_events: QUEUE_EVENTS_DEFAULT,
            history_max_events: HISTORY_EVENTS_DEFAULT,
            history_max_bytes: HISTORY_BYTES_MAX,
            streams_max: STREAMS_MAX,
            prefixes_max: PREFIXES_MAX,
        }
    }
}

/// Counters for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    pub streams: usize,
    pub tracked_keys: usize,
    pub delivered: u64,
    pub resyncs: u64,
    pub too_slow: u64,
}

struct Queue {
    events: VecDeque<Event>,
    /// A resync is queued and not yet taken.
    resync_pending: bool,
    closed: Option<Closed>,
}

struct Outbox {
    queue: Mutex<Queue>,
    ready: tokio::sync::Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Subscriber {
    outbox: Arc<Outbox>,
    /// Tracked key → the version the subscriber holds (0: nothing).
    tracked: HashMap<Vec<u8>, u64>,
    prefixes: Vec<Vec<u8>>,
    /// Who opened the subscription (reads naming its id must come from the same caller).
    owner: String,
}

struct State {
    applied_index: u64,
    /// Changes with an index above `history_from` are all in `history`.
    history: VecDeque<Change>,
    history_bytes: usize,
    history_from: u64,
    /// In id order: events are queued (and their readers woken) in an order that depends on
    /// nothing but the subscriptions (a simulation replays it exactly).
    subscribers: BTreeMap<u64, Subscriber>,
    /// Key → the subscribers tracking it.
    tracking: HashMap<Vec<u8>, BTreeSet<u64>>,
    /// Draws subscription ids: unguessable, so a read cannot name another caller's stream by
    /// counting (the owner is checked as well).
    ids: rand_chacha::ChaCha8Rng,
    stats: WatchStats,
}

/// A node's invalidation hub. Cheap to share (`Arc`).
pub struct WatchHub {
    limits: WatchLimits,
    state: Mutex<State>,
}

/// One subscriber's end: events arrive here in log order.
pub struct Subscription {
    id: u64,
    outbox: Arc<Outbox>,
    hub: Arc<WatchHub>,
}

impl WatchHub {
    pub fn new(limits: WatchLimits) -> Arc<WatchHub> {
        Arc::new(WatchHub {
            limits,
            state: Mutex::new(State {
                applied_index: 0,
                history: VecDeque::new(),
                history_bytes: 0,
                history_from: 0,
                subscribers: BTreeMap::new(),
                tracking: HashMap::new(),
                ids: crate::runtime::seeded_rng(),
                stats: WatchStats::default(),
            }),
        })
    }

    pub fn limits(&self) -> WatchLimits {
        self.limits
    }

    pub fn stats(&self) -> WatchStats {
        let state = lock(&self.state);
        WatchStats {
            streams: state.subscribers.len(),
            tracked_keys: state.tracking.len(),
            ..state.stats
        }
    }

    /// Publishes the changes applied at `index` (called in log order, also for entries that
    /// changed nothing, so the hub knows the applied index).
    pub fn publish(&self, index: u64, changes: Vec<Change>) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        state.applied_index = state.applied_index.max(index);
        for change in changes {
            let mut to: Vec<u64> = Vec::new();
            if let Some(mut trackers) = state.tracking.remove(&change.key) {
                trackers.retain(|id| {
                    let Some(subscriber) = state.subscribers.get_mut(id) else {
                        return false;
                    };
                    let held = subscriber.tracked.get(&change.key).copied().unwrap_or(0);
                    if change.reason == Reason::Set && held != 0 && change.version <= held {
                        // The holder already has this version (or a newer one): keep tracking.
                        return true;
                    }
                    subscriber.tracked.remove(&change.key);
                    to.push(*id);
                    false
                });
                if !trackers.is_empty() {
                    state.tracking.insert(change.key.clone(), trackers);
                }
            }
            for (id, subscriber) in &state.subscribers {
                if !to.contains(id) && subscriber.matches_prefix(&change.key) {
                    to.push(*id);
                }
            }
            for id in to {
                self.deliver(state, id, Event::Changed(change.clone()));
            }
            state.history_bytes += change_bytes(&change);
            state.history.push_back(change);
            while state.history.len() > self.limits.history_max_events
                || state.history_bytes > self.limits.history_max_bytes
            {
                let Some(dropped) = state.history.pop_front() else {
                    break;
                };
                state.history_bytes -= change_bytes(&dropped);
                state.history_from = state.history_from.max(dropped.index);
            }
        }
    }

    /// The state machine was replaced by a snapshot taken at `index`: the changes before it are
    /// unknown here, so every subscriber resyncs and resumption starts over.
    pub fn reset(&self, index: u64) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        state.applied_index = index;
        state.history.clear();
        state.history_bytes = 0;
        state.history_from = index;
        state.tracking.clear();
        let ids: Vec<u64> = state.subscribers.keys().copied().collect();
        crate::sometimes!("watch_resync", !ids.is_empty());
        for id in ids {
            if let Some(subscriber) = state.subscribers.get_mut(&id) {
                subscriber.tracked.clear();
            }
            self.deliver(state, id, Event::Resync { index });
        }
    }

    /// Tells every subscriber that all changes up to the applied index were delivered.
    pub fn progress(&self) {
        let mut state = lock(&self.state);
        let index = state.applied_index;
        let ids: Vec<u64> = state.subscribers.keys().copied().collect();
        for id in ids {
            self.deliver(&mut state, id, Event::Progress { index, sync_id: 0 });
        }
    }

    /// The applied index the hub has published up to.
    pub fn applied_index(&self) -> u64 {
        lock(&self.state).applied_index
    }

    /// Tracks `key` for subscription `id` after a read of it on this node answered `version`
    /// (0: absent), if that subscription is open here and belongs to `owner`; whether it is.
    ///
    /// As [`Subscription::track`], compared with the node's `current_version` under the hub's
    /// lock: a change applied since the read is reported at once. Registering before the read
    /// instead would report the change the read itself then returned, and forget the key.
    pub fn track_for_read(
        &self,
        id: u64,
        owner: &str,
        key: &[u8],
        version: u64,
        current_version: impl FnOnce() -> Option<u64>,
    ) -> bool {
        let mut state = lock(&self.state);
        let state = &mut *state;
        match state.subscribers.get(&id) {
            Some(subscriber) if subscriber.owner == owner => {}
            _ => return false,
        }
        self.track_compared(state, id, key, version, current_version);
        true
    }

    /// Opens a subscription to `prefixes` (broadcast). With `resume_after` set, the changes
    /// after that index that concern the prefixes are replayed first, or a resync is queued when
    /// the hub no longer holds them all.
    pub fn subscribe(
        self: &Arc<Self>,
        prefixes: Vec<Vec<u8>>,
        resume_after: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        self.subscribe_as(String::new(), prefixes, resume_after)
    }

    /// [`WatchHub::subscribe`] on behalf of `owner` (the authenticated caller).
    pub fn subscribe_as(
        self: &Arc<Self>,
        owner: String,
        prefixes: Vec<Vec<u8>>,
        resume_after: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        if prefixes.len() > self.limits.prefixes_max {
            return Err(SubscribeError::TooManyPrefixes {
                count: prefixes.len(),
                max: self.limits.prefixes_max,
            });
        }
        let mut state = lock(&self.state);
        if state.subscribers.len() >= self.limits.streams_max {
            return Err(SubscribeError::TooManyStreams(self.limits.streams_max));
        }
        let id = loop {
            // Below 2^53: exact in every JSON and JavaScript client.
            let id = rand::Rng::random::<u64>(&mut state.ids) >> 11;
            if id != 0 && !state.subscribers.contains_key(&id) {
                break id;
            }
        };
        let outbox = Arc::new(Outbox {
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                resync_pending: false,
                closed: None,
            }),
            ready: tokio::sync::Notify::new(),
        });
        let subscriber = Subscriber {
            outbox: Arc::clone(&outbox),
            tracked: HashMap::new(),
            prefixes,
            owner,
        };
        let replay: Option<Vec<Event>> = resume_after.map(|after| {
            if after < state.history_from || after > state.applied_index {
                crate::reachable!("watch_resync");
                vec![Event::Resync {
                    index: state.applied_index,
                }]
            } else {
                crate::sometimes!(
                    "watch_resume_replayed",
                    state.history.back().is_some_and(|last| last.index > after)
                );
                state
                    .history
                    .iter()
                    .filter(|change| change.index > after && subscriber.matches_prefix(&change.key))
                    .cloned()
                    .map(Event::Changed)
                    .collect()
            }
        });
        state.subscribers.insert(id, subscriber);
        for event in replay.into_iter().flatten() {
            self.deliver(&mut state, id, event);
        }
        Ok(Subscription {
            id,
            outbox,
            hub: Arc::clone(self),
        })
    }

    /// Queues `event` for subscriber `id`, applying the queue bound.
    fn deliver(&self, state: &mut State, id: u64, event: Event) {
        let Some(subscriber) = state.subscribers.get(&id) else {
            return;
        };
        let outbox = Arc::clone(&subscriber.outbox);
        let mut queue = lock(&outbox.queue);
        if queue.closed.is_some() {
            return;
        }
        if queue.events.len() < self.limits.queue_max_events {
            queue.events.push_back(event);
            state.stats.delivered += 1;
        } else if queue.resync_pending {
            queue.closed = Some(Closed::TooSlow(self.limits.queue_max_events));
            queue.events.clear();
            state.stats.too_slow += 1;
            drop(queue);
            self.forget(state, id);
        } else {
            crate::reachable!("watch_resync");
            queue.events.clear();
            queue.events.push_back(Event::Resync {
                index: state.applied_index,
            });
            queue.resync_pending = true;
            state.stats.resyncs += 1;
            drop(queue);
            // Tracked keys were in the dropped events' future: the client flushes them anyway.
            Self::untrack_all(state, id);
        }
        outbox.ready.notify_one();
    }

    fn untrack_all(state: &mut State, id: u64) {
        let Some(subscriber) = state.subscribers.get_mut(&id) else {
            return;
        };
        for (key, _) in subscriber.tracked.drain() {
            if let Some(trackers) = state.tracking.get_mut(&key) {
                trackers.remove(&id);
                if trackers.is_empty() {
                    state.tracking.remove(&key);
                }
            }
        }
    }

    fn forget(&self, state: &mut State, id: u64) {
        Self::untrack_all(state, id);
        state.subscribers.remove(&id);
    }

    fn make_room(&self, state: &mut State) {
        while state.tracking.len() >= self.limits.tracking_max_keys.max(1) {
            let Some(largest) = state
                .subscribers
                .iter()
                .max_by_key(|(id, s)| (s.tracked.len(), std::cmp::Reverse(**id)))
                .map(|(id, _)| *id)
            else {
                return;
            };
            Self::untrack_all(state, largest);
            crate::reachable!("watch_resync");
            let index = state.applied_index;
            state.stats.resyncs += 1;
            self.deliver(state, largest, Event::Resync { index });
        }
    }
}

impl WatchHub {
    /// Tracks `key`, which subscriber `id` holds at `version` (0: nothing), comparing with the
    /// node's current version first (see [`Subscription::track`]).
    fn track_compared(
        &self,
        state: &mut State,
        id: u64,
        key: &[u8],
        version: u64,
        current_version: impl FnOnce() -> Option<u64>,
    ) {
        let current = current_version().unwrap_or(0);
        // The node is ahead of the holder (a newer version, or the key is gone): report it now.
        // A node behind the holder (`current < version`) will report the changes as it applies
        // them.
        if version != 0 && current != version && (current == 0 || current > version) {
            let change = Change {
                key: key.to_vec(),
                version: current,
                reason: if current == 0 {
                    Reason::Delete
                } else {
                    Reason::Set
                },
                index: state.applied_index,
            };
            self.deliver(state, id, Event::Changed(change));
            return;
        }
        self.register(state, id, key, version);
    }

    /// Adds `key` (held at `version`) to subscriber `id`'s tracked keys, making room first.
    fn register(&self, state: &mut State, id: u64, key: &[u8], version: u64) {
        if let Some(held) = state
            .subscribers
            .get_mut(&id)
            .and_then(|s| s.tracked.get_mut(key))
        {
            *held = (*held).max(version);
            return;
        }
        self.make_room(state);
        if let Some(subscriber) = state.subscribers.get_mut(&id) {
            subscriber.tracked.insert(key.to_vec(), version);
            state.tracking.entry(key.to_vec()).or_default().insert(id);
        }
    }
}

/// What one change costs the history: its key and the fixed part.
fn change_bytes(change: &Change) -> usize {
    change.key.len() + std::mem::size_of::<Change>()
}

impl Subscriber {
    fn matches_prefix(&self, key: &[u8]) -> bool {
        self.prefixes.iter().any(|prefix| key.starts_with(prefix))
    }
}

impl Subscription {
    /// This subscription's id (what a read names to be tracked for it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Tracks `key`, which the subscriber holds at `version` (0: it holds nothing). Compared
    /// under the hub's lock with the node's `current_version` of the key: if the node already
    /// applied a change the holder has not seen, it is reported at once.
    pub fn track(&self, key: &[u8], version: u64, current_version: impl FnOnce() -> Option<u64>) {
        let mut state = lock(&self.hub.state);
        if state.subscribers.contains_key(&self.id) {
            self.hub
                .track_compared(&mut state, self.id, key, version, current_version);
        }
    }

    /// Queues a progress mark answering the subscriber's sync request `sync_id`: every change
    /// the hub published so far is queued before it. Call it once this node has applied the
    /// read index taken after the request arrived.
    pub fn progress(&self, sync_id: u64) {
        let mut state = lock(&self.hub.state);
        let index = state.applied_index;
        self.hub
            .deliver(&mut state, self.id, Event::Progress { index, sync_id });
    }

    /// Stops tracking `key`.
    pub fn untrack(&self, key: &[u8]) {
        let mut state = lock(&self.hub.state);
        let removed = state
            .subscribers
            .get_mut(&self.id)
            .is_some_and(|s| s.tracked.remove(key).is_some());
        if removed {
            if let Some(trackers) = state.tracking.get_mut(key) {
                trackers.remove(&self.id);
                if trackers.is_empty() {
                    state.tracking.remove(key);
                }
            }
        }
    }

    /// Adds or removes broadcast prefixes while the subscription is open.
    pub fn set_prefixes(
        &self,
        add: Vec<Vec<u8>>,
        remove: &[Vec<u8>],
    ) -> Result<(), SubscribeError> {
        let max = self.hub.limits.prefixes_max;
        let mut state = lock(&self.hub.state);
        let Some(subscriber) = state.subscribers.get_mut(&self.id) else {
            return Ok(());
        };
        let mut prefixes = subscriber.prefixes.clone();
        prefixes.retain(|p| !remove.contains(p));
        for prefix in add {
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        if prefixes.len() > max {
            return Err(SubscribeError::TooManyPrefixes {
                count: prefixes.len(),
                max,
            });
        }
        subscriber.prefixes = prefixes;
        Ok(())
    }

    /// Takes the queued events without waiting (an empty vector when none are queued).
    pub fn drain(&self) -> Result<Vec<Event>, Closed> {
        let mut queue = lock(&self.outbox.queue);
        if let Some(closed) = queue.closed {
            return Err(closed);
        }
        queue.resync_pending = false;
        Ok(queue.events.drain(..).collect())
    }

    /// Waits for the next batch of events.
    pub async fn next_batch(&self) -> Result<Vec<Event>, Closed> {
        loop {
            let notified = self.outbox.ready.notified();
            let events = self.drain()?;
            if !events.is_empty() {
                return Ok(events);
            }
            notified.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = lock(&self.hub.state);
        self.hub.forget(&mut state, self.id);
    }
}

#[cfg(test)]
mod tests;
