//! The agent's view of itself for Prometheus, on `--metrics-addr`.
//!
//! In: every tick's sample and the producer's delivery reports. Out: the `augur_agent_*`
//! families: samples taken, samples the cluster confirmed, metrics in the last sample,
//! sources that stopped answering, and the time one sampling took. No label carries
//! the instance id: one agent is one instance, and its scrape target names it.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone)]
pub(super) struct Metrics {
    pub samples: Counter,
    pub delivered: Counter,
    pub sample_metrics: Gauge,
    pub source_warnings: Counter,
    pub sample_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            samples: Counter::default(),
            delivered: Counter::default(),
            sample_metrics: Gauge::default(),
            source_warnings: Counter::default(),
            // 100 µs (procfs alone) to about 1.6 s (a slow application scrape).
            sample_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 15)),
        }
    }
}

impl Metrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register("augur_agent_samples", "Samples taken and produced", self.samples.clone());
        r.register("augur_agent_delivered", "Samples the Kafka cluster confirmed", self.delivered.clone());
        r.register("augur_agent_sample_metrics", "Metrics in the last sample", self.sample_metrics.clone());
        r.register(
            "augur_agent_source_warnings",
            "Outages of a metric source (procfs, cgroup, application endpoint, log file)",
            self.source_warnings.clone(),
        );
        r.register("augur_agent_sample_seconds", "Time to take one sample", self.sample_seconds.clone());
    }
}
