//! `augur actuate`: applies adjustments to the infrastructure exactly once.
//!
//! In: `<prefix>.adjustments` (`read_committed`, a consumer group). Out: the changes,
//! made through a [`backend::Backend`], and one [`Actuation`](crate::codec::Actuation)
//! record per adjustment in `<prefix>.actuations`, committed in one transaction with the
//! consumed offset only after the change is durable. The guardrails (caps, cooldowns,
//! rate limits, dry run) stand between the two and audit every refusal.
//!
//! [`backend`] is the contract with its fence, [`apply`] handles one adjustment,
//! [`engine`] is the Kafka loop; the backends are [`sim`] (and `log`), [`webhook`] (and
//! the critical tier's notifications) and [`kubernetes`].

pub mod apply;
pub mod backend;
pub mod engine;
pub mod kubernetes;
pub mod sim;
pub mod webhook;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use tokio_util::sync::CancellationToken;

use crate::codec::{Actuation, Adjustment, DeadLetter};
use crate::kafka::{Cluster, ConnectError, KafkaArgs, Retention, TopicSpec};
use crate::observe::Readiness;
use crate::policy::guardrails::{FleetLimits, Guardrails};
use crate::policy::Policies;
use apply::{Gate, Retry};
use backend::{Backend, BackendError};
use engine::{EngineConfig, EngineError, Metrics, Totals};
use kubernetes::KubernetesBackend;
use sim::{LogBackend, SimBackend};
use webhook::{Payload, Webhook};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Pods and Deployments through the Kubernetes API (kubeconfig or in-cluster).
    Kubernetes,
    /// POST each adjustment as JSON to `--webhook-url`, with an Idempotency-Key.
    Webhook,
    /// The simulated fleet of this process (the demo).
    Sim,
    /// Change nothing: decide, audit as dry run and log.
    Log,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Consumer group over the adjustments topic.
    #[arg(long, env = "AUGUR_GROUP", default_value = "augur-actuate", value_name = "G")]
    pub group: String,
    /// This replica's stable name: its transactional id is `augur-actuate.<group>.<replica-id>`,
    /// so a restarted replica fences its previous self. [default: the host name]
    #[arg(long, env = "AUGUR_REPLICA_ID", value_name = "NAME")]
    pub replica_id: Option<String>,
    /// Where changes are made.
    #[arg(long, value_enum, value_name = "KIND")]
    pub backend: BackendKind,
    /// The URL the `webhook` backend POSTs adjustments to.
    #[arg(long, env = "AUGUR_WEBHOOK_URL", value_name = "URL", required_if_eq("backend", "webhook"))]
    pub webhook_url: Option<Url>,
    /// Where the critical tier's notifications go, as Alertmanager's `POST /api/v2/alerts`
    /// body (e.g. `http://alertmanager:9093/api/v2/alerts`). [default: not notified; audited as refused]
    #[arg(long, env = "AUGUR_NOTIFY_URL", value_name = "URL")]
    pub notify_url: Option<Url>,
    /// Policy files or folders of them, one file per application type (their guardrails
    /// bound every change). [default: the policies shipped in the repository's policies/]
    #[arg(long, env = "AUGUR_POLICY", value_name = "FILE")]
    pub policy: Vec<PathBuf>,
    /// Decide and audit every adjustment, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Fleet-wide rate limit: actions per rolling minute of event time, all workloads together.
    #[arg(long, default_value = "30", value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_actions_per_minute: u32,
    /// Notifications of the critical tier per rolling minute of event time, fleet-wide.
    #[arg(long, default_value = "10", value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_notifications_per_minute: u32,
    /// Calls of a backend per adjustment before it is audited as failed.
    #[arg(long, default_value = "8", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// How far back the guardrails remember actions (event time; partitions read unevenly
    /// are judged against each other within it), and how far back (wall time) the audit
    /// is read at start to rebuild them.
    #[arg(long, default_value = "6h", value_name = "D", value_parser = humantime::parse_duration)]
    pub state_lookback: Duration,
    /// API server URL for the `kubernetes` backend. [default: kubeconfig, else in-cluster]
    #[arg(long, env = "AUGUR_KUBE_URL", value_name = "URL")]
    pub kube_url: Option<Url>,
    /// Namespace of instance ids that name no namespace (`pod` rather than `namespace/pod`).
    #[arg(long, env = "AUGUR_NAMESPACE", default_value = "default", value_name = "NS")]
    pub namespace: String,
    /// Partitions of the topics this command creates (adjustments, actuations).
    #[arg(long, default_value = "6", value_name = "N", value_parser = crate::kafka::parse_partitions)]
    pub partitions: i32,
    /// Serve `/metrics` (`augur_actuate_*`), `/healthz` and `/readyz` on this address.
    #[arg(long, env = "AUGUR_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("backend {backend}: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: BackendError,
    },
    #[error("kubernetes backend: {0}")]
    Kubernetes(#[source] kubernetes::SetupError),
    #[error(transparent)]
    Observe(crate::observe::ObserveError),
    #[error("cannot tell the host name ({0}); pass --replica-id")]
    HostName(#[source] std::io::Error),
    #[error("the actuator thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Runs an actuator until `shutdown`.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Totals, ActuateError> {
    let cluster = Cluster::open(&args.kafka.config())?;
    run_on(&cluster, args, SimBackend::default(), Arc::default(), shutdown).await
}

/// [`run`] on a cluster the caller holds open; `sim` is the simulated fleet the `sim`
/// backend changes, `committed` counts the adjustments of every committed transaction.
pub async fn run_on(
    cluster: &Cluster,
    args: Args,
    sim: SimBackend,
    committed: Arc<AtomicU64>,
    shutdown: CancellationToken,
) -> Result<Totals, ActuateError> {
    // Everything that can be wrong with the flags and files fails here, before Kafka.
    let policies = if args.policy.is_empty() { Policies::shipped()? } else { Policies::load(&args.policy)? };
    let replica_id = match &args.replica_id {
        Some(r) => r.clone(),
        None => crate::agent::host_name().map_err(ActuateError::HostName)?,
    };
    let dry_run = args.dry_run || args.backend == BackendKind::Log;
    let limits = FleetLimits {
        max_actions_per_minute: args.max_actions_per_minute,
        max_notifications_per_minute: args.max_notifications_per_minute,
        dry_run,
        history_ms: args.state_lookback.as_millis() as i64,
    };
    let gate = Guardrails::new(&policies, limits);
    let notifier = match &args.notify_url {
        Some(url) => Some(
            Webhook::new(url.clone(), Payload::Alertmanager, "notify", Duration::from_secs(10))
                .map_err(|source| ActuateError::Backend { backend: "notify", source })?,
        ),
        None => None,
    };

    let metrics = Metrics::default();
    let readiness = Readiness::default();
    crate::observe::serve_if(args.metrics_addr, |r| metrics.register(r), &readiness, &shutdown)
        .await
        .map_err(ActuateError::Observe)?;
    cluster
        .ensure_topics(&[
            TopicSpec { name: cluster.topic::<Adjustment>(), partitions: args.partitions, retention: Retention::Log },
            TopicSpec { name: cluster.topic::<Actuation>(), partitions: args.partitions, retention: Retention::Log },
            TopicSpec { name: cluster.topic::<DeadLetter>(), partitions: 1, retention: Retention::Log },
        ])
        .await?;
    let (consumer, producer) = cluster.transactional_clients("augur-actuate", &args.group, &replica_id);
    let config = EngineConfig {
        consumer,
        producer,
        reader: cluster.client_config(),
        adjustments_topic: cluster.topic::<Adjustment>(),
        actuations_topic: cluster.topic::<Actuation>(),
        dlq_topic: cluster.topic::<DeadLetter>(),
        replica_id,
        retry: Retry { attempts: args.max_attempts, ..Retry::default() },
        dry_run,
        batch_max: 16,
        state_lookback: args.state_lookback,
        committed,
        metrics,
        readiness,
    };
    let totals = match args.backend {
        BackendKind::Sim => spawn(config, sim, notifier, gate, shutdown).await?,
        BackendKind::Log => spawn(config, LogBackend, notifier, gate, shutdown).await?,
        BackendKind::Webhook => {
            // Required by clap when the backend is webhook.
            let url = args.webhook_url.clone().ok_or(ActuateError::Backend {
                backend: "webhook",
                source: BackendError::Fatal("--webhook-url is required".into()),
            })?;
            let backend = Webhook::new(url, Payload::Adjustment, "webhook", Duration::from_secs(10))
                .map_err(|source| ActuateError::Backend { backend: "webhook", source })?;
            spawn(config, backend, notifier, gate, shutdown).await?
        }
        BackendKind::Kubernetes => {
            let backend = kubernetes_backend(&args).await?;
            spawn(config, backend, notifier, gate, shutdown).await?
        }
    };
    tracing::info!(results = ?totals.by_result, dead = totals.dead, transactions = totals.transactions, aborts = totals.aborts, "actuator stopped");
    Ok(totals)
}

async fn spawn<B: Backend>(
    config: EngineConfig,
    backend: B,
    notifier: Option<Webhook>,
    mut gate: Guardrails,
    shutdown: CancellationToken,
) -> Result<Totals, ActuateError> {
    let runtime = tokio::runtime::Handle::current();
    let totals = tokio::task::spawn_blocking(move || {
        engine::run(config, &backend, notifier.as_ref(), &mut gate as &mut dyn Gate, runtime, shutdown)
    })
    .await??;
    Ok(totals)
}

async fn kubernetes_backend(args: &Args) -> Result<KubernetesBackend, ActuateError> {
    let built = match &args.kube_url {
        Some(url) => KubernetesBackend::with_url(url.as_str(), &args.namespace),
        None => KubernetesBackend::infer(Some(&args.namespace)).await,
    };
    built.map_err(ActuateError::Kubernetes)
}
