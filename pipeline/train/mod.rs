//! `augur train` and `augur score`: LSTM anomaly models from normal telemetry, and
//! scores for recorded telemetry.
//!
//! In: normal telemetry from the in-process simulator or a CSV file ([`sources`]);
//! Kafka replay of `augur.telemetry` by time range is not built yet and is refused
//! with a clear message. Out: one model per application type in
//! `<out>/<app-type>/<version>/` (`model.safetensors`, `metadata.json`), see
//! [`crate::detect::lstm`]; for `score`, a CSV of scores. Guarantees: windows are cut
//! by the detector's own code, training is deterministic given its flags, and a model
//! is only written once it has been validated on held-out windows.

pub mod check;
mod fit;
pub mod score;
pub mod sources;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

pub use fit::{fit, masked_loss, Settings, DEFAULT_LEARNING_RATE};
pub use score::{score_csv, ScoreArgs, ScoreOutcome, ScoreSummary};

use crate::detect::lstm::{Config, ModelError, WindowShape};
use crate::simulate::FleetConfig;
use crate::window::WindowConfig;

/// The windows of one application type to train on.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub app_type: String,
    pub features: Vec<String>,
    pub shape: WindowShape,
    /// `(end_ms, values)`: values `points × features`, time-major, `NaN` where missing.
    pub windows: Vec<(i64, Vec<f64>)>,
    /// Event time of the first and last sample read.
    pub first_event_ms: i64,
    pub last_event_ms: i64,
    pub created_from: String,
}

/// Why training or scoring failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Settings(String),
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line} column {column}: {reason}")]
    Csv { path: PathBuf, line: usize, column: usize, reason: String },
    #[error("{app_type}: too few windows to train ({train} for training, {validation} held out); give more data")]
    TooFewWindows { app_type: String, train: usize, validation: usize },
    #[error("no windows of application type {0:?} in the data")]
    NoSuchAppType(String),
    #[error("training from Kafka (--brokers/--from/--to) is not built yet; train from --simulate or --csv")]
    KafkaNotBuilt,
    #[error("interrupted")]
    Interrupted,
    #[error("a training thread panicked")]
    Poisoned,
    // Boxed: both are large, and every result of this module carries the enum.
    #[error(transparent)]
    Model(Box<ModelError>),
    #[error("model computation failed: {0}")]
    Candle(Box<candle_core::Error>),
}

impl From<ModelError> for TrainError {
    fn from(e: ModelError) -> Self {
        Self::Model(Box::new(e))
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        Self::Candle(Box::new(e))
    }
}

/// Flags of `augur train`. Exactly one source: `--simulate`, `--csv` or `--brokers`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["simulate", "csv", "brokers"])))]
pub struct Args {
    /// Train on the in-process simulator's normal telemetry (no failures injected),
    /// one model per application type.
    #[arg(long)]
    pub simulate: bool,
    /// Train on a CSV file: header `timestamp,<metric>,...`; every other column is a
    /// metric and becomes a feature of the model.
    #[arg(long, value_name = "FILE", value_parser = parse_input_file)]
    pub csv: Option<PathBuf>,
    /// Train on `augur.telemetry` replayed from these Kafka brokers (not built yet).
    #[arg(long, value_name = "B", requires_all = ["from", "to"])]
    pub brokers: Option<String>,
    /// Start of the replayed range (with --brokers), RFC 3339.
    #[arg(long, value_name = "T")]
    pub from: Option<String>,
    /// End of the replayed range (with --brokers), RFC 3339.
    #[arg(long, value_name = "T")]
    pub to: Option<String>,
    /// Application type: with --simulate, train only this one; with --csv, the type
    /// the model is for (default: the file's name without extension).
    #[arg(long, value_name = "T")]
    pub app_type: Option<String>,
    /// Root of the model tree: models go to `<out>/<app-type>/<version>/`.
    #[arg(long, value_name = "DIR", default_value = "models")]
    pub out: PathBuf,
    /// Version directory name. Default: the UTC time of the run, `YYYYMMDDTHHMMSSZ`.
    #[arg(long, value_name = "V", value_parser = parse_version)]
    pub model_version: Option<String>,
    /// Passes over the training windows.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub epochs: u32,
    /// Windows per optimiser step.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub batch_size: u32,
    /// Adam step size.
    #[arg(long, value_name = "LR", default_value_t = DEFAULT_LEARNING_RATE, value_parser = parse_rate)]
    pub learning_rate: f64,
    /// Width of the LSTM's hidden state.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub hidden: u32,
    /// Stacked LSTM layers.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub layers: u32,
    /// Seed of the weights' initialisation and of the batch order (and of the
    /// simulator with --simulate).
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Share of the windows, the last in event time, held out for validation.
    #[arg(long, value_name = "F", default_value_t = 0.2, value_parser = parse_share)]
    pub validation_share: f64,
    /// Distance between two training windows' ends.
    #[arg(long, value_name = "D", default_value = "60s", value_parser = parse_hop)]
    pub hop: Duration,
    /// With --simulate: instances of the simulated fleet.
    #[arg(long, value_name = "N", default_value_t = 24, value_parser = crate::simulate::parse_instances)]
    pub instances: usize,
    /// With --simulate: simulated time to cover.
    #[arg(long, value_name = "D", default_value = "2days", value_parser = crate::simulate::parse_positive_duration)]
    pub duration: Duration,
    /// With --simulate: event time of the first sample, epoch ms (a Monday midnight
    /// UTC by default, so reruns are identical).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_SIMULATION_START_MS)]
    pub start_ms: i64,
}

/// 2026-01-05T00:00:00Z, a Monday.
pub const DEFAULT_SIMULATION_START_MS: i64 = 1_767_571_200_000;

/// A file that exists and can be opened for reading, checked before any work starts.
pub(crate) fn parse_input_file(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    match std::fs::File::open(&path) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => Ok(path),
        Ok(_) => Err(format!("{s} is not a file")),
        Err(e) => Err(format!("cannot read {s}: {e}")),
    }
}

fn parse_version(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Ok(s.to_owned())
    } else {
        Err("must be 1 to 64 letters, digits, '.', '_' or '-'".to_owned())
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 1.0 => Ok(x),
        _ => Err("must be a number above 0 and at most 1".to_owned()),
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.01..=0.9).contains(&x) => Ok(x),
        _ => Err("must be a number from 0.01 to 0.9".to_owned()),
    }
}

fn parse_hop(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e}; expected a duration like 60s"))?;
    if d < Duration::from_secs(1)
        || d > Duration::from_secs(3600)
        || d.subsec_millis() != 0
        || d.as_nanos() % 1_000_000 != 0
    {
        return Err("must be a whole number of seconds from 1s to 1h".to_owned());
    }
    Ok(d)
}

/// What one run wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Trained {
    pub app_type: String,
    pub dir: PathBuf,
    pub validation_mean_error: f64,
    pub validation_at_most_30_share: f64,
    pub train_windows: usize,
}

/// Runs `augur train`: collects the windows, trains one model per application type
/// on a blocking thread and writes each to `<out>/<app-type>/<version>/`.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Vec<Trained>, TrainError> {
    tokio::task::spawn_blocking(move || train_blocking(&args, &shutdown)).await.map_err(|_| TrainError::Poisoned)?
}

/// [`run`] without the runtime.
pub fn train_blocking(args: &Args, shutdown: &CancellationToken) -> Result<Vec<Trained>, TrainError> {
    let window = WindowConfig { hop_ms: args.hop.as_millis() as i64, ..WindowConfig::default() };
    let mut datasets = if args.simulate {
        let fleet = FleetConfig {
            instances: args.instances,
            seed: args.seed,
            start_ms: args.start_ms,
            interval_ms: window.step_ms,
            duration_ms: args.duration.as_millis() as i64,
            failure_fraction: 0.0,
            kinds: Vec::new(),
        };
        sources::simulated(&fleet, &window, 0)?
    } else if let Some(path) = &args.csv {
        let table = sources::Table::read(path)?;
        let app_type = args
            .app_type
            .clone()
            .unwrap_or_else(|| path.file_stem().map_or("csv".to_owned(), |s| s.to_string_lossy().into_owned()));
        vec![sources::csv(&table, &app_type, &window)?]
    } else {
        return Err(TrainError::KafkaNotBuilt);
    };
    if args.simulate {
        if let Some(t) = &args.app_type {
            datasets.retain(|d| &d.app_type == t);
            if datasets.is_empty() {
                return Err(TrainError::NoSuchAppType(t.clone()));
            }
        }
    }
    let version = args.model_version.clone().unwrap_or_else(|| {
        let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        t.replace(['-', ':'], "")
    });
    let settings = Settings {
        model: Config { hidden: args.hidden as usize, layers: args.layers as usize, ..Config::default() },
        epochs: args.epochs as usize,
        batch_size: args.batch_size as usize,
        learning_rate: args.learning_rate,
        seed: args.seed,
        validation_share: args.validation_share,
        version: version.clone(),
    };
    let mut out = Vec::new();
    for data in &datasets {
        tracing::info!(app_type = %data.app_type, windows = data.windows.len(), "training");
        let model = fit(data, &settings, shutdown)?;
        let dir = args.out.join(&data.app_type).join(&version);
        model.save(&dir)?;
        let v = model.metadata().validation;
        tracing::info!(app_type = %data.app_type, dir = %dir.display(), "model written");
        out.push(Trained {
            app_type: data.app_type.clone(),
            dir,
            validation_mean_error: v.mean_error,
            validation_at_most_30_share: v.at_most_30_share,
            train_windows: model.metadata().training.train_windows,
        });
    }
    Ok(out)
}
