//! The bf16 product's reference.

use super::round;

/// Naive reference: out = round(A) · round(B) in f32, A and B plain f32 row-major (rows x k, k x n).
pub fn gemm_bf16_ref(out: &mut [f32], a: &[f32], rows: usize, b: &[f32], k: usize, n: usize) {
    for i in 0..rows {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| round(a[i * k + p]) * round(b[p * n + j])).sum();
        }
    }
}
