use super::*;

fn state(config: NearCacheConfig) -> State {
    State::new(config)
}

fn insert(state: &mut State, key: &str, value: &str, version: u64, filled_at: Instant) {
    let size = entry_bytes(key.as_bytes(), value.as_bytes());
    state.evict_for(size);
    let tick = state.next_tick;
    state.next_tick += 1;
    state.entries.insert(
        key.as_bytes().to_vec(),
        Entry {
            value: value.as_bytes().to_vec(),
            version,
            filled_at,
            expires_at: None,
            tick,
        },
    );
    state.recency.insert(tick, key.as_bytes().to_vec());
    state.bytes += size;
}

#[test]
fn configuration_is_validated_naming_the_field() {
    assert!(NearCacheConfig::default().validate().is_ok());
    let bad = NearCacheConfig {
        sync_interval: Duration::from_secs(1),
        ..NearCacheConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("sync_interval:"));
    let none = NearCacheConfig {
        max_entries: 0,
        ..NearCacheConfig::default()
    };
    assert!(none
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("max_entries:"));
}

#[test]
fn an_entry_is_served_only_under_a_recent_sync_sent_after_it_was_filled() {
    let mut state = state(NearCacheConfig::default());
    let t0 = runtime::now();
    insert(&mut state, "k", "v", 3, t0);
    let entry = &state.entries[b"k".as_slice()];
    assert!(!state.servable(entry, t0), "no sync confirmed yet");
    // A sync sent before the fill says nothing about the entry.
    state.confirmed = Some(t0 - Duration::from_millis(1));
    assert!(!state.servable(entry, t0));
    state.confirmed = Some(t0);
    assert!(state.servable(entry, t0 + Duration::from_millis(500)));
    assert!(
        !state.servable(entry, t0 + Duration::from_millis(501)),
        "the confirmation aged past the bound"
    );
}

#[test]
fn syncs_are_confirmed_by_their_own_progress_and_older_ones_are_forgotten() {
    let mut state = state(NearCacheConfig::default());
    let t0 = runtime::now();
    for (id, ms) in [(1, 0), (2, 10), (3, 20)] {
        state
            .pending_syncs
            .push_back((id, t0 + Duration::from_millis(ms)));
    }
    // The server coalesced 1 and 2 into one round answering 2.
    assert!(state.progress(40, 2));
    assert_eq!(state.confirmed, Some(t0 + Duration::from_millis(10)));
    assert_eq!(state.pending_syncs.len(), 1);
    assert_eq!(state.last_index, Some(40));
    // A progress nobody asked for confirms nothing.
    assert!(!state.progress(41, 0));
    assert_eq!(state.confirmed, Some(t0 + Duration::from_millis(10)));
    assert!(state.progress(42, 3));
    assert_eq!(state.confirmed, Some(t0 + Duration::from_millis(20)));
}

#[test]
fn changes_drop_entries_unless_they_are_not_newer_than_what_is_held() {
    let mut state = state(NearCacheConfig::default());
    let t0 = runtime::now();
    insert(&mut state, "k", "v", 7, t0);
    // A node catching up reports the version held, or an older one: kept.
    state.changed(b"k", 7, ChangeReason::ReasonSet as i32);
    state.changed(b"k", 5, ChangeReason::ReasonSet as i32);
    assert!(state.entries.contains_key(b"k".as_slice()));
    state.changed(b"k", 8, ChangeReason::ReasonSet as i32);
    assert!(!state.entries.contains_key(b"k".as_slice()));
    insert(&mut state, "j", "v", 9, t0);
    // A removal always drops it.
    state.changed(b"j", 0, ChangeReason::ReasonExpire as i32);
    assert!(!state.entries.contains_key(b"j".as_slice()));
    assert_eq!(state.stats.invalidations, 2);
    assert_eq!(state.bytes, 0);
}

#[test]
fn a_change_during_a_read_marks_the_flight_and_a_resync_clears_everything() {
    let mut state = state(NearCacheConfig::default());
    let t0 = runtime::now();
    state.flights.insert(
        b"k".to_vec(),
        Flight {
            readers: 1,
            invalidated: false,
        },
    );
    state.changed(b"k", 4, ChangeReason::ReasonDelete as i32);
    assert!(state.flights[b"k".as_slice()].invalidated);
    insert(&mut state, "a", "1", 1, t0);
    insert(&mut state, "b", "2", 2, t0);
    state.flights.insert(
        b"c".to_vec(),
        Flight {
            readers: 1,
            invalidated: false,
        },
    );
    let epoch = state.epoch;
    state.clear();
    assert!(state.entries.is_empty() && state.recency.is_empty());
    assert_eq!(state.bytes, 0);
    assert!(state.epoch > epoch);
    assert!(state.flights[b"c".as_slice()].invalidated);
}

#[test]
fn eviction_keeps_entries_and_bytes_within_bounds_least_recent_first() {
    let mut state = state(NearCacheConfig {
        max_entries: 2,
        max_bytes: 3 * (ENTRY_OVERHEAD_BYTES + 2),
        ..NearCacheConfig::default()
    });
    let t0 = runtime::now();
    insert(&mut state, "a", "1", 1, t0);
    insert(&mut state, "b", "2", 2, t0);
    insert(&mut state, "c", "3", 3, t0);
    assert_eq!(state.entries.len(), 2);
    assert!(
        !state.entries.contains_key(b"a".as_slice()),
        "a was least recent"
    );
    assert_eq!(state.stats.evictions, 1);
    let mut small = super::tests::state(NearCacheConfig {
        max_entries: 100,
        max_bytes: 2 * (ENTRY_OVERHEAD_BYTES + 2),
        ..NearCacheConfig::default()
    });
    insert(&mut small, "a", "1", 1, t0);
    insert(&mut small, "b", "2", 2, t0);
    insert(&mut small, "c", "3", 3, t0);
    assert_eq!(small.entries.len(), 2);
    assert!(small.bytes <= small.config.max_bytes);
}
