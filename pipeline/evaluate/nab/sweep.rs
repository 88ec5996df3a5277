//! NAB's scoring rules: rows labelled against the anomaly windows, a sweep over every
//! threshold of the whole corpus, and the normalised score.
//!
//! In: per file, the timestamps, the labelled windows and one anomaly score per row.
//! Out: per threshold the raw NAB score and row counts; the best threshold per profile;
//! per-file scores at a threshold. Guarantees, as in NAB's `nab/sweeper.py` (v1.1):
//! the first `min(floor(0.15·rows), 750)` rows of a file are unscored; inside a window
//! only the earliest detection counts, rewarded `tp · σ̃(position) / σ̃(-1)` (about +1 at
//! the window's first row, falling towards 0 at its last); an undetected window costs
//! `fn`; a detection outside every window costs `fp · σ̃(distance past the previous
//! window / (its width - 1))`, i.e. `-fp` before any window or more than three window
//! widths after one; a row is a detection when its score is at least the threshold.

/// A scoring profile: NAB's `config/profiles.json`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Profile {
    /// NAB's profile name.
    pub name: &'static str,
    /// Reward for detecting a window at its very first row.
    pub tp: f64,
    /// Cost of a detection far from any window.
    pub fp: f64,
    /// Cost of an undetected window.
    pub fn_: f64,
}

/// NAB's three published profiles.
pub const PROFILES: [Profile; 3] = [
    Profile { name: "standard", tp: 1.0, fp: 0.11, fn_: 1.0 },
    Profile { name: "reward_low_FP_rate", tp: 1.0, fp: 0.22, fn_: 1.0 },
    Profile { name: "reward_low_FN_rate", tp: 1.0, fp: 0.11, fn_: 2.0 },
];

/// Share of each file a detector may learn from before it is scored.
pub const PROBATION_PERCENT: f64 = 0.15;

/// Rows of a file that are unscored: NAB's `min(floor(0.15 · rows), 0.15 · 5000)`,
/// computed in floating point as NAB does.
pub fn probationary_length(rows: usize) -> usize {
    (PROBATION_PERCENT * rows as f64).floor().min(PROBATION_PERCENT * 5000.0) as usize
}

/// NAB's scaled sigmoid: `2·σ(-5x) - 1`, and -1 beyond three widths.
pub fn scaled_sigmoid(position: f64) -> f64 {
    if position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// An anomaly window: first and last row's timestamps, both inside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// How the sweep treats one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RowLabel {
    /// Inside the probationary period: never scored.
    Probationary,
    /// Inside window `window` (an index unique across the corpus); `reward` is the
    /// unweighted scaled sigmoid of the row's position.
    InWindow { window: usize, reward: f64 },
    /// Outside every window; `cost` is the unweighted (negative) scaled sigmoid.
    Outside { cost: f64 },
}

impl RowLabel {
    /// The row's contribution when detected under `profile`.
    fn weighted(self, profile: &Profile) -> f64 {
        match self {
            RowLabel::Probationary => 0.0,
            RowLabel::InWindow { reward, .. } => reward * profile.tp / scaled_sigmoid(-1.0),
            RowLabel::Outside { cost } => cost * profile.fp,
        }
    }
}

/// A labelled window NAB could not score.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("window {window}: {reason}")]
pub struct WindowError {
    /// The window's index within its file.
    pub window: usize,
    pub reason: String,
}

/// Labels the rows of one file. `first_window` is the corpus-wide index of this file's
/// first window. Windows must be in time order, not overlap, span at least two rows and
/// start and end on timestamps of the file (NAB looks them up by equality).
pub fn label_rows(timestamps: &[i64], windows: &[Window], first_window: usize) -> Result<Vec<RowLabel>, WindowError> {
    let index = |t: i64, what: &str, window: usize| {
        timestamps.iter().position(|&s| s == t).ok_or_else(|| {
            let when = chrono::DateTime::from_timestamp(t, 0).map_or(t.to_string(), |d| d.naive_utc().to_string());
            WindowError { window, reason: format!("its {what} {when} is not a timestamp of the file") }
        })
    };
    let mut bounds = Vec::with_capacity(windows.len());
    for (w, window) in windows.iter().enumerate() {
        let (left, right) = (index(window.start, "start", w)?, index(window.end, "end", w)?);
        if right <= left {
            return Err(WindowError {
                window: w,
                reason: format!("it must span at least two rows (rows {left}..={right})"),
            });
        }
        if let Some(&(_, prev_right)) = bounds.last() {
            if left <= prev_right {
                return Err(WindowError {
                    window: w,
                    reason: format!("it starts at row {left}, inside or before the previous window"),
                });
            }
        }
        bounds.push((left, right));
    }
    let probation = probationary_length(timestamps.len());
    let mut labels = Vec::with_capacity(timestamps.len());
    let mut next = 0;
    let mut previous: Option<(usize, usize)> = None;
    for i in 0..timestamps.len() {
        while next < bounds.len() && bounds[next].1 < i {
            previous = Some(bounds[next]);
            next += 1;
        }
        let label = match bounds.get(next) {
            Some(&(left, right)) if left <= i => {
                let width = (right - left + 1) as f64;
                let position = -((right - i + 1) as f64) / width;
                RowLabel::InWindow { window: first_window + next, reward: scaled_sigmoid(position) }
            }
            _ => match previous {
                None => RowLabel::Outside { cost: -1.0 },
                Some((left, right)) => {
                    let position = (i - right) as f64 / (right - left) as f64;
                    RowLabel::Outside { cost: scaled_sigmoid(position) }
                }
            },
        };
        labels.push(if i < probation { RowLabel::Probationary } else { label });
    }
    Ok(labels)
}

/// One file as the sweep needs it: its row labels and its detector's scores.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    pub labels: &'a [RowLabel],
    /// `None` rows are never detections.
    pub scores: &'a [Option<f64>],
}

/// The NAB score at one threshold, with NAB's row counts (`tp`: detected rows inside
/// windows, `fp`: detected rows outside, and so on; probationary rows excluded).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ThresholdScore {
    pub threshold: f64,
    pub score: f64,
    pub tp: usize,
    pub tn: usize,
    pub fp: usize,
    pub fn_: usize,
}

/// The score of every distinct threshold over all `files`, from 1.1 (nothing detected)
/// down to the lowest score, as NAB's `calcScoreByThreshold` lists them.
pub fn sweep(files: &[Scored], profile: &Profile) -> Vec<ThresholdScore> {
    let window_count = files.iter().flat_map(|f| f.labels).filter_map(window_of).max().map_or(0, |w| w + 1);
    // Windows with no scorable row (all probationary) are not part of the score.
    let mut part: Vec<Option<f64>> = vec![None; window_count];
    let (mut tn, mut fn_) = (0, 0);
    let mut active = Vec::new();
    for file in files {
        for (label, score) in file.labels.iter().zip(file.scores) {
            match label {
                RowLabel::Probationary => continue,
                RowLabel::InWindow { window, .. } => {
                    part[*window] = Some(-profile.fn_);
                    fn_ += 1;
                }
                RowLabel::Outside { .. } => tn += 1,
            }
            if let Some(s) = score {
                active.push((*s, *label));
            }
        }
    }
    // Stable, so equal scores keep corpus order, as Python's sorted(reverse=True) does.
    active.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut fp_sum) = (0, 0, 0.0);
    let total = |fp_sum: f64, part: &[Option<f64>]| fp_sum + part.iter().flatten().sum::<f64>();
    let mut out = Vec::new();
    let mut threshold = 1.1;
    for (score, label) in active {
        if score != threshold {
            out.push(ThresholdScore { threshold, score: total(fp_sum, &part), tp, tn, fp, fn_ });
            threshold = score;
        }
        match label {
            RowLabel::InWindow { window, .. } => {
                tp += 1;
                fn_ -= 1;
                let p = &mut part[window];
                *p = Some(p.map_or(label.weighted(profile), |v| v.max(label.weighted(profile))));
            }
            _ => {
                fp += 1;
                tn -= 1;
                fp_sum += label.weighted(profile);
            }
        }
    }
    out.push(ThresholdScore { threshold, score: total(fp_sum, &part), tp, tn, fp, fn_ });
    out
}

/// NAB's optimiser: the threshold with the highest score; on a tie the higher threshold
/// (the first in sweep order).
pub fn best(scores: &[ThresholdScore]) -> Option<ThresholdScore> {
    scores.iter().copied().reduce(|best, s| if s.score > best.score { s } else { best })
}

/// One file's score at a fixed threshold: what NAB's `scoreDataSet` reports per file.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FileScore {
    pub score: f64,
    pub windows: usize,
    pub windows_detected: usize,
    pub false_positive_rows: usize,
}

/// Scores one file with rows at or above `threshold` as detections.
pub fn score_file(file: Scored, profile: &Profile, threshold: f64) -> FileScore {
    let mut parts: Vec<(usize, Option<f64>)> = Vec::new();
    let (mut fp_sum, mut fp_rows) = (0.0, 0);
    for (label, score) in file.labels.iter().zip(file.scores) {
        let detected = score.is_some_and(|s| s >= threshold);
        match *label {
            RowLabel::Probationary => {}
            RowLabel::InWindow { window, .. } => {
                if parts.last().is_none_or(|(w, _)| *w != window) {
                    parts.push((window, None));
                }
                if detected {
                    if let Some((_, best)) = parts.last_mut() {
                        let v = label.weighted(profile);
                        *best = Some(best.map_or(v, |b: f64| b.max(v)));
                    }
                }
            }
            RowLabel::Outside { .. } => {
                if detected {
                    fp_sum += label.weighted(profile);
                    fp_rows += 1;
                }
            }
        }
    }
    let detected = parts.iter().filter(|(_, p)| p.is_some()).count();
    let window_sum: f64 = parts.iter().map(|(_, p)| p.unwrap_or(-profile.fn_)).sum();
    FileScore {
        score: fp_sum + window_sum,
        windows: parts.len(),
        windows_detected: detected,
        false_positive_rows: fp_rows,
    }
}

/// `100 · (S - S_null) / (S_perfect - S_null)`, NAB's normalised score.
pub fn normalise(raw: f64, null: f64, perfect: f64) -> f64 {
    100.0 * (raw - null) / (perfect - null)
}

fn window_of(label: &RowLabel) -> Option<usize> {
    match label {
        RowLabel::InWindow { window, .. } => Some(*window),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Profile = PROFILES[0];

    /// 100 rows (15 probationary) with one window over rows 40..=49.
    fn file() -> (Vec<i64>, Vec<Window>) {
        ((0..100).collect(), vec![Window { start: 40, end: 49 }])
    }

    fn score_with_detections(rows: &[usize], profile: &Profile) -> f64 {
        let (ts, windows) = file();
        let labels = label_rows(&ts, &windows, 0).expect("valid windows");
        let scores: Vec<Option<f64>> = (0..100).map(|i| Some(if rows.contains(&i) { 1.0 } else { 0.0 })).collect();
        let file = Scored { labels: &labels, scores: &scores };
        let at_one = score_file(file, profile, 1.0).score;
        // The sweep must agree with the per-file score at the same threshold.
        let swept = sweep(&[file], profile);
        let row = swept.iter().find(|s| s.threshold == 1.0).map_or(swept[0].score, |s| s.score);
        assert!((row - at_one).abs() < 1e-12, "sweep {row} vs file {at_one}");
        at_one
    }

    #[test]
    fn probation_is_fifteen_percent_capped_at_750() {
        assert_eq!(probationary_length(100), 15);
        assert_eq!(probationary_length(4032), 604);
        assert_eq!(probationary_length(22695), 750);
    }

    #[test]
    fn scaled_sigmoid_matches_nab_anchor_points() {
        // 2·σ(5) - 1 = tanh(2.5) = 0.986614...; 0 at the window's end; -1 past 3 widths.
        assert!((scaled_sigmoid(-1.0) - 2.5f64.tanh()).abs() < 1e-15);
        assert!((scaled_sigmoid(-0.5) - 1.25f64.tanh()).abs() < 1e-15);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 2.5f64.tanh()).abs() < 1e-15);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn detection_at_the_window_start_earns_the_full_reward() {
        // Position -(49 - 40 + 1)/10 = -1, normalised by σ̃(-1): exactly tp.
        assert!((score_with_detections(&[40], &STANDARD) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn detection_at_the_window_end_earns_little() {
        // Position -(49 - 49 + 1)/10 = -0.1: tanh(0.25) / tanh(2.5) = 0.24492 / 0.98661.
        let expected = 0.25f64.tanh() / 2.5f64.tanh();
        assert!((score_with_detections(&[49], &STANDARD) - expected).abs() < 1e-12);
        assert!((expected - 0.248_24).abs() < 1e-5);
    }

    #[test]
    fn only_the_earliest_detection_in_a_window_counts() {
        let expected = 1.5f64.tanh() / 2.5f64.tanh(); // row 44: position -0.6
        assert!((score_with_detections(&[44, 45, 49], &STANDARD) - expected).abs() < 1e-12);
    }

    #[test]
    fn no_detection_costs_the_miss_weight() {
        assert_eq!(score_with_detections(&[], &STANDARD), -1.0);
        assert_eq!(score_with_detections(&[], &PROFILES[2]), -2.0);
    }

    #[test]
    fn detections_outside_windows_cost_by_profile_and_distance() {
        // Before any window: -fp each, plus the missed window.
        assert!((score_with_detections(&[20], &STANDARD) - (-0.11 - 1.0)).abs() < 1e-12);
        assert!((score_with_detections(&[20, 30], &PROFILES[1]) - (-0.44 - 1.0)).abs() < 1e-12);
        // Row 52 is 3 rows past the window's end (row 49), width 10: position 3/9.
        let expected = 0.11 * -(2.5f64 * 3.0 / 9.0).tanh() + 1.0;
        assert!((score_with_detections(&[40, 52], &STANDARD) - expected).abs() < 1e-12);
        // More than three widths past (27 rows / 9 > 3): the full -fp.
        assert!((score_with_detections(&[40, 90], &STANDARD) - (1.0 - 0.11)).abs() < 1e-12);
    }

    #[test]
    fn probationary_detections_are_ignored() {
        assert_eq!(score_with_detections(&[3, 14], &STANDARD), -1.0);
        assert!((score_with_detections(&[15], &STANDARD) - (-1.11)).abs() < 1e-12);
    }

    #[test]
    fn sweep_lists_every_threshold_and_best_picks_the_highest_score() {
        let (ts, windows) = file();
        let labels = label_rows(&ts, &windows, 0).expect("valid windows");
        // 0.9 at the window's start, 0.8 on a row far from it, 0 elsewhere.
        let scores: Vec<Option<f64>> = (0..100)
            .map(|i| {
                Some(match i {
                    40 => 0.9,
                    20 => 0.8,
                    _ => 0.0,
                })
            })
            .collect();
        let swept = sweep(&[Scored { labels: &labels, scores: &scores }], &STANDARD);
        let thresholds: Vec<f64> = swept.iter().map(|s| s.threshold).collect();
        assert_eq!(thresholds, vec![1.1, 0.9, 0.8, 0.0]);
        assert_eq!(swept[0].score, -1.0);
        assert!((swept[1].score - 1.0).abs() < 1e-12);
        assert!((swept[2].score - 0.89).abs() < 1e-12);
        assert_eq!((swept[1].tp, swept[1].fp, swept[1].fn_, swept[1].tn), (1, 0, 9, 75));
        let best = best(&swept).expect("thresholds");
        assert_eq!(best.threshold, 0.9);
    }

    #[test]
    fn windows_must_exist_and_be_ordered() {
        let ts: Vec<i64> = (0..10).collect();
        assert!(label_rows(&ts, &[Window { start: 2, end: 20 }], 0).is_err());
        assert!(label_rows(&ts, &[Window { start: 5, end: 5 }], 0).is_err());
        assert!(label_rows(&ts, &[Window { start: 5, end: 7 }, Window { start: 6, end: 8 }], 0).is_err());
    }

    #[test]
    fn normalisation_maps_null_to_zero_and_perfect_to_hundred() {
        assert_eq!(normalise(-116.0, -116.0, 116.0), 0.0);
        assert_eq!(normalise(116.0, -116.0, 116.0), 100.0);
        assert_eq!(normalise(0.0, -116.0, 116.0), 50.0);
    }
}
