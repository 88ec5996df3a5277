//! The feedback tracker: what followed each alert and each applied adjustment, judged in
//! event time, and the tuned values those judgements move.
//!
//! In: the detector's per-window [`WindowEvidence`], its [`Alert`]s, and each
//! [`Adjustment`] with its [`Actuation`] audit, in any order, then [`Tracker::advance`]
//! with an event time `now` up to which every input has been given. Out ([`Judged`]):
//! one [`FeedbackOutcome`] per applied adjustment one horizon after it, the failures no
//! alert foresaw (misses), the alerts no failure followed on an instance nothing was done
//! to (false alarms), and the full [`TunedValue`] record of every signature threshold or
//! application type's tier shift that those moved. Guarantees: the result is a function
//! of the set of inputs with event time <= `now` and of the sequence of `now` values
//! alone (no clock, no randomness, judgements taken in the order of judgement time,
//! instance and kind); each key moves by one bounded step at most once per
//! `min_interval_ms`, never outside its limits, with the step taking effect `delay_ms`
//! after the judgement, so every detector replica has read it before its windows get
//! there; memory holds at most two horizons of inputs behind the latest `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use tracing::warn;

pub use super::config::{FeedbackConfig, FeedbackError};
use super::tuned::{shift_key, threshold_key, weight_key, MAX_STEPS};
use crate::codec::{
    Actuation, ActuationResult, Adjustment, Alert, AlertKind, FeedbackOutcome, TunedStep, TunedValue, Verdict,
    WindowEvidence,
};
use crate::kafka::table::Entry;

/// The anomaly tiers' boundary above which an anomaly alert is raised (tier 2), before
/// any shift: the design's 71..90 band.
const ALERT_BOUNDARY: f64 = 71.0;
/// A missed failure moves the tier shift only if the score was at most this far under the
/// alert boundary: further down the model saw nothing, and moving the tiers would be noise.
const SHIFT_REACH: f64 = 40.0;
/// Score rise (points) and confidence rise past which an adjustment made things worse.
const WORSENED_SCORE: f64 = 10.0;
const WORSENED_CONFIDENCE: f64 = 0.1;
/// Score fall (points) and confidence fall from which an adjustment helped.
const HELPED_SCORE: f64 = 5.0;
const HELPED_CONFIDENCE: f64 = 0.05;
/// Slack for comparisons of decimal steps in binary floating point (0.85 - 0.8 < 0.05).
const EPSILON: f64 = 1e-9;

/// How often each verdict followed one strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub helped: u64,
    pub no_effect: u64,
    pub worsened: u64,
    pub failed_anyway: u64,
}

impl Tally {
    pub fn add(&mut self, verdict: Verdict) {
        *match verdict {
            Verdict::Helped => &mut self.helped,
            Verdict::NoEffect => &mut self.no_effect,
            Verdict::Worsened => &mut self.worsened,
            Verdict::FailedAnyway => &mut self.failed_anyway,
        } += 1;
    }

    pub fn total(&self) -> u64 {
        self.helped + self.no_effect + self.worsened + self.failed_anyway
    }
}

/// What one [`Tracker::advance`] judged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judged {
    /// One per applied adjustment whose horizon ended, by judgement time, instance, id.
    pub outcomes: Vec<FeedbackOutcome>,
    /// The whole record of each key that moved, by key.
    pub tuned: Vec<TunedValue>,
    /// Failures no signature alert foresaw within one horizon.
    pub misses: u64,
    /// Failures no anomaly alert foresaw within one horizon.
    pub model_misses: u64,
    /// Signature and anomaly alerts on instances nothing was done to that did not fail.
    pub false_alarms: u64,
}

/// The kinds of judgement, in the order they are taken at one time on one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Outcome,
    Miss,
    FalseAlarm,
    Retry,
}

/// A judgement waiting for its time: (judgement time, instance, kind, input id).
type DueKey = (i64, String, Kind, String);

#[derive(Debug, Clone)]
enum Pending {
    Outcome(Adjustment),
    Miss(Alert),
    FalseAlarm(Alert),
    /// A strategy turned off (its weight at the floor), to be tried again: its key and
    /// application type.
    Retry(String, String),
}

/// The event-time state machine of the feedback loop; see the module documentation.
#[derive(Debug, Clone)]
pub struct Tracker {
    config: FeedbackConfig,
    thresholds: BTreeMap<String, f64>,
    tuned: BTreeMap<String, TunedValue>,
    /// Judgement time of each key's last move.
    last_move: BTreeMap<String, i64>,
    /// Per weight key, the verdicts since its weight last moved.
    since_move: BTreeMap<String, Tally>,
    /// Per instance, its evidence by window end.
    evidence: BTreeMap<String, BTreeMap<i64, WindowEvidence>>,
    /// Per instance, the times it went offline.
    offline: BTreeMap<String, BTreeSet<i64>>,
    /// Per instance, the window ends of its signature alerts and of its anomaly alerts:
    /// each source is judged on its own recall.
    alerted: BTreeMap<String, BTreeSet<i64>>,
    scored: BTreeMap<String, BTreeSet<i64>>,
    /// Per instance, the event times of its applied adjustments.
    applied: BTreeMap<String, BTreeSet<i64>>,
    /// Signature and anomaly alerts by id, for the signature an adjustment answered.
    alerts: BTreeMap<String, Alert>,
    pending: BTreeMap<DueKey, Pending>,
    tallies: BTreeMap<(String, String, String), Tally>,
    /// The latest `now` given to [`Tracker::advance`].
    now: Option<i64>,
}

impl Tracker {
    /// `thresholds`: each signature key's own threshold (the default of its tuned value);
    /// `tuned`: the values already on the tuned topic, from which a restart continues.
    pub fn new(
        config: FeedbackConfig,
        thresholds: BTreeMap<String, f64>,
        tuned: impl IntoIterator<Item = TunedValue>,
    ) -> Result<Self, FeedbackError> {
        config.validate()?;
        if let Some((signature, &value)) = thresholds.iter().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
            return Err(FeedbackError::Threshold { signature: signature.clone(), value });
        }
        let mut values = BTreeMap::new();
        let mut last_move = BTreeMap::new();
        for value in tuned {
            value.check().map_err(|problem| FeedbackError::Tuned { key: value.key.clone(), problem })?;
            if let Some(step) = value.steps.last() {
                last_move.insert(value.key.clone(), step.from_ms.saturating_sub(config.delay_ms));
            }
            values.insert(value.key.clone(), value);
        }
        let mut tracker = Self {
            config,
            thresholds,
            tuned: values,
            last_move,
            since_move: BTreeMap::new(),
            evidence: BTreeMap::new(),
            offline: BTreeMap::new(),
            alerted: BTreeMap::new(),
            scored: BTreeMap::new(),
            applied: BTreeMap::new(),
            alerts: BTreeMap::new(),
            pending: BTreeMap::new(),
            tallies: BTreeMap::new(),
            now: None,
        };
        // A strategy the published values turned off is tried again as if never stopped.
        let off: Vec<(String, String, i64)> = tracker
            .tuned
            .values()
            .filter(|v| v.key.starts_with("weight/"))
            .filter_map(|v| tracker.last_move.get(&v.key).map(|&at| (v.key.clone(), v.app_type.clone(), at)))
            .collect();
        for (key, app_type, at) in off {
            tracker.schedule_retry(&key, &app_type, at);
        }
        Ok(tracker)
    }

    /// Inputs older than this can no longer change any judgement still to come.
    fn cutoff(&self) -> Option<i64> {
        self.now.map(|now| now.saturating_sub(self.config.horizon_ms.saturating_mul(2)))
    }

    fn too_old(&self, event_time_ms: i64) -> bool {
        self.cutoff().is_some_and(|cutoff| event_time_ms < cutoff)
    }

    /// Queues a judgement unless its time has passed: then it was judged already (the
    /// caller gives every input before the `now` that reaches it), so this is a repeat.
    fn expect(&mut self, key: DueKey, pending: Pending) {
        if self.now.is_none_or(|now| key.0 > now) {
            self.pending.insert(key, pending);
        }
    }

    pub fn evidence(&mut self, e: &WindowEvidence) {
        if self.too_old(e.window_end_ms) {
            return;
        }
        self.evidence.entry(e.instance_id.clone()).or_default().insert(e.window_end_ms, e.clone());
    }

    pub fn alert(&mut self, a: &Alert) {
        let t = a.window_end_ms;
        if self.too_old(t) {
            return;
        }
        match a.kind {
            AlertKind::Offline => {
                self.offline.entry(a.instance_id.clone()).or_default().insert(t);
                self.expect((t, a.instance_id.clone(), Kind::Miss, a.id.clone()), Pending::Miss(a.clone()));
            }
            AlertKind::Signature | AlertKind::Anomaly => {
                let by_source = if a.kind == AlertKind::Signature { &mut self.alerted } else { &mut self.scored };
                by_source.entry(a.instance_id.clone()).or_default().insert(t);
                self.alerts.insert(a.id.clone(), a.clone());
                let due = t.saturating_add(self.config.horizon_ms);
                self.expect(
                    (due, a.instance_id.clone(), Kind::FalseAlarm, a.id.clone()),
                    Pending::FalseAlarm(a.clone()),
                );
            }
            AlertKind::Recovered => {}
        }
    }

    /// One audited adjustment; only an applied one has an outcome and spares its alerts
    /// the false-alarm judgement.
    pub fn actuation(&mut self, adjustment: &Adjustment, actuation: &Actuation) {
        if actuation.adjustment_id != adjustment.id {
            warn!(adjustment = %adjustment.id, audit = %actuation.adjustment_id, "audit of another adjustment ignored");
            return;
        }
        let t = adjustment.event_time_ms;
        if actuation.result != ActuationResult::Applied || self.too_old(t) {
            return;
        }
        self.applied.entry(adjustment.instance_id.clone()).or_default().insert(t);
        let due = t.saturating_add(self.config.horizon_ms);
        let key = (due, adjustment.instance_id.clone(), Kind::Outcome, adjustment.id.clone());
        self.expect(key, Pending::Outcome(adjustment.clone()));
    }

    /// Judges everything whose judgement time is <= `now_ms`; the caller promises that
    /// every input with event time <= `now_ms` has been given.
    pub fn advance(&mut self, now_ms: i64) -> Judged {
        let mut judged = Judged::default();
        let mut moved = BTreeSet::new();
        while let Some(entry) = self.pending.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let ((at, ..), pending) = entry.remove_entry();
            match pending {
                Pending::Outcome(adjustment) => {
                    let outcome = self.outcome(&adjustment);
                    self.weigh(at, &adjustment, &outcome, &mut moved);
                    judged.outcomes.push(outcome);
                }
                Pending::Miss(offline) => {
                    let (signatures, model) = self.missed(at, &offline, &mut moved);
                    judged.misses += u64::from(signatures);
                    judged.model_misses += u64::from(model);
                }
                Pending::FalseAlarm(alert) => {
                    if self.false_alarm(at, &alert, &mut moved) {
                        judged.false_alarms += 1;
                    }
                }
                Pending::Retry(key, app_type) => self.retry(at, key, app_type, &mut moved),
            }
        }
        self.now = Some(self.now.map_or(now_ms, |now| now.max(now_ms)));
        self.prune();
        judged.tuned = moved.iter().filter_map(|key| self.tuned.get(key).cloned()).collect();
        judged
    }

    pub fn tuned(&self) -> impl Iterator<Item = &TunedValue> {
        self.tuned.values()
    }

    /// (app type, signature key or `tier-N`, action) -> verdicts: which strategies worked.
    pub fn tallies(&self) -> &BTreeMap<(String, String, String), Tally> {
        &self.tallies
    }

    /// The instance's latest evidence at `at_ms`: a window ending within one horizon
    /// before it; older evidence says nothing about the instance at `at_ms`.
    fn evidence_at(&self, instance: &str, at_ms: i64) -> Option<&WindowEvidence> {
        let from = at_ms.saturating_sub(self.config.horizon_ms);
        let windows = self.evidence.get(instance)?;
        windows.range((Bound::Excluded(from), Bound::Included(at_ms))).next_back().map(|(_, e)| e)
    }

    fn any_in(times: &BTreeMap<String, BTreeSet<i64>>, instance: &str, range: (Bound<i64>, Bound<i64>)) -> Option<i64> {
        times.get(instance).and_then(|t| t.range(range).next().copied())
    }

    fn outcome(&mut self, adjustment: &Adjustment) -> FeedbackOutcome {
        let t = adjustment.event_time_ms;
        let h = self.config.horizon_ms;
        let end = t.saturating_add(h);
        let instance = adjustment.instance_id.as_str();
        let failure = Self::any_in(&self.offline, instance, (Bound::Excluded(t), Bound::Included(end)));
        let signature = self.alerts.get(&adjustment.alert_id).and_then(|a| a.signature.clone());
        let confidence = |e: &WindowEvidence| match &signature {
            Some(s) if e.signature.as_ref() != Some(s) => 0.0,
            _ => e.confidence,
        };
        let before = self.evidence_at(instance, t);
        let after = self.evidence_at(instance, failure.map_or(end, |f| f - 1));
        let score_before = before.and_then(|e| e.anomaly_score);
        let score_after = after.and_then(|e| e.anomaly_score);
        let confidence_before = before.map_or(0.0, confidence);
        let confidence_after = after.map_or(0.0, confidence);
        let score_delta = score_before.zip(score_after).map(|(b, a)| a - b);
        let confidence_delta = before.zip(after).map(|_| confidence_after - confidence_before);
        let verdict = if failure.is_some() {
            Verdict::FailedAnyway
        } else if score_delta.is_some_and(|d| d > WORSENED_SCORE + EPSILON)
            || confidence_delta.is_some_and(|d| d > WORSENED_CONFIDENCE + EPSILON)
        {
            Verdict::Worsened
        } else if score_delta.is_some_and(|d| d <= -HELPED_SCORE + EPSILON)
            || confidence_delta.is_some_and(|d| d <= -HELPED_CONFIDENCE + EPSILON)
        {
            Verdict::Helped
        } else {
            Verdict::NoEffect
        };
        let action = adjustment.action.symbol().to_string();
        let strategy = signature.clone().unwrap_or_else(|| format!("tier-{}", adjustment.tier));
        self.tallies.entry((adjustment.app_type.clone(), strategy, action.clone())).or_default().add(verdict);
        FeedbackOutcome {
            adjustment_id: adjustment.id.clone(),
            instance_id: adjustment.instance_id.clone(),
            app_type: adjustment.app_type.clone(),
            signature,
            action,
            score_before,
            score_after,
            confidence_before,
            confidence_after,
            failed: failure.is_some(),
            verdict,
            horizon_ms: h,
            event_time_ms: end,
        }
    }

    /// A failure at `at` that a source (the signatures, the anomaly model) did not
    /// foresee with an alert within the horizon before it: lowers the threshold of the
    /// signature that came closest to matching, or the tiers of a score that came close
    /// to the alert boundary. Each source is judged on its own: a failure the model
    /// caught still tells that a signature's threshold is too high. Whether the
    /// signatures, and the model, missed it.
    fn missed(&mut self, at: i64, offline: &Alert, moved: &mut BTreeSet<String>) -> (bool, bool) {
        let instance = offline.instance_id.as_str();
        let range = (Bound::Included(at.saturating_sub(self.config.horizon_ms)), Bound::Included(at));
        let signature_missed = Self::any_in(&self.alerted, instance, range).is_none();
        let model_missed = Self::any_in(&self.scored, instance, range).is_none();
        // The strongest sign of each source within the horizon; the latest on ties.
        let windows: Vec<WindowEvidence> = self
            .evidence
            .get(instance)
            .map(|w| w.range((Bound::Excluded(at.saturating_sub(self.config.horizon_ms)), Bound::Included(at))))
            .into_iter()
            .flatten()
            .map(|(_, e)| e.clone())
            .collect();
        let closest =
            windows.iter().filter(|e| e.signature.is_some()).max_by(|a, b| a.confidence.total_cmp(&b.confidence));
        if let (true, Some(e)) = (signature_missed, closest) {
            let (c, threshold) = (e.confidence, e.threshold);
            let signature = e.signature.clone().unwrap_or_default();
            if c < threshold && c >= threshold - self.config.near_miss - EPSILON {
                let reason = format!(
                    "missed failure of {instance} at {at} ms: confidence {c:.2} of {signature} under threshold {threshold:.2}"
                );
                self.step_threshold(&signature, &e.app_type, Some(threshold), at, -1.0, reason, moved);
            }
        }
        let highest = windows.iter().filter_map(|e| e.anomaly_score.map(|s| (s, e))).max_by(|a, b| a.0.total_cmp(&b.0));
        if let (true, Some((score, e))) = (model_missed, highest) {
            let boundary = ALERT_BOUNDARY + self.shift(&e.app_type);
            if e.tier < 2 && score < boundary && score >= boundary - SHIFT_REACH {
                let reason = format!(
                    "missed failure of {instance} at {at} ms: anomaly score {score:.1} under boundary {boundary:.1}"
                );
                self.step_shift(&e.app_type, at, -1.0, reason, moved);
            }
        }
        (signature_missed, model_missed)
    }

    /// An alert at `alert.window_end_ms` judged at `at`: false if the instance neither
    /// failed nor was adjusted within the horizon; raises what fired.
    fn false_alarm(&mut self, at: i64, alert: &Alert, moved: &mut BTreeSet<String>) -> bool {
        let t = alert.window_end_ms;
        let instance = alert.instance_id.as_str();
        let failed = Self::any_in(&self.offline, instance, (Bound::Excluded(t), Bound::Included(at)));
        let adjusted = Self::any_in(&self.applied, instance, (Bound::Included(t), Bound::Included(at)));
        if failed.is_some() || adjusted.is_some() {
            return false;
        }
        let h = self.config.horizon_ms;
        match (alert.kind, &alert.signature) {
            (AlertKind::Signature, Some(signature)) => {
                let c = alert.confidence;
                let reason = format!(
                    "false alarm on {instance} at {t} ms: {signature} at confidence {c:.2}, no failure within {h} ms"
                );
                let seen = self.evidence_at(instance, t).filter(|e| e.signature.as_ref() == Some(signature));
                let fallback = seen.map(|e| e.threshold);
                self.step_threshold(signature, &alert.app_type, fallback, at, 1.0, reason, moved);
            }
            (AlertKind::Anomaly, _) => {
                let score = alert.anomaly_score.map_or_else(|| "unknown".to_string(), |s| format!("{s:.1}"));
                let reason =
                    format!("false alarm on {instance} at {t} ms: anomaly score {score}, no failure within {h} ms");
                self.step_shift(&alert.app_type, at, 1.0, reason, moved);
            }
            _ => {}
        }
        true
    }

    /// Reinforces a strategy whose adjustments helped and weakens one after which the
    /// instance failed anyway or got worse: once it has `min_outcomes` decisive outcomes
    /// since its weight last moved, two thirds of them one way move it one step.
    fn weigh(&mut self, at: i64, adjustment: &Adjustment, outcome: &FeedbackOutcome, moved: &mut BTreeSet<String>) {
        let strategy = outcome.signature.clone().unwrap_or_else(|| format!("tier-{}", adjustment.tier));
        let key = weight_key(&adjustment.app_type, &strategy, &outcome.action);
        let tally = self.since_move.entry(key.clone()).or_default();
        tally.add(outcome.verdict);
        let bad = tally.worsened + tally.failed_anyway;
        let decisive = tally.helped + bad;
        if decisive < u64::from(self.config.min_outcomes) {
            return;
        }
        let (direction, what) = if bad * 3 >= decisive * 2 {
            (-1.0, format!("{bad} of {decisive} failed anyway or worsened"))
        } else if tally.helped * 3 >= decisive * 2 {
            (1.0, format!("{} of {decisive} helped", tally.helped))
        } else {
            return;
        };
        let limits = self.config.weight_limits;
        let fresh = TunedValue {
            key: key.clone(),
            app_type: adjustment.app_type.clone(),
            default_value: limits.1,
            floor: limits.0,
            ceiling: limits.1,
            steps: Vec::new(),
        };
        let reason = format!("{} of {strategy} on {}: {what}", outcome.action, adjustment.app_type);
        self.step(fresh, limits, at, direction * self.config.weight_step, reason, moved);
        if self.last_move.get(&key) == Some(&at) {
            self.since_move.remove(&key);
            self.schedule_retry(&key, &adjustment.app_type, at);
        }
    }

    /// A strategy whose weight reached the floor no longer acts, so no outcome could
    /// ever raise it again: it is tried again one step up `weight_retry_ms` later.
    fn schedule_retry(&mut self, key: &str, app_type: &str, moved_at: i64) {
        let at_floor = self.tuned.get(key).is_some_and(|v| v.latest() <= self.config.weight_limits.0 + EPSILON);
        if at_floor {
            let due = moved_at.saturating_add(self.config.weight_retry_ms);
            self.expect(
                (due, key.to_owned(), Kind::Retry, key.to_owned()),
                Pending::Retry(key.to_owned(), app_type.to_owned()),
            );
        }
    }

    fn retry(&mut self, at: i64, key: String, app_type: String, moved: &mut BTreeSet<String>) {
        let limits = self.config.weight_limits;
        let Some(value) = self.tuned.get(&key).cloned() else { return };
        if value.latest() > limits.0 + EPSILON {
            return;
        }
        let hours = self.config.weight_retry_ms as f64 / 3_600_000.0;
        let reason = format!("{key} on {app_type}: tried again after {hours:.1} h turned off");
        self.step(value, limits, at, self.config.weight_step, reason, moved);
        self.since_move.remove(&key);
    }

    fn shift(&self, app_type: &str) -> f64 {
        self.tuned.get(&shift_key(app_type)).map_or(0.0, TunedValue::latest)
    }

    /// `fallback`: the threshold the detector reported, for a signature `thresholds` lacks.
    #[allow(clippy::too_many_arguments)]
    fn step_threshold(
        &mut self,
        signature: &str,
        app_type: &str,
        fallback: Option<f64>,
        at: i64,
        direction: f64,
        reason: String,
        moved: &mut BTreeSet<String>,
    ) {
        let Some(own) = self.thresholds.get(signature).copied().or(fallback) else {
            warn!(signature, "no threshold known for a signature; not tuned");
            return;
        };
        let limits = self.config.threshold_limits;
        let delta = direction * self.config.threshold_step;
        let fresh = || TunedValue {
            key: threshold_key(signature),
            app_type: app_type.to_string(),
            default_value: own.clamp(limits.0, limits.1),
            floor: limits.0,
            ceiling: limits.1,
            steps: Vec::new(),
        };
        self.step(fresh(), limits, at, delta, reason, moved);
    }

    fn step_shift(&mut self, app_type: &str, at: i64, direction: f64, reason: String, moved: &mut BTreeSet<String>) {
        let limits = self.config.shift_limits;
        let fresh = TunedValue {
            key: shift_key(app_type),
            app_type: app_type.to_string(),
            default_value: 0.0,
            floor: limits.0,
            ceiling: limits.1,
            steps: Vec::new(),
        };
        self.step(fresh, limits, at, direction * self.config.shift_step, reason, moved);
    }

    /// Moves a key by `delta` within `limits`, unless it moved less than `min_interval_ms`
    /// of judgement time ago or is already at the limit.
    fn step(
        &mut self,
        fresh: TunedValue,
        limits: (f64, f64),
        at: i64,
        delta: f64,
        reason: String,
        moved: &mut BTreeSet<String>,
    ) {
        let key = fresh.key.clone();
        if self.last_move.get(&key).is_some_and(|&last| at.saturating_sub(last) < self.config.min_interval_ms) {
            return;
        }
        let current = self.tuned.get(&key).map_or(fresh.default_value, TunedValue::latest);
        // Rounded so that twenty steps of 0.05 land on the decimal a person would write.
        let next = ((current + delta).clamp(limits.0, limits.1) * 1e6).round() / 1e6;
        if (next - current).abs() < EPSILON {
            return;
        }
        let value = self.tuned.entry(key.clone()).or_insert(fresh);
        // A value published under other limits keeps them where its steps lie outside.
        value.floor = value.steps.iter().map(|s| s.value).fold(limits.0.min(value.default_value), f64::min);
        value.ceiling = value.steps.iter().map(|s| s.value).fold(limits.1.max(value.default_value), f64::max);
        let from_ms = at.saturating_add(self.config.delay_ms).max(value.steps.last().map_or(i64::MIN, |s| s.from_ms));
        value.steps.push(TunedStep { from_ms, value: next, reason });
        if value.steps.len() > MAX_STEPS {
            value.steps.remove(0);
        }
        self.last_move.insert(key.clone(), at);
        moved.insert(key);
    }

    /// Drops what no judgement still to come can read: everything two horizons behind.
    fn prune(&mut self) {
        let Some(cutoff) = self.cutoff() else { return };
        for times in [&mut self.offline, &mut self.alerted, &mut self.scored, &mut self.applied] {
            times.retain(|_, t| {
                *t = t.split_off(&cutoff);
                !t.is_empty()
            });
        }
        self.evidence.retain(|_, windows| {
            *windows = windows.split_off(&cutoff);
            !windows.is_empty()
        });
        self.alerts.retain(|_, a| a.window_end_ms >= cutoff);
    }

    /// How many inputs the tracker holds: bounded by two horizons of them.
    #[cfg(test)]
    fn held(&self) -> usize {
        let times = |m: &BTreeMap<String, BTreeSet<i64>>| m.values().map(BTreeSet::len).sum::<usize>();
        self.evidence.values().map(BTreeMap::len).sum::<usize>()
            + times(&self.offline)
            + times(&self.alerted)
            + times(&self.scored)
            + times(&self.applied)
            + self.alerts.len()
            + self.pending.len()
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
