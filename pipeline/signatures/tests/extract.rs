//! Metric selection, scoring as the detector does, and extraction from a simulated
//! fleet (in memory: the Kafka replay is covered by tests/kafka/signatures.rs).

use crate::codec::metric_names as m;
use crate::codec::Normalisation;
use crate::detect::confidence::confidence;
use crate::detect::dtw::{Dtw, Series};
use crate::signatures::extract::{
    confidence_against, deviations, extract, select, ExtractRequest, InstanceTelemetry, Scorer, Telemetry, RADIUS,
};
use crate::signatures::{key, ExtractError};
use crate::simulate::{FailureKind, Fleet, FleetConfig};
use crate::window::features::{self, DEFAULT_FEATURES};

const N: usize = DEFAULT_FEATURES.len();

fn channel(name: &str) -> usize {
    DEFAULT_FEATURES.iter().position(|f| *f == name).unwrap()
}

/// A quiet baseline (each feature at its level, ±0.1 % noise) and a window of 16
/// points that starts at the baseline and ends at `end` (per feature; `None`: stays).
fn scene(end: &[(&str, f64)]) -> (Vec<f64>, Vec<[f64; N]>) {
    let level = [0.2, 0.5, 0.001, 0.001, 0.003, 0.2, 0.3, 100.0];
    let baseline: Vec<[f64; N]> = (0..30).map(|i| level.map(|v| v * if i % 2 == 0 { 1.001 } else { 0.999 })).collect();
    let mut window = Vec::with_capacity(16 * N);
    for t in 0..16 {
        for (c, &v) in level.iter().enumerate() {
            let target = end.iter().find(|(f, _)| channel(f) == c).map_or(v, |(_, x)| *x);
            window.push(v + (target - v) * t as f64 / 15.0);
        }
    }
    (window, baseline)
}

#[test]
fn metrics_that_depart_most_from_the_baseline_are_chosen_most_deviant_first() {
    let (window, baseline) = scene(&[
        (features::MEMORY_UTILIZATION, 1.0), // +0.5 at the end: ~4.2 tenths of a unit over the tail
        (m::LATENCY_P99, 1.2),               // ~8.4
        (m::REQUEST_RATE, 250.0),            // ~12.6 (floor: 10 rps)
    ]);
    let ranked = deviations(&window, 16, &baseline);
    assert_eq!(ranked.len(), N);
    assert!(ranked.windows(2).all(|w| w[0].deviation >= w[1].deviation));
    assert_eq!(select(&ranked), vec![m::REQUEST_RATE, m::LATENCY_P99, features::MEMORY_UTILIZATION]);
}

#[test]
fn too_few_departures_are_made_up_with_level_features_only() {
    // Latency qualifies alone; request rate departs more than CPU but is a SHAPE
    // feature (its noise would match nothing), so CPU makes up the second.
    let (window, baseline) = scene(&[(m::LATENCY_P99, 1.2), (m::REQUEST_RATE, 125.0), (m::CPU_UTILIZATION, 0.3)]);
    let ranked = deviations(&window, 16, &baseline);
    assert_eq!(ranked[1].metric, m::REQUEST_RATE, "{ranked:?}");
    assert_eq!(select(&ranked), vec![m::LATENCY_P99, m::CPU_UTILIZATION]);
}

#[test]
fn at_most_five_metrics_and_only_rankable_ones() {
    let all: Vec<(&str, f64)> = DEFAULT_FEATURES.iter().enumerate().map(|(i, f)| (*f, 10.0 + i as f64)).collect();
    let (mut window, mut baseline) = scene(&all);
    let chosen = select(&deviations(&window, 16, &baseline));
    assert_eq!(chosen.len(), 5);
    // A hole in the window, or too short a baseline, makes a feature unrankable.
    window[3 * N + channel(m::LOG_ERRORS)] = f64::NAN;
    baseline.iter_mut().skip(4).for_each(|b| b[channel(m::PSI_IO_SOME)] = f64::NAN);
    let ranked = deviations(&window, 16, &baseline);
    assert_eq!(ranked.len(), N - 2);
    assert!(ranked.iter().all(|d| d.metric != m::LOG_ERRORS && d.metric != m::PSI_IO_SOME));
}

#[test]
fn scores_like_the_detector_normalise_dtw_confidence() {
    let sig = super::signature("leak");
    let window: Vec<f64> = (0..16).flat_map(|t| [sig.series[0][t], sig.series[1][t]]).collect();
    assert!(confidence_against(&sig, &window).unwrap() > 0.9999);

    // The flat error rate a tenth of a unit higher at every point: no warping removes it.
    let shifted: Vec<f64> = (0..16).flat_map(|t| [sig.series[0][t], sig.series[1][t] + 0.1]).collect();
    let c = confidence_against(&sig, &shifted).unwrap();
    assert!((c - (-0.25f64).exp()).abs() < 1e-4, "{c}");

    // A SHAPE channel by hand: normalise both, DTW radius 6, confidence.
    let mut shape = sig.clone();
    shape.normalisation = vec![Normalisation::Shape, Normalisation::Level];
    let other: Vec<f64> = (0..16).flat_map(|t| [((t * 7) % 5) as f64 * 0.1, 0.02]).collect();
    let (mut a0, mut b0) = (shape.series[0].clone(), (0..16).map(|t| other[2 * t]).collect::<Vec<_>>());
    features::normalise(&mut a0, Normalisation::Shape, features::MEMORY_UTILIZATION);
    features::normalise(&mut b0, Normalisation::Shape, features::MEMORY_UTILIZATION);
    let a: Vec<f64> = (0..16).flat_map(|t| [a0[t], 0.01]).collect();
    let b: Vec<f64> = (0..16).flat_map(|t| [b0[t], 0.02]).collect();
    let d = Dtw::new(RADIUS).distance(&Series::from_f64(2, &b).unwrap(), &Series::from_f64(2, &a).unwrap());
    let expected = confidence(d, 16, 2);
    let mut scorer = Scorer::new(&shape).unwrap();
    assert!((scorer.confidence(&other).unwrap() - expected).abs() < 1e-9);

    // A longer window is compared on its last points; a hole there is no comparison.
    let mut longer = vec![5.0; 2 * 4];
    longer.extend_from_slice(&window);
    assert!(scorer.confidence(&longer).is_some());
    let mut holed = window.clone();
    holed[7] = f64::NAN;
    assert_eq!(scorer.confidence(&holed), None);
    assert_eq!(scorer.confidence(&window[..30]), None, "shorter than the signature");
}

#[test]
fn an_outage_makes_an_instance_not_continuous() {
    let i = InstanceTelemetry {
        samples: [0, 10, 20, 30, 80, 90].iter().map(|&t| (t * 1000, [0.0; N])).collect(),
        ..Default::default()
    };
    assert!(i.continuous(0, 31_000, 40_000));
    assert!(!i.continuous(0, 100_000, 40_000), "a 50 s gap with 40 s allowed");
    assert!(!i.continuous(0, 200_000, 40_000), "silent at the end of the range");
    assert!(i.continuous(0, 100_000, 50_000));
}

/// A simulated fleet in memory and its failures that happened, by time.
fn fleet() -> (Telemetry, Vec<crate::simulate::GroundTruth>) {
    let config = FleetConfig {
        instances: 40,
        seed: 3,
        start_ms: 1_714_521_600_000, // 2024-05-01T00:00:00Z
        interval_ms: 10_000,
        duration_ms: 4 * 3_600_000,
        failure_fraction: 0.3,
        kinds: vec![FailureKind::MemoryLeak],
    };
    let mut fleet = Fleet::new(config).unwrap();
    let mut telemetry = Telemetry::new();
    while let Some(step) = fleet.tick() {
        for s in step {
            telemetry.entry(s.instance_id.clone()).or_default().push(&s);
        }
    }
    let mut truth: Vec<_> = fleet.ground_truth().iter().filter(|g| g.failure_ms.is_some()).cloned().collect();
    truth.sort_by_key(|g| g.failure_ms);
    (telemetry, truth)
}

fn request(instance: &str, until_ms: i64) -> ExtractRequest {
    ExtractRequest {
        instance: instance.into(),
        until_ms,
        lead_ms: 300_000,
        length_ms: 640_000,
        step_ms: 10_000,
        baseline_ms: 1_800_000,
        lookahead_ms: 3_600_000,
        name: Some("memory_leak".into()),
        failure_kind: "memory_leak".into(),
        metrics: None,
        normalisation: None,
        threshold: None,
        margin: 0.05,
        app_type: None,
        function: Some("*".into()),
    }
}

#[test]
fn extraction_cuts_the_detector_grid_before_the_failure_and_calibrates_on_healthy_instances() {
    let (telemetry, truth) = fleet();
    let incident = truth.iter().find(|g| g.failure_ms.unwrap() > 1_714_521_600_000 + 3_600_000).unwrap();
    let until = incident.failure_ms.unwrap();
    let req = request(&incident.instance, until);
    let x = extract(&telemetry, &req).unwrap();
    let s = &x.signature;
    assert_eq!(key(s), format!("{}/*/memory_leak", incident.app_type));
    assert_eq!((s.interval_ms, s.lead_ms, s.series[0].len()), (10_000, 300_000, 64));
    assert!((2..=5).contains(&s.metrics.len()), "{:?}", s.metrics);
    assert_eq!(s.metrics[0], features::MEMORY_UTILIZATION, "a leak departs most in memory: {:?}", x.deviations);
    assert!(s.source.contains(&incident.instance), "{}", s.source);

    // The series is the instance's grid ending `lead` before the failure.
    let own = &telemetry[&incident.instance];
    let grid = own.window(until - 300_000, 10_000, 64);
    let mem = channel(features::MEMORY_UTILIZATION);
    assert_eq!(s.series[0], (0..64).map(|t| grid[t * N + mem]).collect::<Vec<_>>());
    assert!(own.samples.iter().any(|(t, _)| *t == until), "the failure sample itself is recorded");
    assert!(s.series[0][63] > s.series[0][0] + 0.05, "memory grows towards the failure");

    // Calibrated above every healthy window, which excludes instances that went down.
    let c = x.calibration.as_ref().unwrap();
    assert!(c.windows > 100 && c.instances > 3, "{c:?}");
    assert!((s.threshold - (c.max_healthy_confidence + 0.05).clamp(0.5, 0.95)).abs() < 1e-12);
    assert!((c.margin - (s.threshold - c.max_healthy_confidence)).abs() < 1e-12);
    let (from, to) = req.replay_range();
    let failed_in_range: Vec<&str> = truth
        .iter()
        .filter(|g| g.failure_ms.is_some_and(|f| (from..to).contains(&f)))
        .map(|g| g.instance.as_str())
        .collect();
    assert!(failed_in_range.len() > 1);
    assert!(!failed_in_range.contains(&c.max_healthy_instance.as_str()), "{c:?}");
    let mut scorer = Scorer::new(s).unwrap();
    let grid = &grid;
    let own_window: Vec<f64> = (0..64).flat_map(|t| s.metrics.iter().map(move |m| grid[t * N + channel(m)])).collect();
    assert!(scorer.confidence(&own_window).unwrap() > 0.999);
}

#[test]
fn given_metrics_and_threshold_are_kept_and_bad_requests_refused() {
    let (telemetry, truth) = fleet();
    let g = truth.last().unwrap();
    let mut req = request(&g.instance, g.failure_ms.unwrap());
    req.metrics = Some(vec![m::PSI_MEMORY_SOME.into(), features::MEMORY_UTILIZATION.into()]);
    req.threshold = Some(0.7);
    let x = extract(&telemetry, &req).unwrap();
    assert_eq!(x.signature.metrics, vec![m::PSI_MEMORY_SOME, features::MEMORY_UTILIZATION]);
    assert_eq!(x.signature.threshold, 0.7);
    assert!(x.signature.source.contains("threshold given"));

    let refused = |change: fn(&mut ExtractRequest)| {
        let mut r = req.clone();
        change(&mut r);
        extract(&telemetry, &r).unwrap_err()
    };
    assert!(matches!(refused(|r| r.instance = "nobody".into()), ExtractError::NoInstance { .. }));
    assert!(matches!(refused(|r| r.length_ms = 645_000), ExtractError::Request(_)));
    assert!(matches!(refused(|r| r.length_ms = 70_000), ExtractError::Request(_)));
    let e = refused(|r| r.metrics = Some(vec![m::DISK_BUSY.into()]));
    assert!(matches!(e, ExtractError::NotAWindowFeature(_)) && e.to_string().contains(m::DISK_BUSY), "{e}");
    // Ten hours later there is no telemetry of the instance to cut.
    assert!(matches!(refused(|r| r.until_ms += 36_000_000), ExtractError::NoInstance { .. }));
}

#[test]
fn normalisation_overrides_need_one_mode_per_given_metric() {
    let (telemetry, truth) = fleet();
    let incident = truth.iter().find(|g| g.failure_ms.unwrap() > 1_714_521_600_000 + 3_600_000).unwrap();
    let mut req = request(&incident.instance, incident.failure_ms.unwrap());
    req.normalisation = Some(vec![Normalisation::Rise]);
    let err = extract(&telemetry, &req).unwrap_err().to_string();
    assert!(err.contains("--normalisation needs --metrics"), "{err}");
    req.metrics = Some(vec![features::MEMORY_UTILIZATION.into(), m::REQUEST_RATE.into()]);
    let err = extract(&telemetry, &req).unwrap_err().to_string();
    assert!(err.contains("1 modes for 2 metrics"), "{err}");
    req.normalisation = Some(vec![Normalisation::Rise, Normalisation::Rise]);
    let x = extract(&telemetry, &req).unwrap();
    assert_eq!(x.signature.normalisation, vec![Normalisation::Rise, Normalisation::Rise]);
    // Without modes, each metric gets its feature's own.
    req.normalisation = None;
    let x = extract(&telemetry, &req).unwrap();
    assert_eq!(x.signature.normalisation, vec![Normalisation::Level, Normalisation::Shape]);
}
