//! The demo's feedback stage: every turn, what the detector saw and the actuator did
//! goes into a [`Tracker`]; its outcomes go to `<prefix>.feedback` and the values it
//! tunes to the compacted `<prefix>.tuned`, which the demo's detector follows.
//!
//! In: each turn's adjustments with their audits, the detector's alerts and per-window
//! evidence committed so far, and the turn's last event time. Out: the published
//! outcomes and tuned values, and a [`FeedbackSummary`] for the report. Guarantee:
//! the tracker is given every input up to the turn's end before it judges (the loop
//! waits for the detector), and a tuned step takes effect
//! [`FeedbackConfig::delay_ms`] of event time after the judgement, several turns later,
//! so the detector has read it before its windows reach that time in any run.

use std::collections::BTreeMap;

use serde::Serialize;

use super::stepper::{Tail, STALL_LIMIT};
use super::DemoError;
use crate::codec::{Actuation, Adjustment, Alert, FeedbackOutcome, TunedValue, WindowEvidence};
use crate::feedback::tracker::{FeedbackConfig, Tracker};
use crate::kafka::{Cluster, Publisher};

/// What the feedback loop did in a run, for the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FeedbackSummary {
    /// Outcomes of applied adjustments by verdict (HELPED, NO_EFFECT, WORSENED,
    /// FAILED_ANYWAY).
    pub outcomes: BTreeMap<String, u64>,
    /// Failures no signature alert foresaw, failures no anomaly alert foresaw, and
    /// alerts on unadjusted instances that did not fail: the evidence the tuning rests on.
    pub misses: u64,
    pub model_misses: u64,
    pub false_alarms: u64,
    /// Every value the loop tuned, with its steps.
    pub tuned: Vec<TunedLine>,
}

/// One tuned value: where it started, where it is, its limits and each step
/// (seconds from the start of the run, value).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TunedLine {
    pub key: String,
    pub default: f64,
    pub latest: f64,
    pub floor: f64,
    pub ceiling: f64,
    pub steps: Vec<(f64, f64)>,
}

pub(super) struct FeedbackLoop {
    tracker: Tracker,
    alerts: Tail<Alert>,
    evidence: Tail<WindowEvidence>,
    outcomes_out: Publisher<FeedbackOutcome>,
    tuned_out: Publisher<TunedValue>,
    summary: FeedbackSummary,
}

impl FeedbackLoop {
    /// `thresholds`: each signature's own threshold, by key.
    pub fn new(cluster: &Cluster, thresholds: BTreeMap<String, f64>) -> Result<Self, DemoError> {
        let tracker = Tracker::new(FeedbackConfig::default(), thresholds, Vec::new())
            .map_err(|e| DemoError::Feedback(e.to_string()))?;
        let producer = cluster.producer_config();
        Ok(Self {
            tracker,
            alerts: Tail::new(cluster),
            evidence: Tail::new(cluster),
            outcomes_out: Publisher::new(&producer, cluster.topic::<FeedbackOutcome>())?,
            tuned_out: Publisher::new(&producer, cluster.topic::<TunedValue>())?,
            summary: FeedbackSummary::default(),
        })
    }

    /// Takes in the detector's evidence and alerts committed so far.
    pub async fn read(&mut self, cluster: &Cluster) -> Result<(), DemoError> {
        let (evidence, alerts) = tokio::join!(self.evidence.read_new(cluster), self.alerts.read_new(cluster));
        for e in evidence? {
            self.tracker.evidence(&e);
        }
        for a in alerts? {
            self.tracker.alert(&a);
        }
        Ok(())
    }

    /// Takes in one turn's actuations and judges everything due by `now_ms`, the
    /// turn's last event time; [`Self::read`] has been given the turn's outputs.
    pub async fn judge(&mut self, actuated: &[(Adjustment, Actuation)], now_ms: i64) -> Result<(), DemoError> {
        for (adjustment, audit) in actuated {
            self.tracker.actuation(adjustment, audit);
        }
        let judged = self.tracker.advance(now_ms);
        self.summary.misses += judged.misses;
        self.summary.model_misses += judged.model_misses;
        self.summary.false_alarms += judged.false_alarms;
        for o in &judged.outcomes {
            let verdict = serde_json::to_value(o.verdict).ok().and_then(|v| v.as_str().map(str::to_owned));
            *self.summary.outcomes.entry(verdict.unwrap_or_default()).or_insert(0) += 1;
            self.outcomes_out.publish(&o.instance_id, o, o.event_time_ms).await?;
        }
        for t in &judged.tuned {
            let last = t.steps.last().map_or(now_ms, |s| s.from_ms);
            tracing::info!(key = %t.key, value = t.latest(), from_ms = last, "tuned");
            self.tuned_out.publish(&t.key, t, now_ms).await?;
        }
        if !judged.outcomes.is_empty() {
            self.outcomes_out.flush(STALL_LIMIT).await?;
        }
        if !judged.tuned.is_empty() {
            self.tuned_out.flush(STALL_LIMIT).await?;
        }
        Ok(())
    }

    /// The summary, with the tuned values' steps in seconds from `start_ms`.
    pub fn summary(&self, start_ms: i64) -> FeedbackSummary {
        let mut summary = self.summary.clone();
        summary.tuned = self
            .tracker
            .tuned()
            .map(|t| TunedLine {
                key: t.key.clone(),
                default: t.default_value,
                latest: t.latest(),
                floor: t.floor,
                ceiling: t.ceiling,
                steps: t.steps.iter().map(|s| ((s.from_ms - start_ms) as f64 / 1000.0, s.value)).collect(),
            })
            .collect();
        summary.tuned.sort_by(|a, b| a.key.cmp(&b.key));
        summary
    }
}
