//! The untouched fleet is the one the shipped artifacts were cut from: the starter
//! signatures (`models/signatures/`, by `scripts/build-signatures`) and the shipped
//! models learnt from simulated instances that no actuation changed, so the simulator
//! must keep producing exactly that telemetry whatever it does for changed instances.

use std::collections::BTreeSet;
use std::time::UNIX_EPOCH;

use super::*;
use crate::codec::FailureSignature;
use crate::window::features;

/// Epoch ms of an RFC 3339 time in a signature's `source`.
fn epoch_ms(text: &str) -> i64 {
    let t = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The build script's fleets (its SEED, DURATION, FAILURE_FRACTION, the default 10 s
/// interval): the main one (INSTANCES from START, every kind) and the surge fleet
/// (SURGE_INSTANCES from SURGE_START, CPU saturation only), told apart by their start.
fn build_fleets() -> [FleetConfig; 2] {
    let main = FleetConfig {
        instances: 200,
        seed: 2,
        start_ms: START_MS,
        interval_ms: 10_000,
        duration_ms: 6 * 60 * MIN,
        failure_fraction: 0.5,
        kinds: FailureKind::ALL.to_vec(),
    };
    let surge = FleetConfig {
        instances: 300,
        start_ms: START_MS + 24 * 60 * MIN,
        kinds: vec![FailureKind::CpuSaturation],
        ..main.clone()
    };
    [main, surge]
}

/// Re-simulates the build script's fleets and finds every starter signature's incident
/// in the one whose run holds its window: the same instance fails of the same kind at
/// the same sample, and its telemetry over the cut window has the values the signature
/// holds (stored to six significant digits).
#[test]
fn every_starter_signature_is_cut_from_an_incident_the_simulator_still_produces() {
    let library = crate::signatures::starter::library().unwrap();
    // "<instance> failing at <time>, window <from>..<to> (lead …); threshold …"
    let cuts: Vec<_> = library
        .iter()
        .map(|l| {
            let sig = &l.signature;
            let parse = || {
                let (instance, rest) = sig.source.split_once(" failing at ")?;
                let (failing, rest) = rest.split_once(", window ")?;
                let (from, rest) = rest.split_once("..")?;
                let to = rest.split_once(' ')?.0;
                Some((instance.to_owned(), epoch_ms(failing), epoch_ms(from), epoch_ms(to)))
            };
            (sig, parse().unwrap_or_else(|| panic!("{}: unexpected source {:?}", sig.name, sig.source)))
        })
        .collect();
    let kinds: BTreeSet<(&str, &str)> = cuts.iter().map(|(s, _)| (&*s.app_type, &*s.failure_kind)).collect();
    assert_eq!(kinds.len(), 20, "4 app types × 5 failure kinds");

    let mut checked = 0;
    for config in build_fleets() {
        let run = config.start_ms..config.start_ms + config.duration_ms;
        let cuts: Vec<_> = cuts.iter().filter(|(_, (_, _, from, _))| run.contains(from)).collect();
        let mut fleet = Fleet::new(config).unwrap();
        let mut windows: BTreeMap<&str, Vec<TelemetrySample>> = BTreeMap::new();
        while let Some(step) = fleet.tick() {
            for s in step {
                let cut = cuts
                    .iter()
                    .find(|(_, (id, _, from, to))| *id == s.instance_id && (*from..*to).contains(&s.timestamp_ms));
                if let Some((_, (id, ..))) = cut {
                    windows.entry(id).or_default().push(s);
                }
            }
        }
        for (sig, (instance, failing_ms, ..)) in &cuts {
            check_cut(sig, instance, *failing_ms, &fleet, &windows);
            checked += 1;
        }
    }
    assert_eq!(checked, cuts.len(), "a signature's window lies in neither of the build script's runs");
}

/// One signature against the incident it names in the re-simulated `fleet`.
fn check_cut(
    sig: &FailureSignature,
    instance: &str,
    failing_ms: i64,
    fleet: &Fleet,
    windows: &BTreeMap<&str, Vec<TelemetrySample>>,
) {
    let truth = fleet.ground_truth().iter().find(|g| g.instance == *instance);
    let truth = truth.unwrap_or_else(|| panic!("{}: {instance} has no injected failure", sig.name));
    assert_eq!((truth.kind.name(), &*truth.app_type), (&*sig.failure_kind, &*sig.app_type), "{instance}");
    assert_eq!(truth.failure_ms, Some(failing_ms), "{}/{}: {instance} fails at another time", sig.app_type, sig.name);
    let window = &windows[instance];
    assert_eq!(window.len(), sig.series[0].len(), "{instance}: samples in the window");
    for (metric, series) in sig.metrics.iter().zip(&sig.series) {
        for (s, &want) in window.iter().zip(series) {
            let got = features::value(s, metric);
            assert!(
                (got - want).abs() <= 1e-5 * want.abs() + 1e-12,
                "{}/{}: {instance} {metric} at {} is {got}, the signature holds {want}",
                sig.app_type,
                sig.name,
                s.timestamp_ms
            );
        }
    }
}
