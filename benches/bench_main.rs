//! Criterion benchmarks, one module per subject: `cargo bench --bench bench_main`.

use criterion::criterion_main;

mod codec;
mod dtw;
mod export;
mod window;

criterion_main!(codec::benches, dtw::benches, window::benches, export::benches);
