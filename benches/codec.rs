//! Avro single-object encoding and decoding of one telemetry sample, the per-record
//! cost every stage pays.

use std::hint::black_box;

use augur::codec::{metric_names, Codec, Metric, TelemetrySample};
use criterion::{criterion_group, Criterion, Throughput};

/// A sample as the agent sends it: every canonical metric.
fn sample() -> TelemetrySample {
    TelemetrySample {
        instance_id: "web-checkout-0042".into(),
        app_type: "web".into(),
        function: "checkout".into(),
        seq: 123_456,
        timestamp_ms: 1_795_000_000_000,
        metrics: metric_names::ALL.iter().enumerate().map(|(i, n)| Metric::new(*n, i as f64 * 1.5)).collect(),
        labels: [("zone".to_owned(), "a".to_owned()), ("node".to_owned(), "n-7".to_owned())].into(),
    }
}

fn codec(c: &mut Criterion) {
    let codec = Codec::<TelemetrySample>::new();
    let s = sample();
    let bytes = codec.encode(&s).unwrap();
    let mut g = c.benchmark_group("avro_telemetry");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::new();
    g.bench_function("encode", |b| b.iter(|| codec.encode_into(black_box(&s), &mut buf).unwrap()));
    g.bench_function("decode", |b| b.iter(|| codec.decode(black_box(&bytes)).unwrap()));
    g.finish();
}

criterion_group!(benches, codec);
