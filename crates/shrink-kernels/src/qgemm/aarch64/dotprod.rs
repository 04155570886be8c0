//! ARMv8.2 dotprod: sdot adds 4 s8 x s8 products into each i32 lane, 16 MACs per instruction. `vdotq_s32` is
//! unstable in Rust, so the instruction is written in `asm!`.

use std::arch::aarch64::*;

use super::qreg::{self, Dot};
use crate::qgemm::{kernels, I4Panels, I8Panels, Kernels, Micro, Out, Rows};

pub(crate) struct Dotprod;

pub(crate) const KERNELS: Kernels = kernels!(Dotprod, "dotprod");

/// acc[j] += sum_i w[4j + i] x[4j + i] (signed bytes).
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn sdot(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    std::arch::asm!("sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b", acc = inout(vreg) acc, w = in(vreg) w, x = in(vreg) x,
        options(pure, nomem, nostack, preserves_flags));
    acc
}

impl Dot for Dotprod {
    type Acc = int32x4_t;
    const ZERO: int32x4_t = unsafe { std::mem::transmute::<[i32; 4], int32x4_t>([0; 4]) };

    #[inline(always)]
    unsafe fn dot4(acc: int32x4_t, x: int8x16_t, w: int8x16_t) -> int32x4_t {
        sdot(acc, w, x)
    }

    #[inline(always)]
    unsafe fn sums(acc: int32x4_t) -> int32x4_t {
        acc
    }
}

impl Micro for Dotprod {
    // 4 rows x 4 quarters = 16 accumulators, 4 weight quarters, 4 rows of bytes.
    const I8_TILE: (usize, usize) = (4, 1);
    const I4_TILE: (usize, usize) = (4, 1);

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        qreg::i8_tile::<Self, 4>(&a, w, out)
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        i4(a, w, out)
    }

    #[inline(always)]
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
        qreg::range_with_zero(x)
    }
}

/// The int4 tile, which the i8mm level shares.
#[inline(always)]
pub(super) unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
    qreg::i4_tile::<Dotprod, 4>(&a, w, out)
}
