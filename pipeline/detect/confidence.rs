//! From a DTW distance to a confidence 0..1 that a window is developing the failure a
//! signature recorded.
//!
//! The squared DTW distance sums the squared differences of every matched cell, so it
//! grows with the length and the channels of the series; divided by both it is the
//! mean squared difference per cell, which is what "close" means across signatures of
//! any size. Channels are normalised first (`window::features::normalise`): one unit
//! of a `LEVEL` channel is a typical size of the quantity, one unit of a `SHAPE`
//! channel a standard deviation.

/// Mean squared difference per cell at which the confidence is 1/e: a tenth of a unit
/// on every channel and point gives 0.61, a third of a unit 0.004.
pub const SCALE: f64 = 0.02;

/// Confidence 0..1 of a match at DTW `distance` between series of `points` points and
/// `channels` channels; 1 for identical series, falling towards 0 as they part.
pub fn confidence(distance: f64, points: usize, channels: usize) -> f64 {
    if !distance.is_finite() {
        return 0.0;
    }
    let cells = (points.max(1) * channels.max(1)) as f64;
    (-(distance * distance) / cells / SCALE).exp()
}

/// The DTW distance at which [`confidence`] equals `c` (for thresholds and pruning).
pub fn distance_at(c: f64, points: usize, channels: usize) -> f64 {
    let cells = (points.max(1) * channels.max(1)) as f64;
    (-c.clamp(f64::MIN_POSITIVE, 1.0).ln() * SCALE * cells).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_falls_with_distance_and_inverts() {
        assert_eq!(confidence(0.0, 64, 4), 1.0);
        assert!(confidence(1.0, 64, 4) > confidence(2.0, 64, 4));
        assert_eq!(confidence(f64::INFINITY, 64, 4), 0.0);
        for c in [0.1, 0.5, 0.9] {
            assert!((confidence(distance_at(c, 64, 4), 64, 4) - c).abs() < 1e-12);
        }
        // A tenth of a unit everywhere.
        let d = (64.0 * 4.0 * 0.01f64).sqrt();
        assert!((confidence(d, 64, 4) - (-0.5f64).exp()).abs() < 1e-12);
    }
}
