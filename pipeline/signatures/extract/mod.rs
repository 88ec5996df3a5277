//! Cuts a failure signature out of recorded telemetry and calibrates its threshold.
//!
//! In: an [`ExtractRequest`] (an instance, the time it failed, how long a window and
//! how far ahead of the failure) and the telemetry of the fleet around that time,
//! replayed from `<prefix>.telemetry` by timestamp. Out: an [`Extracted`] signature,
//! not yet imported, with the deviation ranking behind its metrics and the
//! [`Calibration`] behind its threshold.
//!
//! Guarantees: the series is cut with `window::features::grid` on the detector's grid
//! (by default 64 steps of 10 s, gaps filled for at most [`MAX_FILL`] steps), ending
//! `lead` before the failure, so the signature compares with live windows like with
//! like and matches while there is still time to act. The threshold, unless given, is
//! the highest confidence the signature reaches on windows of healthy instances of its
//! scope, plus a margin: healthy means another instance of the same app type (and
//! function, unless the signature is for every function) that reported without an
//! outage (a gap of more than [`MAX_FILL`] steps) over the whole replayed range.

mod score;
mod select;

use std::collections::BTreeMap;

use rdkafka::message::Message;
use serde::Serialize;

pub use score::{
    calibrated_threshold, confidence_against, Calibration, Scorer, RADIUS, SEPARATES_BELOW, THRESHOLD_CEILING,
    THRESHOLD_FLOOR,
};
pub use select::{deviations, select, Deviation, MAX_METRICS, MIN_METRICS, SELECT_DEVIATION};

use super::validate::{validate, InvalidSignature, ANY_FUNCTION};
use crate::codec::{Codec, FailureSignature, Normalisation, TelemetrySample};
use crate::kafka::reader::{self, ReadError, Start};
use crate::kafka::Cluster;
use crate::window::features::{self, DEFAULT_FEATURES};

/// The live detector's window: 64 steps of 10 s, gaps filled for at most 3 steps.
pub const DEFAULT_STEP_MS: i64 = crate::window::default_step_ms();
pub const DEFAULT_POINTS: usize = crate::window::default_points();
pub const MAX_FILL: usize = crate::window::default_max_fill_steps();
/// Steps between the ends of two calibration windows of one instance (a minute at
/// 10 s): finer adds little, as neighbouring windows share most of their points.
pub const CALIBRATION_STRIDE: usize = 6;
/// Channels kept per sample: the window features.
const CHANNELS: usize = DEFAULT_FEATURES.len();

/// What to cut and how.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractRequest {
    pub instance: String,
    /// Event time of the failure (epoch ms); the window ends `lead_ms` before it.
    pub until_ms: i64,
    pub lead_ms: i64,
    /// Length of the window; a whole number of steps.
    pub length_ms: i64,
    pub step_ms: i64,
    /// How much of the instance's telemetry before the window is its baseline.
    pub baseline_ms: i64,
    /// How much telemetry after the failure is replayed too: more healthy windows to
    /// calibrate on, and time to see which other instances went down soon after.
    pub lookahead_ms: i64,
    /// Name of the signature; default `<kind>-<instance>`.
    pub name: Option<String>,
    pub failure_kind: String,
    /// Metrics to keep; `None` chooses them by [`select`].
    pub metrics: Option<Vec<String>>,
    /// How each kept metric is compared, in the order of `metrics`; `None` gives each
    /// its feature's default (`features::default_normalisation`).
    pub normalisation: Option<Vec<Normalisation>>,
    /// Threshold to set; `None` calibrates it.
    pub threshold: Option<f64>,
    /// Calibration: how far above the highest healthy confidence the threshold goes.
    pub margin: f64,
    /// App type and function of the signature; default the instance's.
    pub app_type: Option<String>,
    pub function: Option<String>,
}

impl ExtractRequest {
    /// Points of the window.
    pub fn points(&self) -> Result<usize, ExtractError> {
        let bad = |reason: String| Err(ExtractError::Request(reason));
        if self.step_ms <= 0 || self.length_ms <= 0 || self.baseline_ms <= 0 {
            return bad("--step, --length and --baseline must be longer than zero".to_owned());
        }
        if self.lead_ms < 0 || self.lookahead_ms < 0 {
            return bad("--lead and --lookahead must not be negative".to_owned());
        }
        if self.length_ms % self.step_ms != 0 {
            return bad(format!(
                "--length ({} ms) must be a whole number of --step ({} ms)",
                self.length_ms, self.step_ms
            ));
        }
        let points = (self.length_ms / self.step_ms) as usize;
        if points < super::validate::MIN_POINTS {
            return bad(format!("--length gives {points} points; a signature needs {}", super::validate::MIN_POINTS));
        }
        if !(0.0..1.0).contains(&self.margin) {
            return bad(format!("--margin must be from 0 to 1, got {}", self.margin));
        }
        match (&self.normalisation, &self.metrics) {
            (Some(_), None) => return bad("--normalisation needs --metrics, one mode per metric".to_owned()),
            (Some(modes), Some(metrics)) if modes.len() != metrics.len() => {
                return bad(format!(
                    "--normalisation gives {} modes for {} metrics; give one per metric, in their order",
                    modes.len(),
                    metrics.len()
                ))
            }
            _ => {}
        }
        Ok(points)
    }

    /// End (exclusive) of the cut window, epoch ms.
    pub fn window_end_ms(&self) -> i64 {
        self.until_ms - self.lead_ms
    }

    /// The event-time range of telemetry the extraction reads: the baseline, the
    /// window, and the lookahead past the failure.
    pub fn replay_range(&self) -> (i64, i64) {
        (self.window_end_ms() - self.length_ms - self.baseline_ms, self.until_ms + self.lookahead_ms)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Request(String),
    #[error("instance {instance} has no telemetry between {from} and {to}")]
    NoInstance { instance: String, from: String, to: String },
    #[error("instance {instance} has no {metric} at {at} in the window (a gap longer than {MAX_FILL} steps, or never reported)")]
    Missing { instance: String, metric: String, at: String },
    #[error("{0:?} is not a window feature; windows hold {features}", features = DEFAULT_FEATURES.join(", "))]
    NotAWindowFeature(String),
    #[error("instance {instance}: only {found} features can be ranked against its baseline (need {MIN_METRICS}); lengthen --baseline or pass --metrics")]
    TooFewMetrics { instance: String, found: usize },
    #[error("no healthy window of another {app_type}/{function} instance in the replayed range to calibrate against; pass --threshold")]
    NoHealthyWindows { app_type: String, function: String },
    #[error(transparent)]
    Invalid(#[from] InvalidSignature),
    #[error("replaying telemetry: {0}")]
    Read(#[from] ReadError),
    #[error("replaying telemetry: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The telemetry of one instance over the replayed range: its window features per sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceTelemetry {
    pub app_type: String,
    pub function: String,
    /// By timestamp: the event time and the value of each of [`DEFAULT_FEATURES`].
    pub samples: Vec<(i64, [f64; CHANNELS])>,
}

impl InstanceTelemetry {
    pub fn push(&mut self, sample: &TelemetrySample) {
        self.app_type.clone_from(&sample.app_type);
        self.function.clone_from(&sample.function);
        let values = DEFAULT_FEATURES.map(|f| features::value(sample, f));
        self.samples.push((sample.timestamp_ms, values));
    }

    /// Every window feature on the grid of `points` steps ending at `end_ms`
    /// (time-major, `NaN` where nothing is known).
    pub fn window(&self, end_ms: i64, step_ms: i64, points: usize) -> Vec<f64> {
        let start = end_ms - step_ms * points as i64;
        let from = self.samples.partition_point(|(t, _)| *t < start);
        let to = self.samples.partition_point(|(t, _)| *t < end_ms);
        let rows: Vec<(i64, &[f64])> = self.samples[from..to].iter().map(|(t, v)| (*t, &v[..])).collect();
        features::grid(&rows, CHANNELS, end_ms, step_ms, points, MAX_FILL).0
    }

    /// Whether the instance reported throughout `[from, to)` without a gap longer than
    /// `max_gap_ms` (at the start and end too).
    pub fn continuous(&self, from: i64, to: i64, max_gap_ms: i64) -> bool {
        let mut last = from;
        for &(t, _) in self.samples.iter().filter(|(t, _)| (from..to).contains(t)) {
            if t - last > max_gap_ms {
                return false;
            }
            last = t;
        }
        to - last <= max_gap_ms
    }
}

/// The fleet's telemetry by instance id.
pub type Telemetry = BTreeMap<String, InstanceTelemetry>;

/// A cut signature and the evidence behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub signature: FailureSignature,
    /// Every rankable feature, most deviant first (what `--metrics` default chose from).
    pub deviations: Vec<Deviation>,
    /// `None` when a threshold was given and no healthy window was found.
    pub calibration: Option<Calibration>,
}

/// Reads the telemetry of `request`'s replay range from `<prefix>.telemetry`, starting
/// at the offsets for its first timestamp. Records that do not decode are counted,
/// logged once, and skipped.
pub async fn replay(cluster: &Cluster, request: &ExtractRequest) -> Result<Telemetry, ExtractError> {
    let (from, to) = request.replay_range();
    let topic = cluster.topic::<TelemetrySample>();
    let config = cluster.client_config();
    // A step early: the Kafka timestamp is the event time, but a margin costs nothing.
    let start = Start::Time(from - request.step_ms);
    tokio::task::spawn_blocking(move || {
        let codec = Codec::<TelemetrySample>::new();
        let mut telemetry = Telemetry::new();
        let mut undecodable = 0u64;
        reader::read_to_end(&config, &topic, start, |m| {
            match m.payload().map(|p| codec.decode(p)) {
                Some(Ok(s)) if (from..to).contains(&s.timestamp_ms) => {
                    telemetry.entry(s.instance_id.clone()).or_default().push(&s)
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    if undecodable == 0 {
                        tracing::warn!(%error, %topic, partition = m.partition(), offset = m.offset(), "telemetry record skipped");
                    }
                    undecodable += 1;
                }
                None => undecodable += 1,
            }
        })?;
        if undecodable > 0 {
            tracing::warn!(undecodable, %topic, "telemetry records skipped while replaying");
        }
        for instance in telemetry.values_mut() {
            // One instance lives on one partition, in order; sorting costs little and
            // makes the grid's precondition hold whatever the producer did.
            instance.samples.sort_by_key(|(t, _)| *t);
        }
        Ok(telemetry)
    })
    .await?
}

/// Cuts, selects and calibrates; see the module documentation.
pub fn extract(telemetry: &Telemetry, request: &ExtractRequest) -> Result<Extracted, ExtractError> {
    let points = request.points()?;
    let (from, to) = request.replay_range();
    let step = request.step_ms;
    let end = request.window_end_ms();
    let start = end - request.length_ms;
    let source = telemetry
        .get(&request.instance)
        .filter(|s| s.samples.iter().any(|(t, _)| (start..end).contains(t)))
        .ok_or_else(|| ExtractError::NoInstance {
        instance: request.instance.clone(),
        from: rfc3339(start),
        to: rfc3339(end),
    })?;

    let window = source.window(end, step, points);
    let lo = source.samples.partition_point(|(t, _)| *t < start - request.baseline_ms);
    let hi = source.samples.partition_point(|(t, _)| *t < start);
    let baseline: Vec<[f64; CHANNELS]> = source.samples[lo..hi].iter().map(|(_, v)| *v).collect();
    let ranked = deviations(&window, points, &baseline);
    let metrics = match &request.metrics {
        Some(given) => given.clone(),
        None => {
            if ranked.len() < MIN_METRICS {
                return Err(ExtractError::TooFewMetrics { instance: request.instance.clone(), found: ranked.len() });
            }
            select(&ranked)
        }
    };

    let channels = metrics.iter().map(|m| channel_of(m)).collect::<Result<Vec<_>, _>>()?;
    let mut series = Vec::with_capacity(metrics.len());
    for (metric, &c) in metrics.iter().zip(&channels) {
        let channel: Vec<f64> = (0..points).map(|t| window[t * CHANNELS + c]).collect();
        if let Some(t) = channel.iter().position(|v| !v.is_finite()) {
            return Err(ExtractError::Missing {
                instance: request.instance.clone(),
                metric: metric.clone(),
                at: rfc3339(start + t as i64 * step),
            });
        }
        series.push(channel);
    }
    let failure_kind = request.failure_kind.clone();
    let mut signature = FailureSignature {
        name: request.name.clone().unwrap_or_else(|| format!("{failure_kind}-{}", request.instance)),
        app_type: request.app_type.clone().unwrap_or_else(|| source.app_type.clone()),
        function: request.function.clone().unwrap_or_else(|| source.function.clone()),
        failure_kind,
        normalisation: match &request.normalisation {
            Some(modes) => modes.clone(),
            None => metrics.iter().map(|m| features::default_normalisation(m)).collect(),
        },
        metrics,
        series,
        interval_ms: step,
        // Replaced below; any valid value lets the series be checked first.
        threshold: 0.5,
        lead_ms: request.lead_ms,
        source: String::new(),
    };
    validate(&signature)?;

    let calibration = calibrate(telemetry, request, &signature, &channels, (from, to))?;
    signature.threshold = match (request.threshold, &calibration) {
        (Some(t), _) => t,
        (None, Some(c)) => calibrated_threshold(c.max_healthy_confidence, request.margin),
        (None, None) => {
            return Err(ExtractError::NoHealthyWindows {
                app_type: signature.app_type.clone(),
                function: signature.function.clone(),
            })
        }
    };
    let calibration = calibration.map(|c| Calibration { margin: signature.threshold - c.max_healthy_confidence, ..c });
    signature.source = describe(request, start, end, calibration.as_ref());
    validate(&signature)?;
    if let Some(c) = calibration.as_ref().filter(|c| !c.separates) {
        tracing::warn!(
            signature = %super::validate::key(&signature),
            max_healthy_confidence = c.max_healthy_confidence,
            instance = %c.max_healthy_instance,
            "the signature cannot separate: a healthy window scores above {SEPARATES_BELOW}"
        );
    }
    Ok(Extracted { signature, deviations: ranked, calibration })
}

/// The window channel (index into [`DEFAULT_FEATURES`]) of `metric`.
fn channel_of(metric: &str) -> Result<usize, ExtractError> {
    DEFAULT_FEATURES.iter().position(|f| *f == metric).ok_or_else(|| ExtractError::NotAWindowFeature(metric.to_owned()))
}

/// Scores the signature on every healthy window in the replayed range; `None` if
/// there is none.
fn calibrate(
    telemetry: &Telemetry,
    request: &ExtractRequest,
    signature: &FailureSignature,
    channels: &[usize],
    (from, to): (i64, i64),
) -> Result<Option<Calibration>, ExtractError> {
    let step = request.step_ms;
    let points = signature.series[0].len();
    // The range as far as the topic reaches: telemetry that starts after `from` or
    // ends before `to` because the recording does is no outage.
    let first_seen = telemetry.values().filter_map(|i| i.samples.first().map(|(t, _)| *t)).min().unwrap_or(from);
    let last_seen = telemetry.values().filter_map(|i| i.samples.last().map(|(t, _)| *t)).max().unwrap_or(from);
    let (from, to) = (from.max(first_seen), to.min(last_seen + step));
    let max_gap = (MAX_FILL as i64 + 1) * step;
    let mut scorer = Scorer::new(signature).map_err(|e| {
        ExtractError::Invalid(InvalidSignature {
            key: super::validate::key(signature),
            field: "series".into(),
            reason: e.to_string(),
        })
    })?;
    let in_scope = |i: &InstanceTelemetry| {
        i.app_type == signature.app_type && (signature.function == ANY_FUNCTION || i.function == signature.function)
    };
    let mut best: Option<(f64, &str, i64)> = None;
    let (mut windows, mut instances) = (0, 0);
    let mut selected = vec![0.0; points * channels.len()];
    for (id, instance) in telemetry {
        if *id == request.instance || !in_scope(instance) || !instance.continuous(from, to, max_gap) {
            continue;
        }
        let before = windows;
        let mut end = from + request.length_ms;
        while end <= to {
            let all = instance.window(end, step, points);
            for t in 0..points {
                for (k, &c) in channels.iter().enumerate() {
                    selected[t * channels.len() + k] = all[t * CHANNELS + c];
                }
            }
            if let Some(confidence) = scorer.confidence(&selected) {
                windows += 1;
                if best.is_none_or(|(b, _, _)| confidence > b) {
                    best = Some((confidence, id, end));
                }
            }
            end += CALIBRATION_STRIDE as i64 * step;
        }
        instances += usize::from(windows > before);
    }
    Ok(best.map(|(max, instance, end)| Calibration {
        windows,
        instances,
        max_healthy_confidence: max,
        max_healthy_instance: instance.to_owned(),
        max_healthy_end_ms: end,
        margin: request.margin,
        separates: max <= SEPARATES_BELOW,
    }))
}

/// The `source` field: where the series was cut and how the threshold was set.
fn describe(request: &ExtractRequest, start: i64, end: i64, calibration: Option<&Calibration>) -> String {
    let lead = humantime::format_duration(std::time::Duration::from_millis(request.lead_ms.max(0) as u64));
    let mut s = format!(
        "{} failing at {}, window {}..{} (lead {lead})",
        request.instance,
        rfc3339(request.until_ms),
        rfc3339(start),
        rfc3339(end)
    );
    match (request.threshold, calibration) {
        (Some(_), _) => s.push_str("; threshold given"),
        (None, Some(c)) => s.push_str(&format!(
            "; threshold calibrated on {} healthy windows of {} instances: max confidence {:.3}, margin {:.3}",
            c.windows, c.instances, c.max_healthy_confidence, c.margin
        )),
        (None, None) => {}
    }
    s
}

/// Epoch milliseconds as RFC 3339 in UTC (the number itself if out of range).
pub fn rfc3339(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
        }
        Err(_) => ms.to_string(),
    }
}

/// A summary of an extraction for people and scripts (one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct ExtractSummary<'a> {
    pub key: String,
    pub metrics: &'a [String],
    pub threshold: f64,
    pub calibration: Option<&'a Calibration>,
    pub deviations: &'a [Deviation],
}

impl Extracted {
    pub fn summary(&self) -> ExtractSummary<'_> {
        ExtractSummary {
            key: super::validate::key(&self.signature),
            metrics: &self.signature.metrics,
            threshold: self.signature.threshold,
            calibration: self.calibration.as_ref(),
            deviations: &self.deviations,
        }
    }
}
