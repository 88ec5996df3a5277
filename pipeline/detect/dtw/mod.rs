//! Signature matching by dynamic time warping.
//!
//! In: an instance's recent telemetry window and a [`Library`] of failure signatures,
//! each a multivariate [`Series`] (time-major, one `f32` per channel and point). Out: a
//! [`Match`] with the nearest signature and the runner-up, their DTW distances, and
//! how much work the search skipped; on request the per-channel share of a distance.
//!
//! The distance is DTW_D ("dependent" multivariate DTW), as dtaidistance's
//! `dtw_ndim` and tslearn compute it: the cost of matching point `i` of `a` with point
//! `j` of `b` is `Σ_c (a[i][c] − b[j][c])²`, a cell adds its cost to the cheapest of
//! its three predecessors, only cells with `|i − j| ≤ radius` count (a Sakoe–Chiba
//! band; dtaidistance's `window = radius + 1`), and the distance is the square root of
//! the corner cell. Series of different lengths compare; if the lengths differ by more
//! than the radius no warping path exists and the distance is +∞.
//!
//! Guarantees: a search returns exactly the best and runner-up of a brute-force scan
//! (ties go to the lower index), whatever it pruned; the numbers do not depend on the
//! CPU (the vector kernel and the portable one agree bit for bit); no comparison
//! allocates once a [`Dtw`] has seen series of the sizes at hand.
//!
//! Why `f32`, measured on the 2-core Zen 4 the peers were timed on: the anti-diagonal
//! kernel (see `avx2.rs`) holds the 7 cells of a radius-6 diagonal in one 256-bit
//! register of `f32`; the same kernel in `f64`, 8 lanes in a 512-bit register, ran
//! full DTWs at 2.65 M/s against 2.8 M/s for `f32` (with its abandon checks), and
//! needs AVX-512 for that: on AVX2 an `f64` diagonal takes two registers and a
//! cross-register shuffle on the serial path, and the lower bounds (a third of a
//! search) would run on half as many lanes. Against the `f64` definition the relative
//! error stays below 1e-5 (checked by the tests; about 3e-8 on the benchmark windows).
//! Series are time-major (`[t][channel]`) as they arrive; the kernel reads a
//! channel-major copy, made once per signature and once per query.
//!
//! Speed comes from the UCR suite's cascade: LB_Kim and LB_Keogh (against envelopes
//! built once per signature) order the signatures and prune those that cannot beat the
//! runner-up, and each DTW stops early once every cell of its frontier, plus the
//! LB_Keogh bound of the rows still ahead, exceeds the runner-up. The pruning bound is
//! the runner-up, not the best, because the detector needs both.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod kernel;
mod search;
/// The smallest f32 at or above `bound²` (rounding down could abandon a distance equal
/// to the bound); `None` for a negative or NaN bound, which no distance is within.
fn squared_bound(bound: f64) -> Option<f32> {
    if bound.is_nan() || bound < 0.0 {
        return None;
    }
    let sq = bound * bound;
    let mut threshold = sq as f32;
    if f64::from(threshold) < sq && threshold.is_finite() {
        threshold = f32::from_bits(threshold.to_bits() + 1);
    }
    Some(threshold)
}

#[cfg(test)]
mod tests;

use kernel::{Prepared, PAD};
pub use search::{Hit, Library, Match};

/// Why a series or a library was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DtwError {
    #[error("a series needs at least one point of at least one channel, got {values} values in {channels} channels")]
    Empty { values: usize, channels: usize },
    #[error("{values} values do not make whole points of {channels} channels")]
    Ragged { values: usize, channels: usize },
    #[error("point {point} channel {channel} is {value}, not a finite f32")]
    NotFinite { point: usize, channel: usize, value: f64 },
    #[error("a library needs at least one signature")]
    EmptyLibrary,
    #[error("signature {index} has {found} channels, signature 0 has {expected}")]
    Channels { index: usize, expected: usize, found: usize },
}

/// A multivariate time series: `len` points of `channels` values, time-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    len: usize,
    channels: usize,
    data: Vec<f32>,
}

impl Series {
    /// `data` holds point 0's channels, then point 1's, …; every value finite.
    pub fn new(channels: usize, data: Vec<f32>) -> Result<Self, DtwError> {
        let values = data.len();
        if channels == 0 || values == 0 {
            return Err(DtwError::Empty { values, channels });
        }
        if values % channels != 0 {
            return Err(DtwError::Ragged { values, channels });
        }
        if let Some(at) = data.iter().position(|v| !v.is_finite()) {
            let (point, channel) = (at / channels, at % channels);
            return Err(DtwError::NotFinite { point, channel, value: f64::from(data[at]) });
        }
        Ok(Self { len: values / channels, channels, data })
    }

    /// As [`Series::new`], rounding each value to `f32` (values beyond its range fail).
    pub fn from_f64(channels: usize, data: &[f64]) -> Result<Self, DtwError> {
        let narrow: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        match Self::new(channels, narrow) {
            Err(DtwError::NotFinite { point, channel, .. }) => {
                Err(DtwError::NotFinite { point, channel, value: data[point * channels + channel] })
            }
            other => other,
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a series has at least one point.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The channels of point `t`.
    pub fn point(&self, t: usize) -> &[f32] {
        &self.data[t * self.channels..(t + 1) * self.channels]
    }

    /// All values, time-major.
    pub fn values(&self) -> &[f32] {
        &self.data
    }
}

/// Per point and channel, the largest and smallest value of a series within `radius`
/// points: what LB_Keogh compares a query against. Built once per signature.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    radius: usize,
    len: usize,
    channels: usize,
    /// Channel-major, `stride` (len rounded up to 8) values per channel.
    stride: usize,
    upper: Vec<f32>,
    lower: Vec<f32>,
}

impl Envelope {
    pub fn new(series: &Series, radius: usize) -> Self {
        let (stride, upper, lower) = kernel::envelope(series, radius);
        Self { radius, len: series.len, channels: series.channels, stride, upper, lower }
    }

    pub fn radius(&self) -> usize {
        self.radius
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: built from a series, which has at least one point.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The instruction set the kernels run with, chosen once per [`Dtw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// AVX2 and FMA, and AVX-512VL for the DTW kernel's extra registers.
    Avx512,
    /// AVX2 and FMA.
    Avx2,
    Portable,
}

impl Engine {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                return Self::Avx512;
            }
            return Self::Avx2;
        }
        Self::Portable
    }
}

/// DTW with a Sakoe–Chiba band of a given radius, and the scratch space its
/// comparisons reuse. One per thread.
#[derive(Debug, Clone)]
pub struct Dtw {
    radius: usize,
    engine: Engine,
    forward: Prepared,
    backward: Prepared,
    tail: Vec<f32>,
    /// The tail bound of a second signature compared side by side with the first.
    tail2: Vec<f32>,
    prev: Vec<f32>,
    cur: Vec<f32>,
    /// Search order: lower bound's bits (non-negative floats order as their bits) over
    /// the signature's index.
    order: Vec<u64>,
    kim: Vec<f32>,
    /// LB_Keogh per signature and row, the query's length rounded up to 8 apart.
    terms: Vec<f32>,
}

impl Dtw {
    pub fn new(radius: usize) -> Self {
        Self::with_engine(radius, Engine::detect())
    }

    fn with_engine(radius: usize, engine: Engine) -> Self {
        Self {
            radius,
            engine,
            forward: Prepared::default(),
            backward: Prepared::default(),
            tail: Vec::new(),
            tail2: Vec::new(),
            prev: Vec::new(),
            cur: Vec::new(),
            order: Vec::new(),
            kim: Vec::new(),
            terms: Vec::new(),
        }
    }

    pub fn radius(&self) -> usize {
        self.radius
    }

    /// DTW distance of `a` and `b`.
    ///
    /// # Panics
    /// If their channel counts differ.
    pub fn distance(&mut self, a: &Series, b: &Series) -> f64 {
        f64::from(self.squared(a, b, f32::INFINITY)).sqrt()
    }

    /// DTW distance of `a` and `b` if it is at most `bound`; `None` otherwise, usually
    /// found out long before the end (every cell of the frontier exceeds the bound).
    /// When `Some`, the same number as [`Dtw::distance`].
    ///
    /// # Panics
    /// If their channel counts differ.
    pub fn distance_bounded(&mut self, a: &Series, b: &Series, bound: f64) -> Option<f64> {
        let threshold = squared_bound(bound)?;
        let d = self.squared(a, b, threshold);
        (d <= threshold).then(|| f64::from(d).sqrt())
    }

    fn squared(&mut self, a: &Series, b: &Series, threshold: f32) -> f32 {
        assert_eq!(a.channels, b.channels, "DTW of series with different channels");
        match self.engine {
            // SAFETY: the engine is Avx2 or Avx512 only on CPUs with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2 | Engine::Avx512 => unsafe { squared_avx2(self, a, b, threshold) },
            _ => squared_with::<false>(self, a, b, threshold),
        }
    }

    /// The nearest signature to `query` and the runner-up, as a scan of every
    /// signature would find them, skipping those that lower bounds rule out.
    ///
    /// # Panics
    /// If the library has another radius than `self` or other channels than `query`.
    pub fn search(&mut self, query: &Series, library: &Library) -> Match {
        self.search_within(query, library, f64::INFINITY)
    }

    /// [`Dtw::search`] among the signatures within DTW distance `bound` of `query`
    /// only: the UCR suite's best-so-far starts at the bound instead of infinity, so
    /// that signatures no closer than it cost their lower bounds at most. The best is
    /// `None` when no signature is within the bound, the runner-up when one is. A
    /// matcher that never reports a match below some confidence passes the distance of
    /// that confidence here and gets the same answer as from a full search for every
    /// window that has such a match.
    ///
    /// # Panics
    /// As [`Dtw::search`].
    pub fn search_within(&mut self, query: &Series, library: &Library, bound: f64) -> Match {
        assert_eq!(self.radius, library.radius(), "library built for another radius");
        assert_eq!(query.channels, library.channels(), "query and library have different channels");
        // A NaN or negative bound admits nothing: no squared distance is below -1.
        let bound_sq = squared_bound(bound).unwrap_or(-1.0);
        match self.engine {
            // SAFETY: as in `squared`.
            #[cfg(target_arch = "x86_64")]
            Engine::Avx2 | Engine::Avx512 => unsafe { search::search_avx2(self, query, library, bound_sq) },
            _ => search::search_with::<false>(self, query, library, bound_sq),
        }
    }

    /// How much each channel adds to the squared distance along the optimal warping
    /// path (they sum to `distance²`); `None` if no path exists. For explaining an
    /// alert: computed in `f64` over the whole band, not for the hot path (on an exact
    /// tie the path may differ from the one behind [`Dtw::distance`]).
    ///
    /// # Panics
    /// If their channel counts differ.
    pub fn channel_contributions(&mut self, a: &Series, b: &Series) -> Option<Vec<f64>> {
        assert_eq!(a.channels, b.channels, "DTW of series with different channels");
        let (n, m, r) = (a.len, b.len, self.radius);
        if n.abs_diff(m) > r {
            return None;
        }
        let cost = |i: usize, j: usize| -> f64 {
            a.point(i).iter().zip(b.point(j)).map(|(&x, &y)| f64::from(x - y).powi(2)).sum()
        };
        let at = |i: usize, j: usize| i * m + j;
        let mut d = vec![f64::INFINITY; n * m];
        for i in 0..n {
            for j in i.saturating_sub(r)..(i + r + 1).min(m) {
                let before = match (i, j) {
                    (0, 0) => 0.0,
                    (0, _) => d[at(0, j - 1)],
                    (_, 0) => d[at(i - 1, 0)],
                    _ => d[at(i - 1, j - 1)].min(d[at(i - 1, j)]).min(d[at(i, j - 1)]),
                };
                d[at(i, j)] = cost(i, j) + before;
            }
        }
        let mut share = vec![0.0; a.channels];
        let (mut i, mut j) = (n - 1, m - 1);
        loop {
            for ((s, &x), &y) in share.iter_mut().zip(a.point(i)).zip(b.point(j)) {
                *s += f64::from(x - y).powi(2);
            }
            if i == 0 && j == 0 {
                return Some(share);
            }
            // Step back to the cheapest predecessor, preferring the diagonal.
            let candidates = [(i > 0 && j > 0, 1, 1), (i > 0, 1, 0), (j > 0, 0, 1)];
            let (_, di, dj) = candidates
                .into_iter()
                .filter(|&(ok, ..)| ok)
                .min_by(|x, y| d[at(i - x.1, j - x.2)].total_cmp(&d[at(i - y.1, j - y.2)]))
                .expect("a cell other than (0, 0) has a predecessor");
            (i, j) = (i - di, j - dj);
        }
    }
}

/// LB_Kim of `a` and `b` (the UCR suite's LB_KimFL): from the costs of the first and
/// the last cell, which every warping path pays. A lower bound of [`Dtw::distance`] at
/// any radius.
///
/// # Panics
/// If their channel counts differ.
pub fn lb_kim(a: &Series, b: &Series) -> f64 {
    assert_eq!(a.channels, b.channels, "bound of series with different channels");
    f64::from(kernel::kim_sq(a, b)).sqrt()
}

/// LB_Keogh of `query` against a signature's envelope: a lower bound of their DTW
/// distance with the envelope's radius. Stops summing once it exceeds `bound` and
/// returns what it has, which then also exceeds `bound`.
///
/// # Panics
/// If their channel counts differ.
pub fn lb_keogh(query: &Series, envelope: &Envelope, bound: f64) -> f64 {
    assert_eq!(query.channels, envelope.channels, "bound of series with different channels");
    f64::from(kernel::keogh_sq(query, envelope, (bound * bound) as f32)).sqrt()
}

// The bodies below are generic over `AVX2` and always inlined, so that the wrappers
// compile them (point costs, bounds, the row kernel) with AVX2 and FMA enabled.

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn squared_avx2(dtw: &mut Dtw, a: &Series, b: &Series, threshold: f32) -> f32 {
    squared_with::<true>(dtw, a, b, threshold)
}

#[inline(always)]
fn squared_with<const AVX2: bool>(dtw: &mut Dtw, a: &Series, b: &Series, threshold: f32) -> f32 {
    dtw.tail.clear();
    dtw.tail.resize(a.len + 2 * PAD, 0.0);
    #[cfg(target_arch = "x86_64")]
    if AVX2 && dtw.radius <= kernel::DIAG_MAX_RADIUS {
        dtw.forward.forward(a, AVX2);
        dtw.backward.backward(b, AVX2);
        // SAFETY: AVX2 is only true inside `squared_avx2`.
        let [d] = unsafe {
            diagonal(
                dtw.engine == Engine::Avx512,
                &dtw.forward,
                [&dtw.backward],
                a.channels,
                dtw.radius,
                threshold,
                [&dtw.tail],
            )
        };
        return d;
    }
    kernel::rows(a, b, dtw.radius, threshold, &dtw.tail, &mut dtw.prev, &mut dtw.cur)
}

/// The anti-diagonal kernel, unrolled for the detector's 8 channels.
///
/// # Safety
/// As [`avx2::squared`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn diagonal<const K: usize>(
    evex: bool,
    a: &Prepared,
    bs: [&Prepared; K],
    channels: usize,
    r: usize,
    threshold: f32,
    tails: [&[f32]; K],
) -> [f32; K] {
    if evex {
        return match channels {
            8 => avx2::squared_evex::<8, K>(a, bs, channels, r, threshold, tails),
            _ => avx2::squared_evex::<0, K>(a, bs, channels, r, threshold, tails),
        };
    }
    match channels {
        8 => avx2::squared::<8, K>(a, bs, channels, r, threshold, tails),
        _ => avx2::squared::<0, K>(a, bs, channels, r, threshold, tails),
    }
}
