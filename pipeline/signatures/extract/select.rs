//! Which metrics a signature keeps when `--metrics` is not given.
//!
//! In: the cut window of every window feature and the instance's own telemetry before
//! it (its baseline). Out: the features ranked by how far the window's end departs
//! from that baseline, and the chosen few. The rule, deliberately simple so an SRE can
//! check it by hand:
//!
//! 1. For each feature with a value at every point of the window and at least
//!    [`MIN_BASELINE_SAMPLES`] baseline samples, take the baseline's mean `μ` and
//!    standard deviation `σ`, the latter floored at a tenth of the feature's
//!    `level_unit` (the floor `features::normalise` uses, so a flat, quiet baseline
//!    does not make noise look like a departure).
//! 2. Its deviation is the mean of `|x − μ| / σ` over the last quarter of the window
//!    (at least 4 points): the points nearest the failure, where a leading indicator
//!    is furthest along.
//! 3. Keep the features with a deviation of at least [`SELECT_DEVIATION`], most
//!    deviant first, at most [`MAX_METRICS`]. If fewer than [`MIN_METRICS`] qualify
//!    (one channel alone matches too many windows), add the most deviant of the
//!    others that the detector compares by `LEVEL`, until there are
//!    [`MIN_METRICS`]. Ties go to the order of `features::DEFAULT_FEATURES`.
//!
//! Why a `SHAPE` feature (request rate) only ever qualifies on its own deviation: the
//! detector z-normalises such a channel, so where it did not move its noise becomes a
//! full-size shape that matches no other window, the same failure included. A quiet
//! `LEVEL` channel instead matches, at its level, and costs little. Measured on
//! simulated fleets (4 seeds, 100 instances, 6 h, the signature of each kind's first
//! incident scored on the later ones): picking the two most deviant features of any
//! kind found 31 % of the later incidents, this rule 49 %, neither alerting on any
//! window of an instance without a failure.

use serde::Serialize;

use crate::codec::Normalisation;
use crate::window::features::{self, DEFAULT_FEATURES};

/// Fewest and most metrics a selected signature has.
pub const MIN_METRICS: usize = 2;
pub const MAX_METRICS: usize = 5;
/// Deviation (in baseline standard deviations) from which a feature is selected:
/// three is beyond what a healthy instance's own noise reaches in a few points.
pub const SELECT_DEVIATION: f64 = 3.0;
/// Baseline samples a feature needs to be ranked at all.
pub const MIN_BASELINE_SAMPLES: usize = 6;

/// How far one feature's window departs from the instance's baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deviation {
    pub metric: String,
    pub deviation: f64,
}

/// The rankable features, most deviant first. `window` is time-major over
/// [`DEFAULT_FEATURES`] (`points` rows); `baseline` the instance's earlier samples.
pub fn deviations(window: &[f64], points: usize, baseline: &[[f64; DEFAULT_FEATURES.len()]]) -> Vec<Deviation> {
    let n = DEFAULT_FEATURES.len();
    let tail = (points / 4).max(4).min(points);
    let mut out = Vec::new();
    for (c, name) in DEFAULT_FEATURES.iter().enumerate() {
        let column: Vec<f64> = (0..points).map(|t| window[t * n + c]).collect();
        if column.iter().any(|v| !v.is_finite()) {
            continue;
        }
        let base: Vec<f64> = baseline.iter().map(|b| b[c]).filter(|v| v.is_finite()).collect();
        if base.len() < MIN_BASELINE_SAMPLES {
            continue;
        }
        let mean = base.iter().sum::<f64>() / base.len() as f64;
        let sd = (base.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / base.len() as f64).sqrt();
        let scale = sd.max(0.1 * features::level_unit(name));
        let deviation = column[points - tail..].iter().map(|v| (v - mean).abs() / scale).sum::<f64>() / tail as f64;
        out.push(Deviation { metric: (*name).to_owned(), deviation });
    }
    // Stable: equal deviations keep the order of DEFAULT_FEATURES.
    out.sort_by(|a, b| b.deviation.total_cmp(&a.deviation));
    out
}

/// The metrics the rule keeps from `ranked` (as [`deviations`] returns them).
pub fn select(ranked: &[Deviation]) -> Vec<String> {
    let mut chosen: Vec<String> = ranked
        .iter()
        .take_while(|d| d.deviation >= SELECT_DEVIATION)
        .take(MAX_METRICS)
        .map(|d| d.metric.clone())
        .collect();
    for d in ranked {
        if chosen.len() >= MIN_METRICS {
            break;
        }
        if !chosen.contains(&d.metric) && features::default_normalisation(&d.metric) == Normalisation::Level {
            chosen.push(d.metric.clone());
        }
    }
    chosen
}
