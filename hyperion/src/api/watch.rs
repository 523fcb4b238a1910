//! The `Watch` RPC: a node's invalidation hub ([`crate::watch`]) as a bidirectional gRPC stream.
//!
//! The first request opens the subscription (prefixes, optional resume); the first event is
//! READY with the stream's `tracking_id`. Later requests track and untrack keys, change prefixes
//! and ask for syncs, in the order they arrive: a `track` is registered before a `sync` sent
//! after it starts its read index, so the PROGRESS that answers the sync covers it.
//!
//! A sync runs one read index at a time (through the leader, on any node) and is answered once
//! this node has applied that far: every change committed before the request arrived has been
//! queued before the PROGRESS. Syncs that arrive meanwhile are coalesced into the next round,
//! answering the newest id (an older one would claim a later cut than it had).
//!
//! Bounds: the hub's (streams, prefixes, tracking table, queue, history); here, at most
//! [`BATCH_KEYS_MAX`] keys per track/untrack request, keys and prefixes up to [`KEY_BYTES_MAX`]
//! bytes, and the first request within [`WATCH_OPEN_TIMEOUT`]. A bad request ends the stream with
//! `INVALID_ARGUMENT` naming the field; a refused prefix or key with `PERMISSION_DENIED`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Authority, Caller, Operation};
use crate::limits::BATCH_KEYS_MAX;
use crate::proto::watch_request::Command;
use crate::proto::{ChangeReason, WatchEvent, WatchEventKind, WatchOpen, WatchRequest};
use crate::replica::Replica;
use crate::runtime;
use crate::watch::{Closed, Event, Reason, SubscribeError, Subscription};

/// The first request (`open`) must arrive within this.
pub const WATCH_OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one sync round may take (its read index, then applying up to it). A round that takes
/// longer is abandoned unanswered: the client's cache then ages past its bound and stops serving.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// The response stream of `Watch`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send + 'static>>;

/// Who owns a subscription, as the hub compares it (reads naming the stream must match).
pub fn owner_of(caller: &Caller) -> String {
    format!("{caller:?}")
}

/// Checks prefixes (`field[i]` names a bad one) and that `caller` may read under each.
fn check_prefixes(
    authority: &Authority,
    caller: &Caller,
    field: &str,
    prefixes: &[Vec<u8>],
) -> Result<(), Status> {
    for (index, prefix) in prefixes.iter().enumerate() {
        super::validate_bytes(&format!("{field}[{index}]"), prefix, true)?;
    }
    let refs: Vec<&[u8]> = prefixes.iter().map(Vec::as_slice).collect();
    authority.permit(caller, Operation::Read, &refs)
}

/// Checks the keys of a `track` or `untrack` request.
fn check_keys<'a>(
    field: &str,
    keys: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Result<(), Status> {
    if keys.len() > BATCH_KEYS_MAX {
        return Err(Status::invalid_argument(format!(
            "{field}: {} keys exceeds the limit of {BATCH_KEYS_MAX} per request",
            keys.len()
        )));
    }
    for (index, key) in keys.enumerate() {
        super::validate_bytes(&format!("{field}[{index}].key"), key, false)?;
    }
    Ok(())
}

fn subscribe_error_status(error: SubscribeError) -> Status {
    match error {
        SubscribeError::TooManyStreams(_) => Status::resource_exhausted(error.to_string()),
        SubscribeError::TooManyPrefixes { .. } => Status::invalid_argument(error.to_string()),
    }
}

fn closed_status(closed: Closed) -> Status {
    match closed {
        Closed::TooSlow(_) => Status::resource_exhausted(closed.to_string()),
    }
}

/// The protobuf form of a hub event.
pub fn event_to_wire(event: Event) -> WatchEvent {
    match event {
        Event::Changed(change) => WatchEvent {
            kind: WatchEventKind::EventChanged as i32,
            key: change.key,
            version: change.version,
            reason: match change.reason {
                Reason::Set => ChangeReason::ReasonSet,
                Reason::Delete => ChangeReason::ReasonDelete,
                Reason::Expire => ChangeReason::ReasonExpire,
                Reason::Evict => ChangeReason::ReasonEvict,
            } as i32,
            index: change.index,
            ..WatchEvent::default()
        },
        Event::Resync { index } => WatchEvent {
            kind: WatchEventKind::EventResync as i32,
            index,
            ..WatchEvent::default()
        },
        Event::Progress { index, sync_id } => WatchEvent {
            kind: WatchEventKind::EventProgress as i32,
            index,
            sync_id,
            ..WatchEvent::default()
        },
    }
}

/// Opens a Watch stream for an authenticated `caller` (the caller checked rate limits and
/// `enable_client_caching`).
pub async fn open(
    replica: Replica,
    authority: Arc<Authority>,
    caller: Caller,
    request: Request<Streaming<WatchRequest>>,
    shutdown: Option<crate::health::ShutdownSignal>,
) -> Result<Response<WatchStream>, Status> {
    let mut requests = request.into_inner();
    let first = match runtime::timeout(WATCH_OPEN_TIMEOUT, requests.message()).await {
        Err(_) => {
            return Err(Status::deadline_exceeded(format!(
                "open: the first WatchRequest did not arrive within {} ms",
                WATCH_OPEN_TIMEOUT.as_millis()
            )))
        }
        Ok(Err(status)) => return Err(status),
        Ok(Ok(None)) => {
            return Err(Status::invalid_argument(
                "open: the stream ended before its first request",
            ))
        }
        Ok(Ok(Some(first))) => first,
    };
    let Some(Command::Open(WatchOpen {
        prefixes,
        resume,
        resume_after_index,
    })) = first.command
    else {
        return Err(Status::invalid_argument(
            "open: the first WatchRequest must be `open`",
        ));
    };
    let limits = replica.watch().limits();
    if prefixes.len() > limits.prefixes_max {
        return Err(subscribe_error_status(SubscribeError::TooManyPrefixes {
            count: prefixes.len(),
            max: limits.prefixes_max,
        }));
    }
    check_prefixes(&authority, &caller, "open.prefixes", &prefixes)?;
    if resume && resume_after_index > replica.watch().applied_index() {
        // The client saw that index applied elsewhere, so it is committed: catch up to the
        // cluster's commit index first (bounded) rather than resync a client that is merely
        // ahead of this node. Still behind afterwards: the hub answers RESYNC.
        let _ = runtime::timeout(SYNC_TIMEOUT, replica.applied_read_index()).await;
    }
    let subscription = replica
        .watch()
        .subscribe_as(
            owner_of(&caller),
            prefixes,
            resume.then_some(resume_after_index),
        )
        .map_err(subscribe_error_status)?;
    let subscription = Arc::new(subscription);
    let ready = WatchEvent {
        kind: WatchEventKind::EventReady as i32,
        tracking_id: subscription.id(),
        index: replica.watch().applied_index(),
        ..WatchEvent::default()
    };
    // A bad request ends the stream with its status; the reader ends when the stream is dropped.
    let (failed, failure) = tokio::sync::mpsc::channel::<Status>(1);
    let (alive, dropped) = tokio::sync::oneshot::channel::<()>();
    let reader = Reader {
        replica,
        authority,
        caller,
        subscription: Arc::clone(&subscription),
        syncs: None,
    };
    runtime::spawn(reader.run(requests, failed, dropped));
    let events = Events {
        subscription,
        pending: VecDeque::from([ready]),
        failure,
        _alive: alive,
        ended: false,
        shutdown: match shutdown {
            Some(shutdown) => futures::FutureExt::boxed(shutdown),
            None => futures::FutureExt::boxed(futures::future::pending()),
        },
    };
    let stream: WatchStream = Box::pin(futures::stream::unfold(events, Events::next));
    Ok(Response::new(stream))
}

/// The response side: READY, then the subscription's events, until it closes or a request
/// failed.
struct Events {
    subscription: Arc<Subscription>,
    pending: VecDeque<WatchEvent>,
    failure: tokio::sync::mpsc::Receiver<Status>,
    /// Dropped with the stream: tells the reader to stop.
    _alive: tokio::sync::oneshot::Sender<()>,
    ended: bool,
    /// The node is shutting down: the stream ends (UNAVAILABLE; clients reconnect elsewhere).
    shutdown: futures::future::BoxFuture<'static, ()>,
}

impl Events {
    async fn next(mut self) -> Option<(Result<WatchEvent, Status>, Events)> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                if crate::buggify!("cut_watch_stream") {
                    self.ended = true;
                    let cut =
                        Status::unavailable("the connection closed mid-stream (simulated fault)");
                    return Some((Err(cut), self));
                }
                return Some((Ok(event), self));
            }
            let batch = tokio::select! {
                biased;
                status = self.failure.recv() => {
                    self.ended = true;
                    return status.map(|status| (Err(status), self));
                }
                () = &mut self.shutdown => {
                    self.ended = true;
                    let stopping = Status::unavailable("this node is shutting down; reconnect and resume");
                    return Some((Err(stopping), self));
                }
                batch = self.subscription.next_batch() => batch,
            };
            match batch {
                Ok(events) => self.pending.extend(events.into_iter().map(event_to_wire)),
                Err(closed) => {
                    self.ended = true;
                    return Some((Err(closed_status(closed)), self));
                }
            }
        }
    }
}

/// The request side of one stream.
struct Reader {
    replica: Replica,
    authority: Arc<Authority>,
    caller: Caller,
    subscription: Arc<Subscription>,
    /// The newest sync id asked for, to the stream's sync task (started on the first sync).
    syncs: Option<tokio::sync::watch::Sender<u64>>,
}

impl Reader {
    async fn run(
        mut self,
        mut requests: Streaming<WatchRequest>,
        failed: tokio::sync::mpsc::Sender<Status>,
        mut dropped: tokio::sync::oneshot::Receiver<()>,
    ) {
        loop {
            let request = tokio::select! {
                biased;
                request = requests.message() => request,
                _ = &mut dropped => return,
            };
            let outcome = match request {
                // The client finished sending (or its connection ended): events go on until
                // the response stream is dropped.
                Ok(None) | Err(_) => return,
                Ok(Some(request)) => self.handle(request),
            };
            if let Err(status) = outcome {
                let _ = failed.try_send(status);
                return;
            }
        }
    }

    fn handle(&mut self, request: WatchRequest) -> Result<(), Status> {
        match request.command {
            None => Err(Status::invalid_argument(
                "command: a WatchRequest must set one",
            )),
            Some(Command::Open(_)) => Err(Status::invalid_argument(
                "open: only the first WatchRequest may be `open`",
            )),
            Some(Command::Track(track)) => {
                check_keys("track.keys", track.keys.iter().map(|k| k.key.as_slice()))?;
                let keys: Vec<&[u8]> = track.keys.iter().map(|k| k.key.as_slice()).collect();
                self.authority
                    .permit(&self.caller, Operation::Read, &keys)?;
                for tracked in &track.keys {
                    let replica = &self.replica;
                    self.subscription.track(&tracked.key, tracked.version, || {
                        replica.current_version(&tracked.key)
                    });
                }
                Ok(())
            }
            Some(Command::Untrack(untrack)) => {
                check_keys("untrack.keys", untrack.keys.iter().map(Vec::as_slice))?;
                for key in &untrack.keys {
                    self.subscription.untrack(key);
                }
                Ok(())
            }
            Some(Command::Subscribe(add)) => {
                check_prefixes(
                    &self.authority,
                    &self.caller,
                    "subscribe.prefixes",
                    &add.prefixes,
                )?;
                self.subscription
                    .set_prefixes(add.prefixes, &[])
                    .map_err(subscribe_error_status)
            }
            Some(Command::Unsubscribe(remove)) => self
                .subscription
                .set_prefixes(Vec::new(), &remove.prefixes)
                .map_err(subscribe_error_status),
            Some(Command::Sync(sync)) => {
                match &self.syncs {
                    Some(syncs) => {
                        let _ = syncs.send(sync.sync_id);
                    }
                    None => {
                        let (syncs, asked) = tokio::sync::watch::channel(sync.sync_id);
                        runtime::spawn(run_syncs(
                            self.replica.clone(),
                            Arc::clone(&self.subscription),
                            asked,
                        ));
                        self.syncs = Some(syncs);
                    }
                }
                Ok(())
            }
        }
    }
}

/// Answers a stream's syncs, one round at a time, each with the newest id asked for before the
/// round started. Ends when the stream's reader does.
async fn run_syncs(
    replica: Replica,
    subscription: Arc<Subscription>,
    mut asked: tokio::sync::watch::Receiver<u64>,
) {
    loop {
        let sync_id = *asked.borrow_and_update();
        // No leader, overloaded, or slow: no answer; the client's cache ages past its bound and
        // stops serving until a later round succeeds.
        if let Ok(Ok(())) = runtime::timeout(SYNC_TIMEOUT, replica.applied_read_index()).await {
            crate::reachable!("watch_sync_answered");
            subscription.progress(sync_id);
        }
        if asked.changed().await.is_err() {
            return;
        }
    }
}
