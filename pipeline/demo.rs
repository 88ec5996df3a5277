//! `augur demo`: the main job in one process, on the embedded mock cluster unless
//! `--brokers` names a real one.
//!
//! In: the size and seed of a simulated fleet. Out: the fleet's telemetry on
//! `<prefix>.telemetry`, read back and checked (every record decodes, every instance's
//! sequence is whole), and a report on stdout (text, or JSON with `--report`). The
//! later stages of the loop (detector, policy, actuator, feedback) join this command as
//! they land; until then it demonstrates the agent-simulator-to-Kafka path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rdkafka::message::Message;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::codec::{Codec, TelemetrySample};
use crate::kafka::reader::{self, ReadError, Start};
use crate::kafka::{Cluster, ConnectError, KafkaArgs};
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
    Read(#[from] ReadError),
    #[error("reading the telemetry back: {0}")]
    Join(#[from] tokio::task::JoinError),
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
    pub records_produced: u64,
    pub records_read_back: u64,
    pub undecodable: u64,
    /// Instances whose sequence numbers, as read back, have a gap or disorder.
    pub instances_with_sequence_gaps: usize,
    pub failures_injected: usize,
    pub failures_happened: usize,
    /// Failures injected, by kind.
    pub failures_by_kind: BTreeMap<String, usize>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cluster = if self.embedded_cluster { "embedded mock cluster" } else { "Kafka cluster" };
        writeln!(f, "augur demo on the {cluster}")?;
        writeln!(f, "  instances simulated        {}", self.instances)?;
        writeln!(f, "  telemetry records produced {}", self.records_produced)?;
        writeln!(f, "  read back and decoded      {} ({} undecodable)", self.records_read_back, self.undecodable)?;
        writeln!(f, "  instances with seq gaps    {}", self.instances_with_sequence_gaps)?;
        writeln!(f, "  failures injected          {} ({} happened)", self.failures_injected, self.failures_happened)?;
        for (kind, n) in &self.failures_by_kind {
            writeln!(f, "    {kind:<24} {n}")?;
        }
        Ok(())
    }
}

pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Report, DemoError> {
    // Refuse an unwritable report path before doing any work.
    let report_file = match &args.report {
        Some(path) => Some(std::fs::File::create(path).map_err(|source| DemoError::Report { path: path.clone(), source })?),
        None => None,
    };
    let cluster = Cluster::open(&args.kafka.config())?;
    let truth_path = std::env::temp_dir().join(format!("augur-demo-truth-{}.jsonl", std::process::id()));
    let sim = simulate::Args {
        instances: args.instances,
        duration: args.duration,
        seed: args.seed,
        speed: Speed::Max,
        interval: Duration::from_secs(10),
        start: None,
        failure_fraction: 0.3,
        kinds: Vec::new(),
        ground_truth: Some(truth_path.clone()),
        partitions: 6,
        kafka: args.kafka.clone(),
    };
    let summary = simulate::run_on(&cluster, sim, shutdown).await?;
    let truth = std::fs::read_to_string(&truth_path).unwrap_or_default();
    let _ = std::fs::remove_file(&truth_path);
    let mut failures_by_kind = BTreeMap::new();
    for line in truth.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            let kind = v["kind"].as_str().unwrap_or("unknown").to_owned();
            *failures_by_kind.entry(kind).or_insert(0) += 1;
        }
    }

    tracing::info!(records = summary.records, "reading the telemetry back");
    let config = cluster.client_config();
    let topic = cluster.topic::<TelemetrySample>();
    let (read, undecodable, gaps) = tokio::task::spawn_blocking(move || {
        let codec = Codec::<TelemetrySample>::new();
        let mut last_seq: BTreeMap<String, i64> = BTreeMap::new();
        let mut gapped = std::collections::BTreeSet::new();
        let mut undecodable = 0u64;
        let read = reader::read_to_end(&config, &topic, Start::Beginning, |m| {
            match m.payload().map(|p| codec.decode(p)) {
                Some(Ok(s)) => {
                    let expected = last_seq.get(&s.instance_id).map_or(0, |l| l + 1);
                    if s.seq != expected {
                        gapped.insert(s.instance_id.clone());
                    }
                    last_seq.insert(s.instance_id, s.seq);
                }
                _ => undecodable += 1,
            }
        })?;
        Ok::<_, ReadError>((read, undecodable, gapped.len()))
    })
    .await??;

    let report = Report {
        embedded_cluster: cluster.is_embedded(),
        instances: summary.instances,
        records_produced: summary.records,
        records_read_back: read,
        undecodable,
        instances_with_sequence_gaps: gaps,
        failures_injected: summary.failures_injected,
        failures_happened: summary.failures_happened,
        failures_by_kind,
    };
    if let (Some(path), Some(file)) = (&args.report, report_file) {
        serde_json::to_writer_pretty(file, &report)
            .map_err(|e| DemoError::Report { path: path.clone(), source: e.into() })?;
    }
    Ok(report)
}
