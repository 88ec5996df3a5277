//! The Server Machine Dataset: machine loading and the train-then-test protocol around a
//! [`SeriesDetector`](super::detector::SeriesDetector).
//!
//! In: one folder per machine with `train.csv` and `test.csv` (`timestamp` then the same
//! metric columns) and `test_label.csv` (`timestamp,label`, 1 = anomalous), and a
//! registered detector. Out: an [`SmdReport`] with, per machine and pooled over machines,
//! the [`metrics`] at two thresholds: one chosen without test labels (a quantile of the
//! detector's scores on the train split; rows strictly above it are flagged) and the
//! oracle threshold with the best point-wise F1 on the test labels (rows at or above it
//! are flagged), labelled as such. Protocol: a fresh detector per machine is fitted on
//! train, then scores train and then test, in time order.

pub mod metrics;

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::detector::{self, DetectorSpec, Registration};
use super::series::{self, LoadError, Series};
use super::{parallel_map, EvaluateError};
use metrics::{Counts, Metrics};

/// One machine's splits and test labels.
#[derive(Debug, Clone)]
pub struct SmdMachine {
    pub name: String,
    pub train: Series,
    pub test: Series,
    /// One per test row.
    pub labels: Vec<bool>,
}

impl SmdMachine {
    /// Loads `dir/{train,test,test_label}.csv`, checking that the splits share their
    /// columns and that there is one 0/1 label per test row, on the same timestamp.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        let train = series::read_csv(&dir.join("train.csv"), format!("{name}/train"), series::parse_epoch_seconds)?;
        let test_path = dir.join("test.csv");
        let test = series::read_csv(&test_path, format!("{name}/test"), series::parse_epoch_seconds)?;
        if test.columns != train.columns {
            return Err(LoadError::Content { path: test_path, reason: "its columns differ from train.csv's".into() });
        }
        let label_path = dir.join("test_label.csv");
        let label_series = series::read_csv(&label_path, format!("{name}/labels"), series::parse_epoch_seconds)?;
        let content = |reason: String| LoadError::Content { path: label_path.clone(), reason };
        if label_series.columns != ["label"] {
            return Err(content(format!("expected the columns timestamp,label; found {:?}", label_series.columns)));
        }
        if label_series.timestamps != test.timestamps {
            return Err(content(format!(
                "its {} timestamps are not those of the {} rows of test.csv",
                label_series.len(),
                test.len()
            )));
        }
        let labels = label_series
            .rows()
            .enumerate()
            .map(|(i, row)| match row[0] {
                0.0 => Ok(false),
                1.0 => Ok(true),
                v => Err(content(format!("line {}: label {v} is neither 0 nor 1", i + 2))),
            })
            .collect::<Result<Vec<bool>, LoadError>>()?;
        Ok(Self { name, train, test, labels })
    }
}

/// Loads every machine folder (one holding `test_label.csv`) under `dir`, in name order,
/// or only those named in `only` when it is not empty.
pub fn load(dir: &Path, only: &[String]) -> Result<Vec<SmdMachine>, LoadError> {
    let io = |source| LoadError::Io { path: dir.to_owned(), source };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()).map_err(io))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p.join("test_label.csv").is_file())
        .filter(|p| only.is_empty() || p.file_name().is_some_and(|n| only.iter().any(|o| n == o.as_str())))
        .collect();
    dirs.sort();
    if dirs.is_empty() || (!only.is_empty() && dirs.len() != only.len()) {
        return Err(LoadError::Content {
            path: dir.to_owned(),
            reason: if only.is_empty() {
                "no machine folders (with test_label.csv) here".into()
            } else {
                format!("not every one of {only:?} is a machine folder (with test_label.csv) here")
            },
        });
    }
    dirs.iter().map(|d| SmdMachine::load(d)).collect()
}

/// A detector's SMD results.
#[derive(Debug, Clone, Serialize)]
pub struct SmdReport {
    pub detector: String,
    pub data: PathBuf,
    pub seed: u64,
    /// Quantile of the train scores used as the label-free threshold.
    pub train_quantile: f64,
    pub machines: Vec<MachineResult>,
    /// Counts summed over machines (each at its own thresholds), metrics from the sums.
    pub pooled: Pooled,
}

/// One machine's result at both thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct MachineResult {
    pub machine: String,
    pub train_rows: usize,
    pub test_rows: usize,
    /// Label-free: flag test rows scoring above this quantile of the train scores.
    pub train_threshold: Option<f64>,
    pub at_train_threshold: Metrics,
    /// Oracle: best point-wise F1 on the test labels; flag rows scoring at least this.
    pub oracle_threshold: Option<f64>,
    pub at_oracle_threshold: Metrics,
}

/// Metrics over all machines.
#[derive(Debug, Clone, Serialize)]
pub struct Pooled {
    pub at_train_threshold: Metrics,
    pub at_oracle_threshold: Metrics,
}

/// Runs `registration`'s detector on every machine (up to `threads` at once) and scores it.
pub fn evaluate(
    machines: &[SmdMachine],
    data: &Path,
    registration: &Registration,
    seed: u64,
    train_quantile: f64,
    threads: usize,
) -> Result<SmdReport, EvaluateError> {
    let results = parallel_map(machines, threads, |m| evaluate_machine(m, registration, seed, train_quantile))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let (mut train_sum, mut oracle_sum) = (Counts::default(), Counts::default());
    for r in &results {
        train_sum = train_sum + r.at_train_threshold.counts;
        oracle_sum = oracle_sum + r.at_oracle_threshold.counts;
    }
    Ok(SmdReport {
        detector: registration.name.to_owned(),
        data: data.to_owned(),
        seed,
        train_quantile,
        machines: results,
        pooled: Pooled { at_train_threshold: train_sum.into(), at_oracle_threshold: oracle_sum.into() },
    })
}

fn evaluate_machine(
    machine: &SmdMachine,
    registration: &Registration,
    seed: u64,
    train_quantile: f64,
) -> Result<MachineResult, EvaluateError> {
    let mut detector = (registration.build)(DetectorSpec { width: machine.train.width(), seed });
    let failed = |source| EvaluateError::Detector {
        detector: registration.name.to_owned(),
        series: machine.name.clone(),
        source,
    };
    detector.fit(&machine.train).map_err(failed)?;
    let train_scores = detector.score(&machine.train).map_err(failed)?;
    detector::check_scores(registration.name, &machine.train, &train_scores)?;
    let test_scores = detector.score(&machine.test).map_err(failed)?;
    detector::check_scores(registration.name, &machine.test, &test_scores)?;

    let flags = |keep: &dyn Fn(f64) -> bool| -> Vec<bool> { test_scores.iter().map(|s| s.is_some_and(keep)).collect() };
    let train_threshold = metrics::train_quantile(&train_scores, train_quantile);
    let train_flags = flags(&|s| train_threshold.is_some_and(|t| s > t));
    let oracle_threshold = metrics::best_point_f1(&machine.labels, &test_scores).map(|(t, _)| t);
    let oracle_flags = flags(&|s| oracle_threshold.is_some_and(|t| s >= t));
    Ok(MachineResult {
        machine: machine.name.clone(),
        train_rows: machine.train.len(),
        test_rows: machine.test.len(),
        train_threshold,
        at_train_threshold: metrics::count(&machine.labels, &train_flags).into(),
        oracle_threshold,
        at_oracle_threshold: metrics::count(&machine.labels, &oracle_flags).into(),
    })
}
