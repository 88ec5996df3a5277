use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// The definition, nothing more: the full (n+1)×(m+1) matrix in f64, cells outside the
/// band skipped, as the peers' `dtw_ref`.
fn reference(a: &Series, b: &Series, radius: usize) -> f64 {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![f64::INFINITY; m + 1]; n + 1];
    d[0][0] = 0.0;
    for i in 1..=n {
        for j in 1..=m {
            if i.abs_diff(j) > radius {
                continue;
            }
            let cost: f64 =
                a.point(i - 1).iter().zip(b.point(j - 1)).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
            d[i][j] = cost + d[i - 1][j].min(d[i][j - 1]).min(d[i - 1][j - 1]);
        }
    }
    d[n][m].sqrt()
}

/// A z-normalised random walk per channel, like the windows the detector sees.
fn walk(rng: &mut impl Rng, len: usize, channels: usize) -> Series {
    let mut data = vec![0.0f64; len * channels];
    for c in 0..channels {
        let mut x = 0.0;
        for t in 0..len {
            x += rng.random_range(-1.0..1.0);
            data[t * channels + c] = x;
        }
        let mean = (0..len).map(|t| data[t * channels + c]).sum::<f64>() / len as f64;
        let var = (0..len).map(|t| (data[t * channels + c] - mean).powi(2)).sum::<f64>() / len as f64;
        for t in 0..len {
            data[t * channels + c] = (data[t * channels + c] - mean) / (var.sqrt() + 1e-12);
        }
    }
    Series::from_f64(channels, &data).unwrap()
}

/// Every engine this CPU can run.
fn engines() -> Vec<Engine> {
    match Engine::detect() {
        Engine::Avx512 => vec![Engine::Portable, Engine::Avx2, Engine::Avx512],
        Engine::Avx2 => vec![Engine::Portable, Engine::Avx2],
        Engine::Portable => vec![Engine::Portable],
    }
}

fn close(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= 1e-5 * want.max(1e-3)
}

const RADII: [usize; 10] = [0, 1, 2, 3, 5, 6, 7, 8, 13, 100];

#[test]
fn distance_equals_the_reference_for_radii_lengths_and_channels() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for engine in engines() {
        for &r in &RADII {
            let mut dtw = Dtw::with_engine(r, engine);
            for case in 0..60 {
                let channels = [1, 2, 3, 8, 9, 16][case % 6];
                let n = if case % 5 == 0 { 64 } else { rng.random_range(1..24) };
                // Mostly within the band of each other, sometimes beyond it (+∞).
                let m =
                    if case % 3 == 0 { n } else { (n + rng.random_range(0..r + 3)).saturating_sub(r / 2 + 1).max(1) };
                let (a, b) = (walk(&mut rng, n, channels), walk(&mut rng, m, channels));
                let (got, want) = (dtw.distance(&a, &b), reference(&a, &b, r));
                assert!(close(got, want), "{engine:?} r={r} n={n} m={m} c={channels}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn vector_and_portable_kernels_agree_bit_for_bit() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for engine in engines().into_iter().filter(|&e| e != Engine::Portable) {
        for r in 0..=kernel::DIAG_MAX_RADIUS {
            let (mut fast, mut slow) = (Dtw::with_engine(r, engine), Dtw::with_engine(r, Engine::Portable));
            for case in 0..40 {
                let channels = 1 + case % 11;
                let n = rng.random_range(1..70);
                let m = (n + rng.random_range(0..=2 * r)).saturating_sub(r).max(1);
                let (a, b) = (walk(&mut rng, n, channels), walk(&mut rng, m, channels));
                let (x, y) = (fast.distance(&a, &b), slow.distance(&a, &b));
                assert_eq!(x.to_bits(), y.to_bits(), "{engine:?} r={r} n={n} m={m} c={channels}: {x} vs {y}");
            }
        }
    }
}

#[test]
fn band_zero_is_the_euclidean_distance() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for engine in engines() {
        let mut dtw = Dtw::with_engine(0, engine);
        for n in [1, 2, 7, 64] {
            let (a, b) = (walk(&mut rng, n, 8), walk(&mut rng, n, 8));
            let euclid = a.values().iter().zip(b.values()).map(|(&x, &y)| f64::from(x - y).powi(2)).sum::<f64>().sqrt();
            assert!(close(dtw.distance(&a, &b), euclid));
            if n == 64 {
                assert!(euclid > reference(&a, &b, 1), "a band of 1 warps, of 0 does not");
            }
        }
    }
}

#[test]
fn lower_bounds_never_exceed_the_distance() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut dtw = Dtw::new(0);
    let (mut kim_share, mut keogh_share, mut count) = (0.0, 0.0, 0.0);
    for case in 0..3000 {
        let r = RADII[case % RADII.len()];
        let channels = [1, 3, 8][case % 3];
        let n = rng.random_range(1..40);
        let m = (n + rng.random_range(0..=2 * r.min(5))).saturating_sub(r.min(5)).max(1);
        let (q, s) = (walk(&mut rng, n, channels), walk(&mut rng, m, channels));
        dtw.radius = r;
        let d = dtw.distance(&q, &s);
        let slack = 1.0 + 1e-5;
        let kim = lb_kim(&q, &s);
        let keogh = lb_keogh(&q, &Envelope::new(&s, r), f64::INFINITY);
        assert!(kim <= d * slack, "case {case}: LB_Kim {kim} > DTW {d}");
        assert!(keogh <= d * slack, "case {case}: LB_Keogh {keogh} > DTW {d}");
        if r <= 6 && n > 8 {
            (kim_share, keogh_share, count) = (kim_share + kim / d, keogh_share + keogh / d, count + 1.0);
        }
    }
    // Not trivially low (a bound of 0 passes the checks above).
    let (kim_share, keogh_share) = (kim_share / count, keogh_share / count);
    assert!(kim_share > 0.2 && keogh_share > 0.3, "LB_Kim {kim_share:.2}, LB_Keogh {keogh_share:.2} of DTW");
}

#[test]
fn lb_keogh_stops_above_the_bound_and_is_exact_below_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (q, s) = (walk(&mut rng, 200, 8), walk(&mut rng, 200, 8));
    let env = Envelope::new(&s, 6);
    let full = lb_keogh(&q, &env, f64::INFINITY);
    assert!(full > 1.0);
    assert_eq!(lb_keogh(&q, &env, full * 2.0), full);
    let partial = lb_keogh(&q, &env, full / 4.0);
    assert!(partial > full / 4.0 && partial < full, "{partial} of {full}: stopped early, above the bound");
}

#[test]
fn early_abandoning_never_changes_a_distance_within_the_bound() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for engine in engines() {
        for &r in &RADII {
            let mut dtw = Dtw::with_engine(r, engine);
            for _ in 0..30 {
                let n = rng.random_range(1..70);
                let (a, b) = (walk(&mut rng, n, 8), walk(&mut rng, n, 8));
                let d = dtw.distance(&a, &b);
                for bound in [d, d * 1.000_001, d * 2.0, f64::INFINITY] {
                    assert_eq!(dtw.distance_bounded(&a, &b, bound), Some(d), "{engine:?} r={r} bound {bound}");
                }
                if d > 0.0 {
                    assert_eq!(dtw.distance_bounded(&a, &b, d * 0.999), None);
                    assert_eq!(dtw.distance_bounded(&a, &b, 0.0), None);
                }
                assert_eq!(dtw.distance_bounded(&a, &b, -1.0), None);
            }
        }
    }
}

/// Best and runner-up of a plain scan, ties to the lower index.
/// The two nearest signatures within `bound`, by scanning them all.
fn brute_force(dtw: &mut Dtw, q: &Series, lib: &Library, bound: f64) -> (Option<Hit>, Option<Hit>) {
    let mut all: Vec<Hit> = (0..lib.len())
        .map(|index| Hit { index, distance: dtw.distance(q, lib.signature(index)) })
        .filter(|h| h.distance <= bound)
        .collect();
    all.sort_by(|x, y| x.distance.total_cmp(&y.distance).then(x.index.cmp(&y.index)));
    (all.first().copied(), all.get(1).copied())
}

#[test]
fn search_finds_the_brute_force_best_and_runner_up() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for engine in engines() {
        for (case, &size) in [1, 2, 3, 10, 40, 100].iter().cycle().take(60).enumerate() {
            let r = RADII[case % RADII.len()];
            let channels = [8, 1, 5][case % 3];
            let n = [64, 16, 30][case % 3];
            let mut sigs: Vec<Series> = (0..size)
                .map(|_| {
                    let m = (n + rng.random_range(0..=2 * r.min(3))).saturating_sub(r.min(3));
                    walk(&mut rng, m, channels)
                })
                .collect();
            if size > 3 {
                sigs[size - 1] = sigs[1].clone(); // a tie the search must break like the scan
            }
            let lib = Library::new(sigs, r).unwrap();
            let mut dtw = Dtw::with_engine(r, engine);
            assert_eq!(dtw.search_within(&lib.signature(0).clone(), &lib, f64::NAN).best, None, "NaN admits nothing");
            for q in [walk(&mut rng, n, channels), lib.signature(size / 2).clone()] {
                let found = dtw.search(&q, &lib);
                let (best, second) = brute_force(&mut dtw, &q, &lib, f64::INFINITY);
                assert_eq!((found.best, found.runner_up), (best, second), "{engine:?} case {case}");
                assert_eq!(found.computed + found.pruned_kim + found.pruned_keogh, size);
                // Bounded: at the best distance exactly, between the two, short of the best.
                let d1 = best.expect("a library has a signature").distance;
                let d2 = second.map_or(d1 * 2.0 + 1.0, |h| h.distance);
                for bound in [d1, (d1 + d2) / 2.0, d2, d1 * 0.9 - 1e-3] {
                    let within = dtw.search_within(&q, &lib, bound);
                    let expected = brute_force(&mut dtw, &q, &lib, bound);
                    assert_eq!((within.best, within.runner_up), expected, "{engine:?} case {case} bound {bound}");
                    assert_eq!(within.computed + within.pruned_kim + within.pruned_keogh, size);
                }
            }
        }
    }
}

#[test]
fn search_prunes_far_signatures_and_abandons_most_dtws() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for engine in engines() {
        let mut dtw = Dtw::with_engine(6, engine);
        // Random walks: the runner-up is a typical distance, so few lower bounds exceed
        // it, but most DTWs pass it early and stop.
        let lib = Library::new((0..100).map(|_| walk(&mut rng, 64, 8)).collect(), 6).unwrap();
        let (mut abandoned, mut computed) = (0, 0);
        for _ in 0..20 {
            let found = dtw.search(&walk(&mut rng, 64, 8), &lib);
            (abandoned, computed) = (abandoned + found.abandoned, computed + found.computed);
        }
        assert!(abandoned > computed * 3 / 4, "{engine:?}: abandoned {abandoned} of {computed}");
        // Two signatures near the query, 98 far away: the bounds rule those out, LB_Kim
        // those far at the ends, LB_Keogh those far only in the middle.
        let q = walk(&mut rng, 64, 8);
        let shifted = |s: Series, by: f32| Series::new(8, s.values().iter().map(|v| v + by).collect()).unwrap();
        let middle = |k: usize| {
            let mut v = q.values().to_vec();
            v[3 * 8..61 * 8].iter_mut().for_each(|x| *x += 2.0 + k as f32 / 10.0);
            Series::new(8, v).unwrap()
        };
        let mut sigs: Vec<Series> = (0..98)
            .map(|k| if k % 2 == 0 { shifted(walk(&mut rng, 64, 8), 3.0 + k as f32 / 10.0) } else { middle(k) })
            .collect();
        sigs.insert(40, shifted(q.clone(), 0.1));
        sigs.insert(70, shifted(q.clone(), -0.2));
        let found = dtw.search(&q, &Library::new(sigs, 6).unwrap());
        assert_eq!((found.best.map(|h| h.index), found.runner_up.map(|h| h.index)), (Some(40), Some(70)));
        assert_eq!((found.computed, found.pruned_kim + found.pruned_keogh), (2, 98), "{engine:?}: {found:?}");
        assert!(found.pruned_kim > 0 && found.pruned_keogh > 0, "{engine:?}: {found:?}");
    }
}

#[test]
fn channel_contributions_split_the_squared_distance() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut dtw = Dtw::new(6);
    for _ in 0..20 {
        let (a, b) = (walk(&mut rng, 40, 8), walk(&mut rng, 43, 8));
        let d = dtw.distance(&a, &b);
        let parts = dtw.channel_contributions(&a, &b).unwrap();
        assert!(parts.iter().all(|&p| p >= 0.0));
        assert!(close(parts.iter().sum::<f64>().sqrt(), d));
    }
    // Only channel 2 differs: it carries the whole distance.
    let a = walk(&mut rng, 30, 4);
    let mut v = a.values().to_vec();
    for t in 0..30 {
        v[t * 4 + 2] += 1.0;
    }
    let b = Series::new(4, v).unwrap();
    let parts = dtw.channel_contributions(&a, &b).unwrap();
    assert!(parts[2] > 0.0 && parts[0] == 0.0 && parts[1] == 0.0 && parts[3] == 0.0, "{parts:?}");
    assert_eq!(dtw.channel_contributions(&walk(&mut rng, 10, 4), &walk(&mut rng, 20, 4)), None);
}

#[test]
fn bad_series_and_libraries_are_refused() {
    assert_eq!(Series::new(3, vec![0.0; 7]), Err(DtwError::Ragged { values: 7, channels: 3 }));
    assert_eq!(Series::new(0, vec![]), Err(DtwError::Empty { values: 0, channels: 0 }));
    assert_eq!(
        Series::from_f64(2, &[0.0, 1.0, 1e300, 2.0]),
        Err(DtwError::NotFinite { point: 1, channel: 0, value: 1e300 })
    );
    assert!(matches!(Series::new(1, vec![f32::NAN]), Err(DtwError::NotFinite { .. })));
    assert_eq!(Library::new(vec![], 6).unwrap_err(), DtwError::EmptyLibrary);
    let two = vec![Series::new(2, vec![0.0; 4]).unwrap(), Series::new(1, vec![0.0; 4]).unwrap()];
    assert_eq!(Library::new(two, 6).unwrap_err(), DtwError::Channels { index: 1, expected: 2, found: 1 });
}
