//! The feedback loop closed in process: a simulated fleet's telemetry through the
//! detector's own partition processing, its alerts and evidence into the tracker, the
//! tracker's tuned values back into the detector's judge, minute by minute of event
//! time. Nothing is adjusted (every instance is held out), so every injected failure
//! happens and every alert on a healthy instance is a false alarm.

use std::sync::Arc;

use super::tracker::{FeedbackConfig, Tracker};
use super::tuned::threshold_key;
use super::Tuning;
use crate::codec::{AlertKind, Codec, FailureSignature, TelemetrySample, TunedValue};
use crate::detect::dtw::Dtw;
use crate::detect::partition::tests::{detector, starter};
use crate::detect::partition::{Input, Output, PartitionState};
use crate::kafka::table::Entry;
use crate::simulate::{FailureKind, Fleet, FleetConfig, GroundTruth};

const HOUR_MS: i64 = 3_600_000;

/// A run of the closed loop: the alerts, the ground truth and the tuned values.
struct Closed {
    alerts: Vec<crate::codec::Alert>,
    truth: Vec<GroundTruth>,
    tuned: Vec<TunedValue>,
    misses: u64,
    false_alarms: u64,
}

fn closed_loop(fleet: FleetConfig, signatures: Vec<FailureSignature>, config: FeedbackConfig) -> Closed {
    let own = signatures.iter().map(|s| (s.key(), s.threshold)).collect();
    let mut tracker = Tracker::new(config, own, Vec::new()).expect("a valid feedback config");
    let (shared, mut judge) = detector(&signatures, Tuning::default());
    let mut fleet = Fleet::new(fleet).expect("a valid fleet");
    let codec = Codec::<TelemetrySample>::new();
    let mut state = PartitionState::new(0, &shared);
    let mut dtw = Dtw::new(6);
    let (mut alerts, mut offset, mut misses, mut false_alarms) = (Vec::new(), 0, 0, 0);
    loop {
        // One minute of the fleet, then the detector's outputs into the tracker.
        let mut out = Vec::new();
        let mut now_ms = None;
        for _ in 0..6 {
            let Some(samples) = fleet.tick() else { break };
            for s in &samples {
                let payload = codec.encode(s).expect("encodes");
                let key = s.instance_id.as_bytes();
                let input =
                    Input { offset, key: Some(key), payload: Some(&payload), timestamp_ms: Some(s.timestamp_ms) };
                state.process(&shared, input, &mut out);
                offset += 1;
                now_ms = now_ms.max(Some(s.timestamp_ms));
            }
        }
        let Some(now_ms) = now_ms else { break };
        state.flush(&shared, &judge, &mut dtw, &mut out);
        for o in out {
            match o {
                Output::Evidence(e) => tracker.evidence(&e),
                Output::Alert(a) => {
                    tracker.alert(&a);
                    alerts.push(a);
                }
                Output::Adjustment(_) | Output::Dead(_) => {}
            }
        }
        let judged = tracker.advance(now_ms);
        (misses, false_alarms) = (misses + judged.misses, false_alarms + judged.false_alarms);
        if !judged.tuned.is_empty() {
            judge.tuning = Arc::new(Tuning::new(tracker.tuned().cloned()));
        }
    }
    let tuned = tracker.tuned().cloned().collect();
    Closed { alerts, truth: fleet.ground_truth().to_vec(), tuned, misses, false_alarms }
}

fn fleet(instances: usize, hours: i64, failure_fraction: f64, kinds: &[FailureKind]) -> FleetConfig {
    FleetConfig {
        instances,
        seed: 7,
        start_ms: 1_795_305_600_000,
        interval_ms: 10_000,
        duration_ms: hours * HOUR_MS,
        failure_fraction,
        kinds: kinds.to_vec(),
    }
}

fn with_threshold(key: &str, threshold: f64) -> Vec<FailureSignature> {
    let mut signatures = starter();
    let s = signatures.iter_mut().find(|s| s.key() == key).expect("a starter signature of that key");
    s.threshold = threshold;
    signatures
}

fn tuned<'a>(c: &'a Closed, key: &str) -> &'a TunedValue {
    let key = threshold_key(key);
    c.tuned.iter().find(|t| t.key == key).unwrap_or_else(|| panic!("{key} was never tuned: {:?}", c.tuned))
}

#[test]
fn a_threshold_set_too_high_comes_down_until_incidents_of_its_kind_are_caught() {
    const KEY: &str = "web/*/io_stall";
    let config = FeedbackConfig::default();
    let limits = config.threshold_limits;
    // The starter library's io_stall of web matches its incidents at 0.78–0.92: at
    // 0.95 it catches none of them.
    let c = closed_loop(fleet(24, 6, 1.0, &[FailureKind::IoStall]), with_threshold(KEY, 0.95), config);
    let t = tuned(&c, KEY);
    assert!(t.steps.iter().all(|s| (limits.0..=limits.1).contains(&s.value)), "outside its limits: {t:?}");
    assert!(t.latest() < 0.95, "the threshold did not come down: {t:?}");

    // Web incidents in the order they happened, and whether the signature caught them.
    let mut incidents: Vec<(i64, bool)> = c
        .truth
        .iter()
        .filter(|g| g.instance.starts_with("web-"))
        .filter_map(|g| g.failure_ms.map(|f| (g, f)))
        .map(|(g, f)| {
            let caught = c.alerts.iter().any(|a| {
                a.instance_id == g.instance
                    && a.kind == AlertKind::Signature
                    && a.signature.as_deref() == Some(KEY)
                    && (f - HOUR_MS / 2..=f).contains(&a.window_end_ms)
            });
            (f, caught)
        })
        .collect();
    incidents.sort_unstable();
    assert!(incidents.len() >= 4, "too few web incidents to see a trend: {incidents:?}");
    assert!(!incidents[0].1, "the first incident was caught at the mis-set threshold: {incidents:?}");
    let first_caught = incidents.iter().position(|i| i.1).expect("no incident was ever caught");
    // Once the threshold has come down, most incidents are caught: one whose match is
    // weaker than the others may still slip under it, and moves it a step further.
    let later = &incidents[first_caught..];
    let caught = later.iter().filter(|i| i.1).count();
    assert!(caught * 5 >= later.len() * 4, "caught {caught} of the {} after the first: {incidents:?}", later.len());
    let missed = incidents.iter().filter(|i| !i.1).count();
    assert!(t.steps.len() <= missed, "{} steps for {missed} missed incidents: {t:?}", t.steps.len());
    assert!(c.misses >= missed as u64, "{} misses counted for {missed} missed incidents", c.misses);
}

#[test]
fn a_threshold_set_too_low_goes_up_on_false_alarms_and_stops_at_its_ceiling() {
    const KEY: &str = "web/*/io_stall";
    // A healthy fleet: every alert is a false alarm. The limits are narrow so that the
    // run reaches the ceiling and must stay there.
    let config = FeedbackConfig { threshold_limits: (0.3, 0.45), ..FeedbackConfig::default() };
    let c = closed_loop(fleet(24, 6, 0.0, &[]), with_threshold(KEY, 0.3), config);
    assert!(c.false_alarms > 0, "no false alarm at a threshold of 0.3");
    let t = tuned(&c, KEY);
    let values: Vec<f64> = t.steps.iter().map(|s| s.value).collect();
    assert!(values.windows(2).all(|w| w[1] > w[0]), "false alarms only raise it: {values:?}");
    assert!(values.iter().all(|v| (0.3..=0.45).contains(v)), "past its limits: {values:?}");
    assert_eq!(t.latest(), 0.45, "it went up to its ceiling and stayed: {values:?}");
    // After the last step took effect, the signature alerts no more at under its value.
    let last = t.steps.last().expect("a step").from_ms;
    let late: Vec<f64> = c
        .alerts
        .iter()
        .filter(|a| a.signature.as_deref() == Some(KEY) && a.kind == AlertKind::Signature && a.window_end_ms >= last)
        .map(|a| a.confidence)
        .collect();
    assert!(late.iter().all(|&conf| conf >= 0.45), "alerts under the tuned threshold: {late:?}");
}
