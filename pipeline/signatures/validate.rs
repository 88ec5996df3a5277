//! What makes a failure signature usable: its key on the wire and the checks every
//! signature passes before it is written to the table or matched against a window.
//!
//! In: a [`FailureSignature`]. Out: its key `app_type/function/name`, or an
//! [`InvalidSignature`] naming the key and the field that is wrong. A signature that
//! passes can be normalised and compared by DTW without further checks: every channel
//! has a known feature, a normalisation and the same number (at least
//! [`MIN_POINTS`]) of finite values.

use std::collections::BTreeSet;

use crate::codec::FailureSignature;
use crate::window::features;

/// Fewest points a signature may have: below this a DTW band of radius 6 warps a
/// series into almost any other, and a shape says nothing.
pub const MIN_POINTS: usize = 8;

/// The function name that makes a signature apply to every function of its app type.
pub const ANY_FUNCTION: &str = "*";

/// The key of a signature on the compacted topic: `app_type/function/name`.
pub fn key(signature: &FailureSignature) -> String {
    format!("{}/{}/{}", signature.app_type, signature.function, signature.name)
}

/// A signature that cannot be used, with the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("signature {key}: {field} {reason}")]
pub struct InvalidSignature {
    /// `app_type/function/name`, as far as those fields can be read.
    pub key: String,
    /// The field at fault, with an index where it is a list (`series[2]`).
    pub field: String,
    pub reason: String,
}

/// Checks everything the detector relies on; the first problem found is returned.
pub fn validate(s: &FailureSignature) -> Result<(), InvalidSignature> {
    let fail = |field: &str, reason: String| Err(InvalidSignature { key: key(s), field: field.to_owned(), reason });

    for (field, value) in [("name", &s.name), ("app_type", &s.app_type), ("function", &s.function)] {
        if value.trim().is_empty() {
            return fail(field, "is empty".to_owned());
        }
        // The key joins these with '/', so a '/' in one would make keys ambiguous.
        if value.contains('/') {
            return fail(field, format!("{value:?} contains '/', which separates the parts of the key"));
        }
        if value.chars().any(char::is_control) {
            return fail(field, format!("{value:?} contains a control character"));
        }
    }
    if s.failure_kind.trim().is_empty() {
        return fail("failure_kind", "is empty".to_owned());
    }
    if s.metrics.is_empty() {
        return fail("metrics", "is empty: a signature needs at least one metric".to_owned());
    }
    let mut seen = BTreeSet::new();
    for (i, metric) in s.metrics.iter().enumerate() {
        if !features::is_known(metric) {
            return fail(&format!("metrics[{i}]"), format!("{metric:?} is not a known feature"));
        }
        if !seen.insert(metric) {
            return fail(&format!("metrics[{i}]"), format!("{metric:?} appears twice"));
        }
    }
    if s.normalisation.len() != s.metrics.len() {
        return fail(
            "normalisation",
            format!("has {} entries for {} metrics: one per metric", s.normalisation.len(), s.metrics.len()),
        );
    }
    if s.series.len() != s.metrics.len() {
        return fail(
            "series",
            format!("has {} channels for {} metrics: one per metric", s.series.len(), s.metrics.len()),
        );
    }
    let points = s.series[0].len();
    if points < MIN_POINTS {
        return fail("series[0]", format!("has {points} points, fewer than the minimum of {MIN_POINTS}"));
    }
    for (c, channel) in s.series.iter().enumerate() {
        if channel.len() != points {
            return fail(
                &format!("series[{c}]"),
                format!("has {} points, series[0] has {points}: all channels have one length", channel.len()),
            );
        }
        if let Some(t) = channel.iter().position(|v| !v.is_finite()) {
            return fail(&format!("series[{c}][{t}]"), format!("is {}, not a finite number", channel[t]));
        }
    }
    if s.interval_ms <= 0 {
        return fail("interval_ms", format!("is {}, must be positive", s.interval_ms));
    }
    if !(s.threshold > 0.0 && s.threshold < 1.0) {
        return fail("threshold", format!("is {}, must be strictly between 0 and 1", s.threshold));
    }
    if s.lead_ms < 0 {
        return fail("lead_ms", format!("is {}, must not be negative", s.lead_ms));
    }
    Ok(())
}
