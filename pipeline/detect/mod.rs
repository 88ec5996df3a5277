//! `augur detect`: telemetry in, alerts out, exactly once.
//!
//! In: `<prefix>.telemetry`, shared by every member of the consumer group `--group`,
//! the failure-signature table `<prefix>.signatures` and the model table
//! `<prefix>.models`, which every member loads whole and follows (models not announced
//! there come from `--models`, the shipped ones by default). Out: `<prefix>.alerts`
//! (signature matches, anomaly scores in the upper tiers, instances gone offline or
//! recovered) and `<prefix>.dlq` (records that do not decode or are out of
//! bounds, with the reason), written in one Kafka transaction with the consumed
//! offsets. Outputs are a deterministic function of each partition's records, so a
//! detector killed and restarted any number of times emits exactly the records of one
//! that never stopped.
//!
//! [`dtw`] is the matching kernel, [`matcher`] applies it to a window, [`confidence`]
//! turns a distance into 0..1, [`lstm`] is the anomaly model and [`models`] the set in
//! use, [`validate`] admits records, [`partition`] processes one partition, [`engine`]
//! is the Kafka loop.

pub mod confidence;
pub mod dtw;
pub mod engine;
pub mod lstm;
pub mod matcher;
pub mod metrics;
pub mod models;
pub mod partition;
pub mod validate;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::codec::{
    Adjustment, Alert, Codec, DeadLetter, FailureSignature, ModelAnnouncement, TelemetrySample, TunedValue,
    WindowEvidence,
};
use crate::feedback::Tuning;
use crate::kafka::{Cluster, ConnectError, KafkaArgs, Retention, TopicSpec};
use crate::observe::Readiness;
use crate::policy::Policies;
use crate::signatures::SignatureTable;
use crate::window::liveness::LivenessConfig;
use crate::window::{WindowConfig, WindowError, Windows};
use engine::{EngineConfig, EngineError, Judges, Totals};
use matcher::Matcher;
use models::{ModelSet, ModelTable, Models};
use partition::{Judge, Shared};

/// Sakoe-Chiba radius of signature matching, in window steps: a minute of warp at the
/// default 10 s step, enough for failures that develop a little faster or slower.
pub const DTW_RADIUS: usize = 6;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Consumer group; offsets are committed under it, so any Kafka admin tool reads the lag.
    #[arg(long, env = "AUGUR_GROUP", default_value = "augur-detect", value_name = "G")]
    pub group: String,
    /// This replica's stable name (a pod name): its transactional id is
    /// `augur-detect.<group>.<replica-id>`, so a restarted replica fences its previous
    /// self. Two live replicas must not share it. [default: the host name]
    #[arg(long, env = "AUGUR_REPLICA_ID", value_name = "NAME")]
    pub replica_id: Option<String>,
    /// Threads that process partitions [default: the cores this process may use].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
    /// Points of a window (its length is points × step).
    #[arg(long, default_value = "64", value_name = "N")]
    pub points: usize,
    /// Time between two points of a window.
    #[arg(long, default_value = "10s", value_name = "D", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Windows close every hop of event time, at multiples of it.
    #[arg(long, default_value = "1m", value_name = "D", value_parser = humantime::parse_duration)]
    pub hop: Duration,
    /// How late (behind the instance's newest sample) a sample may arrive and still be placed.
    #[arg(long, default_value = "30s", value_name = "D", value_parser = humantime::parse_duration)]
    pub lateness: Duration,
    /// An instance silent this long (in event time) is forgotten.
    #[arg(long, default_value = "30m", value_name = "D", value_parser = humantime::parse_duration)]
    pub idle_expiry: Duration,
    /// A sample further ahead of its partition's event time than this goes to the DLQ.
    /// Small, because one agent with a clock far ahead would drag the partition's clock
    /// with it and make every other instance of the partition look silent.
    #[arg(long, default_value = "2m", value_name = "D", value_parser = humantime::parse_duration)]
    pub max_future: Duration,
    /// Records per transaction at most.
    #[arg(long, default_value = "5000", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_max: u32,
    /// How long a batch collects records before it is processed.
    #[arg(long, default_value = "200ms", value_name = "D", value_parser = humantime::parse_duration)]
    pub batch_wait: Duration,
    /// Partitions of the topics this command creates (telemetry, alerts).
    #[arg(long, default_value = "6", value_name = "N", value_parser = crate::kafka::parse_partitions)]
    pub partitions: i32,
    /// Serve `/metrics`, `/healthz` and `/readyz` on this address (`augur_detect_*`
    /// metrics; ready once the assigned partitions are rebuilt). [default: not served]
    #[arg(long, env = "AUGUR_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the models of application types that `<prefix>.models` announces none for
    /// come from: the newest `<DIR>/<app-type>/<version>/` of each.
    /// [default: the models shipped in the repository's models/]
    #[arg(long, env = "AUGUR_MODELS", value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub models: Option<PathBuf>,
    /// Policy files or folders of them, one file per application type: which adjustments
    /// alerts and anomaly scores lead to. [default: the policies shipped in policies/]
    #[arg(long, env = "AUGUR_POLICY", value_name = "FILE")]
    pub policy: Vec<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Window(#[from] WindowError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("signature table: {0}")]
    Signatures(String),
    #[error("model table: {0}")]
    Models(String),
    #[error("tuned-value table: {0}")]
    Tuned(String),
    #[error(transparent)]
    Observe(crate::observe::ObserveError),
    #[error("cannot tell the host name ({0}); pass --replica-id")]
    HostName(#[source] std::io::Error),
    #[error("the detector thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl Args {
    pub fn window_config(&self) -> Result<WindowConfig, WindowError> {
        let config = WindowConfig {
            step_ms: self.step.as_millis() as i64,
            points: self.points,
            hop_ms: self.hop.as_millis() as i64,
            lateness_ms: self.lateness.as_millis() as i64,
            idle_expiry_ms: self.idle_expiry.as_millis() as i64,
            ..WindowConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// Runs a detector until `shutdown`.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Totals, DetectError> {
    let window = args.window_config()?;
    let replica_id = match &args.replica_id {
        Some(r) => r.clone(),
        None => crate::agent::host_name().map_err(DetectError::HostName)?,
    };
    let cluster = Cluster::open(&args.kafka.config())?;
    run_on(&cluster, args, replica_id, window, Arc::default(), shutdown).await
}

/// [`run`] on a cluster the caller holds open (the demo runs every stage on one);
/// `committed` counts the records of every committed transaction.
pub async fn run_on(
    cluster: &Cluster,
    args: Args,
    replica_id: String,
    window: WindowConfig,
    committed: Arc<AtomicU64>,
    shutdown: CancellationToken,
) -> Result<Totals, DetectError> {
    let policies = if args.policy.is_empty() { Policies::shipped()? } else { Policies::load(&args.policy)? };
    let metrics = metrics::Metrics::default();
    let readiness = Readiness::default();
    crate::observe::serve_if(args.metrics_addr, |r| metrics.register(r), &readiness, &shutdown)
        .await
        .map_err(DetectError::Observe)?;
    let telemetry = cluster.topic::<TelemetrySample>();
    cluster
        .ensure_topics(&[
            TopicSpec { name: telemetry.clone(), partitions: args.partitions, retention: Retention::Log },
            TopicSpec { name: cluster.topic::<Alert>(), partitions: args.partitions, retention: Retention::Log },
            TopicSpec { name: cluster.topic::<Adjustment>(), partitions: args.partitions, retention: Retention::Log },
            TopicSpec { name: cluster.topic::<DeadLetter>(), partitions: 1, retention: Retention::Log },
            TopicSpec { name: cluster.topic::<FailureSignature>(), partitions: 1, retention: Retention::Compacted },
            TopicSpec { name: cluster.topic::<ModelAnnouncement>(), partitions: 1, retention: Retention::Compacted },
            TopicSpec {
                name: cluster.topic::<WindowEvidence>(),
                partitions: args.partitions,
                retention: Retention::Log,
            },
        ])
        .await?;
    let table =
        SignatureTable::follow(cluster, shutdown.clone()).await.map_err(|e| DetectError::Signatures(e.to_string()))?;
    let model_table =
        ModelTable::follow(cluster, shutdown.clone()).await.map_err(|e| DetectError::Models(e.to_string()))?;
    let models_dir = args.models.clone().unwrap_or_else(lstm::shipped_dir);
    let models = Models::new(Some(model_table), window.clone(), ModelSet::shipped(&models_dir, &window));

    let liveness = LivenessConfig::default();
    // Both the windows and the liveness detector must come out of a replay as they were;
    // the liveness detector's history is counted in reports, assumed one per step.
    let lookback_ms = window.lookback_ms().max(liveness.lookback_ms(window.step_ms, window.idle_expiry_ms));
    let shared = Arc::new(Shared {
        windows: Windows::new(window.clone()),
        codec: Codec::new(),
        telemetry_topic: telemetry.clone(),
        hop_ms: window.hop_ms,
        lookback_ms,
        idle_expiry_ms: window.idle_expiry_ms,
        max_future_ms: args.max_future.as_millis() as i64,
        liveness,
        policies,
        scoring_seconds: metrics.scoring_seconds.clone(),
    });
    let tuned = TunedTable::follow(cluster, shutdown.clone()).await.map_err(|e| DetectError::Tuned(e.to_string()))?;
    let judges = Arc::new(Tables {
        signatures: table,
        models,
        tuned,
        window: window.clone(),
        cache: Mutex::new(None),
        tuning: Mutex::new(None),
    });
    let j = judges.judge();
    for s in j.matcher.skipped() {
        tracing::warn!(signature = %s.key, reason = %s.reason, "signature not used");
    }
    tracing::info!(
        signatures = j.matcher.len(),
        models = ?j.models.versions(),
        lookback_s = lookback_ms / 1000,
        "signature and model tables loaded"
    );

    let (mut consumer, producer) = cluster.transactional_clients("augur-detect", &args.group, &replica_id);
    // A batch collects for `batch_wait`: a broker holding a fetch open for longer than
    // that only delays the batch.
    let fetch_wait_ms = args.batch_wait.as_millis().clamp(1, 500).to_string();
    crate::kafka::set_default(&mut consumer, "fetch.wait.max.ms", &fetch_wait_ms);
    let config = EngineConfig {
        consumer,
        producer,
        replay: cluster.client_config(),
        telemetry_topic: telemetry,
        alerts_topic: cluster.topic::<Alert>(),
        adjustments_topic: cluster.topic::<Adjustment>(),
        scores_topic: cluster.topic::<WindowEvidence>(),
        dlq_topic: cluster.topic::<DeadLetter>(),
        replica_id,
        threads: args.threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from),
        batch_max: args.batch_max as usize,
        batch_wait: args.batch_wait,
        dtw_radius: DTW_RADIUS,
        report_every: Duration::from_secs(10),
        committed,
        metrics,
        readiness,
    };
    let totals = tokio::task::spawn_blocking(move || engine::run(config, shared, judges, shutdown)).await??;
    tracing::info!(
        records = totals.counters.records,
        alerts = totals.counters.alerts,
        dead = totals.counters.dead,
        transactions = totals.transactions,
        aborts = totals.aborts,
        "detector stopped"
    );
    Ok(totals)
}

/// The signature, model and tuned-value tables as the engine sees them: a matcher
/// rebuilt when the signature table changes, the model set when the model table does,
/// the tuning when the tuned table does.
struct Tables {
    signatures: SignatureTable,
    models: Models,
    tuned: TunedTable,
    window: WindowConfig,
    cache: Mutex<Option<(u64, Arc<Matcher>)>>,
    tuning: Mutex<Option<(u64, Arc<Tuning>)>>,
}

impl Tables {
    fn matcher(&self) -> Arc<Matcher> {
        let current = self.signatures.current();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, m)) = cache.as_ref() {
            if *v == current.version {
                return m.clone();
            }
        }
        let m = Arc::new(Matcher::build(
            &current.entries,
            &self.window.features,
            self.window.step_ms,
            self.window.points,
            DTW_RADIUS,
        ));
        *cache = Some((current.version, m.clone()));
        m
    }

    fn tuning(&self) -> Arc<Tuning> {
        let current = self.tuned.current();
        let mut cache = self.tuning.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, t)) = cache.as_ref() {
            if *v == current.version {
                return t.clone();
            }
        }
        let t = Arc::new(Tuning::new(current.entries.values().cloned()));
        *cache = Some((current.version, t.clone()));
        t
    }
}

impl Judges for Tables {
    fn version(&self) -> u64 {
        self.signatures.version().wrapping_add(self.models.version()).wrapping_add(self.tuned.version())
    }

    fn judge(&self) -> Arc<Judge> {
        Arc::new(Judge { matcher: self.matcher(), models: self.models.set(), tuning: self.tuning() })
    }
}

/// The tuned values, loaded and followed like the signatures.
type TunedTable = crate::kafka::table::Table<TunedValue>;
