//! The untouched fleet is the one the shipped artifacts were cut from: the starter
//! signatures (`models/signatures/`, by `scripts/build-signatures`) and the shipped
//! models learnt from simulated instances that no actuation changed, so the simulator
//! must keep producing exactly that telemetry whatever it does for changed instances.

use std::time::UNIX_EPOCH;

use super::*;
use crate::window::features;

/// Epoch ms of an RFC 3339 time in a signature's `source`.
fn epoch_ms(text: &str) -> i64 {
    let t = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Re-simulates the build script's fleet (its SEED, INSTANCES, DURATION, FAILURE_FRACTION
/// and START; the default 10 s interval and every kind) and finds every starter
/// signature's incident in it: the same instance fails of the same kind at the same
/// sample, and its telemetry over the cut window has the values the signature holds
/// (stored to six significant digits).
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
    assert_eq!(cuts.len(), 20, "4 app types × 5 failure kinds");

    let c = FleetConfig {
        instances: 200,
        seed: 2,
        start_ms: START_MS,
        interval_ms: 10_000,
        duration_ms: 6 * 60 * MIN,
        failure_fraction: 0.5,
        kinds: FailureKind::ALL.to_vec(),
    };
    let mut fleet = Fleet::new(c).unwrap();
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
        let truth = fleet.ground_truth().iter().find(|g| g.instance == *instance);
        let truth = truth.unwrap_or_else(|| panic!("{}: {instance} has no injected failure", sig.name));
        assert_eq!((truth.kind.name(), &*truth.app_type), (&*sig.failure_kind, &*sig.app_type), "{instance}");
        assert_eq!(
            truth.failure_ms,
            Some(*failing_ms),
            "{}/{}: {instance} fails at another time",
            sig.app_type,
            sig.name
        );
        let window = &windows[instance.as_str()];
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
}
