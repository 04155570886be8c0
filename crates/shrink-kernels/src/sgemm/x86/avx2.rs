//! AVX2 + FMA f32 microkernel: 6 x 16, 6 x 2 ymm accumulators + 2 weight registers + 1 broadcast of 16.

use std::arch::x86_64::*;

use crate::sgemm::generic::microkernel;
use crate::sgemm::{Geometry, Kernel};

const GEOMETRY: Geometry = Geometry { mr: 6, nr: 16, kc: 384 };

microkernel!(#[target_feature(enable = "avx2,fma")] kernel, GEOMETRY, __m256, 8, _mm256_setzero_ps(),
    _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps);

pub(crate) const KERNEL: Kernel = Kernel { geometry: GEOMETRY, run: kernel };
