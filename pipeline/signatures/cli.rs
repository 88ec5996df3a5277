//! `augur signatures`: the command line of the signature database.
//!
//! In: a subcommand and its flags. Out: `import` writes signature files (or the
//! starter library) to the table and prints `{"imported": N, "topic": ..}`; `list`
//! prints one JSON line per signature, sorted by key; `delete` writes a tombstone and
//! prints `{"deleted": KEY}`; `extract` writes a signature file (to `--out` or stdout)
//! and prints its calibration summary as one JSON line (stdout with `--out`, the log
//! otherwise). Nothing is written to Kafka unless everything given is valid.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::extract::{self, ExtractError, ExtractRequest};
use super::file::{self, LoadError};
use super::starter;
use super::store::{self, StoreError};
use super::table::{self, TableError};
use crate::codec::Normalisation;
use crate::kafka::{Cluster, ConnectError, KafkaArgs};

/// Flags of `augur signatures`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Validate signature files and write them all to the table, or none.
    Import(ImportArgs),
    /// Print every signature of the table as one JSON line, sorted by key.
    List(ListArgs),
    /// Delete one signature from the table (a tombstone on the compacted topic).
    Delete(DeleteArgs),
    /// Cut a signature from recorded telemetry and calibrate its threshold (no import).
    Extract(Box<ExtractArgs>),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// A signature file (an object, an array or JSON lines) or a directory of `*.json`
    /// files. Default: the starter library built into this binary (models/signatures/).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeleteArgs {
    /// Key of the signature: `app_type/function/name`, as `list` prints it.
    #[arg(value_name = "KEY")]
    pub key: String,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// Instance whose telemetry the signature is cut from.
    #[arg(long, value_name = "ID")]
    pub instance: String,
    /// When it failed: epoch milliseconds or RFC 3339 in UTC (`2024-05-01T12:00:00Z`).
    #[arg(long, value_name = "T", value_parser = parse_time)]
    pub until: i64,
    /// Length of the signature; a whole number of --step (64 steps of 10 s, the
    /// detector's window, by default).
    #[arg(long, value_name = "D", default_value = "10m 40s", value_parser = parse_duration_ms)]
    pub length: i64,
    /// How long before the failure the signature ends, so it matches while there is
    /// still time to act.
    #[arg(long, value_name = "D", default_value = "0s", value_parser = parse_duration_ms)]
    pub lead: i64,
    /// Step of the grid the telemetry is put on; the detector's windows use 10 s.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration_ms)]
    pub step: i64,
    /// The instance's telemetry before the window that counts as its normal, against
    /// which metrics are chosen.
    #[arg(long, value_name = "D", default_value = "30m", value_parser = parse_duration_ms)]
    pub baseline: i64,
    /// Telemetry after the failure to replay as well: healthy windows to calibrate on,
    /// and time to see which other instances went down (those are not healthy).
    #[arg(long, value_name = "D", default_value = "1h", value_parser = parse_duration_ms)]
    pub lookahead: i64,
    /// Name of the signature (no '/'). Default: `<kind>-<instance>`.
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// What failed, e.g. memory_leak, cpu_saturation, latency_creep, error_burst, io_stall.
    #[arg(long, value_name = "K", default_value = "unknown")]
    pub kind: String,
    /// Metrics to keep, comma-separated window features. Default: the 2 to 5 features
    /// that depart most from the instance's baseline (see `signatures::extract::select`).
    #[arg(long, value_name = "A,B,..", value_delimiter = ',')]
    pub metrics: Option<Vec<String>>,
    /// How each of --metrics is compared, comma-separated in their order. Default: each
    /// feature's own (request and byte rates by shape, the rest by level).
    #[arg(long, value_name = "M,M,..", value_delimiter = ',', value_enum)]
    pub normalisation: Option<Vec<Normalisation>>,
    /// Threshold to set, strictly between 0 and 1. Default: calibrated on healthy
    /// instances' windows (highest confidence plus --margin, within 0.5..0.95).
    #[arg(long, value_name = "X", value_parser = parse_threshold)]
    pub threshold: Option<f64>,
    /// Calibration: how far above the highest healthy confidence the threshold goes.
    #[arg(long, value_name = "X", default_value_t = 0.05)]
    pub margin: f64,
    /// App type of the signature. Default: the instance's.
    #[arg(long, value_name = "A")]
    pub app_type: Option<String>,
    /// Function of the signature, `*` for every function of its app type. Default: the
    /// instance's.
    #[arg(long, value_name = "F")]
    pub function: Option<String>,
    /// Write the signature here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

impl ExtractArgs {
    pub fn request(&self) -> ExtractRequest {
        ExtractRequest {
            instance: self.instance.clone(),
            until_ms: self.until,
            lead_ms: self.lead,
            length_ms: self.length,
            step_ms: self.step,
            baseline_ms: self.baseline,
            lookahead_ms: self.lookahead,
            name: self.name.clone(),
            failure_kind: self.kind.clone(),
            metrics: self.metrics.clone(),
            normalisation: self.normalisation.clone(),
            threshold: self.threshold,
            margin: self.margin,
            app_type: self.app_type.clone(),
            function: self.function.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignaturesError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing to stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error("interrupted")]
    Interrupted,
}

/// One line of `augur signatures list`.
#[derive(Debug, Serialize)]
struct Listed<'a> {
    key: &'a str,
    failure_kind: &'a str,
    metrics: &'a [String],
    points: usize,
    interval_ms: i64,
    threshold: f64,
    lead_ms: i64,
    source: &'a str,
}

/// Runs one subcommand, printing its result to `out`.
pub async fn run(args: Args, shutdown: CancellationToken, out: &mut impl Write) -> Result<(), SignaturesError> {
    let work = async {
        match args.command {
            Command::Import(a) => {
                let loaded = match &a.path {
                    Some(path) => file::load_path(path)?,
                    None => starter::library()?,
                };
                let signatures: Vec<_> = loaded.into_iter().map(|l| l.signature).collect();
                let cluster = Cluster::open(&a.kafka.config())?;
                let imported = store::import(&cluster, &signatures).await?;
                let topic = cluster.topic::<crate::codec::FailureSignature>();
                writeln!(out, "{}", serde_json::json!({ "imported": imported, "topic": topic }))?;
            }
            Command::List(a) => {
                let cluster = Cluster::open(&a.kafka.config())?;
                for (key, s) in table::read_table(&cluster).await?.iter() {
                    let line = Listed {
                        key,
                        failure_kind: &s.failure_kind,
                        metrics: &s.metrics,
                        points: s.series.first().map_or(0, Vec::len),
                        interval_ms: s.interval_ms,
                        threshold: s.threshold,
                        lead_ms: s.lead_ms,
                        source: &s.source,
                    };
                    writeln!(out, "{}", serde_json::to_string(&line).unwrap_or_default())?;
                }
            }
            Command::Delete(a) => {
                let cluster = Cluster::open(&a.kafka.config())?;
                store::delete(&cluster, &a.key).await?;
                writeln!(out, "{}", serde_json::json!({ "deleted": a.key }))?;
            }
            Command::Extract(a) => {
                let request = a.request();
                request.points()?;
                let cluster = Cluster::open(&a.kafka.config())?;
                let telemetry = extract::replay(&cluster, &request).await?;
                let extracted = extract::extract(&telemetry, &request)?;
                let text = file::to_pretty_json(&extracted.signature);
                let summary = serde_json::to_string(&extracted.summary()).unwrap_or_default();
                match &a.out {
                    Some(path) => {
                        std::fs::write(path, &text)
                            .map_err(|source| SignaturesError::Write { path: path.clone(), source })?;
                        writeln!(out, "{summary}")?;
                    }
                    None => {
                        out.write_all(text.as_bytes())?;
                        tracing::info!(%summary, "signature extracted");
                    }
                }
            }
        }
        out.flush()?;
        Ok(())
    };
    tokio::select! {
        result = work => result,
        _ = shutdown.cancelled() => Err(SignaturesError::Interrupted),
    }
}

/// Epoch milliseconds, or RFC 3339 in UTC.
pub fn parse_time(s: &str) -> Result<i64, String> {
    parse_time_at(s, SystemTime::now())
}

/// [`parse_time`] with the command's start as `now`: epoch milliseconds, RFC 3339, or
/// a time relative to `now` (`now`, `now-24h`, or `-24h`), so that a scheduled job can
/// say "the last day" without computing dates.
pub fn parse_time_at(s: &str, now: SystemTime) -> Result<i64, String> {
    let bad = || {
        format!("{s:?} is not epoch milliseconds, an RFC 3339 time like 2024-05-01T12:00:00Z, or relative to now like now-24h or -24h")
    };
    let s = s.trim();
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_millis()).ok());
    if let Some(ago) = s.strip_prefix("now").map(str::trim_start).or(Some(s)).and_then(|r| r.strip_prefix('-')) {
        let ago = humantime::parse_duration(ago.trim()).map_err(|e| format!("{}: {e}", bad()))?;
        return now.checked_sub(ago).and_then(ms).ok_or_else(bad);
    }
    if s == "now" {
        return ms(now).ok_or_else(bad);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| bad());
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| bad())?;
    ms(t).ok_or_else(bad)
}

/// A duration like `10m 40s` or `3m`, in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let d: Duration =
        humantime::parse_duration(s).map_err(|e| format!("{e}; expected a duration like 10s, 3m or 10m 40s"))?;
    i64::try_from(d.as_millis()).map_err(|_| "too long".to_owned())
}

fn parse_threshold(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x < 1.0 => Ok(x),
        _ => Err("must be a number strictly between 0 and 1".to_owned()),
    }
}
