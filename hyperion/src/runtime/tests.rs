//! The runtime seam's own tests (production build).

use super::*;

#[test]
fn clock_model_applies_rate_from_the_change_on_and_jumps() {
    let t0 = now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut model = ClockModel {
        anchor: t0,
        anchor_node_ms: 1_000.0,
        anchor_mono_ms: 0.0,
        rate: 1.0,
    };
    assert_eq!(model.now_ms(t0), 1_000.0);
    assert_eq!(model.now_ms(ms(100)), 1_100.0);
    model.reanchor(ms(100));
    model.rate = 1.5;
    assert_eq!(
        model.now_ms(ms(200)),
        1_250.0,
        "rate applies from the change on"
    );
    assert_eq!(
        model.now_ms(ms(100)),
        1_100.0,
        "past readings are not rewritten"
    );
    model.reanchor(ms(200));
    model.anchor_node_ms -= 200.0;
    assert_eq!(model.now_ms(ms(200)), 1_050.0);
    assert_eq!(
        model.monotonic_ms(ms(200)),
        250.0,
        "jumps never step monotonic time"
    );
}

#[tokio::test]
async fn node_clock_reads_skews_and_converts_durations() {
    let clock = NodeClock::starting_at_ms(1_000_000);
    let start = clock.now_ms();
    assert!((1_000_000..1_000_100).contains(&start));
    clock.jump_ms(5_000);
    assert!(clock.now_ms() >= start + 5_000);
    clock.set_rate(2.0);
    assert_eq!(clock.rate(), 2.0);
    assert_eq!(
        clock.runtime_duration(Duration::from_millis(150)),
        Duration::from_millis(75)
    );
    assert!(
        NodeClock::system().now_ms() > 1_700_000_000_000,
        "anchored at the epoch"
    );
}

#[test]
#[should_panic(expected = "clock rate")]
fn node_clock_rejects_absurd_rate() {
    NodeClock::starting_at_ms(0).set_rate(10.0);
}

#[test]
fn seeded_rngs_differ_between_calls() {
    assert_ne!(entropy_seed(), entropy_seed());
}
