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

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::sources::{window_at, Table};
use super::TrainError;
use crate::detect::dtw::Dtw;
use crate::detect::lstm::AnomalyModel;
use crate::detect::matcher::Matcher;
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
    let channels = meta.features.len();
    let first = times[0];
    let end_of = |ts: i64| (ts.div_euclid(window.step_ms) + 1) * window.step_ms;

    // The detector's matcher, over its default features, if the file has any of them.
    let default_features: Vec<String> = features::DEFAULT_FEATURES.iter().map(|f| (*f).to_owned()).collect();
    let signatures: BTreeMap<String, _> = crate::signatures::starter::library()
        .map_err(|e| TrainError::Settings(format!("starter signatures: {e}")))?
        .into_iter()
        .map(|l| (crate::signatures::key(&l.signature), l.signature))
        .collect();
    let matcher = Matcher::build(&signatures, &default_features, window.step_ms, window.points, DTW_RADIUS);
    let (m_times, m_values) = table.rows_for(&default_features);
    let mut dtw = Dtw::new(DTW_RADIUS);
    let can_match = default_features.iter().any(|f| table.metrics.contains(f));

    let out_err = |source| TrainError::Write { path: out.clone(), source };
    let file = std::fs::File::create(out).map_err(out_err)?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(w, "timestamp,score,signature,confidence").map_err(out_err)?;
    let mut summary = ScoreSummary { rows: 0, scored: 0, max_score: None };
    for chunk in table.times.chunks(BATCH) {
        if shutdown.is_cancelled() {
            return Err(TrainError::Interrupted);
        }
        let windows: Vec<Option<Vec<f64>>> = chunk
            .iter()
            .map(|&ts| {
                let end = end_of(ts);
                if end - window.length_ms() < first {
                    return None;
                }
                window_at(&times, &values, channels, end, &window)
            })
            .collect();
        let refs: Vec<&[f64]> = windows.iter().flatten().map(Vec::as_slice).collect();
        let mut scores = model.score(&refs).into_iter();
        for (&ts, win) in chunk.iter().zip(&windows) {
            let score = win.as_ref().and_then(|_| scores.next().flatten());
            let matched = win.as_ref().filter(|_| can_match).and_then(|_| {
                let mw = window_at(&m_times, &m_values, default_features.len(), end_of(ts), &window)?;
                matcher.evaluate(&mut dtw, &meta.app_type, &args.function, &mw)
            });
            summary.rows += 1;
            let s = score.map(|s| s.score.to_string()).unwrap_or_default();
            let sig = matched.as_ref().map(|m| m.best.signature.key.to_string()).unwrap_or_default();
            let conf = matched.as_ref().map(|m| format!("{:.3}", m.best.confidence)).unwrap_or_default();
            if let Some(s) = score {
                summary.scored += 1;
                summary.max_score = Some(summary.max_score.map_or(s.score, |m| m.max(s.score)));
            }
            writeln!(w, "{},{s},{sig},{conf}", table.stamps[summary.rows - 1]).map_err(out_err)?;
        }
    }
    w.flush().map_err(out_err)?;
    Ok(summary)
}
