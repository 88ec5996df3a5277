//! The anti-diagonal DTW kernel for x86-64 with AVX2 and FMA, for bands of radius ≤ 7.
//!
//! The cells of one anti-diagonal (i + j = k) depend only on the two anti-diagonals
//! before it, and inside a band of radius r an anti-diagonal holds at most r + 1 cells:
//! with r ≤ 7 a whole anti-diagonal fits in one register of 8 `f32`, and the recurrence
//! runs 8 cells per instruction. Walking rows instead leaves one cell per step on a
//! serial min → add chain. What remains serial is one rotate → min → add per
//! anti-diagonal, next to some 35 instructions of point costs: the loop is bound about
//! as much by instruction throughput as by that chain, so running two signatures side
//! by side, as a search does, gains only some 5%. The loop's constants and diagonals
//! need more than 16 vector registers: CPUs with AVX-512VL get a copy compiled for 32
//! (same instructions, same numbers), 10–15% faster.

use std::arch::x86_64::*;

use super::kernel::{Prepared, DIAG_MAX_RADIUS, PAD};

/// Squared DTW_D distances of `a` (forward) and each of `bs` (backward, all of one
/// length) in a band of radius `r`, each computed as by `kernel::rows`, bit for bit.
/// A signature's result is +∞ once every cell of two consecutive anti-diagonals, each
/// plus the tail bound of its row (`tails`), exceeds `threshold`: a warping path may
/// skip one anti-diagonal with a diagonal step, never two. `CH` is the channel count
/// if known at compile time (the loop over channels unrolls), or 0 to use `channels`.
///
/// # Safety
/// The CPU has AVX2 and FMA. The preconditions of the pointer arithmetic are checked
/// on entry.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn squared<const CH: usize, const K: usize>(
    a: &Prepared,
    bs: [&Prepared; K],
    channels: usize,
    r: usize,
    threshold: f32,
    tails: [&[f32]; K],
) -> [f32; K] {
    body::<CH, K>(a, bs, channels, r, threshold, tails)
}

/// [`squared`] compiled for CPUs that also have AVX-512VL: the same instructions
/// (so the same numbers) with 32 vector registers instead of 16, so the loop keeps
/// its constants and diagonals without spilling to the stack.
///
/// # Safety
/// As [`squared`], and the CPU has AVX-512F and AVX-512VL.
#[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
pub(super) unsafe fn squared_evex<const CH: usize, const K: usize>(
    a: &Prepared,
    bs: [&Prepared; K],
    channels: usize,
    r: usize,
    threshold: f32,
    tails: [&[f32]; K],
) -> [f32; K] {
    body::<CH, K>(a, bs, channels, r, threshold, tails)
}

#[inline(always)]
unsafe fn body<const CH: usize, const K: usize>(
    a: &Prepared,
    bs: [&Prepared; K],
    channels: usize,
    r: usize,
    threshold: f32,
    tails: [&[f32]; K],
) -> [f32; K] {
    let (n, m) = (a.len, bs[0].len);
    let ch = if CH > 0 { CH } else { channels };
    assert!(r <= DIAG_MAX_RADIUS && n > 0 && m > 0 && ch == channels);
    assert!(a.data.len() >= ch * a.stride);
    for (b, tail) in bs.iter().zip(&tails) {
        assert!(b.len == m && b.stride == bs[0].stride && b.data.len() >= ch * b.stride);
        assert!(tail.len() >= n + 2 * PAD);
    }
    if n.abs_diff(m) > r {
        return [f32::INFINITY; K];
    }
    // Lane q of anti-diagonal k holds offset d = i − j = base + 2q, where base ∈
    // {−r, 1 − r} has the parity of k: "even" diagonals (base = −r) hold d = −r, −r+2,
    // …, r in lanes 0..=r; "odd" ones d = 1−r, …, r−1 in lanes 0..r. Lanes past those
    // are outside the band: +∞.
    let lane = _mm256_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
    let inf = _mm256_set1_ps(f32::INFINITY);
    let zero = _mm256_setzero_ps();
    let mask_even = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(lane, _mm256_set1_ps(r as f32)), inf);
    let mask_odd = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(lane, _mm256_set1_ps(r as f32 - 1.0)), inf);
    // Predecessors of (i, j): (i−1, j−1) sits in the same lane two diagonals back;
    // (i−1, j) and (i, j−1) one diagonal back, in lanes q−1 and q on even diagonals, q
    // and q+1 on odd ones. A rotation brings the other lane in; the lane that wraps
    // around is always +∞ (lane 7 of an odd diagonal is outside the band for r ≤ 7,
    // and lane 0 of an even diagonal reads it).
    let from_below = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
    let from_above = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    let thr = _mm256_set1_ps(threshold);
    let (sa, sb) = (a.stride, bs[0].stride);

    // Diagonal −2 (same kind as diagonal 0) holds the virtual corner (−1, −1) = 0 at
    // d = 0; diagonal −1 holds nothing.
    let first_even = r % 2 == 0;
    let corner_lane = if first_even { r / 2 } else { (r - 1) / 2 };
    let corner = _mm256_cmp_ps::<_CMP_EQ_OQ>(lane, _mm256_set1_ps(corner_lane as f32));
    let mut d2 = [_mm256_blendv_ps(inf, zero, corner); K];
    let mut d1 = [inf; K];

    // An even diagonal k starts at row i0 = (k − r)/2 and backward column
    // m − 1 − (k + r)/2; the odd diagonal after it one row further, same column; the
    // next even one a row further and a column back. The offsets stay inside the
    // padding: i0 ≥ −r/2, i0 + 7 < n + PAD, and the backward column lies in [−r, m − 1]
    // because |n − m| ≤ r. Pointers to the first lane of the first even diagonal,
    // k = r mod 2 (an odd diagonal 0 before it has the same row, the next column).
    let (k0, ri) = ((r % 2) as isize, r as isize);
    let (row, col) = ((k0 - ri) / 2, m as isize - 1 - (k0 + ri) / 2);
    let mut pa = a.data.as_ptr().offset(PAD as isize + row);
    let mut pb = bs.map(|b| b.data.as_ptr().offset(PAD as isize + col));
    let mut pt = tails.map(|t| t.as_ptr().offset(PAD as isize + row + 1));
    let mut live = [true; K];
    let mut out = [f32::INFINITY; K];

    // One anti-diagonal of signature w: query from `qa`, signature from `qb`.
    macro_rules! diagonal {
        ($w:expr, $qa:expr, $qb:expr, $mask:expr, $rotate:expr) => {{
            let (w, qa, qb) = ($w, $qa, $qb);
            // Even and odd channels in two chains, as `kernel::point_cost`.
            let mut even = $mask;
            let mut odd = zero;
            let mut c = 0;
            while c + 2 <= ch {
                let x0 = _mm256_sub_ps(_mm256_loadu_ps(qa.add(c * sa)), _mm256_loadu_ps(qb.add(c * sb)));
                let x1 = _mm256_sub_ps(_mm256_loadu_ps(qa.add((c + 1) * sa)), _mm256_loadu_ps(qb.add((c + 1) * sb)));
                even = _mm256_fmadd_ps(x0, x0, even);
                odd = _mm256_fmadd_ps(x1, x1, odd);
                c += 2;
            }
            if c < ch {
                let x0 = _mm256_sub_ps(_mm256_loadu_ps(qa.add(c * sa)), _mm256_loadu_ps(qb.add(c * sb)));
                even = _mm256_fmadd_ps(x0, x0, even);
            }
            let cost = _mm256_add_ps(even, odd);
            // min(d2, d1) does not wait for the rotation: the serial chain is
            // rotate → min → add.
            let near = _mm256_permutevar8x32_ps(d1[w], $rotate);
            let dk = _mm256_add_ps(cost, _mm256_min_ps(near, _mm256_min_ps(d2[w], d1[w])));
            d2[w] = d1[w];
            d1[w] = dk;
        }};
    }

    let last = n + m - 2;
    let mut k = 0;
    if !first_even {
        for (w, b) in pb.iter().enumerate() {
            diagonal!(w, pa, b.add(1), mask_odd, from_above);
        }
        k = 1;
    }
    // Pairs (even, odd), so each diagonal's kind is known at compile time.
    while k < last {
        for w in 0..K {
            if !live[w] {
                continue;
            }
            diagonal!(w, pa, pb[w], mask_even, from_below);
            let de = d1[w];
            diagonal!(w, pa.add(1), pb[w], mask_odd, from_above);
            // Lanes plus the tail bound of their rows: from i0 (even), i0 + 1 (odd).
            let low = _mm256_min_ps(
                _mm256_add_ps(de, _mm256_loadu_ps(pt[w])),
                _mm256_add_ps(d1[w], _mm256_loadu_ps(pt[w].add(1))),
            );
            if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(low, thr)) == 0xFF {
                live[w] = false;
            }
            (pb[w], pt[w]) = (pb[w].sub(1), pt[w].add(1));
        }
        if live == [false; K] {
            return out;
        }
        pa = pa.add(1);
        k += 2;
    }
    // The last cell (n−1, m−1): d = n − m on diagonal n + m − 2.
    let base = if (last + r) % 2 == 0 { -ri } else { 1 - ri };
    let q = ((n as isize - m as isize) - base) / 2;
    for w in 0..K {
        if !live[w] {
            continue;
        }
        if k == last {
            diagonal!(w, pa, pb[w], mask_even, from_below);
        }
        let mut lanes = [0.0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), d1[w]);
        out[w] = lanes[q as usize];
    }
    let _ = d2; // the last diagonal's shift into d2 is never read
    out
}

/// Writes the first `8·⌊n/8⌋` points of the time-major 8-channel `src` into
/// `dst`'s channel rows (`stride` apart, after `PAD`), reversed in time if
/// `reverse`, by 8×8 transposes in registers; returns how many points it wrote.
///
/// # Safety
/// The CPU has AVX2; `dst` holds 8 rows of `stride ≥ n + 2·PAD` values.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn transpose8(src: &[f32], dst: &mut [f32], stride: usize, reverse: bool) -> usize {
    let n = src.len() / 8;
    assert!(dst.len() >= 8 * stride && stride >= n + 2 * PAD);
    let flip = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut t = 0;
    while t + 8 <= n {
        let mut r = [_mm256_setzero_ps(); 8];
        for (k, v) in r.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(s.add((t + k) * 8));
        }
        let (a0, a1) = (_mm256_unpacklo_ps(r[0], r[1]), _mm256_unpackhi_ps(r[0], r[1]));
        let (a2, a3) = (_mm256_unpacklo_ps(r[2], r[3]), _mm256_unpackhi_ps(r[2], r[3]));
        let (a4, a5) = (_mm256_unpacklo_ps(r[4], r[5]), _mm256_unpackhi_ps(r[4], r[5]));
        let (a6, a7) = (_mm256_unpacklo_ps(r[6], r[7]), _mm256_unpackhi_ps(r[6], r[7]));
        let (b0, b1) = (_mm256_shuffle_ps::<0x44>(a0, a2), _mm256_shuffle_ps::<0xEE>(a0, a2));
        let (b2, b3) = (_mm256_shuffle_ps::<0x44>(a1, a3), _mm256_shuffle_ps::<0xEE>(a1, a3));
        let (b4, b5) = (_mm256_shuffle_ps::<0x44>(a4, a6), _mm256_shuffle_ps::<0xEE>(a4, a6));
        let (b6, b7) = (_mm256_shuffle_ps::<0x44>(a5, a7), _mm256_shuffle_ps::<0xEE>(a5, a7));
        let channels = [
            _mm256_permute2f128_ps::<0x20>(b0, b4),
            _mm256_permute2f128_ps::<0x20>(b1, b5),
            _mm256_permute2f128_ps::<0x20>(b2, b6),
            _mm256_permute2f128_ps::<0x20>(b3, b7),
            _mm256_permute2f128_ps::<0x31>(b0, b4),
            _mm256_permute2f128_ps::<0x31>(b1, b5),
            _mm256_permute2f128_ps::<0x31>(b2, b6),
            _mm256_permute2f128_ps::<0x31>(b3, b7),
        ];
        for (c, v) in channels.into_iter().enumerate() {
            if reverse {
                _mm256_storeu_ps(d.add(c * stride + PAD + n - t - 8), _mm256_permutevar8x32_ps(v, flip));
            } else {
                _mm256_storeu_ps(d.add(c * stride + PAD + t), v);
            }
        }
        t += 8;
    }
    t
}
