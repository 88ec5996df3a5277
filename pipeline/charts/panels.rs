//! What a chart's telemetry panels hold: which metrics matter for a failure kind, in
//! which unit a person reads them, and where the lines break.
//!
//! In: an [`InstanceChart`]. Out: [`MetricPanel`]s, one per unit, each with its metrics
//! as line segments in that unit. Guarantees: a line breaks where the instance did not
//! report (a crash, a restart) rather than bridging the gap.

use super::InstanceChart;
use crate::codec::metric_names as m;
use crate::window::features;

/// How a metric is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    Percent,
    Bytes,
    BytesPerSecond,
    Milliseconds,
    PerSecond,
    Cores,
    Plain,
}

impl Unit {
    /// By the unit suffix of canonical metric names.
    pub(super) fn of(name: &str) -> Self {
        if name.ends_with("_ratio") {
            Self::Percent
        } else if name.ends_with("_bytes_per_second") {
            Self::BytesPerSecond
        } else if name.ends_with("_per_second") {
            Self::PerSecond
        } else if name.ends_with("_bytes") {
            Self::Bytes
        } else if name.ends_with("_seconds") {
            Self::Milliseconds
        } else if name.ends_with("_cores") {
            Self::Cores
        } else {
            Self::Plain
        }
    }

    /// Factor from the metric's own unit and the axis description, given the largest
    /// value shown (bytes read best as GiB from one GiB up, as MiB below).
    fn scale(self, max: f64) -> (f64, &'static str) {
        const MIB: f64 = (1u64 << 20) as f64;
        const GIB: f64 = (1u64 << 30) as f64;
        match self {
            Self::Percent => (100.0, "share (%)"),
            Self::Bytes if max >= GIB => (1.0 / GIB, "memory (GiB)"),
            Self::Bytes => (1.0 / MIB, "memory (MiB)"),
            Self::BytesPerSecond => (1.0 / MIB, "throughput (MiB/s)"),
            Self::Milliseconds => (1000.0, "time (ms)"),
            Self::PerSecond => (1.0, "rate (per second)"),
            Self::Cores => (1.0, "CPU (cores)"),
            Self::Plain => (1.0, "value"),
        }
    }
}

/// A run of points without a gap: (event time ms, value).
pub(super) type Segment = Vec<(i64, f64)>;

/// One metric of a panel.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MetricLine {
    /// Its canonical name.
    pub name: String,
    pub segments: Vec<Segment>,
}

/// One telemetry panel: the metrics that share a unit.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct MetricPanel {
    /// Axis description with the unit, e.g. `memory (GiB)`.
    pub y_desc: &'static str,
    pub lines: Vec<MetricLine>,
    /// Largest value shown, in the panel's unit.
    pub max: f64,
}

/// Used when the starter library has no signature of the kind: the seed's leading
/// indicators of resources, latency and errors.
const FALLBACK: [&str; 4] = [m::CPU_UTILIZATION, features::MEMORY_UTILIZATION, m::LATENCY_P99, m::ERROR_RATE];

/// The metrics that matter for `kind` on an instance of `app_type`: those of the
/// kind's starter signature (of the app type if there is one, else of any), then the
/// resource the failure runs into, whose limit an adjustment moves.
pub(super) fn metrics_for(kind: &str, app_type: &str) -> Vec<String> {
    // The starter library is embedded and checked by its own tests; were it unreadable,
    // a chart with the fallback metrics still says more than no chart.
    let library = crate::signatures::starter::library().unwrap_or_default();
    let of_kind = |app: Option<&str>| {
        library.iter().find(|l| l.signature.failure_kind == kind && app.is_none_or(|a| l.signature.app_type == a))
    };
    let mut names: Vec<String> = match of_kind(Some(app_type)).or_else(|| of_kind(None)) {
        Some(l) => l.signature.metrics.clone(),
        None => FALLBACK.iter().map(|s| (*s).to_owned()).collect(),
    };
    let limits: &[&str] = match kind {
        "memory_leak" => &[m::MEMORY_USED, m::MEMORY_LIMIT],
        "cpu_saturation" => &[m::CPU_LIMIT],
        "io_stall" => &[m::PSI_IO_FULL],
        _ => &[],
    };
    for l in limits {
        if !names.iter().any(|n| n == l) {
            names.push((*l).to_owned());
        }
    }
    names
}

/// The longest step between two points of one line: more than two and a half of the
/// series' usual steps is a gap (a missing sample or more).
pub(super) fn max_step(times: &[i64]) -> i64 {
    let mut steps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).filter(|&d| d > 0).collect();
    if steps.is_empty() {
        return i64::MAX;
    }
    steps.sort_unstable();
    let usual = steps[steps.len() / 2];
    usual.saturating_mul(5) / 2
}

/// Points in time order, split where one is missing or further than `max_step` from
/// the previous one.
pub(super) fn segments(points: impl IntoIterator<Item = (i64, Option<f64>)>, max_step: i64) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let mut current: Segment = Vec::new();
    for (t, v) in points {
        match v.filter(|v| v.is_finite()) {
            Some(v) => {
                if current.last().is_some_and(|&(last, _)| t - last > max_step) {
                    out.push(std::mem::take(&mut current));
                }
                current.push((t, v));
            }
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The telemetry panels of `chart`, one per unit, in the order the metrics come.
pub(super) fn metric_panels(chart: &InstanceChart) -> Vec<MetricPanel> {
    let mut samples: Vec<&crate::codec::TelemetrySample> = chart.samples.iter().collect();
    samples.sort_by_key(|s| s.timestamp_ms);
    let times: Vec<i64> = samples.iter().map(|s| s.timestamp_ms).collect();
    let step = max_step(&times);
    // Per unit, its metrics with their raw (time, value) points.
    type Raw = Vec<(String, Vec<(i64, f64)>)>;
    let mut by_unit: Vec<(Unit, Raw)> = Vec::new();
    for name in metrics_for(&chart.kind, &chart.app_type) {
        let raw: Vec<(i64, f64)> = samples.iter().map(|s| (s.timestamp_ms, features::value(s, &name))).collect();
        if raw.iter().all(|(_, v)| v.is_nan()) {
            continue;
        }
        let unit = Unit::of(&name);
        match by_unit.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, lines)) => lines.push((name, raw)),
            None => by_unit.push((unit, vec![(name, raw)])),
        }
    }
    by_unit
        .into_iter()
        .map(|(unit, lines)| {
            let max =
                lines.iter().flat_map(|(_, l)| l.iter().map(|p| p.1)).filter(|v| v.is_finite()).fold(0.0, f64::max);
            let (factor, y_desc) = unit.scale(max);
            let lines = lines
                .into_iter()
                .map(|(name, raw)| MetricLine {
                    name,
                    segments: segments(raw.into_iter().map(|(t, v)| (t, Some(v * factor))), step),
                })
                .collect();
            MetricPanel { y_desc, lines, max: max * factor }
        })
        .collect()
}
