//! Elementwise and row kernels of the transformer block: exact GELU and its gradient, masked softmax rows.
//! `*_on(Isa::Scalar, ..)` is the reference each SIMD level is tested against.

use crate::bf16::Round16;
use crate::isa::Isa;
use crate::math;
use crate::multiversion;

multiversion!(
    /// y = GELU(x), exact (erf) form.
    gelu, gelu_on; (x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x);
        math::gelu_slice(y);
    }
);

multiversion!(
    /// dx = dy * GELU'(x).
    gelu_backward, gelu_backward_on; (x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
            *d = g * math::gelu_grad(x);
        }
    }
);

/// Independent accumulators for reductions: float sums only vectorise when split into lanes by hand.
const LANES: usize = 16;

/// Folds LANES accumulators pairwise (log2 LANES dependent steps instead of LANES - 1): the reduction ends every
/// short row, so its latency counts.
#[inline(always)]
fn tree(mut a: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for i in 0..w {
            a[i] = op(a[i], a[i + w]);
        }
        w /= 2;
    }
    a[0]
}

/// Sum of a slice in LANES independent accumulators, vectorisable.
#[inline(always)]
pub fn lanes_sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    tree(acc, |a, b| a + b) + tail
}

multiversion!(
    /// One row: y = softmax(s * scale + bias).
    softmax_row, softmax_row_on; (s: &[f32], bias: &[f32], scale: f32, y: &mut [f32]) {
        for ((y, &s), &b) in y.iter_mut().zip(s).zip(bias) {
            *y = s * scale + b;
        }
        normalize_exp(y);
    }
);

multiversion!(
    /// Softmax without its division, in place, for every row of `y` (rows of `bias.len()` or `sums.len()`
    /// values): row = exp(row + bias - max), its sum into `sums`, so a caller that next multiplies by a narrower
    /// matrix can divide the D outputs instead of the T probabilities. An empty `bias` means none.
    softmax_rows_unnormalized, softmax_rows_unnormalized_on; (y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32]) {
        if t == 0 {
            return;
        }
        add_row_bias(y, t, sums.len(), bias);
        let rows = sums.len();
        let (y, quads) = (&mut y[..rows * t], rows / ROWS * ROWS);
        for (block, sums) in y[..quads * t].chunks_exact_mut(ROWS * t).zip(sums.chunks_exact_mut(ROWS)) {
            sums.copy_from_slice(&exp_sum_rows::<ROWS>(block, t));
        }
        for (row, sum) in y[quads * t..].chunks_exact_mut(t).zip(&mut sums[quads..]) {
            *sum = exp_sum(row);
        }
    }
);

/// Adds `bias` (t values; empty: none) to the first `rows` rows of `y`.
#[inline(always)]
fn add_row_bias(y: &mut [f32], t: usize, rows: usize, bias: &[f32]) {
    if !bias.is_empty() {
        for row in y.chunks_exact_mut(t).take(rows) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

/// Rows a softmax works on side by side. A row of 128 is short: its max, then its exps and their sum, are
/// dependent reductions, and one row at a time left the vector units waiting on their latency (softmax took a
/// tenth of an int8 forward pass). The R-row helpers fill their R results in plain loops: `std::array::from_fn`'s
/// closure stayed out of line, a call per row compiled without the caller's vector features (2% of an int8 forward).
const ROWS: usize = 4;

/// Row maxima of R rows of `t` (`y` is R x t), the R reductions side by side.
#[inline(always)]
fn max_rows<const R: usize>(y: &[f32], t: usize) -> [f32; R] {
    let full = t / LANES * LANES;
    let mut max = [[f32::NEG_INFINITY; LANES]; R];
    for c0 in (0..full).step_by(LANES) {
        for (r, m) in max.iter_mut().enumerate() {
            let c = &y[r * t + c0..r * t + c0 + LANES];
            for i in 0..LANES {
                m[i] = m[i].max(c[i]);
            }
        }
    }
    let mut out = [0f32; R];
    for (r, o) in out.iter_mut().enumerate() {
        *o = y[r * t + full..(r + 1) * t].iter().fold(tree(max[r], f32::max), |m, &x| m.max(x));
    }
    out
}

/// `exp_sum` of R rows of `t` at once (`y` is R x t), interleaved so R chains run in parallel.
#[inline(always)]
fn exp_sum_rows<const R: usize>(y: &mut [f32], t: usize) -> [f32; R] {
    let full = t / LANES * LANES;
    let max = max_rows::<R>(y, t);
    let mut acc = [[0f32; LANES]; R];
    for c0 in (0..full).step_by(LANES) {
        for (r, a) in acc.iter_mut().enumerate() {
            let c = &mut y[r * t + c0..r * t + c0 + LANES];
            for i in 0..LANES {
                c[i] = math::exp(c[i] - max[r]);
                a[i] += c[i];
            }
        }
    }
    let mut out = [0f32; R];
    for (r, o) in out.iter_mut().enumerate() {
        let tail: f32 = y[r * t + full..(r + 1) * t].iter_mut().map(|v| {
            *v = math::exp(*v - max[r]);
            *v
        }).sum();
        *o = tree(acc[r], |a, b| a + b) + tail;
    }
    out
}

/// `softmax_rows_unnormalized` for the bf16 attention path: the exps of every row of `y` (rows of `t`, plus `bias`
/// when not empty, modified in place) go to `out` as bf16 (row i at `out[i * ld..]`, columns t..ld zeroed), their
/// f32 sums to `sums`. One pass fewer than softmax then conversion, and `exp_bf16`.
pub fn softmax_rows_bf16(y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32], out: &mut [u16], ld: usize) {
    softmax_rows_bf16_on(crate::isa::isa(), y, t, bias, sums, out, ld)
}

/// `softmax_rows_bf16` at `level` (capped at this CPU's). The AVX-512 level rounds with AVX512-BF16's instruction
/// where the CPU has it (`bf16::Native`: the rounding was the larger part of this function), so it has a
/// hand-written dispatch: `multiversion!`'s features plus avx512bf16.
pub fn softmax_rows_bf16_on(level: Isa, y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32], out: &mut [u16], ld: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::bf16::{Native, Portable};
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,avx512bf16")]
        unsafe fn native(y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32], out: &mut [u16], ld: usize) {
            softmax_bf16_body::<Native>(y, t, bias, sums, out, ld)
        }
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
        unsafe fn avx512(y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32], out: &mut [u16], ld: usize) {
            softmax_bf16_body::<Portable>(y, t, bias, sums, out, ld)
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2(y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32], out: &mut [u16], ld: usize) {
            softmax_bf16_body::<Portable>(y, t, bias, sums, out, ld)
        }
        // SAFETY: each arm's features are checked: the level capped at the CPU's, AVX512-BF16 by `native()`.
        match level.min(crate::isa::best()) {
            Isa::Avx512 | Isa::Amx if crate::bf16::native() => return unsafe { native(y, t, bias, sums, out, ld) },
            Isa::Avx512 | Isa::Amx => return unsafe { avx512(y, t, bias, sums, out, ld) },
            Isa::Avx2 => return unsafe { avx2(y, t, bias, sums, out, ld) },
            Isa::Scalar => {}
        }
    }
    softmax_bf16_body::<crate::bf16::Portable>(y, t, bias, sums, out, ld)
}

#[inline(always)]
fn softmax_bf16_body<B: Round16>(y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32], out: &mut [u16], ld: usize) {
    if t == 0 {
        return;
    }
    add_row_bias(y, t, sums.len(), bias);
    let rows = sums.len();
    let quads = rows / ROWS * ROWS;
    for (q, s) in sums[..quads].chunks_exact_mut(ROWS).enumerate() {
        let r0 = q * ROWS;
        s.copy_from_slice(&exp_bf16_rows::<ROWS, B>(&y[r0 * t..(r0 + ROWS) * t], t, &mut out[r0 * ld..], ld));
    }
    for r in quads..rows {
        sums[r] = exp_bf16_rows::<1, B>(&y[r * t..(r + 1) * t], t, &mut out[r * ld..], ld)[0];
    }
}

/// R rows of `softmax_rows_bf16`: exps to bf16 rows of `out` (`ld` apart), returning the f32 sums.
#[inline(always)]
fn exp_bf16_rows<const R: usize, B: Round16>(y: &[f32], t: usize, out: &mut [u16], ld: usize) -> [f32; R] {
    let full = t / LANES * LANES;
    let max = max_rows::<R>(y, t);
    let mut acc = [[0f32; LANES]; R];
    for c0 in (0..full).step_by(LANES) {
        for (r, a) in acc.iter_mut().enumerate() {
            let c = &y[r * t + c0..r * t + c0 + LANES];
            let mut e = [0f32; LANES];
            for i in 0..LANES {
                e[i] = math::exp_bf16(c[i] - max[r]);
                a[i] += e[i];
            }
            B::round16(&e, &mut out[r * ld + c0..]);
        }
    }
    let mut sums = [0f32; R];
    for (r, s) in sums.iter_mut().enumerate() {
        let (c, o) = (&y[r * t + full..(r + 1) * t], &mut out[r * ld + full..r * ld + ld]);
        let mut tail = 0.0;
        for (o, &v) in o.iter_mut().zip(c) {
            let e = math::exp_bf16(v - max[r]);
            tail += e;
            *o = crate::bf16::bf16(e);
        }
        o[t - full..].fill(0);
        *s = tree(acc[r], |a, b| a + b) + tail;
    }
    sums
}

/// y = exp(y - max y) / sum: the shared tail of the softmax forms.
#[inline(always)]
fn normalize_exp(y: &mut [f32]) {
    let inv = 1.0 / exp_sum(y);
    for y in y.iter_mut() {
        *y *= inv;
    }
}

/// y = exp(y - max y), returning the sum; exp and sum in one pass.
#[inline(always)]
fn exp_sum(y: &mut [f32]) -> f32 {
    exp_sum_rows::<1>(y, y.len())[0]
}

multiversion!(
    /// Row-wise LayerNorm in place: x = (x - mean) / sqrt(var + eps) * w + b, over rows of `w.len()` values.
    layer_norm_rows, layer_norm_rows_on; (x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
        let c = w.len();
        for row in x.chunks_exact_mut(c) {
            let mean = lanes_sum(row) / c as f32;
            for v in row.iter_mut() {
                *v -= mean;
            }
            let mut sq = [0f32; LANES];
            let chunks = row.chunks_exact(LANES);
            let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            for ch in chunks {
                for i in 0..LANES {
                    sq[i] += ch[i] * ch[i];
                }
            }
            let inv = 1.0 / ((sq.iter().sum::<f32>() + tail) / c as f32 + eps).sqrt();
            for ((v, &w), &b) in row.iter_mut().zip(w).zip(b) {
                *v = *v * inv * w + b;
            }
        }
    }
);

multiversion!(
    /// Softmax backward for one row: ds = scale * y * (dy - sum(dy * y)). `tmp` is scratch of the row's length.
    softmax_row_backward, softmax_row_backward_on; (y: &[f32], dy: &[f32], scale: f32, tmp: &mut [f32], ds: &mut [f32]) {
        for ((t, &a), &b) in tmp.iter_mut().zip(y).zip(dy) {
            *t = a * b;
        }
        let dot = lanes_sum(tmp);
        for ((d, &a), &g) in ds.iter_mut().zip(y).zip(dy) {
            *d = scale * a * (g - dot);
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Isa;

    /// SIMD vs scalar build of the same loop: only reassociated sums differ.
    const SIMD_TOL: f32 = 1e-6;
    /// f32 LayerNorm vs the f64 textbook formula.
    const LN_TOL: f32 = 1e-5;

    /// bf16 softmax probabilities vs f64 exps: bf16's half ulp (up to 2^-8 of the value) plus `exp_bf16`'s 5e-5.
    const BF16_PROB_REL_TOL: f64 = 4e-3;
    /// Their f32 sums vs f64.
    const BF16_SUM_REL_TOL: f64 = 1e-4;

    #[test]
    fn bf16_softmax_matches_f64_exps() {
        // 1, 4 and 7 rows (the 4-row path and the single rows); t short of a lane, one lane and past three.
        for (rows, t) in [(1, 5), (4, 16), (7, 53)] {
            let x: Vec<f32> = crate::testdata::uniform(rows * t, 11).iter().map(|v| v * 8.0).collect();
            let bias: Vec<f32> = (0..t).map(|i| if i == t - 1 { -1e9 } else { 0.0 }).collect();
            let ld = t.next_multiple_of(32);
            for isa in Isa::available() {
                let (mut y, mut sums, mut out) = (x.clone(), vec![0f32; rows], vec![7u16; rows * ld]);
                softmax_rows_bf16_on(isa, &mut y, t, &bias, &mut sums, &mut out, ld);
                for r in 0..rows {
                    let row: Vec<f64> = (0..t).map(|i| x[r * t + i] as f64 + bias[i] as f64).collect();
                    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    assert!((sums[r] as f64 - sum).abs() <= BF16_SUM_REL_TOL * sum, "{isa:?} row {r}: sum {} vs {sum}", sums[r]);
                    for i in 0..t {
                        let got = crate::bf16::f32_of(out[r * ld + i]) as f64;
                        assert!((got - e[i]).abs() <= BF16_PROB_REL_TOL * e[i] + 1e-30, "{isa:?} ({r},{i}): {got} vs {}", e[i]);
                    }
                    assert!(out[r * ld + t..(r + 1) * ld].iter().all(|&v| v == 0), "{isa:?} row {r}: padding not zeroed");
                }
            }
        }
    }

    fn layer_norm_naive(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + 1e-12).sqrt();
        x.iter().zip(w).zip(b).map(|((&v, &w), &b)| ((v as f64 - mean) * inv * w as f64 + b as f64) as f32).collect()
    }

    fn data(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect()
    }

    #[test]
    fn every_level_matches_scalar() {
        for n in [1, 7, 16, 33, 1000] {
            let x = data(n);
            let dy: Vec<f32> = x.iter().map(|v| v * 0.3 + 0.1).collect();
            let bias: Vec<f32> = (0..n).map(|i| if i % 3 == 2 { -1e9 } else { 0.0 }).collect();
            let run = |isa: Isa| {
                let (mut y, mut dx, mut p, mut dp, mut tmp) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                gelu_on(isa, &x, &mut y);
                gelu_backward_on(isa, &x, &dy, &mut dx);
                softmax_row_on(isa, &x, &bias, 0.7, &mut p);
                softmax_row_backward_on(isa, &p, &dy, 0.7, &mut tmp, &mut dp);
                let mut q: Vec<f32> = x.iter().map(|v| v * 0.7).collect();
                let mut sum = [0f32];
                softmax_rows_unnormalized_on(isa, &mut q, n, &bias, &mut sum);
                q.iter_mut().for_each(|v| *v /= sum[0]);
                let mut ln = x.clone();
                layer_norm_rows_on(isa, &mut ln, &dy, &bias[..n].iter().map(|b| b.max(-1.0)).collect::<Vec<_>>(), 1e-12);
                (y, dx, p, dp, ln, q)
            };
            let reference = run(Isa::Scalar);
            assert!((reference.2.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let ln_want = layer_norm_naive(&x, &dy, &(0..n).map(|i| if i % 3 == 2 { -1.0 } else { 0.0 }).collect::<Vec<_>>());
            let d = reference.4.iter().zip(&ln_want).map(|(u, v)| (u - v).abs()).fold(0f32, f32::max);
            assert!(d <= LN_TOL, "scalar layer norm vs f64 reference: {d}");
            for isa in Isa::available() {
                let got = run(isa);
                for (a, b) in [(&got.0, &reference.0), (&got.1, &reference.1), (&got.2, &reference.2), (&got.3, &reference.3), (&got.4, &reference.4), (&got.5, &reference.2)] {
                    let d = a.iter().zip(b.iter()).map(|(u, v)| (u - v).abs()).fold(0f32, f32::max);
                    assert!(d <= SIMD_TOL, "{isa:?} n={n}: {d}");
                }
            }
        }
    }
}
