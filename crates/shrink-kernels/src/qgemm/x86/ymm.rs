//! The 256-bit int8 and int4 tiles that the AVX2 and AVX-VNNI levels share. They differ only in the dot step: how
//! a row's 4 activation bytes are prepared, how they meet a half chunk of weights, and how the sums become the
//! reference's integers (`Dot`).

use crate::qgemm::{Chunk, I4Panels, I8Panels, Out, Rows};
use std::arch::x86_64::*;

/// A level's 256-bit dot step.
pub(super) trait Dot {
    /// A row's 4 activation bytes at one K step, prepared once for every weight they meet.
    type Act: Copy;
    unsafe fn act4(a: &Rows, r: usize, k: usize) -> Self::Act;
    /// c (8 columns' i32 sums) plus the products of the 4 K bytes per column of `w` with the row's bytes.
    unsafe fn dot4(c: __m256i, x: Self::Act, w: __m256i) -> __m256i;
    /// The reference's sums of columns 8h..8h+8 (sum a q - zero colsum) from the tile's sums c.
    unsafe fn exact(c: __m256i, zero: i32, colsum: *const i32, h: usize) -> __m256i;
}

/// Half h (columns 8h..8h+8, their 4 K bytes each) of a chunk.
#[inline(always)]
unsafe fn half(chunk: *const Chunk, h: usize) -> __m256i {
    _mm256_load_si256(chunk.cast::<__m256i>().add(h))
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

/// R rows x P panels (16 P columns) of int8 weights: 2 P accumulators per row; per K step the panels' halves are
/// loaded once and each row's bytes prepared once.
#[inline(always)]
pub(super) unsafe fn i8_tile<D: Dot, const R: usize, const P: usize>(a: &Rows, w: &I8Panels, out: &Out) {
    let mut c = [[[_mm256_setzero_si256(); 2]; P]; R];
    for t in 0..w.kq {
        let mut wt = [[_mm256_setzero_si256(); 2]; P];
        for (p, wt) in wt.iter_mut().enumerate() {
            let chunk = w.ptr.add(p * w.stride + t);
            *wt = [half(chunk, 0), half(chunk, 1)];
        }
        for (r, c) in c.iter_mut().enumerate() {
            let x = D::act4(a, r, 4 * t);
            for (c, wt) in c.iter_mut().zip(&wt) {
                for (c, &wt) in c.iter_mut().zip(wt) {
                    *c = D::dot4(*c, x, wt);
                }
            }
        }
    }
    for (r, c) in c.iter().enumerate() {
        let sa = _mm256_set1_ps(*a.scale.add(r));
        for (p, c) in c.iter().enumerate().take(w.np) {
            for (h, &c) in c.iter().enumerate() {
                let s = D::exact(c, *a.zero.add(r), w.colsum.add(16 * p), h);
                let y = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(sa, _mm256_loadu_ps(w.scale.add(16 * p + 8 * h))));
                store(out, r, 2 * p + h, y);
            }
        }
    }
}

/// R rows x 16 columns of int4 weights: each nibble goes into the high half of a byte (16 q, |.| <= 112, exact in
/// i8), as on the other levels; i32 sums per group, then one fma each into f32 sums.
#[inline(always)]
pub(super) unsafe fn i4_tile<D: Dot, const R: usize, const P: usize>(a: &Rows, w: &I4Panels, out: &Out) {
    const { assert!(P == 1, "int4 tiles are one panel wide") };
    let high = _mm256_set1_epi8(0xF0u8 as i8);
    let mut f = [[_mm256_setzero_ps(); 2]; R];
    for g in 0..w.groups {
        let mut c = [[_mm256_setzero_si256(); 2]; R]; // 16 * sum of a q over the group
        for t in g * w.per_group..(g + 1) * w.per_group {
            // K group 2t in the low nibbles, 2t+1 in the high ones.
            let v = [half(w.ptr.add(t), 0), half(w.ptr.add(t), 1)];
            let lo = v.map(|v| _mm256_and_si256(_mm256_slli_epi16::<4>(v), high));
            let hi = v.map(|v| _mm256_and_si256(v, high));
            for (r, c) in c.iter_mut().enumerate() {
                let (xl, xh) = (D::act4(a, r, 8 * t), D::act4(a, r, 8 * t + 4));
                for (h, c) in c.iter_mut().enumerate() {
                    *c = D::dot4(D::dot4(*c, xl, lo[h]), xh, hi[h]);
                }
            }
        }
        for (r, (f, c)) in f.iter_mut().zip(&c).enumerate() {
            for (h, (f, &c)) in f.iter_mut().zip(c).enumerate() {
                let s = D::exact(c, *a.zero.add(r), w.colsum(0, g), h);
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
