//! The simple detectors that calibrate the harness: NAB's Windowed Gaussian, a per-column
//! z-score, uniform random scores and NAB's constant null detector.
//!
//! In: rows in time order. Out: one score per row in `0..=1`. Guarantees: deterministic
//! for a given seed; the Windowed Gaussian follows NAB's published detector
//! (`nab/detectors/gaussian/windowedGaussian_detector.py`) step for step on one column,
//! so its NAB score can be compared with the published one.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::detector::{DetectorError, SeriesDetector};
use super::series::Series;

/// NAB's tuned window: 6400 values, moved on by 100 at a time.
const GAUSSIAN_WINDOW: usize = 6400;
const GAUSSIAN_STEP: usize = 100;
/// NAB's stand-in for a zero deviation, so a flat window still yields a finite z.
const MIN_STD: f64 = 0.000_001;

/// Scores each value by how far into the tail of a normal distribution, fitted to a
/// sliding window of the values before it, it lies: `1 - Q(|z|)`, so 0.5 at the mean
/// and 1 far out. Learns online only ([`fit`](SeriesDetector::fit) is a no-op, as in
/// NAB, where it sees the probationary rows while scoring them). With several columns
/// each has its own window and the row scores its most anomalous column.
pub struct WindowedGaussian {
    columns: Vec<GaussianWindow>,
}

struct GaussianWindow {
    window: std::collections::VecDeque<f64>,
    pending: Vec<f64>,
    mean: f64,
    std: f64,
    // Running sums while the window fills, so filling stays linear.
    welford_m2: f64,
}

impl WindowedGaussian {
    pub fn new(width: usize) -> Self {
        Self { columns: (0..width).map(|_| GaussianWindow::new()).collect() }
    }
}

impl GaussianWindow {
    fn new() -> Self {
        Self {
            window: std::collections::VecDeque::with_capacity(GAUSSIAN_WINDOW),
            pending: Vec::with_capacity(GAUSSIAN_STEP),
            mean: 0.0,
            std: 1.0,
            welford_m2: 0.0,
        }
    }

    fn next(&mut self, x: f64) -> f64 {
        let score = if self.window.is_empty() { 0.0 } else { 1.0 - tail_probability(x, self.mean, self.std) };
        if self.window.len() < GAUSSIAN_WINDOW {
            self.window.push_back(x);
            let n = self.window.len() as f64;
            let delta = x - self.mean;
            self.mean += delta / n;
            self.welford_m2 += delta * (x - self.mean);
            self.std = floor_std((self.welford_m2 / n).sqrt());
        } else {
            self.pending.push(x);
            if self.pending.len() == GAUSSIAN_STEP {
                self.window.drain(..GAUSSIAN_STEP);
                self.window.extend(self.pending.drain(..));
                let n = self.window.len() as f64;
                self.mean = self.window.iter().sum::<f64>() / n;
                let var = self.window.iter().map(|v| (v - self.mean).powi(2)).sum::<f64>() / n;
                self.std = floor_std(var.sqrt());
            }
        }
        score
    }
}

fn floor_std(std: f64) -> f64 {
    if std == 0.0 {
        MIN_STD
    } else {
        std
    }
}

/// Probability that a normal(mean, std) draw lies further from the mean than `x`, on
/// `x`'s side: the Q-function of the standardised distance.
fn tail_probability(x: f64, mean: f64, std: f64) -> f64 {
    // Mirror below the mean exactly as NAB does, so scores agree to the last bit.
    let x = if x < mean { 2.0 * mean - x } else { x };
    let z = (x - mean) / std;
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

impl SeriesDetector for WindowedGaussian {
    fn name(&self) -> &str {
        "windowed-gaussian"
    }

    fn fit(&mut self, _train: &Series) -> Result<(), DetectorError> {
        Ok(())
    }

    fn score(&mut self, series: &Series) -> Result<Vec<Option<f64>>, DetectorError> {
        check_width("windowed-gaussian", self.columns.len(), series)?;
        Ok(series
            .rows()
            .map(|row| Some(row.iter().zip(&mut self.columns).map(|(&x, c)| c.next(x)).fold(0.0, f64::max)))
            .collect())
    }
}

/// Per-column mean and deviation of the training rows; a row scores `m / (1 + m)` where
/// `m` is its largest `|z|`, a monotone squash into `0..1` that keeps large deviations
/// apart (a normal CDF would round them all to 1).
pub struct ZScore {
    width: usize,
    fitted: Option<Vec<(f64, f64)>>,
}

impl ZScore {
    pub fn new(width: usize) -> Self {
        Self { width, fitted: None }
    }
}

impl SeriesDetector for ZScore {
    fn name(&self) -> &str {
        "zscore"
    }

    fn fit(&mut self, train: &Series) -> Result<(), DetectorError> {
        check_width("zscore", self.width, train)?;
        if train.len() < 2 {
            return Err(DetectorError::Input(format!(
                "zscore needs at least 2 training rows, {} has {}",
                train.name,
                train.len()
            )));
        }
        let n = train.len() as f64;
        let stats = (0..self.width)
            .map(|j| {
                let mean = train.rows().map(|r| r[j]).sum::<f64>() / n;
                let var = train.rows().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n;
                (mean, floor_std(var.sqrt()))
            })
            .collect();
        self.fitted = Some(stats);
        Ok(())
    }

    fn score(&mut self, series: &Series) -> Result<Vec<Option<f64>>, DetectorError> {
        check_width("zscore", self.width, series)?;
        let stats = self.fitted.as_ref().ok_or_else(|| DetectorError::Input("zscore scored before fit".into()))?;
        Ok(series
            .rows()
            .map(|row| {
                let m = row.iter().zip(stats).map(|(x, (mean, std))| ((x - mean) / std).abs()).fold(0.0, f64::max);
                Some(m / (1.0 + m))
            })
            .collect())
    }
}

/// Uniform scores in `0..1`, from a seeded generator restarted for every series (NAB's
/// random detector reseeds per file too).
pub struct RandomDetector {
    rng: ChaCha8Rng,
}

impl RandomDetector {
    pub fn new(seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed) }
    }
}

impl SeriesDetector for RandomDetector {
    fn name(&self) -> &str {
        "random"
    }

    fn fit(&mut self, _train: &Series) -> Result<(), DetectorError> {
        Ok(())
    }

    fn score(&mut self, series: &Series) -> Result<Vec<Option<f64>>, DetectorError> {
        Ok((0..series.len()).map(|_| Some(self.rng.random::<f64>())).collect())
    }
}

/// The same score for every row.
pub struct ConstantDetector {
    value: f64,
}

impl ConstantDetector {
    pub fn new(value: f64) -> Self {
        Self { value }
    }
}

impl SeriesDetector for ConstantDetector {
    fn name(&self) -> &str {
        "constant"
    }

    fn fit(&mut self, _train: &Series) -> Result<(), DetectorError> {
        Ok(())
    }

    fn score(&mut self, series: &Series) -> Result<Vec<Option<f64>>, DetectorError> {
        Ok(vec![Some(self.value); series.len()])
    }
}

fn check_width(detector: &str, width: usize, series: &Series) -> Result<(), DetectorError> {
    if series.width() == width {
        Ok(())
    } else {
        Err(DetectorError::Input(format!(
            "{detector} was built for {width} columns, {} has {}",
            series.name,
            series.width()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Series {
        Series::new("t".into(), vec!["v".into()], (0..values.len() as i64).collect(), values.to_vec())
            .expect("valid series")
    }

    #[test]
    fn gaussian_scores_against_the_values_before_each_row() {
        let mut d = WindowedGaussian::new(1);
        let s = d.score(&series(&[1.0, 3.0, 2.0, 4.0])).expect("scores");
        let s: Vec<f64> = s.into_iter().map(|v| v.expect("always scored")).collect();
        // Row 0: nothing seen yet. Row 1: window [1], std 0 -> 1e-6, far in the tail.
        assert_eq!(s[0], 0.0);
        assert_eq!(s[1], 1.0);
        // Row 2: window [1, 3], mean 2, std 1; 2 is the mean itself.
        assert!((s[2] - 0.5).abs() < 1e-12, "{}", s[2]);
        // Row 3: window [1, 3, 2], mean 2, population std sqrt(2/3); z = 2 / 0.8165.
        let z: f64 = 2.0 / (2.0f64 / 3.0).sqrt();
        let expected = 1.0 - 0.5 * libm::erfc(z / std::f64::consts::SQRT_2);
        assert!((s[3] - expected).abs() < 1e-12, "{} vs {expected}", s[3]);
        assert!(s[3] > 0.99 && s[3] < 1.0);
    }

    #[test]
    fn gaussian_window_slides_by_whole_steps() {
        let mut c = GaussianWindow::new();
        for _ in 0..GAUSSIAN_WINDOW {
            c.next(0.0);
        }
        // 99 pending values do not move the window; the 100th does.
        for _ in 0..GAUSSIAN_STEP - 1 {
            c.next(10.0);
        }
        assert_eq!(c.mean, 0.0);
        c.next(10.0);
        let expected = 10.0 * GAUSSIAN_STEP as f64 / GAUSSIAN_WINDOW as f64;
        assert!((c.mean - expected).abs() < 1e-12, "{} vs {expected}", c.mean);
    }

    #[test]
    fn zscore_uses_training_statistics_and_the_worst_column() {
        let train = Series::new("t".into(), vec!["a".into(), "b".into()], vec![0, 1], vec![0.0, 10.0, 2.0, 10.0])
            .expect("valid series");
        let mut d = ZScore::new(2);
        d.fit(&train).expect("fit");
        let test = Series::new("t".into(), vec!["a".into(), "b".into()], vec![2, 3], vec![1.0, 10.0, 4.0, 10.0])
            .expect("valid");
        let s = d.score(&test).expect("scores");
        // Column a: mean 1, std 1. Row 0 at the mean, row 1 three deviations out.
        assert_eq!(s, vec![Some(0.0), Some(0.75)]);
        assert!(ZScore::new(3).fit(&train).is_err(), "width mismatch must be refused");
    }

    #[test]
    fn random_repeats_for_a_seed_and_differs_between_seeds() {
        let s = series(&[0.0; 50]);
        let a = RandomDetector::new(42).score(&s).expect("scores");
        assert_eq!(a, RandomDetector::new(42).score(&s).expect("scores"));
        assert_ne!(a, RandomDetector::new(43).score(&s).expect("scores"));
        assert!(a.iter().all(|v| v.is_some_and(|v| (0.0..1.0).contains(&v))));
    }
}
