//! The near cache: an opt-in, bounded cache inside the client, kept coherent by a `Watch` stream.
//!
//! **Promise.** A value served from the near cache at time `t` (the client's clock) reflects every
//! write that completed before `t − staleness_bound`: it is never older than the bound. It is
//! never older than this client's own last write of the key (a write drops the key here, so the
//! next read goes to the cluster) or its own last read (a read from the cluster replaces an older
//! cached version). Expired entries are never served (`ttl_remaining_ms` is honoured from the
//! moment the read was sent, so a cached entry expires no later than the server's).
//!
//! **How.** A background task holds one `Watch` stream (to the node the client reads from) and
//! every `sync_interval` sends a sync. The server answers a sync with PROGRESS once it has applied
//! everything committed when the sync arrived, and every change of a tracked key up to there has
//! been delivered before it. So when the PROGRESS of a sync sent at `s` arrives, every write that
//! completed before `s` has invalidated what it changed. An entry is served at `t` only if some
//! confirmed sync was sent at `s ≥ t − staleness_bound` and after the entry was filled (its
//! tracking was registered before that sync started). No confirmed sync for longer than the bound
//! (a partition, a slow node, a broken stream): every read goes to the cluster until one is.
//!
//! **Fills.** A read from the cluster names the stream's `tracking_id`: when the serving node
//! holds the stream, the key is tracked before it is read (`tracked` in the answer). Otherwise
//! the client sends `track` with the version it read, and the node reports at once if it has
//! already applied a newer one. Any invalidation of a key (or a resync, or a new stream) while
//! its read is in flight keeps that answer out of the cache.
//!
//! **Events.** CHANGED to a version no newer than the cached one is ignored (a node catching
//! up); every other change drops the key; RESYNC drops everything. After a reconnect the
//! stream resumes from the last index seen and re-tracks every cached key with its version.
//!
//! Bounds: `max_entries` and `max_bytes` (LRU eviction; an evicted key is untracked), at most
//! [`PENDING_SYNCS_MAX`] unanswered syncs remembered, the stream's outgoing queue
//! [`STREAM_QUEUE_MAX`] requests (a full queue drops the stream, which reconnects).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Status;

use super::Client;
use crate::limits::BATCH_KEYS_MAX;
use crate::proto::watch_request::Command;
use crate::proto::{
    CacheStatus, ChangeReason, GetResponse, SyncRequest, TrackKeys, TrackedKey, UntrackKeys,
    WatchEventKind, WatchOpen, WatchRequest,
};
use crate::runtime::{self, Instant};

/// Most syncs remembered while unanswered (older ones are forgotten: their answers no longer
/// matter once a newer one is answered).
pub const PENDING_SYNCS_MAX: usize = 64;
/// Most requests queued towards the server on the stream.
pub const STREAM_QUEUE_MAX: usize = 4_096;
/// What an entry costs beyond its key and value (the map slot, the recency index, the
/// bookkeeping): counted against `max_bytes`.
pub const ENTRY_OVERHEAD_BYTES: usize = 96;
/// Waits between reconnect attempts: from the first to the last, doubling.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(20);
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// The near cache's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearCacheConfig {
    /// Most entries held.
    pub max_entries: usize,
    /// Most bytes held (keys, values and [`ENTRY_OVERHEAD_BYTES`] per entry).
    pub max_bytes: usize,
    /// The promise: a served value reflects every write completed this long before.
    pub staleness_bound: Duration,
    /// How often the stream asks for a sync; well under the bound, so confirmations keep up.
    pub sync_interval: Duration,
    /// Broadcast prefixes to subscribe to as well (changes of keys under them are reported
    /// whether or not this client read them).
    pub prefixes: Vec<Vec<u8>>,
    /// Fault injection (the simulator's negative control): RESYNC events are ignored, so
    /// entries whose tracking the server dropped stay cached. Never set in production.
    pub ignore_resync: bool,
}

impl Default for NearCacheConfig {
    fn default() -> Self {
        NearCacheConfig {
            max_entries: 10_000,
            max_bytes: 64 << 20,
            staleness_bound: Duration::from_millis(500),
            sync_interval: Duration::from_millis(100),
            prefixes: Vec::new(),
            ignore_resync: false,
        }
    }
}

/// Why a near cache configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NearCacheConfigError {
    #[error("max_entries: must be at least 1")]
    NoEntries,
    #[error("max_bytes: must be at least one entry's overhead ({ENTRY_OVERHEAD_BYTES} bytes)")]
    NoBytes,
    #[error("sync_interval: must be above 0 and below staleness_bound")]
    SyncInterval,
}

impl NearCacheConfig {
    pub fn validate(&self) -> Result<(), NearCacheConfigError> {
        if self.max_entries == 0 {
            return Err(NearCacheConfigError::NoEntries);
        }
        if self.max_bytes < ENTRY_OVERHEAD_BYTES {
            return Err(NearCacheConfigError::NoBytes);
        }
        if self.sync_interval.is_zero() || self.sync_interval >= self.staleness_bound {
            return Err(NearCacheConfigError::SyncInterval);
        }
        Ok(())
    }
}

/// Counters of one near cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NearCacheStats {
    /// Reads served from the near cache.
    pub hits: u64,
    /// Reads that went to the cluster.
    pub misses: u64,
    /// Of the misses: an entry was held, but no sync had confirmed it recently enough.
    pub unconfirmed: u64,
    /// Answers from the cluster stored here.
    pub fills: u64,
    /// Answers kept out because the key changed while they were in flight.
    pub fills_refused: u64,
    /// Entries dropped by CHANGED events.
    pub invalidations: u64,
    pub resyncs: u64,
    pub evictions: u64,
    /// Streams opened (the first and every reconnect).
    pub streams_opened: u64,
    pub entries: usize,
    pub bytes: usize,
}

/// Where a read was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Near,
    Cluster,
}

struct Entry {
    value: Vec<u8>,
    version: u64,
    /// When the entry was stored: only a sync sent after it may confirm it.
    filled_at: Instant,
    /// When the server's TTL ends, counted from when the read was sent.
    expires_at: Option<Instant>,
    /// Position in the recency order.
    tick: u64,
}

/// A read of the cluster in flight, and whether its key changed meanwhile.
struct Flight {
    readers: usize,
    invalidated: bool,
}

struct State {
    config: NearCacheConfig,
    entries: HashMap<Vec<u8>, Entry>,
    recency: BTreeMap<u64, Vec<u8>>,
    next_tick: u64,
    bytes: usize,
    flights: HashMap<Vec<u8>, Flight>,
    /// Bumped by every resync and every new stream: fills that began before are refused.
    epoch: u64,
    /// The open stream: its id, its queue of requests, and the node serving it.
    tracking_id: u64,
    outbox: Option<mpsc::Sender<WatchRequest>>,
    /// Unanswered syncs (id, sent at), oldest first.
    pending_syncs: VecDeque<(u64, Instant)>,
    next_sync_id: u64,
    /// The send time of the newest answered sync.
    confirmed: Option<Instant>,
    /// The highest applied index the stream reported (where a reconnect resumes).
    last_index: Option<u64>,
    stats: NearCacheStats,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn entry_bytes(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD_BYTES
}

impl State {
    fn new(config: NearCacheConfig) -> State {
        State {
            config,
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            next_tick: 0,
            bytes: 0,
            flights: HashMap::new(),
            epoch: 0,
            tracking_id: 0,
            outbox: None,
            pending_syncs: VecDeque::new(),
            next_sync_id: 1,
            confirmed: None,
            last_index: None,
            stats: NearCacheStats::default(),
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.recency.remove(&entry.tick);
        self.bytes -= entry_bytes(key, &entry.value);
        Some(entry)
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.recency.clear();
        self.bytes = 0;
        self.epoch += 1;
        for flight in self.flights.values_mut() {
            flight.invalidated = true;
        }
    }

    /// Sends `request` on the open stream, if any; a full queue drops the stream (it
    /// reconnects and re-tracks).
    fn send(&mut self, request: WatchRequest) -> bool {
        let Some(outbox) = &self.outbox else {
            return false;
        };
        if outbox.try_send(request).is_err() {
            self.outbox = None;
            self.tracking_id = 0;
            return false;
        }
        true
    }

    fn untrack(&mut self, keys: Vec<Vec<u8>>) {
        for chunk in keys.chunks(BATCH_KEYS_MAX) {
            self.send(WatchRequest {
                command: Some(Command::Untrack(UntrackKeys {
                    keys: chunk.to_vec(),
                })),
            });
        }
    }

    /// Whether `entry` may be served at `now`.
    fn servable(&self, entry: &Entry, now: Instant) -> bool {
        if entry.expires_at.is_some_and(|at| now >= at) {
            return false;
        }
        match self.confirmed {
            Some(sent) => {
                sent >= entry.filled_at
                    && now.saturating_duration_since(sent) <= self.config.staleness_bound
            }
            None => false,
        }
    }

    fn evict_for(&mut self, incoming: usize) {
        let mut evicted = Vec::new();
        while !self.entries.is_empty()
            && (self.entries.len() >= self.config.max_entries
                || self.bytes + incoming > self.config.max_bytes)
        {
            let Some((_, key)) = self.recency.pop_first() else {
                break;
            };
            if let Some(entry) = self.entries.remove(&key) {
                self.bytes -= entry_bytes(&key, &entry.value);
                self.stats.evictions += 1;
                evicted.push(key);
            }
        }
        if !evicted.is_empty() {
            self.untrack(evicted);
        }
    }

    fn changed(&mut self, key: &[u8], version: u64, reason: i32) {
        if let Some(flight) = self.flights.get_mut(key) {
            flight.invalidated = true;
        }
        let is_set = reason == ChangeReason::ReasonSet as i32;
        let keep = is_set
            && self
                .entries
                .get(key)
                .is_some_and(|entry| entry.version >= version);
        if !keep && self.remove(key).is_some() {
            self.stats.invalidations += 1;
        }
    }

    /// Records a PROGRESS event; whether it answered a remembered sync.
    fn progress(&mut self, index: u64, sync_id: u64) -> bool {
        self.note_index(index);
        let mut answered = false;
        while let Some(&(id, sent)) = self.pending_syncs.front() {
            if id > sync_id {
                break;
            }
            self.pending_syncs.pop_front();
            if id == sync_id {
                self.confirmed = Some(self.confirmed.map_or(sent, |c| c.max(sent)));
                answered = true;
            }
        }
        answered
    }

    fn note_index(&mut self, index: u64) {
        self.last_index = Some(self.last_index.map_or(index, |last| last.max(index)));
    }
}

/// A [`Client`] with a near cache. Cheap to clone: clones share the cache and its stream, which
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct CachingClient {
    client: Client,
    state: Arc<Mutex<State>>,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for CachingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingClient")
            .field("client", &self.client)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Client {
    /// This client with a near cache (see [`crate::client::near`]); starts its Watch stream.
    pub fn with_near_cache(
        self,
        config: NearCacheConfig,
    ) -> Result<CachingClient, NearCacheConfigError> {
        config.validate()?;
        let state = Arc::new(Mutex::new(State::new(config)));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        runtime::spawn(maintain_stream(self.clone(), Arc::clone(&state), stopped));
        Ok(CachingClient {
            client: self,
            state,
            _stop: Arc::new(stop),
        })
    }
}

impl CachingClient {
    /// The client underneath (uncached calls).
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn stats(&self) -> NearCacheStats {
        let state = lock(&self.state);
        NearCacheStats {
            entries: state.entries.len(),
            bytes: state.bytes,
            ..state.stats
        }
    }

    /// Whether a sync confirmed the stream within the staleness bound (entries can be served).
    pub fn is_confirmed(&self) -> bool {
        let state = lock(&self.state);
        state.confirmed.is_some_and(|sent| {
            runtime::now().saturating_duration_since(sent) <= state.config.staleness_bound
        })
    }

    /// The near cache's answer for `key`, if it holds one it may serve now (no network).
    pub fn lookup(&self, key: &[u8]) -> Option<GetResponse> {
        let now = runtime::now();
        let mut state = lock(&self.state);
        let state = &mut *state;
        let entry = state.entries.get(key)?;
        if !state.servable(entry, now) {
            state.stats.unconfirmed += 1;
            return None;
        }
        let ttl_remaining_ms = entry.expires_at.map_or(0, |at| {
            u64::try_from(at.saturating_duration_since(now).as_millis())
                .unwrap_or(u64::MAX)
                .max(1)
        });
        let response = GetResponse {
            key: key.to_vec(),
            value: entry.value.clone(),
            version: entry.version,
            status: CacheStatus::Hit as i32,
            ttl_remaining_ms,
            ..GetResponse::default()
        };
        let old_tick = entry.tick;
        let tick = state.next_tick;
        state.next_tick += 1;
        if let Some(entry) = state.entries.get_mut(key) {
            entry.tick = tick;
        }
        if let Some(key) = state.recency.remove(&old_tick) {
            state.recency.insert(tick, key);
        }
        state.stats.hits += 1;
        crate::reachable!("near_cache_hit");
        Some(response)
    }

    /// Reads `key` (linearizable when it goes to the cluster): from the near cache when it
    /// holds a servable entry, else from the cluster, storing the answer when it may.
    pub async fn get(&self, key: &[u8]) -> Result<(GetResponse, Source), Status> {
        if let Some(response) = self.lookup(key) {
            return Ok((response, Source::Near));
        }
        Ok((self.get_from_cluster(key).await?, Source::Cluster))
    }

    /// Reads `key` from the cluster and stores a fresh HIT in the near cache, unless the key
    /// changed while the read was in flight.
    pub async fn get_from_cluster(&self, key: &[u8]) -> Result<GetResponse, Status> {
        let sent_at = runtime::now();
        let (epoch, tracking_id) = {
            let mut state = lock(&self.state);
            state.stats.misses += 1;
            state
                .flights
                .entry(key.to_vec())
                .or_insert(Flight {
                    readers: 0,
                    invalidated: false,
                })
                .readers += 1;
            (state.epoch, state.tracking_id)
        };
        let answer = self.client.get_tracked(key, tracking_id).await;
        let mut state = lock(&self.state);
        let state = &mut *state;
        let invalidated = match state.flights.get_mut(key) {
            Some(flight) => {
                flight.readers -= 1;
                let invalidated = flight.invalidated;
                if flight.readers == 0 {
                    state.flights.remove(key);
                }
                invalidated
            }
            None => true,
        };
        let response = answer?;
        let hit = response.status == CacheStatus::Hit as i32 && !response.is_stale;
        // Never older than this client's own last read: a newer answer replaces an older entry.
        let held = state.entries.get(key).map(|entry| entry.version);
        if held.is_some_and(|version| !hit || version < response.version) {
            state.remove(key);
        }
        if !hit {
            if response.tracked && state.tracking_id == tracking_id {
                state.untrack(vec![key.to_vec()]);
            }
            return Ok(response);
        }
        let current_stream = state.epoch == epoch && state.outbox.is_some();
        if invalidated || !current_stream {
            crate::sometimes!("near_cache_fill_refused", invalidated);
            state.stats.fills_refused += 1;
            return Ok(response);
        }
        if state.entries.contains_key(key) {
            return Ok(response);
        }
        let expires_at = match response.ttl_remaining_ms {
            0 => None,
            // A hint beyond what a clock can hold (no server sends one): not cached.
            ttl_ms => match sent_at.checked_add(Duration::from_millis(ttl_ms)) {
                Some(at) => Some(at),
                None => return Ok(response),
            },
        };
        if !response.tracked || state.tracking_id != tracking_id {
            let track = WatchRequest {
                command: Some(Command::Track(TrackKeys {
                    keys: vec![TrackedKey {
                        key: key.to_vec(),
                        version: response.version,
                    }],
                })),
            };
            if !state.send(track) {
                return Ok(response);
            }
        }
        let size = entry_bytes(key, &response.value);
        if size > state.config.max_bytes {
            return Ok(response);
        }
        state.evict_for(size);
        let tick = state.next_tick;
        state.next_tick += 1;
        state.entries.insert(
            key.to_vec(),
            Entry {
                value: response.value.clone(),
                version: response.version,
                filled_at: runtime::now(),
                expires_at,
                tick,
            },
        );
        state.recency.insert(tick, key.to_vec());
        state.bytes += size;
        state.stats.fills += 1;
        Ok(response)
    }

    /// Drops `key` here (and marks a read of it in flight as outdated).
    fn forget(&self, key: &[u8]) {
        let mut state = lock(&self.state);
        if let Some(flight) = state.flights.get_mut(key) {
            flight.invalidated = true;
        }
        state.remove(key);
    }

    /// Writes `key` through the cluster; the near cache forgets it (the next read goes to the
    /// cluster and sees this write).
    pub async fn set(
        &self,
        key: &[u8],
        value: &[u8],
        ttl_ms: u64,
        expected_version: u64,
    ) -> Result<crate::proto::SetResponse, Status> {
        self.forget(key);
        let result = self.client.set(key, value, ttl_ms, expected_version).await;
        self.forget(key);
        result
    }

    /// Removes `key` through the cluster; the near cache forgets it.
    pub async fn delete(
        &self,
        key: &[u8],
        expected_version: u64,
    ) -> Result<crate::proto::DeleteResponse, Status> {
        self.forget(key);
        let result = self.client.delete(key, expected_version).await;
        self.forget(key);
        result
    }
}

/// Keeps one Watch stream open for the near cache, reconnecting with resume, until `stopped`.
async fn maintain_stream(
    client: Client,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut delay = RECONNECT_DELAY_MIN;
    loop {
        let served = tokio::select! {
            biased;
            served = serve_stream(&client, &state) => served,
            _ = &mut stopped => return,
        };
        {
            let mut state = lock(&state);
            state.outbox = None;
            state.tracking_id = 0;
            state.pending_syncs.clear();
        }
        if served {
            delay = RECONNECT_DELAY_MIN;
        } else {
            delay = (delay * 2).min(RECONNECT_DELAY_MAX);
        }
        tokio::select! {
            biased;
            _ = runtime::sleep(delay) => {}
            _ = &mut stopped => return,
        }
    }
}

/// Opens one stream and serves it until it ends; whether a sync was confirmed on it (a stream
/// that worked: the next reconnect comes quickly).
async fn serve_stream(client: &Client, state: &Arc<Mutex<State>>) -> bool {
    let (outbox, requests) = mpsc::channel::<WatchRequest>(STREAM_QUEUE_MAX);
    let (prefixes, resume_after) = {
        let state = lock(state);
        (state.config.prefixes.clone(), state.last_index)
    };
    let open = WatchRequest {
        command: Some(Command::Open(WatchOpen {
            prefixes,
            resume: resume_after.is_some(),
            resume_after_index: resume_after.unwrap_or(0),
        })),
    };
    if outbox.try_send(open).is_err() {
        return false;
    }
    let requests = crate::runtime::receiver_stream(requests);
    let Ok(mut events) = client.open_watch(requests).await else {
        return false;
    };
    // READY first.
    let ready = match events.message().await {
        Ok(Some(event)) if event.kind == WatchEventKind::EventReady as i32 => event,
        _ => return false,
    };
    let sync_interval = {
        let mut state = lock(state);
        let state = &mut *state;
        state.stats.streams_opened += 1;
        state.epoch += 1;
        for flight in state.flights.values_mut() {
            flight.invalidated = true;
        }
        state.tracking_id = ready.tracking_id;
        state.outbox = Some(outbox);
        // Re-track what is held, with the versions held: the node reports at once what changed
        // while no stream was open.
        let mut held: Vec<TrackedKey> = state
            .entries
            .iter()
            .map(|(key, entry)| TrackedKey {
                key: key.clone(),
                version: entry.version,
            })
            .collect();
        // In key order: what goes on the wire depends on nothing but the entries.
        held.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        for chunk in held.chunks(BATCH_KEYS_MAX) {
            state.send(WatchRequest {
                command: Some(Command::Track(TrackKeys {
                    keys: chunk.to_vec(),
                })),
            });
        }
        state.config.sync_interval
    };
    // The first sync goes out at once; then one per interval.
    let mut tick = Box::pin(runtime::sleep(Duration::ZERO));
    let mut confirmed_any = false;
    loop {
        tokio::select! {
            biased;
            event = events.message() => {
                let Ok(Some(event)) = event else {
                    return confirmed_any;
                };
                let mut state = lock(state);
                match WatchEventKind::try_from(event.kind) {
                    Ok(WatchEventKind::EventChanged) => {
                        state.note_index(event.index);
                        state.changed(&event.key, event.version, event.reason);
                    }
                    Ok(WatchEventKind::EventResync) => {
                        state.stats.resyncs += 1;
                        state.note_index(event.index);
                        if !state.config.ignore_resync {
                            state.clear();
                        }
                    }
                    Ok(WatchEventKind::EventProgress) => {
                        confirmed_any |= state.progress(event.index, event.sync_id);
                    }
                    _ => {}
                }
            }
            _ = &mut tick => {
                tick = Box::pin(runtime::sleep(sync_interval));
                let mut state = lock(state);
                let id = state.next_sync_id;
                state.next_sync_id += 1;
                let sync = WatchRequest {
                    command: Some(Command::Sync(SyncRequest { sync_id: id })),
                };
                if !state.send(sync) {
                    return confirmed_any;
                }
                state.pending_syncs.push_back((id, runtime::now()));
                while state.pending_syncs.len() > PENDING_SYNCS_MAX {
                    state.pending_syncs.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
