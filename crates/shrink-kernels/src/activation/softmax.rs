//! Masked softmax rows: normalised (with its backward in `mod.rs`), unnormalised for attention's f32 path (the
//! division moves to the narrower output), and straight to bf16 for its bf16 path.

use super::{tree, LANES};
use crate::bf16::{Portable, Round16};
use crate::math;
use crate::multiversion;

multiversion!(
    /// One row: y = softmax(s * scale + bias).
    pub softmax_row, softmax_row_on; (s: &[f32], bias: &[f32], scale: f32, y: &mut [f32]) {
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
    pub softmax_rows_unnormalized, softmax_rows_unnormalized_on; (y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32]) {
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
    let max = max_rows::<R>(y, t);
    exp_sum_rows_at(y, t, max)
}

/// R rows of `y` (R x t) = exp(row - max[r]), and each row's sum.
#[inline(always)]
fn exp_sum_rows_at<const R: usize>(y: &mut [f32], t: usize, max: [f32; R]) -> [f32; R] {
    let full = t / LANES * LANES;
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

multiversion!(
    /// One key block of online (flash-style) softmax, in place, for every row of `y` (rows of `t`; `max.len()` rows;
    /// `bias` as in `softmax_rows_unnormalized`). Each row's running `max` takes the block's, the row becomes
    /// exp(row - max), `alpha` gets exp(old max - new max), the factor that the sums and outputs of earlier blocks
    /// need, and `sums` = sums * alpha + this block's sum. Start with max = -inf and sums = 0 (alpha is then 0).
    pub softmax_rows_online, softmax_rows_online_on; (y: &mut [f32], t: usize, bias: &[f32], max: &mut [f32], sums: &mut [f32], alpha: &mut [f32]) {
        let rows = max.len();
        if t == 0 {
            alpha[..rows].fill(1.0);
            return;
        }
        add_row_bias(y, t, rows, bias);
        let quads = rows / ROWS * ROWS;
        for r0 in (0..quads).step_by(ROWS) {
            let block = &mut y[r0 * t..(r0 + ROWS) * t];
            let m = rescale::<ROWS>(max_rows::<ROWS>(block, t), &mut max[r0..], &mut sums[r0..], &mut alpha[r0..]);
            for (s, v) in sums[r0..].iter_mut().zip(exp_sum_rows_at::<ROWS>(block, t, m)) {
                *s += v;
            }
        }
        for r in quads..rows {
            let row = &mut y[r * t..(r + 1) * t];
            let m = rescale::<1>(max_rows::<1>(row, t), &mut max[r..], &mut sums[r..], &mut alpha[r..]);
            sums[r] += exp_sum_rows_at::<1>(row, t, m)[0];
        }
    }
);

/// R running maxima raised to their block's (`block`), exp(old - new) into `alpha`, the sums scaled by it; returns
/// the new maxima.
#[inline(always)]
fn rescale<const R: usize>(block: [f32; R], max: &mut [f32], sums: &mut [f32], alpha: &mut [f32]) -> [f32; R] {
    let mut out = [0f32; R];
    for r in 0..R {
        let m = max[r].max(block[r]);
        alpha[r] = if max[r] == f32::NEG_INFINITY { 0.0 } else { math::exp(max[r] - m) };
        sums[r] *= alpha[r];
        (max[r], out[r]) = (m, m);
    }
    out
}

multiversion!(
    /// `softmax_rows_unnormalized` for the bf16 attention path: the exps of every row of `y` (rows of `t`, plus `bias`
    /// when not empty, modified in place) go to `out` as bf16 (row i at `out[i * ld..]`, columns t..ld zeroed), their
    /// f32 sums to `sums`. One pass fewer than softmax then conversion, and `exp_bf16`.
    ///
    /// The AVX-512 level with AVX512-BF16 plugs a build that rounds with its instruction instead (`x86/avx512bf16.rs`:
    /// the rounding was the larger part of this function).
    pub softmax_rows_bf16, softmax_rows_bf16_on; (y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32], out: &mut [u16], ld: usize) {
        softmax_bf16_body::<Portable>(y, t, bias, sums, out, ld)
    }
);

#[inline(always)]
pub(crate) fn softmax_bf16_body<B: Round16>(y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32], out: &mut [u16], ld: usize) {
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
