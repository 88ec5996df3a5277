//! Turning a batch of telemetry into one remote-write request (series grouping, sorting,
//! protobuf, snappy): the exporter's CPU cost per record, without the network.

use std::hint::black_box;

use augur::codec::{metric_names, Metric, TelemetrySample};
use augur::export::remote_write;
use augur::export::series::{Exported, SeriesSet};
use criterion::{criterion_group, Criterion, Throughput};

/// The exporter's default batch: 2000 samples of 100 instances, every canonical metric.
fn batch() -> Vec<Exported> {
    (0..2000)
        .map(|i| {
            Exported::Telemetry(TelemetrySample {
                instance_id: format!("web-checkout-{:04}", i % 100),
                app_type: "web".into(),
                function: "checkout".into(),
                seq: i / 100,
                timestamp_ms: 1_795_000_000_000 + (i / 100) * 10_000,
                metrics: metric_names::ALL
                    .iter()
                    .enumerate()
                    .map(|(m, n)| Metric::new(*n, (i as f64).mul_add(0.37, m as f64)))
                    .collect(),
                labels: Default::default(),
            })
        })
        .collect()
}

fn export(c: &mut Criterion) {
    let records = batch();
    let mut g = c.benchmark_group("remote_write_batch");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("series_protobuf_snappy", |b| {
        b.iter(|| {
            let mut set = SeriesSet::default();
            for r in black_box(&records) {
                set.add(r);
            }
            remote_write::encode(&set.into_request()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, export);
