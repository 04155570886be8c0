//! The 128-bit int8 and int4 tiles that the NEON and dotprod levels share (the i8mm level keeps the dotprod int4
//! tile). A q register holds a quarter chunk: 4 columns x 4 K bytes. Both levels flip the u8 activations to s8
//! (x - 128, one eor), multiply signed, and add 128 colsum back, so the sums are the reference's integers. They
//! differ only in the dot step (`Dot`).

use std::arch::aarch64::*;

use crate::qgemm::{Chunk, I4Panels, I8Panels, Out, Rows, PANEL};

/// A level's 128-bit dot step.
pub(super) trait Dot {
    /// Partial sums of 4 columns.
    type Acc: Copy;
    const ZERO: Self::Acc;
    /// acc plus the products of the 4 K bytes per column of `w` (4 columns) with `x` (a row's 4 bytes in every lane).
    unsafe fn dot4(acc: Self::Acc, x: int8x16_t, w: int8x16_t) -> Self::Acc;
    /// Two K steps: acc plus x1 . w1 plus x2 . w2 (NEON fuses them before widening).
    #[inline(always)]
    unsafe fn dot8(acc: Self::Acc, x1: int8x16_t, w1: int8x16_t, x2: int8x16_t, w2: int8x16_t) -> Self::Acc {
        Self::dot4(Self::dot4(acc, x1, w1), x2, w2)
    }
    /// The 4 columns' i32 sums.
    unsafe fn sums(acc: Self::Acc) -> int32x4_t;
}

/// A row's 4 activation bytes at `k`, flipped to s8, in every lane.
#[inline(always)]
unsafe fn act4(a: &Rows, r: usize, k: usize) -> int8x16_t {
    let x = vld1q_dup_u32(a.ptr.add(r * a.lda + k).cast::<u32>());
    vreinterpretq_s8_u32(veorq_u32(x, vdupq_n_u32(0x8080_8080)))
}

/// Quarter q of a chunk.
#[inline(always)]
unsafe fn quarter(chunk: *const Chunk, q: usize) -> int8x16_t {
    vld1q_s8(chunk.cast::<i8>().add(16 * q))
}

/// The reference's sums of 4 columns from sums of flipped activations: s + (128 - zero) colsum (wrapping, as the
/// reference's s - zero colsum).
#[inline(always)]
pub(super) unsafe fn exact(s: int32x4_t, corr: i32, colsum: *const i32) -> int32x4_t {
    vmlaq_s32(s, vld1q_s32(colsum), vdupq_n_s32(corr))
}

/// 4 columns' exact sums as f32 outputs: s x (row scale sa) x (the columns' weight scales at `scale`).
#[inline(always)]
pub(super) unsafe fn scaled(s: int32x4_t, sa: f32, scale: *const f32) -> float32x4_t {
    vmulq_f32(vcvtq_f32_s32(s), vmulq_f32(vdupq_n_f32(sa), vld1q_f32(scale)))
}

/// Row r's first `out.nc` columns from its 4 quarters.
#[inline(always)]
pub(super) unsafe fn store(out: &Out, r: usize, y: [float32x4_t; 4]) {
    let p = out.ptr.add(r * out.ld);
    if out.nc == PANEL {
        for (q, y) in y.into_iter().enumerate() {
            vst1q_f32(p.add(4 * q), y);
        }
    } else {
        let mut part = [0f32; PANEL];
        for (q, y) in y.into_iter().enumerate() {
            vst1q_f32(part.as_mut_ptr().add(4 * q), y);
        }
        std::ptr::copy_nonoverlapping(part.as_ptr(), p, out.nc);
    }
}

/// R rows x 1 panel of int8 weights: 4 accumulators per row; K steps go in pairs (`Dot::dot8`), a chunk's quarters
/// loaded once and each row's bytes once. Rows past `a.mr` are computed (their bytes are readable) but not stored.
#[inline(always)]
pub(super) unsafe fn i8_tile<D: Dot, const R: usize>(a: &Rows, w: &I8Panels, out: &Out) {
    let mut acc = [[D::ZERO; 4]; R];
    let quarters = |t: usize| {
        let chunk = w.ptr.add(t);
        [quarter(chunk, 0), quarter(chunk, 1), quarter(chunk, 2), quarter(chunk, 3)]
    };
    for t in (0..w.kq & !1).step_by(2) {
        let (w1, w2) = (quarters(t), quarters(t + 1));
        for (r, acc) in acc.iter_mut().enumerate() {
            let (x1, x2) = (act4(a, r, 4 * t), act4(a, r, 4 * t + 4));
            for q in 0..4 {
                acc[q] = D::dot8(acc[q], x1, w1[q], x2, w2[q]);
            }
        }
    }
    if w.kq % 2 == 1 {
        let t = w.kq - 1;
        let wq = quarters(t);
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = act4(a, r, 4 * t);
            for q in 0..4 {
                acc[q] = D::dot4(acc[q], x, wq[q]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(a.mr) {
        let (corr, sa) = (128 - *a.zero.add(r), *a.scale.add(r));
        let y = std::array::from_fn(|q| {
            scaled(exact(D::sums(acc[q]), corr, w.colsum.add(4 * q)), sa, w.scale.add(4 * q))
        });
        store(out, r, y);
    }
}

/// R rows x 1 panel of int4 weights: per group, i32 sums of 16 q (each nibble moved to the high half of a byte),
/// then the reference's f32 fma with the group's scales.
#[inline(always)]
pub(super) unsafe fn i4_tile<D: Dot, const R: usize>(a: &Rows, w: &I4Panels, out: &Out) {
    let mut f = [[vdupq_n_f32(0.0); 4]; R];
    let high = vdupq_n_s8(0xF0u8 as i8);
    for g in 0..w.groups {
        let mut acc = [[D::ZERO; 4]; R];
        for t in g * w.per_group..(g + 1) * w.per_group {
            let chunk = w.ptr.add(t);
            let wq: [int8x16_t; 4] = std::array::from_fn(|q| quarter(chunk, q));
            let lo = wq.map(|v| vshlq_n_s8::<4>(v));
            let hi = wq.map(|v| vandq_s8(v, high));
            for (r, acc) in acc.iter_mut().enumerate() {
                let (xl, xh) = (act4(a, r, 8 * t), act4(a, r, 8 * t + 4));
                for q in 0..4 {
                    acc[q] = D::dot8(acc[q], xl, lo[q], xh, hi[q]);
                }
            }
        }
        let (scale, colsum) = (w.scale(0, g), w.colsum(0, g));
        for (r, (f, acc)) in f.iter_mut().zip(&acc).enumerate().take(a.mr) {
            let corr = 128 - *a.zero.add(r);
            for q in 0..4 {
                let s = exact(D::sums(acc[q]), corr, colsum.add(4 * q));
                f[q] = vfmaq_f32(f[q], vcvtq_f32_s32(s), vld1q_f32(scale.add(4 * q)));
            }
        }
    }
    for (r, f) in f.iter().enumerate().take(a.mr) {
        let sa = vdupq_n_f32(*a.scale.add(r));
        store(out, r, f.map(|f| vmulq_f32(f, sa)));
    }
}

/// (min(x, 0), max(x, 0)) of finite x, 4 lanes at a time, folded as the generic level does.
#[inline(always)]
pub(super) unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
    let (chunks, tail) = x.as_chunks::<4>();
    for c in chunks {
        let v = vld1q_f32(c.as_ptr());
        (lo, hi) = (vminq_f32(lo, v), vmaxq_f32(hi, v));
    }
    let lanes = |v| std::mem::transmute::<float32x4_t, [f32; 4]>(v);
    let (lo, hi) = (lanes(lo), lanes(hi));
    let (lo, hi) = (lo.into_iter().chain(tail.iter().copied()), hi.into_iter().chain(tail.iter().copied()));
    (lo.fold(0.0, f32::min), hi.fold(0.0, f32::max))
}
