//! How the feedback loop judges and how far it may tune: [`FeedbackConfig`], checked
//! up front by [`FeedbackConfig::validate`] with a [`FeedbackError`] that names the
//! field, so a bad limit is refused before a run rather than discovered in one.

use serde::{Deserialize, Serialize};

/// How the feedback loop judges and how far it may tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// How long an adjustment or an alert is followed before it is judged (ms).
    #[serde(default = "default_horizon_ms")]
    pub horizon_ms: i64,
    /// A tuned step takes effect this long after the event time of its judgement (ms).
    #[serde(default = "default_delay_ms")]
    pub delay_ms: i64,
    /// One key moves at most once per this much judgement time (ms).
    #[serde(default = "default_min_interval_ms")]
    pub min_interval_ms: i64,
    /// How much one judgement moves a signature's confidence threshold.
    #[serde(default = "default_threshold_step")]
    pub threshold_step: f64,
    /// A tuned threshold never leaves [floor, ceiling], whatever the signature's own.
    #[serde(default = "default_threshold_limits")]
    pub threshold_limits: (f64, f64),
    /// A missed failure is blamed on the closest signature only if its confidence was
    /// within this of its threshold.
    #[serde(default = "default_near_miss")]
    pub near_miss: f64,
    /// How many points one judgement moves an application type's anomaly tiers.
    #[serde(default = "default_shift_step")]
    pub shift_step: f64,
    /// A tier shift never leaves [lower, upper] points.
    #[serde(default = "default_shift_limits")]
    pub shift_limits: (f64, f64),
    /// How much one judgement moves the weight of a strategy (an application type's
    /// signature rule or tier, and one action of it).
    #[serde(default = "default_weight_step")]
    pub weight_step: f64,
    /// A weight never leaves [lower, upper]; at 0 the action is no longer taken.
    #[serde(default = "default_weight_limits")]
    pub weight_limits: (f64, f64),
    /// Decisive outcomes (helped, or failed anyway / worsened) a strategy needs since its
    /// weight last moved before it moves again.
    #[serde(default = "default_min_outcomes")]
    pub min_outcomes: u32,
    /// A strategy turned off (weight at the floor) is tried again one step up after
    /// this much event time (ms): it took no action since, so no outcome can speak for it.
    #[serde(default = "default_weight_retry_ms")]
    pub weight_retry_ms: i64,
}

/// Half an hour: the lead time of the slowest failure signatures (memory leaks), so a
/// failure an alert foresaw falls inside the horizon that follows it.
const fn default_horizon_ms() -> i64 {
    30 * 60_000
}

/// Five minutes: longer than a detector replica lags the tuned topic, so all replicas
/// switch to a new value at the same window.
const fn default_delay_ms() -> i64 {
    5 * 60_000
}

/// Ten minutes: one incident often shows as several alerts and offlines in a row; they
/// should move a key once, not once each.
const fn default_min_interval_ms() -> i64 {
    10 * 60_000
}

/// A twentieth of the confidence range: ten judgements cross most of the limits.
const fn default_threshold_step() -> f64 {
    0.05
}

/// Under 0.4 DTW matches are mostly noise; over 0.95 a signature would never fire.
const fn default_threshold_limits() -> (f64, f64) {
    (0.4, 0.95)
}

/// Six steps: a confidence further under its threshold than that is another failure.
const fn default_near_miss() -> f64 {
    0.3
}

/// Five points: a quarter of the narrowest tier band (71..90).
const fn default_shift_step() -> f64 {
    5.0
}

/// Four steps from full weight to none.
const fn default_weight_step() -> f64 {
    0.25
}

/// A strategy can be turned off, never amplified past what its policy file says.
const fn default_weight_limits() -> (f64, f64) {
    (0.0, 1.0)
}

/// Three: one outcome is an anecdote, and each one is a failure or an averted one.
const fn default_min_outcomes() -> u32 {
    3
}

/// Two hours: long enough that a strategy that failed is not retried within one
/// incident, short enough that a fleet whose behaviour changed gets it back the same day.
const fn default_weight_retry_ms() -> i64 {
    2 * 3_600_000
}

/// Down to 51 for the alert boundary (misses cost more than noise), up to 79 at most.
const fn default_shift_limits() -> (f64, f64) {
    (-20.0, 8.0)
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            horizon_ms: default_horizon_ms(),
            delay_ms: default_delay_ms(),
            min_interval_ms: default_min_interval_ms(),
            threshold_step: default_threshold_step(),
            threshold_limits: default_threshold_limits(),
            near_miss: default_near_miss(),
            shift_step: default_shift_step(),
            shift_limits: default_shift_limits(),
            weight_step: default_weight_step(),
            weight_limits: default_weight_limits(),
            min_outcomes: default_min_outcomes(),
            weight_retry_ms: default_weight_retry_ms(),
        }
    }
}

impl FeedbackConfig {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), FeedbackError> {
        let bad = |field: &'static str, problem: String| Err(FeedbackError::Config { field, problem });
        if self.horizon_ms <= 0 {
            return bad("horizon_ms", format!("{} is not a positive duration", self.horizon_ms));
        }
        if self.delay_ms < 0 {
            return bad("delay_ms", format!("{} is negative", self.delay_ms));
        }
        if self.min_interval_ms < 0 {
            return bad("min_interval_ms", format!("{} is negative", self.min_interval_ms));
        }
        if !(self.threshold_step.is_finite() && self.threshold_step > 0.0) {
            return bad("threshold_step", format!("{} is not a positive number", self.threshold_step));
        }
        let (lo, hi) = self.threshold_limits;
        if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi && hi <= 1.0) {
            return bad("threshold_limits", format!("({lo}, {hi}) is not an interval within [0, 1]"));
        }
        if !(self.near_miss.is_finite() && self.near_miss >= 0.0) {
            return bad("near_miss", format!("{} is not a non-negative number", self.near_miss));
        }
        if !(self.shift_step.is_finite() && self.shift_step > 0.0) {
            return bad("shift_step", format!("{} is not a positive number", self.shift_step));
        }
        let (lo, hi) = self.shift_limits;
        if !(lo.is_finite() && hi.is_finite() && lo <= 0.0 && 0.0 <= hi) {
            return bad("shift_limits", format!("({lo}, {hi}) is not an interval holding 0 (the untuned shift)"));
        }
        if !(self.weight_step.is_finite() && self.weight_step > 0.0) {
            return bad("weight_step", format!("{} is not a positive number", self.weight_step));
        }
        let (lo, hi) = self.weight_limits;
        if !(lo.is_finite() && hi.is_finite() && 0.0 <= lo && lo <= hi && hi == 1.0) {
            return bad(
                "weight_limits",
                format!("({lo}, {hi}) is not an interval within [0, 1] ending at 1 (untuned)"),
            );
        }
        if self.weight_retry_ms <= 0 {
            return bad("weight_retry_ms", format!("{} is not a positive duration", self.weight_retry_ms));
        }
        if self.min_outcomes == 0 {
            return bad("min_outcomes", "0: a weight would move on no evidence".to_owned());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeedbackError {
    #[error("feedback config: `{field}`: {problem}")]
    Config { field: &'static str, problem: String },
    #[error("threshold of signature {signature:?} is {value}, not a number in [0, 1]")]
    Threshold { signature: String, value: f64 },
    #[error("tuned value {key:?}: {problem}")]
    Tuned { key: String, problem: String },
}
