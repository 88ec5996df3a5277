//! How Augur's records become time series: the naming an SRE queries by.
//!
//! In: decoded telemetry samples and alerts. Out: one remote-write request whose series
//! are unique by label set, with labels sorted by name and samples sorted by time, as
//! the protocol requires. Naming (documented in the README):
//!
//! - `augur_telemetry{metric, instance, app_type, function}`: each metric of each
//!   telemetry sample, at the sample's event time;
//! - `augur_alert{instance, app_type, function, kind[, signature]}`: the alert's
//!   confidence 0..1 at its window's end;
//! - `augur_anomaly_score{instance, app_type, function}`: an alert's anomaly score
//!   0..100 at its window's end, when a model scored it.
//!
//! The same record always maps to the same series, times and values, so a re-sent
//! record overwrites nothing and adds nothing in the database.

use std::collections::BTreeMap;

use super::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use crate::codec::{Alert, TelemetrySample};

pub const TELEMETRY: &str = "augur_telemetry";
pub const ALERT: &str = "augur_alert";
pub const ANOMALY_SCORE: &str = "augur_anomaly_score";

/// A record the exporter turns into samples.
#[derive(Debug, Clone, PartialEq)]
pub enum Exported {
    Telemetry(TelemetrySample),
    Alert(Alert),
}

/// Label sets (sorted by name, `__name__` first) to their samples.
#[derive(Debug, Default)]
pub struct SeriesSet {
    series: BTreeMap<Vec<(&'static str, String)>, Vec<Sample>>,
}

impl SeriesSet {
    /// Adds every sample of `record`; returns how many.
    pub fn add(&mut self, record: &Exported) -> usize {
        match record {
            Exported::Telemetry(s) => {
                for m in &s.metrics {
                    let labels = vec![
                        ("__name__", TELEMETRY.to_owned()),
                        ("app_type", s.app_type.clone()),
                        ("function", s.function.clone()),
                        ("instance", s.instance_id.clone()),
                        ("metric", m.name.clone()),
                    ];
                    self.push(labels, m.value, s.timestamp_ms);
                }
                s.metrics.len()
            }
            Exported::Alert(a) => {
                let mut labels = vec![
                    ("__name__", ALERT.to_owned()),
                    ("app_type", a.app_type.clone()),
                    ("function", a.function.clone()),
                    ("instance", a.instance_id.clone()),
                    ("kind", a.kind.name().to_owned()),
                ];
                // An empty label value means "no such label" to Prometheus: leave it out.
                if let Some(sig) = a.signature.as_ref().filter(|s| !s.is_empty()) {
                    labels.push(("signature", sig.clone()));
                }
                self.push(labels, a.confidence, a.window_end_ms);
                let Some(score) = a.anomaly_score else { return 1 };
                let labels = vec![
                    ("__name__", ANOMALY_SCORE.to_owned()),
                    ("app_type", a.app_type.clone()),
                    ("function", a.function.clone()),
                    ("instance", a.instance_id.clone()),
                ];
                self.push(labels, score, a.window_end_ms);
                2
            }
        }
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64, timestamp: i64) {
        self.series.entry(labels).or_default().push(Sample { value, timestamp });
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The request: samples of each series in time order, exact repeats (same time,
    /// same bits) sent once. Two different values at one time are both kept: the
    /// database decides, and refuses the request if it holds one of them already.
    pub fn into_request(self) -> WriteRequest {
        let timeseries = self
            .series
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|s| s.timestamp);
                samples.dedup_by(|a, b| a.timestamp == b.timestamp && a.value.to_bits() == b.value.to_bits());
                TimeSeries {
                    labels: labels.into_iter().map(|(name, value)| Label { name: name.to_owned(), value }).collect(),
                    samples,
                }
            })
            .collect();
        WriteRequest { timeseries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{metric_names as mn, AlertKind, Metric};

    fn sample(instance: &str, ts: i64, cpu: f64) -> Exported {
        Exported::Telemetry(TelemetrySample {
            instance_id: instance.into(),
            app_type: "web".into(),
            function: "frontend".into(),
            seq: 0,
            timestamp_ms: ts,
            metrics: vec![Metric::new(mn::CPU_UTILIZATION, cpu), Metric::new(mn::ERROR_RATE, 0.01)],
            labels: Default::default(),
        })
    }

    fn names(ts: &TimeSeries) -> Vec<&str> {
        ts.labels.iter().map(|l| l.name.as_str()).collect()
    }

    #[test]
    fn one_series_per_instance_and_metric_in_time_order() {
        let mut set = SeriesSet::default();
        // Out of order on purpose, and one exact repeat (a re-sent record).
        for r in [sample("web-1", 3000, 0.3), sample("web-1", 1000, 0.1), sample("web-2", 1000, 0.9)] {
            assert_eq!(set.add(&r), 2);
        }
        set.add(&sample("web-1", 1000, 0.1));
        let request = set.into_request();
        assert_eq!(request.timeseries.len(), 4, "2 instances × 2 metrics");
        for ts in &request.timeseries {
            assert_eq!(names(ts), ["__name__", "app_type", "function", "instance", "metric"]);
            let mut sorted = names(ts);
            sorted.sort();
            assert_eq!(names(ts), sorted, "labels sorted by name");
            assert!(ts.samples.windows(2).all(|w| w[0].timestamp < w[1].timestamp), "time order, no repeats");
        }
        let web1_cpu = request
            .timeseries
            .iter()
            .find(|t| t.labels[3].value == "web-1" && t.labels[4].value == mn::CPU_UTILIZATION)
            .unwrap();
        assert_eq!(web1_cpu.labels[0].value, TELEMETRY);
        assert_eq!(
            web1_cpu.samples,
            vec![Sample { value: 0.1, timestamp: 1000 }, Sample { value: 0.3, timestamp: 3000 }]
        );
    }

    #[test]
    fn alerts_give_confidence_and_anomaly_score_series() {
        let alert = |signature: Option<&str>, score: Option<f64>| {
            Exported::Alert(Alert {
                id: "x".into(),
                instance_id: "db-1".into(),
                app_type: "database".into(),
                function: "primary".into(),
                kind: AlertKind::Signature,
                window_start_ms: 0,
                window_end_ms: 60_000,
                signature: signature.map(str::to_owned),
                confidence: 0.8,
                runner_up: None,
                runner_up_confidence: 0.0,
                explanation: vec![],
                anomaly_score: score,
                model_version: None,
                source_partition: 0,
                source_offset: 0,
            })
        };
        let mut set = SeriesSet::default();
        assert_eq!(set.add(&alert(Some("database/memory_leak"), Some(77.0))), 2);
        assert_eq!(set.add(&alert(None, None)), 1);
        let request = set.into_request();
        let find = |name: &str, n: usize| {
            request.timeseries.iter().find(|t| t.labels[0].value == name && t.labels.len() == n).unwrap()
        };
        let with_sig = find(ALERT, 6);
        assert_eq!(names(with_sig), ["__name__", "app_type", "function", "instance", "kind", "signature"]);
        assert_eq!(with_sig.labels[4].value, "signature");
        assert_eq!(with_sig.samples, vec![Sample { value: 0.8, timestamp: 60_000 }]);
        assert_eq!(find(ALERT, 5).samples.len(), 1, "no empty signature label");
        assert_eq!(find(ANOMALY_SCORE, 4).samples, vec![Sample { value: 77.0, timestamp: 60_000 }]);
    }
}
