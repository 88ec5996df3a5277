//! The demo's report: what was injected, predicted, adjusted and averted, and what the
//! guardrails refused.
//!
//! In: the simulator's ground truth (which failures were injected, which happened and
//! when they were due), the alerts, the actuator's audits and the holdout. Out: a
//! [`Report`] whose top-level fields are the command-line contract's. Mitigation is
//! measured, not assumed: a predicted failure on a held-out instance is left alone, so
//! `holdout_failed / holdout` is what doing nothing gives, beside `adjusted_failed /
//! adjusted` for the failures whose instance was changed before they were due.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::stepper::{Audits, Holdout};
use crate::codec::{Actuation, ActuationResult};
use crate::simulate::score::Score;
use crate::simulate::GroundTruth;

/// One failure kind's line of the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KindReport {
    pub injected: usize,
    pub happened: usize,
    pub predicted: usize,
    pub lead_time_median_s: Option<f64>,
    pub lead_time_p10_s: Option<f64>,
    pub holdout: usize,
    pub holdout_failed: usize,
    pub adjusted: usize,
    pub adjusted_failed: usize,
}

/// What the demo did, printed at the end and written by `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Failures injected into the fleet.
    pub injected: usize,
    /// Of those, predicted by an alert before they happened (or were due, if averted).
    pub predicted: usize,
    /// Lead time of the predictions, from the first predicting window's end to the
    /// failure (or when it was due), seconds.
    pub lead_time_median_s: Option<f64>,
    pub lead_time_p10_s: Option<f64>,
    /// Predicted failures on held-out instances (never adjusted), and how many of them
    /// happened: the baseline of doing nothing.
    pub holdout: usize,
    pub holdout_failed: usize,
    /// Predicted failures whose instance had an adjustment applied before the failure
    /// was due, and how many happened anyway.
    pub adjusted: usize,
    pub adjusted_failed: usize,
    /// Adjusted failures that did not happen.
    pub averted: usize,
    /// Failures the adjusted ones would have had at the holdout's failure rate, minus
    /// those they had: what the adjustments averted compared with doing nothing.
    pub averted_vs_holdout: Option<f64>,
    /// Predicted failures, not held out, that no adjustment reached in time (all of
    /// theirs refused, or none decided), and how many happened.
    pub unadjusted: usize,
    pub unadjusted_failed: usize,
    /// Signature and anomaly alerts on instances without an injected failure, per 100
    /// of their instance-hours.
    pub false_alarms_per_100h: f64,
    /// Adjustments the policy decided (the critical tier's notifications apart).
    pub adjustments_decided: u64,
    pub adjustments_applied: u64,
    /// Refused by the guardrails or the target; each reason is in the audit.
    pub adjustments_refused: u64,
    /// Left unmade because their instance is in the holdout.
    pub adjustments_held_out: u64,
    pub adjustments_failed: u64,
    /// Found in place by their fence, not made again.
    pub adjustments_duplicate: u64,
    /// Changes made more than once for one adjustment: must be 0.
    pub duplicate_effects: u64,

    pub seed: u64,
    pub instances: usize,
    pub simulated_hours: f64,
    pub holdout_fraction: f64,
    pub embedded_cluster: bool,
    pub records_produced: u64,
    /// Records the detector processed and committed.
    pub records_detected: u64,
    pub signatures: usize,
    pub happened: usize,
    pub false_alarms: usize,
    pub by_kind: BTreeMap<String, KindReport>,
    /// Alerts by kind (SIGNATURE, ANOMALY, OFFLINE, RECOVERED).
    pub alerts: BTreeMap<String, usize>,
    pub crashes_detected_offline: usize,
    pub offline_delay_median_s: Option<f64>,
    /// The critical tier's notifications (sent nowhere in the demo).
    pub notifications: u64,
    /// Every injected failure, with what was done about it.
    pub failures: Vec<FailureLine>,
    pub charts: Vec<PathBuf>,
    /// What the feedback loop judged and tuned; absent with `--no-feedback`.
    pub feedback: Option<super::FeedbackSummary>,
    /// Failures a signature alert predicted under the signature's own threshold: caught
    /// only because the feedback loop had lowered it.
    pub caught_under_own_threshold: usize,
    pub wall_seconds: f64,
}

/// One injected failure and what the loop did about it; times in seconds from the
/// start of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FailureLine {
    pub instance: String,
    pub kind: String,
    pub onset_s: f64,
    /// When it would have happened untouched.
    pub due_s: f64,
    /// When it happened, if it did.
    pub failed_s: Option<f64>,
    /// End of the first window that predicted it.
    pub predicted_s: Option<f64>,
    pub holdout: bool,
    /// The audits of its instance's adjustments up to the failure (or when it was due):
    /// `<time> s <result> <action>: <detail>`.
    pub adjustments: Vec<String>,
}

fn lines(run: &Run<'_>) -> Vec<FailureLine> {
    let s = |ms: i64| (ms - run.start_ms) as f64 / 1000.0;
    run.truth
        .iter()
        .map(|t| {
            let due = t.failure_ms.unwrap_or(t.expected_failure_ms);
            FailureLine {
                instance: t.instance.clone(),
                kind: t.kind.name().to_owned(),
                onset_s: s(t.onset_ms),
                due_s: s(t.expected_failure_ms),
                failed_s: t.failure_ms.map(s),
                predicted_s: run.score.predicted_at.get(&t.instance).map(|&v| s(v)),
                holdout: run.holdout.holds(&t.instance),
                adjustments: run
                    .audits
                    .records
                    .iter()
                    .filter(|a| a.instance_id == t.instance && a.event_time_ms <= due)
                    .map(|a| format!("{} s {} {}: {}", s(a.event_time_ms), a.result.name(), a.action, a.detail))
                    .collect(),
            }
        })
        .collect()
}

/// Predicted failures of one group, and how many of them happened.
type Counted = (usize, usize);

/// Whose failure, adjusted or held out, counted per kind (holdout, adjusted) and overall.
#[derive(Debug, Default)]
struct Mitigation {
    holdout: Counted,
    adjusted: Counted,
    unadjusted: Counted,
    by_kind: BTreeMap<String, (Counted, Counted)>,
}

fn mitigation(truth: &[GroundTruth], score: &Score, audits: &[Actuation], holdout: &Holdout) -> Mitigation {
    let mut m = Mitigation::default();
    for t in truth {
        if !score.predicted_at.contains_key(&t.instance) {
            continue;
        }
        let deadline = t.failure_ms.unwrap_or(t.expected_failure_ms);
        let failed = usize::from(t.failure_ms.is_some());
        let kind = m.by_kind.entry(t.kind.name().to_owned()).or_default();
        let changed = audits.iter().any(|a| {
            a.instance_id == t.instance && a.result == ActuationResult::Applied && a.event_time_ms <= deadline
        });
        let (total, kind_total) = if holdout.holds(&t.instance) {
            (&mut m.holdout, Some(&mut kind.0))
        } else if changed {
            (&mut m.adjusted, Some(&mut kind.1))
        } else {
            (&mut m.unadjusted, None)
        };
        total.0 += 1;
        total.1 += failed;
        if let Some(k) = kind_total {
            k.0 += 1;
            k.1 += failed;
        }
    }
    m
}

/// What the run produced, for [`Report::new`].
pub(super) struct Run<'a> {
    pub truth: &'a [GroundTruth],
    pub score: Score,
    pub audits: &'a Audits,
    pub holdout: Holdout,
    pub alerts: BTreeMap<String, usize>,
    pub changes_made: u64,
    /// Event time of the run's first step.
    pub start_ms: i64,
}

impl Report {
    pub(super) fn new(run: Run<'_>, context: Report) -> Report {
        let m = mitigation(run.truth, &run.score, &run.audits.records, &run.holdout);
        let failures = lines(&run);
        let Run { score, audits, alerts, changes_made, .. } = run;
        let counts = super::stepper::by_result(&audits.records);
        let count = |r: &str| counts.get(r).copied().unwrap_or(0);
        let applied = count("applied");
        let by_kind = score
            .by_kind
            .iter()
            .map(|(kind, k)| {
                let ((h, hf), (a, af)) = m.by_kind.get(kind).copied().unwrap_or_default();
                let line = KindReport {
                    injected: k.injected,
                    happened: k.happened,
                    predicted: k.predicted,
                    lead_time_median_s: k.lead_median_s,
                    lead_time_p10_s: k.lead_p10_s,
                    holdout: h,
                    holdout_failed: hf,
                    adjusted: a,
                    adjusted_failed: af,
                };
                (kind.clone(), line)
            })
            .collect();
        let averted_vs_holdout = (m.holdout.0 > 0)
            .then(|| m.adjusted.0 as f64 * m.holdout.1 as f64 / m.holdout.0 as f64 - m.adjusted.1 as f64);
        Report {
            injected: score.failures_injected,
            predicted: score.failures_predicted,
            lead_time_median_s: score.lead_median_s,
            lead_time_p10_s: score.lead_p10_s,
            holdout: m.holdout.0,
            holdout_failed: m.holdout.1,
            adjusted: m.adjusted.0,
            adjusted_failed: m.adjusted.1,
            averted: m.adjusted.0 - m.adjusted.1,
            averted_vs_holdout,
            unadjusted: m.unadjusted.0,
            unadjusted_failed: m.unadjusted.1,
            false_alarms_per_100h: score.false_alarms_per_100_instance_hours,
            adjustments_decided: audits.decided,
            adjustments_applied: applied,
            // Held-out adjustments are audited as refused too; they are counted apart.
            adjustments_refused: count("refused").saturating_sub(audits.held_out + audits.notifications),
            adjustments_held_out: audits.held_out,
            adjustments_failed: count("failed"),
            adjustments_duplicate: count("duplicate"),
            duplicate_effects: changes_made.saturating_sub(applied),
            happened: score.failures_happened,
            false_alarms: score.false_alarms,
            by_kind,
            alerts,
            crashes_detected_offline: score.crashes_detected_offline,
            offline_delay_median_s: score.offline_delay_median_s,
            notifications: audits.notifications,
            failures,
            ..context
        }
    }

    /// The report with nothing measured yet: the run's context.
    pub(super) fn context(seed: u64, instances: usize, simulated_hours: f64, holdout_fraction: f64) -> Report {
        Report {
            injected: 0,
            predicted: 0,
            lead_time_median_s: None,
            lead_time_p10_s: None,
            holdout: 0,
            holdout_failed: 0,
            adjusted: 0,
            adjusted_failed: 0,
            averted: 0,
            averted_vs_holdout: None,
            unadjusted: 0,
            unadjusted_failed: 0,
            false_alarms_per_100h: 0.0,
            adjustments_decided: 0,
            adjustments_applied: 0,
            adjustments_refused: 0,
            adjustments_held_out: 0,
            adjustments_failed: 0,
            adjustments_duplicate: 0,
            duplicate_effects: 0,
            seed,
            instances,
            simulated_hours,
            holdout_fraction,
            embedded_cluster: true,
            records_produced: 0,
            records_detected: 0,
            signatures: 0,
            happened: 0,
            false_alarms: 0,
            by_kind: BTreeMap::new(),
            alerts: BTreeMap::new(),
            crashes_detected_offline: 0,
            offline_delay_median_s: None,
            notifications: 0,
            failures: Vec::new(),
            charts: Vec::new(),
            feedback: None,
            caught_under_own_threshold: 0,
            wall_seconds: 0.0,
        }
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |x| format!("{x:.0} s"))
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cluster = if self.embedded_cluster { "embedded mock cluster" } else { "Kafka cluster" };
        writeln!(f, "augur demo on the {cluster}, seed {}, {:.1} s", self.seed, self.wall_seconds)?;
        writeln!(
            f,
            "  fleet                      {} instances, {:.1} h simulated, {} telemetry records ({} detected)",
            self.instances, self.simulated_hours, self.records_produced, self.records_detected
        )?;
        writeln!(f, "  failure signatures         {}", self.signatures)?;
        writeln!(f, "  failures injected          {} ({} happened)", self.injected, self.happened)?;
        writeln!(
            f,
            "  predicted before failure   {} of {}, lead median {}, p10 {}",
            self.predicted,
            self.injected,
            secs(self.lead_time_median_s),
            secs(self.lead_time_p10_s)
        )?;
        for (kind, k) in &self.by_kind {
            writeln!(
                f,
                "    {kind:<24} {} of {}, lead median {}, p10 {}; adjusted {} ({} failed), held out {} ({} failed)",
                k.predicted,
                k.injected,
                secs(k.lead_time_median_s),
                secs(k.lead_time_p10_s),
                k.adjusted,
                k.adjusted_failed,
                k.holdout,
                k.holdout_failed
            )?;
        }
        writeln!(
            f,
            "  averted                    {} of {} adjusted failures ({} failed anyway); held out: {} of {} failed",
            self.averted, self.adjusted, self.adjusted_failed, self.holdout_failed, self.holdout
        )?;
        if let Some(v) = self.averted_vs_holdout {
            writeln!(f, "  averted vs doing nothing   {v:.1} (at the holdout's failure rate)")?;
        }
        if self.unadjusted > 0 {
            writeln!(
                f,
                "  predicted, not adjusted    {} ({} failed): every adjustment refused or none decided",
                self.unadjusted, self.unadjusted_failed
            )?;
        }
        writeln!(
            f,
            "  false alarms               {} ({:.2} per 100 healthy instance-hours)",
            self.false_alarms, self.false_alarms_per_100h
        )?;
        writeln!(
            f,
            "  crashes seen offline       {} of {} (median {} after the crash)",
            self.crashes_detected_offline,
            self.happened,
            secs(self.offline_delay_median_s)
        )?;
        let alerts: Vec<String> = self.alerts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(f, "  alerts                     {}", alerts.join(", "))?;
        writeln!(
            f,
            "  adjustments                {} decided, {} applied, {} refused by guardrails, {} held out, {} failed",
            self.adjustments_decided,
            self.adjustments_applied,
            self.adjustments_refused,
            self.adjustments_held_out,
            self.adjustments_failed
        )?;
        writeln!(f, "  notifications              {} (critical tier; sent nowhere in the demo)", self.notifications)?;
        writeln!(f, "  duplicate effects          {}", self.duplicate_effects)?;
        if let Some(fb) = &self.feedback {
            let outcomes: Vec<String> = fb.outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(
                f,
                "  feedback outcomes          {}",
                if outcomes.is_empty() { "-".into() } else { outcomes.join(", ") }
            )?;
            writeln!(
                f,
                "  feedback evidence          failures missed by the signatures {}, by the model {}; \
                 false alarms on unadjusted instances {}",
                fb.misses, fb.model_misses, fb.false_alarms
            )?;
            for t in &fb.tuned {
                writeln!(
                    f,
                    "  tuned {:<20} {:.2} -> {:.2} in {} steps (limits {:.2}..{:.2})",
                    t.key,
                    t.default,
                    t.latest,
                    t.steps.len(),
                    t.floor,
                    t.ceiling
                )?;
            }
            if self.caught_under_own_threshold > 0 {
                writeln!(f, "  caught by tuned thresholds {}", self.caught_under_own_threshold)?;
            }
        }
        for c in &self.charts {
            writeln!(f, "  chart                      {}", c.display())?;
        }
        Ok(())
    }
}
