//! A partition's outputs are a function of its records alone, wherever batches end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::*;
use crate::codec::Action;
use crate::codec::{FailureSignature, TunedStep, TunedValue};
use crate::detect::matcher::Matcher;
use crate::feedback::tuned::{shift_key, threshold_key};
use crate::kafka::table::Entry;
use crate::simulate::{FailureKind, Fleet, FleetConfig};
use crate::window::WindowConfig;

/// One partition of a failing simulated fleet, as encoded records.
fn records(instances: usize, seed: u64) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let config = FleetConfig {
        instances,
        seed,
        start_ms: 1_795_305_600_000,
        interval_ms: 10_000,
        duration_ms: 2 * 3_600_000,
        failure_fraction: 0.5,
        kinds: FailureKind::ALL.to_vec(),
    };
    let mut fleet = Fleet::new(config).expect("a valid fleet");
    let codec = Codec::<TelemetrySample>::new();
    let mut out = Vec::new();
    while let Some(samples) = fleet.tick() {
        for s in &samples {
            out.push((s.instance_id.as_bytes().to_vec(), codec.encode(s).expect("encodes"), s.timestamp_ms));
        }
    }
    out
}

/// Alert and adjustment ids of the records processed with a flush every `batch` records.
fn outputs(records: &[(Vec<u8>, Vec<u8>, i64)], batch: usize) -> BTreeSet<String> {
    run(records, batch, Tuning::default())
        .into_iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some(a.id),
            Output::Adjustment(a) => Some(a.id),
            Output::Evidence(e) => {
                Some(format!("{}@{}:{:?}/{:.6}", e.instance_id, e.window_end_ms, e.anomaly_score, e.confidence))
            }
            Output::Dead(_) => None,
        })
        .collect()
}

/// What a detector with the shipped policies and models and these signatures shares,
/// and its judge with `tuning`.
pub(crate) fn detector(signatures: &[FailureSignature], tuning: Tuning) -> (Shared, Judge) {
    let window = WindowConfig::default();
    let signatures: BTreeMap<String, FailureSignature> = signatures.iter().map(|s| (s.key(), s.clone())).collect();
    let matcher = Arc::new(Matcher::build(&signatures, &window.features, window.step_ms, window.points, 6));
    let models = Arc::new(ModelSet::shipped(&crate::detect::lstm::shipped_dir(), &window));
    let judge = Judge { matcher, models, tuning: Arc::new(tuning) };
    let liveness = LivenessConfig::default();
    let shared = Shared {
        windows: Windows::new(window.clone()),
        codec: Codec::new(),
        telemetry_topic: "t".into(),
        hop_ms: window.hop_ms,
        lookback_ms: window.lookback_ms().max(liveness.lookback_ms(window.step_ms, window.idle_expiry_ms)),
        idle_expiry_ms: window.idle_expiry_ms,
        max_future_ms: 120_000,
        liveness,
        policies: Policies::shipped().expect("the shipped policies"),
        scoring_seconds: crate::detect::metrics::scoring_histogram(),
    };
    (shared, judge)
}

/// The starter library's signatures.
pub(crate) fn starter() -> Vec<FailureSignature> {
    crate::signatures::starter::library().expect("the starter library").into_iter().map(|l| l.signature).collect()
}

/// Every output of the records processed with a flush every `batch` records.
fn run(records: &[(Vec<u8>, Vec<u8>, i64)], batch: usize, tuning: Tuning) -> Vec<Output> {
    let (shared, judge) = detector(&starter(), tuning);
    let mut dtw = Dtw::new(6);
    let mut state = PartitionState::new(0, &shared);
    let mut out = Vec::new();
    for (i, (key, value, t)) in records.iter().enumerate() {
        let input = Input { offset: i as i64, key: Some(key), payload: Some(value), timestamp_ms: Some(*t) };
        state.process(&shared, input, &mut out);
        if (i + 1) % batch == 0 {
            state.flush(&shared, &judge, &mut dtw, &mut out);
        }
    }
    state.flush(&shared, &judge, &mut dtw, &mut out);
    out
}

#[test]
fn outputs_do_not_depend_on_where_batches_end() {
    let records = records(8, 5);
    let one_by_one = outputs(&records, 1);
    assert!(one_by_one.iter().any(|id| id.contains("/anomaly/") || id.contains("/signature/")), "{one_by_one:?}");
    // Long batches move the partition's clock far past windows still waiting for their
    // flush: the decisions those windows continue from must still be there.
    for batch in [2_000, 97] {
        let other = outputs(&records, batch);
        assert_eq!(
            other,
            one_by_one,
            "batches of {batch}: only there {:?}, only one by one {:?}",
            other.difference(&one_by_one).collect::<Vec<_>>(),
            one_by_one.difference(&other).collect::<Vec<_>>()
        );
    }
}

/// A tuned value of `key` that steps to `value` at `from_ms`.
fn step(key: String, default_value: f64, floor: f64, ceiling: f64, from_ms: i64, value: f64) -> TunedValue {
    let steps = vec![TunedStep { from_ms, value, reason: "test".into() }];
    TunedValue { key, app_type: "any".into(), default_value, floor, ceiling, steps }
}

fn alerts(outputs: &[Output]) -> Vec<&Alert> {
    outputs.iter().filter_map(|o| if let Output::Alert(a) = o { Some(a) } else { None }).collect()
}

#[test]
fn tuned_thresholds_and_tier_shifts_hold_from_their_effective_time_on() {
    let records = records(8, 5);
    let plain = run(&records, 1, Tuning::default());
    let start = records[0].2;
    let from_ms = start + 3_600_000;
    let signatures: BTreeSet<String> =
        alerts(&plain).iter().filter_map(|a| a.signature.clone().filter(|_| a.kind == AlertKind::Signature)).collect();
    assert!(!signatures.is_empty(), "the fleet gives signature alerts to tune away");
    let mut values: Vec<TunedValue> =
        signatures.iter().map(|s| step(threshold_key(s), 0.7, 0.4, 0.999, from_ms, 0.999)).collect();
    values.extend(
        ["web", "worker", "cache", "database"].map(|app| step(shift_key(app), 0.0, -20.0, 20.0, from_ms, 20.0)),
    );
    let tuned = run(&records, 1, Tuning::new(values));

    let before = |o: &[Output]| -> Vec<String> {
        alerts(o).into_iter().filter(|a| a.window_end_ms < from_ms).map(|a| a.id.clone()).collect()
    };
    assert_eq!(before(&tuned), before(&plain), "a step changes nothing before its effective time");
    let after = |o: &[Output], kind: AlertKind| -> Vec<(String, f64, Option<f64>)> {
        alerts(o)
            .into_iter()
            .filter(|a| a.window_end_ms >= from_ms && a.kind == kind)
            .map(|a| (a.id.clone(), a.confidence, a.anomaly_score))
            .collect()
    };
    let sig_after = after(&tuned, AlertKind::Signature);
    assert!(
        after(&plain, AlertKind::Signature).len() > sig_after.len(),
        "a raised threshold removes signature alerts: {sig_after:?}"
    );
    assert!(sig_after.iter().all(|(_, c, _)| *c >= 0.999), "an alert under the tuned threshold: {sig_after:?}");
    // With the boundaries 20 points up, tier 2 starts at 91 and tier 3 is out of reach.
    let anomaly_after = after(&tuned, AlertKind::Anomaly);
    assert!(anomaly_after.iter().all(|(_, _, s)| s.is_some_and(|s| s >= 90.5)), "{anomaly_after:?}");
    assert!(anomaly_after.iter().all(|(id, _, _)| !id.contains("/tier-3/")), "{anomaly_after:?}");
    assert!(
        after(&plain, AlertKind::Anomaly).iter().any(|(id, _, _)| id.contains("/tier-3/")),
        "the untuned run reaches tier 3 after the step"
    );
    // The evidence names the threshold in force.
    let thresholds: Vec<f64> = tuned
        .iter()
        .filter_map(|o| match o {
            Output::Evidence(e)
                if e.window_end_ms >= from_ms && e.signature.as_ref().is_some_and(|s| signatures.contains(s)) =>
            {
                Some(e.threshold)
            }
            _ => None,
        })
        .collect();
    assert!(!thresholds.is_empty() && thresholds.iter().all(|t| *t == 0.999), "{thresholds:?}");
}

#[test]
fn a_strategy_weighted_to_zero_decides_nothing_and_a_partial_weight_scales_what_it_asks() {
    let records = records(8, 5);
    let plain = run(&records, 1, Tuning::default());
    let adjustments = |o: &[Output]| -> Vec<Adjustment> {
        o.iter().filter_map(|o| if let Output::Adjustment(a) = o { Some(a.clone()) } else { None }).collect()
    };
    let resizes: Vec<Adjustment> =
        adjustments(&plain).into_iter().filter(|a| a.action == Action::Resize && a.tier == 1).collect();
    assert!(!resizes.is_empty(), "the fleet gives tier-1 resizes to weigh");
    let weight = |app: &str, value: f64| {
        step(crate::feedback::tuned::weight_key(app, "tier-1", "RESIZE"), 1.0, 0.0, 1.0, 0, value)
    };
    let apps = ["web", "worker", "cache", "database"];
    let off = run(&records, 1, Tuning::new(apps.map(|a| weight(a, 0.0))));
    assert!(
        adjustments(&off).iter().all(|a| !(a.action == Action::Resize && a.tier == 1)),
        "a strategy weighted 0 still resizes"
    );
    let half = run(&records, 1, Tuning::new(apps.map(|a| weight(a, 0.5))));
    let halved: Vec<Adjustment> =
        adjustments(&half).into_iter().filter(|a| a.action == Action::Resize && a.tier == 1).collect();
    assert_eq!(halved.len(), resizes.len());
    for (h, p) in halved.iter().zip(&resizes) {
        assert_eq!(h.id, p.id);
        assert!((h.cpu_factor - (1.0 + (p.cpu_factor - 1.0) * 0.5)).abs() < 1e-12, "{h:?} vs {p:?}");
        assert!(h.reason.contains("weighted 0.50"), "{}", h.reason);
    }
}
