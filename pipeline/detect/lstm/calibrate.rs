//! From a window's raw forecast error to the seed's 0–100 anomaly score.
//!
//! In: the errors of held-out normal windows (to fit) and of any window (to score).
//! Out: a [`Calibration`] stored in the model's metadata, and scores 0..=100.
//! Guarantees: an error at or below the anchor (a high quantile of held-out normal
//! errors) scores at most 30, the seed's "no change" tier, so at least that quantile of
//! normal windows asks for nothing; above it the score grows with the logarithm of the
//! error, a fixed number of points per doubling, so that a failure's error, which
//! grows by orders of magnitude as it develops, walks through the tiers instead of
//! jumping from 30 to 100.

use serde::{Deserialize, Serialize};

/// How raw errors map to scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The error that scores exactly `anchor_score`: the `anchor_quantile` of the
    /// errors of held-out normal windows.
    pub anchor_error: f64,
    /// Which quantile of held-out normal errors the anchor is, 0..1.
    pub anchor_quantile: f64,
    /// Score at the anchor: the top of the seed's "nothing to do" tier.
    pub anchor_score: f64,
    /// Score added per doubling of the error above the anchor.
    pub points_per_doubling: f64,
}

/// The 99.5th percentile: half a percent of normal windows above 30 leaves room for
/// the held-out data to differ from the next day's and still keep 99% at or below.
pub const ANCHOR_QUANTILE: f64 = 0.995;

/// The seed's "no change" tier ends at 30.
pub const ANCHOR_SCORE: f64 = 30.0;

/// 20 points a doubling: 2× the anchor error scores 50, 4× 70 (the edge of the
/// "log the event" tier), 8× 90, 16× 100. Errors of the simulator's failures grow
/// from the anchor to hundreds of times it over their development.
pub const POINTS_PER_DOUBLING: f64 = 20.0;

impl Calibration {
    /// Fits the anchor to `errors` of held-out normal windows; `None` if there are none
    /// or none is finite and above zero.
    pub fn fit(errors: &[f64]) -> Option<Self> {
        let anchor = quantile(errors, ANCHOR_QUANTILE)?;
        // A model that forecasts the held-out data perfectly still needs a scale.
        let anchor = if anchor > 0.0 { anchor } else { errors.iter().copied().fold(0.0, f64::max).max(1e-9) };
        Some(Self {
            anchor_error: anchor,
            anchor_quantile: ANCHOR_QUANTILE,
            anchor_score: ANCHOR_SCORE,
            points_per_doubling: POINTS_PER_DOUBLING,
        })
    }

    /// Why the calibration cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(self.anchor_error.is_finite() && self.anchor_error > 0.0) {
            return Err(format!("calibration.anchor_error must be finite and above 0, got {}", self.anchor_error));
        }
        if !(0.0..=100.0).contains(&self.anchor_score) {
            return Err(format!("calibration.anchor_score must be from 0 to 100, got {}", self.anchor_score));
        }
        if !(self.points_per_doubling.is_finite() && self.points_per_doubling > 0.0) {
            return Err(format!(
                "calibration.points_per_doubling must be finite and above 0, got {}",
                self.points_per_doubling
            ));
        }
        Ok(())
    }

    /// The score of a raw error, 0..=100; `NaN` (no error could be taken) scores 0.
    pub fn score(&self, error: f64) -> u8 {
        if error.is_nan() || error <= 0.0 {
            return 0;
        }
        let ratio = error / self.anchor_error;
        let s = if ratio <= 1.0 {
            (self.anchor_score * ratio).floor()
        } else {
            // Just above the anchor is already the next tier.
            (self.anchor_score + self.points_per_doubling * ratio.log2()).ceil().max(self.anchor_score + 1.0)
        };
        s.clamp(0.0, 100.0) as u8
    }
}

/// The `q` quantile (nearest rank) of the finite values of `xs`.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_error() {
        let errors: Vec<f64> = (1..=1000).map(f64::from).collect();
        let c = Calibration::fit(&errors).expect("fits");
        assert_eq!(c.anchor_error, 995.0);
        assert_eq!(c.score(995.0), 30);
        assert_eq!(c.score(500.0), 15);
        assert_eq!(c.score(995.1), 31);
        assert_eq!(c.score(2.0 * 995.0), 50);
        assert_eq!(c.score(4.0 * 995.0), 70);
        assert_eq!(c.score(8.0 * 995.0), 90);
        assert_eq!(c.score(1e12), 100);
        assert_eq!(c.score(f64::NAN), 0);
        let at_most_30 = errors.iter().filter(|&&e| c.score(e) <= 30).count();
        assert_eq!(at_most_30, 995);
    }

    #[test]
    fn empty_or_non_finite_errors_do_not_fit() {
        assert_eq!(Calibration::fit(&[]), None);
        assert_eq!(Calibration::fit(&[f64::NAN, f64::INFINITY]), None);
    }
}
