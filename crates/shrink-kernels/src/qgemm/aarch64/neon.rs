//! Baseline NEON (no dot product instruction, as on Cortex-A53 and A72): s8 x s8 products of two K steps into i16
//! by smull + smlal, pairs added into i32 by sadalp: 3 instructions per 16 MACs where smull + sadalp per step takes
//! 4. The i16 sum never wraps: |x - 128| <= 128 and the weights are on the symmetric grids (int8 |q| <= 127, int4
//! |16 q| <= 112, checked when a folder is read), so two products stay within 2 * 128 * 127 = 32512.

use std::arch::aarch64::*;
use std::arch::asm;

use super::qreg::{self, Dot};
use crate::qgemm::{kernels, I4Panels, I8Panels, Kernels, Micro, Out, Rows};

pub(crate) struct Neon;

pub(crate) const KERNELS: Kernels = kernels!(Neon);

/// Two accumulators per 4 columns: (columns 0, 1) and (2, 3), each column's K pairs in two lanes.
impl Dot for Neon {
    type Acc = (int32x4_t, int32x4_t);
    const ZERO: Self::Acc = unsafe { std::mem::transmute::<[i32; 8], Self::Acc>([0; 8]) };

    #[inline(always)]
    unsafe fn dot4(acc: Self::Acc, x: int8x16_t, w: int8x16_t) -> Self::Acc {
        let (mut a0, mut a1) = acc;
        // smull2 by hand: x is a splat, and LLVM then takes w's high half with an ext and a plain smull instead.
        asm!(
            "smull {t0:v}.8h, {w:v}.8b, {x:v}.8b",
            "smull2 {t1:v}.8h, {w:v}.16b, {x:v}.16b",
            "sadalp {a0:v}.4s, {t0:v}.8h",
            "sadalp {a1:v}.4s, {t1:v}.8h",
            a0 = inout(vreg) a0, a1 = inout(vreg) a1, w = in(vreg) w, x = in(vreg) x,
            t0 = out(vreg) _, t1 = out(vreg) _,
            options(pure, nomem, nostack),
        );
        (a0, a1)
    }

    #[inline(always)]
    unsafe fn dot8(acc: Self::Acc, x1: int8x16_t, w1: int8x16_t, x2: int8x16_t, w2: int8x16_t) -> Self::Acc {
        let (mut a0, mut a1) = acc;
        asm!(
            "smull {t0:v}.8h, {w1:v}.8b, {x1:v}.8b",
            "smull2 {t1:v}.8h, {w1:v}.16b, {x1:v}.16b",
            "smlal {t0:v}.8h, {w2:v}.8b, {x2:v}.8b",
            "smlal2 {t1:v}.8h, {w2:v}.16b, {x2:v}.16b",
            "sadalp {a0:v}.4s, {t0:v}.8h",
            "sadalp {a1:v}.4s, {t1:v}.8h",
            a0 = inout(vreg) a0, a1 = inout(vreg) a1, w1 = in(vreg) w1, x1 = in(vreg) x1, w2 = in(vreg) w2,
            x2 = in(vreg) x2, t0 = out(vreg) _, t1 = out(vreg) _,
            options(pure, nomem, nostack),
        );
        (a0, a1)
    }

    #[inline(always)]
    unsafe fn sums(acc: Self::Acc) -> int32x4_t {
        vpaddq_s32(acc.0, acc.1)
    }
}

impl Micro for Neon {
    // 2 rows x 4 quarters x 2 = 16 accumulators.
    const I8_TILE: (usize, usize) = (1, 1);
    const I4_TILE: (usize, usize) = (2, 1);

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        qreg::i8_tile::<Self, 1>(&a, w, out)
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        qreg::i4_tile::<Self, 2>(&a, w, out)
    }

    #[inline(always)]
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
        qreg::range_with_zero(x)
    }
}
