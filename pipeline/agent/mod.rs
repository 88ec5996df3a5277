//! `augur agent`: samples the machine or container it runs on and publishes its
//! telemetry, one sample per interval.
//!
//! In: procfs (CPU, memory, PSI pressure, network, disk), the cgroup v2 files of a
//! container with limits, optionally an application's Prometheus endpoint (request
//! rate, error rate, p99 latency) and log file (error lines per second). Out: one
//! Avro [`TelemetrySample`] per interval on `<prefix>.telemetry`, keyed by instance id,
//! through an idempotent, compressed producer. Guarantees: `seq` counts from 0 with no
//! gaps while the process lives; the timestamp is the sampling instant; a metric that
//! cannot be read is absent, never zero, and its source is reported once, never fatal;
//! counters become rates only from a second reading, so the first sample carries no
//! rates; on SIGTERM or after `--count` every produced sample is flushed before
//! returning, and a failed delivery ends the run with an error rather than a gap.

mod cgroup;
mod host;
mod logfile;
mod metrics;
mod prometheus;
mod sampler;
mod sink;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use reqwest::Url;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub use cgroup::{CgroupChoice, DEFAULT_CGROUP_ROOT};
pub use logfile::{LogConfig, DEFAULT_PATTERN as DEFAULT_LOG_PATTERN};
pub use prometheus::{ErrorSeries, PrometheusConfig, Selector};
pub use sampler::{Readings, Sampler, SamplerConfig, SamplerError};

use crate::codec::{Metric, TelemetrySample};
use crate::kafka::{parse_key_value, Cluster, ConnectError, KafkaArgs, PublishError, Retention, TopicSpec};
use sink::Sink;

/// The shortest `--interval`: below it the agent's own cost stops being negligible.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Identity of this instance: the key and `instance_id` of every sample
    /// [default: the host name].
    #[arg(long, env = "AUGUR_INSTANCE_ID", value_name = "ID", value_parser = parse_non_empty)]
    pub instance_id: Option<String>,
    /// Application type; signatures and models are chosen by it (web, database, cache,
    /// worker, host).
    #[arg(long, env = "AUGUR_APP_TYPE", default_value = "host", value_name = "TYPE", value_parser = parse_non_empty)]
    pub app_type: String,
    /// What the instance does for its application (checkout, search, batch, node).
    #[arg(long, env = "AUGUR_FUNCTION", default_value = "node", value_name = "NAME", value_parser = parse_non_empty)]
    pub function: String,
    /// Time between samples, at least 100ms (e.g. `1s`, `250ms`).
    #[arg(long, default_value = "1s", value_name = "D", value_parser = parse_interval)]
    pub interval: Duration,
    /// Stop after this many samples (for scripts and tests); runs until SIGTERM otherwise.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// A label attached to every sample (repeatable), e.g. `--label zone=eu-west-1a`.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Where procfs is mounted: `/proc`, or the host's /proc mounted into a container.
    #[arg(long, env = "AUGUR_PROC_ROOT", default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,
    /// Whose CPU and memory to report: `auto` (a container's, against its limits, when
    /// /sys/fs/cgroup shows a cgroup v2 CPU or memory limit; the machine's otherwise),
    /// `host` (the whole machine), or a cgroup v2 directory.
    #[arg(long, env = "AUGUR_CGROUP", default_value = "auto", value_name = "auto|host|DIR", value_parser = cgroup::parse_choice)]
    pub cgroup: CgroupChoice,
    /// The application's Prometheus endpoint (plain http), scraped every interval for
    /// request rate, error rate and p99 latency; a scrape may take 3/4 of the interval.
    #[arg(long, env = "AUGUR_PROMETHEUS_URL", value_name = "URL", value_parser = parse_url)]
    pub prometheus_url: Option<Url>,
    /// Counter of requests served, summed over all its series.
    #[arg(long, default_value = "http_requests_total", value_name = "NAME", requires = "prometheus_url", value_parser = prometheus::parse_metric_name)]
    pub requests_metric: String,
    /// Counter of failed requests, as a PromQL-style selector: `NAME` or
    /// `NAME{label="v",label=~"regex",...}` (=, !=, =~, !~; a regex matches the whole
    /// value). Default: the series of --requests-metric whose `code`, `status` or
    /// `status_code` label is 5xx.
    #[arg(long, value_name = "SELECTOR", requires = "prometheus_url", value_parser = parse_selector)]
    pub errors_metric: Option<Selector>,
    /// Histogram of request durations in seconds, by base name: p99 comes from the
    /// increase of its `_bucket` series between scrapes.
    #[arg(long, default_value = "http_request_duration_seconds", value_name = "NAME", requires = "prometheus_url", value_parser = prometheus::parse_metric_name)]
    pub latency_metric: String,
    /// The application's log file: lines matching --log-pattern are counted per second,
    /// following rotation and truncation.
    #[arg(long, env = "AUGUR_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Regular expression for an error line of --log-file.
    #[arg(long, default_value = DEFAULT_LOG_PATTERN, value_name = "REGEX", requires = "log_file", value_parser = parse_regex)]
    pub log_pattern: regex::bytes::Regex,
    /// Partitions of the telemetry topic, if this command creates it.
    #[arg(long, value_name = "N", default_value = "6", value_parser = crate::kafka::parse_partitions)]
    pub partitions: i32,
    /// Serve `/metrics` (`augur_agent_*`), `/healthz` and `/readyz` (ready once the
    /// cluster confirmed a sample) on this address. [default: not served]
    #[arg(long, env = "AUGUR_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

impl Args {
    /// The sampler's configuration from the flags.
    pub fn sampler_config(&self) -> SamplerConfig {
        SamplerConfig {
            proc_root: self.proc_root.clone(),
            cgroup: self.cgroup.clone(),
            prometheus: self.prometheus_url.as_ref().map(|url| PrometheusConfig {
                url: url.clone(),
                requests: self.requests_metric.clone(),
                errors: self.errors_metric.clone().map_or(ErrorSeries::ServerErrors, ErrorSeries::Selector),
                latency: self.latency_metric.clone(),
            }),
            log: self.log_file.as_ref().map(|path| LogConfig { path: path.clone(), pattern: self.log_pattern.clone() }),
            // Leaves a quarter of the interval for the rest of the tick.
            scrape_timeout: self.interval * 3 / 4,
        }
    }
}

fn parse_non_empty(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < MIN_INTERVAL {
        return Err(format!("must be at least {}", humantime::format_duration(MIN_INTERVAL)));
    }
    Ok(d)
}

fn parse_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| e.to_string())?;
    match url.scheme() {
        "http" if url.host().is_some() => Ok(url),
        "http" => Err("no host".to_owned()),
        "https" => Err("https is not supported: this build scrapes plain http".to_owned()),
        other => Err(format!("unsupported scheme {other:?}: expected http://HOST:PORT/PATH")),
    }
}

fn parse_selector(s: &str) -> Result<Selector, String> {
    s.parse()
}

fn parse_regex(s: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::Regex::new(s).map_err(|e| format!("invalid regex: {}", prometheus::one_line(&e)))
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error("cannot tell the host name ({0}); pass --instance-id")]
    HostName(#[source] std::io::Error),
    #[error(transparent)]
    Observe(#[from] crate::observe::ObserveError),
}

/// What an agent run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Samples taken and produced.
    pub samples: u64,
    /// Samples the cluster confirmed.
    pub delivered: u64,
}

/// How long to wait for the last deliveries on the way out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Samples every `args.interval` and publishes each sample until `args.count` samples
/// or `shutdown`, then flushes.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Summary, AgentError> {
    let instance_id = match &args.instance_id {
        Some(id) => id.clone(),
        None => host_name().map_err(AgentError::HostName)?,
    };
    let mut sampler = Sampler::new(args.sampler_config())?;
    let metrics = metrics::Metrics::default();
    let readiness = crate::observe::Readiness::default();
    crate::observe::serve_if(args.metrics_addr, |r| metrics.register(r), &readiness, &shutdown).await?;
    let cluster = Cluster::open(&args.kafka.config())?;
    let topic = cluster.topic::<TelemetrySample>();
    ensure_topic(&cluster, TopicSpec { name: topic.clone(), partitions: args.partitions, retention: Retention::Log })
        .await;
    let mut sink = Sink::<TelemetrySample>::new(&cluster.producer_config(), topic.clone())?;
    tracing::info!(instance_id, topic, interval = %humantime::format_duration(args.interval), "sampling");

    let mut sample = TelemetrySample {
        instance_id,
        app_type: args.app_type.clone(),
        function: args.function.clone(),
        seq: 0,
        timestamp_ms: 0,
        metrics: Vec::new(),
        labels: args.labels.iter().cloned().collect(),
    };
    let mut readings = Readings::default();
    let mut ticks = tokio::time::interval(args.interval);
    // A tick that overran (a slow scrape) skips the missed ones instead of bursting.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut samples = 0u64;
    while args.count.is_none_or(|count| samples < count) {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let timestamp_ms = epoch_ms(SystemTime::now());
        let began = Instant::now();
        sampler.sample(began, &mut readings).await;
        metrics.sample_seconds.observe(began.elapsed().as_secs_f64());
        sample.seq = samples as i64;
        sample.timestamp_ms = timestamp_ms;
        fill_metrics(&mut sample.metrics, &readings);
        sink.publish(&sample.instance_id, &sample, timestamp_ms)?;
        samples += 1;
        metrics.samples.inc();
        metrics.sample_metrics.set(sample.metrics.len() as i64);
        metrics.source_warnings.inc_by(u64::from(sampler.warnings()).saturating_sub(metrics.source_warnings.get()));
        metrics.delivered.inc_by(sink.delivered().saturating_sub(metrics.delivered.get()));
        readiness.set(metrics.delivered.get() > 0);
    }
    let delivered = sink.flush(FLUSH_TIMEOUT).await?;
    tracing::info!(samples, delivered, warnings = sampler.warnings(), "agent stopped");
    Ok(Summary { samples, delivered })
}

/// Creates the telemetry topic unless it exists. Asking first matters for a fleet:
/// agents seldom hold the right to create topics, thousands of creation requests at a
/// rollout load the controller, and a broker that does not answer them (librdkafka's
/// mock) would hold every start for the admin timeout. Failing to create is a warning:
/// the broker may create the topic on first write.
async fn ensure_topic(cluster: &Cluster, spec: TopicSpec) {
    let mut config = cluster.client_config();
    // A metadata request may otherwise create the topic with the broker's defaults.
    config.set("allow.auto.create.topics", "false");
    let name = spec.name.clone();
    let exists = tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        let metadata = client.fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
        Ok::<_, KafkaError>(metadata.topics().iter().any(|t| t.name() == name && t.error().is_none()))
    })
    .await;
    if let Ok(Ok(true)) = exists {
        return;
    }
    let topic = spec.name.clone();
    if let Err(error) = cluster.ensure_topics(&[spec]).await {
        tracing::warn!(%error, topic, "cannot create the topic; producing anyway");
    }
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Copies readings into the sample's metrics, reusing the names' allocations: the
/// same metrics in the same order every tick, so a steady agent allocates nothing here.
fn fill_metrics(metrics: &mut Vec<Metric>, readings: &Readings) {
    metrics.truncate(readings.len());
    for (i, (name, value)) in readings.iter().enumerate() {
        match metrics.get_mut(i) {
            Some(metric) => {
                if metric.name != name {
                    metric.name.clear();
                    metric.name.push_str(name);
                }
                metric.value = value;
            }
            None => metrics.push(Metric::new(name, value)),
        }
    }
}

/// The host name as the kernel knows it (of this UTS namespace: a pod's name in Kubernetes).
pub(crate) fn host_name() -> std::io::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let name = name.trim();
    if name.is_empty() {
        return Err(std::io::Error::other("the host name is empty"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests;
