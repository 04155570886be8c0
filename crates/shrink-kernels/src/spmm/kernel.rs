//! The sparse product: x transposed once, then blocks of MB output rows, one task each.

use rayon::prelude::*;

use super::SparseF32;
use crate::epilogue::Epilogue;
use crate::multiversion;

/// Output rows of one task: 64 accumulators are 4 AVX-512 / 8 AVX2 registers.
pub(super) const MB: usize = 64;

/// out (M, N) = x (M, K)·Wᵀ, then the epilogue. `xt` is a reused buffer for x transposed (grown to K·M once).
pub fn gemm_sparse(out: &mut [f32], x: &[f32], m: usize, w: &SparseF32, ep: Epilogue, xt: &mut Vec<f32>) {
    let (n, k) = (w.n, w.k);
    assert!(x.len() >= m * k && out.len() >= m * n, "x {} / out {} too short for {m} x {k} -> {n}", x.len(), out.len());
    if xt.len() < k * m {
        xt.resize(k * m, 0.0);
    }
    let xt = &mut xt[..k * m]; // (K, M)
    transpose(x, m, k, xt);
    let xt = &*xt;
    let blocks = out[..m * n].par_chunks_mut(MB * n);
    blocks.enumerate().for_each(|(b, rows)| rows_block(rows, xt, m, b * MB, w, &ep));
}

multiversion!(
    /// out rows m0..m0 + rows.len() / N of the product (xt: x transposed, (K, M)).
    pub rows_block, rows_block_on; (rows: &mut [f32], xt: &[f32], m: usize, m0: usize, w: &SparseF32, ep: &Epilogue) {
        let n = w.n;
        let mb = rows.len() / n;
        for j in 0..n {
            let entries = w.row_start[j] as usize..w.row_start[j + 1] as usize;
            let (cols, vals) = (&w.col[entries.clone()], &w.val[entries]);
            // Fixed-width pieces keep their accumulators in registers; only a tail under 16 rows goes through memory.
            let mut i0 = 0;
            while i0 < mb {
                let left = mb - i0;
                if left >= 64 {
                    store(rows, n, j, i0, &column::<64>(cols, vals, xt, m, m0 + i0));
                    i0 += 64;
                } else if left >= 16 {
                    store(rows, n, j, i0, &column::<16>(cols, vals, xt, m, m0 + i0));
                    i0 += 16;
                } else {
                    let mut acc = [0f32; 16];
                    for (&c, &v) in cols.iter().zip(vals) {
                        for (a, &x) in acc.iter_mut().zip(&xt[c as usize * m + m0 + i0..][..left]) {
                            *a = v.mul_add(x, *a);
                        }
                    }
                    store(rows, n, j, i0, &acc[..left]);
                    i0 = mb;
                }
            }
        }
        for (i, row) in rows.chunks_exact_mut(n).enumerate() {
            ep.apply_inline(row, m0 + i, 0, n);
        }
    }
);

/// Output column j of W-rows' dot products for the W activations rows m0..m0 + W (xt: (K, M)).
#[inline(always)]
fn column<const W: usize>(cols: &[u16], vals: &[f32], xt: &[f32], m: usize, m0: usize) -> [f32; W] {
    let mut acc = [0f32; W];
    for (&c, &v) in cols.iter().zip(vals) {
        let xc: &[f32; W] = xt[c as usize * m + m0..][..W].try_into().unwrap();
        for i in 0..W {
            acc[i] = v.mul_add(xc[i], acc[i]);
        }
    }
    acc
}

/// rows[(i0 + i) * n + j] = acc[i]: one output column of a block.
#[inline(always)]
fn store(rows: &mut [f32], n: usize, j: usize, i0: usize, acc: &[f32]) {
    for (i, &a) in acc.iter().enumerate() {
        rows[(i0 + i) * n + j] = a;
    }
}

/// xt (K, M) = x (M, K)ᵀ in 8 x 8 tiles, so reads and writes both stay within a few cache lines.
pub(super) fn transpose(x: &[f32], m: usize, k: usize, xt: &mut [f32]) {
    const TILE: usize = 8;
    for i0 in (0..m).step_by(TILE) {
        for p0 in (0..k).step_by(TILE) {
            for i in i0..(i0 + TILE).min(m) {
                for p in p0..(p0 + TILE).min(k) {
                    xt[p * m + i] = x[i * k + p];
                }
            }
        }
    }
}

