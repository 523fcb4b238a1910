//! Single-flight with read points: concurrent requests for one key share one execution, but only
//! when that execution is fresh enough for them.
//!
//! A *read point* is a position in the replicated log (the applied index at which a miss was
//! decided). A flight started at read point `r` issued its query after `r` was applied, so it
//! reflects every write the log held up to `r`. A request with read point `q` may join it only if
//! `q <= r`: otherwise the flight may have read the database before a write the request must see
//! (the 2026-12-01 abandoned-load regression: a miss joined a load that had read a row before a
//! delete that was acknowledged since).
//!
//! Contract:
//! - [`SingleFlight::run`] joins the newest flight of the key when its read point covers the
//!   caller's, and otherwise starts a new one (older flights keep serving their own waiters).
//! - A flight is driven by its waiters. When the last handle goes (a waiter's future is dropped,
//!   e.g. a client deadline passed) the flight is dropped at once: whatever it holds (a pool
//!   permit, a query) is released, and its map entry is removed. No abandoned flight is ever
//!   joined later.
//! - A finished flight stays joinable (its outcome shared) while some handle still holds it; a
//!   caller may keep one until what it started with the outcome is done.
//!
//! Pure futures: no runtime, no clock, usable in both builds and in plain unit tests.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use futures::future::{BoxFuture, FutureExt, Shared};

/// Which flights a request may join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JoinRule {
    /// Only a flight whose read point covers the request's (the product's rule).
    #[default]
    CoveringReadPoint,
    /// Fault injection (the pre-fix behaviour): any flight of the key, however old, and flights
    /// are kept alive by the map after their waiters left, so an abandoned one can be joined.
    AnyFlight,
}

type SharedWork<V> = Shared<BoxFuture<'static, V>>;

/// A waiter's handle to one flight: a future of its outcome. Cheap to clone. The flight lives
/// (and stays joinable by requests it covers) while any handle does: a caller may keep one past
/// the outcome, e.g. until what it started with the outcome is done.
pub struct FlightFuture<V: Clone> {
    live: Arc<Live<V>>,
    work: SharedWork<V>,
}

impl<V: Clone> Clone for FlightFuture<V> {
    fn clone(&self) -> Self {
        FlightFuture {
            live: Arc::clone(&self.live),
            work: self.work.clone(),
        }
    }
}

impl<V: Clone> Future for FlightFuture<V> {
    type Output = V;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<V> {
        std::pin::Pin::new(&mut self.work).poll(cx)
    }
}

/// Given to a flight's work: lets it keep its own flight alive (joinable, with its outcome) past
/// its end, e.g. until a follow-up it spawned is done. Take the guard only when the work is about
/// to end: a guard held by the work itself keeps the flight alive while nobody waits for it.
pub struct FlightKeeper<V: Clone> {
    live: Weak<Live<V>>,
}

/// Keeps a flight alive while held (see [`FlightKeeper::keep`]).
pub struct KeepAlive<V: Clone> {
    _live: Arc<Live<V>>,
}

impl<V: Clone> FlightKeeper<V> {
    /// A guard keeping the flight alive; `None` if it is already gone (never while its work runs
    /// under a waiter).
    pub fn keep(&self) -> Option<KeepAlive<V>> {
        self.live.upgrade().map(|live| KeepAlive { _live: live })
    }
}

/// What every handle of a flight shares; dropping the last one drops the work (cancelling it if
/// unfinished) and removes the flight's map entry.
struct Live<V: Clone> {
    work: SharedWork<V>,
    deregister: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<V: Clone> Drop for Live<V> {
    fn drop(&mut self) {
        if let Some(deregister) = self.deregister.take() {
            deregister();
        }
    }
}

enum Held<V: Clone> {
    /// Alive while some waiter holds a handle.
    Weak(Weak<Live<V>>),
    /// Kept alive by the map itself until the work completes (only under
    /// [`JoinRule::AnyFlight`]).
    Strong(Arc<Live<V>>),
}

struct Flight<V: Clone> {
    id: u64,
    read_point: u64,
    held: Held<V>,
}

impl<V: Clone> Flight<V> {
    fn handle(&self) -> Option<FlightFuture<V>> {
        let live = match &self.held {
            Held::Weak(weak) => weak.upgrade()?,
            Held::Strong(strong) => Arc::clone(strong),
        };
        let work = live.work.clone();
        Some(FlightFuture { live, work })
    }
}

struct Inner<K, V: Clone> {
    rule: JoinRule,
    flights: Mutex<HashMap<K, Flight<V>>>,
    next_id: AtomicU64,
    started: AtomicU64,
    joined: AtomicU64,
}

/// See the module docs. Cheap to clone; clones share the flights.
pub struct SingleFlight<K, V: Clone> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V: Clone> Clone for SingleFlight<K, V> {
    fn clone(&self) -> Self {
        SingleFlight {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// How a request was served by [`SingleFlight::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// It started a new flight.
    Started,
    /// It joined a flight another request started.
    Joined,
}

/// Counters of one [`SingleFlight`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlightStats {
    pub started: u64,
    pub joined: u64,
    /// Flights alive now.
    pub in_flight: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map is updated in single statements that cannot panic half-way.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes the flight `id` of `key`, unless a newer flight of the key replaced it.
fn remove_flight<K: Hash + Eq, V: Clone>(inner: &Inner<K, V>, key: &K, id: u64) {
    let removed = {
        let mut flights = lock(&inner.flights);
        match flights.get(key) {
            Some(flight) if flight.id == id => flights.remove(key),
            _ => None,
        }
    };
    // Dropped with the lock released: a last strong handle deregisters, which locks.
    drop(removed);
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(rule: JoinRule) -> SingleFlight<K, V> {
        SingleFlight {
            inner: Arc::new(Inner {
                rule,
                flights: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                started: AtomicU64::new(0),
                joined: AtomicU64::new(0),
            }),
        }
    }

    /// Joins the key's flight if its read point covers `read_point` (see the module docs), or
    /// starts `start(keeper)` as a new flight at `read_point`. `start` is called only when a
    /// flight is started, with the lock released; the work may use `keeper` to keep its flight
    /// (and outcome) joinable past its end.
    pub fn run<F>(
        &self,
        key: &K,
        read_point: u64,
        start: impl FnOnce(FlightKeeper<V>) -> F,
    ) -> (FlightFuture<V>, Joined)
    where
        F: Future<Output = V> + Send + 'static,
    {
        self.run_if(key, read_point, |_| false, start)
    }

    /// [`SingleFlight::run`], where the caller may also know a flight older than its read point
    /// to be good enough: `still_valid(flight_read_point)` says whether nothing the request must
    /// see happened after that point (e.g. the key did not change since).
    pub fn run_if<F>(
        &self,
        key: &K,
        read_point: u64,
        still_valid: impl FnOnce(u64) -> bool,
        start: impl FnOnce(FlightKeeper<V>) -> F,
    ) -> (FlightFuture<V>, Joined)
    where
        F: Future<Output = V> + Send + 'static,
    {
        {
            let flights = lock(&self.inner.flights);
            if let Some(flight) = flights.get(key) {
                let covers = match self.inner.rule {
                    JoinRule::CoveringReadPoint => {
                        flight.read_point >= read_point || still_valid(flight.read_point)
                    }
                    JoinRule::AnyFlight => true,
                };
                if let Some(handle) = covers.then(|| flight.handle()).flatten() {
                    self.inner.joined.fetch_add(1, Ordering::Relaxed);
                    return (handle, Joined::Joined);
                }
            }
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(&self.inner);
        let owned_key = key.clone();
        let rule = self.inner.rule;
        let live = Arc::new_cyclic(|weak: &Weak<Live<V>>| {
            let work = start(FlightKeeper { live: weak.clone() });
            match rule {
                JoinRule::CoveringReadPoint => Live {
                    work: work.boxed().shared(),
                    deregister: Some(Box::new(move || remove_flight(&inner, &owned_key, id))),
                },
                // The pre-fix behaviour: the map keeps the flight until its work completes, so a
                // flight every waiter abandoned (and nobody polls) stays joinable.
                JoinRule::AnyFlight => Live {
                    work: async move {
                        let outcome = work.await;
                        remove_flight(&inner, &owned_key, id);
                        outcome
                    }
                    .boxed()
                    .shared(),
                    deregister: None,
                },
            }
        });
        let handle = FlightFuture {
            work: live.work.clone(),
            live: Arc::clone(&live),
        };
        let held = match rule {
            JoinRule::CoveringReadPoint => Held::Weak(Arc::downgrade(&live)),
            JoinRule::AnyFlight => Held::Strong(Arc::clone(&live)),
        };
        drop(live);
        self.insert(key, id, read_point, held);
        self.inner.started.fetch_add(1, Ordering::Relaxed);
        (handle, Joined::Started)
    }

    fn insert(&self, key: &K, id: u64, read_point: u64, held: Held<V>) {
        let replaced = lock(&self.inner.flights).insert(
            key.clone(),
            Flight {
                id,
                read_point,
                held,
            },
        );
        // Dropped with the lock released: a last strong handle deregisters, which locks.
        drop(replaced);
    }

    pub fn stats(&self) -> FlightStats {
        FlightStats {
            started: self.inner.started.load(Ordering::Relaxed),
            joined: self.inner.joined.load(Ordering::Relaxed),
            in_flight: lock(&self.inner.flights).len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::oneshot;
    use std::sync::atomic::AtomicUsize;

    type Flights = SingleFlight<&'static str, u64>;

    #[test]
    fn concurrent_requests_share_one_flight() {
        let flights = Flights::new(JoinRule::CoveringReadPoint);
        let starts = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = oneshot::channel::<u64>();
        let rx = rx.shared();
        let start = |starts: Arc<AtomicUsize>, rx: Shared<oneshot::Receiver<u64>>| {
            move |_| {
                starts.fetch_add(1, Ordering::Relaxed);
                async move { rx.await.unwrap() }
            }
        };
        let (a, joined_a) = flights.run(&"k", 5, start(starts.clone(), rx.clone()));
        let (b, joined_b) = flights.run(&"k", 5, start(starts.clone(), rx.clone()));
        let (c, joined_c) = flights.run(&"k", 3, start(starts.clone(), rx.clone()));
        assert_eq!(
            (joined_a, joined_b, joined_c),
            (Joined::Started, Joined::Joined, Joined::Joined)
        );
        tx.send(9).unwrap();
        let results = futures::executor::block_on(futures::future::join3(a, b, c));
        assert_eq!(results, (9, 9, 9));
        assert_eq!(starts.load(Ordering::Relaxed), 1);
        assert_eq!(
            flights.stats().in_flight,
            0,
            "a finished flight leaves the map"
        );
    }

    #[test]
    fn a_flight_older_than_the_request_is_not_joined() {
        let flights = Flights::new(JoinRule::CoveringReadPoint);
        let (old, _) = flights.run(&"k", 5, |_| async { 1 });
        let (new, joined) = flights.run(&"k", 6, |_| async { 2 });
        assert_eq!(joined, Joined::Started, "read point 5 does not cover 6");
        assert_eq!(futures::executor::block_on(new), 2);
        assert_eq!(
            futures::executor::block_on(old),
            1,
            "the old flight serves its own waiters"
        );
    }

    #[test]
    fn an_abandoned_flight_is_dropped_and_never_joined() {
        let flights = Flights::new(JoinRule::CoveringReadPoint);
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Tracked(Arc<AtomicUsize>);
        impl Drop for Tracked {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let tracked = Tracked(dropped.clone());
        let (waiter, _) = flights.run(&"k", 5, move |_| async move {
            let _held = tracked;
            futures::future::pending::<u64>().await
        });
        // Poll once so the work is under way, then leave.
        let mut waiter = waiter;
        assert!(
            futures::executor::block_on(futures::future::poll_immediate(&mut waiter)).is_none()
        );
        drop(waiter);
        assert_eq!(dropped.load(Ordering::Relaxed), 1, "the work was cancelled");
        assert_eq!(flights.stats().in_flight, 0, "and its entry removed");
        let (later, joined) = flights.run(&"k", 5, |_| async { 7 });
        assert_eq!(joined, Joined::Started);
        assert_eq!(futures::executor::block_on(later), 7);
    }

    #[test]
    fn a_kept_flight_stays_joinable_after_its_work_ends() {
        let flights = Flights::new(JoinRule::CoveringReadPoint);
        let kept = Arc::new(Mutex::new(None));
        let slot = kept.clone();
        let (first, _) = flights.run(&"k", 5, move |keeper| async move {
            *lock(&slot) = keeper.keep();
            3
        });
        assert_eq!(futures::executor::block_on(first), 3);
        let (later, joined) = flights.run(&"k", 4, |_| async { 9 });
        assert_eq!(joined, Joined::Joined, "kept alive past its end");
        assert_eq!(futures::executor::block_on(later), 3);
        lock(&kept).take();
        assert_eq!(flights.stats().in_flight, 0, "released with the keeper");
    }

    #[test]
    fn the_pre_fix_rule_joins_abandoned_and_stale_flights() {
        let flights = Flights::new(JoinRule::AnyFlight);
        let (tx, rx) = oneshot::channel::<u64>();
        let (abandoned, _) = flights.run(&"k", 1, move |_| async move { rx.await.unwrap() });
        drop(abandoned);
        tx.send(1).unwrap();
        let (later, joined) = flights.run(&"k", 10, |_| async { 2 });
        assert_eq!(
            joined,
            Joined::Joined,
            "the map kept the abandoned flight alive"
        );
        assert_eq!(
            futures::executor::block_on(later),
            1,
            "and its old answer is served"
        );
    }
}
