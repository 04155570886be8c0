//! ARMv8.6 i8mm: usmmla multiplies a 2 x 8 u8 block by the transpose of a 2 x 8 s8 block into a 2 x 2 i32 tile,
//! 32 MACs per instruction, u8 activations as they are (no flip). Two chunks (K 4t..4t+8) are zipped into 8
//! column pairs of 8 K bytes each, the operand usmmla wants, so the packing stays the one every level reads. The
//! int4 tile is the dotprod one. `vusmmlaq_s32` is unstable in Rust, so the instruction is written in `asm!`.

use std::arch::aarch64::*;

use super::qreg::{self, store};
use super::dotprod;
use crate::qgemm::{kernels, Chunk, I4Panels, I8Panels, Kernels, Micro, Out, Rows};

pub(crate) struct I8mm;

pub(crate) const KERNELS: Kernels = kernels!(I8mm, "dotprod,i8mm");

/// acc (2 x 2: [r0 c0, r0 c1, r1 c0, r1 c1]) += x (rows r0, r1 x 8 u8) · w (columns c0, c1 x 8 s8)ᵀ.
#[inline]
#[target_feature(enable = "i8mm")]
unsafe fn usmmla(acc: int32x4_t, x: uint8x16_t, w: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    std::arch::asm!("usmmla {acc:v}.4s, {x:v}.16b, {w:v}.16b", acc = inout(vreg) acc, x = in(vreg) x, w = in(vreg) w,
        options(pure, nomem, nostack, preserves_flags));
    acc
}

/// Rows r and r + 1, K bytes 4t..4t+8 (4t..4t+4 and zeros when the row has no chunk t + 1: its bytes past K_pad
/// may not be readable).
#[inline(always)]
unsafe fn act_pair(a: &Rows, r: usize, t: usize, both: bool) -> uint8x16_t {
    let row = |r: usize| a.ptr.add(r * a.lda + 4 * t);
    let half = |p: *const u8| match both {
        true => p.cast::<u64>().read_unaligned(),
        false => p.cast::<u32>().read_unaligned() as u64,
    };
    vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(half(row(r))), vcreate_u64(half(row(r + 1)))))
}

/// The 8 column pairs of chunks t and t + 1 (zeros for a missing t + 1): pair 2q + h holds columns 4q + 2h and
/// 4q + 2h + 1, K bytes 4t..4t+8 each.
#[inline(always)]
unsafe fn column_pairs(c0: *const Chunk, c1: Option<*const Chunk>) -> [int8x16_t; 8] {
    let q = |c: *const Chunk, i: usize| vreinterpretq_u32_s8(vld1q_s8(c.cast::<i8>().add(16 * i)));
    std::array::from_fn(|j| {
        let (lo, hi) = (q(c0, j / 2), c1.map_or(vdupq_n_u32(0), |c1| q(c1, j / 2)));
        vreinterpretq_s8_u32(if j % 2 == 0 { vzip1q_u32(lo, hi) } else { vzip2q_u32(lo, hi) })
    })
}

impl Micro for I8mm {
    // 2 row pairs x 8 column pairs = 16 accumulators, 8 column pairs, 2 row pairs of bytes.
    const I8_TILE: (usize, usize) = (4, 1);
    const I4_TILE: (usize, usize) = (4, 1);

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        let mut acc = [[vdupq_n_s32(0); 8]; 2];
        for t in (0..w.kq).step_by(2) {
            let both = t + 1 < w.kq;
            let pairs = column_pairs(w.ptr.add(t), both.then(|| w.ptr.add(t + 1)));
            for (p, acc) in acc.iter_mut().enumerate() {
                let x = act_pair(&a, 2 * p, t, both);
                for (acc, &wp) in acc.iter_mut().zip(&pairs) {
                    *acc = usmmla(*acc, x, wp);
                }
            }
        }
        for r in 0..a.mr {
            let acc = &acc[r / 2];
            let (corr, sa) = (-*a.zero.add(r), *a.scale.add(r));
            let y = std::array::from_fn(|q| {
                // Row r's columns 4q..4q+4: the low (r even) or high halves of column pairs 2q and 2q + 1.
                let (p0, p1) = (vreinterpretq_u64_s32(acc[2 * q]), vreinterpretq_u64_s32(acc[2 * q + 1]));
                let s = vreinterpretq_s32_u64(if r % 2 == 0 { vzip1q_u64(p0, p1) } else { vzip2q_u64(p0, p1) });
                qreg::scaled(qreg::exact(s, corr, w.colsum.add(4 * q)), sa, w.scale.add(4 * q))
            });
            store(out, r, y);
        }
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        dotprod::i4(a, w, out)
    }

    #[inline(always)]
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
        qreg::range_with_zero(x)
    }
}
