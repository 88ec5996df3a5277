//! How the resource model answers actuations: each failure kind is averted by the
//! changes its policy makes when they come in time, only relieved a while by too little, and not
//! undone by changes after it happened; a change to one instance leaves the others alone.

use super::*;

/// Runs `config`, applying each change to `instance` when the step at its time is next.
fn run_with_changes(config: FleetConfig, instance: &str, changes: &[(i64, Change)]) -> (Fleet, Vec<TelemetrySample>) {
    let mut fleet = Fleet::new(config).unwrap();
    let mut samples = Vec::new();
    while let Some(t) = fleet.next_timestamp_ms() {
        for (_, change) in changes.iter().filter(|(at, _)| *at == t) {
            fleet.apply(instance, *change).unwrap();
        }
        samples.extend(fleet.tick().unwrap());
    }
    (fleet, samples)
}

fn run_with_change(config: FleetConfig, instance: &str, at_ms: i64, change: Change) -> (Fleet, Vec<TelemetrySample>) {
    run_with_changes(config, instance, &[(at_ms, change)])
}

fn first_of(fleet: &Fleet, kind: FailureKind) -> GroundTruth {
    fleet.ground_truth().iter().find(|g| g.kind == kind).cloned().unwrap()
}

fn failure_of(fleet: &Fleet, instance: &str) -> Option<i64> {
    fleet.ground_truth().iter().find(|g| g.instance == instance).and_then(|g| g.failure_ms)
}

/// The resource model answers actuations the way a real instance would, and a change
/// to one instance leaves every other instance's samples untouched.
#[test]
fn actuations_avert_the_failures_they_address_and_nothing_else_changes() {
    let c = config(20, 2, 3 * 60 * MIN, 0.5);
    let (baseline, base_samples) = run_fleet(c.clone());

    let leak = first_of(&baseline, FailureKind::MemoryLeak);
    let (fleet, samples) = run_with_change(
        c.clone(),
        &leak.instance,
        leak.onset_ms,
        Change::Resize { cpu_factor: 1.0, memory_factor: 1.5 },
    );
    let after = first_of(&fleet, FailureKind::MemoryLeak).failure_ms;
    assert!(
        after.is_none_or(|t| t > leak.failure_ms.unwrap()),
        "more memory did not delay the OOM: {after:?} vs {leak:?}"
    );
    let others =
        |s: &[TelemetrySample], id: &str| s.iter().filter(|x| x.instance_id != id).cloned().collect::<Vec<_>>();
    assert_eq!(others(&samples, &leak.instance), others(&base_samples, &leak.instance));
    // Before the change the changed instance is the untouched one too.
    let before = |s: &[TelemetrySample]| {
        s.iter()
            .filter(|x| x.instance_id == leak.instance && x.timestamp_ms < leak.onset_ms)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(before(&samples), before(&base_samples));

    let surge = first_of(&baseline, FailureKind::CpuSaturation);
    let (fleet, _) =
        run_with_change(c.clone(), &surge.instance, surge.onset_ms, Change::ScaleOut { replicas_delta: 3 });
    assert_eq!(first_of(&fleet, FailureKind::CpuSaturation).failure_ms, None, "scale-out did not avert {surge:?}");

    let stall = first_of(&baseline, FailureKind::IoStall);
    let (fleet, _) = run_with_change(c, &stall.instance, stall.onset_ms, Change::Migrate { fraction: 0.6 });
    let after = first_of(&fleet, FailureKind::IoStall).failure_ms;
    assert!(after.is_none_or(|t| t > stall.failure_ms.unwrap()), "migration did not relieve {stall:?}: {after:?}");
}

/// Changes the shipped policies make for latency creep and error bursts
/// (`policies/*.toml`: their rules, with the anomaly tiers' CPU), each of which lowers
/// the load per core to a half or less and is enough when made in time.
fn remedies() -> [(&'static str, Vec<Change>); 3] {
    let cpu = |f| Change::Resize { cpu_factor: f, memory_factor: 1.0 };
    [
        ("two replicas more", vec![Change::ScaleOut { replicas_delta: 2 }]),
        ("twice the CPU", vec![cpu(2.0)]),
        ("a fifth shed and half more CPU", vec![Change::Shed { fraction: 0.2 }, cpu(1.5)]),
    ]
}

/// Latency creep (contention downstream, growing with the load per core) and error
/// bursts (capacity lost to a fault, the excess failing) on every instance they are
/// injected into over a few fleets: untouched, the instance fails by its expected time;
/// halfway through the development the policies' changes avert it for the rest of the
/// run, which lasts past the time the cause stops growing; a tenth shed relieves it but
/// not enough;
/// a change after the failure leaves it as it was.
#[test]
fn latency_creep_and_error_bursts_yield_to_the_changes_their_policies_make_in_time() {
    let mut checked = BTreeMap::new();
    for seed in [2, 5] {
        let c = config(20, seed, 3 * 60 * MIN, 0.5);
        let end = c.start_ms + c.duration_ms;
        let (untouched, untouched_samples) = run_fleet(c.clone());
        let incidents = untouched.ground_truth().iter().filter(|g| {
            matches!(g.kind, FailureKind::LatencyCreep | FailureKind::ErrorBurst) && g.expected_failure_ms < end
        });
        for g in incidents {
            let failed = g.failure_ms.unwrap_or_else(|| panic!("seed {seed}: untouched {g:?} did not fail"));
            assert!(g.onset_ms < failed && failed <= g.expected_failure_ms, "seed {seed}: {g:?}");
            let midway = g.onset_ms + (failed - g.onset_ms) / 2 / 10_000 * 10_000;
            for (what, changes) in remedies() {
                let at: Vec<_> = changes.iter().map(|&ch| (midway, ch)).collect();
                let (fleet, _) = run_with_changes(c.clone(), &g.instance, &at);
                assert_eq!(
                    failure_of(&fleet, &g.instance),
                    None,
                    "seed {seed}: {what} at {midway} did not avert {g:?}"
                );
            }
            // A tenth shed relieves, but the cause outgrows it.
            let (fleet, samples) = run_with_change(c.clone(), &g.instance, midway, Change::Shed { fraction: 0.1 });
            let delayed = failure_of(&fleet, &g.instance);
            assert!(delayed.is_some_and(|t| t >= failed), "seed {seed}: a tenth shed gave {delayed:?} for {g:?}");
            let symptom = if g.kind == FailureKind::LatencyCreep { m::LATENCY_P99 } else { m::ERROR_RATE };
            let at_failure = |s: &[TelemetrySample]| {
                let sample = s.iter().find(|s| s.instance_id == g.instance && s.timestamp_ms == failed);
                get(sample.expect("a sample at the untouched failure"), symptom)
            };
            assert!(at_failure(&samples) < at_failure(&untouched_samples), "seed {seed}: {symptom} not relieved");
            let late = failed + 10_000;
            let (fleet, _) = run_with_change(c.clone(), &g.instance, late, Change::ScaleOut { replicas_delta: 2 });
            assert_eq!(failure_of(&fleet, &g.instance), Some(failed), "seed {seed}: a change after {g:?}");
            *checked.entry(g.kind).or_insert(0) += 1;
        }
    }
    assert_eq!(checked.len(), 2, "both kinds checked: {checked:?}");
    assert!(checked.values().all(|&n| n >= 2), "{checked:?}");
}
