//! The Numenta Anomaly Benchmark: corpus loading and the NAB protocol around a
//! [`SeriesDetector`].
//!
//! In: NAB's layout (`data/<category>/<file>.csv` with `timestamp,value`, and
//! `labels/combined_windows.json`) and a registered detector. Out: a [`NabReport`] with,
//! for each of NAB's three profiles, the corpus-wide best threshold, the raw score, the
//! null and perfect scores and the normalised NAB score, plus a per-file breakdown.
//! Protocol (NAB's): per file a fresh detector is fitted on the probationary rows
//! (the first `min(floor(15%), 750)`), then scores every row in order; the
//! probationary rows are not scored. Scores are rounded to the 12 significant digits
//! NAB's result files keep ([`as_nab_stores_it`]) before the sweep. The null score is that of NAB's constant detector
//! under the same sweep; the perfect score is `tp` times the number of windows.

pub mod sweep;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::detector::{self, DetectorSpec, Registration};
use super::series::{self, LoadError, Series};
use super::{parallel_map, EvaluateError};
use sweep::{FileScore, Profile, RowLabel, Scored, Window, PROFILES};

/// One NAB data file with its windows.
#[derive(Debug, Clone)]
pub struct NabFile {
    /// Path relative to `data/`, as in the labels file.
    pub path: String,
    pub series: Series,
    pub windows: Vec<Window>,
    /// The sweep's view of each row.
    pub labels: Vec<RowLabel>,
}

/// The files of a NAB corpus, in path order.
#[derive(Debug, Clone)]
pub struct NabCorpus {
    pub files: Vec<NabFile>,
}

impl NabCorpus {
    /// Loads every file named in `labels/combined_windows.json` under `dir` (or only those
    /// in `only`, when it is not empty).
    pub fn load(dir: &Path, only: &[String]) -> Result<Self, LoadError> {
        let labels_path = dir.join("labels").join("combined_windows.json");
        let text = std::fs::read_to_string(&labels_path)
            .map_err(|source| LoadError::Io { path: labels_path.clone(), source })?;
        let raw: BTreeMap<String, Vec<[String; 2]>> = serde_json::from_str(&text).map_err(|e| LoadError::Content {
            path: labels_path.clone(),
            reason: format!("not a map of file to [start, end] windows: {e}"),
        })?;
        for wanted in only {
            if !raw.contains_key(wanted) {
                return Err(LoadError::Content {
                    path: labels_path.clone(),
                    reason: format!("no entry for {wanted:?} (names look like realTweets/Twitter_volume_AAPL.csv)"),
                });
            }
        }
        let mut files = Vec::new();
        let mut first_window = 0;
        for (name, windows) in raw.into_iter().filter(|(name, _)| only.is_empty() || only.contains(name)) {
            let windows = windows
                .iter()
                .enumerate()
                .map(|(w, [start, end])| {
                    let parse = |text: &str| {
                        series::parse_nab_time(text).map_err(|reason| LoadError::Content {
                            path: labels_path.clone(),
                            reason: format!("{name}, window {w}: {reason} (found {text:?})"),
                        })
                    };
                    Ok(Window { start: parse(start)?, end: parse(end)? })
                })
                .collect::<Result<Vec<_>, LoadError>>()?;
            let path = dir.join("data").join(&name);
            let series = series::read_csv(&path, name.clone(), series::parse_nab_time)?;
            if series.width() != 1 {
                return Err(LoadError::Content {
                    path,
                    reason: format!("expected the columns timestamp,value; found {} value columns", series.width()),
                });
            }
            let labels = sweep::label_rows(&series.timestamps, &windows, first_window).map_err(|reason| {
                LoadError::Content { path: labels_path.clone(), reason: format!("{name}: {reason}") }
            })?;
            first_window += windows.len();
            files.push(NabFile { path: name, series, windows, labels });
        }
        Ok(Self { files })
    }

    /// Number of labelled windows over all files.
    pub fn window_count(&self) -> usize {
        self.files.iter().map(|f| f.windows.len()).sum()
    }

    /// Number of rows over all files.
    pub fn row_count(&self) -> usize {
        self.files.iter().map(|f| f.series.len()).sum()
    }
}

/// A detector's NAB results.
#[derive(Debug, Clone, Serialize)]
pub struct NabReport {
    pub detector: String,
    pub data: PathBuf,
    pub files: usize,
    pub rows: usize,
    pub windows: usize,
    pub seed: u64,
    /// Whether the thresholds were optimised (NAB's protocol) or given with `--threshold`.
    pub threshold_optimised: bool,
    pub profiles: Vec<ProfileResult>,
}

/// A detector's result under one profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileResult {
    pub profile: Profile,
    /// The corpus-wide threshold NAB's optimiser picks (or the one given): rows scoring at
    /// least this are detections.
    pub threshold: f64,
    /// Sum of the per-file raw scores at `threshold`.
    pub raw: f64,
    /// Raw score of NAB's null detector (constant 0.5) under the same sweep.
    pub null: f64,
    /// `tp` weight times the number of windows.
    pub perfect: f64,
    /// `100 · (raw - null) / (perfect - null)`: the number NAB publishes.
    pub score: f64,
    pub windows_detected: usize,
    pub false_positive_rows: usize,
    pub per_file: Vec<(String, FileScore)>,
}

/// Runs `registration`'s detector over `corpus` by NAB's protocol and scores it under
/// every profile, at NAB's optimised threshold or at `threshold` when given (to compare
/// with a threshold NAB published). Files are scored on up to `threads` threads.
pub fn evaluate(
    corpus: &NabCorpus,
    data: &Path,
    registration: &Registration,
    seed: u64,
    threshold: Option<f64>,
    threads: usize,
) -> Result<NabReport, EvaluateError> {
    let scores = score_corpus(corpus, registration, seed, threads)?;
    let null = detector::find("constant")?;
    let null_scores = score_corpus(corpus, null, seed, threads)?;
    let profiles = PROFILES
        .iter()
        .map(|profile| {
            let (threshold, raw, per_file) = optimise(corpus, &scores, profile, threshold);
            let (_, null_raw, _) = optimise(corpus, &null_scores, profile, None);
            let perfect = corpus.window_count() as f64 * profile.tp;
            ProfileResult {
                profile: *profile,
                threshold,
                raw,
                null: null_raw,
                perfect,
                score: sweep::normalise(raw, null_raw, perfect),
                windows_detected: per_file.iter().map(|(_, f)| f.windows_detected).sum(),
                false_positive_rows: per_file.iter().map(|(_, f)| f.false_positive_rows).sum(),
                per_file,
            }
        })
        .collect();
    Ok(NabReport {
        detector: registration.name.to_owned(),
        data: data.to_owned(),
        files: corpus.files.len(),
        rows: corpus.row_count(),
        windows: corpus.window_count(),
        seed,
        threshold_optimised: threshold.is_none(),
        profiles,
    })
}

/// NAB's protocol for one detector: fit on each file's probationary rows, score all rows.
fn score_corpus(
    corpus: &NabCorpus,
    registration: &Registration,
    seed: u64,
    threads: usize,
) -> Result<Vec<Vec<Option<f64>>>, EvaluateError> {
    parallel_map(&corpus.files, threads, |file| {
        let series = &file.series;
        let mut detector = (registration.build)(DetectorSpec { width: series.width(), seed });
        let failed = |source| EvaluateError::Detector {
            detector: registration.name.to_owned(),
            series: file.path.clone(),
            source,
        };
        detector.fit(&series.slice(0..sweep::probationary_length(series.len()))).map_err(failed)?;
        let scores = detector.score(series).map_err(failed)?;
        detector::check_scores(registration.name, series, &scores)?;
        Ok(scores.into_iter().map(|s| s.map(as_nab_stores_it)).collect())
    })
    .into_iter()
    .collect()
}

/// A score as NAB's result files hold it: 12 significant digits (Python 2's `str` of a
/// float), which its optimiser and scorer then read back. The rounding matters: it turns
/// tail probabilities within 5e-13 of 1 into exactly 1, a threshold NAB's published
/// detectors sit on (e.g. Windowed Gaussian's 1.0).
pub fn as_nab_stores_it(score: f64) -> f64 {
    format!("{score:.11e}").parse().unwrap_or(score)
}

/// NAB's optimiser then scorer: the best corpus-wide threshold (or `fixed`) and each
/// file's score at it.
fn optimise(
    corpus: &NabCorpus,
    scores: &[Vec<Option<f64>>],
    profile: &Profile,
    fixed: Option<f64>,
) -> (f64, f64, Vec<(String, FileScore)>) {
    let scored: Vec<Scored> =
        corpus.files.iter().zip(scores).map(|(f, s)| Scored { labels: &f.labels, scores: s }).collect();
    let threshold = fixed.unwrap_or_else(|| sweep::best(&sweep::sweep(&scored, profile)).map_or(1.1, |b| b.threshold));
    let per_file: Vec<(String, FileScore)> = corpus
        .files
        .iter()
        .zip(&scored)
        .map(|(f, s)| (f.path.clone(), sweep::score_file(*s, profile, threshold)))
        .collect();
    let raw = per_file.iter().map(|(_, f)| f.score).sum();
    (threshold, raw, per_file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_keep_twelve_significant_digits() {
        assert_eq!(as_nab_stores_it(0.999_999_999_999_7), 1.0);
        assert_eq!(as_nab_stores_it(0.999_999_999_916_3), 0.999_999_999_916);
        assert_eq!(as_nab_stores_it(0.578_610_340_468_4), 0.578_610_340_468);
        assert_eq!(as_nab_stores_it(0.0), 0.0);
    }
}
