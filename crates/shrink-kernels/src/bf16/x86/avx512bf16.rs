//! AVX512-BF16's rounding instruction, for kernels compiled with it.

use crate::bf16::Round16;

/// AVX512-BF16's vcvtneps2bf16: the same round to nearest even in one instruction, for inputs that are normal or
/// zero (it flushes subnormals, which `bf16` keeps). Only inside functions compiled with `avx512bf16`, on CPUs
/// that have it (`activation::x86::avx512bf16`).
pub(crate) struct Native;

impl Round16 for Native {
    #[inline(always)]
    fn round16(e: &[f32; 16], out: &mut [u16]) {
        use std::arch::x86_64::*;
        assert!(out.len() >= 16);
        // SAFETY: 16 values each side; the caller runs with avx512bf16 on a CPU that has it (see the type's doc).
        unsafe {
            let b = _mm512_cvtneps_pbh(_mm512_loadu_ps(e.as_ptr()));
            _mm256_storeu_si256(out.as_mut_ptr().cast(), std::mem::transmute::<__m256bh, __m256i>(b));
        }
    }
}
