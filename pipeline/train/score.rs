//! `augur score`: a model's scores for recorded telemetry.
//!
//! In: a model directory and a CSV file (`timestamp,<metric>,...`, as `augur train
//! --csv` reads). Out: a CSV `timestamp,score,signature,confidence` with one row per
//! input row, in input order. Guarantees: each row's window is the window ending with
//! the grid step of that row, cut by the detector's [`features::grid`] and scored by
//! [`AnomalyModel::score`]; the score is empty while the window still reaches before
//! the first row or covers too few steps. Signature and confidence come from the
//! detector's DTW [`Matcher`] against the starter library when the file carries the
//! metrics of a signature of the model's application type, else they are empty.
//!
//! [`RowScorer`] is that scoring of one instance's rows, shared with the charts of
//! `augur demo`, so a chart shows exactly the numbers `augur score` gives.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::sources::{window_at, Table};
use super::TrainError;
use crate::codec::TelemetrySample;
use crate::detect::dtw::Dtw;
use crate::detect::lstm::{AnomalyModel, WindowScore};
use crate::detect::matcher::{Evaluation, Matcher};
use crate::detect::DTW_RADIUS;
use crate::window::{features, WindowConfig};

/// Flags of `augur score`: `--csv FILE --out FILE`, or `--simulate`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["csv", "simulate"])))]
pub struct ScoreArgs {
    /// Model directory (holding model.safetensors and metadata.json).
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Telemetry to score: header `timestamp,<metric>,...`, one row per sample of one
    /// instance; the model's features must all be columns.
    #[arg(long, value_name = "FILE", requires = "out", value_parser = super::parse_input_file)]
    pub csv: Option<PathBuf>,
    /// Where to write `timestamp,score,signature,confidence`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Instead of a CSV: score a simulated fleet with injected failures and print, as
    /// JSON, the share of normal windows at most 30 and each failure's lead times.
    #[arg(long)]
    pub simulate: bool,
    /// With --simulate: instances of the fleet.
    #[arg(long, value_name = "N", default_value_t = 40, value_parser = crate::simulate::parse_instances)]
    pub instances: usize,
    /// With --simulate: simulated time.
    #[arg(long, value_name = "D", default_value = "12h", value_parser = crate::simulate::parse_positive_duration)]
    pub duration: std::time::Duration,
    /// With --simulate: seed of the fleet (use another than the model was trained with).
    #[arg(long, value_name = "S", default_value_t = 1001)]
    pub seed: u64,
    /// With --simulate: share of instances that get a failure.
    #[arg(long, value_name = "F", default_value_t = 0.5)]
    pub failure_fraction: f64,
    /// The instance's function, for choosing failure signatures (default: signatures
    /// of every function of the model's application type).
    #[arg(long, value_name = "F", default_value = "")]
    pub function: String,
}

/// What a run of `augur score` did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum ScoreOutcome {
    Csv(ScoreSummary),
    Simulated(super::check::Report),
}

/// What scoring a CSV file did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ScoreSummary {
    pub rows: usize,
    pub scored: usize,
    pub max_score: Option<u8>,
}

/// Scores on a blocking thread.
pub async fn run(args: ScoreArgs, shutdown: CancellationToken) -> Result<ScoreOutcome, TrainError> {
    tokio::task::spawn_blocking(move || {
        if args.simulate {
            let model = AnomalyModel::load(&args.model)?;
            let fleet = crate::simulate::FleetConfig {
                instances: args.instances,
                seed: args.seed,
                start_ms: super::DEFAULT_SIMULATION_START_MS,
                interval_ms: model.metadata().window.step_ms,
                duration_ms: args.duration.as_millis() as i64,
                failure_fraction: args.failure_fraction,
                kinds: crate::simulate::FailureKind::ALL.to_vec(),
            };
            super::check::check(&model, &fleet).map(ScoreOutcome::Simulated)
        } else {
            score_csv(&args, &shutdown).map(ScoreOutcome::Csv)
        }
    })
    .await
    .map_err(|_| TrainError::Poisoned)?
}

/// Windows are scored this many at a time: one batch's inputs stay a few megabytes.
const BATCH: usize = 1024;

/// [`run`] without the runtime.
pub fn score_csv(args: &ScoreArgs, shutdown: &CancellationToken) -> Result<ScoreSummary, TrainError> {
    let (Some(csv), Some(out)) = (&args.csv, &args.out) else {
        return Err(TrainError::Settings("--csv and --out are both needed".to_owned()));
    };
    let model = AnomalyModel::load(&args.model)?;
    let table = Table::read(csv)?;
    let meta = model.metadata();
    let missing: Vec<&String> = meta.features.iter().filter(|f| !table.metrics.contains(f)).collect();
    if !missing.is_empty() {
        return Err(TrainError::Settings(format!(
            "{}: lacks the model's features {missing:?} (model {}/{} wants {:?})",
            csv.display(),
            meta.app_type,
            meta.version,
            meta.features
        )));
    }
    let window = WindowConfig {
        features: meta.features.clone(),
        points: meta.window.points,
        step_ms: meta.window.step_ms,
        ..WindowConfig::default()
    };
    let (times, values) = table.rows_for(&meta.features);
    // The detector's matcher, over its default features, if the file has any of them.
    let default_features: Vec<String> = features::DEFAULT_FEATURES.iter().map(|f| (*f).to_owned()).collect();
    let matcher = starter_matcher(&default_features, &window)?;
    let matched =
        default_features.iter().any(|f| table.metrics.contains(f)).then(|| table.rows_for(&default_features).1);
    let rows = Rows { times, values, matched };
    let scorer = RowScorer {
        model: &model,
        window: &window,
        matcher: &matcher,
        app_type: &meta.app_type,
        function: &args.function,
    };
    let mut dtw = Dtw::new(DTW_RADIUS);

    let out_err = |source| TrainError::Write { path: out.clone(), source };
    let file = std::fs::File::create(out).map_err(out_err)?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(w, "timestamp,score,signature,confidence").map_err(out_err)?;
    let mut summary = ScoreSummary { rows: 0, scored: 0, max_score: None };
    for chunk in table.times.chunks(BATCH) {
        if shutdown.is_cancelled() {
            return Err(TrainError::Interrupted);
        }
        for row in scorer.score(&rows, chunk, &mut dtw) {
            summary.rows += 1;
            let s = row.score.map(|s| s.score.to_string()).unwrap_or_default();
            let sig = row.matched.as_ref().map(|m| m.best.signature.key.to_string()).unwrap_or_default();
            let conf = row.matched.as_ref().map(|m| format!("{:.3}", m.best.confidence)).unwrap_or_default();
            if let Some(s) = row.score {
                summary.scored += 1;
                summary.max_score = Some(summary.max_score.map_or(s.score, |m| m.max(s.score)));
            }
            writeln!(w, "{},{s},{sig},{conf}", table.stamps[summary.rows - 1]).map_err(out_err)?;
        }
    }
    w.flush().map_err(out_err)?;
    Ok(summary)
}

/// The starter library's signatures prepared for matching windows of `window`'s shape
/// over `features`: what `augur score` matches against, and what charts show.
pub fn starter_matcher(features: &[String], window: &WindowConfig) -> Result<Matcher, TrainError> {
    let signatures: BTreeMap<String, _> = crate::signatures::starter::library()
        .map_err(|e| TrainError::Settings(format!("starter signatures: {e}")))?
        .into_iter()
        .map(|l| (crate::signatures::key(&l.signature), l.signature))
        .collect();
    Ok(Matcher::build(&signatures, features, window.step_ms, window.points, DTW_RADIUS))
}

/// One instance's telemetry as windows are cut from it: rows in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Per row, its event time, epoch ms, ascending.
    pub times: Vec<i64>,
    /// `times.len() ×` the window's features, row by row; `NaN` where missing.
    pub values: Vec<f64>,
    /// `times.len() ×` the matcher's features, row by row, or `None` when the rows
    /// carry none of them (nothing to match).
    pub matched: Option<Vec<f64>>,
}

impl Rows {
    /// Samples of one instance, in any order, as rows over `features` (for the model)
    /// and `match_features` (for the matcher), each value read by [`features::value`]
    /// as the detector's windows read it.
    pub fn from_samples(samples: &[TelemetrySample], features: &[String], match_features: &[String]) -> Self {
        let mut order: Vec<&TelemetrySample> = samples.iter().collect();
        order.sort_by_key(|s| s.timestamp_ms);
        let times = order.iter().map(|s| s.timestamp_ms).collect();
        let cut = |names: &[String]| -> Vec<f64> {
            order.iter().flat_map(|s| names.iter().map(|f| features::value(s, f))).collect()
        };
        Self { times, values: cut(features), matched: Some(cut(match_features)) }
    }
}

/// The anomaly score and best signature match of the window ending with one row.
#[derive(Debug, Clone)]
pub struct RowScore {
    /// The row's event time, epoch ms.
    pub timestamp_ms: i64,
    /// End of the window (exclusive): the end of the grid step holding the row.
    pub window_end_ms: i64,
    pub score: Option<WindowScore>,
    pub matched: Option<Evaluation>,
}

/// Scores and matches the windows of one instance's rows: the part of `augur score`
/// that charts share, so that both show exactly the same numbers.
pub struct RowScorer<'a> {
    pub model: &'a AnomalyModel,
    /// Cut as the model expects (its features, points and step).
    pub window: &'a WindowConfig,
    /// Built over the features of [`Rows::matched`].
    pub matcher: &'a Matcher,
    pub app_type: &'a str,
    pub function: &'a str,
}

impl RowScorer<'_> {
    /// For each time of `at` (row times of `rows`, in any order), in that order: the
    /// window ending with the grid step of that time, cut by [`window_at`] and scored
    /// by [`AnomalyModel::score`] in one batch, and matched by the [`Matcher`]. A
    /// window that still reaches before the first row, or covers too few steps, has
    /// neither a score nor a match.
    pub fn score(&self, rows: &Rows, at: &[i64], dtw: &mut Dtw) -> Vec<RowScore> {
        let window = self.window;
        let channels = window.features.len();
        let Some(&first) = rows.times.first() else {
            return at
                .iter()
                .map(|&ts| RowScore { timestamp_ms: ts, window_end_ms: ts, score: None, matched: None })
                .collect();
        };
        let end_of = |ts: i64| (ts.div_euclid(window.step_ms) + 1) * window.step_ms;
        let windows: Vec<Option<Vec<f64>>> = at
            .iter()
            .map(|&ts| {
                let end = end_of(ts);
                if end - window.length_ms() < first {
                    return None;
                }
                window_at(&rows.times, &rows.values, channels, end, window)
            })
            .collect();
        let refs: Vec<&[f64]> = windows.iter().flatten().map(Vec::as_slice).collect();
        let mut scores = self.model.score(&refs).into_iter();
        let match_channels = rows.matched.as_ref().map_or(0, |m| m.len() / rows.times.len());
        at.iter()
            .zip(&windows)
            .map(|(&ts, win)| {
                let score = win.as_ref().and_then(|_| scores.next().flatten());
                let matched = win.as_ref().zip(rows.matched.as_ref()).and_then(|(_, m_values)| {
                    let mw = window_at(&rows.times, m_values, match_channels, end_of(ts), window)?;
                    self.matcher.evaluate(dtw, self.app_type, self.function, &mw)
                });
                RowScore { timestamp_ms: ts, window_end_ms: end_of(ts), score, matched }
            })
            .collect()
    }
}
