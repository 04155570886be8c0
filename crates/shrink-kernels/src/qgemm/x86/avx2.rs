//! AVX2 microkernels, exact on vpmaddubsw. vpmaddubsw multiplies u8 by s8 and saturates its i16 pair sums, which
//! u8 activations x i8 weights can exceed (2 * 255 * 127 > 32767). So each activation byte a is taken as
//! a' = a - 128 (s8), and |a'| (u8) times w * sign(a') (vpsignb) multiplies the same values with pair sums of at
//! most 2 * 128 * 127 = 32512. vpmaddwd with ones adds the pairs into i32: a chunk's 4 K bytes per column sum into
//! one lane, so a 32-byte half chunk gives 8 columns' sums with no shuffles. The 128 taken off every activation
//! comes back with the column sums: sum a w - z colsum = sum a' w + (128 - z) colsum, the reference's integers.
//! 4 instructions per 32 products per row (the i16-widening vpmaddwd path took 5 per 32, plus the widening).

use crate::qgemm::{kernels, Chunk, I4Panels, I8Panels, Kernels, Micro, Out, Rows};
use std::arch::x86_64::*;

pub(super) struct Avx2;

pub(crate) const KERNELS: Kernels = kernels!(Avx2, "avx2,fma");

/// int4 tiles: rows x 16 columns, 2 accumulators per row; per K step the row's (|a'|, a') and the panel's halves
/// in both nibbles, shared by the rows. int8 tiles are 1 row x 3 panels (6 accumulators): the row's (|a'|, a')
/// costs 4 instructions per K step, so it pays to use it for 48 columns; the weights stream from L1/L2 per row.
const ROWS: usize = 4;

/// The 4 activation bytes at `k` of row r, repeated over 256 bits, as (|a'|, a'), a' = a - 128.
#[inline(always)]
unsafe fn act4(a: &Rows, r: usize, k: usize) -> (__m256i, __m256i) {
    let x = a.ptr.add(r * a.lda + k).cast::<i32>().read_unaligned();
    let s = _mm256_xor_si256(_mm256_set1_epi32(x), _mm256_set1_epi8(i8::MIN));
    (_mm256_abs_epi8(s), s)
}

/// Half h (columns 8h..8h+8, their 4 K bytes each) of a chunk.
#[inline(always)]
pub(super) unsafe fn half(chunk: *const Chunk, h: usize) -> __m256i {
    _mm256_load_si256(chunk.cast::<__m256i>().add(h))
}

/// c (8 columns' i32 sums) plus the products of the 4 K bytes per column of `w` with the row's (|a'|, a').
#[inline(always)]
unsafe fn dot4(c: __m256i, (abs, signed): (__m256i, __m256i), w: __m256i) -> __m256i {
    let pairs = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(w, signed));
    _mm256_add_epi32(c, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// The reference's integer sums of columns 8h..8h+8 from the sums on a': c + (128 - zero) colsum.
#[inline(always)]
unsafe fn unshift(c: __m256i, zero: i32, colsum: *const i32, h: usize) -> __m256i {
    let col = _mm256_loadu_si256(colsum.add(8 * h).cast());
    _mm256_add_epi32(c, _mm256_mullo_epi32(_mm256_set1_epi32(128 - zero), col))
}

/// Stores columns 8h..8h+8 of row r, those below `out.nc`.
#[inline(always)]
pub(super) unsafe fn store(out: &Out, r: usize, h: usize, y: __m256) {
    let p = out.ptr.add(r * out.ld + 8 * h);
    let left = out.nc.saturating_sub(8 * h) as i32;
    if left >= 8 {
        _mm256_storeu_ps(p, y);
    } else {
        _mm256_maskstore_ps(
            p,
            _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
            y,
        );
    }
}

/// R rows x P panels (16 P columns) of int8 weights.
#[inline(always)]
unsafe fn i8_tile<const R: usize, const P: usize>(a: &Rows, w: &I8Panels, out: &Out) {
    let mut c = [[[_mm256_setzero_si256(); 2]; P]; R];
    for t in 0..w.kq {
        for (r, c) in c.iter_mut().enumerate() {
            let x = act4(a, r, 4 * t);
            for (p, c) in c.iter_mut().enumerate() {
                for (h, c) in c.iter_mut().enumerate() {
                    *c = dot4(*c, x, half(w.ptr.add(p * w.stride + t), h));
                }
            }
        }
    }
    for (r, c) in c.iter().enumerate() {
        let sa = _mm256_set1_ps(*a.scale.add(r));
        for (p, c) in c.iter().enumerate().take(w.np) {
            for (h, &c) in c.iter().enumerate() {
                let s = unshift(c, *a.zero.add(r), w.colsum.add(16 * p), h);
                let y = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(sa, _mm256_loadu_ps(w.scale.add(16 * p + 8 * h))));
                store(out, r, 2 * p + h, y);
            }
        }
    }
}

/// Rows of a.mr x 16 columns of int4 weights: each nibble goes into the high half of a byte (16 q, |.| <= 112).
#[inline(always)]
unsafe fn i4_tile<const R: usize>(a: &Rows, w: &I4Panels, out: &Out) {
    let high = _mm256_set1_epi8(0xF0u8 as i8);
    let mut f = [[_mm256_setzero_ps(); 2]; R];
    for g in 0..w.groups {
        let mut c = [[_mm256_setzero_si256(); 2]; R]; // 16 * sum of a' * q over the group
        for t in g * w.per_group..(g + 1) * w.per_group {
            // K group 2t in the low nibbles, 2t+1 in the high ones.
            let v = [half(w.ptr.add(t), 0), half(w.ptr.add(t), 1)];
            let lo = v.map(|v| _mm256_and_si256(_mm256_slli_epi16::<4>(v), high));
            let hi = v.map(|v| _mm256_and_si256(v, high));
            for (r, c) in c.iter_mut().enumerate() {
                let (xl, xh) = (act4(a, r, 8 * t), act4(a, r, 8 * t + 4));
                for (h, c) in c.iter_mut().enumerate() {
                    *c = dot4(dot4(*c, xl, lo[h]), xh, hi[h]);
                }
            }
        }
        for (r, (f, c)) in f.iter_mut().zip(&c).enumerate() {
            for (h, (f, &c)) in f.iter_mut().zip(c).enumerate() {
                let s = unshift(c, *a.zero.add(r), w.colsum(0, g), h);
                *f = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_loadu_ps(w.scale(0, g).add(8 * h)), *f);
            }
        }
    }
    for (r, f) in f.iter().enumerate() {
        let sa = _mm256_set1_ps(*a.scale.add(r));
        for (h, f) in f.iter().enumerate() {
            store(out, r, h, _mm256_mul_ps(*f, sa));
        }
    }
}

impl Micro for Avx2 {
    const I8_TILE: (usize, usize) = (1, 3);
    const I4_TILE: (usize, usize) = (ROWS, 1);

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        match w.np {
            3 => i8_tile::<1, 3>(&a, w, out),
            2 => i8_tile::<1, 2>(&a, w, out),
            _ => i8_tile::<1, 1>(&a, w, out),
        }
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        match a.mr {
            1 => i4_tile::<1>(&a, w, out),
            2 => i4_tile::<2>(&a, w, out),
            3 => i4_tile::<3>(&a, w, out),
            _ => i4_tile::<ROWS>(&a, w, out),
        }
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
