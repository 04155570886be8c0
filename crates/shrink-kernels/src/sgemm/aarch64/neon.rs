//! NEON f32 microkernel: 6 x 16, 6 x 4 q-register accumulators + 4 weight registers + 1 broadcast, 29 of the 32
//! vector registers.

use std::arch::aarch64::*;

use crate::sgemm::generic::microkernel;
use crate::sgemm::{Geometry, Kernel};

/// A 256-deep sliver of 16 columns is 16 KB: half the 32 KB L1 of the smaller cores (Cortex-A55).
const GEOMETRY: Geometry = Geometry { mr: 6, nr: 16, kc: 256 };

microkernel!(kernel, GEOMETRY, float32x4_t, 4, vdupq_n_f32(0.0), |p: *const f32| vld1q_f32(p), |x| vdupq_n_f32(x),
    |a, b, c| vfmaq_f32(c, a, b), |a, b| vaddq_f32(a, b), |p: *mut f32, v| vst1q_f32(p, v));

pub(crate) const KERNEL: Kernel = Kernel { geometry: GEOMETRY, run: kernel };
