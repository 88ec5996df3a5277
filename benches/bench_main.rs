//! Criterion benchmarks, one module per subject: `cargo bench --bench bench_main`.

use criterion::criterion_main;

mod codec;
mod dtw;
mod export;
mod lstm;
mod window;

criterion_main!(codec::benches, dtw::benches, lstm::benches, window::benches, export::benches);
