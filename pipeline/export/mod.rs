//! `augur export`: telemetry (and alerts) out of Kafka into a time-series database.
//!
//! In: `<prefix>.telemetry` and `<prefix>.alerts`, shared by the members of the
//! consumer group `--group`. Out: every sample written through the Prometheus
//! remote-write protocol to `--remote-write-url` (naming in [`series`]); records that
//! do not decode, or that the database refuses, on `<prefix>.dlq` with the reason and
//! their source topic/partition/offset in headers, as the detector writes them; its own
//! metrics on `--metrics-addr`.
//!
//! Guarantees: at least once, idempotent in the database. A batch's offsets are
//! committed only after the database accepted it and its dead letters are confirmed by
//! Kafka, so a crash re-sends at most the batches in flight, and a re-sent record maps to
//! the same series, times and values. A database that is down or answers 5xx/429 is
//! retried with capped exponential backoff for as long as it takes; nothing is skipped.
//!
//! [`remote_write`] speaks the protocol, [`series`] names the series, [`engine`] is
//! the Kafka loop.

pub mod engine;
pub mod remote_write;
pub mod series;

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use reqwest::Url;
use tokio_util::sync::CancellationToken;

use crate::codec::{Alert, DeadLetter, TelemetrySample};
use crate::kafka::{Cluster, ConnectError, KafkaArgs, Retention, TopicSpec};
use crate::observe::{ObserveError, Readiness};
pub use engine::Totals;

/// Flags of `augur export`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Consumer group; offsets are committed under it once the database accepted a batch.
    #[arg(long, env = "AUGUR_GROUP", default_value = "augur-export", value_name = "G")]
    pub group: String,
    /// Remote-write endpoint, e.g. http://prometheus:9090/api/v1/write (Prometheus
    /// started with --web.enable-remote-write-receiver), VictoriaMetrics' /api/v1/write,
    /// Mimir's /api/v1/push.
    #[arg(long, env = "AUGUR_REMOTE_WRITE_URL", value_name = "URL", value_parser = parse_url)]
    pub remote_write_url: Url,
    /// Where to serve /metrics, /healthz and /readyz (9464 is the customary port of an
    /// exporter's own metrics).
    #[arg(long, env = "AUGUR_METRICS_ADDR", default_value = "127.0.0.1:9464", value_name = "ADDR")]
    pub metrics_addr: SocketAddr,
    /// Records per remote-write request at most.
    #[arg(long, default_value = "2000", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_max: u32,
    /// How long a batch collects records before it is sent.
    #[arg(long, default_value = "1s", value_name = "D", value_parser = humantime::parse_duration)]
    pub batch_wait: Duration,
    /// Time limit of one remote-write request.
    #[arg(long, default_value = "30s", value_name = "D", value_parser = parse_positive)]
    pub request_timeout: Duration,
    /// Longest wait between two attempts at a batch the database did not take.
    #[arg(long, default_value = "30s", value_name = "D", value_parser = parse_positive)]
    pub max_backoff: Duration,
    /// Export telemetry only, not alerts and anomaly scores.
    #[arg(long)]
    pub no_alerts: bool,
    /// Partitions of the topics this command creates if missing (telemetry, alerts).
    #[arg(long, default_value = "6", value_name = "N", value_parser = crate::kafka::parse_partitions)]
    pub partitions: i32,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

fn parse_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{e}; expected an http:// URL"))?;
    match url.scheme() {
        "http" => Ok(url),
        "https" => Err("https is not supported by this build; use http:// (or a TLS-terminating sidecar)".to_owned()),
        other => Err(format!("scheme {other:?} is not http")),
    }
}

fn parse_positive(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".to_owned()),
        Err(e) => Err(format!("{e}; expected a duration like 500ms or 30s")),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
}

/// The exporter's own metrics: totals over all instances, never labelled by instance.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub records_in: Counter,
    pub records_out: Counter,
    pub samples_out: Counter,
    pub batches_sent: Counter,
    pub retries: Counter,
    pub dead_letters: Counter,
    pub lag: Gauge,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register("augur_export_records_in", "Records consumed from Kafka", self.records_in.clone());
        r.register("augur_export_records_out", "Records the database accepted", self.records_out.clone());
        r.register("augur_export_samples_out", "Samples the database accepted", self.samples_out.clone());
        r.register("augur_export_batches_sent", "Remote-write requests accepted", self.batches_sent.clone());
        r.register("augur_export_retries", "Remote-write attempts that will be retried", self.retries.clone());
        r.register("augur_export_dead_letters", "Records sent to the dead-letter topic", self.dead_letters.clone());
        r.register(
            "augur_export_consumer_lag_records",
            "Records in the assigned partitions not yet exported and committed",
            self.lag.clone(),
        );
    }
}

/// Runs the exporter until `shutdown`.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Totals, ExportError> {
    let remote = remote_write::RemoteWrite::new(args.remote_write_url.clone(), args.request_timeout)
        .map_err(ExportError::Http)?;
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let readiness = Readiness::default();
    // Serving first: a taken port fails the command before it joins the group.
    let (addr, server) =
        crate::observe::serve(args.metrics_addr, registry, readiness.clone(), shutdown.clone()).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");

    let cluster = Cluster::open(&args.kafka.config())?;
    let telemetry = cluster.topic::<TelemetrySample>();
    let alerts = cluster.topic::<Alert>();
    cluster
        .ensure_topics(&[
            TopicSpec { name: telemetry.clone(), partitions: args.partitions, retention: Retention::Log },
            TopicSpec { name: alerts.clone(), partitions: args.partitions, retention: Retention::Log },
            TopicSpec { name: cluster.topic::<DeadLetter>(), partitions: 1, retention: Retention::Log },
        ])
        .await?;
    let mut consumer = cluster.consumer_config(&args.group);
    for (key, value) in [
        ("allow.auto.create.topics", "false"),
        // A killed replica's partitions move after this long (Kafka's floor is 6 s), as
        // for the detector: its records wait that long before another member exports them.
        ("session.timeout.ms", "10000"),
    ] {
        if consumer.get(key).is_none() {
            consumer.set(key, value);
        }
    }
    let config = engine::EngineConfig {
        consumer,
        producer: cluster.producer_config(),
        telemetry_topic: telemetry,
        alerts_topic: (!args.no_alerts).then_some(alerts),
        dlq_topic: cluster.topic::<DeadLetter>(),
        batch_max: args.batch_max as usize,
        batch_wait: args.batch_wait,
        max_backoff: args.max_backoff,
    };
    tracing::info!(url = %remote.url(), group = %args.group, "exporting");
    let result = engine::run(config, remote, metrics, readiness, shutdown.clone()).await;
    // Whatever ended the loop, the /metrics server goes with it.
    shutdown.cancel();
    let _ = server.await;
    let totals = result?;
    tracing::info!(
        records = totals.records,
        samples = totals.samples,
        batches = totals.batches,
        dead = totals.dead,
        "exporter stopped"
    );
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_write_url_must_be_plain_http() {
        assert!(parse_url("http://127.0.0.1:9090/api/v1/write").is_ok());
        assert!(parse_url("https://mimir/api/v1/push").unwrap_err().contains("https is not supported"));
        assert!(parse_url("ftp://x/").unwrap_err().contains("not http"));
        assert!(parse_url("prometheus:9090").is_err());
        assert!(parse_positive("0s").is_err());
    }
}
