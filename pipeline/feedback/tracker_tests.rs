use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::codec::Action;

const MIN: i64 = 60_000;
const SIG: &str = "web/*/memory_leak";

fn evidence(
    instance: &str,
    t: i64,
    score: Option<f64>,
    tier: i32,
    sig: Option<&str>,
    confidence: f64,
    threshold: f64,
) -> WindowEvidence {
    WindowEvidence {
        instance_id: instance.into(),
        app_type: "web".into(),
        function: "checkout".into(),
        window_end_ms: t,
        anomaly_score: score,
        tier,
        model_version: None,
        signature: sig.map(str::to_string),
        confidence,
        threshold,
    }
}

fn alert(
    id: &str,
    instance: &str,
    kind: AlertKind,
    t: i64,
    sig: Option<&str>,
    confidence: f64,
    score: Option<f64>,
) -> Alert {
    Alert {
        id: id.into(),
        instance_id: instance.into(),
        app_type: "web".into(),
        function: "checkout".into(),
        kind,
        window_start_ms: t - 5 * MIN,
        window_end_ms: t,
        signature: sig.map(str::to_string),
        confidence,
        runner_up: None,
        runner_up_confidence: 0.0,
        explanation: Vec::new(),
        anomaly_score: score,
        model_version: None,
        source_partition: 0,
        source_offset: 0,
    }
}

fn offline(instance: &str, t: i64) -> Alert {
    alert(&format!("{instance}/offline/{t}"), instance, AlertKind::Offline, t, None, 0.0, None)
}

fn adjustment(id: &str, alert_id: &str, instance: &str, t: i64, tier: i32) -> Adjustment {
    Adjustment {
        id: id.into(),
        alert_id: alert_id.into(),
        instance_id: instance.into(),
        app_type: "web".into(),
        function: "checkout".into(),
        action: Action::Resize,
        cpu_factor: 1.25,
        memory_factor: 1.15,
        replicas_delta: 0,
        shed_fraction: 0.0,
        tier,
        reason: "test".into(),
        dry_run: false,
        event_time_ms: t,
    }
}

fn audit(adjustment: &Adjustment, result: ActuationResult) -> Actuation {
    Actuation {
        adjustment_id: adjustment.id.clone(),
        instance_id: adjustment.instance_id.clone(),
        app_type: adjustment.app_type.clone(),
        function: adjustment.function.clone(),
        action: adjustment.action.symbol().into(),
        backend: "simulator".into(),
        result,
        detail: String::new(),
        cpu_millis: None,
        memory_bytes: None,
        replicas: None,
        attempts: 1,
        event_time_ms: adjustment.event_time_ms,
        applied_at_ms: 0,
    }
}

fn tracker(config: FeedbackConfig, own: f64) -> Tracker {
    Tracker::new(config, BTreeMap::from([(SIG.to_string(), own)]), []).expect("valid config")
}

fn threshold(t: &Tracker) -> Option<f64> {
    t.tuned().find(|v| v.key == threshold_key(SIG)).map(TunedValue::latest)
}

fn shift(t: &Tracker) -> f64 {
    t.tuned().find(|v| v.key == shift_key("web")).map_or(0.0, TunedValue::latest)
}

/// An incident at `at`: near-miss evidence a minute before, then the instance goes
/// offline; with `foreseen` the detector alerted on it first.
fn incident(t: &mut Tracker, n: usize, at: i64, confidence: f64, foreseen: bool) -> Judged {
    let instance = format!("web-checkout-{n:04}");
    let thr = threshold(t).unwrap_or(0.85);
    t.evidence(&evidence(&instance, at - MIN, Some(10.0), 0, Some(SIG), confidence, thr));
    if foreseen {
        t.alert(&alert(&format!("a{n}"), &instance, AlertKind::Signature, at - MIN, Some(SIG), confidence, None));
    }
    t.alert(&offline(&instance, at));
    t.advance(at)
}

#[test]
fn a_threshold_too_high_steps_down_once_per_missed_incident_until_the_floor() {
    let config = FeedbackConfig { near_miss: 0.5, ..FeedbackConfig::default() };
    let mut t = tracker(config, 0.85);
    let mut seen = vec![];
    for n in 0..14 {
        let judged = incident(&mut t, n, (n as i64 + 1) * 20 * MIN, 0.38, false);
        assert_eq!(judged.misses, 1, "incident {n} was not foreseen");
        seen.push(threshold(&t).expect("tuned"));
        if n < 9 {
            assert_eq!(judged.tuned.len(), 1, "incident {n} moves the threshold");
            let step = judged.tuned[0].steps.last().expect("a step");
            assert_eq!(step.from_ms, (n as i64 + 1) * 20 * MIN + 5 * MIN, "takes effect delay_ms after");
            assert!(step.reason.contains("missed failure of web-checkout-"), "{}", step.reason);
        } else {
            assert!(judged.tuned.is_empty(), "at the floor nothing moves");
        }
    }
    let expected = [0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4];
    assert_eq!(seen, expected);
    let value = t.tuned().next().expect("one key");
    assert_eq!((value.default_value, value.floor, value.ceiling), (0.85, 0.4, 0.95));
}

#[test]
fn a_key_moves_at_most_once_per_min_interval() {
    let mut t = tracker(FeedbackConfig::default(), 0.85);
    assert_eq!(incident(&mut t, 0, 20 * MIN, 0.62, false).tuned.len(), 1);
    // Five minutes later: a miss, but the threshold just moved.
    let judged = incident(&mut t, 1, 25 * MIN, 0.62, false);
    assert_eq!((judged.misses, judged.tuned.len()), (1, 0));
    assert_eq!(threshold(&t), Some(0.8));
    // Ten minutes after the move: it moves again.
    assert_eq!(incident(&mut t, 2, 30 * MIN, 0.62, false).tuned.len(), 1);
    assert_eq!(threshold(&t), Some(0.75));
}

#[test]
fn steps_stop_once_the_incident_clears_the_threshold_or_was_far_off() {
    let mut t = tracker(FeedbackConfig::default(), 0.85);
    // Far under the threshold (more than near_miss): another failure, not this signature's.
    let judged = incident(&mut t, 0, 20 * MIN, 0.3, false);
    assert_eq!((judged.misses, judged.tuned.len()), (1, 0));
    for n in 1..20 {
        let thr = threshold(&t).unwrap_or(0.85);
        // The detector alerts once the confidence reaches the threshold in force.
        let foreseen = 0.62 >= thr;
        let judged = incident(&mut t, n, (n as i64 + 1) * 20 * MIN, 0.62, foreseen);
        assert_eq!(judged.misses, u64::from(!foreseen));
    }
    assert_eq!(threshold(&t), Some(0.6));
    assert_eq!(t.tuned().next().expect("tuned").steps.len(), 5);
}

/// A signature alert on `instance` at `at`, judged one horizon later.
fn signature_alert(t: &mut Tracker, id: &str, instance: &str, at: i64) {
    t.alert(&alert(id, instance, AlertKind::Signature, at, Some(SIG), 0.55, None));
}

#[test]
fn a_threshold_too_low_rises_on_false_alarms_until_the_ceiling() {
    let mut t = tracker(FeedbackConfig::default(), 0.5);
    let mut seen = vec![];
    for n in 0..12_i64 {
        let at = n * 15 * MIN;
        signature_alert(&mut t, &format!("a{n}"), &format!("web-{n}"), at);
        let judged = t.advance(at + 30 * MIN);
        assert_eq!(judged.false_alarms, 1, "alert {n}");
        seen.push(threshold(&t).expect("tuned"));
    }
    assert_eq!(seen, [0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.95, 0.95, 0.95]);
    let reason = &t.tuned().next().expect("tuned").steps[0].reason;
    assert!(reason.starts_with("false alarm on web-0 at 0 ms"), "{reason}");
}

#[test]
fn alerts_followed_by_a_failure_or_an_applied_adjustment_are_not_false() {
    let mut t = tracker(FeedbackConfig::default(), 0.5);
    signature_alert(&mut t, "failed", "web-1", 0);
    t.alert(&offline("web-1", 20 * MIN));
    signature_alert(&mut t, "adjusted", "web-2", 0);
    let applied = adjustment("adj-2", "adjusted", "web-2", 0, 2);
    t.actuation(&applied, &audit(&applied, ActuationResult::Applied));
    let judged = t.advance(30 * MIN);
    assert_eq!((judged.false_alarms, judged.tuned.len()), (0, 0));
    assert_eq!(threshold(&t), None);
    // A refusal changes nothing on the instance: the alert is judged like a holdout's.
    signature_alert(&mut t, "refused", "web-3", 40 * MIN);
    let refused = adjustment("adj-3", "refused", "web-3", 40 * MIN, 2);
    t.actuation(&refused, &audit(&refused, ActuationResult::Refused));
    let judged = t.advance(70 * MIN);
    assert_eq!(judged.false_alarms, 1);
    assert_eq!(threshold(&t), Some(0.55));
}

#[test]
fn the_tier_shift_moves_down_on_close_misses_and_up_on_anomaly_false_alarms() {
    let mut t = tracker(FeedbackConfig::default(), 0.85);
    // A score far under the boundary (71 - 40 = 31): the model saw nothing.
    t.evidence(&evidence("web-0", 9 * MIN, Some(20.0), 0, None, 0.0, 0.0));
    t.alert(&offline("web-0", 10 * MIN));
    assert_eq!(t.advance(10 * MIN).model_misses, 1);
    assert_eq!(shift(&t), 0.0);
    let mut seen = vec![];
    for n in 1..7_i64 {
        let at = n * 20 * MIN;
        t.evidence(&evidence(&format!("web-{n}"), at - MIN, Some(50.0), 1, None, 0.0, 0.0));
        t.alert(&offline(&format!("web-{n}"), at));
        let judged = t.advance(at);
        // No signature alert either: both sources missed it.
        assert_eq!((judged.misses, judged.model_misses), (1, 1));
        seen.push(shift(&t));
    }
    assert_eq!(seen, [-5.0, -10.0, -15.0, -20.0, -20.0, -20.0]);
    let mut seen = vec![];
    for n in 10..18_i64 {
        let at = n * 20 * MIN;
        t.alert(&alert(&format!("an{n}"), &format!("web-{n}"), AlertKind::Anomaly, at, None, 0.0, Some(75.0)));
        assert_eq!(t.advance(at + 30 * MIN).false_alarms, 1);
        seen.push(shift(&t));
    }
    assert_eq!(seen, [-15.0, -10.0, -5.0, 0.0, 5.0, 8.0, 8.0, 8.0]);
}

#[test]
fn each_applied_adjustment_gets_one_outcome_by_what_followed() {
    let mut t = tracker(FeedbackConfig::default(), 0.85);
    let at = 60 * MIN;
    // (instance, score before, score after, offline within the horizon)
    let cases = [
        ("helped", 80.0, 60.0, false),
        ("worsened", 50.0, 70.0, false),
        ("failed", 80.0, 60.0, true),
        ("same", 50.0, 52.0, false),
    ];
    for (name, before, after, fails) in cases {
        t.evidence(&evidence(name, at - MIN, Some(before), 2, None, 0.2, 0.85));
        t.evidence(&evidence(name, at + 20 * MIN, Some(after), 1, None, 0.2, 0.85));
        if fails {
            t.alert(&offline(name, at + 25 * MIN));
        }
        t.alert(&alert(&format!("alert-{name}"), name, AlertKind::Anomaly, at, None, 0.0, Some(before)));
        let adj = adjustment(&format!("adj-{name}"), &format!("alert-{name}"), name, at, 2);
        t.actuation(&adj, &audit(&adj, ActuationResult::Applied));
        t.actuation(&adj, &audit(&adj, ActuationResult::Applied));
    }
    // A signature alert whose match faded: the later evidence names another signature.
    t.evidence(&evidence("faded", at - MIN, Some(40.0), 1, Some(SIG), 0.9, 0.85));
    t.evidence(&evidence("faded", at + 20 * MIN, Some(40.0), 1, Some("web/*/cpu"), 0.7, 0.85));
    t.alert(&alert("alert-faded", "faded", AlertKind::Signature, at, Some(SIG), 0.9, None));
    let adj = adjustment("adj-faded", "alert-faded", "faded", at, 3);
    t.actuation(&adj, &audit(&adj, ActuationResult::Applied));
    for (n, result) in [ActuationResult::Refused, ActuationResult::DryRun].into_iter().enumerate() {
        let adj = adjustment(&format!("adj-not-{n}"), "alert-same", "same", at, 2);
        t.actuation(&adj, &audit(&adj, result));
    }
    assert!(t.advance(at + 30 * MIN - 1).outcomes.is_empty(), "judged only at the horizon's end");
    let outcomes = t.advance(at + 30 * MIN).outcomes;
    let verdicts: Vec<_> = outcomes.iter().map(|o| (o.adjustment_id.as_str(), o.verdict)).collect();
    assert_eq!(
        verdicts,
        [
            ("adj-faded", Verdict::Helped),
            ("adj-failed", Verdict::FailedAnyway),
            ("adj-helped", Verdict::Helped),
            ("adj-same", Verdict::NoEffect),
            ("adj-worsened", Verdict::Worsened),
        ]
    );
    let faded = &outcomes[0];
    assert_eq!((faded.confidence_before, faded.confidence_after, faded.signature.as_deref()), (0.9, 0.0, Some(SIG)));
    assert!(outcomes[1].failed && outcomes.iter().all(|o| o.event_time_ms == at + 30 * MIN && o.action == "RESIZE"));
    // Given again after its judgement: still one outcome.
    let adj = adjustment("adj-helped", "alert-helped", "helped", at, 2);
    t.actuation(&adj, &audit(&adj, ActuationResult::Applied));
    assert!(t.advance(at + 90 * MIN).outcomes.is_empty());
    let tally = |strategy: &str| t.tallies()[&("web".to_string(), strategy.to_string(), "RESIZE".to_string())];
    assert_eq!(tally("tier-2"), Tally { helped: 1, no_effect: 1, worsened: 1, failed_anyway: 1 });
    assert_eq!(tally(SIG), Tally { helped: 1, ..Tally::default() });
}

/// Inputs of a small fleet over four hours, each with its event time.
enum Input {
    Evidence(WindowEvidence),
    Alert(Alert),
    Actuation(Adjustment, Actuation),
}

fn scenario() -> Vec<(i64, Input)> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut inputs = vec![];
    for i in 0..6 {
        let instance = format!("web-{i}");
        for w in 0..48_i64 {
            let at = w * 5 * MIN;
            let score = rng.random_range(0.0..100.0_f64).round();
            let confidence = (rng.random_range(0.3..1.0_f64) * 100.0).round() / 100.0;
            let tier = if score >= 71.0 { 2 } else { 1 };
            inputs.push((at, Input::Evidence(evidence(&instance, at, Some(score), tier, Some(SIG), confidence, 0.85))));
            let roll = rng.random_range(0..10);
            if confidence >= 0.85 || roll == 0 {
                let (kind, sig) =
                    if roll == 0 { (AlertKind::Anomaly, None) } else { (AlertKind::Signature, Some(SIG)) };
                let id = format!("{instance}/{w}");
                inputs.push((at, Input::Alert(alert(&id, &instance, kind, at, sig, confidence, Some(score)))));
                let adj = adjustment(&format!("adj/{id}"), &id, &instance, at, tier);
                let result = if rng.random_bool(0.5) { ActuationResult::Applied } else { ActuationResult::DryRun };
                inputs.push((at, Input::Actuation(adj.clone(), audit(&adj, result))));
            } else if roll == 1 {
                inputs.push((at, Input::Alert(offline(&instance, at))));
            }
        }
    }
    inputs
}

fn run(batches: Vec<Vec<&(i64, Input)>>, nows: &[i64]) -> Vec<Judged> {
    let mut t = tracker(FeedbackConfig::default(), 0.85);
    let mut out = vec![];
    for (batch, &now) in batches.into_iter().zip(nows) {
        for (_, input) in batch {
            match input {
                Input::Evidence(e) => t.evidence(e),
                Input::Alert(a) => t.alert(a),
                Input::Actuation(adj, act) => t.actuation(adj, act),
            }
        }
        out.push(t.advance(now));
    }
    out
}

#[test]
fn the_same_inputs_in_any_order_give_the_same_judgements() {
    let inputs = scenario();
    let nows: Vec<i64> = (1..=30).map(|k| k * 10 * MIN).collect();
    let due = |at: i64| nows.iter().position(|&now| at <= now).expect("within the run");
    let mut in_order = vec![vec![]; nows.len()];
    let mut shuffled = vec![vec![]; nows.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for input in &inputs {
        in_order[due(input.0)].push(input);
        // Any batch up to the one its event time requires.
        shuffled[rng.random_range(0..=due(input.0))].push(input);
    }
    for batch in &mut shuffled {
        batch.shuffle(&mut rng);
    }
    let a = run(in_order, &nows);
    let b = run(shuffled, &nows);
    assert!(a.iter().map(|j| j.outcomes.len()).sum::<usize>() > 5, "the scenario judges adjustments");
    assert!(a.iter().any(|j| !j.tuned.is_empty()), "the scenario tunes something");
    assert!(a.iter().map(|j| j.misses + j.model_misses + j.false_alarms).sum::<u64>() > 3);
    assert_eq!(a, b);
}

#[test]
fn memory_holds_two_horizons_of_inputs() {
    let mut t = tracker(FeedbackConfig::default(), 0.85);
    let mut most = 0;
    for w in 0..2_000_i64 {
        let at = w * MIN;
        t.evidence(&evidence("web-0", at, Some(10.0), 0, None, 0.1, 0.85));
        signature_alert(&mut t, &format!("a{w}"), "web-0", at);
        t.advance(at);
        most = most.max(t.held());
    }
    // Per minute one evidence, one alert and its pending judgement, for 60 minutes.
    assert!(most <= 4 * 62, "held {most}");
}

#[test]
fn a_restarted_tracker_continues_from_the_published_values() {
    let mut first = tracker(FeedbackConfig::default(), 0.85);
    for n in 0..3 {
        incident(&mut first, n, (n as i64 + 1) * 20 * MIN, 0.62, false);
    }
    assert_eq!(threshold(&first), Some(0.7));
    let published: Vec<TunedValue> = first.tuned().cloned().collect();
    let mut second = Tracker::new(FeedbackConfig::default(), BTreeMap::from([(SIG.to_string(), 0.85)]), published)
        .expect("valid values");
    assert_eq!(threshold(&second), Some(0.7));
    // Within min_interval of the last move before the restart: no step.
    assert!(incident(&mut second, 3, 65 * MIN, 0.62, false).tuned.is_empty());
    let judged = incident(&mut second, 4, 80 * MIN, 0.62, false);
    assert_eq!(judged.tuned[0].steps.iter().map(|s| s.value).collect::<Vec<_>>(), [0.8, 0.75, 0.7, 0.65]);
}

#[test]
fn bad_configs_and_values_are_refused_naming_what_is_wrong() {
    let cases: [(&str, FeedbackConfig); 6] = [
        ("horizon_ms", FeedbackConfig { horizon_ms: 0, ..FeedbackConfig::default() }),
        ("delay_ms", FeedbackConfig { delay_ms: -1, ..FeedbackConfig::default() }),
        ("threshold_step", FeedbackConfig { threshold_step: f64::NAN, ..FeedbackConfig::default() }),
        ("threshold_limits", FeedbackConfig { threshold_limits: (0.9, 0.4), ..FeedbackConfig::default() }),
        ("shift_step", FeedbackConfig { shift_step: 0.0, ..FeedbackConfig::default() }),
        ("shift_limits", FeedbackConfig { shift_limits: (-20.0, f64::INFINITY), ..FeedbackConfig::default() }),
    ];
    for (field, config) in cases {
        let error = Tracker::new(config, BTreeMap::new(), []).expect_err(field);
        assert!(matches!(error, FeedbackError::Config { field: f, .. } if f == field), "{error}");
        assert!(error.to_string().contains(field), "{error}");
    }
    let error = Tracker::new(FeedbackConfig::default(), BTreeMap::from([(SIG.to_string(), 1.5)]), []).expect_err("1.5");
    assert!(error.to_string().contains(SIG), "{error}");
    let bad = TunedValue {
        key: "limit/web".into(),
        app_type: "web".into(),
        default_value: 0.0,
        floor: 0.0,
        ceiling: 1.0,
        steps: vec![],
    };
    let error = Tracker::new(FeedbackConfig::default(), BTreeMap::new(), [bad]).expect_err("bad key");
    assert!(error.to_string().contains("limit/web"), "{error}");
}

/// An applied tier-2 RESIZE on `instance` at `at` after which the instance fails (or,
/// with `fails` false, its score falls from 80 to 40): one outcome at `at + 30 min`.
fn resized(t: &mut Tracker, instance: &str, at: i64, fails: bool) -> Judged {
    t.evidence(&evidence(instance, at, Some(80.0), 2, None, 0.2, 0.85));
    t.evidence(&evidence(instance, at + 20 * MIN, Some(if fails { 80.0 } else { 40.0 }), 1, None, 0.2, 0.85));
    if fails {
        t.alert(&offline(instance, at + 25 * MIN));
    }
    let alert_id = format!("alert-{instance}-{at}");
    t.alert(&alert(&alert_id, instance, AlertKind::Anomaly, at, None, 0.0, Some(80.0)));
    let adj = adjustment(&format!("adj-{instance}-{at}"), &alert_id, instance, at, 2);
    t.actuation(&adj, &audit(&adj, ActuationResult::Applied));
    t.advance(at + 30 * MIN)
}

fn weight(t: &Tracker) -> Option<f64> {
    let key = weight_key("web", "tier-2", "RESIZE");
    t.tuned().find(|v| v.key == key).map(TunedValue::latest)
}

#[test]
fn a_strategy_after_which_instances_fail_anyway_loses_weight_and_one_that_helps_regains_it() {
    let mut t = tracker(FeedbackConfig::default(), 0.85);
    let mut seen = vec![];
    // Failures after every resize: three decisive outcomes move the weight one step,
    // down to the floor of 0 and no further.
    for n in 0..15_i64 {
        resized(&mut t, &format!("web-{n}"), n * 20 * MIN, true);
        seen.push(weight(&t));
    }
    let steps: Vec<f64> = seen.iter().flatten().copied().collect::<Vec<_>>();
    assert_eq!(seen[..2], [None, None], "two outcomes are not enough: {seen:?}");
    assert_eq!(seen[2], Some(0.75), "{seen:?}");
    assert!(steps.windows(2).all(|w| w[1] <= w[0]) && steps.iter().all(|&w| w >= 0.0), "{seen:?}");
    assert_eq!(weight(&t), Some(0.0), "{seen:?}");
    // Resizes that help bring it back up, never past 1.
    for n in 15..40_i64 {
        resized(&mut t, &format!("web-{n}"), n * 20 * MIN, false);
    }
    assert_eq!(weight(&t), Some(1.0));
    let value = t.tuned().find(|v| v.key == weight_key("web", "tier-2", "RESIZE")).expect("tuned");
    assert!(value.steps.iter().all(|s| (0.0..=1.0).contains(&s.value)));
    assert!(value.steps.last().is_some_and(|s| s.reason.contains("helped")), "{value:?}");
}

#[test]
fn a_strategy_turned_off_is_tried_again_after_the_retry_time_also_after_a_restart() {
    let config = FeedbackConfig::default();
    let retry = config.weight_retry_ms;
    let mut t = tracker(config.clone(), 0.85);
    let mut n = 0_i64;
    while weight(&t) != Some(0.0) {
        resized(&mut t, &format!("web-{n}"), n * 20 * MIN, true);
        n += 1;
        assert!(n < 30, "the weight never reached 0");
    }
    let off_at = t
        .tuned()
        .find(|v| v.key == weight_key("web", "tier-2", "RESIZE"))
        .expect("tuned")
        .steps
        .last()
        .unwrap()
        .from_ms
        - config.delay_ms;
    // Nothing acts while it is off; its retry comes at the retry time, not before.
    assert!(t.advance(off_at + retry - 1).tuned.is_empty());
    let judged = t.advance(off_at + retry);
    assert_eq!(judged.tuned.len(), 1, "{judged:?}");
    assert_eq!(weight(&t), Some(0.25));
    assert!(judged.tuned[0].steps.last().unwrap().reason.contains("tried again"));

    // A tracker restarted from values that left the strategy off retries it too.
    let published: Vec<TunedValue> = t.tuned().cloned().collect();
    let mut off = published.clone();
    off[0].steps.pop();
    let mut restarted =
        Tracker::new(config, [(SIG.to_owned(), 0.85)].into(), off).expect("the published values are valid");
    assert_eq!(weight(&restarted), Some(0.0));
    assert_eq!(restarted.advance(off_at + retry).tuned.len(), 1);
    assert_eq!(weight(&restarted), Some(0.25));
}
