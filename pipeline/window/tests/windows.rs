use std::collections::BTreeMap;

use super::*;
use crate::codec::metric_names as m;
use crate::window::features::{self, DEFAULT_FEATURES};
use crate::window::{ClosedWindow, WindowConfig, WindowError, Windows};

fn windows(config: WindowConfig) -> Windows {
    config.validate().expect("valid window config");
    Windows::new(config)
}

/// Feeds `samples[from..]` as partition 0, the way a partition worker does: push, and
/// expire at every hop boundary the partition clock passes. Returns the windows each
/// position at or after `emit_from` closed, with that position.
fn drive(w: &Windows, samples: &[TelemetrySample], from: usize, emit_from: usize) -> Vec<(usize, ClosedWindow)> {
    let hop = w.config().hop_ms;
    let (mut clock, mut out) = (None::<i64>, Vec::new());
    for (i, s) in samples.iter().enumerate().skip(from) {
        let push = w.push(0, s);
        let now = clock.map_or(s.timestamp_ms, |c| c.max(s.timestamp_ms));
        if let Some(before) = clock {
            for k in before.div_euclid(hop) + 1..=now.div_euclid(hop) {
                w.expire(0, k * hop);
            }
        }
        clock = Some(now);
        if i >= emit_from {
            out.extend(push.closed.into_iter().map(|c| (i, c)));
        }
    }
    out
}

/// Windows per instance, in the order each instance's were emitted.
fn by_instance(closed: Vec<(usize, ClosedWindow)>) -> BTreeMap<String, Vec<ClosedWindow>> {
    let mut map: BTreeMap<String, Vec<ClosedWindow>> = BTreeMap::new();
    for (_, w) in closed {
        map.entry(w.instance_id.clone()).or_default().push(w);
    }
    map
}

/// What windows of one instance should be, straight from the definition: every hop
/// boundary its watermark passes, gridded over all its samples, kept if covered.
fn oracle(config: &WindowConfig, mine: &[&TelemetrySample]) -> Vec<(i64, Vec<f64>, f64)> {
    let rows: Vec<(i64, Vec<f64>)> = mine
        .iter()
        .map(|s| (s.timestamp_ms, config.features.iter().map(|f| features::value(s, f)).collect()))
        .collect();
    let refs: Vec<(i64, &[f64])> = rows.iter().map(|(t, v)| (*t, v.as_slice())).collect();
    let (first, last) =
        (mine[0].timestamp_ms - config.lateness_ms, mine[mine.len() - 1].timestamp_ms - config.lateness_ms);
    (first.div_euclid(config.hop_ms) + 1..=last.div_euclid(config.hop_ms))
        .map(|k| k * config.hop_ms)
        .filter_map(|b| {
            let (v, cov) =
                features::grid(&refs, config.features.len(), b, config.step_ms, config.points, config.max_fill_steps);
            (cov >= config.min_coverage).then_some((b, v, cov))
        })
        .collect()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn defaults_validate_and_load_from_an_empty_document() {
    let c = WindowConfig::default();
    c.validate().unwrap();
    assert_eq!(serde_json::from_str::<WindowConfig>("{}").unwrap(), c);
    assert_eq!(c.features, DEFAULT_FEATURES.map(String::from).to_vec());
    assert_eq!((c.step_ms, c.points, c.hop_ms, c.lateness_ms), (10_000, 64, 60_000, 30_000));
    assert_eq!((c.idle_expiry_ms, c.min_coverage, c.max_fill_steps), (1_800_000, 0.75, 3));
    assert_eq!(c.length_ms(), 640_000);
    assert_eq!(c.lookback_ms(), 1_800_000 + 30_000 + 640_000 + 60_000);
    let err = serde_json::from_str::<WindowConfig>(r#"{"step":5}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn a_bad_setting_is_refused_by_name() {
    type Spoil = fn(&mut WindowConfig);
    let cases: [(&str, Spoil); 12] = [
        ("window.features", |c| c.features.clear()),
        ("window.features", |c| c.features.push("cpu_utilisation".into())),
        ("window.features", |c| c.features.push(m::CPU_UTILIZATION.into())),
        ("window.step_ms", |c| c.step_ms = 0),
        ("window.points", |c| c.points = 0),
        ("window.points", |c| c.points = usize::MAX),
        ("window.hop_ms", |c| c.hop_ms = -60_000),
        ("window.lateness_ms", |c| c.lateness_ms = -1),
        ("window.idle_expiry_ms", |c| c.idle_expiry_ms = 0),
        ("window.min_coverage", |c| c.min_coverage = 0.0),
        ("window.min_coverage", |c| c.min_coverage = f64::NAN),
        ("window.max_fill_steps", |c| c.max_fill_steps = 65),
    ];
    for (field, spoil) in cases {
        let mut c = WindowConfig::default();
        spoil(&mut c);
        match c.validate() {
            Err(WindowError::Invalid { field: f, .. }) => assert_eq!(f, field),
            Ok(()) => panic!("{field}: accepted {c:?}"),
        }
    }
}

#[test]
fn windows_end_on_hop_multiples_and_hold_the_grid_of_their_samples() {
    let config = WindowConfig::default();
    let (fleet, samples) = run_fleet(fleet_config(3, 5, 45 * MIN, 0.0));
    let w = windows(config.clone());
    let got = by_instance(drive(&w, &samples, 0, 0));
    for inst in fleet.instances() {
        let mine: Vec<&TelemetrySample> = samples.iter().filter(|s| s.instance_id == inst.id()).collect();
        let expected = oracle(&config, &mine);
        let got = &got[inst.id()];
        assert!(expected.len() >= 30, "{}: only {} windows expected", inst.id(), expected.len());
        assert_eq!(got.iter().map(|w| w.end_ms).collect::<Vec<_>>(), expected.iter().map(|e| e.0).collect::<Vec<_>>());
        for (w, (end, values, coverage)) in got.iter().zip(&expected) {
            assert_eq!(w.end_ms % config.hop_ms, 0);
            assert_eq!(w.start_ms, end - config.length_ms());
            assert_eq!(bits(&w.values), bits(values), "{} window ending {end}", inst.id());
            assert_eq!(w.coverage, *coverage);
            assert_eq!(w.present, vec![true; config.features.len()]);
            assert_eq!((w.app_type.as_str(), w.function.as_str(), w.partition), (inst.app_type(), inst.function(), 0));
            let newest = mine.iter().rfind(|s| s.timestamp_ms < *end).map(|s| s.seq);
            assert_eq!(Some(w.last_seq), newest);
        }
    }
    assert_eq!(w.stats().late_dropped, 0);
}

#[test]
fn out_of_order_within_lateness_gives_the_in_order_windows() {
    let config = WindowConfig::default();
    let (_, samples) = run_fleet(fleet_config(6, 8, 60 * MIN, 0.5));
    let in_order = by_instance(drive(&windows(config.clone()), &samples, 0, 0));
    let shuffled = shuffle(&samples, 3, config.lateness_ms, 0.0, 0);
    assert_ne!(shuffled, samples);
    let w = windows(config);
    let out_of_order = by_instance(drive(&w, &shuffled, 0, 0));
    assert_eq!(w.stats().late_dropped, 0);
    assert_eq!(out_of_order, in_order);
}

#[test]
fn late_samples_are_dropped_counted_and_change_nothing() {
    let config = WindowConfig::default();
    let (_, samples) = run_fleet(fleet_config(1, 2, 40 * MIN, 0.0));
    let clean = drive(&windows(config.clone()), &samples, 0, 0);
    let w = windows(config.clone());
    let (mut closed, mut late) = (Vec::new(), 0);
    for (i, s) in samples.iter().enumerate() {
        closed.extend(w.push(0, s).closed);
        if i >= 10 && i % 7 == 0 {
            // Behind the watermark by one step: too late, however plausible.
            let mut old = samples[i - 4].clone();
            old.metrics.iter_mut().for_each(|m| m.value += 1.0);
            let push = w.push(0, &old);
            assert!(push.late && push.closed.is_empty(), "seq {} at {}", old.seq, old.timestamp_ms);
            late += 1;
        }
    }
    assert_eq!(w.stats().late_dropped, late);
    assert_eq!(closed, clean.into_iter().map(|(_, c)| c).collect::<Vec<_>>());

    // Exactly at the watermark is still in time.
    let w = windows(config.clone());
    let cpu = |v| [(m::CPU_UTILIZATION, v)];
    assert!(!w.push(0, &sample("a", 0, 1_000_000, &cpu(0.1))).late);
    assert!(!w.push(0, &sample("a", 1, 1_000_000 - config.lateness_ms, &cpu(0.2))).late);
    assert!(w.push(0, &sample("a", 2, 1_000_000 - config.lateness_ms - 1, &cpu(0.3))).late);
}

#[test]
fn a_duplicate_timestamp_keeps_the_first_sample() {
    let config = WindowConfig { points: 4, min_coverage: 0.25, ..WindowConfig::default() };
    let w = windows(config.clone());
    let cpu = |v| [(m::CPU_UTILIZATION, v)];
    // Inside the window that ends on the next boundary.
    let t0 = 60_000 * 1_000 - 20_000;
    assert!(w.push(0, &sample("a", 0, t0, &cpu(0.1))).closed.is_empty());
    assert!(!w.push(0, &sample("a", 1, t0, &cpu(0.9))).late, "a duplicate is not late");
    let closed = w.push(0, &sample("a", 2, t0 + 2 * 60_000, &cpu(0.5))).closed;
    let first = closed.iter().find(|c| (c.start_ms..c.end_ms).contains(&t0)).expect("a window over t0");
    let k = ((t0 - first.start_ms) / config.step_ms) as usize;
    assert_eq!(first.values[k * config.features.len()], 0.1);
    assert_eq!(first.last_seq, 0);
    assert_eq!(w.stats().duplicates, 1);
}

#[test]
fn a_channel_never_reported_stays_nan_and_absent() {
    let config = WindowConfig::default();
    let (_, mut samples) = run_fleet(fleet_config(1, 4, 30 * MIN, 0.0));
    samples.iter_mut().for_each(|s| s.metrics.retain(|x| x.name != m::LOG_ERRORS));
    let closed = drive(&windows(config.clone()), &samples, 0, 0);
    assert!(!closed.is_empty());
    let ch = config.features.iter().position(|f| f == m::LOG_ERRORS).expect("a default feature");
    let n = config.features.len();
    for (_, w) in &closed {
        assert!(!w.present[ch] && w.present.iter().filter(|p| **p).count() == n - 1, "{:?}", w.present);
        assert!(w.values.iter().skip(ch).step_by(n).all(|v| v.is_nan()), "missing must not read as zero");
        let held = w.values.iter().skip(ch + 1).step_by(n).filter(|v| !v.is_nan()).count();
        assert!(held as f64 >= w.coverage * config.points as f64, "the other channels are there");
    }
}

#[test]
fn sparse_windows_are_counted_and_not_emitted() {
    let mut c = fleet_config(2, 6, 40 * MIN, 0.0);
    c.interval_ms = 20_000;
    let (_, samples) = run_fleet(c);
    // A sample every other step: coverage 0.5.
    let w = windows(WindowConfig::default());
    assert!(drive(&w, &samples, 0, 0).is_empty());
    assert!(w.stats().insufficient >= 2 * 25, "{:?}", w.stats());
    let half = windows(WindowConfig { min_coverage: 0.5, ..WindowConfig::default() });
    let closed = drive(&half, &samples, 0, 0);
    assert!(closed.len() >= 2 * 25 && closed.iter().all(|(_, w)| w.coverage == 0.5));
}

#[test]
fn a_long_silence_closes_only_the_windows_that_can_hold_samples() {
    let config = WindowConfig::default();
    let (_, samples) = run_fleet(fleet_config(1, 7, 60 * MIN, 0.0));
    let (before, after) = samples.split_at(samples.len() / 2);
    let mut resumed: Vec<TelemetrySample> = before.to_vec();
    let days = 10 * 24 * 60 * MIN;
    resumed.extend(after.iter().cloned().map(|mut s| {
        s.timestamp_ms += days;
        s
    }));
    let w = windows(config.clone());
    drive(&w, before, 0, 0);
    let insufficient = w.stats().insufficient;
    let push = w.push(0, &resumed[before.len()]);
    let mine: Vec<&TelemetrySample> = resumed[..=before.len()].iter().collect();
    let expected: Vec<i64> = oracle(&config, &mine)
        .into_iter()
        .map(|e| e.0)
        .filter(|e| *e > mine[before.len() - 1].timestamp_ms - config.lateness_ms)
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(push.closed.iter().map(|c| c.end_ms).collect::<Vec<_>>(), expected);
    // 14,400 boundaries passed; the ones looked at are those that can hold a sample.
    let looked_at = push.closed.len() as u64 + w.stats().insufficient - insufficient;
    let bound = ((config.lateness_ms + config.length_ms()) / config.hop_ms + 1) as u64;
    assert!(looked_at <= bound, "{looked_at} boundaries gridded");
    assert_eq!(w.stats().samples_held, 1, "the silence left only the new sample");
}

#[test]
fn revoked_and_idle_instances_are_forgotten() {
    let config = WindowConfig::default();
    let w = windows(config.clone());
    let cpu = [(m::CPU_UTILIZATION, 0.5)];
    let t = 1_000 * 60_000;
    for (p, id, ts) in
        [(0, "a", t), (0, "b", t - config.idle_expiry_ms), (1, "c", t - 2 * config.idle_expiry_ms), (2, "d", t)]
    {
        w.push(p, &sample(id, 0, ts, &cpu));
    }
    assert_eq!(w.len(), 4);
    assert_eq!(w.expire(0, t), 0, "b is exactly idle_expiry old: kept");
    assert_eq!(w.expire(0, t + 1), 1);
    assert_eq!(w.len(), 3, "c is idle too, but of another partition");
    assert_eq!(w.drop_partition(1), 1);
    assert_eq!(w.drop_partition(1), 0);
    assert_eq!(w.len(), 2);
    // An instance moves with its latest sample's partition.
    w.push(3, &sample("a", 1, t + 10_000, &cpu));
    assert_eq!(w.drop_partition(0), 0);
    assert_eq!(w.drop_partition(3), 1);
    assert!(w.push(2, &sample("d", 1, t + 10_000, &cpu)).closed.is_empty() && w.len() == 1);
}

#[test]
fn memory_is_measured_and_bounded_per_instance() {
    let config = WindowConfig::default();
    let (_, samples) = run_fleet(fleet_config(200, 9, 40 * MIN, 0.0));
    let w = windows(config.clone());
    let empty = w.stats().memory_bytes;
    drive(&w, &samples, 0, 0);
    let s = w.stats();
    assert_eq!(s.instances, 200);
    let per_sample = 2 * size_of::<i64>() + config.features.len() * size_of::<f64>();
    let reach = ((config.length_ms() + config.lateness_ms) / config.step_ms + 1) as usize;
    assert!(s.samples_held <= 200 * reach, "{s:?}");
    assert!(s.samples_held >= 200 * config.points, "{s:?}");
    let per_instance = (s.memory_bytes - empty) / s.instances;
    assert!(per_instance >= s.samples_held / s.instances * per_sample, "{per_instance} B");
    assert!(per_instance <= reach * per_sample * 5 / 4 + 1024, "{per_instance} B per instance");
    assert_eq!(w.drop_partition(0), 200);
    assert!(w.stats().memory_bytes <= s.memory_bytes - s.samples_held * per_sample);
}

#[test]
fn workers_on_other_threads_get_the_sequential_result() {
    fn shared<T: Send + Sync>() {}
    shared::<Windows>();
    let config = WindowConfig::default();
    let (_, samples) = run_fleet(fleet_config(16, 10, 40 * MIN, 0.5));
    let sequential = by_instance(drive(&windows(config.clone()), &samples, 0, 0));
    let w = windows(config);
    let parts: Vec<Vec<ClosedWindow>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|p| {
                let (w, samples) = (&w, &samples);
                scope.spawn(move || {
                    let mine =
                        samples.iter().filter(|s| s.instance_id.bytes().map(usize::from).sum::<usize>() % 4 == p);
                    let closed: Vec<_> = mine.flat_map(|s| w.push(p as i32, s).closed).collect();
                    assert!(closed.iter().all(|c| c.partition == p as i32), "a window names its partition");
                    closed
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    });
    let mut parallel = by_instance(parts.into_iter().flatten().map(|c| (0, c)).collect());
    parallel.values_mut().flatten().for_each(|c| c.partition = 0);
    assert_eq!(parallel, sequential);
}

/// The property replay rests on: from `lookback_ms` before any resume point, a
/// rebuilt store emits after that point exactly what the uninterrupted one emits —
/// with crashes, reordering within the lateness, late resends, and (second config)
/// instances expiring during their restart gaps.
#[test]
fn replay_from_the_lookback_emits_what_the_uninterrupted_run_emits() {
    let short_expiry = WindowConfig { idle_expiry_ms: 2 * MIN, ..WindowConfig::default() };
    for (seed, config) in [(1, WindowConfig::default()), (2, short_expiry)] {
        let (fleet, samples) = run_fleet(fleet_config(12, seed, 4 * 60 * MIN, 0.5));
        assert!(fleet.ground_truth().iter().filter(|g| g.failure_ms.is_some()).count() >= 4);
        let arrivals = shuffle(&samples, seed, config.lateness_ms, 0.02, 3 * MIN);
        let full = drive(&windows(config.clone()), &arrivals, 0, 0);
        let mut cuts: Vec<usize> = (1..=5).map(|k| arrivals.len() * k / 6).collect();
        // Inside each outage: the instance's last windows close when it returns.
        for failure_ms in fleet.ground_truth().iter().filter_map(|g| g.failure_ms) {
            cuts.extend(arrivals.iter().position(|s| s.timestamp_ms >= failure_ms + 45_000));
        }
        let mut too_short_differs = false;
        for cut in cuts {
            let resume = cut;
            let expected: Vec<_> = full.iter().filter(|(i, _)| *i >= resume).cloned().collect();
            assert!(expected.len() > 20, "seed {seed} cut {cut}: little to compare");
            let from = replay_start(&arrivals, resume, config.lookback_ms());
            let replayed = drive(&windows(config.clone()), &arrivals, from, resume);
            assert!(replayed == expected, "seed {seed} cut {cut}: replay from {from} differs");
            let from = replay_start(&arrivals, resume, config.length_ms() / 2);
            too_short_differs |= drive(&windows(config.clone()), &arrivals, from, resume) != expected;
        }
        assert!(too_short_differs, "seed {seed}: even half a window of replay sufficed; the test has no teeth");
    }
}
