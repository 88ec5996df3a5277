//! Per-instance sliding windows over event time, and the liveness of each instance.
//!
//! In: decoded [`TelemetrySample`](crate::codec::TelemetrySample)s with the partition
//! they were read from, in partition order. Out: a [`ClosedWindow`] per instance each
//! time its event-time watermark passes a hop boundary (a multiple of `hop_ms` since
//! the epoch), holding `points` grid steps of the configured [`features`], and from
//! [`liveness`], `offline` / `recovered` events judged by a phi accrual detector.
//! Guarantees: every output is a pure function of each instance's input sequence
//! (event time only, never the wall clock, no hash order leaking out), so a partition
//! rebuilt by replaying [`WindowConfig::lookback_ms`] of event time emits what a run
//! that never stopped emits; a channel an instance does not report stays `NaN`, never
//! zero; memory per instance is bounded by the window length, hop and lateness.

pub mod features;
pub mod liveness;
mod store;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use store::{ClosedWindow, Push, WindowStats, Windows};

/// The largest span any duration setting may have: a year is beyond any sensible
/// window, and sums of a few such spans stay far from `i64` overflow.
pub(crate) const MAX_SPAN_MS: i64 = 366 * 24 * 3_600_000;

/// A setting out of range, naming the field (`"{field} {reason}"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("{field} {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Result<(), WindowError> {
    Err(WindowError::Invalid { field, reason: reason.into() })
}

/// How windows are cut from each instance's telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Channels of every window, in order: canonical metric names or derived features
    /// ([`features::is_known`]).
    #[serde(default = "default_features")]
    pub features: Vec<String>,
    /// Width of one grid step, ms.
    #[serde(default = "default_step_ms")]
    pub step_ms: i64,
    /// Window length in grid steps.
    #[serde(default = "default_points")]
    pub points: usize,
    /// Distance between two evaluations, ms. Windows end on multiples of it since the
    /// epoch, so where reading started does not move them.
    #[serde(default = "default_hop_ms")]
    pub hop_ms: i64,
    /// How far behind an instance's newest sample one may still arrive, ms; older ones
    /// are dropped as late, and a window closes only once this has passed its end.
    #[serde(default = "default_lateness_ms")]
    pub lateness_ms: i64,
    /// An instance silent this long (in its partition's event time) is forgotten, ms.
    #[serde(default = "default_idle_expiry_ms")]
    pub idle_expiry_ms: i64,
    /// Share 0..1 of grid steps that must hold a sample for a window to be emitted.
    #[serde(default = "default_min_coverage")]
    pub min_coverage: f64,
    /// Missing grid steps a channel's last value is carried over ([`features::grid`]).
    #[serde(default = "default_max_fill_steps")]
    pub max_fill_steps: usize,
}

/// The seed's leading indicators ([`features::DEFAULT_FEATURES`]). Not `const`: it
/// allocates.
fn default_features() -> Vec<String> {
    features::DEFAULT_FEATURES.iter().map(|f| (*f).to_owned()).collect()
}

/// The agent's and simulator's reporting interval (10 s): one sample per step.
pub const fn default_step_ms() -> i64 {
    10_000
}

/// 64 steps of 10 s, about 10 minutes: long enough to see a leak or a queue build up,
/// short enough that a failure's lead-up fills most of it.
pub const fn default_points() -> usize {
    64
}

/// One evaluation a minute: a failure that develops over minutes is seen within one.
const fn default_hop_ms() -> i64 {
    60_000
}

/// Three reporting intervals: agents batch and retry sends for about that long.
const fn default_lateness_ms() -> i64 {
    30_000
}

/// 30 minutes: ten times the simulator's longest restart gap (3 min), so a crashed
/// instance is still known when it comes back.
const fn default_idle_expiry_ms() -> i64 {
    30 * 60_000
}

/// Three quarters of the window: a window with more missing is mostly guesswork.
const fn default_min_coverage() -> f64 {
    0.75
}

/// Three steps (30 s at the default step), as long as the lateness: a gap that short
/// is delivery jitter, not a change in the instance.
pub const fn default_max_fill_steps() -> usize {
    3
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            features: default_features(),
            step_ms: default_step_ms(),
            points: default_points(),
            hop_ms: default_hop_ms(),
            lateness_ms: default_lateness_ms(),
            idle_expiry_ms: default_idle_expiry_ms(),
            min_coverage: default_min_coverage(),
            max_fill_steps: default_max_fill_steps(),
        }
    }
}

impl WindowConfig {
    pub fn validate(&self) -> Result<(), WindowError> {
        let span = |field, v: i64, min: i64| {
            if (min..=MAX_SPAN_MS).contains(&v) {
                Ok(())
            } else {
                invalid(field, format!("must be from {min} to {MAX_SPAN_MS} ms, got {v}"))
            }
        };
        if self.features.is_empty() {
            return invalid("window.features", "must name at least one feature");
        }
        for (i, f) in self.features.iter().enumerate() {
            if !features::is_known(f) {
                return invalid(
                    "window.features",
                    format!("{f:?} is neither a canonical metric nor a derived feature"),
                );
            }
            if self.features[..i].contains(f) {
                return invalid("window.features", format!("{f:?} is listed twice"));
            }
        }
        span("window.step_ms", self.step_ms, 1)?;
        if self.points == 0 || self.points as u64 > (MAX_SPAN_MS / self.step_ms) as u64 {
            return invalid(
                "window.points",
                format!(
                    "must be from 1 to {} (a window of at most {MAX_SPAN_MS} ms), got {}",
                    MAX_SPAN_MS / self.step_ms,
                    self.points
                ),
            );
        }
        span("window.hop_ms", self.hop_ms, 1)?;
        span("window.lateness_ms", self.lateness_ms, 0)?;
        span("window.idle_expiry_ms", self.idle_expiry_ms, 1)?;
        // An empty window says nothing, so at least one sample is always required.
        if !(self.min_coverage > 0.0 && self.min_coverage <= 1.0) {
            return invalid("window.min_coverage", format!("must be above 0 and at most 1, got {}", self.min_coverage));
        }
        if self.max_fill_steps > self.points {
            return invalid(
                "window.max_fill_steps",
                format!("must be at most window.points ({}), got {}", self.points, self.max_fill_steps),
            );
        }
        Ok(())
    }

    /// The span one window covers, ms.
    pub fn length_ms(&self) -> i64 {
        self.points as i64 * self.step_ms
    }

    /// How much event time before a resume point must be replayed so that what is
    /// emitted after it equals what a run that never stopped emits:
    /// `idle_expiry + lateness + length + hop`.
    ///
    /// Why: let `T` be the partition's event-time clock at the resume point. An
    /// instance still held there reported last at or after `T − idle_expiry` (older
    /// ones were expired), so its newest sample is replayed and its watermark comes
    /// out the same. Its next window ends after that watermark, at or after
    /// `T − idle_expiry − lateness`, and reads samples back to `length` before its end:
    /// all replayed. A sample that the replay accepts but the full run dropped as late
    /// is older than the full run's watermark at the time, which is older than
    /// `T − lookback − lateness`, so no window emitted after the resume point reads it.
    /// `hop` adds what an instance holds between two pruning passes, so that the state
    /// itself (not only the output) equals the uninterrupted run's. The replay starts
    /// at the first record at or after `T − lookback`, so from there on the partition
    /// clock is the uninterrupted run's: the caller calls [`Windows::expire`] during
    /// the replay at the same clock values as that run did.
    pub fn lookback_ms(&self) -> i64 {
        self.idle_expiry_ms + self.lateness_ms + self.length_ms() + self.hop_ms
    }
}
