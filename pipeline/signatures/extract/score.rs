//! Scores a signature against a window the way the detector does, and calibrates a
//! signature's threshold on windows of healthy instances.
//!
//! In: a signature and windows of raw feature values (time-major, one channel per
//! signature metric). Out: the confidence 0..1 the detector would give each window;
//! for calibration, the highest confidence on healthy windows and the threshold set a
//! margin above it. The procedure is the detector's (pipeline/detect): each channel of
//! the window and of the signature normalised by `features::normalise` with the
//! signature's mode, DTW with a Sakoe–Chiba band of [`RADIUS`], then
//! `detect::confidence::confidence`.

use crate::codec::{FailureSignature, Normalisation};
use crate::detect::confidence::confidence;
use crate::detect::dtw::{Dtw, DtwError, Series};
use crate::detect::matcher::normalised;

/// The detector's DTW band radius: a signature calibrated with another radius would
/// score differently live.
pub const RADIUS: usize = crate::detect::DTW_RADIUS;
/// Lowest and highest threshold calibration sets: below 0.5 a signature alerts on
/// windows that are as far from it as from anything; above 0.95 it needs a near copy.
pub const THRESHOLD_FLOOR: f64 = 0.5;
pub const THRESHOLD_CEILING: f64 = 0.95;
/// Highest healthy confidence at which a signature still counts as separating.
pub const SEPARATES_BELOW: f64 = 0.9;

/// A signature prepared for scoring many windows.
#[derive(Debug, Clone)]
pub struct Scorer {
    dtw: Dtw,
    signature: Series,
    metrics: Vec<String>,
    modes: Vec<Normalisation>,
    points: usize,
}

impl Scorer {
    /// Fails only for a signature that [`crate::signatures::validate`] would refuse.
    pub fn new(signature: &FailureSignature) -> Result<Self, DtwError> {
        let points = signature.series.first().map_or(0, Vec::len);
        Ok(Self {
            dtw: Dtw::new(RADIUS),
            signature: normalised(signature.series.clone(), &signature.metrics, &signature.normalisation)?,
            metrics: signature.metrics.clone(),
            modes: signature.normalisation.clone(),
            points,
        })
    }

    /// Points of the signature.
    pub fn points(&self) -> usize {
        self.points
    }

    /// Confidence 0..1 of the signature on the last `points` points of `window`
    /// (time-major, one value per signature metric and point, raw as gridded); `None`
    /// when the window is shorter or has a missing value there, as the detector then
    /// does not compare.
    pub fn confidence(&mut self, window: &[f64]) -> Option<f64> {
        let n = self.metrics.len();
        let len = window.len() / n;
        if window.len() % n != 0 || len < self.points {
            return None;
        }
        let first = len - self.points;
        let mut channels = vec![Vec::with_capacity(self.points); n];
        for t in first..len {
            for (c, channel) in channels.iter_mut().enumerate() {
                let v = window[t * n + c];
                if !v.is_finite() {
                    return None;
                }
                channel.push(v);
            }
        }
        let query = normalised(channels, &self.metrics, &self.modes).ok()?;
        let distance = self.dtw.distance(&query, &self.signature);
        Some(confidence(distance, self.points, n))
    }
}

/// The confidence of `signature` on `window` (see [`Scorer::confidence`]).
pub fn confidence_against(signature: &FailureSignature, window: &[f64]) -> Option<f64> {
    Scorer::new(signature).ok()?.confidence(window)
}

/// How a threshold was set from healthy windows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Calibration {
    /// Healthy windows scored, and the instances they came from.
    pub windows: usize,
    pub instances: usize,
    /// The highest confidence of the signature on any of them.
    pub max_healthy_confidence: f64,
    /// The instance and window end (epoch ms) of that highest confidence.
    pub max_healthy_instance: String,
    pub max_healthy_end_ms: i64,
    /// Threshold minus the highest healthy confidence: how far above every healthy
    /// window an alert needs to be (negative: some healthy window alerts).
    pub margin: f64,
    /// Whether the signature tells the failure from healthy windows at all
    /// (highest healthy confidence at most [`SEPARATES_BELOW`]).
    pub separates: bool,
}

/// The threshold calibration sets: the highest healthy confidence plus `margin`,
/// within [`THRESHOLD_FLOOR`]..[`THRESHOLD_CEILING`].
pub fn calibrated_threshold(max_healthy: f64, margin: f64) -> f64 {
    (max_healthy + margin).clamp(THRESHOLD_FLOOR, THRESHOLD_CEILING)
}
