//! `augur demo`: the main job in one process, on the embedded mock cluster unless
//! `--brokers` names a real one.
//!
//! In: the size and seed of a simulated fleet. Out: the whole loop on the cluster — the
//! fleet's telemetry on `<prefix>.telemetry`, the starter failure signatures on
//! `<prefix>.signatures`, a detector's alerts (DTW signatures and the LSTM anomaly
//! score) on `<prefix>.alerts` and its policy's adjustments on `<prefix>.adjustments`,
//! applied to the simulated fleet by the actuator's code with the `sim` backend and
//! audited on `<prefix>.actuations` — and a [`Report`] on stdout (JSON as well with
//! `--report`): failures injected, predicted (lead times), averted against a holdout
//! left unadjusted, false alarms, adjustments decided / applied / refused, duplicate
//! effects. The loop is stepped in event time ([`stepper`]), so a seed gives the same
//! report on the embedded cluster and on a real one.

mod charts;
mod feedback;
mod report;
mod stepper;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::actuate::ActuateError;
use crate::codec::{
    Actuation, Adjustment, Alert, AlertKind, Codec, FailureSignature, FeedbackOutcome, TelemetrySample,
};
use crate::detect::{self, DetectError};
use crate::kafka::reader::{self, ReadError, Start};
use crate::kafka::table::Entry;
use crate::kafka::{Cluster, ConnectError, KafkaArgs, PublishError, Retention, TopicSpec};
use crate::signatures::{starter, store};
use crate::simulate::score::score;
use crate::simulate::{self, ConfigError, Fleet, SimulateError, Speed};

pub use feedback::{FeedbackSummary, TunedLine};
pub use report::{KindReport, Report};
pub use stepper::Holdout;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Number of simulated instances.
    #[arg(long, value_name = "N", default_value = "60", value_parser = simulate::parse_instances)]
    pub instances: usize,
    /// Simulated time to cover, e.g. `90m`, `3h`.
    #[arg(long, value_name = "D", default_value = "3h", value_parser = simulate::parse_positive_duration)]
    pub duration: Duration,
    /// Seed of the simulated fleet: the same seed gives the same run.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Write the report as JSON to this file as well.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Draw, per failure kind, one instance's telemetry, anomaly score, signature
    /// confidence and adjustments into this directory (SVG, one file per chart).
    #[arg(long, value_name = "DIR")]
    pub charts: Option<PathBuf>,
    /// Share of instances whose adjustments are deliberately not made, so the report
    /// can compare the adjusted failures with doing nothing.
    #[arg(long, value_name = "F", default_value = "0.25", value_parser = parse_fraction)]
    pub holdout: f64,
    /// Share of instances that get one injected failure, 0 to 1.
    #[arg(long, value_name = "F", default_value = "0.3", value_parser = parse_fraction)]
    pub failure_fraction: f64,
    /// Failure kinds to inject, comma-separated, dealt to the failing instances in
    /// turn. Default: all.
    #[arg(long, value_name = "LIST", value_enum, value_delimiter = ',')]
    pub kinds: Vec<simulate::FailureKind>,
    /// Set the threshold of the starter signatures named NAME (e.g. `memory_leak`, every
    /// application type's) or keyed KEY (`web/*/memory_leak`) to VALUE before the run:
    /// how to watch the feedback loop correct a mis-set one. Repeatable.
    #[arg(long = "threshold", value_name = "NAME=VALUE", value_parser = parse_threshold)]
    pub thresholds: Vec<(String, f64)>,
    /// Run without the feedback loop: nothing is tuned.
    #[arg(long)]
    pub no_feedback: bool,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Actuate(#[from] ActuateError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Fleet(#[from] ConfigError),
    #[error(transparent)]
    Chart(#[from] crate::charts::ChartError),
    #[error("stopped before the end of the simulated time")]
    Stopped,
    #[error("starter signatures: {0}")]
    Signatures(String),
    #[error("feedback: {0}")]
    Feedback(String),
    #[error("a demo stage failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the {stage} processed {done} of {total} records and then made no progress for {idle:?}")]
    Stalled { stage: &'static str, done: i64, total: u64, idle: Duration },
    #[error("report {path}: {source}")]
    Report {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn parse_threshold(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    match value.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) && !name.is_empty() => Ok((name.to_owned(), v)),
        _ => Err(format!("expected NAME=VALUE with VALUE from 0 to 1, got {s:?}")),
    }
}

/// Sets the thresholds `--threshold` names; an entry that names no signature is an
/// error that lists the names there are.
fn set_thresholds(signatures: &mut [FailureSignature], wanted: &[(String, f64)]) -> Result<(), DemoError> {
    for (name, value) in wanted {
        let mut found = false;
        for s in signatures.iter_mut().filter(|s| &s.name == name || &s.key() == name) {
            s.threshold = *value;
            found = true;
        }
        if !found {
            let mut names: Vec<&str> = signatures.iter().map(|s| s.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            return Err(DemoError::Signatures(format!(
                "--threshold {name}: no starter signature is named or keyed so; names: {}",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("must be a number from 0 to 1, got {s:?}")),
    }
}

pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Report, DemoError> {
    let began = Instant::now();
    // Refuse an unwritable report path before doing any work.
    let report_file = match &args.report {
        Some(path) => {
            Some(std::fs::File::create(path).map_err(|source| DemoError::Report { path: path.clone(), source })?)
        }
        None => None,
    };
    if let Some(dir) = &args.charts {
        crate::charts::prepare(dir)?;
    }
    let cluster = Cluster::open(&args.kafka.config())?;

    // The fleet: 30 % of its instances get a failure (by default), every kind in turn.
    let sim = simulate::Args {
        instances: args.instances,
        duration: args.duration,
        seed: args.seed,
        speed: Speed::Max,
        interval: Duration::from_secs(10),
        start: None,
        failure_fraction: args.failure_fraction,
        kinds: args.kinds.clone(),
        ground_truth: None,
        partitions: 6,
        kafka: args.kafka.clone(),
    };
    // The run starts at a midnight (UTC) and ends before now: the fleet's day has the
    // same phase in every run of a seed, and no timestamp is in the future.
    let day_ms = 86_400_000;
    let start_ms = (crate::actuate::apply::wall_ms() - args.duration.as_millis() as i64).div_euclid(day_ms) * day_ms;
    let sim = simulate::Args { start: Some(start_ms), ..sim };
    let fleet = Fleet::new(sim.fleet_config(start_ms)?)?;
    let steps = fleet.config().steps() as u64;
    let spec = |name, retention| TopicSpec { name, partitions: sim.partitions, retention };
    cluster
        .ensure_topics(&[
            spec(cluster.topic::<TelemetrySample>(), Retention::Log),
            spec(cluster.topic::<Adjustment>(), Retention::Log),
            spec(cluster.topic::<Actuation>(), Retention::Log),
            spec(cluster.topic::<FeedbackOutcome>(), Retention::Log),
        ])
        .await?;

    // The starter failure signatures.
    let library = starter::library().map_err(|e| DemoError::Signatures(e.to_string()))?;
    let mut signatures: Vec<_> = library.into_iter().map(|l| l.signature).collect();
    set_thresholds(&mut signatures, &args.thresholds)?;
    store::import(&cluster, &signatures).await.map_err(|e| DemoError::Signatures(e.to_string()))?;

    // A detector with the defaults of `augur detect`, but short batches: the loop
    // waits for it every simulated minute.
    let group = format!("augur-demo-{}", std::process::id());
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        args: detect::Args,
    }
    let mut detect_args =
        Defaults::parse_from(["detect", "--group", &group, "--replica-id", "demo", "--batch-wait", "10ms"]).args;
    detect_args.kafka = args.kafka.clone();
    let window = detect_args.window_config().map_err(DetectError::from)?;
    let stop = shutdown.child_token();
    let detected = Arc::new(AtomicU64::new(0));
    let detector =
        detect::run_on(&cluster, detect_args, "demo".to_owned(), window.clone(), detected.clone(), stop.clone());

    let holdout = Holdout { seed: args.seed, fraction: args.holdout };
    // Each signature's own threshold, as imported: where tuning starts from.
    let own: BTreeMap<String, f64> = signatures.iter().map(|s| (s.key(), s.threshold)).collect();
    let feedback = match args.no_feedback {
        true => None,
        false => Some(feedback::FeedbackLoop::new(&cluster, own.clone())?),
    };
    let mut stepper = stepper::Stepper::new(&cluster, fleet, detected.clone(), holdout, feedback).await?;
    tracing::info!(signatures = signatures.len(), steps, instances = args.instances, "the loop begins");
    let progress = Progress::new(steps);
    // Whichever ends first ends the other: the loop when the simulated time is over,
    // the detector when it fails.
    let (detected_run, looped) = tokio::join!(
        async {
            let r = detector.await;
            stop.cancel();
            r
        },
        async {
            let r = async {
                while stepper.turn(&cluster, &stop).await? {
                    progress.set(stepper.fleet.step(), &stepper);
                }
                Ok::<_, DemoError>(())
            }
            .await;
            stop.cancel();
            r
        }
    );
    progress.finish();
    detected_run?;
    looped?;

    // The alerts, scored against the ground truth.
    let config = cluster.client_config();
    let topic = cluster.topic::<Alert>();
    let alerts = tokio::task::spawn_blocking(move || {
        let codec = Codec::<Alert>::new();
        let mut alerts = Vec::new();
        reader::read_to_end(&config, &topic, Start::Beginning, |m| {
            if let Some(Ok(a)) = m.payload().map(|p| codec.decode(p)) {
                alerts.push(a);
            }
        })?;
        Ok::<_, ReadError>(alerts)
    })
    .await??;
    let hours = args.duration.as_secs_f64() / 3600.0;
    let mut by_kind = BTreeMap::new();
    for a in &alerts {
        *by_kind.entry(a.kind.name().to_ascii_uppercase()).or_insert(0) += 1;
    }
    let truth = stepper.fleet.ground_truth().to_vec();
    let run = report::Run {
        truth: &truth,
        score: score(&truth, &alerts, args.instances, hours),
        audits: &stepper.audits,
        holdout,
        alerts: by_kind,
        changes_made: stepper.backend.fleet.changes(),
        start_ms,
    };
    let context = Report {
        embedded_cluster: cluster.is_embedded(),
        records_produced: stepper.produced,
        records_detected: detected.load(std::sync::atomic::Ordering::Relaxed),
        signatures: signatures.len(),
        ..Report::context(args.seed, args.instances, hours, args.holdout)
    };
    let mut report = Report::new(run, context);
    report.feedback = stepper.feedback.as_ref().map(|f| f.summary(start_ms));
    report.caught_under_own_threshold = caught_under_own_threshold(&truth, &alerts, &own);
    if let Some(dir) = &args.charts {
        report.charts = charts::draw_all(dir, &stepper, &report, &window, start_ms)?;
    }
    report.wall_seconds = began.elapsed().as_secs_f64();
    if let (Some(path), Some(file)) = (&args.report, report_file) {
        serde_json::to_writer_pretty(file, &report)
            .map_err(|e| DemoError::Report { path: path.clone(), source: e.into() })?;
    }
    Ok(report)
}

/// Injected failures a signature alert predicted with a confidence under that
/// signature's own threshold: caught only because the feedback loop lowered it.
fn caught_under_own_threshold(truth: &[simulate::GroundTruth], alerts: &[Alert], own: &BTreeMap<String, f64>) -> usize {
    truth
        .iter()
        .filter(|t| {
            let due = t.failure_ms.unwrap_or(t.expected_failure_ms);
            alerts.iter().any(|a| {
                a.instance_id == t.instance
                    && a.kind == AlertKind::Signature
                    && a.window_end_ms <= due
                    && a.window_end_ms >= t.onset_ms
                    && a.signature.as_ref().and_then(|s| own.get(s)).is_some_and(|&own| a.confidence < own)
            })
        })
        .count()
}

/// A bar on a terminal, a log line every few seconds otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    logged: std::sync::Mutex<Instant>,
    steps: u64,
}

impl Progress {
    fn new(steps: u64) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(steps);
            let style = indicatif::ProgressStyle::with_template("demo [{bar:30}] {pos}/{len} steps, {eta} left, {msg}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Self { bar, logged: std::sync::Mutex::new(Instant::now()), steps }
    }

    fn set(&self, step: u64, s: &stepper::Stepper) {
        let happened = s.fleet.ground_truth().iter().filter(|g| g.failure_ms.is_some()).count();
        let a = &s.audits;
        let msg = format!("{} adjustments, {} failures so far", a.decided, happened);
        if let Some(bar) = &self.bar {
            bar.set_position(step);
            bar.set_message(msg);
            return;
        }
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.elapsed() >= Duration::from_secs(5) {
            *logged = Instant::now();
            tracing::info!(step, of = self.steps, adjustments = a.decided, failures = happened, "progress");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
