//! The search of a [`Library`]: the UCR suite's cascade over all its signatures.
//!
//! Lower bounds first, for every signature (LB_KimFL, and LB_Keogh row by row against
//! the envelope built with the library); then DTWs in increasing order of bound, each
//! abandoned once its frontier plus the LB_Keogh of the rows ahead passes the
//! runner-up, until the next bound passes the runner-up and prunes the rest.

use super::kernel::{self, Prepared, DIAG_MAX_RADIUS};
#[cfg(target_arch = "x86_64")]
use super::{diagonal, Engine};
use super::{Dtw, DtwError, Envelope, Series};

/// Signatures prepared for searching with one band radius: their envelopes and the
/// kernel's layout are built here, once.
#[derive(Debug, Clone)]
pub struct Library {
    radius: usize,
    channels: usize,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    series: Series,
    envelope: Envelope,
    backward: Prepared,
}

impl Library {
    /// All signatures must have the same channels; lengths may differ.
    pub fn new(signatures: Vec<Series>, radius: usize) -> Result<Self, DtwError> {
        let channels = signatures.first().ok_or(DtwError::EmptyLibrary)?.channels;
        if let Some(index) = signatures.iter().position(|s| s.channels != channels) {
            return Err(DtwError::Channels { index, expected: channels, found: signatures[index].channels });
        }
        assert!(signatures.len() < 1 << 32, "search keys hold the index in 32 bits");
        let entries = signatures
            .into_iter()
            .map(|series| {
                let mut backward = Prepared::default();
                backward.backward(&series, false);
                Entry { envelope: Envelope::new(&series, radius), backward, series }
            })
            .collect();
        Ok(Self { radius, channels, entries })
    }

    pub fn radius(&self) -> usize {
        self.radius
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Number of signatures.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a library has at least one signature.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn signature(&self, index: usize) -> &Series {
        &self.entries[index].series
    }

    pub fn envelope(&self, index: usize) -> &Envelope {
        &self.entries[index].envelope
    }
}

/// One signature's distance to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Position in the [`Library`].
    pub index: usize,
    pub distance: f64,
}

/// The result of [`Dtw::search`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// `None` only when the search was bounded and no signature is within the bound.
    pub best: Option<Hit>,
    /// `None` for a library of one signature, or with fewer than two within the bound.
    pub runner_up: Option<Hit>,
    /// Signatures compared by DTW, `abandoned` included.
    pub computed: usize,
    /// DTWs that ended above the runner-up, most of them stopped early.
    pub abandoned: usize,
    /// Skipped because LB_Kim alone exceeded the runner-up.
    pub pruned_kim: usize,
    /// Skipped because LB_Keogh exceeded the runner-up (and LB_Kim did not).
    pub pruned_keogh: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn search_avx2(dtw: &mut Dtw, query: &Series, library: &Library, bound_sq: f32) -> Match {
    search_with::<true>(dtw, query, library, bound_sq)
}

/// The two nearest signatures so far, as (squared distance, index); ties go to the
/// lower index. Both start as the bound with no index (`usize::MAX`), so that nothing
/// beyond the bound gets in and the pruning threshold is the bound from the start.
struct Top {
    best: (f32, usize),
    second: (f32, usize),
    /// DTWs that did not make the top two.
    abandoned: usize,
}

impl Top {
    #[inline(always)]
    fn offer(&mut self, d: f32, k: usize) {
        let ahead = |than: (f32, usize)| d < than.0 || (d == than.0 && k < than.1);
        if ahead(self.best) {
            self.second = self.best;
            self.best = (d, k);
        } else if ahead(self.second) {
            self.second = (d, k);
        } else {
            self.abandoned += 1;
        }
    }
}

/// Lower bounds of every signature, before any DTW: visiting signatures from the most
/// promising on makes the runner-up tight after a few DTWs. Fills `dtw.order` (sorted),
/// `dtw.kim`, and `dtw.terms` with the per-row LB_Keogh terms, kept for the tail bound
/// of those that get a DTW; returns the rows per signature in `dtw.terms`.
#[inline(always)]
fn lower_bounds(dtw: &mut Dtw, query: &Series, library: &Library) -> usize {
    let stride = query.len.div_ceil(8) * 8;
    dtw.terms.clear();
    dtw.terms.resize(library.entries.len() * stride, 0.0);
    dtw.order.clear();
    dtw.kim.clear();
    for ((k, e), terms) in library.entries.iter().enumerate().zip(dtw.terms.chunks_exact_mut(stride)) {
        let kim = kernel::kim_sq(query, &e.series);
        let keogh = kernel::keogh_rows(&dtw.forward, &e.envelope, terms);
        dtw.kim.push(kim);
        dtw.order.push(u64::from(kim.max(keogh).to_bits()) << 32 | k as u64);
    }
    dtw.order.sort_unstable();
    stride
}

#[inline(always)]
pub(super) fn search_with<const AVX2: bool>(dtw: &mut Dtw, query: &Series, library: &Library, bound_sq: f32) -> Match {
    let r = library.radius;
    let diagonal_kernel = cfg!(target_arch = "x86_64") && AVX2 && r <= DIAG_MAX_RADIUS;
    #[cfg(target_arch = "x86_64")]
    let evex = dtw.engine == Engine::Avx512;
    dtw.forward.forward(query, AVX2);
    let stride = lower_bounds(dtw, query, library);

    // Bounds and distances are f32 sums in different orders: a bound may exceed the
    // distance it bounds by a few ulps per term. Prune only beyond that margin.
    let longest = library.entries.iter().map(|e| e.series.len).max().unwrap_or(0);
    let margin = 1.0 + 4.0 * (query.len + longest + query.channels) as f32 * f32::EPSILON;
    let mut top = Top { best: (bound_sq, usize::MAX), second: (bound_sq, usize::MAX), abandoned: 0 };
    let (mut computed, mut pruned_kim, mut pruned_keogh) = (0, 0, 0);
    let decode = |key: u64| (f32::from_bits((key >> 32) as u32), (key & 0xFFFF_FFFF) as usize);
    let mut pos = 0;
    while pos < dtw.order.len() {
        let (lb, k) = decode(dtw.order[pos]);
        let threshold = top.second.0 * margin;
        if lb > threshold {
            // Every later signature has a bound at least as high.
            for &later in &dtw.order[pos..] {
                if dtw.kim[decode(later).1] > threshold {
                    pruned_kim += 1;
                } else {
                    pruned_keogh += 1;
                }
            }
            break;
        }
        let e = &library.entries[k];
        kernel::keogh_tail(&dtw.terms[k * stride..(k + 1) * stride], query.len, &mut dtw.tail);
        // The vector kernel takes the next signature alongside if it passes the same
        // bound and has the same length: two DTWs side by side hide each other's
        // latency (the second does not get the first's result as its bound).
        let partner =
            dtw.order.get(pos + 1).map(|&key| decode(key)).filter(|&(lb2, k2)| {
                diagonal_kernel && lb2 <= threshold && library.entries[k2].series.len == e.series.len
            });
        match partner {
            #[cfg(target_arch = "x86_64")]
            Some((_, k2)) => {
                let e2 = &library.entries[k2];
                kernel::keogh_tail(&dtw.terms[k2 * stride..(k2 + 1) * stride], query.len, &mut dtw.tail2);
                // SAFETY: `diagonal_kernel` is only true inside `search_avx2`.
                let [d, d2] = unsafe {
                    diagonal(
                        evex,
                        &dtw.forward,
                        [&e.backward, &e2.backward],
                        query.channels,
                        r,
                        threshold,
                        [&dtw.tail, &dtw.tail2],
                    )
                };
                top.offer(d, k);
                top.offer(d2, k2);
                (computed, pos) = (computed + 2, pos + 2);
            }
            _ => {
                let d = match diagonal_kernel {
                    // SAFETY: as above.
                    #[cfg(target_arch = "x86_64")]
                    true => unsafe {
                        diagonal(evex, &dtw.forward, [&e.backward], query.channels, r, threshold, [&dtw.tail])[0]
                    },
                    _ => kernel::rows(query, &e.series, r, threshold, &dtw.tail, &mut dtw.prev, &mut dtw.cur),
                };
                top.offer(d, k);
                (computed, pos) = (computed + 1, pos + 1);
            }
        }
    }
    let (best, second, abandoned) = (top.best, top.second, top.abandoned);
    let hit = |(d, index): (f32, usize)| Hit { index, distance: f64::from(d).sqrt() };
    Match {
        best: (best.1 != usize::MAX).then(|| hit(best)),
        runner_up: (second.1 != usize::MAX).then(|| hit(second)),
        computed,
        abandoned,
        pruned_kim,
        pruned_keogh,
    }
}
