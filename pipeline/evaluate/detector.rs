//! The interface the benchmark harness drives, and the registry of detectors it knows
//! by name.
//!
//! In: a training [`Series`] (NAB: a file's probationary prefix; SMD: a machine's train
//! split), then the series to score, in time order. Out: one anomaly score per row,
//! in `0..=1`, or `None` while the detector cannot judge yet (a window filling).
//! Guarantees, checked by the harness for every detector ([`check_scores`]): exactly one
//! score per row, each finite and within `0..=1`.
//!
//! A new detector is one struct implementing [`SeriesDetector`] plus one line in
//! [`DETECTORS`]; `augur evaluate --detector <name>` then runs it on both benchmarks.

use super::baselines::{ConstantDetector, RandomDetector, WindowedGaussian, ZScore};
use super::lstm::LstmDetector;
use super::series::Series;

/// A detector under evaluation. The harness creates a fresh one per series (NAB file,
/// SMD machine), calls [`fit`](SeriesDetector::fit) once, then
/// [`score`](SeriesDetector::score) on rows that follow in time; a detector that keeps
/// state between rows (a recurrent model, a sliding window) may rely on that order.
/// `Send` so that series are scored in parallel, one detector per thread.
pub trait SeriesDetector: Send {
    /// The name it is registered under.
    fn name(&self) -> &str;
    /// Learns from rows the benchmark allows it to learn from.
    fn fit(&mut self, train: &Series) -> Result<(), DetectorError>;
    /// Scores every row of `series` in order: `0` normal .. `1` certainly anomalous,
    /// `None` where it cannot judge yet.
    fn score(&mut self, series: &Series) -> Result<Vec<Option<f64>>, DetectorError>;
}

/// Why a detector could not fit or score.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// The series does not suit the detector (too few rows, wrong width).
    #[error("{0}")]
    Input(String),
    /// Anything the model itself reports (tensor shapes, weights, numerical failure).
    #[error(transparent)]
    Model(#[from] Box<dyn std::error::Error + Send + Sync>),
}

/// What a detector is built from: the shape of the data it will see and the run's seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorSpec {
    /// Values per row (1 for NAB, 38 for SMD).
    pub width: usize,
    /// Seed for any random draw, so that runs repeat.
    pub seed: u64,
}

/// One entry of the registry.
pub struct Registration {
    /// The `--detector` name.
    pub name: &'static str,
    /// One line for `--help` and reports.
    pub about: &'static str,
    /// Builds a fresh, untrained detector.
    pub build: fn(DetectorSpec) -> Box<dyn SeriesDetector>,
}

/// Every detector `augur evaluate` can run. NAB's null detector (`constant`) is what the
/// NAB score is normalised against.
pub const DETECTORS: &[Registration] = &[
    Registration {
        name: "windowed-gaussian",
        about: "NAB's Windowed Gaussian: tail probability under the last 6400 values, refreshed every 100",
        build: |spec| Box::new(WindowedGaussian::new(spec.width)),
    },
    Registration {
        name: "lstm",
        about: "the project's LSTM forecaster (24 points, hidden 32), anomaly likelihood of its error",
        build: |spec| Box::new(LstmDetector::new(spec.width, spec.seed)),
    },
    Registration {
        name: "zscore",
        about: "largest per-column |z| against the training rows' mean and deviation, squashed to 0..1",
        build: |spec| Box::new(ZScore::new(spec.width)),
    },
    Registration {
        name: "random",
        about: "uniform random scores (seeded), the floor any detector must beat",
        build: |spec| Box::new(RandomDetector::new(spec.seed)),
    },
    Registration {
        name: "constant",
        about: "NAB's null detector: 0.5 everywhere; scores 0 on NAB by construction",
        build: |_| Box::new(ConstantDetector::new(0.5)),
    },
];

/// A `--detector` name that is not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown detector {name:?}; known: {known}")]
pub struct UnknownDetector {
    pub name: String,
    /// The registered names, comma-separated.
    pub known: String,
}

/// A detector broke the contract of [`SeriesDetector::score`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContractViolation {
    #[error("detector {detector} returned {got} scores for the {rows} rows of {series}")]
    Length { detector: String, series: String, got: usize, rows: usize },
    #[error("detector {detector} scored row {row} of {series} as {value}; scores must lie in 0..=1")]
    Range { detector: String, series: String, row: usize, value: f64 },
}

/// The registration called `name`, or an error listing the names there are.
pub fn find(name: &str) -> Result<&'static Registration, UnknownDetector> {
    DETECTORS.iter().find(|r| r.name == name).ok_or_else(|| UnknownDetector {
        name: name.to_owned(),
        known: DETECTORS.iter().map(|r| r.name).collect::<Vec<_>>().join(", "),
    })
}

/// Checks the contract of [`SeriesDetector::score`] on one result.
pub fn check_scores(detector: &str, series: &Series, scores: &[Option<f64>]) -> Result<(), ContractViolation> {
    if scores.len() != series.len() {
        return Err(ContractViolation::Length {
            detector: detector.to_owned(),
            series: series.name.clone(),
            got: scores.len(),
            rows: series.len(),
        });
    }
    if let Some((row, value)) =
        scores.iter().enumerate().find_map(|(i, s)| s.filter(|v| !(0.0..=1.0).contains(v)).map(|v| (i, v)))
    {
        return Err(ContractViolation::Range {
            detector: detector.to_owned(),
            series: series.name.clone(),
            row,
            value,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_unique_and_findable() {
        for r in DETECTORS {
            assert_eq!(find(r.name).map(|f| f.name), Ok(r.name));
            assert_eq!(DETECTORS.iter().filter(|o| o.name == r.name).count(), 1, "{} registered twice", r.name);
            let built = (r.build)(DetectorSpec { width: 2, seed: 1 });
            assert_eq!(built.name(), r.name);
        }
        let err = find("lstm-typo").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("windowed-gaussian"), "{err}");
    }

    #[test]
    fn contract_check_refuses_wrong_length_and_out_of_range() {
        let s = Series::new("s".into(), vec!["v".into()], vec![0, 1], vec![0.0, 1.0]).expect("valid series");
        assert!(check_scores("d", &s, &[Some(0.2), None]).is_ok());
        assert!(check_scores("d", &s, &[Some(0.2)]).is_err());
        assert!(check_scores("d", &s, &[Some(0.2), Some(1.5)]).is_err());
        assert!(check_scores("d", &s, &[Some(f64::NAN), None]).is_err());
    }
}
