//! shrink-kernels: numeric kernels with no model knowledge. Each fast routine has a reference (std, a naive loop or
//! its own scalar build) and a test with a named error budget.

pub mod activation;
pub mod bf16;
pub mod dropout;
pub mod epilogue;
#[cfg(feature = "gemm")]
pub mod gemm;
pub mod isa;
pub mod math;
pub mod qgemm;
pub mod sgemm;
pub mod spmm;

/// Rows of a row-wise pass (activation quantization, LayerNorm) below which one thread beats handing work to others.
pub const ROWS_PER_TASK: usize = 256;

/// Reproducible test data shared by the kernels' tests and the runtime's.
#[doc(hidden)]
pub mod testdata {
    /// Uniform in [-1, 1) from an xorshift stream seeded by `seed`.
    pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }
}
