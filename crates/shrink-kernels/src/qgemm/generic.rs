//! Plain-Rust microkernels on the packed layouts: every target's generic level, and the one the SIMD ones are read
//! against.

use super::{kernels, Chunk, I4Panels, I8Panels, Kernels, Micro, Out, Rows, PANEL};

pub(super) struct Scalar;

pub(crate) const KERNELS: Kernels = kernels!(Scalar);

/// Tile rows; one panel wide.
const ROWS: usize = 4;

/// The 4 activation bytes at `k` of row r.
#[inline(always)]
unsafe fn act4(a: &Rows, r: usize, k: usize) -> [u8; 4] {
    a.ptr.add(r * a.lda + k).cast::<[u8; 4]>().read()
}

/// sums[c] += sum_i x[i] * w(byte 4c + i of the chunk) for the 16 columns c of a chunk.
#[inline(always)]
fn dot_chunk(sums: &mut [i32; PANEL], x: [u8; 4], chunk: &Chunk, w: impl Fn(u8) -> i32) {
    for (s, col) in sums.iter_mut().zip(chunk.0.chunks_exact(4)) {
        *s += (0..4).map(|i| x[i] as i32 * w(col[i])).sum::<i32>();
    }
}

/// Row r of the output tile, its first `nc` columns.
#[inline(always)]
unsafe fn out_row<'a>(out: &Out, r: usize) -> &'a mut [f32] {
    std::slice::from_raw_parts_mut(out.ptr.add(r * out.ld), out.nc)
}

impl Micro for Scalar {
    const I8_TILE: (usize, usize) = (ROWS, 1);
    const I4_TILE: (usize, usize) = (ROWS, 1);

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        let mut sums = [[0i32; PANEL]; ROWS];
        for t in 0..w.kq {
            let chunk = &*w.ptr.add(t);
            for (r, sums) in sums.iter_mut().enumerate().take(a.mr) {
                dot_chunk(sums, act4(&a, r, 4 * t), chunk, |b| b as i8 as i32);
            }
        }
        for (r, sums) in sums.iter().enumerate().take(a.mr) {
            let (z, sa) = (*a.zero.add(r), *a.scale.add(r));
            for (c, (y, &s)) in out_row(out, r).iter_mut().zip(sums).enumerate() {
                *y = s.wrapping_sub(z.wrapping_mul(*w.colsum.add(c))) as f32 * (sa * *w.scale.add(c));
            }
        }
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        let mut f = [[0f32; PANEL]; ROWS];
        for g in 0..w.groups {
            let mut sums = [[0i32; PANEL]; ROWS]; // 16 * sum of a * q over the group
            for t in g * w.per_group..(g + 1) * w.per_group {
                let chunk = &*w.ptr.add(t);
                for (r, sums) in sums.iter_mut().enumerate().take(a.mr) {
                    dot_chunk(sums, act4(&a, r, 8 * t), chunk, |b| (b << 4) as i8 as i32);
                    dot_chunk(sums, act4(&a, r, 8 * t + 4), chunk, |b| (b & 0xF0) as i8 as i32);
                }
            }
            let (scale, colsum) = (w.scale(0, g), w.colsum(0, g));
            for (r, (f, sums)) in f.iter_mut().zip(&sums).enumerate().take(a.mr) {
                let z = *a.zero.add(r);
                for (c, (f, &s)) in f.iter_mut().zip(sums).enumerate() {
                    *f = ((s - z * *colsum.add(c)) as f32).mul_add(*scale.add(c), *f);
                }
            }
        }
        for (r, f) in f.iter().enumerate().take(a.mr) {
            let sa = *a.scale.add(r);
            for (y, &f) in out_row(out, r).iter_mut().zip(f) {
                *y = f * sa;
            }
        }
    }

    #[inline(always)]
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
        x.iter().fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)))
    }
}
