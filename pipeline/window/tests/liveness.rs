use super::*;
use crate::window::liveness::{phi, Liveness, LivenessConfig, LivenessEvent, LivenessKind};
use crate::window::WindowError;

const INTERVAL: i64 = 10_000;

fn live() -> Liveness {
    Liveness::new(LivenessConfig::default())
}

/// `n` samples of `id` every `INTERVAL` from `from`; returns the last timestamp.
fn regular(l: &mut Liveness, id: &str, from: i64, n: i64) -> i64 {
    for k in 0..n {
        assert_eq!(l.observe(id, "web", "checkout", from + k * INTERVAL), None);
    }
    from + (n - 1) * INTERVAL
}

/// Feeds `samples[from..]` as one partition: observe each, then judge at the partition
/// clock and forget the long silent. Returns the events of positions at or after
/// `emit_from`, with their position.
fn drive(l: &mut Liveness, samples: &[TelemetrySample], from: usize, emit_from: usize) -> Vec<(usize, LivenessEvent)> {
    let (mut clock, mut out) = (i64::MIN, Vec::new());
    for (i, s) in samples.iter().enumerate().skip(from) {
        let mut events: Vec<LivenessEvent> =
            l.observe(&s.instance_id, &s.app_type, &s.function, s.timestamp_ms).into_iter().collect();
        clock = clock.max(s.timestamp_ms);
        events.extend(l.advance(clock));
        l.forget(clock, 30 * MIN);
        if i >= emit_from {
            out.extend(events.into_iter().map(|e| (i, e)));
        }
    }
    out
}

/// The simulator's samples with each timestamp moved by up to a second either way, as
/// agents' scrape loops drift; delivered in step order.
fn jittered(samples: &[TelemetrySample], seed: u64) -> Vec<TelemetrySample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    samples
        .iter()
        .cloned()
        .map(|mut s| {
            s.timestamp_ms += rng.random_range(-1_000..=1_000);
            s
        })
        .collect()
}

#[test]
fn defaults_validate_and_a_bad_setting_is_refused_by_name() {
    let c = LivenessConfig::default();
    c.validate().unwrap();
    assert_eq!(serde_json::from_str::<LivenessConfig>("{}").unwrap(), c);
    assert_eq!((c.phi_threshold, c.history, c.min_samples, c.min_std_ms, c.acceptable_pause_ms), (8.0, 32, 5, 500, 0));
    assert!(serde_json::from_str::<LivenessConfig>(r#"{"threshold":8}"#).is_err());
    assert_eq!(c.lookback_ms(INTERVAL, 30 * MIN), 30 * MIN + 38 * INTERVAL);
    type Spoil = fn(&mut LivenessConfig);
    let cases: [(&str, Spoil); 6] = [
        ("liveness.phi_threshold", |c| c.phi_threshold = f64::INFINITY),
        ("liveness.phi_threshold", |c| c.phi_threshold = 0.0),
        ("liveness.history", |c| c.history = 0),
        ("liveness.min_samples", |c| c.min_samples = 33),
        ("liveness.min_std_ms", |c| c.min_std_ms = 0),
        ("liveness.acceptable_pause_ms", |c| c.acceptable_pause_ms = -1),
    ];
    for (field, spoil) in cases {
        let mut c = LivenessConfig::default();
        spoil(&mut c);
        assert_eq!(c.validate().map_err(|WindowError::Invalid { field, .. }| field), Err(field));
    }
}

#[test]
fn phi_follows_the_normal_tail_and_stays_finite() {
    assert!((phi(10_000.0, 10_000.0, 500.0) - 2f64.log10()).abs() < 1e-12);
    // −log10(1 − Φ(k)) for k = 1, 2, 3: 0.800, 1.643, 2.869.
    for (k, exact) in [(1.0, 0.7995), (2.0, 1.6430), (3.0, 2.8697)] {
        let p = phi(10_000.0 + k * 500.0, 10_000.0, 500.0);
        assert!((p / exact - 1.0).abs() < 0.02, "k = {k}: {p}");
    }
    let mut last = 0.0;
    for k in 1..200 {
        let p = phi(10_000.0 + f64::from(k) * 500.0, 10_000.0, 500.0);
        assert!(p.is_finite() && p > last, "k = {k}: {p} after {last}");
        last = p;
    }
    assert!(phi(1e15, 10_000.0, 500.0).is_finite());
    assert!(phi(-1e15, 10_000.0, 500.0) >= 0.0);
}

#[test]
fn an_instance_is_judged_after_min_samples_and_goes_offline_once() {
    let mut l = live();
    let last = regular(&mut l, "a", 0, 5);
    assert_eq!(l.phi("a", last + 60 * MIN), None, "four intervals are not enough to judge by");
    assert!(l.advance(last + 60 * MIN).is_empty());
    assert_eq!(l.observe("a", "web", "checkout", last + INTERVAL), None);
    let last = last + INTERVAL;
    assert!(l.advance(last + INTERVAL).is_empty(), "one interval of silence is normal");
    let offline = l.advance(last + 2 * INTERVAL);
    assert_eq!(offline.len(), 1);
    let e = &offline[0];
    assert_eq!(
        (e.kind, e.at_ms, e.last_seen_ms, e.instance_id.as_str()),
        (LivenessKind::Offline, last + 2 * INTERVAL, last, "a")
    );
    assert!(e.phi > 8.0 && e.phi.is_finite());
    assert!(l.is_offline("a"));
    assert!(l.advance(last + 3 * INTERVAL).is_empty(), "already offline");

    let back = l.observe("a", "web", "checkout", last + 5 * INTERVAL).expect("recovered");
    assert_eq!((back.kind, back.at_ms, back.last_seen_ms), (LivenessKind::Recovered, last + 5 * INTERVAL, last));
    assert!(!l.is_offline("a"));
    // The outage was not learnt as a normal interval: the next one is seen as fast.
    let last = last + 5 * INTERVAL;
    assert!(l.advance(last + INTERVAL).is_empty());
    assert_eq!(l.advance(last + 2 * INTERVAL).len(), 1);
}

#[test]
fn late_samples_add_no_interval_and_recover_nothing() {
    let mut l = live();
    let last = regular(&mut l, "a", 0, 10);
    let before = l.phi("a", last + 12_000);
    assert_eq!(l.observe("a", "web", "checkout", last - 5_000), None);
    assert_eq!(l.observe("a", "web", "checkout", last), None);
    assert_eq!(l.phi("a", last + 12_000), before, "no negative or zero interval learnt");
    assert_eq!(l.advance(last + 30_000).len(), 1);
    assert_eq!(l.observe("a", "web", "checkout", last - 1), None, "an old sample is no sign of life");
    assert!(l.is_offline("a"));
}

#[test]
fn the_deviation_floor_keeps_a_regular_reporter_from_a_hair_trigger() {
    let mut l = live();
    let last = regular(&mut l, "a", 0, 20);
    assert!(l.advance(last + INTERVAL + 1_500).is_empty(), "1.5 s late is jitter");
    let mut bare = Liveness::new(LivenessConfig { min_std_ms: 1, ..LivenessConfig::default() });
    let last = regular(&mut bare, "a", 0, 20);
    assert_eq!(bare.advance(last + INTERVAL + 1_500).len(), 1, "without a floor, zero deviation convicts at once");
}

#[test]
fn events_at_one_clock_come_sorted_by_instance() {
    let mut l = live();
    for id in ["m", "c", "x", "a"] {
        regular(&mut l, id, 0, 8);
    }
    let ids: Vec<String> = l.advance(60 * MIN).into_iter().map(|e| e.instance_id).collect();
    assert_eq!(ids, ["a", "c", "m", "x"]);
}

#[test]
fn an_instance_that_never_returns_is_forgotten_after_the_idle_expiry() {
    let mut l = live();
    let last = regular(&mut l, "gone", 0, 8);
    regular(&mut l, "here", 0, 8);
    l.observe("here", "web", "checkout", last + 30 * MIN);
    assert_eq!(l.advance(last + 30 * MIN).len(), 1);
    assert_eq!(l.forget(last + 30 * MIN, 30 * MIN), 0, "exactly idle_expiry silent: kept");
    assert_eq!(l.forget(last + 30 * MIN + 1, 30 * MIN), 1);
    assert!(!l.is_offline("gone") && l.phi("gone", last + 31 * MIN).is_none() && l.len() == 1);
}

/// Every crash of the simulator is seen within three intervals of its last sample and
/// recovers at its first sample back; nothing else raises an event.
#[test]
fn simulated_crashes_are_detected_promptly_and_recover_on_return() {
    for seed in [1, 2] {
        let (fleet, raw) = run_fleet(fleet_config(30, seed, 3 * 60 * MIN, 0.5));
        let samples = jittered(&raw, seed);
        let mut l = live();
        let events = drive(&mut l, &samples, 0, 0);
        let mut expected_events = 0;
        for truth in fleet.ground_truth() {
            let Some(failure_ms) = truth.failure_ms else { continue };
            let mine: Vec<&TelemetrySample> = samples.iter().filter(|s| s.instance_id == truth.instance).collect();
            let seq =
                raw.iter().find(|s| s.instance_id == truth.instance && s.timestamp_ms == failure_ms).map(|s| s.seq);
            let last = mine.iter().find(|s| Some(s.seq) == seq).expect("the failing sample");
            let theirs: Vec<&LivenessEvent> =
                events.iter().map(|(_, e)| e).filter(|e| e.instance_id == truth.instance).collect();
            let offline = theirs.first().unwrap_or_else(|| panic!("seed {seed}: crash of {} missed", truth.instance));
            assert_eq!((offline.kind, offline.last_seen_ms), (LivenessKind::Offline, last.timestamp_ms), "{offline:?}");
            assert!(
                offline.at_ms - last.timestamp_ms <= 3 * INTERVAL,
                "seed {seed}: seen after {} ms",
                offline.at_ms - last.timestamp_ms
            );
            expected_events += 1;
            if let Some(back) = mine.iter().find(|s| s.seq == last.seq + 1) {
                assert_eq!(
                    theirs.get(1).map(|e| (e.kind, e.at_ms, e.last_seen_ms)),
                    Some((LivenessKind::Recovered, back.timestamp_ms, last.timestamp_ms))
                );
                expected_events += 1;
            }
        }
        assert!(expected_events >= 20, "seed {seed}: only {expected_events} crash events");
        assert_eq!(events.len(), expected_events, "seed {seed}: events beyond the crashes: {events:#?}");
    }
}

#[test]
fn healthy_instances_stay_online_for_hours() {
    let (_, samples) = run_fleet(fleet_config(30, 3, 4 * 60 * MIN, 0.0));
    let samples = jittered(&samples, 3);
    let mut l = live();
    let events = drive(&mut l, &samples, 0, 0);
    assert!(events.is_empty(), "false alarms: {events:#?}");
    assert_eq!(l.len(), 30);
    assert!(l.phi("web-frontend-0000", START_MS + 5 * 60 * MIN).is_some_and(|p| p > 8.0), "judged, and would convict");
}

/// Replaying the lookback before a resume point, the detector emits after it what an
/// uninterrupted one emits, also when the resume point falls inside an outage.
#[test]
fn replay_from_the_lookback_emits_what_the_uninterrupted_run_emits() {
    let config = LivenessConfig::default();
    let lookback = config.lookback_ms(INTERVAL + 1_000, 30 * MIN);
    let (fleet, samples) = run_fleet(fleet_config(12, 4, 4 * 60 * MIN, 0.5));
    let samples = jittered(&samples, 4);
    let full = drive(&mut Liveness::new(config.clone()), &samples, 0, 0);
    let mut cuts: Vec<usize> = (1..=5).map(|k| samples.len() * k / 6).collect();
    // Inside each outage, after it was seen and before the instance returns.
    for failure_ms in fleet.ground_truth().iter().filter_map(|g| g.failure_ms) {
        cuts.extend(samples.iter().position(|s| s.timestamp_ms >= failure_ms + 45_000));
    }
    assert!(cuts.len() >= 10);
    let (mut compared, mut too_short_differs) = (0, false);
    for resume in cuts {
        let expected: Vec<_> = full.iter().filter(|(i, _)| *i >= resume).cloned().collect();
        let from = replay_start(&samples, resume, lookback);
        let replayed = drive(&mut Liveness::new(config.clone()), &samples, from, resume);
        assert_eq!(replayed, expected, "resume at {resume}, replay from {from}");
        compared += expected.len();
        let from = replay_start(&samples, resume, 3 * INTERVAL);
        too_short_differs |= drive(&mut Liveness::new(config.clone()), &samples, from, resume) != expected;
    }
    assert!(compared >= 20, "only {compared} events compared");
    assert!(too_short_differs, "half a minute of replay sufficed: the test has no teeth");
}
