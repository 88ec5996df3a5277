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
//! arithmetic (`benches/lstm.rs` measures both paths side by side). Here a tile of
//! windows goes through a step together: per window the input and the previous hidden
//! state are laid side by side, `z = [x_t; h_{t−1}]`, and the gate pre-activations of
//! the whole tile are one matrix product `[tile × (input + hidden)] · [(input + hidden)
//! × 4·hidden]` with the two weight matrices stacked and transposed, by the `gemm`
//! crate (the kernels candle's own matmul uses, picked for the CPU at run time; a
//! hand-written register-blocked kernel measured slower). The gate nonlinearities and
//! the cell update follow in one loop over each window's contiguous hidden units, with
//! a branch-free `exp` the compiler vectorises; the head is one product over every
//! step of the tile at the end. Scratch buffers are reused across steps and tiles. The
//! input projection is not hoisted out of the recurrence: for a tile it would be
//! `points × tile × 4·hidden` floats (2 MB at the default shape), out of L2, for no
//! fewer multiply-adds.

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

/// Scratch space of one forward pass, reused across the tiles of a batch.
#[derive(Debug, Default)]
struct Scratch {
    /// `tile × (in_dim + hidden)`: per window, `[x_t; h_{t−1}]`.
    z: Vec<f32>,
    /// `tile × 4·hidden`: the gate pre-activations of a step, bias not yet added.
    gates: Vec<f32>,
    /// `tile × hidden`: the cell states.
    c: Vec<f32>,
    /// `tile × points × hidden`: a layer's outputs, window-major like the input.
    seq_a: Vec<f32>,
    seq_b: Vec<f32>,
}

/// Windows that go through the steps together. Enough rows for the matrix product of
/// a step to run its kernel at full width; few enough that the working set of a step
/// (weights, `z`, gates, cell states: about 70 KB at the default shape) stays in L2.
const TILE: usize = 64;

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
    /// (same shape): row `t` of a window forecasts its row `t + 1`. Windows go through
    /// in tiles of [`TILE`]; a window's forecasts do not depend on the others in the
    /// batch (each output is summed in the same order whatever the batch).
    ///
    /// # Panics
    /// If `x` or `out` is not `windows × points × input` long.
    pub fn forecast(&self, x: &[f32], points: usize, out: &mut [f32]) {
        let row = points * self.config.input;
        assert!(row > 0 && x.len() % row == 0 && out.len() == x.len(), "window buffers of the wrong length");
        let mut s = Scratch::default();
        for (xt, ot) in x.chunks(TILE * row).zip(out.chunks_mut(TILE * row)) {
            match self.isa {
                // SAFETY: the CPU has the features each kernel was compiled for (`detect_isa`).
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => unsafe { tile_avx512(self, xt, points, ot, &mut s) },
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { tile_avx2(self, xt, points, ot, &mut s) },
                _ => tile(self, xt, points, ot, &mut s),
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
unsafe fn tile_avx512(m: &Fused, x: &[f32], points: usize, out: &mut [f32], s: &mut Scratch) {
    tile(m, x, points, out, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(m: &Fused, x: &[f32], points: usize, out: &mut [f32], s: &mut Scratch) {
    tile(m, x, points, out, s)
}

/// Up to [`TILE`] windows through every layer and the head. Inlined into each
/// instruction-set wrapper so that the cell update vectorises at that width (the
/// matrix products pick their own kernels at run time).
#[inline(always)]
fn tile(m: &Fused, x: &[f32], points: usize, out: &mut [f32], s: &mut Scratch) {
    let h = m.config.hidden;
    let input = m.config.input;
    let b = x.len() / (points * input);
    let Scratch { z, gates, c, seq_a, seq_b } = s;
    for (l, layer) in m.layers.iter().enumerate() {
        let in_dim = layer.in_dim;
        let zw = in_dim + h;
        let seq_in: &[f32] = if l == 0 { x } else { seq_a };
        z.clear();
        z.resize(b * zw, 0.0);
        gates.resize(b * 4 * h, 0.0);
        c.clear();
        c.resize(b * h, 0.0);
        seq_b.resize(b * points * h, 0.0);
        for t in 0..points {
            for (w, zr) in z.chunks_exact_mut(zw).enumerate() {
                let at = (w * points + t) * in_dim;
                zr[..in_dim].copy_from_slice(&seq_in[at..at + in_dim]);
            }
            matmul(b, 4 * h, zw, gates, 4 * h, z, zw, &layer.w, false);
            for w in 0..b {
                let h_prev = &mut z[w * zw + in_dim..(w + 1) * zw];
                cell(&gates[w * 4 * h..(w + 1) * 4 * h], &layer.b, &mut c[w * h..(w + 1) * h], h_prev);
                seq_b[(w * points + t) * h..(w * points + t + 1) * h].copy_from_slice(h_prev);
            }
        }
        std::mem::swap(seq_a, seq_b);
    }
    for o in out.chunks_exact_mut(input) {
        o.copy_from_slice(&m.head_b);
    }
    matmul(b * points, input, h, out, input, seq_a, h, &m.head_w, true);
}

/// `dst (m × n) = [dst +] lhs (m × k) · rhs (k × n)`, all row-major with unit column
/// stride and the given row strides (`rhs` contiguous).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    rhs: &[f32],
    accumulate: bool,
) {
    if m == 0 {
        return;
    }
    assert!(
        n <= dst_rs
            && k <= lhs_rs
            && dst.len() >= (m - 1) * dst_rs + n
            && lhs.len() >= (m - 1) * lhs_rs + k
            && rhs.len() >= k * n,
        "matrix buffers of the wrong length"
    );
    // SAFETY: the assertion above keeps every element the strides reach inside its slice;
    // `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            lhs_rs as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The cell update of one window from its gate pre-activations and the bias:
/// `c ← σ(f)·c + σ(i)·tanh(g)`, `h ← σ(o)·tanh(c)`. Every slice is cut to the same
/// length first, so that the loop has no bounds checks and vectorises.
#[inline(always)]
fn cell(gates: &[f32], bias: &[f32], c: &mut [f32], h: &mut [f32]) {
    let n = c.len();
    let (i, f, g, o) = (&gates[..n], &gates[n..2 * n], &gates[2 * n..3 * n], &gates[3 * n..4 * n]);
    let (bi, bf, bg, bo) = (&bias[..n], &bias[n..2 * n], &bias[2 * n..3 * n], &bias[3 * n..4 * n]);
    let h = &mut h[..n];
    for k in 0..n {
        let ck = sigmoid(f[k] + bf[k]) * c[k] + sigmoid(i[k] + bi[k]) * tanh(g[k] + bg[k]);
        c[k] = ck;
        h[k] = sigmoid(o[k] + bo[k]) * tanh(ck);
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
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // The low mantissa bits of `shifted` hold `2²² + n`: adding the exponent bias and
    // shifting them into the exponent field gives `2ⁿ` (`n` is within −126..=127 after the
    // clamp). Integer operations only: a float-to-int cast would be done one value at a
    // time (Rust's cast saturates and maps NaN to 0) and stop the loop vectorising.
    p * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}
