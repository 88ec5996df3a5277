//! Tuned values: the compacted `<prefix>.tuned` topic as the detector reads it.
//!
//! In: [`TunedValue`] records, key `threshold/<signature key>` (a signature's confidence
//! threshold), `tier-shift/<app type>` (points added to the anomaly tiers' lower
//! boundaries 31, 71 and 91 of one application type) or
//! `weight/<app type>/<strategy>/<action>` (0..1, how much of what a signature rule or a
//! tier asks of one action is done: the choice between strategies that worked and
//! those that did not). Out: [`Tuning`], the value of
//! each key in force at an event time. Guarantee: a record carries every step its key
//! took with the event time each takes effect from, so a detector that replays its
//! lookback after a restart applies, window by window, the values a detector that never
//! stopped applied; the feedback loop sets each step's time ahead of the evidence it
//! rests on (see `feedback::tracker`), so every replica has read the step before its
//! windows reach that time.

use std::collections::HashMap;

use crate::codec::TunedValue;
use crate::kafka::table::Entry;

/// Most steps a record keeps; older ones are dropped, the oldest kept then holds from
/// the start. A lookback replay reaches minutes back, the steps months.
pub const MAX_STEPS: usize = 64;

/// The key of a signature's tuned threshold.
pub fn threshold_key(signature: &str) -> String {
    format!("threshold/{signature}")
}

/// The key of a strategy's weight: an application type's signature rule (`strategy` the
/// signature key) or anomaly tier (`tier-N`), and one action of it.
pub fn weight_key(app_type: &str, strategy: &str, action: &str) -> String {
    format!("weight/{app_type}/{strategy}/{action}")
}

/// The key of an application type's tuned tier shift.
pub fn shift_key(app_type: &str) -> String {
    format!("tier-shift/{app_type}")
}

impl Entry for TunedValue {
    const NAME: &'static str = "tuned value";

    fn key(&self) -> String {
        self.key.clone()
    }

    fn check(&self) -> Result<(), String> {
        let known = ["threshold/", "tier-shift/", "weight/"].iter().find_map(|p| self.key.strip_prefix(p));
        if known.is_none_or(str::is_empty) {
            return Err(format!(
                "key {:?} is none of threshold/<signature>, tier-shift/<app type>, weight/<app type>/<strategy>/<action>",
                self.key
            ));
        }
        if !(self.floor.is_finite() && self.ceiling.is_finite() && self.floor <= self.ceiling) {
            return Err(format!("limits [{}, {}] are not an interval", self.floor, self.ceiling));
        }
        for (i, step) in self.steps.iter().enumerate() {
            if !(self.floor..=self.ceiling).contains(&step.value) {
                return Err(format!("step {i} value {} outside [{}, {}]", step.value, self.floor, self.ceiling));
            }
            if i > 0 && step.from_ms < self.steps[i - 1].from_ms {
                return Err(format!("step {i} takes effect before step {}", i - 1));
            }
        }
        if self.steps.len() > MAX_STEPS {
            return Err(format!("{} steps, more than {MAX_STEPS}", self.steps.len()));
        }
        Ok(())
    }
}

impl TunedValue {
    /// The last step taken effect by `at_ms`, if any. Before its first step a key is
    /// not tuned at all: the detector keeps the signature's own threshold, whatever
    /// the signature table says now (the default here is what it said then).
    pub fn stepped_at(&self, at_ms: i64) -> Option<f64> {
        let n = self.steps.partition_point(|s| s.from_ms <= at_ms);
        n.checked_sub(1).map(|i| self.steps[i].value)
    }

    /// The latest value, whatever its effective time.
    pub fn latest(&self) -> f64 {
        self.steps.last().map_or(self.default_value, |s| s.value)
    }
}

/// Every tuned value, as the detector applies them: by what each tunes, so that the
/// per-window lookups (thresholds of every candidate signature, the tier shift) take
/// the names as they are and build no key.
#[derive(Debug, Clone, Default)]
pub struct Tuning {
    /// By signature key.
    thresholds: HashMap<String, TunedValue>,
    /// By application type.
    shifts: HashMap<String, TunedValue>,
    /// By the whole key (looked up once per decided adjustment).
    weights: HashMap<String, TunedValue>,
}

impl Tuning {
    pub fn new(values: impl IntoIterator<Item = TunedValue>) -> Self {
        let mut tuning = Self::default();
        for v in values {
            if let Some(signature) = v.key.strip_prefix("threshold/") {
                tuning.thresholds.insert(signature.to_owned(), v);
            } else if let Some(app_type) = v.key.strip_prefix("tier-shift/") {
                tuning.shifts.insert(app_type.to_owned(), v);
            } else {
                tuning.weights.insert(v.key.clone(), v);
            }
        }
        tuning
    }

    /// The tuned threshold of `signature` at `at_ms`, if the feedback loop had tuned it
    /// by then.
    pub fn threshold(&self, signature: &str, at_ms: i64) -> Option<f64> {
        self.thresholds.get(signature).and_then(|v| v.stepped_at(at_ms))
    }

    /// Points added to the anomaly tiers' boundaries of `app_type` at `at_ms` (0 if
    /// never tuned).
    pub fn shift(&self, app_type: &str, at_ms: i64) -> f64 {
        self.shifts.get(app_type).and_then(|v| v.stepped_at(at_ms)).unwrap_or(0.0)
    }

    /// The earliest step this tuning has that `before` had not, as (key, effective
    /// time): what a detector that swaps `before` for this one starts applying first.
    pub fn earliest_new_step(&self, before: &Tuning) -> Option<(String, i64)> {
        let old: HashMap<&str, &TunedValue> = before.values().map(|v| (v.key.as_str(), v)).collect();
        self.values()
            .flat_map(|v| {
                let had = old.get(v.key.as_str()).map_or(&[][..], |o| o.steps.as_slice());
                v.steps.iter().filter(move |s| !had.contains(s)).map(move |s| (v.key.clone(), s.from_ms))
            })
            .min_by_key(|(_, from_ms)| *from_ms)
    }

    fn values(&self) -> impl Iterator<Item = &TunedValue> {
        self.thresholds.values().chain(self.shifts.values()).chain(self.weights.values())
    }

    /// The weight of an action of a strategy at `at_ms` (1 if never tuned).
    pub fn weight(&self, app_type: &str, strategy: &str, action: &str, at_ms: i64) -> f64 {
        if self.weights.is_empty() {
            return 1.0;
        }
        self.weights.get(&weight_key(app_type, strategy, action)).and_then(|v| v.stepped_at(at_ms)).unwrap_or(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::TunedStep;

    fn value(steps: &[(i64, f64)]) -> TunedValue {
        TunedValue {
            key: threshold_key("web/*/memory_leak"),
            app_type: "web".into(),
            default_value: 0.9,
            floor: 0.4,
            ceiling: 0.95,
            steps: steps.iter().map(|&(from_ms, value)| TunedStep { from_ms, value, reason: "r".into() }).collect(),
        }
    }

    #[test]
    fn the_value_in_force_is_the_last_step_taken_effect_by_then() {
        let v = value(&[(100, 0.85), (200, 0.8)]);
        assert_eq!(v.stepped_at(99), None);
        assert_eq!(v.stepped_at(100), Some(0.85));
        assert_eq!(v.stepped_at(199), Some(0.85));
        assert_eq!(v.stepped_at(10_000), Some(0.8));
        assert_eq!(v.latest(), 0.8);
        let t = Tuning::new([v]);
        assert_eq!(t.threshold("web/*/memory_leak", 150), Some(0.85));
        assert_eq!(t.threshold("web/*/memory_leak", 99), None, "before its first step the signature's own holds");
        assert_eq!(t.threshold("web/*/cpu_saturation", 150), None);
        assert_eq!(t.shift("web", 150), 0.0);
    }

    #[test]
    fn the_earliest_new_step_is_what_a_swap_starts_applying_first() {
        let before = Tuning::new([value(&[(100, 0.85)])]);
        assert_eq!(Tuning::new([value(&[(100, 0.85)])]).earliest_new_step(&before), None);
        let mut shift = value(&[(150, 5.0)]);
        shift.key = shift_key("web");
        let after = Tuning::new([value(&[(100, 0.85), (300, 0.8)]), shift]);
        assert_eq!(after.earliest_new_step(&before), Some((shift_key("web"), 150)));
        assert_eq!(after.earliest_new_step(&Tuning::default()), Some((threshold_key("web/*/memory_leak"), 100)));
    }

    #[test]
    fn values_outside_their_limits_or_out_of_order_are_refused() {
        assert!(value(&[(100, 0.85)]).check().is_ok());
        assert!(value(&[(100, 0.3)]).check().unwrap_err().contains("outside"));
        assert!(value(&[(200, 0.85), (100, 0.8)]).check().unwrap_err().contains("before"));
        let mut bad = value(&[]);
        bad.key = "limit/web".into();
        assert!(bad.check().unwrap_err().contains("none of"));
    }
}
