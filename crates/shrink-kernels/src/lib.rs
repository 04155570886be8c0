//! shrink-kernels: numeric kernels with no model knowledge.
//!
//! Dispatch: `ops::Ops` is a table of kernels per SIMD level, built once, generic builds first, then the
//! architecture's `plug` (`x86.rs`) overwrites what the level and the CPU's features have; `SHRINK_ISA` caps the
//! level (`isa.rs`). Families (`sgemm/`, `qgemm/`, `spmm/`, `activation/`, `bf16/`) each hold a `reference.rs`, the
//! generic version and one file per ISA under `x86/`; plain loops are built per level by `multiversion!`. Every
//! level's table runs one test suite (`kernel_tests!`) against the references: bit-exact where the integers must
//! match, else under named error budgets.

pub mod activation;
pub mod bf16;
pub mod dropout;
pub mod epilogue;
#[cfg(feature = "gemm")]
pub mod gemm;
pub mod isa;
pub mod math;
mod multiversion;
pub mod ops;
pub mod qgemm;
pub mod sgemm;
pub mod spmm;
#[cfg(test)]
mod testsuite;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "aarch64")]
mod aarch64;

pub use ops::{ops, Ops};

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
