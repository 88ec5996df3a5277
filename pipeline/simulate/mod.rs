//! `augur simulate`: a deterministic fleet of application instances that reports
//! telemetry, with failures injected and their ground truth written down.
//!
//! In: the flags of [`Args`] (fleet size, seed, simulated time, pacing, failures). Out:
//! one [`TelemetrySample`] per instance and step on `<prefix>.telemetry`, keyed by
//! instance id, with the Kafka timestamp set to the sample's event time; a JSON-lines
//! ground-truth file with one [`GroundTruth`] per injected failure; a [`Summary`].
//! Guarantees: the same flags (with `--start` given) produce byte-identical samples and
//! ground truth; each instance's `seq` counts up from 0 without gaps, across its
//! crashes too (the agent outlives the application); every sample is confirmed by the
//! cluster before `run` returns, also when it stops early on shutdown. The simulation
//! itself is the pure, synchronous [`Fleet`], which tests and the demo drive directly
//! and to which actuations can be applied ([`Fleet::apply`]).

mod fleet;
mod model;
mod profile;
mod scenario;
pub mod score;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::codec::TelemetrySample;
use crate::kafka::{Cluster, ConnectError, KafkaArgs, PublishError, Publisher, Retention, TopicSpec};

pub use fleet::{
    ApplyError, Change, ConfigError, Fleet, FleetConfig, GroundTruth, Instance, Resources, MAX_INSTANCES,
    MIN_STEPS_WITH_FAILURES,
};
pub use profile::nominal_limits;
pub use scenario::FailureKind;

/// Flags of `augur simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Number of simulated instances (web, database, cache and worker functions).
    #[arg(long, value_name = "N", default_value = "20", value_parser = parse_instances, allow_negative_numbers = true)]
    pub instances: usize,
    /// Simulated time to cover, e.g. `90s`, `3h`, `2days`.
    #[arg(long, value_name = "D", default_value = "1h", value_parser = parse_positive_duration)]
    pub duration: Duration,
    /// Seed of every random draw: the same flags give the same records.
    #[arg(long, value_name = "S", default_value_t = 1, allow_negative_numbers = true)]
    pub seed: u64,
    /// Pacing: simulated seconds per wall-clock second, or `max` to produce as fast as
    /// the cluster takes it.
    #[arg(long, value_name = "X|max", default_value = "max", value_parser = parse_speed, allow_negative_numbers = true)]
    pub speed: Speed,
    /// Time between two samples of an instance, from `1s` to `1h`.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Event time of the first sample: epoch milliseconds or RFC 3339 in UTC
    /// (`2024-05-01T12:00:00Z`). Default: now minus --duration with `--speed max` (all
    /// timestamps in the past), now otherwise. Give it for byte-identical reruns.
    #[arg(long, value_name = "T", value_parser = parse_start, allow_negative_numbers = true)]
    pub start: Option<i64>,
    /// Share of instances that get one injected failure, 0 to 1.
    #[arg(long, value_name = "F", default_value = "0.3", value_parser = parse_fraction, allow_negative_numbers = true)]
    pub failure_fraction: f64,
    /// Failure kinds to inject, comma-separated, dealt to the failing instances in
    /// turn. Default: all.
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',')]
    pub kinds: Vec<FailureKind>,
    /// Write the ground truth here: one JSON object per injected failure (instance,
    /// kind, onset_ms, failure_ms, expected_failure_ms, app_type, function); failure_ms
    /// is null if the failure had not happened by the end of the run.
    #[arg(long, value_name = "FILE")]
    pub ground_truth: Option<PathBuf>,
    /// Partitions of the telemetry topic, if this command creates it.
    #[arg(long, value_name = "N", default_value = "6", value_parser = crate::kafka::parse_partitions, allow_negative_numbers = true)]
    pub partitions: i32,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// How fast simulated time passes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the cluster accepts records.
    Max,
    /// Simulated seconds per wall-clock second.
    Factor(f64),
}

/// Slowest pacing accepted: a 366-day run then lasts a millennium, which still fits an `Instant`.
const MIN_SPEED: f64 = 0.001;

pub(crate) fn parse_instances(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_INSTANCES).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {MAX_INSTANCES}")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; expected a duration like 90s or 3h"))
}

pub(crate) fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be longer than zero".to_owned()),
        d if d.as_millis() > fleet::MAX_DURATION_MS as u128 => Err("must be at most 366 days".to_owned()),
        d => Ok(d),
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let ms = d.as_millis();
    if !(fleet::MIN_INTERVAL_MS as u128..=fleet::MAX_INTERVAL_MS as u128).contains(&ms) {
        return Err("must be from 1s to 1h".to_owned());
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err("must be a whole number of milliseconds".to_owned());
    }
    Ok(d)
}

fn parse_speed(s: &str) -> Result<Speed, String> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(Speed::Max);
    }
    match s.parse::<f64>() {
        // Slower than a thousandth of real time would make a sample wait for days.
        Ok(x) if x.is_finite() && x >= MIN_SPEED => Ok(Speed::Factor(x)),
        Ok(x) if x.is_finite() && x > 0.0 => Err(format!("must be at least {MIN_SPEED} or 'max'")),
        _ => Err("must be a positive number or 'max'".to_owned()),
    }
}

fn parse_start(s: &str) -> Result<i64, String> {
    let bad = || "must be epoch milliseconds or an RFC 3339 time in UTC like 2024-05-01T12:00:00Z".to_owned();
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| bad());
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| bad())?;
    let ms = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_millis();
    i64::try_from(ms).map_err(|_| bad())
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err("must be a number from 0 to 1".to_owned()),
    }
}

impl Args {
    /// The fleet these flags describe, with the start time resolved against `now_ms`
    /// (aligned down to the interval, so timestamps read well). Checks the flags
    /// against each other; each flag alone was checked when it was parsed.
    pub fn fleet_config(&self, now_ms: i64) -> Result<FleetConfig, ConfigError> {
        let interval_ms = self.interval.as_millis() as i64;
        let duration_ms = self.duration.as_millis().min(i64::MAX as u128) as i64;
        let start_ms = self.start.unwrap_or_else(|| {
            let now = now_ms - now_ms.rem_euclid(interval_ms.max(1));
            match self.speed {
                Speed::Max => now - duration_ms,
                Speed::Factor(_) => now,
            }
        });
        let kinds = if self.kinds.is_empty() { FailureKind::ALL.to_vec() } else { self.kinds.clone() };
        let config = FleetConfig {
            instances: self.instances,
            seed: self.seed,
            start_ms,
            interval_ms,
            duration_ms,
            failure_fraction: self.failure_fraction,
            kinds,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Why a simulation run stopped without a [`Summary`].
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("ground truth {path}: {source}")]
    GroundTruth {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Records confirmed by the cluster.
    pub records: u64,
    /// Instances simulated.
    pub instances: usize,
    /// Failures injected (lines of the ground truth).
    pub failures_injected: usize,
    /// Injected failures whose condition was reached before the run ended.
    pub failures_happened: usize,
    /// Event time of the first and last record produced, epoch ms.
    pub first_timestamp_ms: Option<i64>,
    pub last_timestamp_ms: Option<i64>,
    /// Shutdown was requested before the end of the simulated time.
    pub stopped_early: bool,
    /// The injected failures, as `--ground-truth` writes them (not in the summary line).
    #[serde(skip)]
    pub ground_truth: Vec<GroundTruth>,
}

/// How long the final flush may take before the run reports it as failed.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Simulates the fleet of `args` and produces its telemetry; stops early (flushing
/// what was produced and writing the ground truth so far) when `shutdown` is cancelled.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Summary, SimulateError> {
    let cluster = Cluster::open(&args.kafka.config())?;
    run_on(&cluster, args, shutdown).await
}

/// [`run`] on a cluster the caller holds open (the demo keeps the embedded cluster
/// alive for the stages that read the telemetry back).
pub async fn run_on(cluster: &Cluster, args: Args, shutdown: CancellationToken) -> Result<Summary, SimulateError> {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let config = args.fleet_config(now_ms)?;
    // Refuse an unwritable ground-truth path before simulating anything.
    let mut truth_file = match &args.ground_truth {
        Some(path) => Some((
            path,
            std::fs::File::create(path).map_err(|source| SimulateError::GroundTruth { path: path.clone(), source })?,
        )),
        None => None,
    };
    let mut fleet = Fleet::new(config)?;

    let topic = cluster.topic::<TelemetrySample>();
    cluster
        .ensure_topics(&[TopicSpec { name: topic.clone(), partitions: args.partitions, retention: Retention::Log }])
        .await?;
    let mut publisher = Publisher::<TelemetrySample>::new(&cluster.producer_config(), topic.clone())?;
    tracing::info!(
        %topic,
        instances = fleet.config().instances,
        steps = fleet.config().steps(),
        failures = fleet.ground_truth().len(),
        start_ms = fleet.config().start_ms,
        "simulating"
    );

    let (mut first, mut last) = (None, None);
    let mut stopped_early = false;
    let wall_start = tokio::time::Instant::now();
    let start_ms = fleet.config().start_ms;
    while let Some(t) = fleet.next_timestamp_ms() {
        if let Speed::Factor(x) = args.speed {
            let due = wall_start + Duration::from_secs_f64((t - start_ms) as f64 / 1000.0 / x);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        if shutdown.is_cancelled() {
            stopped_early = true;
            break;
        }
        let Some(samples) = fleet.tick() else { break };
        for sample in &samples {
            publisher.publish(&sample.instance_id, sample, sample.timestamp_ms).await?;
        }
        if !samples.is_empty() {
            first.get_or_insert(t);
            last = Some(t);
        }
    }
    let records = publisher.flush(FLUSH_TIMEOUT).await?;

    if let Some((path, file)) = truth_file.as_mut() {
        let err = |source| SimulateError::GroundTruth { path: path.to_path_buf(), source };
        write_ground_truth(file, fleet.ground_truth()).map_err(err)?;
    }
    let summary = Summary {
        records,
        instances: fleet.config().instances,
        failures_injected: fleet.ground_truth().len(),
        failures_happened: fleet.ground_truth().iter().filter(|g| g.failure_ms.is_some()).count(),
        first_timestamp_ms: first,
        last_timestamp_ms: last,
        stopped_early,
        ground_truth: fleet.ground_truth().to_vec(),
    };
    tracing::info!(records, failures_happened = summary.failures_happened, stopped_early, "simulation done");
    Ok(summary)
}

/// One JSON object per line, in instance order.
pub fn write_ground_truth(out: &mut impl Write, truth: &[GroundTruth]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(out);
    for g in truth {
        serde_json::to_writer(&mut out, g)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests;
