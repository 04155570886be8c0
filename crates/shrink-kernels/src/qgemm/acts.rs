//! Activations quantized per row (token) to asymmetric u8, dynamically or on calibrated (static) grids.

use rayon::prelude::*;

use super::{Micro, TILE_ROWS};
use crate::ops::{self, Ops};
use crate::ROWS_PER_TASK;

/// Activations quantized per row (per token), asymmetric u8: x[m, k] ≈ scale[m] * (q[m, k] - zero[m]).
/// Rows are stored with K padded up to a multiple of 4; the padding bytes hold the zero point (weights are zero there).
/// The data holds whole groups of 16 rows (AMX tiles load 16 rows; the sums of rows past m are never stored).
#[derive(Default)]
pub struct QuantActs {
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) k_pad: usize,
    pub(super) data: Vec<u8>,   // m rounded up to 16 x k_pad
    pub(super) scale: Vec<f32>, // m
    pub(super) zero: Vec<i32>,  // m, in 0..=255
    /// K block of the scales (0: one per row). In blocks, block g of row r has scale / zero point at
    /// gscale / gzero[g * m + r], group-major so that a microkernel reads a block's rows as it reads rows.
    pub(super) group: usize,
    pub(super) gscale: Vec<f32>, // K / group x m
    pub(super) gzero: Vec<i32>,  // K / group x m
    /// f32 staging of the sparse kernel (the activations transposed), reused like the rest.
    pub transposed: Vec<f32>,
}

/// How `QuantActs::quantize_with` quantizes: the default is dynamic per row with no multiplier.
#[derive(Clone, Copy, Default)]
pub struct ActQuant<'a> {
    /// (scale, zero point) for every row, fixed at calibration (static quantization): no range pass per call, and
    /// values outside the calibrated range clip.
    pub fixed: Option<(f32, i32)>,
    /// Multiplies column k before quantizing: SmoothQuant's 1 / s, whose s the weights carry instead.
    pub col: Option<&'a [f32]>,
}

impl QuantActs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Quantizes x (m x k, row-major f32, finite), each row from its own range. The range of each row is widened
    /// to include 0 (so 0 is exact and the zero point is a u8). Reuses its buffers: no heap allocation once grown to
    /// this size.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        self.quantize_with(x, m, k, ActQuant::default())
    }

    /// `quantize` with fixed parameters and/or a per-column multiplier (see `ActQuant`).
    pub fn quantize_with(&mut self, x: &[f32], m: usize, k: usize, p: ActQuant) {
        self.quantize_on(ops::ops(), x, m, k, p)
    }

    /// Quantizes x (m x k) with one scale and zero point per block of `group` values of a row (llama.cpp's Q8_0
    /// activations are per 32): an outlier then coarsens its block only, not its whole token.
    pub fn quantize_blocks(&mut self, x: &[f32], m: usize, k: usize, group: usize) {
        self.quantize_blocks_on(ops::ops(), x, m, k, group)
    }

    /// `quantize_blocks` on the quantizer of `ops`.
    pub fn quantize_blocks_on(&mut self, ops: &Ops, x: &[f32], m: usize, k: usize, group: usize) {
        assert!(group > 0 && group.is_multiple_of(4) && k.is_multiple_of(group), "activations: K = {k} is not in blocks of {group}");
        // Rows of K in blocks of `group` lie in memory as m K / group rows of `group`: quantize those as rows.
        let blocks = k / group;
        self.quantize_on(ops, x, m * blocks, group, ActQuant::default());
        let need = m.next_multiple_of(TILE_ROWS) * k;
        if self.data.len() < need {
            self.data.resize(need, 0);
        }
        (self.m, self.k, self.k_pad, self.group) = (m, k, k, group);
        self.gscale.resize(m * blocks, 0.0);
        self.gzero.resize(m * blocks, 0);
        for r in 0..m {
            for g in 0..blocks {
                self.gscale[g * m + r] = self.scale[r * blocks + g];
                self.gzero[g * m + r] = self.zero[r * blocks + g];
            }
        }
    }

    /// The K block of the activation scales; 0 when they are per row.
    pub fn group(&self) -> usize {
        self.group
    }

    /// `quantize_with` on the quantizer of `ops` (every level's gives the same bytes).
    pub fn quantize_on(&mut self, ops: &Ops, x: &[f32], m: usize, k: usize, p: ActQuant) {
        assert_eq!(x.len(), m * k, "activations: {m}x{k} needs {} values, has {}", m * k, x.len());
        if let Some(c) = p.col {
            assert_eq!(c.len(), k, "activations: {k} column multipliers needed, {} given", c.len());
        }
        if let Some((s, z)) = p.fixed {
            assert!(s > 0.0 && (0..=255).contains(&z), "activations: fixed scale {s} / zero point {z} out of range");
        }
        let k_pad = k.next_multiple_of(4);
        (self.m, self.k, self.k_pad, self.group) = (m, k, k_pad, 0);
        // Grown, never shrunk: every byte of the m rows is written below, and the rows past m (to a whole tile
        // group) only feed sums that are never stored. A resize to each call's size re-zeroed the growth every
        // time calls alternated between K = 384 and 1536 (1% of an int8 forward in memset).
        let need = m.next_multiple_of(TILE_ROWS) * k_pad;
        if self.data.len() < need {
            self.data.resize(need, 0);
        }
        let data = &mut self.data[..m * k_pad];
        self.scale.resize(m, 0.0);
        self.zero.resize(m, 0);
        let (rows_of, tasks) = (ops.qgemm.quantize_rows, rayon::current_num_threads().min(m / ROWS_PER_TASK).max(1));
        // SAFETY (both calls): a table's kernels run on this CPU; the slices are each task's own rows.
        if tasks == 1 {
            unsafe { rows_of(x, k, p, data, &mut self.scale, &mut self.zero) };
            return;
        }
        let rows = m.div_ceil(tasks);
        data.par_chunks_mut(rows * k_pad)
            .zip(self.scale.par_chunks_mut(rows))
            .zip(self.zero.par_chunks_mut(rows))
            .zip(x.par_chunks(rows * k))
            .for_each(|(((d, s), z), x)| unsafe { rows_of(x, k, p, d, s, z) });
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    /// (scale, zero point) of row r, column c.
    pub(super) fn params(&self, r: usize, c: usize) -> (f32, i32) {
        match self.group {
            0 => (self.scale[r], self.zero[r]),
            g => (self.gscale[c / g * self.m + r], self.gzero[c / g * self.m + r]),
        }
    }

    /// scale * (q - zero), m x k: for tests.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut x = Vec::with_capacity(self.m * self.k);
        for (i, row) in self.data.chunks_exact(self.k_pad.max(1)).take(self.m).enumerate() {
            x.extend(row[..self.k].iter().enumerate().map(|(c, &q)| {
                let (s, z) = self.params(i, c);
                s * (q as i32 - z) as f32
            }));
        }
        x
    }
}

/// 1.5 * 2^23: adding it to an f32 in [0, 2^22) leaves round-to-nearest-even of it in the low mantissa bits, which
/// vectorises where `f32::round` is a libm call and `as u8` a saturating conversion.
const ROUND_MAGIC: f32 = 12_582_912.0;

#[inline(always)]
fn round_u8(v: f32) -> u8 {
    ((v.clamp(0.0, 255.0) + ROUND_MAGIC).to_bits() - ROUND_MAGIC.to_bits()) as u8
}

/// The u8 that static quantization (`ActQuant::fixed` = (1 / `inv`, `zero`), no column multiplier) stores for x,
/// and whether x lay inside the grid (not clipped). QAT's fake quantization computes with scale·(q − zero).
#[inline(always)]
pub fn quantize_static(x: f32, inv: f32, zero: i32) -> (u8, bool) {
    let v = x * inv + zero as f32;
    (round_u8(v), (0.0..=255.0).contains(&v))
}

/// Per row: scale and zero point from the row's range (or `p.fixed`), then q = round(x c / scale) + zero,
/// padding = zero.
#[inline(always)]
pub(super) fn quantize_rows<M: Micro>(x: &[f32], k: usize, p: ActQuant, data: &mut [u8], scale: &mut [f32], zero: &mut [i32]) {
    let k_pad = data.len() / scale.len().max(1);
    for (((x, q), s), z) in x.chunks_exact(k.max(1)).zip(data.chunks_exact_mut(k_pad.max(1))).zip(scale).zip(zero) {
        let zq = match p.fixed {
            Some((fs, fz)) => {
                *s = fs;
                fz as u8
            }
            None => {
                let (lo, hi) = match p.col {
                    // SAFETY: any slice.
                    None => unsafe { M::range_with_zero(x) },
                    Some(c) => scaled_range_with_zero(x, c),
                };
                // An all-zero row gets scale 1 (any scale represents it exactly).
                *s = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
                round_u8(-lo * (1.0 / *s))
            }
        };
        *z = zq as i32;
        let (inv, zf) = (1.0 / *s, zq as f32);
        match p.col {
            None => q.iter_mut().zip(x).for_each(|(q, &x)| *q = round_u8(x * inv + zf)),
            Some(c) => q.iter_mut().zip(x).zip(c).for_each(|((q, &x), &c)| *q = round_u8(x * c * inv + zf)),
        }
        q[k..].fill(zq);
    }
}

/// (min(x c, 0), max(x c, 0)); the compare-and-select form vectorises as min/max instructions.
#[inline(always)]
fn scaled_range_with_zero(x: &[f32], c: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (0f32, 0f32);
    for (&x, &c) in x.iter().zip(c) {
        let v = x * c;
        lo = if v < lo { v } else { lo };
        hi = if v > hi { v } else { hi };
    }
    (lo, hi)
}
