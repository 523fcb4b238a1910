//! The `Watch` RPC over real HTTP/2 on loopback (tokio build): tracking through reads and
//! `track`, broadcast prefixes, syncs, resumption, the queue bound, every refusal; and the Rust
//! client's near cache against it.

use std::time::Duration;

use hyperion::client::{Client, NearCacheConfig, Source};
use hyperion::proto::cache_service_client::CacheServiceClient;
use hyperion::proto::watch_request::Command;
use hyperion::proto::{
    ChangeReason, GetRequest, Prefixes, SyncRequest, TrackKeys, TrackedKey, WatchEvent,
    WatchEventKind, WatchOpen, WatchRequest,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

mod local;
use local::{generous_limits, loopback_config, raw_client, start};

/// One open Watch stream: send requests, receive events.
struct Stream {
    requests: mpsc::Sender<WatchRequest>,
    events: Streaming<WatchEvent>,
}

fn command(command: Command) -> WatchRequest {
    WatchRequest {
        command: Some(command),
    }
}

fn open(prefixes: &[&[u8]], resume_after: Option<u64>) -> WatchRequest {
    command(Command::Open(WatchOpen {
        prefixes: prefixes.iter().map(|p| p.to_vec()).collect(),
        resume: resume_after.is_some(),
        resume_after_index: resume_after.unwrap_or(0),
    }))
}

async fn watch(
    stub: &mut CacheServiceClient<Channel>,
    first: WatchRequest,
) -> Result<Stream, tonic::Status> {
    let (requests, receiver) = mpsc::channel(64);
    requests.send(first).await.unwrap();
    let outgoing = hyperion::runtime::receiver_stream(receiver);
    let events = stub.watch(outgoing).await?.into_inner();
    Ok(Stream { requests, events })
}

impl Stream {
    async fn send(&self, request: WatchRequest) {
        self.requests.send(request).await.unwrap();
    }

    async fn next(&mut self) -> Result<WatchEvent, tonic::Status> {
        tokio::time::timeout(Duration::from_secs(5), self.events.message())
            .await
            .expect("an event within 5 s")
            .map(|event| event.expect("the stream is open"))
    }

    /// The next event that is not a PROGRESS nobody asked for.
    async fn next_change(&mut self) -> WatchEvent {
        loop {
            let event = self.next().await.expect("open");
            if event.kind != WatchEventKind::EventProgress as i32 || event.sync_id != 0 {
                return event;
            }
        }
    }
}

fn is_change(event: &WatchEvent, key: &[u8], version: u64, reason: ChangeReason) -> bool {
    event.kind == WatchEventKind::EventChanged as i32
        && event.key == key
        && event.version == version
        && event.reason == reason as i32
}

#[tokio::test]
async fn a_stream_reports_tracked_reads_prefixes_and_answers_syncs() {
    let server = start(loopback_config(), generous_limits()).await;
    let client = Client::new(&server.addr.to_string()).unwrap();
    let mut stub = raw_client(server.addr).await;
    let mut stream = watch(&mut stub, open(&[b"user:"], None)).await.unwrap();
    let ready = stream.next().await.unwrap();
    assert_eq!(ready.kind, WatchEventKind::EventReady as i32);
    assert_ne!(ready.tracking_id, 0);

    // A read naming the stream is tracked at the version it answered.
    let first = client.set(b"k", b"a", 0, 0).await.unwrap();
    let read = stub
        .get(GetRequest {
            key: b"k".to_vec(),
            tracking_id: ready.tracking_id,
            ..GetRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(read.tracked);
    assert_eq!(read.version, first.version);
    // A stream id of nobody's is not honoured.
    let untracked = stub
        .get(GetRequest {
            key: b"k".to_vec(),
            tracking_id: ready.tracking_id ^ 1,
            ..GetRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!untracked.tracked);

    let second = client.set(b"k", b"b", 0, 0).await.unwrap();
    let event = stream.next_change().await;
    assert!(
        is_change(&event, b"k", second.version, ChangeReason::ReasonSet),
        "{event:?}"
    );
    assert!(event.index >= second.version);

    // Broadcast: every key under the prefix, tracked or not; deletes carry version 0.
    let user = client.set(b"user:1", b"x", 0, 0).await.unwrap();
    let event = stream.next_change().await;
    assert!(is_change(
        &event,
        b"user:1",
        user.version,
        ChangeReason::ReasonSet
    ));
    client.delete(b"user:1", 0).await.unwrap();
    let event = stream.next_change().await;
    assert!(is_change(&event, b"user:1", 0, ChangeReason::ReasonDelete));

    // `track` with an old version: the node is ahead, so it reports at once.
    let third = client.set(b"j", b"1", 0, 0).await.unwrap();
    client.set(b"j", b"2", 0, 0).await.unwrap();
    stream
        .send(command(Command::Track(TrackKeys {
            keys: vec![TrackedKey {
                key: b"j".to_vec(),
                version: third.version,
            }],
        })))
        .await;
    let event = stream.next_change().await;
    assert!(
        event.key == b"j" && event.version > third.version,
        "{event:?}"
    );

    // Prefixes change while the stream is open.
    stream
        .send(command(Command::Subscribe(Prefixes {
            prefixes: vec![b"order:".to_vec()],
        })))
        .await;
    stream
        .send(command(Command::Unsubscribe(Prefixes {
            prefixes: vec![b"user:".to_vec()],
        })))
        .await;
    // A sync is answered after everything applied before it.
    stream
        .send(command(Command::Sync(SyncRequest { sync_id: 7 })))
        .await;
    let progress = stream.next_change().await;
    assert_eq!(progress.kind, WatchEventKind::EventProgress as i32);
    assert_eq!(progress.sync_id, 7);
    client.set(b"user:2", b"-", 0, 0).await.unwrap();
    let order = client.set(b"order:1", b"o", 0, 0).await.unwrap();
    let event = stream.next_change().await;
    assert!(
        is_change(&event, b"order:1", order.version, ChangeReason::ReasonSet),
        "user:2 is no longer subscribed: {event:?}"
    );
    assert!(progress.index < order.version);
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn bad_watch_requests_end_the_stream_naming_the_field() {
    let server = start(loopback_config(), generous_limits()).await;
    let mut stub = raw_client(server.addr).await;
    let not_open = command(Command::Sync(SyncRequest { sync_id: 1 }));
    let error = watch(&mut stub, not_open).await.err().unwrap();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().starts_with("open:"), "{}", error.message());

    let too_many: Vec<&[u8]> = vec![b"p"; 65];
    let error = watch(&mut stub, open(&too_many, None)).await.err().unwrap();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().starts_with("prefixes:"),
        "{}",
        error.message()
    );

    let long = vec![b'p'; 4097];
    let error = watch(&mut stub, open(&[&long], None)).await.err().unwrap();
    assert!(
        error.message().starts_with("open.prefixes[0]:"),
        "{}",
        error.message()
    );

    for (request, field) in [
        (
            command(Command::Track(TrackKeys {
                keys: (0..101)
                    .map(|i| TrackedKey {
                        key: vec![b'k', i as u8],
                        version: 0,
                    })
                    .collect(),
            })),
            "track.keys: 101 keys exceeds the limit of 100",
        ),
        (
            command(Command::Track(TrackKeys {
                keys: vec![TrackedKey::default()],
            })),
            "track.keys[0].key: must not be empty",
        ),
        (open(&[], None), "open: only the first"),
        (WatchRequest { command: None }, "command:"),
    ] {
        let mut stream = watch(&mut stub, open(&[], None)).await.unwrap();
        stream.next().await.unwrap();
        stream.send(request).await;
        let error = stream.next().await.expect_err("the stream ends");
        assert_eq!(error.code(), Code::InvalidArgument);
        assert!(error.message().starts_with(field), "{}", error.message());
    }
    // The node goes on serving.
    let client = Client::new(&server.addr.to_string()).unwrap();
    client.set(b"k", b"v", 0, 0).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn watch_is_refused_while_client_caching_is_off() {
    let mut config = loopback_config();
    config.flags.enable_client_caching = false;
    let server = start(config, generous_limits()).await;
    let mut stub = raw_client(server.addr).await;
    let error = watch(&mut stub, open(&[], None)).await.err().unwrap();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(
        error.message().contains("enable_client_caching"),
        "{}",
        error.message()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_reconnecting_stream_resumes_or_resyncs() {
    let mut config = loopback_config();
    config.watch_history_events = 4;
    let server = start(config, generous_limits()).await;
    let client = Client::new(&server.addr.to_string()).unwrap();
    let mut stub = raw_client(server.addr).await;
    let mut stream = watch(&mut stub, open(&[b"r:"], None)).await.unwrap();
    stream.next().await.unwrap();
    let seen = client.set(b"r:1", b"a", 0, 0).await.unwrap();
    let event = stream.next_change().await;
    drop(stream);
    // Missed while disconnected: two changes, within the history of four.
    let a = client.set(b"r:2", b"b", 0, 0).await.unwrap();
    let b = client.set(b"r:3", b"c", 0, 0).await.unwrap();
    let mut resumed = watch(&mut stub, open(&[b"r:"], Some(event.index)))
        .await
        .unwrap();
    resumed.next().await.unwrap();
    let first = resumed.next_change().await;
    let second = resumed.next_change().await;
    assert!(is_change(
        &first,
        b"r:2",
        a.version,
        ChangeReason::ReasonSet
    ));
    assert!(is_change(
        &second,
        b"r:3",
        b.version,
        ChangeReason::ReasonSet
    ));
    drop(resumed);
    // From further back than the history holds: a resync.
    for i in 0..6 {
        client.set(b"other", &[i], 0, 0).await.unwrap();
    }
    let mut too_old = watch(&mut stub, open(&[b"r:"], Some(seen.version)))
        .await
        .unwrap();
    too_old.next().await.unwrap();
    let event = too_old.next_change().await;
    assert_eq!(event.kind, WatchEventKind::EventResync as i32);
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_too_slow_for_its_queue_is_disconnected_and_writes_go_on() {
    let mut config = loopback_config();
    config.watch_queue_events = 16;
    let server = start(config, generous_limits()).await;
    let client = Client::new(&server.addr.to_string()).unwrap();
    let mut stub = raw_client(server.addr).await;
    let mut stream = watch(&mut stub, open(&[b""], None)).await.unwrap();
    stream.next().await.unwrap();
    // Nothing is read while 4 KiB keys change: the transport's window fills, then the queue
    // overflows (a resync), then again (the subscriber is closed). Writes never wait.
    let started = hyperion::runtime::now();
    let mut written = 0;
    while server.replica.watch().stats().too_slow == 0 && written < 5_000 {
        let key = format!("{written:04096}");
        client.set(key.as_bytes(), b"v", 0, 0).await.unwrap();
        written += 1;
    }
    assert_eq!(
        server.replica.watch().stats().too_slow,
        1,
        "closed after {written} writes in {:?}",
        started.elapsed()
    );
    let mut kinds = Vec::new();
    let ended = loop {
        match stream.next().await {
            Ok(event) => kinds.push(event.kind),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::ResourceExhausted);
    assert!(
        ended.message().contains("fell behind"),
        "{}",
        ended.message()
    );
    // The first overflow queued a resync; the second dropped it with the queue (the status
    // says as much: flush and resume).
    assert!(server.replica.watch().stats().resyncs >= 1);
    assert!(!kinds.is_empty(), "events arrived before the window filled");
    server.stop().await;
}

#[tokio::test]
async fn the_near_cache_serves_confirmed_entries_and_drops_changed_ones() {
    let server = start(loopback_config(), generous_limits()).await;
    let writer = Client::new(&server.addr.to_string()).unwrap();
    let near = Client::new(&server.addr.to_string())
        .unwrap()
        .with_near_cache(NearCacheConfig::default())
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while !near.is_confirmed() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the stream confirms within 5 s");
    writer.set(b"k", b"one", 0, 0).await.unwrap();
    let (first, source) = near.get(b"k").await.unwrap();
    assert_eq!(
        (first.value.as_slice(), source),
        (b"one".as_slice(), Source::Cluster)
    );
    // Served from memory once a sync sent after the fill is answered.
    let served = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(hit) = near.lookup(b"k") {
                return hit;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("served from the near cache within 5 s");
    assert_eq!(served.version, first.version);
    // Another client's write drops it; the next read sees the write.
    let second = writer.set(b"k", b"two", 0, 0).await.unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while near.lookup(b"k").is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "invalidated within 5 s");
    let (read, _) = near.get(b"k").await.unwrap();
    assert_eq!(read.version, second.version);
    // Its own write: never served older afterwards.
    let own = near.set(b"k", b"three", 0, 0).await.unwrap();
    let (read, source) = near.get(b"k").await.unwrap();
    assert_eq!((read.version, source), (own.version, Source::Cluster));
    let stats = near.stats();
    assert!(stats.hits >= 1 && stats.invalidations >= 1, "{stats:?}");
    assert_eq!(stats.streams_opened, 1);
    drop(near);
    server.stop().await;
}
