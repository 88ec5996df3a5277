//! Scores alerts against the simulator's ground truth: which injected failures were
//! predicted, how long before they happened, and how often healthy instances were
//! alerted on.
//!
//! In: the [`GroundTruth`] of a run, its alerts, the fleet size and the simulated
//! time. Out: a [`Score`]. A failure counts as predicted when a signature or anomaly
//! alert on its instance has a window ending between the failure's onset and its
//! deadline: when it happened, or, if it did not (a change averted it), when it was
//! due. The lead time is from the first such window's end to the deadline. A signature
//! or anomaly alert on an instance with no injected failure is a false alarm. Offline
//! alerts are scored against the crashes failures end in.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::codec::{Alert, AlertKind};

use super::GroundTruth;

/// Lead times of one failure kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KindScore {
    /// Failures of this kind injected.
    pub injected: usize,
    /// Of those, the ones that happened.
    pub happened: usize,
    /// Of those injected, predicted by an alert before they happened (or were due).
    pub predicted: usize,
    /// Median and 10th percentile of the lead time, seconds.
    pub lead_median_s: Option<f64>,
    pub lead_p10_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Score {
    pub failures_injected: usize,
    pub failures_happened: usize,
    pub failures_predicted: usize,
    pub lead_median_s: Option<f64>,
    pub lead_p10_s: Option<f64>,
    pub by_kind: BTreeMap<String, KindScore>,
    /// Signature and anomaly alerts on instances without an injected failure.
    pub false_alarms: usize,
    pub healthy_instance_hours: f64,
    pub false_alarms_per_100_instance_hours: f64,
    /// Crashes (failures that happened) followed by an offline alert.
    pub crashes_detected_offline: usize,
    /// Median seconds from the failure to its offline alert.
    pub offline_delay_median_s: Option<f64>,
    /// Event time of the first predicting alert's window end, per predicted instance.
    #[serde(skip)]
    pub predicted_at: BTreeMap<String, i64>,
}

/// Whether an alert of this kind predicts a failure (rather than seeing one).
pub fn predicts(kind: AlertKind) -> bool {
    matches!(kind, AlertKind::Signature | AlertKind::Anomaly)
}

/// Scores `alerts` of a run of `instances` instances over `hours` of simulated time.
pub fn score(truth: &[GroundTruth], alerts: &[Alert], instances: usize, hours: f64) -> Score {
    let failing: BTreeSet<&str> = truth.iter().map(|t| t.instance.as_str()).collect();
    let mut s = Score::default();
    let mut leads: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut offline_delays = Vec::new();
    for t in truth {
        s.failures_injected += 1;
        let kind = s.by_kind.entry(t.kind.name().to_owned()).or_default();
        kind.injected += 1;
        let deadline = t.failure_ms.unwrap_or(t.expected_failure_ms);
        let on_instance = alerts.iter().filter(|a| a.instance_id == t.instance);
        let first = on_instance
            .clone()
            .filter(|a| predicts(a.kind) && a.window_end_ms >= t.onset_ms && a.window_end_ms <= deadline)
            .map(|a| a.window_end_ms)
            .min();
        if let Some(at) = first {
            kind.predicted += 1;
            s.failures_predicted += 1;
            s.predicted_at.insert(t.instance.clone(), at);
            leads.entry(t.kind.name().to_owned()).or_default().push((deadline - at) as f64 / 1000.0);
        }
        let Some(failure) = t.failure_ms else { continue };
        kind.happened += 1;
        s.failures_happened += 1;
        if let Some(at) = on_instance
            .filter(|a| a.kind == AlertKind::Offline && a.window_end_ms >= failure)
            .map(|a| a.window_end_ms)
            .min()
        {
            s.crashes_detected_offline += 1;
            offline_delays.push((at - failure) as f64 / 1000.0);
        }
    }
    let mut all: Vec<f64> = leads.values().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    s.lead_median_s = quantile(&all, 0.5);
    s.lead_p10_s = quantile(&all, 0.1);
    for (kind, mut l) in leads {
        l.sort_by(f64::total_cmp);
        if let Some(k) = s.by_kind.get_mut(&kind) {
            k.lead_median_s = quantile(&l, 0.5);
            k.lead_p10_s = quantile(&l, 0.1);
        }
    }
    offline_delays.sort_by(f64::total_cmp);
    s.offline_delay_median_s = quantile(&offline_delays, 0.5);
    s.false_alarms = alerts.iter().filter(|a| predicts(a.kind) && !failing.contains(a.instance_id.as_str())).count();
    s.healthy_instance_hours = instances.saturating_sub(failing.len()) as f64 * hours;
    s.false_alarms_per_100_instance_hours =
        if s.healthy_instance_hours > 0.0 { 100.0 * s.false_alarms as f64 / s.healthy_instance_hours } else { 0.0 };
    s
}

/// The `q` quantile of sorted values (nearest rank); `None` for none.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::FailureKind;

    fn alert(instance: &str, kind: AlertKind, end: i64) -> Alert {
        Alert {
            id: format!("{instance}/{end}"),
            instance_id: instance.into(),
            app_type: "web".into(),
            function: "f".into(),
            kind,
            window_start_ms: end - 640_000,
            window_end_ms: end,
            signature: None,
            confidence: 0.9,
            runner_up: None,
            runner_up_confidence: 0.0,
            explanation: vec![],
            anomaly_score: None,
            model_version: None,
            source_partition: 0,
            source_offset: 0,
        }
    }

    #[test]
    fn predictions_lead_times_and_false_alarms_are_counted_from_the_ground_truth() {
        let truth = vec![
            GroundTruth {
                instance: "a".into(),
                kind: FailureKind::MemoryLeak,
                onset_ms: 1_000_000,
                failure_ms: Some(2_000_000),
                expected_failure_ms: 2_000_000,
                app_type: "web".into(),
                function: "f".into(),
            },
            GroundTruth {
                instance: "b".into(),
                kind: FailureKind::MemoryLeak,
                onset_ms: 1_000_000,
                failure_ms: Some(2_000_000),
                expected_failure_ms: 2_000_000,
                app_type: "web".into(),
                function: "f".into(),
            },
        ];
        let alerts = vec![
            alert("a", AlertKind::Signature, 900_000), // before the onset: not a prediction
            alert("a", AlertKind::Signature, 1_400_000),
            alert("a", AlertKind::Signature, 1_700_000),
            alert("a", AlertKind::Offline, 2_030_000),
            alert("b", AlertKind::Signature, 2_100_000), // after the failure
            alert("c", AlertKind::Signature, 1_500_000),
        ];
        let s = score(&truth, &alerts, 10, 2.0);
        assert_eq!((s.failures_injected, s.failures_happened, s.failures_predicted), (2, 2, 1));
        assert_eq!(s.predicted_at.get("a"), Some(&1_400_000));
        assert_eq!(s.by_kind["memory_leak"].lead_median_s, Some(600.0));
        assert_eq!(s.false_alarms, 1);
        assert_eq!(s.healthy_instance_hours, 16.0);
        assert_eq!(s.crashes_detected_offline, 1);
        assert_eq!(s.offline_delay_median_s, Some(30.0));
    }

    #[test]
    fn an_averted_failure_is_predicted_against_when_it_was_due_and_anomaly_alerts_count() {
        let truth = vec![GroundTruth {
            instance: "d".into(),
            kind: FailureKind::CpuSaturation,
            onset_ms: 1_000_000,
            failure_ms: None,
            expected_failure_ms: 2_000_000,
            app_type: "web".into(),
            function: "f".into(),
        }];
        let alerts = vec![
            alert("d", AlertKind::Anomaly, 1_800_000),
            alert("d", AlertKind::Recovered, 1_900_000), // sees, does not predict
            alert("e", AlertKind::Anomaly, 1_500_000),
            alert("e", AlertKind::Offline, 1_600_000),
        ];
        let s = score(&truth, &alerts, 4, 1.0);
        assert_eq!((s.failures_injected, s.failures_happened, s.failures_predicted), (1, 0, 1));
        assert_eq!(s.lead_median_s, Some(200.0));
        assert_eq!(s.by_kind["cpu_saturation"].happened, 0);
        assert_eq!(s.false_alarms, 1, "the anomaly alert on the healthy instance, not its offline alert");
    }
}
