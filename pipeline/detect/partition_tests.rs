//! A partition's outputs are a function of its records alone, wherever batches end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::*;
use crate::detect::matcher::Matcher;
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
    let window = WindowConfig::default();
    let signatures: BTreeMap<String, _> = crate::signatures::starter::library()
        .expect("the starter library")
        .into_iter()
        .map(|l| (l.signature.key(), l.signature))
        .collect();
    let matcher = Arc::new(Matcher::build(&signatures, &window.features, window.step_ms, window.points, 6));
    let models = Arc::new(ModelSet::shipped(&crate::detect::lstm::shipped_dir(), &window));
    let judge = Judge { matcher, models };
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
    };
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
    out.into_iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some(a.id),
            Output::Adjustment(a) => Some(a.id),
            Output::Dead(_) => None,
        })
        .collect()
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
