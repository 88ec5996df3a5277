//! The LSTM anomaly model at the peer's shapes: input 8, hidden 32, 64 steps, 1 and 2
//! layers. `scripts/bench-lstm` runs these next to PyTorch (`../shared/peers/bench_lstm.py`).
//!
//! Inference is the fused CPU path the detector runs (`lstm_infer/fused_l*`) and, for
//! reference, candle's op-by-op forward pass (`lstm_infer/candle_l*`), both forecasting
//! every step of each window (the peer's head reads the last step only: a little less
//! work). Training is one Adam step of batch 64 on the trainer's masked forecast loss
//! (`lstm_train/step_l*`); windows per second of an epoch are 64 over its time.

use std::collections::HashMap;
use std::hint::black_box;

use augur::detect::lstm::fast::Fused;
use augur::detect::lstm::{Config, Forecaster};
use augur::train::masked_loss;
use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const C: usize = 8;
const H: usize = 32;
const L: usize = 64;

fn config(layers: usize) -> Config {
    Config { input: C, hidden: H, layers, score_steps: 32 }
}

fn weights(config: Config) -> HashMap<String, Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let k = 1.0 / (H as f32).sqrt();
    config
        .tensors()
        .into_iter()
        .map(|(name, shape)| {
            let v: Vec<f32> = (0..shape.iter().product()).map(|_| rng.random_range(-k..k)).collect();
            (name, Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor"))
        })
        .collect()
}

fn inputs(n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    (0..n * L * C).map(|_| rng.random_range(-2.0..2.0)).collect()
}

fn infer(c: &mut Criterion) {
    let mut g = c.benchmark_group("lstm_infer");
    for layers in [1, 2] {
        let cfg = config(layers);
        let w = weights(cfg);
        let fused = Fused::new(cfg, |n| Ok(w[n].clone())).expect("fused");
        let model = Forecaster::new(cfg, VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu)).expect("model");
        for batch in [1usize, 64, 256] {
            let x = inputs(batch);
            let mut out = vec![0f32; x.len()];
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new(format!("fused_l{layers}"), batch), &x, |b, x| {
                b.iter(|| fused.forecast(black_box(x), L, &mut out))
            });
            let t = Tensor::from_vec(x.clone(), (batch, L, C), &Device::Cpu).expect("x");
            g.bench_with_input(BenchmarkId::new(format!("candle_l{layers}"), batch), &t, |b, t| {
                b.iter(|| model.forward(black_box(t)).expect("forward"))
            });
        }
    }
    g.finish();
}

fn train(c: &mut Criterion) {
    let mut g = c.benchmark_group("lstm_train");
    g.sample_size(20);
    let batch = 64;
    for layers in [1, 2] {
        let varmap = VarMap::new();
        let model =
            Forecaster::new(config(layers), VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).expect("model");
        let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW { lr: 1e-3, weight_decay: 0.0, ..Default::default() })
            .expect("adam");
        let x = Tensor::from_vec(inputs(batch), (batch, L, C), &Device::Cpu).expect("x");
        let mask = Tensor::ones((batch, L - 1, C), DType::F32, &Device::Cpu).expect("mask");
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new(format!("step_l{layers}"), batch), |b| {
            b.iter(|| {
                let loss = masked_loss(&model, &x, &mask).expect("loss");
                opt.backward_step(&loss).expect("step");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, infer, train);
