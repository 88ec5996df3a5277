//! Tests of the window store and the liveness detector, driven by the simulator's
//! telemetry (crashes included) and by hand-made samples where an edge needs pinning.

mod liveness;
mod windows;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::codec::{Metric, TelemetrySample};
use crate::simulate::{FailureKind, Fleet, FleetConfig};

/// 2024-05-01T00:00:00Z plus 7 s: off every hop boundary, so that tests see windows
/// align to the epoch, not to the first sample.
const START_MS: i64 = 1_714_521_607_000;
const MIN: i64 = 60_000;

fn fleet_config(instances: usize, seed: u64, duration_ms: i64, failure_fraction: f64) -> FleetConfig {
    FleetConfig {
        instances,
        seed,
        start_ms: START_MS,
        interval_ms: 10_000,
        duration_ms,
        failure_fraction,
        kinds: FailureKind::ALL.to_vec(),
    }
}

/// Every sample of the run, step by step, and the fleet with its ground truth.
fn run_fleet(config: FleetConfig) -> (Fleet, Vec<TelemetrySample>) {
    let mut fleet = Fleet::new(config).expect("valid fleet config");
    let mut samples = Vec::new();
    while let Some(step) = fleet.tick() {
        samples.extend(step);
    }
    (fleet, samples)
}

/// The samples in the order a partition might deliver them: each delayed by up to
/// `max_delay_ms` (a seeded draw), and a share `late_share` of them delivered a second
/// time, `late_by_ms` after the first, with other values (a confused agent's resend).
fn shuffle(
    samples: &[TelemetrySample],
    seed: u64,
    max_delay_ms: i64,
    late_share: f64,
    late_by_ms: i64,
) -> Vec<TelemetrySample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut arrivals: Vec<(i64, usize, TelemetrySample)> = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let at = s.timestamp_ms + rng.random_range(0..=max_delay_ms);
        arrivals.push((at, i, s.clone()));
        if rng.random_bool(late_share) {
            let mut again = s.clone();
            again.metrics.iter_mut().for_each(|m| m.value *= 2.0);
            arrivals.push((at + late_by_ms, i, again));
        }
    }
    arrivals.sort_by_key(|(at, i, _)| (*at, *i));
    arrivals.into_iter().map(|(_, _, s)| s).collect()
}

/// A hand-made sample: `metrics` at `ts_ms`.
fn sample(instance: &str, seq: i64, ts_ms: i64, metrics: &[(&str, f64)]) -> TelemetrySample {
    TelemetrySample {
        instance_id: instance.into(),
        app_type: "web".into(),
        function: "checkout".into(),
        seq,
        timestamp_ms: ts_ms,
        metrics: metrics.iter().map(|(n, v)| Metric::new(*n, *v)).collect(),
        labels: Default::default(),
    }
}

/// The first position from which a replay of `lookback_ms` before the clock at
/// `resume` (the latest event time before it) starts, as seeking a partition by
/// timestamp would find it.
fn replay_start(samples: &[TelemetrySample], resume: usize, lookback_ms: i64) -> usize {
    let clock = samples[..resume].iter().map(|s| s.timestamp_ms).max().unwrap_or(i64::MIN);
    samples.iter().position(|s| s.timestamp_ms >= clock - lookback_ms).unwrap_or(samples.len())
}
