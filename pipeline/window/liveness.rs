//! Whether each instance is still reporting: a phi accrual failure detector
//! (Hayashibara et al., 2004) run in event time.
//!
//! In: the event time of every accepted sample of a partition ([`Liveness::observe`])
//! and the partition's event-time clock ([`Liveness::advance`]). Out:
//! [`LivenessEvent`]s — `Offline` when an instance's silence has become too unlikely
//! for its own rhythm of reporting, `Recovered` when it reports again. One `Liveness`
//! belongs to one partition's processing. Guarantees: the events are a pure function of
//! the partition's input (event time only; several events at once come sorted by
//! instance id), and an instance's suspicion adapts to how regularly it reports
//! rather than to a fixed timeout.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{invalid, WindowError, MAX_SPAN_MS};

/// How suspicious a silence must be before an instance is declared offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivenessConfig {
    /// Phi above which an instance is offline: the silence had a probability of about
    /// `10^−phi` under the instance's own inter-arrival distribution.
    #[serde(default = "default_phi_threshold")]
    pub phi_threshold: f64,
    /// Inter-arrival times kept per instance to estimate that distribution.
    #[serde(default = "default_history")]
    pub history: usize,
    /// Inter-arrival times needed before an instance is judged at all.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// Floor on the standard deviation, ms: a perfectly regular reporter would
    /// otherwise be declared offline by the first sample a few ms late.
    #[serde(default = "default_min_std_ms")]
    pub min_std_ms: i64,
    /// Silence tolerated on top of the mean interval before suspicion grows, ms.
    #[serde(default = "default_acceptable_pause_ms")]
    pub acceptable_pause_ms: i64,
}

/// Akka's and Cassandra's default: a false alarm about once in 10^8 judgements.
const fn default_phi_threshold() -> f64 {
    8.0
}

/// About 5 minutes of 10 s reports: recent enough to follow a change of interval.
const fn default_history() -> usize {
    32
}

/// Five intervals: fewer give a mean and deviation not worth judging by.
const fn default_min_samples() -> usize {
    5
}

/// 5 % of the 10 s reporting interval, the jitter of a scrape loop under load.
const fn default_min_std_ms() -> i64 {
    500
}

/// None: the deviation floor already absorbs jitter, and telemetry has no heartbeat
/// pauses (Akka's 3 s default is for its heartbeats over a loaded network).
const fn default_acceptable_pause_ms() -> i64 {
    0
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            phi_threshold: default_phi_threshold(),
            history: default_history(),
            min_samples: default_min_samples(),
            min_std_ms: default_min_std_ms(),
            acceptable_pause_ms: default_acceptable_pause_ms(),
        }
    }
}

impl LivenessConfig {
    pub fn validate(&self) -> Result<(), WindowError> {
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            return invalid(
                "liveness.phi_threshold",
                format!("must be finite and above 0, got {}", self.phi_threshold),
            );
        }
        if !(1..=10_000).contains(&self.history) {
            return invalid("liveness.history", format!("must be from 1 to 10000, got {}", self.history));
        }
        if !(1..=self.history).contains(&self.min_samples) {
            return invalid(
                "liveness.min_samples",
                format!("must be from 1 to liveness.history ({}), got {}", self.history, self.min_samples),
            );
        }
        if !(1..=MAX_SPAN_MS).contains(&self.min_std_ms) {
            return invalid(
                "liveness.min_std_ms",
                format!("must be from 1 to {MAX_SPAN_MS} ms, got {}", self.min_std_ms),
            );
        }
        if !(0..=MAX_SPAN_MS).contains(&self.acceptable_pause_ms) {
            return invalid(
                "liveness.acceptable_pause_ms",
                format!("must be from 0 to {MAX_SPAN_MS} ms, got {}", self.acceptable_pause_ms),
            );
        }
        Ok(())
    }

    /// Event time to replay before a resume point so that the events after it equal
    /// an uninterrupted run's, for instances that report at least every
    /// `report_interval_ms` while up: `idle_expiry + (history + min_samples + 1) ·
    /// interval`. An instance still tracked at the resume point reported within
    /// `idle_expiry_ms` of it; before that last report the replay must hold its whole
    /// history of intervals, and `min_samples` more so that a silence judged offline
    /// (whose interval is not kept) is judged so in the replay too. Silences within
    /// that stretch lengthen it by their own length.
    pub fn lookback_ms(&self, report_interval_ms: i64, idle_expiry_ms: i64) -> i64 {
        idle_expiry_ms + (self.history + self.min_samples + 1) as i64 * report_interval_ms
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LivenessKind {
    Offline,
    Recovered,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LivenessEvent {
    pub instance_id: String,
    pub app_type: String,
    pub function: String,
    pub kind: LivenessKind,
    /// The partition clock that passed the threshold (`Offline`), or the first new
    /// sample's event time (`Recovered`).
    pub at_ms: i64,
    /// Event time of the last sample before the silence.
    pub last_seen_ms: i64,
    /// Phi of the silence at `at_ms`.
    pub phi: f64,
}

/// The liveness of one partition's instances.
#[derive(Debug, Clone)]
pub struct Liveness {
    config: LivenessConfig,
    /// Sorted, so that events come out in instance order whatever the arrival order.
    tracks: BTreeMap<String, Track>,
}

#[derive(Debug, Clone)]
struct Track {
    app_type: String,
    function: String,
    last_ms: i64,
    intervals: VecDeque<i64>,
    /// Exact sums of `intervals` and their squares: no drift, and the same result
    /// whatever the order they were added in.
    sum: i128,
    sum_sq: i128,
    offline: bool,
}

impl Track {
    fn record(&mut self, interval: i64, history: usize) {
        // Anything beyond a year is simply very long; the cap keeps the sums exact.
        let interval = interval.min(MAX_SPAN_MS);
        self.intervals.push_back(interval);
        self.sum += i128::from(interval);
        self.sum_sq += i128::from(interval) * i128::from(interval);
        while self.intervals.len() > history.max(1) {
            if let Some(old) = self.intervals.pop_front() {
                self.sum -= i128::from(old);
                self.sum_sq -= i128::from(old) * i128::from(old);
            }
        }
    }

    /// Phi of a silence lasting until `now_ms`; `None` before `min_samples`.
    fn phi(&self, config: &LivenessConfig, now_ms: i64) -> Option<f64> {
        let n = self.intervals.len();
        if n == 0 || n < config.min_samples {
            return None;
        }
        let n = n as i128;
        let mean = self.sum as f64 / n as f64;
        let var = (self.sum_sq * n - self.sum * self.sum) as f64 / (n * n) as f64;
        let std = var.sqrt().max(config.min_std_ms.max(1) as f64);
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        Some(phi(elapsed, mean + config.acceptable_pause_ms as f64, std))
    }
}

/// Phi of a silence of `elapsed` after the last arrival, for arrivals whose intervals
/// are normal with `mean` and `std`: `phi = −log10(1 − F(elapsed))`. `1 − F` is the
/// logistic approximation of the normal tail that Akka and Cassandra use,
/// `1 / (1 + e^a)` with `y = (elapsed − mean) / std` and `a = y · (1.5976 + 0.070566·y²)`
/// (error below 1.4·10⁻⁴), so `phi = log10(1 + e^a)`, computed as a softplus so that it
/// stays finite for any silence: a silence `k` deviations past the mean has a phi of
/// about `0.694·k + 0.0306·k³`.
pub fn phi(elapsed: f64, mean: f64, std: f64) -> f64 {
    let y = (elapsed - mean) / std;
    let a = y * (1.5976 + 0.070566 * y * y);
    let softplus = if a > 0.0 { a + (-a).exp().ln_1p() } else { a.exp().ln_1p() };
    softplus / std::f64::consts::LN_10
}

impl Liveness {
    /// A detector for one partition. `config` is taken as given: check it with
    /// [`LivenessConfig::validate`] where it is loaded.
    pub fn new(config: LivenessConfig) -> Self {
        Self { config, tracks: BTreeMap::new() }
    }

    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    /// Records a sample of `instance_id` at `ts_ms`. Returns `Recovered` if the
    /// instance was offline and this sample is newer than its last: an old sample
    /// arriving late is no sign of life after the silence, and adds no interval.
    pub fn observe(&mut self, instance_id: &str, app_type: &str, function: &str, ts_ms: i64) -> Option<LivenessEvent> {
        let Some(t) = self.tracks.get_mut(instance_id) else {
            let track = Track {
                app_type: app_type.to_owned(),
                function: function.to_owned(),
                last_ms: ts_ms,
                intervals: VecDeque::with_capacity(self.config.history.max(1)),
                sum: 0,
                sum_sq: 0,
                offline: false,
            };
            self.tracks.insert(instance_id.to_owned(), track);
            return None;
        };
        if ts_ms <= t.last_ms {
            return None;
        }
        if t.app_type != app_type {
            app_type.clone_into(&mut t.app_type);
        }
        if t.function != function {
            function.clone_into(&mut t.function);
        }
        let last_seen_ms = t.last_ms;
        let event = if t.offline {
            t.offline = false;
            // The silence judged offline is an outage, not the instance's rhythm:
            // keeping it would make the next outage slower to see.
            Some(LivenessEvent {
                instance_id: instance_id.to_owned(),
                app_type: t.app_type.clone(),
                function: t.function.clone(),
                kind: LivenessKind::Recovered,
                at_ms: ts_ms,
                last_seen_ms,
                phi: t.phi(&self.config, ts_ms).unwrap_or(f64::INFINITY),
            })
        } else {
            t.record(ts_ms.saturating_sub(last_seen_ms), self.config.history);
            None
        };
        t.last_ms = ts_ms;
        event
    }

    /// Judges every instance at the partition clock `now_ms`: `Offline` for each whose
    /// silence has a phi above the threshold and that was not offline yet, sorted by
    /// instance id.
    pub fn advance(&mut self, now_ms: i64) -> Vec<LivenessEvent> {
        let mut events = Vec::new();
        for (id, t) in self.tracks.iter_mut().filter(|(_, t)| !t.offline) {
            match t.phi(&self.config, now_ms) {
                Some(phi) if phi > self.config.phi_threshold => {
                    t.offline = true;
                    events.push(LivenessEvent {
                        instance_id: id.clone(),
                        app_type: t.app_type.clone(),
                        function: t.function.clone(),
                        kind: LivenessKind::Offline,
                        at_ms: now_ms,
                        last_seen_ms: t.last_ms,
                        phi,
                    });
                }
                _ => {}
            }
        }
        events
    }

    /// Forgets instances silent for more than `idle_expiry_ms` at `now_ms`, offline or
    /// not; returns how many.
    pub fn forget(&mut self, now_ms: i64, idle_expiry_ms: i64) -> usize {
        let before = self.tracks.len();
        let cutoff = now_ms.saturating_sub(idle_expiry_ms);
        self.tracks.retain(|_, t| t.last_ms >= cutoff);
        before - self.tracks.len()
    }

    /// Phi of `instance_id`'s silence at `now_ms`; `None` if unknown or not yet judged.
    pub fn phi(&self, instance_id: &str, now_ms: i64) -> Option<f64> {
        self.tracks.get(instance_id)?.phi(&self.config, now_ms)
    }

    pub fn is_offline(&self, instance_id: &str) -> bool {
        self.tracks.get(instance_id).is_some_and(|t| t.offline)
    }

    /// Instances tracked.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}
