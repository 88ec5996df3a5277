//! The project's LSTM anomaly model ([`crate::detect::lstm`]) as a benchmark detector.
//!
//! In: a training [`Series`], cut into sliding windows by the trainer's own CSV
//! windowing ([`sources::csv`], over a [`Table`] built from the rows), and a small
//! forecaster trained on them by [`train::fit`]; then the rows to score, in order. Out:
//! per row the anomaly likelihood of the forecast error of the window ending at that
//! row, or `None` while the window fills. Guarantees: deterministic for a seed; a score
//! uses only the row it is for and rows before it.
//!
//! Why a likelihood and not the calibrated score: benchmark series differ in how well
//! a 500-row model forecasts them, so one threshold over raw errors (NAB sweeps a single
//! threshold over all files) would fire all along on hard files and never on easy ones.
//! As NAB's HTM detector does with its prediction error, each error is judged against
//! the errors of the same series so far: the mean of the last few log-errors is compared
//! with the long-run distribution of that mean, and the normal CDF of the distance is
//! the score.

use std::collections::VecDeque;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::detector::{DetectorError, SeriesDetector};
use super::series::Series;
use crate::detect::lstm::{AnomalyModel, Config};
use crate::train::{self, sources, sources::Table, Settings};
use crate::window::WindowConfig;

/// Grid steps per window: two hours of NAB's usual 5-minute rows, enough context for
/// the forecaster, short enough that a 15% probationary prefix yields hundreds of windows.
const POINTS: usize = 24;
/// Forecasts a window's error is taken over: the last few, so that the error follows
/// the newest rows rather than averaging a change away.
const SCORE_STEPS: usize = 4;
const EPOCHS: usize = 10;
const BATCH_SIZE: usize = 32;
/// Training rows beyond these (SMD's train splits hold ~25 000) add time, not skill:
/// the most recent ones are kept.
const MAX_TRAIN_ROWS: usize = 3_000;
/// Log-errors averaged into the short-term error.
const SHORT: usize = 5;
/// Short-term errors the long-run distribution is taken over.
const LONG: usize = 2_000;
/// Short-term errors needed before the distribution is trusted; until then, 0.5.
const MIN_HISTORY: usize = 50;

/// The LSTM forecaster with an online likelihood of its error.
pub struct LstmDetector {
    width: usize,
    seed: u64,
    fitted: Option<Fitted>,
    recent: VecDeque<f64>,
    history: VecDeque<f64>,
    sum: f64,
    sum_sq: f64,
}

struct Fitted {
    /// `None`: too few windows to train on; every score is 0.5.
    model: Option<AnomalyModel>,
    window: WindowConfig,
}

impl LstmDetector {
    pub fn new(width: usize, seed: u64) -> Self {
        Self { width, seed, fitted: None, recent: VecDeque::new(), history: VecDeque::new(), sum: 0.0, sum_sq: 0.0 }
    }

    /// The likelihood of `error` given the errors seen before it.
    fn likelihood(&mut self, error: f64) -> f64 {
        self.recent.push_back((error + 1e-6).ln());
        if self.recent.len() > SHORT {
            self.recent.pop_front();
        }
        let short = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        let n = self.history.len();
        let out = if n < MIN_HISTORY {
            0.5
        } else {
            let mean = self.sum / n as f64;
            let std = (self.sum_sq / n as f64 - mean * mean).max(0.0).sqrt().max(1e-3);
            1.0 - 0.5 * libm::erfc((short - mean) / std / std::f64::consts::SQRT_2)
        };
        self.history.push_back(short);
        self.sum += short;
        self.sum_sq += short * short;
        if self.history.len() > LONG {
            if let Some(old) = self.history.pop_front() {
                self.sum -= old;
                self.sum_sq -= old * old;
            }
        }
        out
    }
}

/// Rows of `series` as the trainer's CSV table (epoch ms), so that windows are cut by
/// its code.
fn table(series: &Series) -> Table {
    Table {
        path: PathBuf::from(&series.name),
        metrics: series.columns.clone(),
        times: series.timestamps.iter().map(|t| t * 1000).collect(),
        stamps: series.timestamps.iter().map(i64::to_string).collect(),
        values: series.rows().flatten().copied().collect(),
    }
}

/// The most common distance between consecutive rows, ms: the grid step.
fn step_ms(series: &Series) -> Result<i64, DetectorError> {
    let mut gaps: Vec<i64> = series.timestamps.windows(2).map(|w| w[1] - w[0]).filter(|&g| g > 0).collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2)
        .map(|g| g * 1000)
        .ok_or_else(|| DetectorError::Input(format!("{}: fewer than two distinct timestamps", series.name)))
}

impl SeriesDetector for LstmDetector {
    fn name(&self) -> &str {
        "lstm"
    }

    fn fit(&mut self, train: &Series) -> Result<(), DetectorError> {
        if train.width() != self.width {
            return Err(DetectorError::Input(format!(
                "{}: {} columns, the detector was built for {}",
                train.name,
                train.width(),
                self.width
            )));
        }
        let train = train.slice(train.len().saturating_sub(MAX_TRAIN_ROWS)..train.len());
        let step = step_ms(&train)?;
        let window = WindowConfig {
            features: train.columns.clone(),
            step_ms: step,
            points: POINTS,
            hop_ms: step,
            ..WindowConfig::default()
        };
        let data = sources::csv(&table(&train), &train.name, &window).map_err(|e| DetectorError::Model(e.into()))?;
        let settings = Settings {
            model: Config { input: self.width, hidden: 32, layers: 1, score_steps: SCORE_STEPS },
            epochs: EPOCHS,
            batch_size: BATCH_SIZE,
            seed: self.seed,
            // The likelihood below judges the forecast error against the series' own
            // history; a level term, measured only on the simulator, is left out of it.
            level_weight: 0.0,
            ..Settings::default()
        };
        self.fitted = match train::fit(&data, &settings, &CancellationToken::new()) {
            Ok(model) => Some(Fitted { model: Some(model), window }),
            // A series too gappy to cut enough whole windows from its probationary part
            // (NAB's realTraffic/TravelTime_451) gets no model: the detector states no
            // opinion on it (0.5 throughout) rather than ending the benchmark run.
            Err(e @ train::TrainError::TooFewWindows { .. }) => {
                tracing::warn!(series = %train.name, error = %e, "no model for this series; scoring 0.5 throughout");
                Some(Fitted { model: None, window })
            }
            Err(e) => return Err(DetectorError::Model(e.into())),
        };
        Ok(())
    }

    fn score(&mut self, series: &Series) -> Result<Vec<Option<f64>>, DetectorError> {
        let Some(fitted) = &self.fitted else {
            return Err(DetectorError::Input(format!("{}: scored before fit", series.name)));
        };
        let Some(model) = &fitted.model else {
            return Ok(vec![Some(0.5); series.len()]);
        };
        let table = table(series);
        let (times, values) = table.rows_for(&table.metrics);
        let w = &fitted.window;
        // The window ending at a row holds that row: grid cells end before `end_ms`.
        let windows: Vec<Option<Vec<f64>>> = series
            .timestamps
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (i + 1 >= w.points)
                    .then(|| sources::window_at(&times, &values, self.width, t * 1000 + w.step_ms, w))
                    .flatten()
            })
            .collect();
        let refs: Vec<&[f64]> = windows.iter().flatten().map(Vec::as_slice).collect();
        let mut scored = model.score(&refs).into_iter();
        let errors: Vec<Option<f64>> =
            windows.iter().map(|w| w.as_ref().and_then(|_| scored.next().flatten().map(|s| s.error))).collect();
        Ok(errors.into_iter().map(|e| e.map(|e| self.likelihood(e))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A noisy daily-ish cycle with a level shift at `shift`.
    fn series(rows: usize, shift: usize) -> Series {
        let mut state = 7u64;
        let values = (0..rows)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let noise = ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.2;
                let level = if i >= shift { 4.0 } else { 0.0 };
                (i as f64 * std::f64::consts::TAU / 48.0).sin() + noise + level
            })
            .collect();
        let timestamps = (0..rows as i64).map(|i| 1_400_000_000 + 300 * i).collect();
        Series::new("shift".into(), vec!["value".into()], timestamps, values).expect("valid series")
    }

    #[test]
    fn flags_an_injected_level_shift() {
        let (rows, shift) = (1_500, 1_200);
        let s = series(rows, shift);
        let mut d = LstmDetector::new(1, 1);
        d.fit(&s.slice(0..600)).expect("fit on the normal prefix");
        let scores = d.score(&s).expect("score");
        assert_eq!(scores.len(), rows);
        assert!(scores[..POINTS - 1].iter().all(Option::is_none), "scores before the first full window");
        let before = scores[600..shift].iter().flatten().fold(0f64, |a, &b| a.max(b));
        let at = scores[shift..shift + 3].iter().flatten().fold(0f64, |a, &b| a.max(b));
        assert!(at >= before, "score at the shift {at} is below the highest before it {before}");
        assert!(at > 0.99, "score at the shift {at} does not flag it");
    }

    #[test]
    fn a_series_too_short_to_train_on_scores_no_opinion_instead_of_failing() {
        let s = series(40, 40);
        let mut d = LstmDetector::new(1, 1);
        d.fit(&s).expect("a short series is not an error");
        assert_eq!(d.score(&s).expect("score"), vec![Some(0.5); 40]);
    }

    #[test]
    fn refuses_scoring_before_fit_and_a_wrong_width() {
        let s = series(300, 300);
        assert!(LstmDetector::new(1, 1).score(&s).is_err());
        assert!(LstmDetector::new(2, 1).fit(&s).is_err());
    }
}
