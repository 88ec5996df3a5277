//! DTW signature matching at the detector's sizes: 8 metrics × 64 points, Sakoe–Chiba
//! radius 6, 100 signatures. `scripts/bench-dtw` runs these next to dtaidistance.
//!
//! The data are made as `../shared/peers/bench_dtw.py` makes them (z-normalised
//! windows of an 8-channel Gaussian random walk; a near-match query is signature 37
//! time-warped by up to 2.5 points plus noise), from a seeded ChaCha stream instead of
//! numpy's; and, for the detector's own case, windows of the simulator's telemetry.

use std::hint::black_box;

use augur::codec::{metric_names as mn, TelemetrySample};
use augur::detect::confidence::distance_at;
use augur::detect::dtw::{Dtw, Library, Series};
use augur::detect::matcher::MATCH_FLOOR;
use augur::simulate::{FailureKind, Fleet, FleetConfig};
use criterion::{criterion_group, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

const L: usize = 64;
const C: usize = 8;
const N: usize = 100;
const R: usize = 6;

/// Per channel: subtract the mean, divide by the standard deviation (numpy's ddof=0).
fn znorm(window: &[f64]) -> Series {
    let len = window.len() / C;
    let mut out = window.to_vec();
    for c in 0..C {
        let mean = (0..len).map(|t| window[t * C + c]).sum::<f64>() / len as f64;
        let var = (0..len).map(|t| (window[t * C + c] - mean).powi(2)).sum::<f64>() / len as f64;
        for t in 0..len {
            out[t * C + c] = (window[t * C + c] - mean) / (var.sqrt() + 1e-12);
        }
    }
    Series::from_f64(C, &out).expect("finite windows")
}

/// 100 signatures, a random-walk query and a near-match query, as bench_dtw.py.
pub fn random_walk_data() -> (Vec<Series>, Series, Series) {
    let mut rng = ChaCha8Rng::seed_from_u64(12345);
    let steps = N * L * 4;
    let mut walk = vec![0.0f64; steps * C];
    for t in 0..steps {
        for c in 0..C {
            let prev = if t == 0 { 0.0 } else { walk[(t - 1) * C + c] };
            walk[t * C + c] = prev + rng.sample::<f64, _>(StandardNormal);
        }
    }
    let starts = rand::seq::index::sample(&mut rng, steps - L, N + 1);
    let mut wins: Vec<Series> = starts.iter().map(|s| znorm(&walk[s * C..(s + L) * C])).collect();
    let query_rand = wins.pop().expect("N + 1 windows");
    let base = &wins[37];
    let mut near = Vec::with_capacity(L * C);
    for t in 0..L {
        let shift = (2.5 * (2.0 * std::f64::consts::PI * t as f64 / L as f64).sin()).round_ties_even();
        let w = (t as f64 + shift).clamp(0.0, (L - 1) as f64) as usize;
        near.extend(base.point(w).iter().map(|&v| f64::from(v) + 0.1 * rng.sample::<f64, _>(StandardNormal)));
    }
    (wins, query_rand, znorm(&near))
}

/// Signatures from the simulator: the 64 samples before each injected failure (topped
/// up with windows of healthy instances), a healthy query and one of an instance whose
/// failure is developing (8 samples before it fails).
pub fn simulator_data() -> (Vec<Series>, Series, Series) {
    const METRICS: [&str; C] = [
        mn::CPU_UTILIZATION,
        mn::MEMORY_USED,
        mn::PSI_MEMORY_SOME,
        mn::PSI_IO_SOME,
        mn::ERROR_RATE,
        mn::LATENCY_P99,
        mn::LOG_ERRORS,
        mn::REQUEST_RATE,
    ];
    let config = FleetConfig {
        instances: 240,
        seed: 7,
        start_ms: 1_800_000_000_000,
        interval_ms: 10_000,
        duration_ms: 4 * 3_600_000,
        failure_fraction: 0.5,
        kinds: FailureKind::ALL.to_vec(),
    };
    let mut fleet = Fleet::new(config).expect("valid fleet");
    let index: std::collections::HashMap<String, usize> =
        fleet.instances().iter().enumerate().map(|(i, inst)| (inst.id().to_owned(), i)).collect();
    // Per instance: (timestamp, the 8 metrics) of every sample.
    let mut seen: Vec<Vec<(i64, [f64; C])>> = vec![Vec::new(); index.len()];
    let value = |s: &TelemetrySample, name| s.metrics.iter().find(|m| m.name == name).map_or(0.0, |m| m.value);
    while let Some(samples) = fleet.tick() {
        for s in samples {
            seen[index[&s.instance_id]].push((s.timestamp_ms, METRICS.map(|name| value(&s, name))));
        }
    }
    let window =
        |inst: usize, end: usize| znorm(&seen[inst][end - L..end].iter().flat_map(|(_, v)| *v).collect::<Vec<_>>());
    let before = |inst: usize, t: i64| seen[inst].iter().position(|&(ts, _)| ts >= t).map(|p| p + 1);
    let failed: Vec<(usize, usize)> = fleet
        .ground_truth()
        .iter()
        .filter_map(|g| Some((index[&g.instance], before(index[&g.instance], g.failure_ms?)?)))
        .filter(|&(_, end)| end > L + 8)
        .collect();
    let (probe, probe_end) = failed[failed.len() / 2];
    let developing = window(probe, probe_end - 8);
    let mut sigs: Vec<Series> = failed.iter().filter(|&&(i, _)| i != probe).map(|&(i, end)| window(i, end)).collect();
    let healthy: Vec<usize> = (0..seen.len()).filter(|&i| !failed.iter().any(|&(f, _)| f == i)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    while sigs.len() < N {
        let inst = healthy[rng.random_range(0..healthy.len())];
        sigs.push(window(inst, rng.random_range(L..seen[inst].len())));
    }
    sigs.truncate(N);
    let inst = healthy[0];
    (sigs, window(inst, seen[inst].len() / 2), developing)
}

pub fn dtw_distance(c: &mut Criterion) {
    let (sigs, query, _) = random_walk_data();
    let mut dtw = Dtw::new(R);
    let mut g = c.benchmark_group("dtw_distance");
    g.throughput(Throughput::Elements(1));
    g.bench_function("pair", |b| b.iter(|| dtw.distance(black_box(&query), black_box(&sigs[0]))));
    // The peers' fastest form: one query against a block of 100 series, no pruning.
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("1x100", |b| {
        b.iter(|| sigs.iter().map(|s| dtw.distance(black_box(&query), s)).fold(f64::INFINITY, f64::min))
    });
    g.finish();
}

pub fn library_search(c: &mut Criterion) {
    let (sigs, rand_q, near_q) = random_walk_data();
    let (sim_sigs, healthy_q, developing_q) = simulator_data();
    let walks = Library::new(sigs, R).expect("library");
    let sim = Library::new(sim_sigs, R).expect("library");
    let mut dtw = Dtw::new(R);
    let mut g = c.benchmark_group("library_search");
    g.throughput(Throughput::Elements(1));
    // The detector's search is bounded at the distance of the lowest confidence it
    // reports (`Matcher`): signatures further away are no match at all.
    let floor = distance_at(MATCH_FLOOR, L, C);
    for (name, query, lib, bound) in [
        ("query_rand", &rand_q, &walks, f64::INFINITY),
        ("query_near", &near_q, &walks, f64::INFINITY),
        ("sim_healthy", &healthy_q, &sim, f64::INFINITY),
        ("sim_developing", &developing_q, &sim, f64::INFINITY),
        ("sim_healthy_floor", &healthy_q, &sim, floor),
        ("sim_developing_floor", &developing_q, &sim, floor),
    ] {
        let m = dtw.search_within(query, lib, bound);
        let hit = |h: Option<augur::detect::dtw::Hit>| h.map(|h| (h.index, (h.distance * 1000.0).round() / 1000.0));
        eprintln!(
            "library_search/{name}: best {:?}, runner-up {:?}; DTW {} (abandoned {}), pruned by LB_Kim {}, \
             by LB_Keogh {}",
            hit(m.best),
            hit(m.runner_up),
            m.computed,
            m.abandoned,
            m.pruned_kim,
            m.pruned_keogh
        );
        g.bench_function(name, |b| b.iter(|| dtw.search_within(black_box(query), lib, bound)));
    }
    g.finish();
}

criterion_group!(benches, dtw_distance, library_search);
