//! Detection metrics for labelled multivariate test sets: point-wise, event-wise,
//! detection delay and point-adjusted.
//!
//! In: per row a ground-truth label and a flag (the detector's score at or above a
//! threshold). Out: [`Counts`], which add up across machines, and the [`Metrics`]
//! derived from them. Definitions:
//! - point-wise: every row is one decision; precision = flagged anomalous rows / flagged
//!   rows, recall = flagged anomalous rows / anomalous rows.
//! - event-wise: an *event* is a maximal run of rows labelled 1; it is *detected* when
//!   at least one of its rows is flagged. A *false alarm* is a maximal run of flagged
//!   rows that overlaps no event. Recall = detected events / events; precision =
//!   detected events / (detected events + false alarms).
//! - delay: rows from an event's first row to its first flagged row (0 when the first
//!   row is flagged), averaged over detected events.
//! - point-adjusted (reported beside, never instead): every row of a detected event
//!   counts as flagged, then point-wise. It inflates scores (Kim et al., AAAI 2022).
//!
//! Precision with nothing flagged, and F1 with precision and recall both 0, are 0.

use serde::Serialize;

/// Additive tallies behind [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub point_tp: usize,
    pub point_fp: usize,
    pub point_fn: usize,
    pub events: usize,
    pub events_detected: usize,
    pub false_alarms: usize,
    /// Sum over detected events of rows from the event's start to its first flag.
    pub delay_rows: usize,
    pub adjusted_tp: usize,
    pub adjusted_fp: usize,
    pub adjusted_fn: usize,
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, o: Counts) -> Counts {
        Counts {
            point_tp: self.point_tp + o.point_tp,
            point_fp: self.point_fp + o.point_fp,
            point_fn: self.point_fn + o.point_fn,
            events: self.events + o.events,
            events_detected: self.events_detected + o.events_detected,
            false_alarms: self.false_alarms + o.false_alarms,
            delay_rows: self.delay_rows + o.delay_rows,
            adjusted_tp: self.adjusted_tp + o.adjusted_tp,
            adjusted_fp: self.adjusted_fp + o.adjusted_fp,
            adjusted_fn: self.adjusted_fn + o.adjusted_fn,
        }
    }
}

/// Precision, recall and their harmonic mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

impl Prf {
    fn new(tp: usize, fp: usize, fn_: usize) -> Self {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let (precision, recall) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        Self { precision, recall, f1 }
    }
}

/// The metrics of one set of flags.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    pub point: Prf,
    pub event: Prf,
    /// Mean rows from event start to first flag, over detected events; `None` if none was.
    pub mean_delay_rows: Option<f64>,
    pub point_adjusted: Prf,
    pub counts: Counts,
}

impl From<Counts> for Metrics {
    fn from(c: Counts) -> Self {
        Metrics {
            point: Prf::new(c.point_tp, c.point_fp, c.point_fn),
            event: Prf::new(c.events_detected, c.false_alarms, c.events - c.events_detected),
            mean_delay_rows: (c.events_detected > 0).then(|| c.delay_rows as f64 / c.events_detected as f64),
            point_adjusted: Prf::new(c.adjusted_tp, c.adjusted_fp, c.adjusted_fn),
            counts: c,
        }
    }
}

/// Tallies `flags` against `labels` (same length).
pub fn count(labels: &[bool], flags: &[bool]) -> Counts {
    debug_assert_eq!(labels.len(), flags.len());
    let mut c = Counts::default();
    for (&l, &f) in labels.iter().zip(flags) {
        match (l, f) {
            (true, true) => c.point_tp += 1,
            (false, true) => c.point_fp += 1,
            (true, false) => c.point_fn += 1,
            (false, false) => {}
        }
    }
    for run in runs(labels) {
        c.events += 1;
        let first_flag = flags[run.clone()].iter().position(|&f| f);
        if let Some(delay) = first_flag {
            c.events_detected += 1;
            c.delay_rows += delay;
            c.adjusted_tp += run.len();
        } else {
            c.adjusted_fn += run.len();
        }
    }
    c.adjusted_fp = c.point_fp;
    c.false_alarms = runs(flags).filter(|run| !labels[run.clone()].iter().any(|&l| l)).count();
    c
}

/// Maximal runs of `true`.
fn runs(values: &[bool]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let start = i + values.get(i..)?.iter().position(|&v| v)?;
        let len = values[start..].iter().position(|&v| !v).unwrap_or(values.len() - start);
        i = start + len;
        Some(start..i)
    })
}

/// The threshold with the best point-wise F1 on the labels themselves (an oracle: it
/// looks at the test labels, so it bounds what any threshold could reach). Rows scoring
/// at least the threshold are flagged; `None` scores never are. Returns `(threshold, f1)`,
/// or `None` when no row has a score.
pub fn best_point_f1(labels: &[bool], scores: &[Option<f64>]) -> Option<(f64, f64)> {
    let mut rows: Vec<(f64, bool)> = scores.iter().zip(labels).filter_map(|(s, &l)| s.map(|s| (s, l))).collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let positives = labels.iter().filter(|&&l| l).count();
    let (mut tp, mut fp) = (0, 0);
    let mut best: Option<(f64, f64)> = None;
    for (i, &(score, label)) in rows.iter().enumerate() {
        if label {
            tp += 1;
        } else {
            fp += 1;
        }
        // Only after the last row of a group of equal scores is the threshold realisable.
        if rows.get(i + 1).is_some_and(|next| next.0 == score) {
            continue;
        }
        let f1 = Prf::new(tp, fp, positives - tp).f1;
        if best.is_none_or(|(_, b)| f1 > b) {
            best = Some((score, f1));
        }
    }
    best
}

/// The score above which a share `1 - quantile` of the training rows lie: the training
/// score at rank `ceil(quantile · n)` (1-based) in ascending order. Flag rows strictly
/// above it. `None` when no training row has a score.
pub fn train_quantile(train_scores: &[Option<f64>], quantile: f64) -> Option<f64> {
    let mut s: Vec<f64> = train_scores.iter().flatten().copied().collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let rank = ((quantile * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(text: &str) -> Vec<bool> {
        text.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn counts_points_events_delay_and_adjustment_by_hand() {
        //            events:   [2..5)      [9..11)
        let labels = bits("0011100001100");
        let flags = bits("1000110000001");
        let c = count(&labels, &flags);
        // Row 4 is the only flagged anomalous row; rows 0, 5 and 12 are flagged normal rows.
        assert_eq!((c.point_tp, c.point_fp, c.point_fn), (1, 3, 4));
        // Event [2..5) detected at row 4 (delay 2); event [9..11) missed.
        assert_eq!((c.events, c.events_detected, c.delay_rows), (2, 1, 2));
        // Flag runs: [0..1) false, [4..6) overlaps the event, [12..13) false.
        assert_eq!(c.false_alarms, 2);
        assert_eq!((c.adjusted_tp, c.adjusted_fp, c.adjusted_fn), (3, 3, 2));
        let m = Metrics::from(c);
        assert!((m.point.precision - 0.25).abs() < 1e-12);
        assert!((m.point.recall - 0.2).abs() < 1e-12);
        assert!((m.event.precision - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.event.recall - 0.5).abs() < 1e-12);
        assert_eq!(m.mean_delay_rows, Some(2.0));
        assert!((m.point_adjusted.recall - 0.6).abs() < 1e-12);
    }

    #[test]
    fn nothing_flagged_scores_zero_without_dividing_by_zero() {
        let m = Metrics::from(count(&bits("0110"), &bits("0000")));
        assert_eq!((m.point.precision, m.point.f1, m.event.f1), (0.0, 0.0, 0.0));
        assert_eq!(m.mean_delay_rows, None);
    }

    #[test]
    fn counts_add_across_machines() {
        let a = count(&bits("0110"), &bits("0100"));
        let b = count(&bits("1000"), &bits("0001"));
        let sum = a + b;
        assert_eq!((sum.events, sum.events_detected, sum.false_alarms, sum.point_fp), (2, 1, 1, 1));
    }

    #[test]
    fn oracle_threshold_maximises_point_f1() {
        let labels = bits("00110");
        let scores = [Some(0.1), Some(0.9), Some(0.8), Some(0.7), None];
        // >= 0.9: P 0 → F1 0; >= 0.8: tp 1 fp 1 → 0.5; >= 0.7: tp 2 fp 1 → 0.8; >= 0.1: 2/4 → 0.667.
        let (t, f1) = best_point_f1(&labels, &scores).expect("scored rows");
        assert_eq!(t, 0.7);
        assert!((f1 - 0.8).abs() < 1e-12);
        // Ties are one threshold: both 0.5 rows go together.
        let (t, _) = best_point_f1(&bits("10"), &[Some(0.5), Some(0.5)]).expect("scored rows");
        assert_eq!(t, 0.5);
    }

    #[test]
    fn train_quantile_takes_the_rank_ceiling() {
        let s: Vec<Option<f64>> = (1..=10).map(|v| Some(v as f64)).collect();
        assert_eq!(train_quantile(&s, 0.9), Some(9.0));
        assert_eq!(train_quantile(&s, 0.95), Some(10.0));
        assert_eq!(train_quantile(&s, 0.0), Some(1.0));
        assert_eq!(train_quantile(&[None], 0.5), None);
    }
}
