//! Branch-free f32 `exp`, `erf` and exact-GELU that the compiler vectorises inside plain loops (libm's are scalar
//! calls and took a quarter of a BERT forward).

const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 below 2^22 to the nearest integer in plain arithmetic
/// (`f32::round` is a libm call on baseline x86-64 and would stop the loop from vectorising).
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial, 2^n through the exponent bits.
/// Inputs below -87.3 give 0 (not denormals), above 88.7 give +inf.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_taylor(x, &EXP_TAYLOR)
}

/// e^x to 5e-5 relative (Taylor degree 4, remainder r^5 / 120 at |r| = ln2/2): for values rounded to bf16 next,
/// whose half ulp is 2e-3, at two thirds of `exp`'s work.
#[inline(always)]
pub fn exp_bf16(x: f32) -> f32 {
    exp_taylor(x, &EXP_TAYLOR[..5])
}

/// Taylor coefficients 1/k! (to degree 7 the remainder is below 1 ulp on |r| <= 0.347).
const EXP_TAYLOR: [f32; 8] = [1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];

#[inline(always)]
fn exp_taylor(x: f32, coeffs: &[f32]) -> f32 {
    let x = x.clamp(-87.3, 88.8);
    let n = fma(x, LOG2E, ROUND_MAGIC) - ROUND_MAGIC;
    let r = fma(-n, LN2_LO, fma(-n, LN2_HI, x));
    let p = horner(r, coeffs);
    // 2^n from the exponent bits. `n + 127 + ROUND_MAGIC` holds n + 127 in its low mantissa bits; reading them as
    // an integer avoids `as i32`, whose saturating semantics stop vectorisation.
    let biased = ((n + 127.0) + ROUND_MAGIC).to_bits() - ROUND_MAGIC.to_bits();
    p * f32::from_bits(biased << 23)
}

/// erf(x) as x P(x²) / Q(x²) on [-4, 4], the float minimax rational of Eigen and XLA (absolute error below 3.4e-7
/// with FMA); erf(4) rounds to 1 in f32, so inputs beyond are clamped there. One divide and 12 FMAs: a third of
/// the work of an exp-based form (Abramowitz & Stegun 7.1.26), which made GELU the largest cost after the GEMMs.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let z = x * x;
    let p = x * horner(z, &[-0.016_096_033, -0.002_954_6, -0.000_734_990_64, -5.692_506_2e-5, -2.101_024e-6, 2.770_681_5e-8, -2.726_142_4e-10]);
    let q = horner(z, &[-0.014_264_739, -0.007_373_329_3, -0.001_682_827, -0.000_213_374_05, -1.456_607_15e-5]);
    p / q
}

/// a * b + c in one rounding: a single instruction in the SIMD builds (FMA is on there), a libm call in the
/// scalar reference build.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// c[0] + x (c[1] + x (c[2] + ...)), the coefficients lowest first.
#[inline(always)]
fn horner(x: f32, c: &[f32]) -> f32 {
    let (last, rest) = c.split_last().expect("coefficients");
    rest.iter().rev().fold(*last, |acc, &k| fma(acc, x, k))
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// GELU over a slice in place, 64 values at a time, then 16: GELU is one long dependency chain (two polynomials
/// and a divide), so independent vectors side by side keep the FMA units busy instead of waiting on latency; fixed
/// chunks of 16 keep a short slice in vector code (a plain loop's vector body needs 64 values).
#[inline(always)]
pub fn gelu_slice(y: &mut [f32]) {
    let mut chunks = y.chunks_exact_mut(64);
    for c in &mut chunks {
        c.iter_mut().for_each(|v| *v = gelu(*v));
    }
    let mut chunks = chunks.into_remainder().chunks_exact_mut(16);
    for c in &mut chunks {
        c.iter_mut().for_each(|v| *v = gelu(*v));
    }
    chunks.into_remainder().iter_mut().for_each(|v| *v = gelu(*v));
}

/// d GELU / dx = Phi(x) + x phi(x).
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp(-0.5 * x * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error of our exp against std over the range that matters.
    const EXP_REL_TOL: f32 = 4e-7;
    /// Absolute error of erf (the rational's 6.5e-8 in f64 plus f32 rounding: 3.4e-7 in a simulation with FMA).
    const ERF_ABS_TOL: f32 = 4e-7;
    /// GELU and its gradient, absolute, against the f64 formula.
    const GELU_ABS_TOL: f32 = 1e-6;

    fn grid() -> impl Iterator<Item = f32> {
        (-200_000..=200_000).map(|i| i as f32 * 1e-4 * 4.0) // -80 .. 80
    }

    #[test]
    fn exp_matches_std() {
        for x in grid() {
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= EXP_REL_TOL * want, "exp({x}) = {got}, std {want}");
        }
        assert!(exp(-1000.0) < 1e-37 && exp(100.0) > 1e38);
    }

    fn erf64(x: f64) -> f64 {
        // Series/continued fraction free reference: integrate exp(-t^2) by Simpson's rule (fine at 1e-10 here).
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_and_gelu_match_f64_reference() {
        for i in -600..=600 {
            let x = i as f32 * 0.01; // -6 .. 6, where GELU is not saturated
            let e = erf64(x as f64);
            assert!((erf(x) as f64 - e).abs() <= ERF_ABS_TOL as f64, "erf({x}) = {} vs {e}", erf(x));
            let xd = x as f64;
            let phi = 0.5 * (1.0 + erf64(xd / 2f64.sqrt()));
            let g = xd * phi;
            let dg = phi + xd * (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            assert!((gelu(x) as f64 - g).abs() <= GELU_ABS_TOL as f64, "gelu({x})");
            assert!((gelu_grad(x) as f64 - dg).abs() <= GELU_ABS_TOL as f64, "gelu'({x})");
        }
    }
}
