//! Charts of `augur demo --charts DIR`: one instance's story per failure kind.
//!
//! In: an [`InstanceChart`] — the instance's telemetry, its per-window anomaly score
//! and best signature confidence ([`score_series`]), when its injected failure started
//! and happened (or would have), and the adjustments decided for it. Out: one SVG file
//! per chart, `DIR/<kind>-<instance>.svg` ([`draw`]): stacked panels on one UTC time
//! axis — the metrics of the failure kind's starter signature (and the resource they
//! run into) in readable units, the anomaly score 0–100 with the tier boundaries
//! 30/70/90, the best signature's confidence 0–1 with its threshold — crossed by
//! labelled vertical markers for the onset, the failure (or "would have failed" when
//! averted) and each adjustment with its outcome. Guarantees: [`score_series`] scores
//! through the same code as `augur score` ([`crate::train::RowScorer`]), so a chart
//! shows the numbers that command gives for the same telemetry; the directory is
//! checked (and created) before anything is drawn, and a failure names the path.
//!
//! SVG only: text is written as `<text>` elements that the viewer lays out, so drawing
//! needs no font library or font file on the machine.

mod draw;
mod panels;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::codec::TelemetrySample;
use crate::detect::dtw::Dtw;
use crate::detect::matcher::Matcher;
use crate::detect::models::ModelSet;
use crate::detect::DTW_RADIUS;
use crate::train::{RowScorer, Rows};
use crate::window::WindowConfig;

/// One instance's story, as the demo collected it.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceChart {
    /// Instance id, e.g. `web-checkout-0003`.
    pub instance: String,
    pub app_type: String,
    pub function: String,
    /// Failure kind name, e.g. `memory_leak`.
    pub kind: String,
    /// The instance's telemetry in time order, with gaps where it was down.
    pub samples: Vec<TelemetrySample>,
    /// Per window, in time order.
    pub scores: Vec<ScorePoint>,
    /// Adjustments decided for this instance.
    pub markers: Vec<Marker>,
    /// When the injected failure started to develop, epoch ms.
    pub onset_ms: i64,
    /// When it happened (`None`: averted, or not yet by the end of the run).
    pub failure_ms: Option<i64>,
    /// When it would have happened untouched.
    pub expected_failure_ms: Option<i64>,
    /// Left unadjusted on purpose.
    pub holdout: bool,
}

/// The anomaly score and best signature match of the window ending at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScorePoint {
    /// Event time of the sample the window ends with, epoch ms.
    pub timestamp_ms: i64,
    /// 0..=100; `None` while the window is too short or too sparse to score.
    pub anomaly_score: Option<f64>,
    /// Key (`app_type/function/name`) of the best matching signature.
    pub signature: Option<String>,
    /// Its failure kind, e.g. `memory_leak`.
    pub signature_kind: Option<String>,
    /// Its confidence, 0..1.
    pub confidence: Option<f64>,
    /// Its threshold: at or above it the detector alerts.
    pub threshold: Option<f64>,
}

/// An adjustment decided for the instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Event time of the decision, epoch ms.
    pub timestamp_ms: i64,
    /// What was decided, e.g. `resize cpu×1.5 mem×1.3`.
    pub label: String,
    /// What became of it: `applied`, `refused`, `held out`, ...
    pub outcome: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("chart directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("chart directory {path} exists and is not a directory")]
    NotADir { path: PathBuf },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot draw: {reason}")]
    Draw { path: PathBuf, reason: String },
    #[error("chart of {instance}: nothing to draw (no telemetry, scores or failure times)")]
    Empty { instance: String },
    #[error("no anomaly model for application type {0:?}")]
    NoModel(String),
    #[error("scoring: {0}")]
    Scoring(String),
}

/// Checks that `dir` can hold charts, creating it (and its parents) if needed: for
/// validating `--charts DIR` before a run rather than after it.
pub fn prepare(dir: &Path) -> Result<(), ChartError> {
    if dir.exists() && !dir.is_dir() {
        return Err(ChartError::NotADir { path: dir.to_owned() });
    }
    std::fs::create_dir_all(dir).map_err(|source| ChartError::Dir { path: dir.to_owned(), source })?;
    // A directory that exists may still refuse files; find out before the run does.
    let probe = dir.join(".augur-charts-probe");
    std::fs::write(&probe, b"").map_err(|source| ChartError::Dir { path: dir.to_owned(), source })?;
    std::fs::remove_file(&probe).map_err(|source| ChartError::Dir { path: dir.to_owned(), source })
}

/// Where [`draw`] writes the chart of `chart` in `dir`: `<kind>-<instance>.svg`, with
/// any character that does not belong in a file name replaced by `_`.
pub fn file_name(chart: &InstanceChart) -> String {
    let safe = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
    };
    format!("{}-{}.svg", safe(&chart.kind), safe(&chart.instance))
}

/// Draws `chart` into `dir` (created if missing) and returns the file's path.
pub fn draw(dir: &Path, chart: &InstanceChart) -> Result<PathBuf, ChartError> {
    prepare(dir)?;
    let path = dir.join(file_name(chart));
    let panels = panels::metric_panels(chart);
    let svg = draw::render(chart, &panels).map_err(|e| match e {
        draw::RenderError::Empty => ChartError::Empty { instance: chart.instance.clone() },
        draw::RenderError::Plot(reason) => ChartError::Draw { path: path.clone(), reason },
    })?;
    std::fs::write(&path, svg).map_err(|source| ChartError::Write { path: path.clone(), source })?;
    Ok(path)
}

/// The starter library prepared for windows cut as `window` says: the matcher
/// [`score_series`] wants, as `augur score` builds it.
pub fn starter_matcher(window: &WindowConfig) -> Result<Matcher, ChartError> {
    crate::train::starter_matcher(&window.features, window).map_err(|e| ChartError::Scoring(e.to_string()))
}

/// Windows are scored this many at a time, as `augur score` does: one batch's inputs
/// stay a few megabytes.
const BATCH: usize = 1024;

/// The anomaly score and best signature match of the window ending with each sample of
/// one instance (`samples`, any order), in time order: the rows `augur score` writes
/// for the same telemetry. `window` is the detector's; the model of the instance's
/// application type must fit it, and `matcher` must be built over its features (as
/// [`starter_matcher`] does).
pub fn score_series(
    samples: &[TelemetrySample],
    window: &WindowConfig,
    models: &ModelSet,
    matcher: &Matcher,
) -> Result<Vec<ScorePoint>, ChartError> {
    let Some(first) = samples.first() else { return Ok(Vec::new()) };
    if let Some(other) = samples.iter().find(|s| s.instance_id != first.instance_id) {
        return Err(ChartError::Scoring(format!(
            "samples of two instances, {} and {}: a series is one instance's",
            first.instance_id, other.instance_id
        )));
    }
    let model = models.get(&first.app_type).ok_or_else(|| ChartError::NoModel(first.app_type.clone()))?;
    model
        .check_window(&window.features, window.points, window.step_ms)
        .map_err(|e| ChartError::Scoring(e.to_string()))?;
    let rows = Rows::from_samples(samples, &window.features, &window.features);
    let scorer = RowScorer { model, window, matcher, app_type: &first.app_type, function: &first.function };
    let mut dtw = Dtw::new(DTW_RADIUS);
    let mut out = Vec::with_capacity(rows.times.len());
    for chunk in rows.times.chunks(BATCH) {
        out.extend(scorer.score(&rows, chunk, &mut dtw).into_iter().map(|r| ScorePoint {
            timestamp_ms: r.timestamp_ms,
            anomaly_score: r.score.map(|s| f64::from(s.score)),
            signature: r.matched.as_ref().map(|m| m.best.signature.key.to_string()),
            signature_kind: r.matched.as_ref().map(|m| m.best.signature.failure_kind.to_string()),
            confidence: r.matched.as_ref().map(|m| m.best.confidence),
            threshold: r.matched.as_ref().map(|m| m.best.signature.threshold),
        }));
    }
    Ok(out)
}
