//! AMX int8 microkernel (Sapphire Rapids and later): tdpbusd multiplies a 16 x 64 u8 tile of activations by a
//! 16 x 64 s8 tile of weights (16 K quads x 16 columns) into 16 x 16 i32 sums, 16384 products per instruction
//! where vpdpbusd does 64. A weight tile is 16 consecutive chunks of a panel, the packing the VNNI kernel reads, so
//! both levels share `PackedI8` and give the same integers; the float steps are the VNNI kernel's (`finish_i8`).
//!
//! Tiles: tmm0 the activation tile, tmm1-3 one weight tile per panel, tmm4-6 their sums. `begin` configures the
//! tiles before a thread's run of units and `end` releases them after it, so no tile state outlives a GEMM call
//! (nothing else in the process can see it).

use super::avx512::{finish_i8, Vnni};
use crate::qgemm::{kernels, Chunk, I4Panels, I8Panels, Kernels, Micro, Out, Rows, PANEL, TILE_ROWS};
use std::arch::asm;
use std::arch::x86_64::*;

pub(super) struct Amx;

pub(crate) const KERNELS: Kernels = kernels!(Amx, "avx512f,avx512bw,avx512vnni,avx2,fma");

/// ldtilecfg's operand for every AMX kernel here (the bf16 one too).
pub(crate) fn tile_config() -> *const u8 {
    CONFIG.0.as_ptr()
}

/// K bytes of a tile row: 16 chunks of a panel.
const TILE_K: usize = 64;
/// Row groups with fewer real rows go to the VNNI kernel: a tile computes all 16 rows whatever `mr` is, and
/// configuring the tiles costs about as much as a VNNI tile of one row (measured: 1 row 0.6x VNNI on AMX, 16 rows 1.9x).
const MIN_ROWS: usize = 6;
/// How many K steps (64 K) ahead a cold tile loop prefetches weights: a step is ~50 cycles, an L3 hit ~100+.
const PREFETCH_STEPS: usize = 3;

/// ldtilecfg's 64-byte operand, palette 1: all eight tiles as 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = TILE_K as u8; // bytes per row (u16, little-endian)
        c[48 + t] = TILE_ROWS as u8; // rows
        t += 1;
    }
    TileConfig(c)
};

/// The sums of 16 rows x V panels, rows `a.ptr` (16 readable, `a.lda` apart) times panels of `w.kq` chunks (a
/// multiple of 16), into `sums` (16 rows x 48 i32, the first 16 V columns written). `cold`: the weights are not
/// in cache yet (the unit's first row group), so each step prefetches the weight tiles `PREFETCH_STEPS` ahead; a
/// tile load from L3 otherwise stalls the tdpbusd chain (measured: the tile loop took twice its L2-resident time).
///
/// `ahead` walks the next unit's weights, `per_step` lines a step, prefetched into L2: its first tiles then load
/// from L2, not L3 (whose latency under a loaded machine the short cold prefetch above does not cover).
#[inline(always)]
unsafe fn tile_sums<const V: usize>(a: &Rows, w: &I8Panels, sums: *mut i32, cold: bool, ahead: &mut Ahead) {
    asm!("tilezero tmm4", "tilezero tmm5", "tilezero tmm6", options(nostack));
    let b = |v: usize, t: usize| w.ptr.add(v * w.stride + t);
    for t in (0..w.kq).step_by(TILE_K / 4) {
        ahead.step();
        if cold {
            for v in 0..V {
                // Past the last step this reaches the next panel (or past the data: a prefetch never faults).
                let ahead = w.ptr.wrapping_add(v * w.stride + t + PREFETCH_STEPS * TILE_K / 4);
                for line in 0..TILE_K / 4 {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
                }
            }
        }
        asm!(
            "tileloadd tmm0, [{a} + {lda} * 1]",
            "tileloadd tmm1, [{b} + {s} * 1]",
            "tdpbusd tmm4, tmm0, tmm1",
            a = in(reg) a.ptr.add(4 * t), lda = in(reg) a.lda, b = in(reg) b(0, t), s = in(reg) 64usize,
            options(nostack, readonly),
        );
        if V > 1 {
            asm!("tileloadd tmm2, [{b} + {s} * 1]", "tdpbusd tmm5, tmm0, tmm2",
                b = in(reg) b(1, t), s = in(reg) 64usize, options(nostack, readonly));
        }
        if V > 2 {
            asm!("tileloadd tmm3, [{b} + {s} * 1]", "tdpbusd tmm6, tmm0, tmm3",
                b = in(reg) b(2, t), s = in(reg) 64usize, options(nostack, readonly));
        }
    }
    let (c, ldc) = (sums, 3 * PANEL * 4);
    asm!("tilestored [{c} + {ldc} * 1], tmm4", c = in(reg) c, ldc = in(reg) ldc, options(nostack));
    if V > 1 {
        asm!("tilestored [{c} + {ldc} * 1], tmm5", c = in(reg) c.add(PANEL), ldc = in(reg) ldc, options(nostack));
    }
    if V > 2 {
        asm!("tilestored [{c} + {ldc} * 1], tmm6", c = in(reg) c.add(2 * PANEL), ldc = in(reg) ldc, options(nostack));
    }
}

/// A cursor over weights to prefetch into L2, a few lines per tile step.
struct Ahead {
    next: *const Chunk,
    left: usize,
    per_step: usize,
}

impl Ahead {
    #[inline(always)]
    unsafe fn step(&mut self) {
        let n = self.per_step.min(self.left);
        for i in 0..n {
            _mm_prefetch::<_MM_HINT_T1>(self.next.add(i).cast());
        }
        (self.next, self.left) = (self.next.add(n), self.left - n);
    }
}

/// `a.mr` rows on the VNNI kernel, a VNNI tile at a time.
#[inline(always)]
unsafe fn vnni_rows(a: &Rows, w: &I8Panels, out: &Out) {
    for r0 in (0..a.mr).step_by(Vnni::I8_TILE.0) {
        let (rows, out) = sub(a, out, r0, Vnni::I8_TILE.0.min(a.mr - r0));
        Vnni::i8(rows, w, &out);
    }
}

/// Rows `r0..r0 + n` of a tile: the activations, zero points and scales from row r0, the output from row r0.
#[inline(always)]
unsafe fn sub(a: &Rows, out: &Out, r0: usize, n: usize) -> (Rows, Out) {
    let rows = Rows { ptr: a.ptr.add(r0 * a.lda), mr: n, zero: a.zero.add(r0), scale: a.scale.add(r0), ..*a };
    (rows, Out { ptr: out.ptr.add(r0 * out.ld), ..*out })
}

impl Micro for Amx {
    /// One work unit (48 rows, 3 panels) per call: three 16-row groups under one tile configuration.
    const I8_TILE: (usize, usize) = (3 * TILE_ROWS, 3);
    const I4_TILE: (usize, usize) = Vnni::I4_TILE;

    #[inline(always)]
    unsafe fn i8(a: Rows, w: &I8Panels, out: &Out) {
        // K not a multiple of 64 (the last tile would read past the panel), or too few rows to fill a tile.
        if !w.kq.is_multiple_of(TILE_K / 4) || a.mr < MIN_ROWS {
            return vnni_rows(&a, w, out);
        }
        // 16 rows x 48 i32; tile stores fill the columns that are read.
        let mut sums = std::mem::MaybeUninit::<[[i32; 3 * PANEL]; TILE_ROWS]>::uninit();
        let sums = sums.as_mut_ptr().cast::<i32>();
        let steps = (a.mr / TILE_ROWS + usize::from(a.mr % TILE_ROWS >= MIN_ROWS)) * (w.kq / (TILE_K / 4));
        let mut ahead = Ahead { next: w.ahead, left: w.ahead_len, per_step: w.ahead_len.div_ceil(steps.max(1)) };
        for r0 in (0..a.mr).step_by(TILE_ROWS) {
            let n = TILE_ROWS.min(a.mr - r0);
            let (rows, out) = sub(&a, out, r0, n);
            if n < MIN_ROWS {
                vnni_rows(&rows, w, &out);
                continue;
            }
            let cold = r0 == 0;
            match w.np {
                1 => tile_sums::<1>(&rows, w, sums, cold, &mut ahead),
                2 => tile_sums::<2>(&rows, w, sums, cold, &mut ahead),
                _ => tile_sums::<3>(&rows, w, sums, cold, &mut ahead),
            }
            for r in 0..n {
                for v in 0..w.np {
                    let s = _mm512_loadu_si512(sums.add(r * 3 * PANEL + PANEL * v).cast());
                    finish_i8(&rows, w, &out, r, v, s);
                }
            }
        }
    }

    #[inline(always)]
    unsafe fn i4(a: Rows, w: &I4Panels, out: &Out) {
        Vnni::i4(a, w, out)
    }

    #[inline(always)]
    unsafe fn range_with_zero(x: &[f32]) -> (f32, f32) {
        Vnni::range_with_zero(x)
    }

    #[inline(always)]
    unsafe fn begin() {
        asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly));
    }

    #[inline(always)]
    unsafe fn end() {
        asm!("tilerelease", options(nostack));
    }
}
