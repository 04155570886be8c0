use super::*;

/// Percentile estimates may be off by this many histogram bins (interpolation within a bin).
const PERCENTILE_TOL_BINS: f64 = 2.0;
/// Distance of a 99.99th percentile of |N(0, 1)| sample of this size from the population value (3.8906).
const PERCENTILE_SAMPLE_TOL: f64 = 0.25;
/// On Gaussian data with rare outliers entropy must clip to below this fraction of the max.
const ENTROPY_OUTLIER_MAX_FRACTION: f32 = 0.2;
/// On uniform data entropy and mse must keep at least this fraction of the full range.
const UNIFORM_MIN_FRACTION: f32 = 0.97;
/// Relative slack on the half-step round-trip bound of `act_params`, for f32 rounding.
const ROUND_TRIP_SLACK: f32 = 1e-5;
/// Relative budget of the prefix-sum quantization error against the naive sum over sub-sampled bins.
const MSE_ERROR_REL_TOL: f64 = 1e-6;
/// Points per bin of that naive sum.
const NAIVE_POINTS_PER_BIN: usize = 64;

use super::super::testrng::Rng;

fn calibrate(data: &[f32]) -> Observer {
    let mut o = Observer::new();
    o.observe_range(data);
    o.begin_histogram();
    o.observe_histogram(data);
    o
}

fn gaussian_with_outliers(n: usize, outliers: &[f32]) -> Vec<f32> {
    let mut rng = Rng(1);
    let mut v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    v.extend_from_slice(outliers);
    v
}

fn uniform(n: usize, lo: f64, hi: f64) -> Vec<f32> {
    let mut rng = Rng(2);
    (0..n).map(|_| (lo + (hi - lo) * rng.uniform()) as f32).collect()
}

/// The smallest sample with at least a fraction q of the samples at or below it.
fn empirical_quantile(mut v: Vec<f32>, q: f64) -> f32 {
    v.sort_by(f32::total_cmp);
    let k = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[k]
}

/// Mean squared error of quantizing `data` to u8 with the parameters of `range`, as the runtime would.
fn quant_mse(data: &[f32], range: (f32, f32), symmetric: bool) -> f64 {
    let p = ActGrid::from_range(range.0, range.1, symmetric);
    let qmin = if symmetric { 1 } else { 0 };
    let sum: f64 = data
        .iter()
        .map(|&x| {
            let q = ((x / p.scale).round() as i32 + p.zero).clamp(qmin, 255);
            (x as f64 - (p.scale * (q - p.zero) as f32) as f64).powi(2)
        })
        .sum();
    sum / data.len() as f64
}

#[test]
fn minmax_is_observed_range_widened_to_zero() {
    let mut o = Observer::new();
    o.observe_range(&[0.5, 2.0, 1.0, 3.25]);
    assert_eq!((o.min(), o.max(), o.count()), (0.5, 3.25, 4));
    assert_eq!(o.range(Method::MinMax, false), Ok((0.0, 3.25)));
    assert_eq!(o.range(Method::MinMax, true), Ok((-3.25, 3.25)));
    o.observe_range(&[-4.0, 1.0]);
    assert_eq!(o.range(Method::MinMax, false), Ok((-4.0, 3.25)));
    assert_eq!(o.range(Method::MinMax, true), Ok((-4.0, 4.0)));
    assert!(!Method::MinMax.needs_histogram());
    assert!(Method::Percentile(99.0).needs_histogram() && Method::Entropy.needs_histogram());
    assert!(Method::Mse.needs_histogram());
}

#[test]
fn percentile_clips_outliers_near_true_percentile() {
    let data = gaussian_with_outliers(200_000, &[100.0, -100.0, 80.0, -90.0, 95.0]);
    let o = calibrate(&data);
    let (abs_bin, signed_bin) = (100.0 / BINS as f64, 200.0 / BINS as f64);

    let (lo, hi) = o.range(Method::Percentile(99.99), true).unwrap();
    assert_eq!(lo, -hi);
    let want = empirical_quantile(data.iter().map(|x| x.abs()).collect(), 0.9999);
    assert!(((hi - want) as f64).abs() <= PERCENTILE_TOL_BINS * abs_bin, "t {hi} vs sample {want}");
    assert!((hi as f64 - 3.8906).abs() < PERCENTILE_SAMPLE_TOL, "t {hi}");

    let (lo, hi) = o.range(Method::Percentile(99.99), false).unwrap();
    let want_lo = empirical_quantile(data.clone(), 1e-4);
    let want_hi = empirical_quantile(data.clone(), 0.9999);
    assert!(((lo - want_lo) as f64).abs() <= PERCENTILE_TOL_BINS * signed_bin, "lo {lo} vs {want_lo}");
    assert!(((hi - want_hi) as f64).abs() <= PERCENTILE_TOL_BINS * signed_bin, "hi {hi} vs {want_hi}");

    for (symmetric, bin) in [(true, abs_bin), (false, signed_bin)] {
        let (lo, hi) = o.range(Method::Percentile(100.0), symmetric).unwrap();
        let (mlo, mhi) = o.range(Method::MinMax, symmetric).unwrap();
        assert!(((lo - mlo) as f64).abs() <= bin && ((hi - mhi) as f64).abs() <= bin, "{lo} {hi}");
    }
}

#[test]
fn entropy_clips_rare_outliers_and_keeps_uniform() {
    let data = gaussian_with_outliers(200_000, &[50.0, -50.0, 40.0, -45.0]);
    let o = calibrate(&data);
    let (lo, hi) = o.range(Method::Entropy, true).unwrap();
    assert!(lo == -hi && hi > 0.0 && hi < ENTROPY_OUTLIER_MAX_FRACTION * 50.0, "t {hi}");
    // Asymmetric: both sides reach past t here, so both are clipped at it.
    assert_eq!(o.range(Method::Entropy, false).unwrap(), (lo, hi));

    let data = uniform(200_000, -1.0, 1.0);
    let o = calibrate(&data);
    let (_, t) = o.range(Method::Entropy, true).unwrap();
    let amax = o.max().max(-o.min());
    assert!(t >= UNIFORM_MIN_FRACTION * amax && t <= amax, "t {t} of {amax}");

    // Skewed: the short negative side stays whole, the long positive one near its max.
    let data = uniform(200_000, -0.25, 1.0);
    let o = calibrate(&data);
    let (lo, hi) = o.range(Method::Entropy, false).unwrap();
    assert_eq!(lo, o.min());
    assert!(hi >= UNIFORM_MIN_FRACTION * o.max(), "hi {hi} of {}", o.max());
}

#[test]
fn mse_beats_minmax_on_laplace_and_keeps_uniform() {
    let mut rng = Rng(3);
    let data: Vec<f32> = (0..100_000).map(|_| rng.laplace() as f32).collect();
    let o = calibrate(&data);
    for symmetric in [true, false] {
        let mse = o.range(Method::Mse, symmetric).unwrap();
        let minmax = o.range(Method::MinMax, symmetric).unwrap();
        let (e_mse, e_minmax) = (quant_mse(&data, mse, symmetric), quant_mse(&data, minmax, symmetric));
        assert!(e_mse < e_minmax, "symmetric {symmetric}: {mse:?} gives {e_mse}, minmax {e_minmax}");
        assert!(mse.1 < minmax.1, "symmetric {symmetric}: {mse:?} does not clip");
    }

    let data = uniform(100_000, -1.0, 1.0);
    let o = calibrate(&data);
    let (_, t) = o.range(Method::Mse, true).unwrap();
    let amax = o.max().max(-o.min());
    assert!(t >= UNIFORM_MIN_FRACTION * amax, "t {t} of {amax}");
    let (lo, hi) = o.range(Method::Mse, false).unwrap();
    assert!(lo <= UNIFORM_MIN_FRACTION * o.min() && hi >= UNIFORM_MIN_FRACTION * o.max(), "{lo} {hi}");
}

#[test]
fn moments_error_matches_naive_sum() {
    let data = gaussian_with_outliers(50_000, &[9.0, -6.0]);
    let o = calibrate(&data);
    let h = &o.hist.as_ref().unwrap().signed;
    let m = Moments::new(h);
    // Whole range, beyond it, inside, within one bin, one-sided.
    for (a, b) in [(-6.0, 9.0), (-20.0, 20.0), (-3.0, 2.5), (-0.001, 0.002), (0.0, 4.0)] {
        let step = (b - a) / 255.0;
        let point_error = |x: f64| match x {
            x if x < a => (a - x).powi(2),
            x if x > b => (x - b).powi(2),
            _ => step * step / 12.0,
        };
        let naive: f64 = (0..BINS)
            .map(|k| {
                let points = (0..NAIVE_POINTS_PER_BIN)
                    .map(|s| h.edge(k) + h.width() * (s as f64 + 0.5) / NAIVE_POINTS_PER_BIN as f64);
                points.map(point_error).sum::<f64>() * h.counts[k] as f64 / NAIVE_POINTS_PER_BIN as f64
            })
            .sum();
        let fast = m.error(a, b, step);
        assert!((fast - naive).abs() <= MSE_ERROR_REL_TOL * naive, "[{a}, {b}]: {fast} vs naive {naive}");
    }
}

#[test]
fn act_params_round_trip() {
    let round_trip = |x: f32, p: ActGrid, qmin: i32| {
        let q = ((x / p.scale).round() as i32 + p.zero).clamp(qmin, 255);
        p.scale * (q - p.zero) as f32
    };
    for (lo, hi) in [(-1.0f32, 3.0f32), (-0.3, 0.0), (0.0, 5.0), (-2.5, 2.5), (-1e-3, 7.0), (-0.17, 10.3)] {
        let p = ActGrid::from_range(lo, hi, false);
        assert!((0..=255).contains(&p.zero), "{p:?}");
        assert_eq!(round_trip(0.0, p, 0), 0.0);
        for x in [lo, hi] {
            let err = (round_trip(x, p, 0) - x).abs();
            assert!(err <= 0.5 * p.scale * (1.0 + ROUND_TRIP_SLACK), "{x} in [{lo}, {hi}]: {err} {p:?}");
        }
        let s = ActGrid::from_range(lo, hi, true);
        assert_eq!(s, ActGrid { scale: (-lo).max(hi) / 127.0, zero: 128 });
        assert_eq!(round_trip(0.0, s, 1), 0.0);
        for x in [lo, hi] {
            assert!((round_trip(x, s, 1) - x).abs() <= 0.5 * s.scale * (1.0 + ROUND_TRIP_SLACK));
        }
    }
    assert_eq!(ActGrid::from_range(0.0, 0.0, false), ActGrid { scale: 1.0, zero: 0 });
    assert_eq!(ActGrid::from_range(0.0, 0.0, true), ActGrid { scale: 1.0, zero: 128 });
}

#[test]
fn errors() {
    let err = Observer::new().range(Method::MinMax, false).unwrap_err();
    assert!(err.contains("no values"), "{err}");

    let mut o = Observer::new();
    o.observe_range(&[1.0, -2.0]);
    assert!(o.range(Method::MinMax, true).is_ok());
    for m in [Method::Percentile(99.0), Method::Entropy, Method::Mse] {
        let err = o.range(m, false).unwrap_err();
        assert!(err.contains("histogram"), "{err}");
    }
    o.begin_histogram();
    let err = o.range(Method::Mse, false).unwrap_err();
    assert!(err.contains("histogram pass saw no values"), "{err}");

    for p in [0.0, -1.0, 100.5, f64::NAN] {
        let err = o.range(Method::Percentile(p), true).unwrap_err();
        assert!(err.contains("percentile"), "{err}");
    }

    let mut o = Observer::new();
    o.observe_range(&[1.0, f32::NAN, 2.0]);
    let err = o.range(Method::MinMax, false).unwrap_err();
    assert!(err.contains("NaN") && err.contains("1 non-finite"), "{err}");

    // A NaN that only shows up in pass 2 fails too.
    let mut o = Observer::new();
    o.observe_range(&[1.0, 2.0]);
    o.begin_histogram();
    o.observe_histogram(&[1.0, f32::INFINITY]);
    assert!(o.range(Method::Entropy, true).unwrap_err().contains("NaN"));
}

#[test]
fn split_observation_matches_single() {
    let data = gaussian_with_outliers(20_000, &[30.0, -7.0]);
    let whole = calibrate(&data);
    let (a, b) = data.split_at(7_777);
    let mut split = Observer::new();
    split.observe_range(a);
    split.observe_range(b);
    split.begin_histogram();
    split.observe_histogram(b);
    split.observe_histogram(a);
    assert_eq!(split.count(), whole.count());
    for m in [Method::MinMax, Method::Percentile(99.9), Method::Entropy, Method::Mse] {
        for symmetric in [true, false] {
            assert_eq!(split.range(m, symmetric), whole.range(m, symmetric), "{} {symmetric}", m.name());
        }
    }
}
