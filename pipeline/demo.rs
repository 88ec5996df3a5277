//! `augur demo`: the main job in one process, on the embedded mock cluster unless
//! `--brokers` names a real one.
//!
//! In: the size and seed of a simulated fleet. Out: the fleet's telemetry on
//! `<prefix>.telemetry`, the starter failure signatures on `<prefix>.signatures`, a
//! detector's alerts (DTW signatures and the LSTM anomaly score) on `<prefix>.alerts`
//! and the policy's adjustments on `<prefix>.adjustments`, applied by an actuator with
//! the `sim` backend and audited on `<prefix>.actuations`; and a report on stdout (JSON
//! as well with `--report`): how many injected failures were predicted, how long before
//! they happened, how many alerts hit healthy instances, what was adjusted and refused.
//! The simulated fleet does not yet respond to the adjustments, and the feedback loop
//! is still to join.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::message::Message;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::actuate::{self, sim::SimBackend, ActuateError};
use crate::codec::{Adjustment, Alert, Codec};
use crate::detect::{self, DetectError};
use crate::kafka::reader::{self, ReadError, Start};
use crate::kafka::{Cluster, ConnectError, KafkaArgs};
use crate::signatures::{starter, store};
use crate::simulate::score::{score, Score};
use crate::simulate::{self, SimulateError, Speed};

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
    #[error("starter signatures: {0}")]
    Signatures(String),
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

/// What the demo did, printed at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub embedded_cluster: bool,
    pub instances: usize,
    pub simulated_hours: f64,
    pub records_produced: u64,
    /// Records the detector processed and committed.
    pub records_detected: i64,
    pub signatures: usize,
    pub failures_injected: usize,
    /// Alerts by kind (SIGNATURE, OFFLINE, RECOVERED, ...).
    pub alerts: BTreeMap<String, usize>,
    pub score: Score,
    pub actuation: Actuations,
    pub wall_seconds: f64,
}

/// What the policy decided and the actuator did with it.
#[derive(Debug, Clone, Serialize)]
pub struct Actuations {
    /// Adjustments the detector's policy decided.
    pub decided: u64,
    pub applied: u64,
    /// Found already in place by their fence (after a crash), not made again.
    pub duplicate: u64,
    /// Stopped by the guardrails (or the target), with the reason in the audit.
    pub refused: u64,
    pub failed: u64,
    /// Changes made more than once for one adjustment: must be 0.
    pub duplicate_effects: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cluster = if self.embedded_cluster { "embedded mock cluster" } else { "Kafka cluster" };
        let s = &self.score;
        writeln!(f, "augur demo on the {cluster}, {:.1} s", self.wall_seconds)?;
        writeln!(
            f,
            "  fleet                      {} instances, {:.1} h simulated",
            self.instances, self.simulated_hours
        )?;
        writeln!(
            f,
            "  telemetry records          {} produced, {} detected",
            self.records_produced, self.records_detected
        )?;
        writeln!(f, "  failure signatures         {}", self.signatures)?;
        writeln!(f, "  failures injected          {} ({} happened)", self.failures_injected, s.failures_happened)?;
        writeln!(f, "  predicted before failure   {} of {}", s.failures_predicted, s.failures_happened)?;
        for (kind, k) in &s.by_kind {
            let lead = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("{:.0} s", x));
            writeln!(
                f,
                "    {kind:<24} {} of {}, lead median {}, p10 {}",
                k.predicted,
                k.happened,
                lead(k.lead_median_s),
                lead(k.lead_p10_s)
            )?;
        }
        writeln!(
            f,
            "  false alarms               {} ({:.2} per 100 healthy instance-hours)",
            s.false_alarms, s.false_alarms_per_100_instance_hours
        )?;
        writeln!(
            f,
            "  crashes seen offline       {} of {} (median {} after the crash)",
            s.crashes_detected_offline,
            s.failures_happened,
            s.offline_delay_median_s.map_or("-".to_owned(), |x| format!("{x:.0} s"))
        )?;
        let alerts: Vec<String> = self.alerts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(f, "  alerts                     {}", alerts.join(", "))?;
        let a = &self.actuation;
        writeln!(
            f,
            "  adjustments                {} decided, {} applied, {} refused by guardrails, {} failed",
            a.decided, a.applied, a.refused, a.failed
        )?;
        writeln!(f, "  duplicate effects          {}", a.duplicate_effects)
    }
}

/// How long the detector may make no progress before the demo gives up.
const STALL_LIMIT: Duration = Duration::from_secs(60);

pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Report, DemoError> {
    let began = Instant::now();
    // Refuse an unwritable report path before doing any work.
    let report_file = match &args.report {
        Some(path) => {
            Some(std::fs::File::create(path).map_err(|source| DemoError::Report { path: path.clone(), source })?)
        }
        None => None,
    };
    let cluster = Cluster::open(&args.kafka.config())?;

    // 1. The fleet's telemetry, and its ground truth.
    let sim = simulate::Args {
        instances: args.instances,
        duration: args.duration,
        seed: args.seed,
        speed: Speed::Max,
        interval: Duration::from_secs(10),
        start: None,
        failure_fraction: 0.3,
        kinds: Vec::new(),
        ground_truth: None,
        partitions: 6,
        kafka: args.kafka.clone(),
    };
    let summary = simulate::run_on(&cluster, sim, shutdown.clone()).await?;

    // 2. The starter failure signatures.
    let library = starter::library().map_err(|e| DemoError::Signatures(e.to_string()))?;
    let signatures: Vec<_> = library.into_iter().map(|l| l.signature).collect();
    store::import(&cluster, &signatures).await.map_err(|e| DemoError::Signatures(e.to_string()))?;

    // 3. A detector, until it has processed every record.
    let group = format!("augur-demo-{}", std::process::id());
    tracing::info!(signatures = signatures.len(), "starter signatures imported; detecting");
    // The detector's defaults, as `augur detect` has them.
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        args: detect::Args,
    }
    let mut detect_args = Defaults::parse_from(["detect", "--group", &group, "--replica-id", "demo"]).args;
    detect_args.kafka = args.kafka.clone();
    let window = detect_args.window_config().map_err(DetectError::from)?;
    let stop = shutdown.child_token();
    let committed = Arc::new(AtomicU64::new(0));
    let detector = detect::run_on(&cluster, detect_args, "demo".to_owned(), window, committed.clone(), stop.clone());
    let watcher = wait_for("detector", &committed, summary.records, stop.clone());
    // Whichever ends first ends the other: the watcher when every record is processed,
    // the detector when it fails.
    let (detected, watched) = tokio::join!(
        async {
            let r = detector.await;
            stop.cancel();
            r
        },
        async {
            let r = watcher.await;
            stop.cancel();
            r
        }
    );
    detected?;
    let records_detected = watched?;

    // 4. An actuator with the `sim` backend, until every adjustment is audited.
    let config = cluster.client_config();
    let adjustments_topic = cluster.topic::<Adjustment>();
    let decided =
        tokio::task::spawn_blocking(move || reader::read_to_end(&config, &adjustments_topic, Start::Beginning, |_| {}))
            .await??;
    let sim = SimBackend::default();
    let actuated = Arc::new(AtomicU64::new(0));
    let stop = shutdown.child_token();
    #[derive(Parser)]
    struct ActuateDefaults {
        #[command(flatten)]
        args: actuate::Args,
    }
    let mut actuate_args = ActuateDefaults::parse_from([
        "actuate",
        "--backend",
        "sim",
        "--group",
        &format!("{group}-actuate"),
        "--replica-id",
        "demo",
    ])
    .args;
    actuate_args.kafka = args.kafka.clone();
    let actuator = actuate::run_on(&cluster, actuate_args, sim.clone(), actuated.clone(), stop.clone());
    let watcher = wait_for("actuator", &actuated, decided, stop.clone());
    let (totals, _) = tokio::join!(
        async {
            let r = actuator.await;
            stop.cancel();
            r
        },
        async {
            let r = watcher.await;
            stop.cancel();
            r
        }
    );
    let totals = totals?;
    let count = |r: &str| totals.by_result.get(r).copied().unwrap_or(0);
    let actuation = Actuations {
        decided,
        applied: count("applied"),
        duplicate: count("duplicate"),
        refused: count("refused"),
        failed: count("failed"),
        // A change the simulated fleet made beyond one per applied adjustment.
        duplicate_effects: sim.fleet.changes().saturating_sub(count("applied")),
    };

    // 5. The alerts, scored against the ground truth.
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
    let report = Report {
        embedded_cluster: cluster.is_embedded(),
        instances: summary.instances,
        simulated_hours: hours,
        records_produced: summary.records,
        records_detected,
        signatures: signatures.len(),
        failures_injected: summary.failures_injected,
        alerts: by_kind,
        score: score(&summary.ground_truth, &alerts, summary.instances, hours),
        actuation,
        wall_seconds: began.elapsed().as_secs_f64(),
    };
    if let (Some(path), Some(file)) = (&args.report, report_file) {
        serde_json::to_writer_pretty(file, &report)
            .map_err(|e| DemoError::Report { path: path.clone(), source: e.into() })?;
    }
    Ok(report)
}

/// Waits until the detector has committed `total` records; returns how many it did.
/// Logs progress; fails if the detector stops making progress.
async fn wait_for(
    stage: &'static str,
    committed: &AtomicU64,
    total: u64,
    stop: CancellationToken,
) -> Result<i64, DemoError> {
    if total == 0 {
        return Ok(0);
    }
    let (mut last, mut last_change) = (u64::MAX, Instant::now());
    let mut logged = Instant::now();
    loop {
        let done = committed.load(Ordering::Relaxed);
        if done >= total || stop.is_cancelled() {
            return Ok(done as i64);
        }
        if done != last {
            (last, last_change) = (done, Instant::now());
        } else if last_change.elapsed() > STALL_LIMIT {
            return Err(DemoError::Stalled { stage, done: done as i64, total, idle: STALL_LIMIT });
        }
        if logged.elapsed() >= Duration::from_secs(5) {
            logged = Instant::now();
            tracing::info!(stage, done, of = total, "progress");
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
