//! AVX2 microkernels, exact on vpmaddubsw. vpmaddubsw multiplies u8 by s8 and saturates its i16 pair sums, which
//! u8 activations x i8 weights can exceed (2 * 255 * 127 > 32767). So each activation byte a is taken as
//! a' = a - 128 (s8), and |a'| (u8) times w * sign(a') (vpsignb) multiplies the same values with pair sums of at
//! most 2 * 128 * 127 = 32512. vpmaddwd with ones adds the pairs into i32: a chunk's 4 K bytes per column sum into
//! one lane, so a 32-byte half chunk gives 8 columns' sums with no shuffles. The 128 taken off every activation
//! comes back with the column sums: sum a w - z colsum = sum a' w + (128 - z) colsum, the reference's integers.
//! 4 instructions per 32 products per row (the i16-widening vpmaddwd path took 5 per 32, plus the widening).
//! The tiles are `ymm.rs`'s, shared with AVX-VNNI; this file is the dot step.

use super::ymm::{i4_tile, i8_tile, Dot};
use crate::qgemm::{kernels, I4Panels, I8Panels, Kernels, Micro, Out, Rows};
use std::arch::x86_64::*;

pub(super) struct Avx2;

pub(crate) const KERNELS: Kernels = kernels!(Avx2, "avx2,fma");

impl Dot for Avx2 {
    /// (|a'|, a'), a' = a - 128, over 256 bits.
    type Act = (__m256i, __m256i);

    #[inline(always)]
    unsafe fn act4(a: &Rows, r: usize, k: usize) -> Self::Act {
        let x = a.ptr.add(r * a.lda + k).cast::<i32>().read_unaligned();
        let s = _mm256_xor_si256(_mm256_set1_epi32(x), _mm256_set1_epi8(i8::MIN));
        (_mm256_abs_epi8(s), s)
    }

    #[inline(always)]
    unsafe fn dot4(c: __m256i, (abs, signed): Self::Act, w: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(w, signed));
        _mm256_add_epi32(c, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    /// The sums on a' plus (128 - zero) colsum.
    #[inline(always)]
    unsafe fn exact(c: __m256i, zero: i32, colsum: *const i32, h: usize) -> __m256i {
        let col = _mm256_loadu_si256(colsum.add(8 * h).cast());
        _mm256_add_epi32(c, _mm256_mullo_epi32(_mm256_set1_epi32(128 - zero), col))
    }
}

impl Micro for Avx2 {
    const I8_TILE: (usize, usize) = (1, 3);
    const I4_TILE: (usize, usize) = (4, 1);

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        // 1 row x 3 panels: the row's (|a'|, a') costs 4 instructions per K step, so it serves 48 columns; the
        // weights stream from L1/L2 per row.
        shape!(i8_tile, [Avx2], a.mr, [1], w.np, [1 2 3], (&a, w, out))
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        // 4 rows x 16 columns: each row's 2 accumulators, and per K step the panel's halves in both nibbles.
        shape!(i4_tile, [Avx2], a.mr, [1 2 3 4], w.np, [1], (&a, w, out))
    }

    #[inline(always)]
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (chunks, tail) = x.as_chunks::<8>();
        for c in chunks {
            let v = _mm256_loadu_ps(c.as_ptr());
            (lo, hi) = (_mm256_min_ps(lo, v), _mm256_max_ps(hi, v));
        }
        let lanes = |v| std::mem::transmute::<__m256, [f32; 8]>(v);
        let (lo, hi) = (lanes(lo), lanes(hi));
        let (lo, hi) = (lo.into_iter().chain(tail.iter().copied()), hi.into_iter().chain(tail.iter().copied()));
        (lo.fold(0.0, f32::min), hi.fold(0.0, f32::max))
    }
}
