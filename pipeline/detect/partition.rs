//! One telemetry partition's processing: records in order in, alerts and dead letters
//! out.
//!
//! In: the partition's records, one at a time, in offset order. Out: [`Output`]s —
//! signature alerts, anomaly alerts, `offline` / `recovered` alerts, and dead letters
//! for records that do not decode or are out of bounds. Windows that close are held
//! until [`PartitionState::flush`] (once per batch), which scores them with the anomaly
//! model of their application type in one batch per type, then matches and alerts on
//! each in the order they closed. Everything here is a deterministic function of
//! the partition's record sequence: event time only, alert ids derived from what they
//! describe, and alert state that depends on a bounded stretch of the past, so that a
//! partition rebuilt by replaying its lookback emits exactly what a run that never
//! stopped emits.
//!
//! Alerts are edge-triggered: a signature alert fires when a window matches a
//! signature above its threshold and the window one hop earlier did not match that
//! same signature; an anomaly alert fires when a window's score reaches a tier of
//! [`ALERT_TIER`] or above that the window one hop earlier was not in (a rise from
//! 71–90 to 91–100 alerts again). That state reaches back one hop only, so a replay
//! that ends with the last window of each instance (see
//! [`PartitionState::finish_replay`]) restores it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::{Action, Adjustment, Alert, AlertKind, Codec, DeadLetter, TelemetrySample, WindowEvidence};
use crate::detect::dtw::Dtw;
use crate::detect::lstm::AnomalyModel;
use crate::detect::lstm::WindowScore;
use crate::detect::matcher::Matcher;
use crate::detect::models::ModelSet;
use crate::detect::validate;
use crate::feedback::Tuning;
use crate::policy::{tier_of_score, Policies};
use crate::window::liveness::{Liveness, LivenessConfig, LivenessEvent, LivenessKind};
use crate::window::{ClosedWindow, Windows};

/// The policy's adjustments for an alert, in the same transaction as the alert, with
/// the tier boundaries `shift`ed and each action weighted as the feedback loop tuned
/// them at the alert's window end.
fn decide(counters: &mut Counters, shared: &Shared, tuning: &Tuning, alert: &Alert, shift: f64, out: &mut Vec<Output>) {
    for a in shared.policies.decide_shifted(alert, shift) {
        let strategy = match (alert.kind, &alert.signature) {
            (AlertKind::Signature, Some(signature)) => signature.clone(),
            _ => format!("tier-{}", a.tier),
        };
        let weight = tuning.weight(&alert.app_type, &strategy, a.action.symbol(), alert.window_end_ms);
        let Some(a) = weighted(a, weight) else { continue };
        counters.adjustments += 1;
        out.push(Output::Adjustment(a));
    }
}

/// An adjustment with what it asks scaled by `weight` (0..1): factors toward 1, replicas
/// and fractions toward 0. `None` when nothing is left to do.
fn weighted(mut a: Adjustment, weight: f64) -> Option<Adjustment> {
    if weight >= 1.0 {
        return Some(a);
    }
    let w = weight.max(0.0);
    match a.action {
        Action::Resize => {
            a.cpu_factor = 1.0 + (a.cpu_factor - 1.0) * w;
            a.memory_factor = 1.0 + (a.memory_factor - 1.0) * w;
        }
        Action::ScaleOut => a.replicas_delta = (f64::from(a.replicas_delta) * w).ceil() as i32,
        Action::Shed | Action::Migrate => a.shed_fraction *= w,
        Action::Notify | Action::None => return Some(a),
    }
    if w == 0.0 {
        return None;
    }
    a.reason = format!("{}; weighted {w:.2} by feedback", a.reason);
    Some(a)
}

/// What every partition's processing shares, read-only during a batch.
pub struct Shared {
    pub windows: Windows,
    pub codec: Codec<TelemetrySample>,
    pub telemetry_topic: String,
    pub hop_ms: i64,
    pub lookback_ms: i64,
    pub idle_expiry_ms: i64,
    pub max_future_ms: i64,
    pub liveness: LivenessConfig,
    /// Turns alerts into adjustments.
    pub policies: Policies,
    /// Time the anomaly model takes to score one batch of one app type's windows.
    pub scoring_seconds: prometheus_client::metrics::histogram::Histogram,
}

/// What windows are judged by: the signature matcher, the anomaly models and the
/// values the feedback loop tuned, swapped together between batches.
#[derive(Clone)]
pub struct Judge {
    pub matcher: Arc<Matcher>,
    pub models: Arc<ModelSet>,
    pub tuning: Arc<Tuning>,
}

/// The lowest tier that alerts: 71–90, where the seed logs the event.
pub const ALERT_TIER: u8 = 2;

/// A record of the partition as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The Kafka timestamp, if the record has one.
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Alert(Alert),
    /// A resource change the policy decided from an alert (or from a score in the
    /// 31–70 tier, which changes resources without alerting).
    Adjustment(Adjustment),
    /// What every evaluated window showed, alerting or not: the feedback loop's input.
    Evidence(WindowEvidence),
    Dead(DeadLetter),
}

/// Counters of one partition's processing, summed into the detector's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub records: u64,
    pub dead: u64,
    pub late: u64,
    pub windows: u64,
    pub alerts: u64,
    pub adjustments: u64,
    pub dtw_computed: u64,
    pub dtw_pruned: u64,
    /// Windows the anomaly model scored.
    pub scored: u64,
}

/// What an instance's last evaluated window decided, which the next one's alerts
/// depend on.
#[derive(Debug, Clone)]
struct Active {
    end_ms: i64,
    /// The signature it alerted on.
    signature: Option<Arc<str>>,
    /// Its anomaly tier (0 without a score).
    tier: u8,
}

/// The state of one partition: its event-time clock, the liveness of its instances and
/// what each instance's last evaluated window decided.
pub struct PartitionState {
    partition: i32,
    clock_ms: Option<i64>,
    liveness: Liveness,
    active: HashMap<String, Active>,
    /// Windows closed since the last flush, with the offset of the record that closed each.
    pending: Vec<(ClosedWindow, i64)>,
    /// While replaying: the last closed window of each instance, evaluated at the end.
    deferred: Option<HashMap<String, ClosedWindow>>,
    pub counters: Counters,
}

impl PartitionState {
    pub fn new(partition: i32, shared: &Shared) -> Self {
        Self {
            partition,
            clock_ms: None,
            liveness: Liveness::new(shared.liveness.clone()),
            active: HashMap::new(),
            pending: Vec::new(),
            deferred: None,
            counters: Counters::default(),
        }
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The latest event time accepted in this partition.
    pub fn clock_ms(&self) -> Option<i64> {
        self.clock_ms
    }

    /// From now until [`Self::finish_replay`], records rebuild state only: the caller
    /// discards the outputs, and windows are not matched as they close.
    pub fn begin_replay(&mut self) {
        self.deferred = Some(HashMap::new());
    }

    /// Judges the last window of each instance seen in the replay, which is all the
    /// alert state the next window depends on.
    pub fn finish_replay(&mut self, shared: &Shared, judge: &Judge, dtw: &mut Dtw) {
        let Some(deferred) = self.deferred.take() else { return };
        let mut last: Vec<ClosedWindow> = deferred.into_values().collect();
        last.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        self.pending = last.into_iter().map(|w| (w, -1)).collect();
        let mut discard = Vec::new();
        self.flush(shared, judge, dtw, &mut discard);
        self.counters = Counters::default();
    }

    /// Scores the windows closed since the last flush, one batch per application type,
    /// then matches and alerts on each in the order they closed.
    pub fn flush(&mut self, shared: &Shared, judge: &Judge, dtw: &mut Dtw, out: &mut Vec<Output>) {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        let mut scores: Vec<Option<(WindowScore, Arc<str>)>> = vec![None; pending.len()];
        // One batch per model: the one in effect at each window's end (a handful).
        let mut by_model: Vec<(&Arc<AnomalyModel>, Vec<usize>)> = Vec::new();
        for (i, (w, _)) in pending.iter().enumerate() {
            let Some(model) = judge.models.at(&w.app_type, w.end_ms) else { continue };
            match by_model.iter_mut().find(|(m, _)| Arc::ptr_eq(m, model)) {
                Some((_, idx)) => idx.push(i),
                None => by_model.push((model, vec![i])),
            }
        }
        for (model, idx) in by_model {
            let version: Arc<str> = Arc::from(model.metadata().version.as_str());
            let windows: Vec<&[f64]> = idx.iter().map(|&i| pending[i].0.values.as_slice()).collect();
            let began = std::time::Instant::now();
            let scored = model.score(&windows);
            shared.scoring_seconds.observe(began.elapsed().as_secs_f64());
            for (&i, score) in idx.iter().zip(scored) {
                scores[i] = score.map(|s| (s, version.clone()));
            }
        }
        for ((w, offset), score) in pending.iter().zip(scores) {
            self.evaluate(shared, judge, dtw, w, score, *offset, out);
        }
        // Only now, and only instances the window store has forgotten (idle past the
        // expiry): their next window starts afresh, so their decision can never be a
        // previous one again. Pruning by the partition's clock while windows wait for
        // this flush would make alerts depend on where batches happen to end.
        self.active.retain(|instance, _| shared.windows.holds(instance));
    }

    /// Processes one record; windows it closes wait for [`Self::flush`].
    pub fn process(&mut self, shared: &Shared, input: Input<'_>, out: &mut Vec<Output>) {
        self.counters.records += 1;
        let Some(payload) = input.payload else {
            return self.dead(shared, input, "record has no value".to_owned(), out);
        };
        let sample = match shared.codec.decode(payload) {
            Ok(s) => s,
            Err(e) => return self.dead(shared, input, e.to_string(), out),
        };
        if let Err(reason) = validate::check(&sample, input.key, self.clock_ms, shared.max_future_ms) {
            return self.dead(shared, input, reason, out);
        }

        let push = shared.windows.push(self.partition, &sample);
        if push.late {
            self.counters.late += 1;
        } else if let Some(event) =
            self.liveness.observe(&sample.instance_id, &sample.app_type, &sample.function, sample.timestamp_ms)
        {
            self.liveness_alert(event, input.offset, out);
        }

        let before = self.clock_ms;
        let now = before.map_or(sample.timestamp_ms, |c| c.max(sample.timestamp_ms));
        self.clock_ms = Some(now);
        if let Some(before) = before {
            self.advance(shared, before, now, input.offset, out);
        }

        for w in push.closed {
            match &mut self.deferred {
                Some(deferred) => {
                    deferred.insert(w.instance_id.clone(), w);
                }
                None => self.pending.push((w, input.offset)),
            }
        }
    }

    /// Runs the hop boundaries the partition clock passed: liveness, expiry.
    fn advance(&mut self, shared: &Shared, before: i64, now: i64, offset: i64, out: &mut Vec<Output>) {
        let hop = shared.hop_ms;
        let first = before.div_euclid(hop) + 1;
        let last = now.div_euclid(hop);
        // After a long silence of the whole partition, only the latest boundaries matter.
        let first = first.max(last - shared.lookback_ms / hop);
        for k in first..=last {
            let b = k * hop;
            for event in self.liveness.advance(b) {
                self.liveness_alert(event, offset, out);
            }
            self.liveness.forget(b, shared.idle_expiry_ms);
            shared.windows.expire(self.partition, b);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &mut self,
        shared: &Shared,
        judge: &Judge,
        dtw: &mut Dtw,
        w: &ClosedWindow,
        score: Option<(WindowScore, Arc<str>)>,
        offset: i64,
        out: &mut Vec<Output>,
    ) {
        self.counters.windows += 1;
        self.counters.scored += u64::from(score.is_some());
        let tuning = &judge.tuning;
        let evaluation = judge.matcher.evaluate_tuned(dtw, &w.app_type, &w.function, &w.values, tuning, w.end_ms);
        let matched = evaluation.as_ref().filter(|e| e.alerts()).map(|e| e.best.signature.key.clone());
        let shift = tuning.shift(&w.app_type, w.end_ms);
        let tier_now = score.as_ref().and_then(|(s, _)| tier_of_score(f64::from(s.score) - shift)).unwrap_or(0);
        let previous = self.active.get(&w.instance_id).filter(|a| a.end_ms == w.end_ms - shared.hop_ms);
        let continuing = matches!(previous, Some(Active { signature: Some(sig), .. }) if matched.as_ref() == Some(sig));
        let escalated = tier_now > 0 && previous.is_none_or(|a| a.tier < tier_now);
        if let Some(e) = &evaluation {
            self.counters.dtw_computed += e.computed as u64;
            self.counters.dtw_pruned += e.pruned as u64;
        }
        let partition = self.partition;
        let base = |kind: AlertKind, id: String| Alert {
            id,
            instance_id: w.instance_id.clone(),
            app_type: w.app_type.clone(),
            function: w.function.clone(),
            kind,
            window_start_ms: w.start_ms,
            window_end_ms: w.end_ms,
            signature: None,
            confidence: 0.0,
            runner_up: None,
            runner_up_confidence: 0.0,
            explanation: Vec::new(),
            anomaly_score: score.as_ref().map(|(s, _)| f64::from(s.score)),
            model_version: score.as_ref().map(|(_, v)| v.to_string()),
            source_partition: partition,
            source_offset: offset,
        };
        if let (Some(e), false) = (&evaluation, continuing) {
            if e.alerts() {
                self.counters.alerts += 1;
                let key = &e.best.signature.key;
                let alert = Alert {
                    signature: Some(key.to_string()),
                    confidence: e.best.confidence,
                    runner_up: e.runner_up.as_ref().map(|r| r.signature.key.to_string()),
                    runner_up_confidence: e.runner_up.as_ref().map_or(0.0, |r| r.confidence),
                    explanation: e.explanation.clone(),
                    ..base(AlertKind::Signature, alert_id(&w.instance_id, AlertKind::Signature, Some(key), w.end_ms))
                };
                decide(&mut self.counters, shared, tuning, &alert, shift, out);
                out.push(Output::Alert(alert));
            }
        }
        if escalated {
            let tier_name = format!("tier-{tier_now}");
            let mut alert =
                base(AlertKind::Anomaly, alert_id(&w.instance_id, AlertKind::Anomaly, Some(&tier_name), w.end_ms));
            // The score as a confidence 0..1, and the best signature beside it, if any.
            alert.confidence = alert.anomaly_score.unwrap_or(0.0) / 100.0;
            if let Some(e) = &evaluation {
                alert.runner_up = Some(e.best.signature.key.to_string());
                alert.runner_up_confidence = e.best.confidence;
            }
            decide(&mut self.counters, shared, tuning, &alert, shift, out);
            // 31–70 changes resources quietly; from 71 on the seed logs the event.
            if tier_now >= ALERT_TIER {
                self.counters.alerts += 1;
                out.push(Output::Alert(alert));
            }
        }
        let closest = evaluation.as_ref().map(|e| &e.closest);
        out.push(Output::Evidence(WindowEvidence {
            instance_id: w.instance_id.clone(),
            app_type: w.app_type.clone(),
            function: w.function.clone(),
            window_end_ms: w.end_ms,
            anomaly_score: score.as_ref().map(|(s, _)| f64::from(s.score)),
            tier: i32::from(tier_now),
            model_version: score.as_ref().map(|(_, v)| v.to_string()),
            signature: closest.map(|c| c.signature.key.to_string()),
            confidence: closest.map_or(0.0, |c| c.confidence),
            threshold: closest.map_or(0.0, |c| c.signature.threshold),
        }));
        self.active.insert(w.instance_id.clone(), Active { end_ms: w.end_ms, signature: matched, tier: tier_now });
    }

    fn liveness_alert(&mut self, event: LivenessEvent, offset: i64, out: &mut Vec<Output>) {
        let kind = match event.kind {
            LivenessKind::Offline => AlertKind::Offline,
            LivenessKind::Recovered => AlertKind::Recovered,
        };
        self.counters.alerts += 1;
        out.push(Output::Alert(Alert {
            id: alert_id(&event.instance_id, kind, None, event.at_ms),
            instance_id: event.instance_id,
            app_type: event.app_type,
            function: event.function,
            kind,
            window_start_ms: event.last_seen_ms,
            window_end_ms: event.at_ms,
            signature: None,
            // How sure the liveness detector is, from its phi: 1 − 10^−phi.
            confidence: if event.phi.is_finite() { 1.0 - 10f64.powf(-event.phi) } else { 1.0 },
            runner_up: None,
            runner_up_confidence: 0.0,
            explanation: Vec::new(),
            anomaly_score: None,
            model_version: None,
            source_partition: self.partition,
            source_offset: offset,
        }));
    }

    fn dead(&mut self, shared: &Shared, input: Input<'_>, reason: String, out: &mut Vec<Output>) {
        self.counters.dead += 1;
        out.push(Output::Dead(DeadLetter {
            reason,
            stage: "detect".to_owned(),
            source_topic: shared.telemetry_topic.clone(),
            source_partition: self.partition,
            source_offset: input.offset,
            key: input.key.map(<[u8]>::to_vec),
            payload: input.payload.map(<[u8]>::to_vec),
            event_time_ms: input.timestamp_ms.unwrap_or(-1),
        }));
    }
}

/// An alert's id: what it is about, readable, and the same in every replay.
pub fn alert_id(instance: &str, kind: AlertKind, signature: Option<&str>, at_ms: i64) -> String {
    format!("{instance}/{}/{}/{at_ms}", kind.name(), signature.unwrap_or("-"))
}

#[cfg(test)]
#[path = "partition_tests.rs"]
pub(crate) mod tests;
