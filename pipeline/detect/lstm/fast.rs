//! The forecaster's forward pass fused by hand for the CPU: what the detector and
//! `augur score` run.
//!
//! In: the weights of a [`Forecaster`](super::model::Forecaster) (the same tensors, by
//! the same names) and normalised windows, `f32`, time-major. Out: the same forecasts
//! as candle's forward pass, to float rounding (the tests hold the two within 1e-4).
//!
//! Why not candle's own forward pass: candle runs an LSTM step as some ten separate
//! tensor ops (two matmuls, bias adds, a chunk, four activations, products), each
//! allocating its output and walking memory once; at 8 inputs × 32 hidden the
//! arithmetic of a step is a few thousand multiply-adds, so the per-op overhead (an
//! allocation, a dispatch, a pass over memory, ten times per step) dominates the
//! arithmetic (`benches/lstm.rs` measures both paths side by side). Here one step is
//! one pass: the input and the previous hidden state are
//! laid side by side, `z = [x_t; h_{t−1}]`, and multiplied with the two weight matrices
//! stacked and transposed (`(input + hidden) × 4·hidden`), so all four gates of a step
//! come out of one loop whose accumulators stay in vector registers (a chunk of 64
//! gates with AVX2, 128 with AVX-512: eight independent FMA chains, enough to cover the
//! FMA latency); the gate nonlinearities and the cell update follow in one loop over
//! the hidden units, with a branch-free `exp` the compiler vectorises. Weights of a
//! layer (20 KB at the default shape) stay in L1 across the steps of a window.

use candle_core::Tensor;

use super::model::Config;

/// One layer's weights, stacked for the fused step.
#[derive(Debug, Clone)]
struct Layer {
    in_dim: usize,
    /// `(in_dim + hidden) × 4·hidden`, row `k` holding the weights of `z[k]` for every
    /// gate unit, in PyTorch's gate order (input, forget, cell, output).
    w: Vec<f32>,
    /// `bias_ih + bias_hh`, `4·hidden`.
    b: Vec<f32>,
}

/// The instruction set the kernels were compiled for, picked once at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    Generic,
    Avx2,
    Avx512,
}

/// A model's weights laid out for the fused forward pass.
#[derive(Debug, Clone)]
pub struct Fused {
    config: Config,
    layers: Vec<Layer>,
    /// `hidden × input`: the head's weight, transposed.
    head_w: Vec<f32>,
    head_b: Vec<f32>,
    isa: Isa,
}

/// Scratch space of one forward pass, reused across windows.
#[derive(Debug, Default)]
struct Scratch {
    z: Vec<f32>,
    gates: Vec<f32>,
    c: Vec<f32>,
    seq_a: Vec<f32>,
    seq_b: Vec<f32>,
}

impl Fused {
    /// Lays out the tensors `get` returns by name ([`Config::tensors`]), which must
    /// have the shapes the config gives (the loader checks them).
    pub fn new(config: Config, get: impl Fn(&str) -> candle_core::Result<Tensor>) -> candle_core::Result<Self> {
        let h = config.hidden;
        let flat = |name: &str| -> candle_core::Result<Vec<f32>> {
            get(name)?.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()
        };
        let mut layers = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let in_dim = if l == 0 { config.input } else { h };
            let w_ih = flat(&format!("lstm.weight_ih_l{l}"))?;
            let w_hh = flat(&format!("lstm.weight_hh_l{l}"))?;
            let b_ih = flat(&format!("lstm.bias_ih_l{l}"))?;
            let b_hh = flat(&format!("lstm.bias_hh_l{l}"))?;
            let rows = in_dim + h;
            let mut w = vec![0f32; rows * 4 * h];
            for g in 0..4 * h {
                for k in 0..in_dim {
                    w[k * 4 * h + g] = w_ih[g * in_dim + k];
                }
                for k in 0..h {
                    w[(in_dim + k) * 4 * h + g] = w_hh[g * h + k];
                }
            }
            let b = b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect();
            layers.push(Layer { in_dim, w, b });
        }
        let hw = flat("head.weight")?;
        let mut head_w = vec![0f32; h * config.input];
        for o in 0..config.input {
            for k in 0..h {
                head_w[k * config.input + o] = hw[o * h + k];
            }
        }
        let head_b = flat("head.bias")?;
        Ok(Self { config, layers, head_w, head_b, isa: detect_isa() })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Forecasts of `x` (`windows × points × input`, time-major, finite) into `out`
    /// (same shape): row `t` of a window forecasts its row `t + 1`.
    ///
    /// # Panics
    /// If `x` or `out` is not `windows × points × input` long.
    pub fn forecast(&self, x: &[f32], points: usize, out: &mut [f32]) {
        let row = points * self.config.input;
        assert!(row > 0 && x.len() % row == 0 && out.len() == x.len(), "window buffers of the wrong length");
        let mut s = Scratch::default();
        for (xw, ow) in x.chunks_exact(row).zip(out.chunks_exact_mut(row)) {
            match self.isa {
                // SAFETY: the CPU has the features each kernel was compiled for (`detect_isa`).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { window_avx512(self, xw, points, ow, &mut s) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { window_avx2(self, xw, points, ow, &mut s) },
                _ => window::<32, false>(self, xw, points, ow, &mut s),
            }
        }
    }
}

fn detect_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            return Isa::Avx2;
        }
    }
    Isa::Generic
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn window_avx512(m: &Fused, x: &[f32], points: usize, out: &mut [f32], s: &mut Scratch) {
    window::<128, true>(m, x, points, out, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn window_avx2(m: &Fused, x: &[f32], points: usize, out: &mut [f32], s: &mut Scratch) {
    window::<64, true>(m, x, points, out, s)
}

/// One window through every layer and the head. `CHUNK` gate units are accumulated
/// at a time; `FMA` says whether fused multiply-adds are native (without them
/// `mul_add` is a slow library call).
#[inline(always)]
fn window<const CHUNK: usize, const FMA: bool>(m: &Fused, x: &[f32], points: usize, out: &mut [f32], s: &mut Scratch) {
    let h = m.config.hidden;
    let input = m.config.input;
    s.seq_a.clear();
    s.seq_a.extend_from_slice(x);
    for layer in &m.layers {
        let in_dim = layer.in_dim;
        s.z.clear();
        s.z.resize(in_dim + h, 0.0);
        s.gates.resize(4 * h, 0.0);
        s.c.clear();
        s.c.resize(h, 0.0);
        s.seq_b.clear();
        s.seq_b.resize(points * h, 0.0);
        for t in 0..points {
            s.z[..in_dim].copy_from_slice(&s.seq_a[t * in_dim..(t + 1) * in_dim]);
            gates::<CHUNK, FMA>(&s.z, &layer.w, &layer.b, &mut s.gates);
            let (_, h_prev) = s.z.split_at_mut(in_dim);
            cell(&s.gates, &mut s.c, h_prev);
            s.seq_b[t * h..(t + 1) * h].copy_from_slice(h_prev);
        }
        std::mem::swap(&mut s.seq_a, &mut s.seq_b);
    }
    for t in 0..points {
        let o = &mut out[t * input..(t + 1) * input];
        o.copy_from_slice(&m.head_b);
        for (k, &hk) in s.seq_a[t * h..(t + 1) * h].iter().enumerate() {
            let w = &m.head_w[k * input..(k + 1) * input];
            for (ov, &wv) in o.iter_mut().zip(w) {
                *ov = madd::<FMA>(hk, wv, *ov);
            }
        }
    }
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `out = b + zᵀ·w` over the `4·hidden` gate units, `CHUNK` units at a time so that
/// the accumulators of a chunk live in registers through the loop over `z`.
#[inline(always)]
fn gates<const CHUNK: usize, const FMA: bool>(z: &[f32], w: &[f32], b: &[f32], out: &mut [f32]) {
    let n = b.len();
    let mut j = 0;
    while j + CHUNK <= n {
        let mut acc = [0f32; CHUNK];
        acc.copy_from_slice(&b[j..j + CHUNK]);
        for (k, &zk) in z.iter().enumerate() {
            let row: &[f32; CHUNK] = w[k * n + j..k * n + j + CHUNK].try_into().expect("chunk of CHUNK");
            for l in 0..CHUNK {
                acc[l] = madd::<FMA>(zk, row[l], acc[l]);
            }
        }
        out[j..j + CHUNK].copy_from_slice(&acc);
        j += CHUNK;
    }
    for (jj, o) in out.iter_mut().enumerate().skip(j) {
        let mut a = b[jj];
        for (k, &zk) in z.iter().enumerate() {
            a = madd::<FMA>(zk, w[k * n + jj], a);
        }
        *o = a;
    }
}

/// The cell update from the gate pre-activations: `c ← σ(f)·c + σ(i)·tanh(g)`,
/// `h ← σ(o)·tanh(c)`.
#[inline(always)]
fn cell(gates: &[f32], c: &mut [f32], h: &mut [f32]) {
    let n = c.len();
    let (i, rest) = gates.split_at(n);
    let (f, rest) = rest.split_at(n);
    let (g, o) = rest.split_at(n);
    for k in 0..n {
        let ck = sigmoid(f[k]) * c[k] + sigmoid(i[k]) * tanh(g[k]);
        c[k] = ck;
        h[k] = sigmoid(o[k]) * tanh(ck);
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    2.0 / (1.0 + exp(-2.0 * x)) - 1.0
}

/// `eˣ` to about 2e-7 relative error, without branches so that loops over it
/// vectorise (the standard library's `exp` is a call per value): `x = n·ln 2 + r`
/// with `|r| ≤ ln 2 / 2`, a degree-6 Taylor polynomial for `eʳ`, and `2ⁿ` built in the
/// exponent bits. Inputs are clamped to where `2ⁿ` is a normal float.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}
