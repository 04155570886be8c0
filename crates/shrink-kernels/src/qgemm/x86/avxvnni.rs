//! AVX-VNNI microkernels (Alder Lake and later, Zen 5): the 256-bit vpdpbusd adds the products of 4 u8
//! activations and 4 s8 weights into each i32 lane without saturating, so a 32-byte half chunk (8 columns x 4 K)
//! times a broadcast of a row's 4 activation bytes is one instruction, where AVX2 takes four. The tiles are
//! `ymm.rs`'s, shared with AVX2; the row quantizer and ranges are the AVX2 level's.

use super::avx2::Avx2;
use super::ymm::{i4_tile, i8_tile, Dot};
use crate::qgemm::{kernels, I4Panels, I8Panels, Kernels, Micro, Out, Rows};
use std::arch::x86_64::*;

pub(super) struct AvxVnni;

pub(crate) const KERNELS: Kernels = kernels!(AvxVnni, "avx2,fma,avxvnni");

impl Dot for AvxVnni {
    /// The 4 bytes repeated over 256 bits.
    type Act = __m256i;

    #[inline(always)]
    unsafe fn act4(a: &Rows, r: usize, k: usize) -> __m256i {
        _mm256_set1_epi32(a.ptr.add(r * a.lda + k).cast::<i32>().read_unaligned())
    }

    #[inline(always)]
    unsafe fn dot4(c: __m256i, x: __m256i, w: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(c, x, w)
    }

    /// The sums less zero colsum.
    #[inline(always)]
    unsafe fn exact(c: __m256i, zero: i32, colsum: *const i32, h: usize) -> __m256i {
        let col = _mm256_loadu_si256(colsum.add(8 * h).cast());
        _mm256_sub_epi32(c, _mm256_mullo_epi32(_mm256_set1_epi32(zero), col))
    }
}

impl Micro for AvxVnni {
    const I8_TILE: (usize, usize) = (6, 1);
    const I4_TILE: (usize, usize) = (4, 1);

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        // 6 rows x 16 columns: 2 accumulators per row, the panel's two halves and a broadcast use 15 of the 16
        // ymm registers.
        shape!(i8_tile, [AvxVnni], a.mr, [1 2 3 4 5 6], w.np, [1], (&a, w, out))
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        // 4 rows: the group sums in f32 take 2 more registers per row.
        shape!(i4_tile, [AvxVnni], a.mr, [1 2 3 4], w.np, [1], (&a, w, out))
    }

    #[inline(always)]
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
        Avx2::range_with_zero(x)
    }
}
