//! `augur train` and `augur score`: LSTM anomaly models from normal telemetry, and
//! scores for recorded telemetry.
//!
//! In: normal telemetry from the in-process simulator or a CSV file ([`sources`]), or
//! `<prefix>.telemetry` replayed from Kafka by event time ([`replay`]). Out: one model
//! per application type in `<out>/<app-type>/<version>/` (`model.safetensors`,
//! `metadata.json`), see [`crate::detect::lstm`]; from Kafka, models that pass the
//! promotion gate are announced on `<prefix>.models` ([`promote`]); for `score`, a CSV
//! of scores. Guarantees: windows are cut by the detector's own code, training is
//! deterministic given its flags, and a model is only written once it has been
//! validated on held-out windows.

pub mod check;
mod fit;
mod metrics;
pub mod promote;
pub mod replay;
pub mod score;
pub mod sources;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

pub use fit::{fit, masked_loss, Settings, DEFAULT_LEARNING_RATE, DEFAULT_LEVEL_WEIGHT};
pub use score::{score_csv, starter_matcher, RowScore, RowScorer, Rows, ScoreArgs, ScoreOutcome, ScoreSummary};

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
    #[error("replaying from Kafka: {0}")]
    Replay(String),
    #[error(transparent)]
    Connect(#[from] crate::kafka::ConnectError),
    #[error(transparent)]
    Observe(#[from] crate::observe::ObserveError),
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
    /// Start of the replayed range (with --brokers): epoch ms, RFC 3339, or relative to
    /// the start of the command, e.g. `-24h`.
    #[arg(long, value_name = "T", requires = "brokers", value_parser = crate::signatures::parse_time)]
    pub from: Option<i64>,
    /// End (exclusive) of the replayed range (with --brokers): epoch ms, RFC 3339, or
    /// relative to the start of the command (`now`, `-1h`).
    #[arg(long, value_name = "T", requires = "brokers", value_parser = crate::signatures::parse_time)]
    pub to: Option<i64>,
    /// With --brokers: retrain on this schedule, each time on the same span of event
    /// time moved forward by the time elapsed since the first run, until SIGTERM.
    #[arg(long, value_name = "D", requires = "brokers", value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// With --brokers: windows of an instance this close to one of its alerts are not
    /// trained on (they are not normal).
    #[arg(long, value_name = "D", default_value = "30m", value_parser = humantime::parse_duration)]
    pub alert_margin: Duration,
    /// With --brokers: write the models but announce none on `<prefix>.models`, even
    /// when they pass the promotion gate.
    #[arg(long)]
    pub no_promote: bool,
    /// With --brokers: serve `/metrics` (`augur_train_*`), `/healthz` and `/readyz`
    /// (ready once a replay has read the cluster) on this address. [default: not served]
    #[arg(long, env = "AUGUR_METRICS_ADDR", value_name = "ADDR", requires = "brokers")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub kafka: crate::kafka::KafkaArgs,
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
    /// Weight of the level term of the error: how much a scored value above the highest
    /// its feature reached in training counts (0: the forecast error alone).
    #[arg(long, value_name = "W", default_value_t = fit::DEFAULT_LEVEL_WEIGHT, value_parser = parse_weight)]
    pub level_weight: f64,
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

fn parse_weight(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=1e6).contains(&x) => Ok(x),
        _ => Err("must be a number from 0 to 1000000".to_owned()),
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
    /// From Kafka: the promotion gate's verdict, and whether the model was announced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<promote::Gate>,
    pub announced: bool,
}

impl Trained {
    fn of(model: &crate::detect::lstm::AnomalyModel, dir: PathBuf) -> Self {
        let m = model.metadata();
        Self {
            app_type: m.app_type.clone(),
            dir,
            validation_mean_error: m.validation.mean_error,
            validation_at_most_30_share: m.validation.at_most_30_share,
            train_windows: m.training.train_windows,
            gate: None,
            announced: false,
        }
    }
}

/// Runs `augur train`: collects the windows, trains one model per application type
/// on a blocking thread and writes each to `<out>/<app-type>/<version>/`; from Kafka,
/// gates and announces them, again every `--every` until `shutdown`. `written` hears of
/// each model as soon as it is written (and gated), so a scheduled trainer reports every
/// round while it runs, not only when it stops.
pub async fn run(args: Args, shutdown: CancellationToken, written: &mut dyn FnMut(&Trained)) -> Result<(), TrainError> {
    if args.kafka.brokers.is_some() {
        return run_replayed(args, shutdown, written).await;
    }
    let trained = tokio::task::spawn_blocking(move || train_blocking(&args, &shutdown))
        .await
        .map_err(|_| TrainError::Poisoned)??;
    trained.iter().for_each(written);
    Ok(())
}

/// The Kafka path of [`run`].
async fn run_replayed(
    args: Args,
    shutdown: CancellationToken,
    written: &mut dyn FnMut(&Trained),
) -> Result<(), TrainError> {
    let (Some(from), Some(to)) = (args.from, args.to) else {
        return Err(TrainError::Settings("--brokers needs --from and --to".to_owned()));
    };
    if to <= from {
        return Err(TrainError::Settings("--to must be later than --from".to_owned()));
    }
    if args.every.is_some() && args.model_version.is_some() {
        return Err(TrainError::Settings("--every writes a new version each time: drop --model-version".to_owned()));
    }
    let metrics = metrics::Metrics::default();
    let readiness = crate::observe::Readiness::default();
    crate::observe::serve_if(args.metrics_addr, |r| metrics.register(r), &readiness, &shutdown).await?;
    let cluster = crate::kafka::Cluster::open(&args.kafka.config())?;
    let window = window_of(&args);
    let margin_ms = args.alert_margin.as_millis() as i64;
    let started = std::time::Instant::now();
    loop {
        let round = std::time::Instant::now();
        let shift = started.elapsed().as_millis() as i64;
        let (f, t) = (from + shift, to + shift);
        let (config, w) = (cluster.client_config(), window.clone());
        let (topics, alerts) =
            (cluster.topic::<crate::codec::TelemetrySample>(), cluster.topic::<crate::codec::Alert>());
        let (mut datasets, stats) =
            tokio::task::spawn_blocking(move || replay::replayed(&config, &topics, &alerts, f, t, &w, margin_ms))
                .await
                .map_err(|_| TrainError::Poisoned)??;
        tracing::info!(?stats, from = f, to = t, "telemetry replayed");
        readiness.set(true);
        if let Some(app) = &args.app_type {
            datasets.retain(|d| &d.app_type == app);
            if datasets.is_empty() {
                return Err(TrainError::NoSuchAppType(app.clone()));
            }
        }
        let settings = settings_of(&args, version_of(&args));
        for data in datasets {
            let (s, stop) = (settings.clone(), shutdown.clone());
            let (model, data) = tokio::task::spawn_blocking(move || fit(&data, &s, &stop).map(|m| (m, data)))
                .await
                .map_err(|_| TrainError::Poisoned)??;
            let dir = args.out.join(&data.app_type).join(&settings.version);
            model.save(&dir)?;
            let gate = promote::gate(&cluster, &model, &data, args.validation_share, &window).await?;
            let mut trained = Trained::of(&model, dir.clone());
            if gate.promote && !args.no_promote {
                promote::announce(&cluster, &model, &dir).await?;
                trained.announced = true;
            }
            tracing::info!(app_type = %data.app_type, dir = %dir.display(), ?gate, announced = trained.announced, "model written");
            metrics.gated(&gate, trained.announced, trained.train_windows);
            trained.gate = Some(gate);
            written(&trained);
        }
        metrics.rounds.inc();
        metrics.round_seconds.observe(round.elapsed().as_secs_f64());
        metrics
            .last_success_seconds
            .set(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
        let Some(every) = args.every else { break };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    Ok(())
}

/// The detector's window, with training's hop.
fn window_of(args: &Args) -> WindowConfig {
    WindowConfig { hop_ms: args.hop.as_millis() as i64, ..WindowConfig::default() }
}

/// `--model-version`, or the UTC time now as `YYYYMMDDTHHMMSSZ`.
fn version_of(args: &Args) -> String {
    args.model_version.clone().unwrap_or_else(|| {
        let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        t.replace(['-', ':'], "")
    })
}

fn settings_of(args: &Args, version: String) -> Settings {
    Settings {
        model: Config { hidden: args.hidden as usize, layers: args.layers as usize, ..Config::default() },
        epochs: args.epochs as usize,
        batch_size: args.batch_size as usize,
        learning_rate: args.learning_rate,
        seed: args.seed,
        validation_share: args.validation_share,
        level_weight: args.level_weight,
        level_rows: fit::DEFAULT_LEVEL_ROWS,
        version,
    }
}

/// [`run`] without the runtime.
pub fn train_blocking(args: &Args, shutdown: &CancellationToken) -> Result<Vec<Trained>, TrainError> {
    let window = window_of(args);
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
        return Err(TrainError::Settings("train from --simulate, --csv or --brokers".to_owned()));
    };
    if args.simulate {
        if let Some(t) = &args.app_type {
            datasets.retain(|d| &d.app_type == t);
            if datasets.is_empty() {
                return Err(TrainError::NoSuchAppType(t.clone()));
            }
        }
    }
    let settings = settings_of(args, version_of(args));
    let mut out = Vec::new();
    for data in &datasets {
        tracing::info!(app_type = %data.app_type, windows = data.windows.len(), "training");
        let model = fit(data, &settings, shutdown)?;
        let dir = args.out.join(&data.app_type).join(&settings.version);
        model.save(&dir)?;
        tracing::info!(app_type = %data.app_type, dir = %dir.display(), "model written");
        out.push(Trained::of(&model, dir));
    }
    Ok(out)
}
