use std::collections::BTreeMap;
use std::path::Path;

use super::panels::{metric_panels, segments};
use super::*;
use crate::codec::metric_names as m;
use crate::codec::Metric;
use crate::detect::lstm::{artifact, shipped_dir};
use crate::simulate::{FailureKind, Fleet, FleetConfig};
use crate::train::{score_csv, ScoreArgs};
use crate::window::features;

/// 2024-05-01T00:00:00Z.
const START_MS: i64 = 1_714_521_600_000;
const MIN: i64 = 60_000;
const GIB: f64 = (1u64 << 30) as f64;

fn sample(t: i64, used: f64, limit: f64, psi: f64) -> TelemetrySample {
    TelemetrySample {
        instance_id: "web-checkout-0003".into(),
        app_type: "web".into(),
        function: "checkout".into(),
        seq: 0,
        timestamp_ms: t,
        metrics: vec![
            Metric::new(m::MEMORY_USED, used),
            Metric::new(m::MEMORY_LIMIT, limit),
            Metric::new(m::PSI_MEMORY_SOME, psi),
        ],
        labels: BTreeMap::new(),
    }
}

/// Two hours of a leaking instance with a 2 GiB limit that crashes at 01:41 and is
/// back three minutes later, scored every 10 s, with two adjustments decided.
fn leaking(limit: f64) -> InstanceChart {
    let failure = START_MS + 101 * MIN;
    let samples: Vec<TelemetrySample> = (0..720)
        .map(|k| START_MS + k * 10_000)
        .filter(|&t| !(failure < t && t < failure + 3 * MIN))
        .map(|t| {
            let grow = ((t - START_MS - 40 * MIN) as f64 / (61 * MIN) as f64).clamp(0.0, 1.0);
            sample(t, limit * (0.45 + 0.55 * grow), limit, 0.3 * grow * grow)
        })
        .collect();
    let scores = samples
        .iter()
        .map(|s| {
            let grow = ((s.timestamp_ms - START_MS - 40 * MIN) as f64 / (61 * MIN) as f64).clamp(0.0, 1.0);
            ScorePoint {
                timestamp_ms: s.timestamp_ms,
                anomaly_score: (s.timestamp_ms > START_MS + 10 * MIN).then_some(10.0 + 90.0 * grow),
                signature: Some("web/*/memory_leak".into()),
                signature_kind: Some(if grow > 0.0 { "memory_leak" } else { "error_burst" }.into()),
                confidence: Some(grow),
                threshold: Some(0.5),
            }
        })
        .collect();
    InstanceChart {
        instance: "web-checkout-0003".into(),
        app_type: "web".into(),
        function: "checkout".into(),
        kind: "memory_leak".into(),
        samples,
        scores,
        markers: vec![
            Marker {
                timestamp_ms: START_MS + 70 * MIN,
                label: "resize cpu×1.25 mem×1.15".into(),
                outcome: "applied".into(),
            },
            Marker {
                timestamp_ms: START_MS + 90 * MIN,
                label: "resize cpu×1.5 mem×1.3".into(),
                outcome: "refused".into(),
            },
        ],
        onset_ms: START_MS + 40 * MIN,
        failure_ms: Some(failure),
        expected_failure_ms: Some(failure),
        holdout: false,
    }
}

/// Checks that every tag of `svg` is closed in order, and returns the names of the
/// elements it opened: enough XML to catch a truncated or garbled file.
fn xml_elements(svg: &str) -> Vec<String> {
    let mut open: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = svg;
    while let Some(at) = rest.find('<') {
        let end = rest[at..].find('>').unwrap_or_else(|| panic!("unclosed tag at {:?}", &rest[at..at + 40]));
        let tag = &rest[at + 1..at + end];
        rest = &rest[at + end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(open.pop().as_deref(), Some(name.trim()), "closing tag out of order");
            continue;
        }
        let name = tag.split_whitespace().next().unwrap_or_default().trim_end_matches('/').to_owned();
        seen.push(name.clone());
        if !tag.ends_with('/') {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "tags left open: {open:?}");
    seen
}

/// The text of every `<text>` element.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text").skip(1).filter_map(|t| Some(t[t.find('>')? + 1..t.find("</text>")?].trim().to_owned())).collect()
}

#[test]
fn a_chart_shows_axes_with_units_legend_failure_and_every_adjustment() {
    let dir = tempfile::tempdir().unwrap();
    let chart = leaking(2.0 * GIB);
    let path = draw(&dir.path().join("charts"), &chart).unwrap();
    assert_eq!(path, dir.path().join("charts/memory_leak-web-checkout-0003.svg"));
    let svg = std::fs::read_to_string(&path).unwrap();
    let elements = xml_elements(&svg);
    assert_eq!(elements.first().map(String::as_str), Some("svg"));
    assert!(elements.iter().filter(|e| *e == "polyline" || *e == "path").count() > 10, "{elements:?}");
    let texts = texts(&svg);
    let has = |s: &str| texts.iter().any(|t| t.contains(s));
    // Axes with their units, one time axis in UTC.
    for axis in [
        "share (%)",
        "memory (GiB)",
        "anomaly score (0–100)",
        "signature confidence (0–1)",
        "time (UTC, from 2024-05-01)",
    ] {
        assert!(has(axis), "no axis {axis:?} in {texts:?}");
    }
    assert!(has("01:40"), "no clock time on the time axis: {texts:?}");
    // Legends: the kind's signature metrics, the resource it runs into, score, confidence, markers.
    for entry in [
        features::MEMORY_UTILIZATION,
        m::PSI_MEMORY_SOME,
        m::MEMORY_USED,
        m::MEMORY_LIMIT,
        "tier boundaries 30 / 70 / 90",
        "anomaly score of the window",
        "confidence of the best signature, a memory_leak one",
        "confidence of the best signature, of another kind",
        "its threshold (alerts at or above)",
        "failure onset",
        "adjustment applied",
        "adjustment refused",
    ] {
        assert!(texts.iter().any(|t| t == entry), "no legend entry {entry:?} in {texts:?}");
    }
    // A label per marker: onset, failure, each adjustment with its outcome and time.
    assert!(has("onset 00:40"), "{texts:?}");
    assert!(has("failed 01:41"), "{texts:?}");
    assert!(!has("would have failed"), "it did fail: {texts:?}");
    assert!(has("resize cpu×1.25 mem×1.15 — applied 01:10"), "{texts:?}");
    assert!(has("resize cpu×1.5 mem×1.3 — refused 01:30"), "{texts:?}");
    assert!(has("web-checkout-0003 · memory_leak on web/checkout · adjusted"), "{texts:?}");
}

#[test]
fn an_averted_failure_is_marked_where_it_would_have_happened_and_a_holdout_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut chart = leaking(512.0 * (1u64 << 20) as f64);
    chart.failure_ms = None;
    let svg = std::fs::read_to_string(draw(dir.path(), &chart).unwrap()).unwrap();
    let texts = texts(&svg);
    let has = |s: &str| texts.iter().any(|t| t.contains(s));
    assert!(has("would have failed 01:41"), "{texts:?}");
    assert!(has("averted: would have failed at 01:41 UTC"), "{texts:?}");
    assert!(texts.iter().all(|t| !t.starts_with("failed ")), "no failure marker when averted: {texts:?}");
    assert!(has("memory (MiB)"), "half a GiB reads as MiB: {texts:?}");

    chart.holdout = true;
    chart.markers.clear();
    let svg = std::fs::read_to_string(draw(dir.path(), &chart).unwrap()).unwrap();
    assert!(texts_contain(&svg, "holdout: left unadjusted on purpose"));
    assert!(!texts_contain(&svg, "resize"));
}

fn texts_contain(svg: &str, s: &str) -> bool {
    texts(svg).iter().any(|t| t.contains(s))
}

#[test]
fn lines_break_where_the_instance_was_down_or_unscored() {
    let points = [(0, Some(1.0)), (10, Some(2.0)), (20, None), (30, Some(3.0)), (40, Some(4.0)), (100, Some(5.0))];
    assert_eq!(segments(points, 25), vec![vec![(0, 1.0), (10, 2.0)], vec![(30, 3.0), (40, 4.0)], vec![(100, 5.0)]]);
    // The synthetic instance was down for three minutes after its failure: two runs.
    let chart = leaking(2.0 * GIB);
    let panels = metric_panels(&chart);
    let used = panels.iter().flat_map(|p| &p.lines).find(|l| l.name == m::MEMORY_USED).unwrap();
    assert_eq!(used.segments.len(), 2);
    assert!((used.segments[0].last().unwrap().1 - 2.0).abs() < 1e-9, "bytes shown in GiB");
}

#[test]
fn a_chart_directory_that_cannot_be_one_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taken");
    std::fs::write(&file, b"x").unwrap();
    let e = draw(&file, &leaking(GIB)).unwrap_err();
    assert!(matches!(e, ChartError::NotADir { .. }), "{e:?}");
    assert!(e.to_string().contains(&file.display().to_string()), "{e}");
    let e = prepare(&file.join("sub")).unwrap_err();
    assert!(e.to_string().contains("taken/sub"), "{e}");

    let mut empty = leaking(GIB);
    empty.samples.clear();
    empty.scores.clear();
    assert!(matches!(draw(dir.path(), &empty), Err(ChartError::Empty { .. })));
}

/// A simulated instance that leaks memory until it fails, from a fleet of `seed`.
fn simulated_leak() -> (crate::simulate::GroundTruth, Vec<TelemetrySample>) {
    let config = FleetConfig {
        instances: 6,
        seed: 11,
        start_ms: START_MS,
        interval_ms: 10_000,
        duration_ms: 150 * MIN,
        failure_fraction: 0.5,
        kinds: vec![FailureKind::MemoryLeak],
    };
    let mut fleet = Fleet::new(config).unwrap();
    let mut all = Vec::new();
    while let Some(step) = fleet.tick() {
        all.extend(step);
    }
    let truth = fleet
        .ground_truth()
        .iter()
        .find(|g| g.failure_ms.is_some_and(|f| f - g.onset_ms > 15 * MIN && g.onset_ms - START_MS > 30 * MIN))
        .unwrap_or_else(|| panic!("no leak with 30 min before its onset and 15 after: {:?}", fleet.ground_truth()))
        .clone();
    let mine = all.into_iter().filter(|s| s.instance_id == truth.instance).collect();
    (truth, mine)
}

fn shipped_scoring(window: &WindowConfig) -> (ModelSet, Matcher) {
    let models = ModelSet::shipped(&shipped_dir(), window);
    assert!(models.get("web").is_some(), "no shipped web model under {}", shipped_dir().display());
    (models, starter_matcher(window).unwrap())
}

#[test]
fn scores_of_a_leaking_instance_rise_before_it_fails_and_equal_augur_score() {
    let (truth, samples) = simulated_leak();
    let failure = truth.failure_ms.unwrap();
    let window = WindowConfig::default();
    let (models, matcher) = shipped_scoring(&window);
    let points = score_series(&samples, &window, &models, &matcher).unwrap();
    assert_eq!(
        points.iter().map(|p| p.timestamp_ms).collect::<Vec<_>>(),
        samples.iter().map(|s| s.timestamp_ms).collect::<Vec<_>>()
    );

    // Quiet before the onset, high before the failure.
    let before_onset: Vec<f64> =
        points.iter().filter(|p| p.timestamp_ms < truth.onset_ms).filter_map(|p| p.anomaly_score).collect();
    assert!(before_onset.len() > 100, "{} scored windows before the onset", before_onset.len());
    let quiet = before_onset.iter().filter(|&&s| s <= 30.0).count() as f64 / before_onset.len() as f64;
    assert!(quiet > 0.9, "only {quiet} of the windows before the onset at most 30");
    let first_high =
        points.iter().find(|p| p.timestamp_ms > truth.onset_ms && p.anomaly_score.is_some_and(|s| s > 70.0));
    let first_high = first_high.unwrap_or_else(|| panic!("no score above 70 after the onset of {truth:?}"));
    assert!(
        first_high.timestamp_ms < failure,
        "first score above 70 at {}, failure at {failure}",
        first_high.timestamp_ms
    );
    let leak_match = points.iter().find(|p| {
        p.timestamp_ms < failure && p.signature_kind.as_deref() == Some("memory_leak") && p.confidence >= p.threshold
    });
    assert!(leak_match.is_some(), "the memory_leak signature never matched before the failure");

    // The same rows through `augur score`.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("instance.csv");
    let out = dir.path().join("scores.csv");
    let mut text = format!("timestamp,{}\n", window.features.join(","));
    for s in &samples {
        let cells: Vec<String> = window.features.iter().map(|f| features::value(s, f).to_string()).collect();
        text += &format!("{},{}\n", s.timestamp_ms, cells.join(","));
    }
    std::fs::write(&csv, text).unwrap();
    let args = ScoreArgs {
        model: artifact::latest_version(&shipped_dir(), "web").unwrap(),
        csv: Some(csv),
        out: Some(out.clone()),
        simulate: false,
        instances: 0,
        duration: std::time::Duration::ZERO,
        seed: 0,
        failure_fraction: 0.0,
        function: truth.function.clone(),
    };
    assert_eq!(truth.app_type, "web");
    score_csv(&args, &tokio_util::sync::CancellationToken::new()).unwrap();
    let written = std::fs::read_to_string(&out).unwrap();
    let rows: Vec<&str> = written.lines().skip(1).collect();
    assert_eq!(rows.len(), points.len());
    for (row, p) in rows.iter().zip(&points) {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[0], p.timestamp_ms.to_string());
        assert_eq!(cells[1], p.anomaly_score.map(|s| s.to_string()).unwrap_or_default(), "score at {row}");
        assert_eq!(cells[2], p.signature.clone().unwrap_or_default(), "signature at {row}");
        assert_eq!(cells[3], p.confidence.map(|c| format!("{c:.3}")).unwrap_or_default(), "confidence at {row}");
    }
    assert!(points.iter().filter(|p| p.anomaly_score.is_some()).count() > points.len() / 2);
}

#[test]
fn score_series_refuses_mixed_instances_and_an_app_type_without_a_model() {
    let window = WindowConfig::default();
    let (models, matcher) = shipped_scoring(&window);
    let mut a = sample(START_MS, GIB, 2.0 * GIB, 0.0);
    let mut b = a.clone();
    b.instance_id = "other".into();
    let e = score_series(&[a.clone(), b], &window, &models, &matcher).unwrap_err();
    assert!(e.to_string().contains("other"), "{e}");
    a.app_type = "mainframe".into();
    assert!(matches!(score_series(&[a], &window, &models, &matcher), Err(ChartError::NoModel(t)) if t == "mainframe"));
    assert!(score_series(&[], &window, &models, &matcher).unwrap().is_empty());
}

/// Draws a simulated leak as the demo will, for a person to look at:
/// `AUGUR_CHART_EXAMPLE=/path/to.svg cargo test --lib charts::tests::draws_a_simulated_leak`.
#[test]
fn draws_a_simulated_leak() {
    let (truth, samples) = simulated_leak();
    let window = WindowConfig::default();
    let (models, matcher) = shipped_scoring(&window);
    let scores = score_series(&samples, &window, &models, &matcher).unwrap();
    let alert = scores.iter().find(|p| p.anomaly_score.is_some_and(|s| s > 70.0)).unwrap().timestamp_ms;
    let chart = InstanceChart {
        instance: truth.instance.clone(),
        app_type: truth.app_type.clone(),
        function: truth.function.clone(),
        kind: truth.kind.name().to_owned(),
        samples,
        scores,
        markers: vec![Marker {
            timestamp_ms: alert,
            label: "resize cpu×1.25 mem×1.15".into(),
            outcome: "applied".into(),
        }],
        onset_ms: truth.onset_ms,
        failure_ms: truth.failure_ms,
        expected_failure_ms: truth.failure_ms,
        holdout: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = draw(dir.path(), &chart).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    xml_elements(&svg);
    assert!(texts_contain(&svg, &format!("failed {}", super::draw::clock(truth.failure_ms.unwrap(), false))));
    if let Some(to) = std::env::var_os("AUGUR_CHART_EXAMPLE") {
        std::fs::copy(&path, Path::new(&to)).unwrap();
    }
}
