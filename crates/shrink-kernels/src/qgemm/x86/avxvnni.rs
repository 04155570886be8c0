//! AVX-VNNI microkernels (Alder Lake and later, Zen 5): the 256-bit vpdpbusd adds the products of 4 u8
//! activations and 4 s8 weights into each i32 lane without saturating, so a 32-byte half chunk (8 columns x 4 K)
//! times a broadcast of a row's 4 activation bytes is one instruction, where AVX2 takes four. The rest (row
//! quantizer, ranges) is the AVX2 level's.

use super::avx2::{half, store, Avx2};
use crate::qgemm::{kernels, I4Panels, I8Panels, Kernels, Micro, Out, Rows};
use std::arch::x86_64::*;

pub(super) struct AvxVnni;

pub(crate) const KERNELS: Kernels = kernels!(AvxVnni, "avx2,fma,avxvnni");

/// Rows x 16 columns: 2 accumulators per row, the panel's two halves and a broadcast: 6 rows use 15 of the 16 ymm
/// registers (int4 keeps 4: its group sums in f32 need 2 more per row).
const I8_ROWS: usize = 6;
const I4_ROWS: usize = 4;

/// The 4 activation bytes at `k` of row r, repeated over 256 bits.
#[inline(always)]
unsafe fn act4(a: &Rows, r: usize, k: usize) -> __m256i {
    _mm256_set1_epi32(a.ptr.add(r * a.lda + k).cast::<i32>().read_unaligned())
}

/// Columns 8h..8h+8 of the sums, zero point taken out: c - zero colsum.
#[inline(always)]
unsafe fn unzero(c: __m256i, zero: i32, colsum: *const i32, h: usize) -> __m256i {
    let col = _mm256_loadu_si256(colsum.add(8 * h).cast());
    _mm256_sub_epi32(c, _mm256_mullo_epi32(_mm256_set1_epi32(zero), col))
}

#[inline(always)]
unsafe fn i8_tile<const R: usize>(a: &Rows, w: &I8Panels, out: &Out) {
    let mut c = [[_mm256_setzero_si256(); 2]; R];
    for t in 0..w.kq {
        let wt = [half(w.ptr.add(t), 0), half(w.ptr.add(t), 1)];
        for (r, c) in c.iter_mut().enumerate() {
            let x = act4(a, r, 4 * t);
            for (c, &wt) in c.iter_mut().zip(&wt) {
                *c = _mm256_dpbusd_avx_epi32(*c, x, wt);
            }
        }
    }
    for (r, c) in c.iter().enumerate() {
        let sa = _mm256_set1_ps(*a.scale.add(r));
        for (h, &c) in c.iter().enumerate() {
            let s = unzero(c, *a.zero.add(r), w.colsum, h);
            let y = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(sa, _mm256_loadu_ps(w.scale.add(8 * h))));
            store(out, r, h, y);
        }
    }
}

/// Each nibble goes into the high half of a byte (16 q, exact in i8), as on the other levels.
#[inline(always)]
unsafe fn i4_tile<const R: usize>(a: &Rows, w: &I4Panels, out: &Out) {
    let high = _mm256_set1_epi8(0xF0u8 as i8);
    let mut f = [[_mm256_setzero_ps(); 2]; R];
    for g in 0..w.groups {
        let mut c = [[_mm256_setzero_si256(); 2]; R]; // 16 * sum of a * q over the group
        for t in g * w.per_group..(g + 1) * w.per_group {
            // K group 2t in the low nibbles, 2t+1 in the high ones.
            let v = [half(w.ptr.add(t), 0), half(w.ptr.add(t), 1)];
            let lo = v.map(|v| _mm256_and_si256(_mm256_slli_epi16::<4>(v), high));
            let hi = v.map(|v| _mm256_and_si256(v, high));
            for (r, c) in c.iter_mut().enumerate() {
                let (xl, xh) = (act4(a, r, 8 * t), act4(a, r, 8 * t + 4));
                for (h, c) in c.iter_mut().enumerate() {
                    *c = _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(*c, xl, lo[h]), xh, hi[h]);
                }
            }
        }
        for (r, (f, c)) in f.iter_mut().zip(&c).enumerate() {
            for (h, (f, &c)) in f.iter_mut().zip(c).enumerate() {
                let s = unzero(c, *a.zero.add(r), w.colsum(0, g), h);
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

impl Micro for AvxVnni {
    const I8_TILE: (usize, usize) = (I8_ROWS, 1);
    const I4_TILE: (usize, usize) = (I4_ROWS, 1);

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        match a.mr {
            1 => i8_tile::<1>(&a, w, out),
            2 => i8_tile::<2>(&a, w, out),
            3 => i8_tile::<3>(&a, w, out),
            4 => i8_tile::<4>(&a, w, out),
            5 => i8_tile::<5>(&a, w, out),
            _ => i8_tile::<I8_ROWS>(&a, w, out),
        }
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        match a.mr {
            1 => i4_tile::<1>(&a, w, out),
            2 => i4_tile::<2>(&a, w, out),
            3 => i4_tile::<3>(&a, w, out),
            _ => i4_tile::<I4_ROWS>(&a, w, out),
        }
    }

    #[inline(always)]
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
        Avx2::range_with_zero(x)
    }
}
