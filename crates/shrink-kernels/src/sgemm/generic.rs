//! The portable microkernel (plain f32, 4 x 8), and `microkernel!`, which every level's kernel is written in.

use super::{Geometry, Kernel};

/// `microkernel!(attrs name, geometry, vector type, lanes, zero, load, splat, fma, add, store)`: the
/// register-blocked kernel of one level, from its vector operations. Short edge tiles go through stack copies so
/// the register loop is always full size; zero-padded panels make the extra columns harmless.
macro_rules! microkernel {
    ($(#[$attr:meta])* $name:ident, $geom:expr, $V:ty, $w:expr, $zero:expr, $load:expr, $splat:expr, $fma:expr, $add:expr, $store:expr) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(a: *const f32, lda: usize, b: *const f32, kc: usize, ahead: *const f32, tile: &$crate::sgemm::Tile) {
            use $crate::sgemm::{prefetch_l2, Geometry, Tile, PREFETCH_EVERY};
            let &Tile { c, ldc, rows, cols, accumulate, ep } = tile;
            const G: Geometry = $geom;
            const MR: usize = G.mr;
            const NV: usize = G.nr / $w;
            // (MR, kc) copy of a short tile; uninitialised so full tiles pay no memset, and only its first `rows`
            // rows are written: the rows below feed accumulators that are never stored.
            let mut a_pad = std::mem::MaybeUninit::<[f32; G.mr * G.kc]>::uninit();
            let (a, lda) = if rows < MR {
                let pad = a_pad.as_mut_ptr().cast::<f32>();
                for r in 0..MR {
                    if r < rows {
                        std::ptr::copy_nonoverlapping(a.add(r * lda), pad.add(r * kc), kc);
                    } else {
                        std::ptr::write_bytes(pad.add(r * kc), 0, kc);
                    }
                }
                (pad as *const f32, kc)
            } else {
                (a, lda)
            };
            let mut acc: [[$V; NV]; MR] = [[$zero; NV]; MR];
            // One base pointer per row and k as the shared index: each broadcast is one addressing mode, where
            // row i at a + i lda cost integer ops per step that took FMA slots.
            let mut rows_at = [a; MR];
            for (i, r) in rows_at.iter_mut().enumerate() {
                *r = a.add(i * lda);
            }
            let full = kc / PREFETCH_EVERY * PREFETCH_EVERY;
            let mut step = |p: usize| {
                let bp = b.add(p * G.nr);
                let mut bv: [$V; NV] = [$zero; NV];
                for j in 0..NV {
                    bv[j] = $load(bp.add(j * $w));
                }
                for i in 0..MR {
                    let av = $splat(*rows_at[i].add(p));
                    for j in 0..NV {
                        acc[i][j] = $fma(av, bv[j], acc[i][j]);
                    }
                }
            };
            for p0 in (0..full).step_by(PREFETCH_EVERY) {
                prefetch_l2(ahead.wrapping_add(p0 / PREFETCH_EVERY * 16));
                for u in 0..PREFETCH_EVERY {
                    step(p0 + u);
                }
            }
            for p in full..kc {
                step(p);
            }
            if rows == MR && cols == G.nr {
                for i in 0..MR {
                    for j in 0..NV {
                        let cp = c.add(i * ldc + j * $w);
                        let v = if accumulate { $add($load(cp), acc[i][j]) } else { acc[i][j] };
                        $store(cp, v);
                    }
                }
            } else {
                let mut part = [0f32; G.mr * G.nr]; // (MR, NR)
                for i in 0..MR {
                    for j in 0..NV {
                        $store(part.as_mut_ptr().add(i * G.nr + j * $w), acc[i][j]);
                    }
                }
                for i in 0..rows {
                    for j in 0..cols {
                        let cp = c.add(i * ldc + j);
                        *cp = if accumulate { *cp } else { 0.0 } + part[i * G.nr + j];
                    }
                }
            }
            if let Some((ep, row, col, n)) = ep {
                for r in 0..rows {
                    ep.apply_inline(std::slice::from_raw_parts_mut(c.add(r * ldc), cols), row + r, col, n);
                }
            }
        }
    };
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))] // the ISA files build their kernels from it
pub(crate) use microkernel;

const SCALAR: Geometry = Geometry { mr: 4, nr: 8, kc: 768 };

microkernel!(kernel, SCALAR, f32, 1, 0.0, |p: *const f32| *p, |x| x, |a: f32, b: f32, c: f32| a * b + c,
    |a: f32, b: f32| a + b, |p: *mut f32, v| *p = v);

pub(crate) const KERNEL: Kernel = Kernel { geometry: SCALAR, run: kernel };
