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

/// A series' labels after `__name__`, in name order; unused slots stay `None`. Borrowed
/// from the records, so grouping a batch copies no string.
type Labels<'a> = [Option<(&'static str, &'a str)>; 5];

/// Series (name and labels) to their samples, for one request.
#[derive(Debug, Default)]
pub struct SeriesSet<'a> {
    series: BTreeMap<(&'static str, Labels<'a>), Vec<Sample>>,
}

impl<'a> SeriesSet<'a> {
    /// Adds every sample of `record`; returns how many.
    pub fn add(&mut self, record: &'a Exported) -> usize {
        match record {
            Exported::Telemetry(s) => {
                for m in &s.metrics {
                    let labels = [
                        Some(("app_type", s.app_type.as_str())),
                        Some(("function", s.function.as_str())),
                        Some(("instance", s.instance_id.as_str())),
                        Some(("metric", m.name.as_str())),
                        None,
                    ];
                    self.push(TELEMETRY, labels, m.value, s.timestamp_ms);
                }
                s.metrics.len()
            }
            Exported::Alert(a) => {
                // An empty label value means "no such label" to Prometheus: leave it out.
                let signature = a.signature.as_deref().filter(|s| !s.is_empty()).map(|s| ("signature", s));
                let labels = [
                    Some(("app_type", a.app_type.as_str())),
                    Some(("function", a.function.as_str())),
                    Some(("instance", a.instance_id.as_str())),
                    Some(("kind", a.kind.name())),
                    signature,
                ];
                self.push(ALERT, labels, a.confidence, a.window_end_ms);
                let Some(score) = a.anomaly_score else { return 1 };
                let labels = [
                    Some(("app_type", a.app_type.as_str())),
                    Some(("function", a.function.as_str())),
                    Some(("instance", a.instance_id.as_str())),
                    None,
                    None,
                ];
                self.push(ANOMALY_SCORE, labels, score, a.window_end_ms);
                2
            }
        }
    }

    fn push(&mut self, name: &'static str, labels: Labels<'a>, value: f64, timestamp: i64) {
        self.series.entry((name, labels)).or_default().push(Sample { value, timestamp });
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
            .map(|((name, labels), mut samples)| {
                samples.sort_by_key(|s| s.timestamp);
                samples.dedup_by(|a, b| a.timestamp == b.timestamp && a.value.to_bits() == b.value.to_bits());
                let labels = std::iter::once(("__name__", name))
                    .chain(labels.into_iter().flatten())
                    .map(|(name, value)| Label { name: name.to_owned(), value: value.to_owned() })
                    .collect();
                TimeSeries { labels, samples }
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
        // Out of order on purpose, and one exact repeat (a re-sent record).
        let records = [
            sample("web-1", 3000, 0.3),
            sample("web-1", 1000, 0.1),
            sample("web-2", 1000, 0.9),
            sample("web-1", 1000, 0.1),
        ];
        let mut set = SeriesSet::default();
        for r in &records {
            assert_eq!(set.add(r), 2);
        }
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
        let (with, without) = (alert(Some("database/memory_leak"), Some(77.0)), alert(None, None));
        let mut set = SeriesSet::default();
        assert_eq!(set.add(&with), 2);
        assert_eq!(set.add(&without), 1);
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
