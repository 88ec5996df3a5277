//! The detector's admission check: what a telemetry record must be before it may
//! touch a window.
//!
//! In: a decoded [`TelemetrySample`], its Kafka key, and the partition's event-time
//! clock (the latest timestamp accepted so far). Out: `Ok`, or the reason it goes to
//! the dead-letter topic, in words an operator can act on. The check uses event time
//! only (never the wall clock), so a replay refuses exactly what the first run refused.

use crate::codec::TelemetrySample;

/// 2000-01-01T00:00:00Z: no telemetry of a running fleet is older.
const EARLIEST_MS: i64 = 946_684_800_000;

/// Why a record is refused, as the dead letter's reason.
pub fn check(
    sample: &TelemetrySample,
    key: Option<&[u8]>,
    clock_ms: Option<i64>,
    max_future_ms: i64,
) -> Result<(), String> {
    if sample.instance_id.trim().is_empty() {
        return Err("instance_id is empty".to_owned());
    }
    if let Some(key) = key {
        if key != sample.instance_id.as_bytes() {
            return Err(format!(
                "record key {:?} differs from instance_id {:?}: the instance's samples would be split across partitions",
                String::from_utf8_lossy(key),
                sample.instance_id
            ));
        }
    }
    if sample.seq < 0 {
        return Err(format!("seq {} is negative", sample.seq));
    }
    if sample.timestamp_ms < EARLIEST_MS {
        return Err(format!("timestamp {} ms is before 2000-01-01", sample.timestamp_ms));
    }
    if let Some(clock) = clock_ms {
        if sample.timestamp_ms > clock.saturating_add(max_future_ms) {
            return Err(format!(
                "timestamp {} ms is {} s ahead of the partition's event time {} ms (at most {} s allowed)",
                sample.timestamp_ms,
                // Saturating: the clock is any i64 to this function, and a clock far in
                // the past would overflow the difference (found by tests/fuzz).
                sample.timestamp_ms.saturating_sub(clock) / 1000,
                clock,
                max_future_ms / 1000
            ));
        }
    }
    for m in &sample.metrics {
        if !m.value.is_finite() {
            return Err(format!("metric {} is {}", m.name, m.value));
        }
        // Every metric of the contract counts, measures or rates something: none is negative.
        if m.value < 0.0 {
            return Err(format!("metric {} is negative ({})", m.name, m.value));
        }
        // Ratios are shares of something; a little over 1 is rounding, more is a bug.
        if m.name.ends_with("_ratio") && m.value > 1.0 + 1e-6 {
            return Err(format!("metric {} is {}, above 1", m.name, m.value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{metric_names as mn, Metric};

    fn sample(metrics: Vec<Metric>) -> TelemetrySample {
        TelemetrySample {
            instance_id: "web-1".into(),
            app_type: "web".into(),
            function: "f".into(),
            seq: 3,
            timestamp_ms: 1_800_000_000_000,
            metrics,
            labels: Default::default(),
        }
    }

    #[test]
    fn out_of_bounds_records_are_refused_with_a_reason_naming_what_is_wrong() {
        let ok = sample(vec![Metric::new(mn::CPU_UTILIZATION, 0.5)]);
        assert_eq!(check(&ok, Some(b"web-1"), Some(1_800_000_000_000), 3_600_000), Ok(()));
        let nan = sample(vec![Metric::new(mn::CPU_UTILIZATION, f64::NAN)]);
        assert!(check(&nan, None, None, 0).unwrap_err().contains("cpu_utilization_ratio is NaN"));
        let neg = sample(vec![Metric::new(mn::MEMORY_USED, -5.0)]);
        assert!(check(&neg, None, None, 0).unwrap_err().contains("memory_used_bytes is negative"));
        let big = sample(vec![Metric::new(mn::ERROR_RATE, 3.0)]);
        assert!(check(&big, None, None, 0).unwrap_err().contains("above 1"));
        let future = sample(vec![]);
        let e = check(&future, None, Some(1_700_000_000_000), 3_600_000).unwrap_err();
        assert!(e.contains("ahead of the partition's event time"), "{e}");
        let mut old = sample(vec![]);
        old.timestamp_ms = 5;
        assert!(check(&old, None, None, 0).unwrap_err().contains("before 2000"));
        assert!(check(&ok, Some(b"web-2"), None, 0).unwrap_err().contains("differs from instance_id"));
    }
}
