//! The features a window holds: which telemetry metrics, how derived ones are
//! computed from a sample, and how a channel is normalised before two series are
//! compared.
//!
//! In: a [`TelemetrySample`]. Out: one `f64` per feature, `NaN` where the sample does
//! not carry what the feature needs (never zero: a missing reading is not a reading of
//! zero). Windows, signature extraction and the anomaly model all go through here, so
//! a signature cut from recorded telemetry compares with live windows like with like.

use crate::codec::metric_names as m;
use crate::codec::{Normalisation, TelemetrySample};

/// Memory used over the memory limit, 0..1: comparable across instances of any size,
/// where `memory_used_bytes` is not.
pub const MEMORY_UTILIZATION: &str = "memory_utilization_ratio";

/// The leading indicators the seed names (CPU, memory pressure, latency, error rate,
/// log anomalies), plus IO pressure and load: the default channels of every window.
pub const DEFAULT_FEATURES: [&str; 8] = [
    m::CPU_UTILIZATION,
    MEMORY_UTILIZATION,
    m::PSI_MEMORY_SOME,
    m::PSI_IO_SOME,
    m::ERROR_RATE,
    m::LATENCY_P99,
    m::LOG_ERRORS,
    m::REQUEST_RATE,
];

/// Whether `name` is a feature a window can hold: a canonical metric or a derived one.
pub fn is_known(name: &str) -> bool {
    name == MEMORY_UTILIZATION || m::ALL.contains(&name)
}

/// The value of feature `name` in `sample`; `NaN` if the sample lacks it (or, for a
/// derived feature, any input) or the value is not finite.
pub fn value(sample: &TelemetrySample, name: &str) -> f64 {
    let v = if name == MEMORY_UTILIZATION {
        match (sample.metric(m::MEMORY_USED), sample.metric(m::MEMORY_LIMIT)) {
            (Some(used), Some(limit)) if limit > 0.0 => used / limit,
            _ => f64::NAN,
        }
    } else {
        sample.metric(name).unwrap_or(f64::NAN)
    };
    if v.is_finite() {
        v
    } else {
        f64::NAN
    }
}

/// The unit a `LEVEL` channel is measured in: values are divided by it, so that one
/// unit of distance means about the same on every channel. Ratios are already 0..1;
/// the others are a typical size of the quantity (a second of p99 latency, ten error
/// lines a second, a hundred requests a second), not a limit.
pub fn level_unit(name: &str) -> f64 {
    match name {
        m::LATENCY_P99 => 1.0,
        m::LOG_ERRORS => 10.0,
        m::REQUEST_RATE => 100.0,
        m::NETWORK_ERRORS => 10.0,
        m::MEMORY_USED | m::MEMORY_AVAILABLE | m::MEMORY_LIMIT => (1u64 << 30) as f64,
        m::NETWORK_RECEIVE | m::NETWORK_TRANSMIT | m::DISK_READ | m::DISK_WRITE => (1u64 << 20) as f64,
        m::CPU_LIMIT => 1.0,
        _ => 1.0,
    }
}

/// Share of a series, at its start, whose mean is the opening level a `RISE` channel
/// is measured against: the first eighth (80 s of the detector's 64 steps of 10 s),
/// long enough to average out one noisy sample, short enough to precede a failure
/// that develops within the window.
pub const RISE_OPENING_SHARE: usize = 8;

/// Floor added to both sides of a `RISE` ratio, in units of [`level_unit`]: a channel
/// that opens at zero (no errors, no pressure) still has a finite ratio, and changes
/// well under a hundredth of a unit do not read as large relative rises.
pub const RISE_FLOOR_UNITS: f64 = 0.01;

/// Normalises one channel of a series in place: `LEVEL` divides by the feature's
/// [`level_unit`]; `SHAPE` subtracts the mean and divides by the standard deviation,
/// which is floored at a tenth of the unit so that a flat, noisy channel does not
/// turn its noise into a shape; `RISE` is the natural log of each value over the
/// series' opening level (the mean of its first [`RISE_OPENING_SHARE`]th), so that
/// the same relative climb compares alike on instances whose levels differ by orders
/// (a p99 latency going from 0.7 s to 3 s and one going from 12 s to 50 s). Every value
/// must be finite.
pub fn normalise(values: &mut [f64], mode: Normalisation, name: &str) {
    let unit = level_unit(name);
    match mode {
        Normalisation::Level => values.iter_mut().for_each(|v| *v /= unit),
        Normalisation::Rise => {
            let floor = RISE_FLOOR_UNITS * unit;
            let k = (values.len() / RISE_OPENING_SHARE).max(1).min(values.len());
            let opening = values[..k].iter().map(|v| v.max(0.0)).sum::<f64>() / k.max(1) as f64;
            let base = (opening + floor).ln();
            values.iter_mut().for_each(|v| *v = (v.max(0.0) + floor).ln() - base);
        }
        Normalisation::Shape => {
            let n = values.len().max(1) as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let sd = var.sqrt().max(0.1 * unit);
            values.iter_mut().for_each(|v| *v = (*v - mean) / sd);
        }
    }
}

/// The normalisation a feature gets by default: levels where the level itself says
/// something is wrong (a CPU at 95 %, memory near its limit, pressure, errors), shape
/// where only the change does (request rates differ by orders between instances).
pub fn default_normalisation(name: &str) -> Normalisation {
    match name {
        m::REQUEST_RATE | m::NETWORK_RECEIVE | m::NETWORK_TRANSMIT | m::DISK_READ | m::DISK_WRITE => {
            Normalisation::Shape
        }
        _ => Normalisation::Level,
    }
}

/// Places timestamped feature vectors on a grid of `points` cells of `step_ms`, the
/// last cell ending at `end_ms` (exclusive): cell `k` covers
/// `[end − (points − k)·step, end − (points − k − 1)·step)` and takes the value of the
/// latest sample in it (by timestamp; the first of equal timestamps). A cell without a
/// sample takes its channel's previous value for at most `max_fill` cells (the first
/// cells take the next value, as far), else stays `NaN`; a channel with no value in the
/// window stays `NaN` throughout. `samples` must be sorted by timestamp, each vector
/// holding `channels` values. Returns the values time-major and the share of cells
/// that held a sample.
///
/// Windows, signature extraction and model training all grid telemetry through this
/// one function, so they compare like with like.
pub fn grid(
    samples: &[(i64, &[f64])],
    channels: usize,
    end_ms: i64,
    step_ms: i64,
    points: usize,
    max_fill: usize,
) -> (Vec<f64>, f64) {
    let start = end_ms - step_ms * points as i64;
    let mut out = vec![f64::NAN; points * channels];
    let mut filled = vec![false; points];
    for &(ts, values) in samples {
        if ts < start || ts >= end_ms {
            continue;
        }
        let k = ((ts - start) / step_ms) as usize;
        filled[k] = true;
        for (c, &v) in values.iter().enumerate().take(channels) {
            // A later sample in the cell wins, but a missing value does not erase one.
            if !v.is_nan() {
                out[k * channels + c] = v;
            }
        }
    }
    for c in 0..channels {
        // Forward: carry the last value over short gaps.
        let (mut last, mut run) = (f64::NAN, 0usize);
        for k in 0..points {
            let v = &mut out[k * channels + c];
            if v.is_nan() {
                run += 1;
                if run <= max_fill && !last.is_nan() {
                    *v = last;
                }
            } else {
                (last, run) = (*v, 0);
            }
        }
        // Backward, for the leading cells only.
        if let Some(first) = (0..points).find(|&k| !out[k * channels + c].is_nan()) {
            let v = out[first * channels + c];
            for k in first.saturating_sub(max_fill)..first {
                out[k * channels + c] = v;
            }
        }
    }
    let coverage = filled.iter().filter(|&&f| f).count() as f64 / points.max(1) as f64;
    (out, coverage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Metric;

    fn sample(metrics: &[(&str, f64)]) -> TelemetrySample {
        TelemetrySample {
            instance_id: "i".into(),
            app_type: "web".into(),
            function: "f".into(),
            seq: 0,
            timestamp_ms: 0,
            metrics: metrics.iter().map(|(n, v)| Metric::new(*n, *v)).collect(),
            labels: Default::default(),
        }
    }

    #[test]
    fn missing_inputs_are_nan_not_zero() {
        let s = sample(&[(m::MEMORY_USED, 512.0), (m::CPU_UTILIZATION, f64::INFINITY)]);
        assert!(value(&s, MEMORY_UTILIZATION).is_nan(), "no limit, no utilisation");
        assert!(value(&s, m::ERROR_RATE).is_nan());
        assert!(value(&s, m::CPU_UTILIZATION).is_nan(), "non-finite readings are missing");
        let s = sample(&[(m::MEMORY_USED, 512.0), (m::MEMORY_LIMIT, 1024.0)]);
        assert_eq!(value(&s, MEMORY_UTILIZATION), 0.5);
    }

    #[test]
    fn shape_normalisation_centres_and_scales_but_keeps_flat_noise_small() {
        let mut v = vec![1.0, 2.0, 3.0, 4.0];
        normalise(&mut v, Normalisation::Shape, m::CPU_UTILIZATION);
        assert!(v.iter().sum::<f64>().abs() < 1e-12);
        assert!((v[3] - v[0] - 3.0 / 1.118_033_988_749_895).abs() < 1e-9);
        let mut flat = vec![0.50, 0.501, 0.499, 0.50];
        normalise(&mut flat, Normalisation::Shape, m::CPU_UTILIZATION);
        assert!(flat.iter().all(|x| x.abs() < 0.02), "noise amplified: {flat:?}");
        let mut level = vec![20.0];
        normalise(&mut level, Normalisation::Level, m::LOG_ERRORS);
        assert_eq!(level, vec![2.0]);
    }

    #[test]
    fn rise_normalisation_compares_relative_climbs_across_scales() {
        let climb = |base: f64| -> Vec<f64> {
            let mut v: Vec<f64> =
                (0..16).map(|t| if t < 8 { base } else { base * (1.0 + 0.5 * (t - 7) as f64) }).collect();
            normalise(&mut v, Normalisation::Rise, m::LATENCY_P99);
            v
        };
        let (fast, slow) = (climb(0.7), climb(12.0));
        assert!(fast[..8].iter().all(|x| x.abs() < 1e-12), "the opening level maps to zero: {fast:?}");
        // Tripling reads as ln 3 whatever the level, up to the floor's share.
        assert!((slow[11] - 3.0f64.ln()).abs() < 1e-3, "{slow:?}");
        assert!((fast[11] - slow[11]).abs() < 0.02, "{fast:?} vs {slow:?}");
        // A channel that opens at zero stays finite.
        let mut zero = vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5];
        normalise(&mut zero, Normalisation::Rise, m::ERROR_RATE);
        assert!(zero.iter().all(|x| x.is_finite()) && zero[8] > 3.0, "{zero:?}");
    }

    #[test]
    fn every_default_feature_is_known() {
        assert!(DEFAULT_FEATURES.iter().all(|f| is_known(f)));
        assert!(!is_known("cpu_utilisation"));
    }
    #[test]
    fn grid_takes_the_latest_sample_per_cell_and_fills_short_gaps_only() {
        let a = [1.0, f64::NAN];
        let b = [2.0, 5.0];
        let c = [7.0, 6.0];
        // Cells of 10 over [0, 60): samples at 0 and 5 (cell 0), 10 (cell 1), 50 (cell 5).
        let samples: Vec<(i64, &[f64])> = vec![(0, &a), (5, &b), (10, &c), (50, &c)];
        let (v, coverage) = grid(&samples, 2, 60, 10, 6, 1);
        let ch0: Vec<f64> = (0..6).map(|k| v[k * 2]).collect();
        assert_eq!(&ch0[..3], &[2.0, 7.0, 7.0]);
        assert!(ch0[3].is_nan() && ch0[4].is_nan(), "a gap longer than max_fill stays missing: {ch0:?}");
        assert_eq!(ch0[5], 7.0);
        assert_eq!(v[1], 5.0, "the later sample's value wins in its cell");
        assert!((coverage - 0.5).abs() < 1e-12);
        let (v, _) = grid(&samples[2..3], 2, 60, 10, 6, 1);
        assert_eq!(v[0], 7.0, "leading cells take the next value");
    }
}
