//! The AVX-512 level's bf16 softmax where the CPU has AVX512-BF16: `multiversion!`'s AVX-512 features plus
//! avx512bf16, rounding with vcvtneps2bf16 (`bf16::x86::avx512bf16::Native`).

use crate::activation::softmax::softmax_bf16_body;
use crate::bf16::x86::avx512bf16::Native;

/// `softmax_rows_bf16`'s build for the table; only for a CPU with these features.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,avx512bf16")]
pub(crate) unsafe fn softmax_rows_bf16(y: &mut [f32], t: usize, bias: &[f32], sums: &mut [f32], out: &mut [u16], ld: usize) {
    softmax_bf16_body::<Native>(y, t, bias, sums, out, ld)
}
