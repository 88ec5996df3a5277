//! The detector's view of itself for Prometheus: totals over every instance and
//! partition, never labelled by instance id.
//!
//! In: the counters of each committed batch, the window store's size, the model set in
//! use. Out: the `augur_detect_*` families `observe::serve` exposes on `/metrics`.
//! Counters move only when a transaction commits, so they count records and alerts
//! that are in Kafka, never ones an abort will produce again.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::models::ModelSet;
use super::partition::Counters;

/// Labels of the model in use for one application type (a handful of series: one
/// per application type).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub app_type: String,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct Metrics {
    pub records_in: Counter,
    pub dead_letters: Counter,
    pub late_samples: Counter,
    pub windows: Counter,
    pub windows_scored: Counter,
    pub alerts: Counter,
    pub adjustments: Counter,
    pub dtw_computed: Counter,
    pub dtw_pruned: Counter,
    pub transactions: Counter,
    pub aborts: Counter,
    pub rebalances: Counter,
    /// Records replayed to rebuild the windows of assigned partitions.
    pub replayed_records: Counter,
    pub window_instances: Gauge,
    pub window_memory_bytes: Gauge,
    /// Records of the assigned partitions not yet processed (high watermark − position).
    pub consumer_lag: Gauge,
    /// 1 for the model version serving each application type.
    pub model: Family<ModelLabels, Gauge>,
    /// Time to judge one batch (decode, windows, scoring, matching), seconds.
    pub batch_seconds: Histogram,
    /// Time the anomaly model takes to score one app type's windows of a batch, seconds.
    pub scoring_seconds: Histogram,
}

/// 10 µs (one window) to about 20 s (thousands of windows on a slow core).
pub fn scoring_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 2.0, 21))
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            records_in: Counter::default(),
            dead_letters: Counter::default(),
            late_samples: Counter::default(),
            windows: Counter::default(),
            windows_scored: Counter::default(),
            alerts: Counter::default(),
            adjustments: Counter::default(),
            dtw_computed: Counter::default(),
            dtw_pruned: Counter::default(),
            transactions: Counter::default(),
            aborts: Counter::default(),
            rebalances: Counter::default(),
            replayed_records: Counter::default(),
            window_instances: Gauge::default(),
            window_memory_bytes: Gauge::default(),
            consumer_lag: Gauge::default(),
            model: Family::default(),
            // 100 µs to about 3 s: a batch of one record to a full batch on a slow core.
            batch_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 16)),
            scoring_seconds: scoring_histogram(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register("augur_detect_records_in", "Telemetry records consumed and committed", self.records_in.clone());
        r.register("augur_detect_dead_letters", "Records sent to the dead-letter topic", self.dead_letters.clone());
        r.register(
            "augur_detect_late_samples",
            "Samples dropped as later than the allowed lateness",
            self.late_samples.clone(),
        );
        r.register("augur_detect_windows", "Windows judged", self.windows.clone());
        r.register("augur_detect_windows_scored", "Windows the anomaly model scored", self.windows_scored.clone());
        r.register("augur_detect_alerts", "Alerts written (all kinds)", self.alerts.clone());
        r.register("augur_detect_adjustments", "Adjustments the policy decided", self.adjustments.clone());
        r.register(
            "augur_detect_dtw_computed",
            "DTW comparisons run (to the end or abandoned)",
            self.dtw_computed.clone(),
        );
        r.register(
            "augur_detect_dtw_pruned",
            "Signature comparisons the lower bounds ruled out",
            self.dtw_pruned.clone(),
        );
        r.register("augur_detect_transactions", "Kafka transactions committed", self.transactions.clone());
        r.register("augur_detect_aborts", "Kafka transactions aborted and retried", self.aborts.clone());
        r.register("augur_detect_rebalances", "Partition assignments and revocations", self.rebalances.clone());
        r.register(
            "augur_detect_replayed_records",
            "Records replayed to rebuild the windows of assigned partitions (before /readyz turns ready)",
            self.replayed_records.clone(),
        );
        r.register("augur_detect_window_instances", "Instances with a window in memory", self.window_instances.clone());
        r.register("augur_detect_window_memory_bytes", "Memory the windows hold", self.window_memory_bytes.clone());
        r.register(
            "augur_detect_consumer_lag",
            "Telemetry records of the assigned partitions not yet processed",
            self.consumer_lag.clone(),
        );
        r.register("augur_detect_model", "1 for the anomaly model version serving each app type", self.model.clone());
        r.register("augur_detect_batch_seconds", "Time to judge one batch", self.batch_seconds.clone());
        r.register(
            "augur_detect_scoring_seconds",
            "Time the anomaly model takes to score one app type's windows of a batch",
            self.scoring_seconds.clone(),
        );
    }

    /// Adds the counters of one partition's share of a committed batch.
    pub fn committed(&self, c: &Counters) {
        self.records_in.inc_by(c.records);
        self.dead_letters.inc_by(c.dead);
        self.late_samples.inc_by(c.late);
        self.windows.inc_by(c.windows);
        self.windows_scored.inc_by(c.scored);
        self.alerts.inc_by(c.alerts);
        self.adjustments.inc_by(c.adjustments);
        self.dtw_computed.inc_by(c.dtw_computed);
        self.dtw_pruned.inc_by(c.dtw_pruned);
    }

    /// Shows the models of `set` as the ones serving.
    pub fn models(&self, set: &ModelSet) {
        self.model.clear();
        for (app_type, version) in set.app_versions() {
            self.model.get_or_create(&ModelLabels { app_type, version }).set(1);
        }
    }
}
