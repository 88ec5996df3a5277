//! The inner loops: squared DTW_D distance with early abandoning, and the lower bounds.
//!
//! Two kernels compute the same numbers, bit for bit (the detector's outputs must not
//! depend on the machine it runs on): `super::avx2::squared` by anti-diagonals, for
//! bands of radius ≤ 7 on CPUs with AVX2, and [`rows`], any radius, portable: the
//! textbook banded DP over two rows. This file holds the portable one, the layout the
//! vector one reads ([`Prepared`]) and the lower bounds.
//!
//! Both compute a point cost as `Σ_c (a_c − b_c)²`, even channels and odd channels in
//! two fused multiply-add chains added at the end ([`point_cost`]), and a cell as
//! `cost + min(three predecessors)`: min is exact, so the order of the minima never
//! changes a result. (`f32::mul_add` is an instruction wherever the vector kernel runs;
//! on x86 CPUs without FMA, from before 2013, it is a correct but slow library call.)

use super::{Envelope, Series};

/// Points of padding before and after each channel of a [`Prepared`] series: an
/// anti-diagonal load of 8 lanes may start up to 7 points outside the series.
pub(super) const PAD: usize = 8;
/// Widest band the anti-diagonal kernel takes: r + 1 cells must fit in 8 lanes.
pub(super) const DIAG_MAX_RADIUS: usize = 7;

/// A series in the layout of the anti-diagonal kernel: channel-major, each channel
/// padded with [`PAD`] points on both sides. One side of a comparison runs forward,
/// the other backward, so that walking along an anti-diagonal (i up, j down) reads
/// both as contiguous vectors. The forward side pads with +∞ and the backward side
/// with −∞: a cell outside the matrix then costs +∞ on either side, never ∞ − ∞.
#[derive(Debug, Clone, Default)]
pub(super) struct Prepared {
    pub(super) data: Vec<f32>,
    pub(super) len: usize,
    pub(super) stride: usize,
}

impl Prepared {
    /// Rebuilds `self` from `s` (reusing its buffer) running forward in time. `avx2`:
    /// the caller runs with AVX2 enabled.
    #[inline(always)]
    pub(super) fn forward(&mut self, s: &Series, avx2: bool) {
        self.fill(s, f32::INFINITY, false, avx2);
    }

    /// Rebuilds `self` from `s` (reusing its buffer) running backward in time.
    #[inline(always)]
    pub(super) fn backward(&mut self, s: &Series, avx2: bool) {
        self.fill(s, f32::NEG_INFINITY, true, avx2);
    }

    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn fill(&mut self, s: &Series, pad: f32, reverse: bool, avx2: bool) {
        let (n, ch) = (s.len, s.channels);
        self.len = n;
        self.stride = n + 2 * PAD;
        self.data.clear();
        self.data.resize(ch * self.stride, pad);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if avx2 && ch == 8 {
            // SAFETY: `avx2` is only true where the CPU has AVX2.
            done = unsafe { super::avx2::transpose8(&s.data, &mut self.data, self.stride, reverse) };
        }
        // The rest channel by channel, so the writes are sequential.
        for (c, row) in self.data.chunks_exact_mut(self.stride).enumerate().filter(|_| done < n) {
            let row = &mut row[PAD..PAD + n];
            let column = s.data[done * ch + c..].iter().step_by(ch);
            if reverse {
                row[..n - done].iter_mut().rev().zip(column).for_each(|(d, &v)| *d = v);
            } else {
                row[done..].iter_mut().zip(column).for_each(|(d, &v)| *d = v);
            }
        }
    }
}

/// `Σ_c (a_c − b_c)²` in the summation order of the anti-diagonal kernel.
#[inline(always)]
pub(super) fn point_cost(a: &[f32], b: &[f32]) -> f32 {
    let (mut even, mut odd) = (0.0f32, 0.0f32);
    let mut pairs = a.chunks_exact(2).zip(b.chunks_exact(2));
    for (x, y) in &mut pairs {
        let (d0, d1) = (x[0] - y[0], x[1] - y[1]);
        even = d0.mul_add(d0, even);
        odd = d1.mul_add(d1, odd);
    }
    if a.len() % 2 == 1 {
        let d = a[a.len() - 1] - b[a.len() - 1];
        even = d.mul_add(d, even);
    }
    even + odd
}

/// Channel-major upper and lower envelopes, rows padded to a multiple of 8 with +∞ and
/// −∞ (which bound nothing).
pub(super) fn envelope(s: &Series, radius: usize) -> (usize, Vec<f32>, Vec<f32>) {
    let (n, ch) = (s.len, s.channels);
    let stride = n.div_ceil(8) * 8;
    let mut upper = vec![f32::INFINITY; ch * stride];
    let mut lower = vec![f32::NEG_INFINITY; ch * stride];
    for c in 0..ch {
        for t in 0..n {
            let span = s.data[t.saturating_sub(radius) * ch + c..(t + radius + 1).min(n) * ch].iter().step_by(ch);
            upper[c * stride + t] = span.clone().fold(f32::NEG_INFINITY, |x, &v| x.max(v));
            lower[c * stride + t] = span.fold(f32::INFINITY, |x, &v| x.min(v));
        }
    }
    (stride, upper, lower)
}

/// Squared distance from `x` to the interval `[l, u]`. At most one of `x − u` and
/// `l − x` is positive; the compare-and-selects compile to `maxps` (`f32::max` would
/// add NaN handling, and no NaN can occur here).
#[inline(always)]
fn keogh_term(x: f32, u: f32, l: f32) -> f32 {
    let (above, below) = (x - u, l - x);
    let out = if above > below { above } else { below };
    let out = if out > 0.0 { out } else { 0.0 };
    out * out
}

/// LB_Keogh term of each row of the query `q` against `env`: `out[i]` for the rows both
/// have, 0 beyond. Returns the squared LB_Keogh, their sum. Channel by channel over
/// whole rows (the layouts are channel-major for this): the loops are element-wise,
/// which vectorises, with no horizontal sum per row.
#[inline(always)]
pub(super) fn keogh_rows(q: &Prepared, env: &Envelope, out: &mut [f32]) -> f32 {
    let rows = q.len.min(env.len);
    let width = rows.div_ceil(8) * 8;
    let out = &mut out[..width];
    out.fill(0.0);
    for c in 0..env.channels {
        let x = &q.data[c * q.stride + PAD..][..width];
        let u = &env.upper[c * env.stride..][..width];
        let l = &env.lower[c * env.stride..][..width];
        for (((o, &x), &u), &l) in out.iter_mut().zip(x).zip(u).zip(l) {
            *o += keogh_term(x, u, l);
        }
    }
    // Past the last row the query's padding is +∞.
    out[rows..].fill(0.0);
    let mut total = [0.0f32; 8];
    for block in out.chunks_exact(8) {
        for k in 0..8 {
            total[k] += block[k];
        }
    }
    total.iter().sum()
}

/// `tail[PAD + i] = Σ_{i' ≥ i} terms[i']` (zero outside): whatever a warping path has
/// cost by row i, it still pays at least `tail[PAD + i + 1]`. The UCR suite's
/// cumulative bound. Summed within blocks of 8 rows first, so that the blocks' chains
/// of additions overlap instead of forming one chain of n.
#[inline(always)]
pub(super) fn keogh_tail(terms: &[f32], n: usize, tail: &mut Vec<f32>) {
    tail.clear();
    tail.resize(n + 2 * PAD, 0.0);
    let rows = &mut tail[PAD..PAD + n];
    for (block, terms) in rows.chunks_mut(8).zip(terms.chunks(8)) {
        let mut acc = 0.0f32;
        for (t, &x) in block.iter_mut().zip(terms).rev() {
            acc += x;
            *t = acc;
        }
    }
    let mut after = 0.0f32;
    for block in rows.chunks_mut(8).rev() {
        let own = block[0];
        block.iter_mut().for_each(|t| *t += after);
        after += own;
    }
}

/// Squared LB_Keogh of `q` against `env`, row by row; stops once the partial sum
/// exceeds `bound` and returns it.
pub(super) fn keogh_sq(q: &Series, env: &Envelope, bound: f32) -> f32 {
    let mut total = 0.0f32;
    for t in 0..q.len.min(env.len) {
        for (c, &x) in q.point(t).iter().enumerate() {
            let at = c * env.stride + t;
            total += keogh_term(x, env.upper[at], env.lower[at]);
        }
        if total > bound {
            break;
        }
    }
    total
}

/// Squared LB_Kim, the UCR suite's LB_KimFL: every warping path starts at (0, 0) and
/// ends at (n−1, m−1). (Its next level, the cheapest cell next to each end, costs 4
/// more point costs and pruned nothing more on z-normalised windows.)
#[inline(always)]
pub(super) fn kim_sq(a: &Series, b: &Series) -> f32 {
    let (n, m) = (a.len, b.len);
    let first = cell(a, b, 0, 0);
    if n + m > 2 {
        first + cell(a, b, n - 1, m - 1)
    } else {
        first
    }
}

#[inline(always)]
fn cell(a: &Series, b: &Series, i: usize, j: usize) -> f32 {
    point_cost(a.point(i), b.point(j))
}

/// Banded DTW over rows, any radius: the squared distance, or +∞ once every cell of a
/// row plus the tail bound exceeds `threshold`. `tail` as from [`keogh_tail`] (or
/// zeros); `prev` and `cur` are scratch rows.
#[inline(always)]
pub(super) fn rows(
    a: &Series,
    b: &Series,
    r: usize,
    threshold: f32,
    tail: &[f32],
    prev: &mut Vec<f32>,
    cur: &mut Vec<f32>,
) -> f32 {
    const INF: f32 = f32::INFINITY;
    let (n, m) = (a.len, b.len);
    if n.abs_diff(m) > r {
        return INF; // (n−1, m−1) lies outside the band: no warping path
    }
    // Column j of the matrix is index j + 1; index 0 is the column before the first.
    prev.clear();
    prev.resize(m + 2, INF);
    cur.clear();
    cur.resize(m + 2, INF);
    prev[0] = 0.0;
    for i in 0..n {
        let (lo, hi) = (i.saturating_sub(r), (i + r).min(m - 1));
        let ai = a.point(i);
        let mut left = INF;
        let mut row_min = INF;
        cur[lo] = INF;
        for j in lo..=hi {
            let up = prev[j + 1];
            let diag = prev[j];
            let best = if diag < up { diag } else { up };
            let best = if left < best { left } else { best };
            left = point_cost(ai, b.point(j)) + best;
            cur[j + 1] = left;
            row_min = if left < row_min { left } else { row_min };
        }
        // The next row reads up to index hi + 2.
        cur[hi + 2] = INF;
        if row_min + tail[PAD + i + 1] > threshold {
            return INF;
        }
        std::mem::swap(prev, cur);
    }
    prev[m]
}
