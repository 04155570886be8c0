//! The naive f32 GEMM every level's kernels are tested against.

use crate::epilogue::Epilogue;

/// Naive reference: w is the unpacked [N, K] weight.
pub fn gemm_f32_ref(out: &mut [f32], x: &[f32], m: usize, w: &[f32], n: usize, k: usize, ep: Epilogue) {
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
        }
        ep.apply(&mut out[i * n..(i + 1) * n], i, 0, n);
    }
}
