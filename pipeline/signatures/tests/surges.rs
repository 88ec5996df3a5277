//! The starter library's CPU saturation signatures on fleets they were not cut from:
//! surges of every speed are predicted before they fail, and healthy instances never
//! match. (The other kinds are measured through the detector on the real broker, in
//! `tests/kafka/detect.rs`; a surge's speed is what a single signature missed.)

use std::collections::BTreeMap;

use crate::codec::FailureSignature;
use crate::signatures::extract::{InstanceTelemetry, Scorer, Telemetry};
use crate::simulate::{FailureKind, Fleet, FleetConfig};
use crate::window::features::DEFAULT_FEATURES;
use crate::window::WindowConfig;

/// A fleet like the ones the detector's and the demo's tests run, in memory.
fn fleet(instances: usize, seed: u64, hours: i64) -> (Telemetry, Vec<crate::simulate::GroundTruth>) {
    let config = FleetConfig {
        instances,
        seed,
        start_ms: 1_795_305_600_000, // a UTC midnight, as those tests start
        interval_ms: 10_000,
        duration_ms: hours * 3_600_000,
        failure_fraction: 0.3,
        kinds: FailureKind::ALL.to_vec(),
    };
    let mut fleet = Fleet::new(config).unwrap();
    let mut telemetry = Telemetry::new();
    while let Some(step) = fleet.tick() {
        for s in step {
            telemetry.entry(s.instance_id.clone()).or_default().push(&s);
        }
    }
    (telemetry, fleet.ground_truth().to_vec())
}

/// A signature ready to score the detector's windows: its scorer and the window
/// channels of its metrics.
struct Prepared<'a> {
    signature: &'a FailureSignature,
    scorer: Scorer,
    channels: Vec<usize>,
}

/// Ends of the windows where some prepared signature of the instance's app type is at
/// or above its threshold: the detector's windows (64 steps of 10 s, one per hop).
fn alerting_ends(instance: &InstanceTelemetry, signatures: &mut [Prepared<'_>]) -> Vec<i64> {
    let window = WindowConfig::default();
    let n = DEFAULT_FEATURES.len();
    let (Some(first), Some(last)) = (instance.samples.first(), instance.samples.last()) else { return Vec::new() };
    let mut ends = Vec::new();
    let mut end = first.0 - first.0.rem_euclid(window.hop_ms) + window.hop_ms;
    while end <= last.0 + window.step_ms {
        let values = instance.window(end, window.step_ms, window.points);
        for p in signatures.iter_mut().filter(|p| p.signature.app_type == instance.app_type) {
            let values = &values;
            let picked: Vec<f64> =
                (0..window.points).flat_map(|t| p.channels.iter().map(move |&c| values[t * n + c])).collect();
            if p.scorer.confidence(&picked).is_some_and(|c| c >= p.signature.threshold) {
                ends.push(end);
                break;
            }
        }
        end += window.hop_ms;
    }
    ends
}

#[test]
fn surge_signatures_predict_fast_and_slow_surges_and_spare_healthy_instances() {
    let library: Vec<FailureSignature> =
        crate::signatures::starter::library().unwrap().into_iter().map(|l| l.signature).collect();
    let surges: Vec<&FailureSignature> = library.iter().filter(|s| s.failure_kind == "cpu_saturation").collect();
    assert!(surges.len() > 4, "a fast and a slow surge signature per app type: {}", surges.len());
    let mut prepared: Vec<Prepared<'_>> = surges
        .iter()
        .map(|s| Prepared {
            signature: s,
            scorer: Scorer::new(s).unwrap(),
            channels: s.metrics.iter().map(|m| DEFAULT_FEATURES.iter().position(|f| f == m).unwrap()).collect(),
        })
        .collect();

    let (mut predicted, mut happened, mut false_alarms) = (Vec::new(), 0, Vec::new());
    let mut missed = Vec::new();
    for (instances, seed, hours) in [(40, 11, 4), (60, 1, 3), (60, 5, 4), (60, 7, 6), (100, 13, 4)] {
        let (telemetry, truth) = fleet(instances, seed, hours);
        let failing: BTreeMap<&str, &crate::simulate::GroundTruth> =
            truth.iter().map(|g| (g.instance.as_str(), g)).collect();
        for (id, instance) in &telemetry {
            let ends = alerting_ends(instance, &mut prepared);
            match failing.get(id.as_str()) {
                None if !ends.is_empty() => false_alarms.push(format!("seed {seed} {id} at {:?}", ends)),
                None => {}
                Some(g) if g.kind == FailureKind::CpuSaturation => {
                    let Some(failure) = g.failure_ms else { continue };
                    happened += 1;
                    match ends.iter().find(|&&e| e >= g.onset_ms && e <= failure) {
                        Some(&at) => predicted.push((failure - at) / 1000),
                        None => missed.push(format!("seed {seed} {id} ({} s)", (failure - g.onset_ms) / 1000)),
                    }
                }
                Some(_) => {}
            }
        }
    }
    eprintln!("surges predicted {} of {happened}, lead (s) {predicted:?}; missed {missed:?}", predicted.len());
    assert!(happened >= 15, "the fleets should hold surges that failed: {happened}");
    // Measured when the library was built: 18 of 20 (the short pair alone 17, see
    // scripts/build-signatures).
    assert!(predicted.len() * 10 >= happened * 8, "under 80% of the surges predicted; missed {missed:?}");
    assert!(false_alarms.is_empty(), "surge signatures alert on healthy instances: {false_alarms:?}");
}
