//! AVX-512 f32 microkernels: 8 x 48, and 8 x 32 for narrow matrices (`PackedF32::empty_narrow`). The AMX level
//! runs these too (its tiles here are int8 and bf16 only).
//!
//! They take the multiversioned epilogue's features, so the epilogue they inline compiles as it does there (fma for
//! mul_add).

use std::arch::x86_64::*;

use crate::sgemm::generic::microkernel;
use crate::sgemm::{Geometry, Kernel};

/// 8 x 3 zmm accumulators + 3 weight registers + 1 broadcast of 32 registers. KC 192: the 192 x 48 weight sliver
/// (36 KB) stays in L1 across the row tiles; at 384 it streamed from L2 (measured 106 -> 139 GOP/s at
/// 128 x 384 x 1536, one thread).
const WIDE: Geometry = Geometry { mr: 8, nr: 48, kc: 192 };
/// 8 x 2 zmm accumulators: 16 chains still cover the FMA latency at 2 per cycle.
const NARROW_GEOMETRY: Geometry = Geometry { mr: 8, nr: 32, kc: 192 };

microkernel!(#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")] wide, WIDE, __m512, 16,
    _mm512_setzero_ps(), _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps);

microkernel!(#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")] narrow, NARROW_GEOMETRY,
    __m512, 16, _mm512_setzero_ps(), _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps);

pub(crate) const KERNEL: Kernel = Kernel { geometry: WIDE, run: wide };
pub(crate) const NARROW: Kernel = Kernel { geometry: NARROW_GEOMETRY, run: narrow };
