use super::*;

fn set(key: &str, version: u64, index: u64) -> Change {
    Change {
        key: key.as_bytes().to_vec(),
        version,
        reason: Reason::Set,
        index,
    }
}

fn limits() -> WatchLimits {
    WatchLimits {
        tracking_max_keys: 100,
        queue_max_events: 4,
        history_max_events: 3,
        history_max_bytes: 1 << 20,
        streams_max: 2,
        prefixes_max: 2,
    }
}

fn changed(events: &[Event]) -> Vec<(Vec<u8>, u64)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Changed(change) => Some((change.key.clone(), change.version)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_tracked_key_is_reported_once_then_forgotten() {
    let hub = WatchHub::new(limits());
    let sub = hub.subscribe(vec![], None).unwrap();
    sub.track(b"k", 1, || Some(1));
    hub.publish(2, vec![set("other", 2, 2)]);
    hub.publish(3, vec![set("k", 3, 3)]);
    hub.publish(4, vec![set("k", 4, 4)]);
    assert_eq!(changed(&sub.drain().unwrap()), vec![(b"k".to_vec(), 3)]);
    assert_eq!(hub.stats().tracked_keys, 0);
}

#[test]
fn tracking_compares_the_held_version_with_the_node() {
    let hub = WatchHub::new(limits());
    let sub = hub.subscribe(vec![], None).unwrap();
    // The node applied a newer version than the holder read: reported at once, not tracked.
    sub.track(b"ahead", 2, || Some(5));
    // Gone here: reported as a delete.
    sub.track(b"gone", 2, || None);
    // The node is behind the holder: tracked, and its later changes are reported.
    sub.track(b"behind", 7, || Some(3));
    let events = sub.drain().unwrap();
    assert_eq!(
        changed(&events),
        vec![(b"ahead".to_vec(), 5), (b"gone".to_vec(), 0)]
    );
    assert_eq!(hub.stats().tracked_keys, 1);
    hub.publish(8, vec![set("behind", 8, 8)]);
    assert_eq!(
        changed(&sub.drain().unwrap()),
        vec![(b"behind".to_vec(), 8)]
    );
}

#[test]
fn broadcast_follows_prefixes_changed_while_open() {
    let hub = WatchHub::new(limits());
    let sub = hub.subscribe(vec![b"user:".to_vec()], None).unwrap();
    hub.publish(1, vec![set("user:1", 1, 1), set("order:1", 1, 1)]);
    sub.set_prefixes(vec![b"order:".to_vec()], &[b"user:".to_vec()])
        .unwrap();
    hub.publish(2, vec![set("user:2", 2, 2), set("order:2", 2, 2)]);
    assert_eq!(
        changed(&sub.drain().unwrap()),
        vec![(b"user:1".to_vec(), 1), (b"order:2".to_vec(), 2)]
    );
    let error = sub
        .set_prefixes(vec![b"a".to_vec(), b"b".to_vec()], &[])
        .unwrap_err();
    assert_eq!(error, SubscribeError::TooManyPrefixes { count: 3, max: 2 });
    assert!(error.to_string().starts_with("prefixes:"), "{error}");
}

#[test]
fn an_overflowing_queue_resyncs_then_closes_a_subscriber_that_stays_slow() {
    let hub = WatchHub::new(limits());
    let sub = hub.subscribe(vec![vec![]], None).unwrap();
    for index in 1..=5 {
        hub.publish(index, vec![set("k", index, index)]);
    }
    // Four queued, the fifth overflowed: the queue is one resync.
    assert_eq!(sub.drain().unwrap(), vec![Event::Resync { index: 5 }]);
    // Taken: the next overflow resyncs again.
    for index in 6..=10 {
        hub.publish(index, vec![set("k", index, index)]);
    }
    // Not taken this time: the following overflow closes the subscription.
    for index in 11..=15 {
        hub.publish(index, vec![set("k", index, index)]);
    }
    assert_eq!(sub.drain(), Err(Closed::TooSlow(4)));
    let stats = hub.stats();
    assert_eq!((stats.streams, stats.resyncs, stats.too_slow), (0, 2, 1));
}

#[test]
fn a_full_tracking_table_resyncs_the_largest_tracker() {
    let hub = WatchHub::new(WatchLimits {
        tracking_max_keys: 3,
        ..limits()
    });
    let big = hub.subscribe(vec![], None).unwrap();
    let small = hub.subscribe(vec![], None).unwrap();
    big.track(b"a", 0, || None);
    big.track(b"b", 0, || None);
    small.track(b"c", 0, || None);
    small.track(b"d", 0, || None);
    assert_eq!(big.drain().unwrap(), vec![Event::Resync { index: 0 }]);
    assert!(small.drain().unwrap().is_empty());
    assert_eq!(hub.stats().tracked_keys, 2);
    hub.publish(1, vec![set("a", 1, 1), set("c", 1, 1)]);
    assert!(big.drain().unwrap().is_empty(), "big's keys were dropped");
    assert_eq!(changed(&small.drain().unwrap()), vec![(b"c".to_vec(), 1)]);
}

#[test]
fn resumption_replays_held_changes_or_resyncs() {
    let hub = WatchHub::new(limits());
    for index in 1..=5 {
        hub.publish(index, vec![set(&format!("k{index}"), index, index)]);
    }
    // History holds indexes 3..=5.
    let resumed = hub.subscribe(vec![b"k".to_vec()], Some(3)).unwrap();
    assert_eq!(
        changed(&resumed.drain().unwrap()),
        vec![(b"k4".to_vec(), 4), (b"k5".to_vec(), 5)]
    );
    let too_old = hub.subscribe(vec![b"k".to_vec()], Some(1)).unwrap();
    assert_eq!(too_old.drain().unwrap(), vec![Event::Resync { index: 5 }]);
    let from_the_future = hub.subscribe(vec![b"k".to_vec()], Some(9));
    assert!(
        matches!(from_the_future, Err(SubscribeError::TooManyStreams(2))),
        "a third stream is refused"
    );
    drop(too_old);
    let future = hub.subscribe(vec![b"k".to_vec()], Some(9)).unwrap();
    assert_eq!(future.drain().unwrap(), vec![Event::Resync { index: 5 }]);
}

#[test]
fn a_snapshot_install_resyncs_everyone() {
    let hub = WatchHub::new(limits());
    let sub = hub.subscribe(vec![], None).unwrap();
    sub.track(b"k", 1, || Some(1));
    hub.reset(40);
    assert_eq!(sub.drain().unwrap(), vec![Event::Resync { index: 40 }]);
    assert_eq!(hub.stats().tracked_keys, 0);
    let resumed = hub.subscribe(vec![], Some(39));
    assert!(resumed.is_ok());
}

#[test]
fn progress_follows_the_changes_it_covers() {
    let hub = WatchHub::new(limits());
    let sub = hub.subscribe(vec![vec![]], None).unwrap();
    hub.publish(1, vec![set("a", 1, 1)]);
    hub.publish(2, vec![]);
    hub.progress();
    assert_eq!(
        sub.drain().unwrap(),
        vec![
            Event::Changed(set("a", 1, 1)),
            Event::Progress {
                index: 2,
                sync_id: 0
            }
        ]
    );
}

#[test]
fn dropping_a_subscription_frees_its_tracking() {
    let hub = WatchHub::new(limits());
    let sub = hub.subscribe(vec![], None).unwrap();
    sub.track(b"k", 0, || None);
    assert_eq!(hub.stats().tracked_keys, 1);
    drop(sub);
    let stats = hub.stats();
    assert_eq!((stats.streams, stats.tracked_keys), (0, 0));
}

#[test]
fn the_history_is_bounded_in_bytes() {
    let hub = WatchHub::new(WatchLimits {
        history_max_events: 1_000,
        history_max_bytes: 3 * (100 + std::mem::size_of::<Change>()),
        ..limits()
    });
    let key = |i: u64| format!("{i:0>100}");
    for index in 1..=10 {
        hub.publish(index, vec![set(&key(index), index, index)]);
    }
    let resumed = hub.subscribe(vec![vec![]], Some(7)).unwrap();
    assert_eq!(changed(&resumed.drain().unwrap()).len(), 3);
    drop(resumed);
    let too_old = hub.subscribe(vec![vec![]], Some(6)).unwrap();
    assert_eq!(too_old.drain().unwrap(), vec![Event::Resync { index: 10 }]);
}

#[test]
fn a_node_catching_up_to_the_held_version_reports_nothing_until_it_passes_it() {
    let hub = WatchHub::new(limits());
    let sub = hub.subscribe(vec![], None).unwrap();
    // The holder read version 7 on the leader; this node is at 3.
    sub.track(b"k", 7, || Some(3));
    hub.publish(5, vec![set("k", 5, 5)]);
    hub.publish(7, vec![set("k", 7, 7)]);
    assert!(
        changed(&sub.drain().unwrap()).is_empty(),
        "no newer than held"
    );
    assert_eq!(hub.stats().tracked_keys, 1);
    hub.publish(9, vec![set("k", 9, 9)]);
    assert_eq!(changed(&sub.drain().unwrap()), vec![(b"k".to_vec(), 9)]);
    // A removal is always a change, whatever the version held.
    sub.track(b"j", 12, || Some(12));
    let gone = Change {
        key: b"j".to_vec(),
        version: 0,
        reason: Reason::Expire,
        index: 13,
    };
    hub.publish(13, vec![gone.clone()]);
    assert_eq!(sub.drain().unwrap(), vec![Event::Changed(gone)]);
}

#[test]
fn a_read_tracks_only_for_the_owner_of_an_open_stream() {
    let hub = WatchHub::new(limits());
    let sub = hub
        .subscribe_as("client:alice".to_string(), vec![], None)
        .unwrap();
    assert!(sub.id() != 0);
    assert!(!hub.track_for_read(sub.id(), "client:mallory", b"k", 3, || Some(3)));
    assert!(!hub.track_for_read(sub.id() ^ 1, "client:alice", b"k", 3, || Some(3)));
    assert_eq!(hub.stats().tracked_keys, 0);
    // The read answered version 3, the version this node holds: tracked.
    assert!(hub.track_for_read(sub.id(), "client:alice", b"k", 3, || Some(3)));
    // The Set of version 3 itself, published after the read saw it, is not a change for the
    // reader, and does not end the tracking: version 4 is reported.
    hub.publish(3, vec![set("k", 3, 3)]);
    hub.publish(4, vec![set("k", 4, 4)]);
    assert_eq!(changed(&sub.drain().unwrap()), vec![(b"k".to_vec(), 4)]);
    // A change applied between the read and its registration is reported at once.
    assert!(hub.track_for_read(sub.id(), "client:alice", b"j", 5, || Some(6)));
    assert_eq!(changed(&sub.drain().unwrap()), vec![(b"j".to_vec(), 6)]);
}

#[test]
fn a_sync_is_answered_after_everything_published_before_it() {
    let hub = WatchHub::new(limits());
    let sub = hub.subscribe(vec![vec![]], None).unwrap();
    hub.publish(1, vec![set("a", 1, 1)]);
    sub.progress(77);
    hub.publish(2, vec![set("b", 2, 2)]);
    let events = sub.drain().unwrap();
    assert_eq!(
        events,
        vec![
            Event::Changed(set("a", 1, 1)),
            Event::Progress {
                index: 1,
                sync_id: 77
            },
            Event::Changed(set("b", 2, 2)),
        ]
    );
    assert_eq!(hub.applied_index(), 2);
}
