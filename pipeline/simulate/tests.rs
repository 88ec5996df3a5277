use std::collections::BTreeMap;

use clap::Parser;

use super::*;
use crate::codec::metric_names as m;

mod actuation;
mod starter;

/// 2024-05-01T00:00:00Z.
const START_MS: i64 = 1_714_521_600_000;
const MIN: i64 = 60_000;

fn config(instances: usize, seed: u64, duration_ms: i64, failure_fraction: f64) -> FleetConfig {
    FleetConfig {
        instances,
        seed,
        start_ms: START_MS,
        interval_ms: 10_000,
        duration_ms,
        failure_fraction,
        kinds: FailureKind::ALL.to_vec(),
    }
}

fn run_fleet(config: FleetConfig) -> (Fleet, Vec<TelemetrySample>) {
    let mut fleet = Fleet::new(config).unwrap();
    let mut samples = Vec::new();
    while let Some(step) = fleet.tick() {
        samples.extend(step);
    }
    (fleet, samples)
}

fn of<'a>(samples: &'a [TelemetrySample], instance: &str) -> Vec<&'a TelemetrySample> {
    samples.iter().filter(|s| s.instance_id == instance).collect()
}

fn get(s: &TelemetrySample, name: &str) -> f64 {
    s.metric(name).unwrap_or_else(|| panic!("{} seq {} lacks {name}", s.instance_id, s.seq))
}

#[test]
fn same_seed_gives_identical_samples_and_ground_truth() {
    let (a, sa) = run_fleet(config(30, 42, 2 * 60 * MIN, 0.4));
    let (b, sb) = run_fleet(config(30, 42, 2 * 60 * MIN, 0.4));
    assert!(!sa.is_empty());
    assert_eq!(serde_json::to_vec(&sa).unwrap(), serde_json::to_vec(&sb).unwrap());
    assert_eq!(serde_json::to_vec(a.ground_truth()).unwrap(), serde_json::to_vec(b.ground_truth()).unwrap());
}

#[test]
fn different_seed_gives_different_samples_and_ground_truth() {
    let (a, sa) = run_fleet(config(30, 1, 60 * MIN, 0.4));
    let (b, sb) = run_fleet(config(30, 2, 60 * MIN, 0.4));
    assert_ne!(sa, sb);
    assert_ne!(a.ground_truth(), b.ground_truth());
}

/// Every injected failure happens, on the first sample that meets its condition, and
/// nothing before its onset looks like it.
#[test]
fn failures_happen_on_the_first_sample_meeting_their_condition() {
    let mut kinds_seen = BTreeMap::new();
    for seed in 1..=6 {
        let (fleet, samples) = run_fleet(config(40, seed, 2 * 60 * MIN, 0.5));
        assert_eq!(fleet.ground_truth().len(), 20);
        for truth in fleet.ground_truth() {
            let inst = fleet.instance(&truth.instance).unwrap();
            assert_eq!(inst.injected(), Some(truth.kind));
            assert_eq!((inst.app_type(), inst.function()), (&*truth.app_type, &*truth.function));
            let failure_ms = truth.failure_ms.unwrap_or_else(|| panic!("seed {seed}: {truth:?} never failed"));
            assert!(failure_ms > truth.onset_ms, "seed {seed}: {truth:?}");
            let mine = of(&samples, &truth.instance);
            let at = mine.iter().position(|s| s.timestamp_ms == failure_ms).expect("a sample at failure_ms");
            assert!(truth.kind.holds(mine[at], inst.timeout_s()), "seed {seed}: condition false at failure: {truth:?}");
            for s in &mine[..at] {
                assert!(
                    !truth.kind.holds(s, inst.timeout_s()),
                    "seed {seed}: {truth:?} condition already held at {} (onset {})",
                    s.timestamp_ms,
                    truth.onset_ms
                );
            }
            *kinds_seen.entry(truth.kind).or_insert(0) += 1;
        }
    }
    assert_eq!(kinds_seen.len(), FailureKind::ALL.len(), "every kind injected: {kinds_seen:?}");
}

#[test]
fn a_crashed_instance_is_silent_for_its_restart_gap_and_its_seq_has_no_gap() {
    let (fleet, samples) = run_fleet(config(20, 3, 3 * 60 * MIN, 0.5));
    let end = START_MS + 3 * 60 * MIN;
    let mut checked = 0;
    for truth in fleet.ground_truth() {
        let failure_ms = truth.failure_ms.unwrap();
        let mine = of(&samples, &truth.instance);
        let seqs: Vec<i64> = mine.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, (0..mine.len() as i64).collect::<Vec<_>>(), "{}", truth.instance);
        let next = mine.iter().find(|s| s.timestamp_ms > failure_ms);
        match next {
            Some(back) => {
                let gap = back.timestamp_ms - failure_ms;
                assert!((MIN..=3 * MIN + 10_000).contains(&gap), "{}: restart gap {gap} ms", truth.instance);
                // Back healthy: the condition does not hold again.
                let inst = fleet.instance(&truth.instance).unwrap();
                assert!(mine
                    .iter()
                    .filter(|s| s.timestamp_ms > failure_ms)
                    .all(|s| !truth.kind.holds(s, inst.timeout_s())));
                checked += 1;
            }
            None => assert!(failure_ms + 3 * MIN + 10_000 > end, "{} never came back", truth.instance),
        }
    }
    assert!(checked >= 5, "only {checked} instances came back");
}

fn assert_sane(s: &TelemetrySample) {
    assert_eq!(s.metrics.len(), m::ALL.len(), "{}: every canonical metric", s.instance_id);
    for (metric, name) in s.metrics.iter().zip(m::ALL) {
        assert_eq!(metric.name, *name);
        assert!(metric.value.is_finite() && metric.value >= 0.0, "{} seq {}: {metric:?}", s.instance_id, s.seq);
    }
    for ratio in [
        m::CPU_UTILIZATION,
        m::PSI_CPU_SOME,
        m::PSI_MEMORY_SOME,
        m::PSI_MEMORY_FULL,
        m::PSI_IO_SOME,
        m::PSI_IO_FULL,
        m::DISK_BUSY,
        m::ERROR_RATE,
    ] {
        assert!(get(s, ratio) <= 1.0, "{} seq {}: {ratio} = {}", s.instance_id, s.seq, get(s, ratio));
    }
    let (used, limit) = (get(s, m::MEMORY_USED), get(s, m::MEMORY_LIMIT));
    assert!(used <= limit, "{}: used {used} > limit {limit}", s.instance_id);
    assert_eq!(get(s, m::MEMORY_AVAILABLE), limit - used);
    assert!(get(s, m::PSI_MEMORY_FULL) <= get(s, m::PSI_MEMORY_SOME));
    assert!(["zone", "node"].iter().all(|k| s.labels.contains_key(*k)));
}

/// A day of a healthy fleet: diurnal swings, bursts, GC pauses, deploys, compactions,
/// and not one sample that meets a failure condition.
#[test]
fn healthy_instances_stay_within_sane_ranges_for_a_day() {
    for seed in [1, 7] {
        let mut c = config(30, seed, 24 * 60 * MIN, 0.0);
        c.interval_ms = 30_000;
        let (fleet, samples) = run_fleet(c);
        assert_eq!(samples.len(), 30 * 2880, "no healthy instance ever goes down");
        for s in &samples {
            assert_sane(s);
            let timeout = fleet.instance(&s.instance_id).unwrap().timeout_s();
            for kind in FailureKind::ALL {
                assert!(
                    !kind.holds(s, timeout),
                    "seed {seed}: healthy {} meets {kind} at seq {}",
                    s.instance_id,
                    s.seq
                );
            }
        }
    }
}

#[test]
fn failing_instances_report_sane_values_too() {
    let (_, samples) = run_fleet(config(40, 5, 2 * 60 * MIN, 0.5));
    samples.iter().for_each(assert_sane);
}

/// False alarms are a real test: healthy instances have spikes a naive threshold trips on.
#[test]
fn healthy_telemetry_has_diurnal_swings_and_benign_spikes() {
    let mut c = config(20, 11, 24 * 60 * MIN, 0.0);
    c.interval_ms = 30_000;
    let (fleet, samples) = run_fleet(c);
    let (mut latency_spikes, mut bursts, mut busy_disks) = (0, 0, 0);
    for inst in fleet.instances() {
        let mine = of(&samples, inst.id());
        let series = |name| mine.iter().map(|s| get(s, name)).collect::<Vec<_>>();
        let mut latency = series(m::LATENCY_P99);
        let rate = series(m::REQUEST_RATE);
        let (lo, hi) = rate.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        assert!(hi / lo > 1.6, "{}: no diurnal swing in request rate ({lo}..{hi})", inst.id());
        if rate.windows(2).any(|w| w[1] > 1.2 * w[0]) {
            bursts += 1;
        }
        if series(m::DISK_BUSY).iter().any(|b| *b > 0.3) && inst.app_type() != "worker" {
            busy_disks += 1;
        }
        latency.sort_by(f64::total_cmp);
        if latency[latency.len() - 1] > 2.5 * latency[latency.len() / 2] {
            latency_spikes += 1;
        }
    }
    assert!(latency_spikes >= 5, "latency spikes in {latency_spikes} instances");
    assert!(bursts >= 5, "traffic bursts in {bursts} instances");
    assert!(busy_disks >= 2, "compactions in {busy_disks} instances");
}

#[test]
fn a_ten_minute_run_still_injects_failures_that_happen() {
    let (fleet, samples) = run_fleet(config(20, 9, 10 * MIN, 0.3));
    assert_eq!(fleet.ground_truth().len(), 6);
    for truth in fleet.ground_truth() {
        assert!(truth.onset_ms >= START_MS + 3 * 10_000, "{truth:?}: no healthy lead-in");
        assert!(truth.failure_ms.is_some(), "{truth:?} did not happen in 10 minutes");
    }
    assert!(samples.len() < 20 * 60, "crashed instances are silent for a while");
}

#[test]
fn instance_ids_and_behaviour_do_not_depend_on_fleet_size() {
    let (small, a) = run_fleet(config(5, 4, 30 * MIN, 0.0));
    let (large, b) = run_fleet(config(25, 4, 30 * MIN, 0.0));
    let ids: Vec<&str> = small.instances().iter().map(|i| i.id()).collect();
    assert_eq!(
        ids,
        ["web-frontend-0000", "web-checkout-0000", "database-primary-0000", "cache-session-0000", "worker-ingest-0000"]
    );
    assert_eq!(large.instances()[16].id(), "web-frontend-0003");
    for id in ids {
        assert_eq!(of(&a, id), of(&b, id));
    }
}

#[test]
fn apply_refuses_unknown_instances_and_invalid_changes_and_clamps_the_rest() {
    let mut fleet = Fleet::new(config(3, 1, 10 * MIN, 0.0)).unwrap();
    assert!(matches!(fleet.apply("nope", Change::Shed { fraction: 0.1 }), Err(ApplyError::UnknownInstance(_))));
    let id = "web-checkout-0000";
    for bad in [
        Change::Resize { cpu_factor: f64::NAN, memory_factor: 1.0 },
        Change::Resize { cpu_factor: 1.0, memory_factor: 0.0 },
        Change::Shed { fraction: 1.5 },
        Change::Migrate { fraction: -0.1 },
    ] {
        assert!(matches!(fleet.apply(id, bad), Err(ApplyError::Invalid { .. })), "{bad:?} accepted");
    }
    let r = fleet.apply(id, Change::Resize { cpu_factor: 1.5, memory_factor: 2.0 }).unwrap();
    assert_eq!((r.cpu_limit_cores, r.memory_limit_bytes), (3.0, 3.0 * 1024.0 * 1024.0 * 1024.0));
    assert_eq!(fleet.apply(id, Change::ScaleOut { replicas_delta: -5 }).unwrap().replicas, 1);
    assert_eq!(fleet.apply(id, Change::Shed { fraction: 1.0 }).unwrap().shed_fraction, 0.95);
    let sample = fleet.tick().unwrap().into_iter().find(|s| s.instance_id == id).unwrap();
    assert_eq!(get(&sample, m::CPU_LIMIT), 3.0, "the resize shows in the next sample");
}

#[test]
fn ground_truth_is_json_lines_with_null_for_failures_yet_to_happen() {
    let mut fleet = Fleet::new(config(10, 1, 60 * MIN, 0.3)).unwrap();
    fleet.tick();
    let mut out = Vec::new();
    write_ground_truth(&mut out, fleet.ground_truth()).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 3);
    let first = text.lines().next().unwrap();
    let g = &fleet.ground_truth()[0];
    assert_eq!(
        first,
        format!(
            r#"{{"instance":"{}","kind":"{}","onset_ms":{},"failure_ms":null,"expected_failure_ms":{},"app_type":"{}","function":"{}"}}"#,
            g.instance, g.kind, g.onset_ms, g.expected_failure_ms, g.app_type, g.function
        )
    );
}

#[test]
fn config_validation_names_the_flag() {
    let ok = config(10, 1, 60 * MIN, 0.3);
    type Breaks = fn(&mut FleetConfig);
    let cases: [(&str, Breaks); 7] = [
        ("--instances", |c| c.instances = 0),
        ("--interval", |c| c.interval_ms = 10),
        ("--duration", |c| c.duration_ms = 5_000),
        ("--duration", |c| c.duration_ms = 2 * MIN),
        ("--start", |c| c.start_ms = -1),
        ("--failure-fraction", |c| c.failure_fraction = f64::NAN),
        ("--kinds", |c| c.kinds.clear()),
    ];
    for (flag, break_it) in cases {
        let mut c = ok.clone();
        break_it(&mut c);
        let e = Fleet::new(c).unwrap_err();
        assert_eq!(e.flag, flag, "{e}");
        assert!(e.to_string().starts_with(flag));
    }
    // Without failures a short run is fine.
    Fleet::new(FleetConfig { duration_ms: 2 * MIN, failure_fraction: 0.0, ..ok }).unwrap();
}

#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn parse(flags: &[&str]) -> Result<Args, String> {
    Cli::try_parse_from(std::iter::once("simulate").chain(flags.iter().copied()))
        .map(|c| c.args)
        .map_err(|e| e.to_string())
}

#[test]
fn every_flag_is_validated_with_an_error_naming_it() {
    for (flag, value) in [
        ("--instances", "0"),
        ("--instances", "many"),
        ("--duration", "0s"),
        ("--duration", "soon"),
        ("--seed", "-1"),
        ("--speed", "-1"),
        ("--speed", "0"),
        ("--speed", "fast"),
        ("--speed", "1e-300"),
        ("--interval", "500ms"),
        ("--interval", "2h"),
        ("--start", "yesterday"),
        ("--start", "-5"),
        ("--failure-fraction", "1.5"),
        ("--failure-fraction", "-0.1"),
        ("--kinds", "meltdown"),
        ("--partitions", "0"),
    ] {
        let err = parse(&[flag, value]).expect_err(&format!("{flag} {value} accepted"));
        let first = err.lines().next().unwrap();
        assert!(first.contains(flag) && first.contains(value), "{flag} {value}: {first}");
    }
    let err = parse(&["--kinds", "memory_leak,meltdown"]).unwrap_err();
    assert!(err.contains("--kinds") && err.contains("'meltdown'"), "{err}");
}

#[test]
fn flags_parse_to_the_documented_defaults_and_values() {
    let a = parse(&[]).unwrap();
    assert_eq!((a.instances, a.seed, a.speed, a.partitions), (20, 1, Speed::Max, 6));
    assert_eq!((a.duration, a.interval), (Duration::from_secs(3600), Duration::from_secs(10)));
    assert_eq!((a.failure_fraction, a.start, a.kinds.as_slice()), (0.3, None, &[][..]));
    let c = a.fleet_config(START_MS + 1234).unwrap();
    assert_eq!(c.start_ms, START_MS - 3_600_000, "speed max: the run ends now, aligned to the interval");
    assert_eq!(c.kinds, FailureKind::ALL);

    let a = parse(&["--speed", "60", "--kinds", "io_stall,memory_leak", "--start", "2024-05-01T00:00:00Z"]).unwrap();
    assert_eq!(a.speed, Speed::Factor(60.0));
    assert_eq!(a.kinds, [FailureKind::IoStall, FailureKind::MemoryLeak]);
    assert_eq!(a.start, Some(START_MS));
    assert_eq!(parse(&["--start", &START_MS.to_string()]).unwrap().start, Some(START_MS));
    assert_eq!(parse(&["--speed", "2"]).unwrap().fleet_config(START_MS + 5).unwrap().start_ms, START_MS);

    // Flags that are each fine but not together.
    let e = parse(&["--duration", "2m"]).unwrap().fleet_config(START_MS).unwrap_err();
    assert_eq!(e.flag, "--duration", "{e}");
}

#[tokio::test]
async fn run_stops_at_once_when_shutdown_is_already_requested() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truth.jsonl");
    let args =
        parse(&["--instances", "10", "--ground-truth", path.to_str().unwrap(), "--start", "1714521600000"]).unwrap();
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    let summary = run(args, shutdown).await.unwrap();
    assert_eq!((summary.records, summary.stopped_early, summary.failures_injected), (0, true, 3));
    assert_eq!(summary.first_timestamp_ms, None);
    let truth = std::fs::read_to_string(&path).unwrap();
    assert_eq!(truth.lines().count(), 3);
    assert!(truth.lines().all(|l| l.contains(r#""failure_ms":null"#)));
}

#[tokio::test]
async fn run_produces_every_sample_of_the_fleet_to_the_embedded_cluster() {
    let args = parse(&["--instances", "4", "--duration", "10m", "--start", "1714521600000"]).unwrap();
    let (fleet, samples) = run_fleet(args.fleet_config(0).unwrap());
    let summary = run(args, CancellationToken::new()).await.unwrap();
    assert_eq!(summary.records, samples.len() as u64);
    assert_eq!(summary.failures_injected, fleet.ground_truth().len());
    assert_eq!(summary.first_timestamp_ms, Some(START_MS));
    assert_eq!(summary.last_timestamp_ms, Some(START_MS + 10 * MIN - 10_000));
    assert!(!summary.stopped_early);
}

#[tokio::test]
async fn run_paces_event_time_at_the_requested_speed() {
    // 12 steps of 10 s at 1200× speed: the last is due 110 s / 1200 = 92 ms in.
    let args = parse(&["--instances", "2", "--duration", "2m", "--speed", "1200", "--failure-fraction", "0"]).unwrap();
    let began = std::time::Instant::now();
    let summary = run(args, CancellationToken::new()).await.unwrap();
    let took = began.elapsed();
    assert_eq!(summary.records, 24);
    assert!(took >= Duration::from_millis(91), "produced 110 s of event time in {took:?}");
    assert!(took < Duration::from_secs(10), "pacing overslept: {took:?}");
    let (first, last) = (summary.first_timestamp_ms.unwrap(), summary.last_timestamp_ms.unwrap());
    assert_eq!(last - first, 110_000);
}

/// The guarantees of the two tests above over a wide sweep of seeds, run lengths and
/// intervals (a minute and a half in release):
/// `cargo test --release --lib simulate -- --ignored`.
#[test]
#[ignore = "sweep; run in release"]
fn sweep_failures_happen_and_nothing_before_onset_meets_a_condition() {
    let mut problems = Vec::new();
    for (duration_ms, instances) in [(10 * MIN, 20), (30 * MIN, 20), (60 * MIN, 30), (360 * MIN, 30), (1440 * MIN, 30)]
    {
        for seed in 1..=60 {
            for interval_ms in [10_000, 60_000] {
                let c = FleetConfig { interval_ms, ..config(instances, seed, duration_ms, 0.5) };
                if c.validate().is_err() {
                    continue; // too few steps at this interval
                }
                let (fleet, samples) = run_fleet(c);
                samples.iter().for_each(assert_sane);
                for inst in fleet.instances() {
                    let truth = fleet.ground_truth().iter().find(|g| g.instance == inst.id());
                    let run = format!("{duration_ms} ms, seed {seed}, interval {interval_ms} ms: {}", inst.id());
                    for s in of(&samples, inst.id()) {
                        let healthy = truth.is_none_or(|g| s.timestamp_ms < g.onset_ms);
                        for kind in FailureKind::ALL.into_iter().filter(|k| healthy && k.holds(s, inst.timeout_s())) {
                            problems.push(format!("{run} meets {kind} at {}", s.timestamp_ms));
                        }
                    }
                    if let Some(g) = truth.filter(|g| g.failure_ms.is_none()) {
                        problems.push(format!("{run}: {g:?} never failed"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
