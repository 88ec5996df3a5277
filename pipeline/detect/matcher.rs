//! Signature matching for one window: the seed's "best match among the signatures of
//! the instance's application type; alert when above its threshold".
//!
//! In: the signature table (rebuilt into a [`Matcher`] whenever it changes) and a
//! closed window's gridded features. Out: an [`Evaluation`] with the best signature,
//! its confidence and threshold, the runner-up, and the explanation (per metric, its
//! DTW distance and share of the match).
//!
//! Signatures that compare the same metrics with the same normalisation and length
//! share one DTW [`Library`], so one query series is built per group and the search's
//! lower bounds prune across the whole group. A window that lacks a metric a group
//! needs (never reported, or a gap longer than the window fills) is not compared with
//! that group: a missing reading is not a reading of zero.
//!
//! A signature whose confidence on the window is under [`MATCH_FLOOR`] (or under its
//! own threshold, if that is lower) is no match at all: it is neither the best nor the
//! runner-up. The search is bounded at the distance of that confidence, so on a
//! healthy window, far from every signature, the lower bounds rule out nearly all of
//! them without a DTW.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::codec::{FailureSignature, MetricContribution, Normalisation};
use crate::detect::confidence::{confidence, distance_at};
use crate::detect::dtw::{Dtw, Library, Series};
use crate::feedback::Tuning;
use crate::window::features;

/// Confidence under which a signature does not match a window at all: at 0.01 the
/// mean squared difference per cell is 4.6 times the confidence scale, as far from the
/// signature as a window gets that shares nothing of it but its units.
pub const MATCH_FLOOR: f64 = 0.01;

/// One signature as the matcher knows it.
#[derive(Debug, Clone)]
pub struct SignatureRef {
    /// `app_type/function/name`.
    pub key: Arc<str>,
    pub failure_kind: Arc<str>,
    pub threshold: f64,
}

/// A signature's standing against a window.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub signature: SignatureRef,
    pub distance: f64,
    pub confidence: f64,
}

/// The outcome of matching one window.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The signature whose confidence is furthest above (or least below) its threshold.
    pub best: Candidate,
    pub runner_up: Option<Candidate>,
    /// The most confident match, above its threshold or not: the evidence the feedback
    /// loop blames a missed failure on.
    pub closest: Candidate,
    /// The best match's metrics, largest contribution first.
    pub explanation: Vec<MetricContribution>,
    /// DTW comparisons run to the end or abandoned, and signatures the lower bounds pruned.
    pub computed: usize,
    pub pruned: usize,
}

impl Evaluation {
    /// The best match is above its signature's threshold.
    pub fn alerts(&self) -> bool {
        self.best.confidence >= self.best.signature.threshold
    }
}

struct Group {
    app_type: String,
    /// A function name, or `*` for all.
    function: String,
    /// Window channel of each metric.
    channels: Vec<usize>,
    names: Vec<String>,
    modes: Vec<Normalisation>,
    points: usize,
    library: Library,
    signatures: Vec<SignatureRef>,
    /// The DTW distance of the group's floor confidence: [`MATCH_FLOOR`], or the
    /// lowest threshold of its signatures if that is lower.
    bound: f64,
}

/// Why a signature of the table is not matched against windows.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub key: String,
    pub reason: String,
}

/// The signature table prepared for matching windows of one shape.
pub struct Matcher {
    groups: Vec<Group>,
    skipped: Vec<Skipped>,
    points: usize,
}

impl Matcher {
    /// Groups the usable signatures for windows of `points` steps of `step_ms` over
    /// `features`; the others are listed by [`Matcher::skipped`] with the reason.
    pub fn build(
        signatures: &BTreeMap<String, FailureSignature>,
        features: &[String],
        step_ms: i64,
        points: usize,
        radius: usize,
    ) -> Self {
        type GroupKey = (String, String, Vec<String>, Vec<Normalisation>, usize);
        let mut grouped: BTreeMap<GroupKey, Vec<(&String, &FailureSignature, Series)>> = BTreeMap::new();
        let mut skipped = Vec::new();
        for (key, sig) in signatures {
            match prepare(sig, features, step_ms, points) {
                Ok(series) => grouped
                    .entry((
                        sig.app_type.clone(),
                        sig.function.clone(),
                        sig.metrics.clone(),
                        sig.normalisation.clone(),
                        series.len(),
                    ))
                    .or_default()
                    .push((key, sig, series)),
                Err(reason) => skipped.push(Skipped { key: key.clone(), reason }),
            }
        }
        let mut groups = Vec::new();
        for ((app_type, function, names, modes, len), members) in grouped {
            let channels = names.iter().map(|n| features.iter().position(|f| f == n).unwrap_or(0)).collect();
            let signatures: Vec<SignatureRef> = members
                .iter()
                .map(|(key, sig, _)| SignatureRef {
                    key: Arc::from(key.as_str()),
                    failure_kind: Arc::from(sig.failure_kind.as_str()),
                    threshold: sig.threshold,
                })
                .collect();
            let floor = signatures.iter().map(|s| s.threshold).fold(MATCH_FLOOR, f64::min);
            let bound = distance_at(floor, len, names.len());
            match Library::new(members.into_iter().map(|(_, _, s)| s).collect(), radius) {
                Ok(library) => groups.push(Group {
                    app_type,
                    function,
                    channels,
                    names,
                    modes,
                    points: len,
                    library,
                    signatures,
                    bound,
                }),
                Err(e) => skipped.extend(signatures_keys(&signatures, &e.to_string())),
            }
        }
        Self { groups, skipped, points }
    }

    /// Signatures that cannot be matched against these windows, with the reason.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Signatures in use.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.signatures.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Matches a window of an instance of `app_type` and `function` against the
    /// signatures of its application type (those of its function or of every
    /// function); `None` when no signature applies or the window lacks their metrics.
    /// `values` is time-major, `points × features`, with `NaN` where nothing is known.
    pub fn evaluate(&self, dtw: &mut Dtw, app_type: &str, function: &str, values: &[f64]) -> Option<Evaluation> {
        self.evaluate_tuned(dtw, app_type, function, values, &Tuning::default(), 0)
    }

    /// [`Self::evaluate`] with the thresholds the feedback loop tuned in force at event
    /// time `at_ms` in place of the signatures' own.
    pub fn evaluate_tuned(
        &self,
        dtw: &mut Dtw,
        app_type: &str,
        function: &str,
        values: &[f64],
        tuning: &Tuning,
        at_ms: i64,
    ) -> Option<Evaluation> {
        let channels_total = values.len() / self.points.max(1);
        let mut top: Vec<Candidate> = Vec::with_capacity(2);
        let mut closest: Option<Candidate> = None;
        let mut best_query: Option<(usize, Series)> = None;
        let (mut computed, mut pruned) = (0, 0);
        for (gi, group) in self.groups.iter().enumerate() {
            if group.app_type != app_type || (group.function != "*" && group.function != function) {
                continue;
            }
            let Some(query) = query(group, values, self.points, channels_total) else { continue };
            let m = dtw.search_within(&query, &group.library, group.bound);
            computed += m.computed;
            pruned += m.pruned_kim + m.pruned_keogh;
            let cells = (group.points, group.channels.len());
            for hit in m.best.into_iter().chain(m.runner_up) {
                let mut signature = group.signatures[hit.index].clone();
                if let Some(t) = tuning.threshold(&signature.key, at_ms) {
                    signature.threshold = t;
                }
                let candidate = Candidate {
                    signature,
                    distance: hit.distance,
                    confidence: confidence(hit.distance, cells.0, cells.1),
                };
                if closest.as_ref().is_none_or(|c| candidate.confidence > c.confidence) {
                    closest = Some(candidate.clone());
                }
                // Keep the two that clear their own thresholds by the most: ranking by
                // confidence alone would let a confident signature with a high threshold
                // hide one that is above its lower threshold. Ties go to the earlier one.
                let margin = |c: &Candidate| c.confidence - c.signature.threshold;
                let pos = top.iter().position(|c| margin(&candidate) > margin(c)).unwrap_or(top.len());
                if pos < 2 {
                    if pos == 0 {
                        best_query = Some((gi, query.clone()));
                    }
                    top.insert(pos, candidate);
                    top.truncate(2);
                }
            }
        }
        let mut top = top.into_iter();
        let best = top.next()?;
        let runner_up = top.next();
        let explanation = match best_query {
            Some((gi, q)) => explain(dtw, &self.groups[gi], &q, &best),
            None => Vec::new(),
        };
        let closest = closest.unwrap_or_else(|| best.clone());
        Some(Evaluation { best, runner_up, closest, explanation, computed, pruned })
    }
}

fn signatures_keys(sigs: &[SignatureRef], reason: &str) -> Vec<Skipped> {
    sigs.iter().map(|s| Skipped { key: s.key.to_string(), reason: reason.to_owned() }).collect()
}

/// A signature's series, normalised channel by channel, time-major.
fn prepare(sig: &FailureSignature, features: &[String], step_ms: i64, points: usize) -> Result<Series, String> {
    if sig.interval_ms != step_ms {
        return Err(format!("interval {} ms differs from the windows' step of {step_ms} ms", sig.interval_ms));
    }
    if let Some(missing) = sig.metrics.iter().find(|m| !features.contains(m)) {
        return Err(format!("metric {missing} is not a window feature ({})", features.join(", ")));
    }
    let len = sig.series.first().map_or(0, Vec::len);
    if len == 0 || len > points {
        return Err(format!("{len} points; windows hold {points}"));
    }
    if sig.series.len() != sig.metrics.len() || sig.normalisation.len() != sig.metrics.len() {
        return Err("metrics, normalisation and series differ in number".to_owned());
    }
    if let Some(short) = sig.series.iter().zip(&sig.metrics).find(|(c, _)| c.len() != len) {
        return Err(format!("channel {} has {} points, the first has {len}", short.1, short.0.len()));
    }
    normalised(sig.series.clone(), &sig.metrics, &sig.normalisation).map_err(|e| e.to_string())
}

/// Channels of equal length, each normalised by `features::normalise` with its mode,
/// as one time-major series: how signatures are prepared for matching (here, and
/// where extraction scores a signature the way the detector will).
pub fn normalised(
    mut channels: Vec<Vec<f64>>,
    metrics: &[String],
    modes: &[Normalisation],
) -> Result<Series, crate::detect::dtw::DtwError> {
    let n = channels.len();
    let len = channels.first().map_or(0, Vec::len);
    let mut data = vec![0.0; len * n];
    for (c, ((channel, &mode), name)) in channels.iter_mut().zip(modes).zip(metrics).enumerate() {
        features::normalise(channel, mode, name);
        for (t, &x) in channel.iter().enumerate() {
            data[t * n + c] = x;
        }
    }
    Series::from_f64(n, &data)
}

/// The window's last `group.points` points of the group's metrics, normalised as the
/// group's signatures are; `None` if a metric has a hole there.
fn query(group: &Group, values: &[f64], points: usize, channels_total: usize) -> Option<Series> {
    let n = group.channels.len();
    let first = points - group.points;
    let mut data = vec![0.0; group.points * n];
    let mut channel = vec![0.0; group.points];
    for (c, (&ch, (&mode, name))) in group.channels.iter().zip(group.modes.iter().zip(&group.names)).enumerate() {
        for (t, slot) in channel.iter_mut().enumerate() {
            let v = values[(first + t) * channels_total + ch];
            if v.is_nan() {
                return None;
            }
            *slot = v;
        }
        features::normalise(&mut channel, mode, name);
        for (t, &x) in channel.iter().enumerate() {
            data[t * n + c] = x;
        }
    }
    Series::from_f64(n, &data).ok()
}

fn explain(dtw: &mut Dtw, group: &Group, query: &Series, best: &Candidate) -> Vec<MetricContribution> {
    let Some(index) = group.signatures.iter().position(|s| Arc::ptr_eq(&s.key, &best.signature.key)) else {
        return Vec::new();
    };
    let Some(parts) = dtw.channel_contributions(query, group.library.signature(index)) else {
        return Vec::new();
    };
    let total: f64 = parts.iter().sum();
    let mut out: Vec<MetricContribution> = group
        .names
        .iter()
        .zip(parts)
        .map(|(name, sq)| MetricContribution {
            metric: name.clone(),
            distance: sq.sqrt(),
            share: if total > 0.0 { sq / total } else { 1.0 / group.names.len() as f64 },
        })
        .collect();
    out.sort_by(|a, b| b.share.total_cmp(&a.share).then_with(|| a.metric.cmp(&b.metric)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::metric_names as m;

    fn features() -> Vec<String> {
        features::DEFAULT_FEATURES.iter().map(|s| s.to_string()).collect()
    }

    /// A ramp of memory utilisation and error rate over 16 points.
    fn signature(name: &str, app: &str, slope: f64, threshold: f64) -> FailureSignature {
        let mem: Vec<f64> = (0..16).map(|t| 0.5 + slope * t as f64).collect();
        let err: Vec<f64> = (0..16).map(|t| 0.01 * t as f64).collect();
        FailureSignature {
            name: name.into(),
            app_type: app.into(),
            function: "*".into(),
            failure_kind: "memory_leak".into(),
            metrics: vec![features::MEMORY_UTILIZATION.into(), m::ERROR_RATE.into()],
            normalisation: vec![Normalisation::Level, Normalisation::Level],
            series: vec![mem, err],
            interval_ms: 10_000,
            threshold,
            lead_ms: 0,
            source: "test".into(),
        }
    }

    /// A window of 16 points over the default features, from a memory slope.
    fn window(slope: f64) -> Vec<f64> {
        let f = features();
        let mut v = vec![0.2; 16 * f.len()];
        let mem = f.iter().position(|x| x == features::MEMORY_UTILIZATION).unwrap();
        let err = f.iter().position(|x| x == m::ERROR_RATE).unwrap();
        for t in 0..16 {
            v[t * f.len() + mem] = 0.5 + slope * t as f64;
            v[t * f.len() + err] = 0.01 * t as f64;
        }
        v
    }

    fn table(sigs: Vec<FailureSignature>) -> BTreeMap<String, FailureSignature> {
        sigs.into_iter().map(|s| (format!("{}/{}/{}", s.app_type, s.function, s.name), s)).collect()
    }

    #[test]
    fn best_match_of_the_instances_app_type_wins_with_runner_up_and_explanation() {
        let t = table(vec![
            signature("fast", "web", 0.03, 0.8),
            signature("slow", "web", 0.01, 0.8),
            signature("other", "db", 0.03, 0.8),
        ]);
        let matcher = Matcher::build(&t, &features(), 10_000, 16, 3);
        assert_eq!(matcher.len(), 3);
        let mut dtw = Dtw::new(3);
        let e = matcher.evaluate(&mut dtw, "web", "checkout", &window(0.03)).unwrap();
        assert_eq!(&*e.best.signature.key, "web/*/fast");
        assert!(e.best.confidence > 0.99 && e.alerts());
        assert_eq!(&*e.runner_up.as_ref().unwrap().signature.key, "web/*/slow");
        assert!(e.runner_up.unwrap().confidence < e.best.confidence);
        let e = matcher.evaluate(&mut dtw, "web", "checkout", &window(0.01)).unwrap();
        assert_eq!(&*e.best.signature.key, "web/*/slow");
        // The memory channel is what separates a healthy window from a fast leak.
        let fast_only = Matcher::build(&table(vec![signature("fast", "web", 0.03, 0.8)]), &features(), 10_000, 16, 3);
        let healthy = fast_only.evaluate(&mut dtw, "web", "checkout", &window(0.0)).unwrap();
        assert!(!healthy.alerts(), "flat memory matched a leak: {}", healthy.best.confidence);
        assert_eq!(healthy.explanation[0].metric, features::MEMORY_UTILIZATION);
        assert!((healthy.explanation.iter().map(|c| c.share).sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(matcher.evaluate(&mut dtw, "cache", "x", &window(0.03)).is_none(), "no signature of that app type");
    }

    #[test]
    fn a_match_above_its_threshold_is_not_hidden_by_a_closer_one_below_its_own() {
        // "strict" is nearer to a 0.03 ramp but asks for near-certainty; "lenient" is
        // further but above its threshold: the window must alert on "lenient".
        let t = table(vec![signature("strict", "web", 0.03, 0.9999), signature("lenient", "web", 0.025, 0.5)]);
        let matcher = Matcher::build(&t, &features(), 10_000, 16, 3);
        let e = matcher.evaluate(&mut Dtw::new(3), "web", "f", &window(0.029)).unwrap();
        assert_eq!(&*e.best.signature.key, "web/*/lenient", "{e:?}");
        assert!(e.alerts());
        assert_eq!(&*e.runner_up.unwrap().signature.key, "web/*/strict");
    }

    #[test]
    fn a_window_missing_a_metric_is_not_matched_as_if_it_were_zero() {
        let t = table(vec![signature("fast", "web", 0.03, 0.8)]);
        let matcher = Matcher::build(&t, &features(), 10_000, 16, 3);
        let mut w = window(0.03);
        let err = features().iter().position(|x| x == m::ERROR_RATE).unwrap();
        w[5 * features().len() + err] = f64::NAN;
        assert!(matcher.evaluate(&mut Dtw::new(3), "web", "f", &w).is_none());
    }

    #[test]
    fn incompatible_signatures_are_skipped_with_the_reason() {
        let mut wrong_step = signature("a", "web", 0.03, 0.8);
        wrong_step.interval_ms = 1_000;
        let mut unknown_metric = signature("b", "web", 0.03, 0.8);
        unknown_metric.metrics[1] = "gpu_temperature".into();
        let mut too_long = signature("c", "web", 0.03, 0.8);
        too_long.series.iter_mut().for_each(|s| s.extend([0.0; 8]));
        let matcher = Matcher::build(&table(vec![wrong_step, unknown_metric, too_long]), &features(), 10_000, 16, 3);
        assert!(matcher.is_empty());
        let reasons: Vec<&str> = matcher.skipped().iter().map(|s| s.reason.as_str()).collect();
        assert!(reasons[0].contains("10000 ms"), "{reasons:?}");
        assert!(reasons[1].contains("gpu_temperature"), "{reasons:?}");
        assert!(reasons[2].contains("24 points"), "{reasons:?}");
    }

    #[test]
    fn a_shorter_signature_matches_the_end_of_the_window() {
        let mut short = signature("short", "web", 0.03, 0.8);
        short.series.iter_mut().for_each(|s| {
            s.drain(..8);
        });
        let matcher = Matcher::build(&table(vec![short]), &features(), 10_000, 16, 3);
        let e = matcher.evaluate(&mut Dtw::new(3), "web", "f", &window(0.03)).unwrap();
        assert!(e.best.confidence > 0.99, "{}", e.best.confidence);
    }
}
