//! Window update per sample: one simulator sample pushed into a store holding 1,000
//! instances in steady state (full windows), round robin as a partition delivers them,
//! so that one push in six closes and grids a window (10 s samples, 60 s hop).

use std::hint::black_box;

use augur::codec::TelemetrySample;
use augur::simulate::{Fleet, FleetConfig};
use augur::window::{WindowConfig, Windows};
use criterion::{criterion_group, Criterion, Throughput};

const INSTANCES: usize = 1_000;
/// Distinct samples per instance to cycle through; their timestamps are rewritten.
const TEMPLATES: usize = 8;
const INTERVAL_MS: i64 = 10_000;
/// 2024-05-01T00:00:00Z.
const START_MS: i64 = 1_714_521_600_000;

/// `TEMPLATES` steps of a healthy fleet, step-major.
fn templates() -> Vec<TelemetrySample> {
    let mut fleet = Fleet::new(FleetConfig {
        instances: INSTANCES,
        seed: 7,
        start_ms: START_MS,
        interval_ms: INTERVAL_MS,
        duration_ms: TEMPLATES as i64 * INTERVAL_MS,
        failure_fraction: 0.0,
        kinds: Vec::new(),
    })
    .expect("valid fleet");
    let mut samples = Vec::with_capacity(INSTANCES * TEMPLATES);
    while let Some(step) = fleet.tick() {
        assert_eq!(step.len(), INSTANCES, "a healthy fleet reports every step");
        samples.extend(step);
    }
    samples
}

/// Feeds round robin: the `k`-th push is instance `k % INSTANCES` at step `k / INSTANCES`.
struct Feed {
    samples: Vec<TelemetrySample>,
    k: usize,
}

impl Feed {
    fn next(&mut self) -> &TelemetrySample {
        let (step, instance) = (self.k / INSTANCES, self.k % INSTANCES);
        self.k += 1;
        let s = &mut self.samples[(step % TEMPLATES) * INSTANCES + instance];
        s.timestamp_ms = START_MS + step as i64 * INTERVAL_MS;
        s
    }
}

fn window(c: &mut Criterion) {
    let config = WindowConfig::default();
    config.validate().expect("default window config");
    // Enough steps for every window to be full before measuring.
    let warm_up = (config.length_ms() + config.hop_ms + config.lateness_ms) / INTERVAL_MS;
    let windows = Windows::new(config);
    let mut feed = Feed { samples: templates(), k: 0 };
    let mut closed = 0;
    for _ in 0..warm_up as usize * INSTANCES {
        closed += windows.push(0, feed.next()).closed.len();
    }
    assert!(closed > 0, "warm-up closed no window");

    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(1));
    g.bench_function("update_per_sample/1000_instances", |b| {
        b.iter(|| black_box(windows.push(0, black_box(feed.next()))));
    });
    g.finish();
    let stats = windows.stats();
    eprintln!(
        "window: {} instances, {} B per instance, {} late, {} insufficient",
        stats.instances,
        stats.memory_bytes / stats.instances.max(1),
        stats.late_dropped,
        stats.insufficient
    );
}

criterion_group!(benches, window);
