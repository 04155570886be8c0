//! Elementwise and row kernels of the transformer block: exact GELU and its gradient, elu + 1, LayerNorm rows, and masked
//! softmax rows (`softmax.rs`). Each is one plain loop body built per level (`multiversion!`); the generic build is
//! the reference the others are tested against, with `reference.rs`'s f64 forms behind it.

use crate::math;
use crate::multiversion;

#[cfg(test)]
mod reference;
pub(crate) mod softmax;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    pub(crate) mod avx512bf16;
}

pub use softmax::{
    softmax_row, softmax_row_on, softmax_rows_bf16, softmax_rows_bf16_on, softmax_rows_online, softmax_rows_online_on, softmax_rows_unnormalized,
    softmax_rows_unnormalized_on,
};

multiversion!(
    /// y = GELU(x), exact (erf) form.
    pub gelu, gelu_on; (x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x);
        math::gelu_slice(y);
    }
);

multiversion!(
    /// x = elu(x) + 1 in place: linear attention's feature map (positive, so its normaliser never vanishes).
    pub elu_plus_one, elu_plus_one_on; (x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = if *v > 0.0 { *v + 1.0 } else { math::exp(*v) };
        }
    }
);

multiversion!(
    /// dx = dy * GELU'(x).
    pub gelu_backward, gelu_backward_on; (x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
            *d = g * math::gelu_grad(x);
        }
    }
);

/// Independent accumulators for reductions: float sums only vectorise when split into lanes by hand.
pub(crate) const LANES: usize = 16;

/// Folds LANES accumulators pairwise (log2 LANES dependent steps instead of LANES - 1): the reduction ends every
/// short row, so its latency counts.
#[inline(always)]
pub(crate) fn tree(mut a: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
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
    /// Row-wise LayerNorm in place: x = (x - mean) / sqrt(var + eps) * w + b, over rows of `w.len()` values.
    pub layer_norm_rows, layer_norm_rows_on; (x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
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
    pub softmax_row_backward, softmax_row_backward_on; (y: &[f32], dy: &[f32], scale: f32, tmp: &mut [f32], ds: &mut [f32]) {
        for ((t, &a), &b) in tmp.iter_mut().zip(y).zip(dy) {
            *t = a * b;
        }
        let dot = lanes_sum(tmp);
        for ((d, &a), &g) in ds.iter_mut().zip(y).zip(dy) {
            *d = scale * a * (g - dot);
        }
    }
);
