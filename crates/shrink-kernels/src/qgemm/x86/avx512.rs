//! AVX-512 VNNI microkernels: vpdpbusd adds the products of 4 u8 activations and 4 s8 weights into each i32 lane,
//! so one chunk (16 columns x 4 K) times a broadcast of a row's 4 activation bytes is one instruction. Broadcasts
//! from memory use only load ports, so the two vector ports run vpdpbusd (and the int4 unpacking) alone.

use crate::qgemm::{kernels, I4Panels, I8Panels, Kernels, Micro, Out, Rows};
use std::arch::x86_64::*;

pub(super) struct Vnni;

pub(crate) const KERNELS: Kernels = kernels!(Vnni, "avx512f,avx512bw,avx512vnni,avx2,fma");

/// The 4 activation bytes at `k` of row r, broadcast to all 16 lanes.
#[inline(always)]
unsafe fn act4(a: &Rows, r: usize, k: usize) -> __m512i {
    _mm512_set1_epi32(a.ptr.add(r * a.lda + k).cast::<i32>().read_unaligned())
}

/// Stores columns 16v..16v+16 of row r, those below `out.nc`.
#[inline(always)]
unsafe fn store(out: &Out, r: usize, v: usize, y: __m512) {
    let p = out.ptr.add(r * out.ld + 16 * v);
    let left = out.nc - 16 * v;
    if left >= 16 {
        _mm512_storeu_ps(p, y);
    } else {
        _mm512_mask_storeu_ps(p, ((1u32 << left) - 1) as __mmask16, y);
    }
}

/// R rows x V panels of i32 accumulators: 8 x 3 = 24 zmm plus 3 weights and a broadcast of 32 registers; 24
/// independent chains cover vpdpbusd's latency (5 cycles) at 2 per cycle.
#[inline(always)]
unsafe fn i8_tile<const R: usize, const V: usize>(a: &Rows, w: &I8Panels, out: &Out) {
    let mut c = [[_mm512_setzero_si512(); V]; R];
    for t in 0..w.kq {
        let mut b = [_mm512_setzero_si512(); V];
        for (v, b) in b.iter_mut().enumerate() {
            *b = _mm512_load_si512(w.ptr.add(v * w.stride + t).cast());
        }
        for (r, c) in c.iter_mut().enumerate() {
            let x = act4(a, r, 4 * t);
            for (c, b) in c.iter_mut().zip(&b) {
                *c = _mm512_dpbusd_epi32(*c, x, *b);
            }
        }
    }
    for (r, c) in c.iter().enumerate() {
        for (v, c) in c.iter().enumerate() {
            finish_i8(a, w, out, r, v, *c);
        }
    }
}

/// i8_tile on activations in K blocks of `w.group`: per block, i32 sums, then (c - zero colsum) as f32 *
/// (scale_a * scale_w) added to the f32 tile (block 0 stored), as the reference. Its f32 tile takes as many
/// registers as the sums, so at most 4 x 3 tiles.
#[inline(always)]
unsafe fn i8_blocks<const R: usize, const V: usize>(a: &Rows, w: &I8Panels, out: &Out) {
    let per = w.group / 4;
    let mut f = [[_mm512_setzero_ps(); V]; R];
    for g in 0..w.kq / per {
        let (zero, scale, colsum) = (a.zero.add(g * a.block_stride), a.scale.add(g * a.block_stride), w.colsum.add(g * w.block_stride));
        // Sums start at -zero * colsum: a block's column sums fit i16 (|.| <= 32 * 127 for blocks of 32), so one
        // vpmaddwd of (-zero, 0) pairs, as the int4 kernel.
        let mut c = [[_mm512_setzero_si512(); V]; R];
        for (r, c) in c.iter_mut().enumerate() {
            let negz = _mm512_set1_epi32((-*zero.add(r)) & 0xFFFF);
            for (v, c) in c.iter_mut().enumerate() {
                *c = _mm512_madd_epi16(negz, _mm512_loadu_si512(colsum.add(16 * v).cast()));
            }
        }
        for t in g * per..(g + 1) * per {
            let mut b = [_mm512_setzero_si512(); V];
            for (v, b) in b.iter_mut().enumerate() {
                *b = _mm512_load_si512(w.ptr.add(v * w.stride + t).cast());
            }
            for (r, c) in c.iter_mut().enumerate() {
                let x = act4(a, r, 4 * t);
                for (c, b) in c.iter_mut().zip(&b) {
                    *c = _mm512_dpbusd_epi32(*c, x, *b);
                }
            }
        }
        for (r, (f, c)) in f.iter_mut().zip(&c).enumerate() {
            let sa = _mm512_set1_ps(*scale.add(r));
            for (v, (f, c)) in f.iter_mut().zip(c).enumerate() {
                let part = _mm512_mul_ps(_mm512_cvtepi32_ps(*c), _mm512_mul_ps(sa, _mm512_loadu_ps(w.scale.add(16 * v))));
                *f = if g == 0 { part } else { _mm512_add_ps(*f, part) };
            }
        }
    }
    for (r, f) in f.iter().enumerate() {
        for (v, f) in f.iter().enumerate() {
            store(out, r, v, *f);
        }
    }
}

/// Row r, panel v of an int8 tile from its i32 sums c: (c - zero[r] colsum) as f32 * (scale_a[r] * scale_w),
/// stored. Shared with the AMX kernel, whose sums come from tiles.
#[inline(always)]
pub(super) unsafe fn finish_i8(a: &Rows, w: &I8Panels, out: &Out, r: usize, v: usize, c: __m512i) {
    let (z, sa) = (_mm512_set1_epi32(*a.zero.add(r)), _mm512_set1_ps(*a.scale.add(r)));
    let s = _mm512_sub_epi32(c, _mm512_mullo_epi32(z, _mm512_loadu_si512(w.colsum.add(16 * v).cast())));
    let y = _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(sa, _mm512_loadu_ps(w.scale.add(16 * v))));
    store(out, r, v, y);
}

/// R rows x V panels: per group, i32 sums start at -zero * colsum (vpmaddwd of (-zero, 0) i16 pairs with the i32
/// column sums, which fit i16), take the group's chunks, then one fma each into the f32 sums. 6 x 3 = 18 i32
/// accumulators + 6 unpacked weights + the nibble mask + 2 broadcasts fit the 32 registers; the f32 sums, touched
/// once a group, may live on the stack.
#[inline(always)]
unsafe fn i4_tile<const R: usize, const V: usize>(a: &Rows, w: &I4Panels, out: &Out) {
    let high = _mm512_set1_epi8(0xF0u8 as i8);
    let mut f = [[_mm512_setzero_ps(); V]; R];
    for g in 0..w.groups {
        let mut c = [[_mm512_setzero_si512(); V]; R];
        // Activations in blocks (the int4 groups): this group's zero points and scales.
        let (zero, scale) = (a.zero.add(g * a.block_stride), a.scale.add(g * a.block_stride));
        for (r, c) in c.iter_mut().enumerate() {
            let negz = _mm512_set1_epi32((-*zero.add(r)) & 0xFFFF);
            for (v, c) in c.iter_mut().enumerate() {
                *c = _mm512_madd_epi16(negz, _mm512_loadu_si512(w.colsum(v, g).cast()));
            }
        }
        for t in g * w.per_group..(g + 1) * w.per_group {
            // Each nibble into the high half of a byte: 16 q as i8. Low nibbles are K group 2t, high ones 2t+1.
            let (mut lo, mut hi) = ([_mm512_setzero_si512(); V], [_mm512_setzero_si512(); V]);
            for v in 0..V {
                let b = _mm512_load_si512(w.ptr.add(v * w.stride + t).cast());
                lo[v] = _mm512_and_si512(_mm512_slli_epi16::<4>(b), high);
                hi[v] = _mm512_and_si512(b, high);
            }
            for (r, c) in c.iter_mut().enumerate() {
                let (xl, xh) = (act4(a, r, 8 * t), act4(a, r, 8 * t + 4));
                for v in 0..V {
                    c[v] = _mm512_dpbusd_epi32(c[v], xl, lo[v]);
                    c[v] = _mm512_dpbusd_epi32(c[v], xh, hi[v]);
                }
            }
        }
        for (r, (f, c)) in f.iter_mut().zip(&c).enumerate() {
            for (v, (f, c)) in f.iter_mut().zip(c).enumerate() {
                if a.block_stride == 0 {
                    *f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(*c), _mm512_loadu_ps(w.scale(v, g)), *f);
                } else {
                    // The reference's steps: fma with 0 (one rounding), times the block's scale, then the sum.
                    let part = _mm512_mul_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(*c), _mm512_loadu_ps(w.scale(v, g)), _mm512_setzero_ps()), _mm512_set1_ps(*scale.add(r)));
                    *f = if g == 0 { part } else { _mm512_add_ps(*f, part) };
                }
            }
        }
    }
    for (r, f) in f.iter().enumerate() {
        let y = |f: __m512| if a.block_stride == 0 { _mm512_mul_ps(f, _mm512_set1_ps(*a.scale.add(r))) } else { f };
        for (v, f) in f.iter().enumerate() {
            store(out, r, v, y(*f));
        }
    }
}

impl Micro for Vnni {
    const I8_TILE: (usize, usize) = (8, 3);
    const I4_TILE: (usize, usize) = (6, 3);
    const BLOCKS: bool = true;

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        if w.group > 0 {
            for r0 in (0..a.mr).step_by(4) {
                let rows = Rows { ptr: a.ptr.add(r0 * a.lda), mr: 4.min(a.mr - r0), zero: a.zero.add(r0), scale: a.scale.add(r0), ..a };
                let out = Out { ptr: out.ptr.add(r0 * out.ld), ..*out };
                shape!(i8_blocks, [], rows.mr, [1 2 3 4], w.np, [1 2 3], (&rows, w, &out))
            }
            return;
        }
        shape!(i8_tile, [], a.mr, [1 2 3 4 5 6 7 8], w.np, [1 2 3], (&a, w, out))
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        shape!(i4_tile, [], a.mr, [1 2 3 4 5 6], w.np, [1 2 3], (&a, w, out))
    }

    #[inline(always)]
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
        // Four accumulator pairs: one pair was a chain of dependent min/max (4 cycles per 16 values), which made
        // this pass as slow as the quantizing one after it.
        const ACC: usize = 4;
        let (mut lo, mut hi) = ([_mm512_setzero_ps(); ACC], [_mm512_setzero_ps(); ACC]);
        let (groups, rest) = x.as_chunks::<{ 16 * ACC }>();
        for g in groups {
            for i in 0..ACC {
                let v = _mm512_loadu_ps(g.as_ptr().add(16 * i));
                (lo[i], hi[i]) = (_mm512_min_ps(lo[i], v), _mm512_max_ps(hi[i], v));
            }
        }
        let (chunks, tail) = rest.as_chunks::<16>();
        for c in chunks {
            let v = _mm512_loadu_ps(c.as_ptr());
            (lo[0], hi[0]) = (_mm512_min_ps(lo[0], v), _mm512_max_ps(hi[0], v));
        }
        // The tail loaded with zeros in the lanes past it, which the range holds anyway.
        let v = _mm512_maskz_loadu_ps(((1u32 << tail.len()) - 1) as __mmask16, tail.as_ptr());
        let (lo01, hi01) = (_mm512_min_ps(lo[0], lo[1]), _mm512_max_ps(hi[0], hi[1]));
        let (lo23, hi23) = (_mm512_min_ps(lo[2], lo[3]), _mm512_max_ps(hi[2], hi[3]));
        let (lo, hi) = (_mm512_min_ps(_mm512_min_ps(lo01, lo23), v), _mm512_max_ps(_mm512_max_ps(hi01, hi23), v));
        (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi))
    }
}
