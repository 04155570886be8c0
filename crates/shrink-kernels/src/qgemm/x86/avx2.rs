//! AVX2 microkernels. vpmaddubsw (u8 x s8 pairs into i16) saturates (255 * 127 * 2 > 32767), so both operands are
//! widened to i16 and multiplied with vpmaddwd: each i32 lane gets a0 w0 + a1 w1, |.| <= 2 * 255 * 128, exact.
//! A 16-byte quarter of a chunk (4 columns x 4 K) widened times the row's 4 activations repeated gives per column
//! two partial sums (K 0-1 and 2-3), added up at the end of the K loop (or group).

use crate::qgemm::{kernels, Chunk, I4Panels, I8Panels, Kernels, Micro, Out, Rows};
use std::arch::x86_64::*;

pub(super) struct Avx2;

pub(crate) const KERNELS: Kernels = kernels!(Avx2, "avx2,fma");

/// Rows x 16 columns: 4 accumulators per row (one per quarter), so 2 rows use 8 of the 16 ymm registers.
const ROWS: usize = 2;

/// The 4 activation bytes at `k` of row r, widened to i16 and repeated over 256 bits.
#[inline(always)]
unsafe fn act4(a: &Rows, r: usize, k: usize) -> __m256i {
    let x = a.ptr.add(r * a.lda + k).cast::<i32>().read_unaligned();
    _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(x)))
}

/// Quarter qt (columns 4qt..4qt+4) of a chunk, as 16 bytes.
#[inline(always)]
unsafe fn quarter(chunk: *const Chunk, qt: usize) -> __m128i {
    _mm_load_si128(chunk.cast::<__m128i>().add(qt))
}

/// The 16 column sums (zero point taken out) of a row of quarters, each [c0 c0 c1 c1 | c2 c2 c3 c3] (two partial
/// sums per column): columns 0-7 and 8-15.
#[inline(always)]
unsafe fn column_sums(c: &[__m256i; 4], zero: i32, colsum: *const i32) -> [__m256i; 2] {
    // hadd adds within 128-bit lanes: hadd(q0, q1) holds columns [0 1 4 5 | 2 3 6 7]; the permute orders them.
    let z = _mm256_set1_epi32(zero);
    let mut s = [_mm256_setzero_si256(); 2];
    for (h, s) in s.iter_mut().enumerate() {
        let sum = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(c[2 * h], c[2 * h + 1]));
        *s = _mm256_sub_epi32(sum, _mm256_mullo_epi32(z, _mm256_loadu_si256(colsum.add(8 * h).cast())));
    }
    s
}

/// Stores columns 8h..8h+8 of row r, those below `out.nc`.
#[inline(always)]
unsafe fn store(out: &Out, r: usize, h: usize, y: __m256) {
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

#[inline(always)]
unsafe fn i8_tile<const R: usize>(a: &Rows, w: &I8Panels, out: &Out) {
    let mut c = [[_mm256_setzero_si256(); 4]; R];
    for t in 0..w.kq {
        let mut x = [_mm256_setzero_si256(); R];
        for (r, x) in x.iter_mut().enumerate() {
            *x = act4(a, r, 4 * t);
        }
        for qt in 0..4 {
            let b = _mm256_cvtepi8_epi16(quarter(w.ptr.add(t), qt));
            for (c, x) in c.iter_mut().zip(&x) {
                c[qt] = _mm256_add_epi32(c[qt], _mm256_madd_epi16(*x, b));
            }
        }
    }
    for (r, c) in c.iter().enumerate() {
        let sa = _mm256_set1_ps(*a.scale.add(r));
        for (h, s) in column_sums(c, *a.zero.add(r), w.colsum).into_iter().enumerate() {
            let y = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(sa, _mm256_loadu_ps(w.scale.add(8 * h))));
            store(out, r, h, y);
        }
    }
}

#[inline(always)]
unsafe fn i4_tile<const R: usize>(a: &Rows, w: &I4Panels, out: &Out) {
    let high = _mm_set1_epi8(0xF0u8 as i8);
    let mut f = [[_mm256_setzero_ps(); 2]; R];
    for g in 0..w.groups {
        let mut c = [[_mm256_setzero_si256(); 4]; R]; // 16 * sum of a * q over the group
        for t in g * w.per_group..(g + 1) * w.per_group {
            // Activations of K group 2t (low nibbles) and 2t+1 (high nibbles).
            let (mut xl, mut xh) = ([_mm256_setzero_si256(); R], [_mm256_setzero_si256(); R]);
            for r in 0..R {
                (xl[r], xh[r]) = (act4(a, r, 8 * t), act4(a, r, 8 * t + 4));
            }
            for qt in 0..4 {
                let v = quarter(w.ptr.add(t), qt);
                // Each nibble into the high half of a byte: 16 q as i8.
                let wl = _mm256_cvtepi8_epi16(_mm_and_si128(_mm_slli_epi16::<4>(v), high));
                let wh = _mm256_cvtepi8_epi16(_mm_and_si128(v, high));
                for (c, (xl, xh)) in c.iter_mut().zip(xl.iter().zip(&xh)) {
                    let s = _mm256_add_epi32(_mm256_madd_epi16(*xl, wl), _mm256_madd_epi16(*xh, wh));
                    c[qt] = _mm256_add_epi32(c[qt], s);
                }
            }
        }
        for (r, (f, c)) in f.iter_mut().zip(&c).enumerate() {
            for (h, (f, s)) in f.iter_mut().zip(column_sums(c, *a.zero.add(r), w.colsum(0, g))).enumerate() {
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
    const I8_TILE: (usize, usize) = (ROWS, 1);
    const I4_TILE: (usize, usize) = (ROWS, 1);

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        match a.mr {
            1 => i8_tile::<1>(&a, w, out),
            _ => i8_tile::<ROWS>(&a, w, out),
        }
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        match a.mr {
            1 => i4_tile::<1>(&a, w, out),
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
