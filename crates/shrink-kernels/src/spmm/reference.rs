//! The sparse GEMM's reference: the dense naive GEMM on the weight made dense again.

use super::SparseF32;
use crate::epilogue::Epilogue;
use crate::sgemm::gemm_f32_ref;

/// out (M, N) = x (M, K)·Wᵀ, then the epilogue, through `gemm_f32_ref`.
pub fn gemm_sparse_ref(out: &mut [f32], x: &[f32], m: usize, w: &SparseF32, ep: Epilogue) {
    gemm_f32_ref(out, x, m, &w.to_dense(), w.n, w.k, ep)
}
