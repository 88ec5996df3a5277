//! The anomaly score's tiers, exactly as the seed sets them.
//!
//! In: an anomaly score 0..100 (an integer from the detector's models, or the `f64`
//! an alert carries). Out: the tier 0..3 and the tier's fixed response. Guarantee: the
//! table below is the only place these numbers live; every boundary is tested.
//!
//! | score  | tier | response                                                         |
//! |--------|------|------------------------------------------------------------------|
//! | 0–30   | 0    | nothing                                                          |
//! | 31–70  | 1    | CPU ×1.10, memory ×1.05                                          |
//! | 71–90  | 2    | CPU ×1.25, memory ×1.15, the event logged                        |
//! | 91–100 | 3    | CPU ×1.50, memory ×1.30, operations notified, shedding considered |

/// The seed's tier of an integer score: 0 for 0–30, 1 for 31–70, 2 for 71–90, 3 for
/// 91–100 (and above: a score past the scale is at least as bad as 100).
pub fn tier(score: u8) -> u8 {
    match score {
        0..=30 => 0,
        31..=70 => 1,
        71..=90 => 2,
        _ => 3,
    }
}

/// The tier of a score as alerts carry it (`anomaly_score: Option<f64>`).
///
/// The score is rounded to the nearest integer, halves away from zero (`f64::round`),
/// then held within 0..=100, then tiered: 30.49 is tier 0, 30.5 is tier 1, 90.5 is
/// tier 3. A negative score counts as 0 and one above 100 as 100. `NaN` is no score at
/// all: `None`, so a broken model never resizes anything.
pub fn tier_of_score(score: f64) -> Option<u8> {
    if score.is_nan() {
        return None;
    }
    // Held within 0..=100 first, so the cast below is exact and cannot saturate.
    let rounded = score.round().clamp(0.0, 100.0) as u8;
    Some(tier(rounded))
}

/// What one tier does, before any signature policy or guardrail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierResponse {
    pub tier: u8,
    /// Multiplier on CPU (1.0: unchanged).
    pub cpu_factor: f64,
    /// Multiplier on memory (1.0: unchanged).
    pub memory_factor: f64,
    /// The event goes to the log (tiers 2 and 3).
    pub log: bool,
    /// Operations are notified (tier 3).
    pub notify: bool,
    /// Suspending new requests is considered (tier 3); the policy file decides.
    pub consider_shedding: bool,
}

/// The seed's table, indexed by tier.
pub const TIERS: [TierResponse; 4] = [
    TierResponse { tier: 0, cpu_factor: 1.0, memory_factor: 1.0, log: false, notify: false, consider_shedding: false },
    TierResponse {
        tier: 1,
        cpu_factor: 1.10,
        memory_factor: 1.05,
        log: false,
        notify: false,
        consider_shedding: false,
    },
    TierResponse { tier: 2, cpu_factor: 1.25, memory_factor: 1.15, log: true, notify: false, consider_shedding: false },
    TierResponse { tier: 3, cpu_factor: 1.50, memory_factor: 1.30, log: true, notify: true, consider_shedding: true },
];

/// The response of a tier 0..=3 (a larger value is treated as 3).
pub fn response(tier: u8) -> TierResponse {
    TIERS[usize::from(tier.min(3))]
}

/// The seed's score range of a tier, for reasons: "31–70".
pub const fn range(tier: u8) -> &'static str {
    match tier {
        0 => "0–30",
        1 => "31–70",
        2 => "71–90",
        _ => "91–100",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_boundary_of_the_seed_table() {
        let cases = [(0, 0), (30, 0), (31, 1), (70, 1), (71, 2), (90, 2), (91, 3), (100, 3), (255, 3)];
        for (score, expected) in cases {
            assert_eq!(tier(score), expected, "score {score}");
        }
    }

    #[test]
    fn every_integer_score_maps_to_the_tier_whose_range_holds_it() {
        for score in 0..=100u8 {
            let t = tier(score);
            let (lo, hi) = match range(t).split_once('–') {
                Some((lo, hi)) => (lo.parse::<u8>().unwrap(), hi.parse::<u8>().unwrap()),
                None => panic!("range of tier {t} is not lo–hi"),
            };
            assert!((lo..=hi).contains(&score), "score {score} in tier {t} ({lo}–{hi})");
        }
    }

    #[test]
    fn fractional_scores_round_half_away_from_zero() {
        let cases = [
            (30.0, Some(0)),
            (30.49, Some(0)),
            (30.5, Some(1)),
            (70.4, Some(1)),
            (70.5, Some(2)),
            (90.49, Some(2)),
            (90.5, Some(3)),
            (100.0, Some(3)),
        ];
        for (score, expected) in cases {
            assert_eq!(tier_of_score(score), expected, "score {score}");
        }
    }

    #[test]
    fn out_of_scale_scores_are_held_and_nan_is_no_score() {
        assert_eq!(tier_of_score(-5.0), Some(0));
        assert_eq!(tier_of_score(f64::NEG_INFINITY), Some(0));
        assert_eq!(tier_of_score(250.0), Some(3));
        assert_eq!(tier_of_score(f64::INFINITY), Some(3));
        assert_eq!(tier_of_score(f64::NAN), None);
    }

    #[test]
    fn the_table_holds_the_seed_factors() {
        assert_eq!((response(0).cpu_factor, response(0).memory_factor), (1.0, 1.0));
        assert_eq!((response(1).cpu_factor, response(1).memory_factor), (1.10, 1.05));
        assert_eq!((response(2).cpu_factor, response(2).memory_factor), (1.25, 1.15));
        assert_eq!((response(3).cpu_factor, response(3).memory_factor), (1.50, 1.30));
        assert!(!response(1).log && response(2).log && !response(2).notify);
        assert!(response(3).notify && response(3).consider_shedding);
        assert_eq!(response(9), response(3));
        for (i, r) in TIERS.iter().enumerate() {
            assert_eq!(usize::from(r.tier), i);
        }
    }
}
