//! One telemetry partition's processing: records in order in, alerts and dead letters
//! out.
//!
//! In: the partition's records, one at a time, in offset order. Out: [`Output`]s —
//! signature alerts, `offline` / `recovered` alerts, and dead letters for records that
//! do not decode or are out of bounds. Everything here is a deterministic function of
//! the partition's record sequence: event time only, alert ids derived from what they
//! describe, and alert state that depends on a bounded stretch of the past, so that a
//! partition rebuilt by replaying its lookback emits exactly what a run that never
//! stopped emits.
//!
//! Alerts are edge-triggered: a signature alert fires when a window matches a
//! signature above its threshold and the window one hop earlier did not match that
//! same signature. That state reaches back one hop only, so a replay that ends with
//! the last window of each instance (see [`PartitionState::finish_replay`]) restores it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::{Alert, AlertKind, Codec, DeadLetter, TelemetrySample};
use crate::detect::dtw::Dtw;
use crate::detect::matcher::Matcher;
use crate::detect::validate;
use crate::window::liveness::{Liveness, LivenessConfig, LivenessEvent, LivenessKind};
use crate::window::{ClosedWindow, Windows};

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
}

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
    pub dtw_computed: u64,
    pub dtw_pruned: u64,
}

/// The state of one partition: its event-time clock, the liveness of its instances and
/// which signature each instance's last evaluated window matched.
pub struct PartitionState {
    partition: i32,
    clock_ms: Option<i64>,
    liveness: Liveness,
    /// Per instance: the end of its last evaluated window and the signature it alerted on.
    active: HashMap<String, (i64, Option<Arc<str>>)>,
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

    /// Matches the last window of each instance seen in the replay, which is all the
    /// alert state the next window depends on.
    pub fn finish_replay(&mut self, shared: &Shared, matcher: &Matcher, dtw: &mut Dtw) {
        let Some(deferred) = self.deferred.take() else { return };
        let mut last: Vec<ClosedWindow> = deferred.into_values().collect();
        last.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let mut discard = Vec::new();
        for w in &last {
            self.evaluate(shared, matcher, dtw, w, -1, &mut discard);
        }
        self.counters = Counters::default();
    }

    /// Processes one record.
    pub fn process(
        &mut self,
        shared: &Shared,
        matcher: &Matcher,
        dtw: &mut Dtw,
        input: Input<'_>,
        out: &mut Vec<Output>,
    ) {
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
                None => self.evaluate(shared, matcher, dtw, &w, input.offset, out),
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
            let horizon = b - shared.lookback_ms;
            self.active.retain(|_, (end, _)| *end >= horizon);
        }
    }

    fn evaluate(
        &mut self,
        shared: &Shared,
        matcher: &Matcher,
        dtw: &mut Dtw,
        w: &ClosedWindow,
        offset: i64,
        out: &mut Vec<Output>,
    ) {
        self.counters.windows += 1;
        let evaluation = matcher.evaluate(dtw, &w.app_type, &w.function, &w.values);
        let matched = evaluation.as_ref().filter(|e| e.alerts()).map(|e| e.best.signature.key.clone());
        let previous = self.active.get(&w.instance_id);
        let continuing = matches!(previous, Some((end, Some(sig))) if *end == w.end_ms - shared.hop_ms
            && matched.as_ref() == Some(sig));
        if let Some(e) = &evaluation {
            self.counters.dtw_computed += e.computed as u64;
            self.counters.dtw_pruned += e.pruned as u64;
        }
        if let (Some(e), false) = (&evaluation, continuing) {
            if e.alerts() {
                self.counters.alerts += 1;
                out.push(Output::Alert(Alert {
                    id: alert_id(&w.instance_id, AlertKind::Signature, Some(&e.best.signature.key), w.end_ms),
                    instance_id: w.instance_id.clone(),
                    app_type: w.app_type.clone(),
                    function: w.function.clone(),
                    kind: AlertKind::Signature,
                    window_start_ms: w.start_ms,
                    window_end_ms: w.end_ms,
                    signature: Some(e.best.signature.key.to_string()),
                    confidence: e.best.confidence,
                    runner_up: e.runner_up.as_ref().map(|r| r.signature.key.to_string()),
                    runner_up_confidence: e.runner_up.as_ref().map_or(0.0, |r| r.confidence),
                    explanation: e.explanation.clone(),
                    anomaly_score: None,
                    model_version: None,
                    source_partition: self.partition,
                    source_offset: offset,
                }));
            }
        }
        self.active.insert(w.instance_id.clone(), (w.end_ms, matched));
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
