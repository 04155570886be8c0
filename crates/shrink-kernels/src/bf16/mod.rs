//! bf16 GEMM on AMX-BF16 for attention's two small products (Q·Kᵀ and P·V per head): `tdpbf16ps` multiplies a
//! 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32 sums, 8192 products per instruction where an f32 FMA does
//! 16, so the products cost next to nothing and only the conversions and the softmax remain. Inputs are rounded
//! to bf16 (8 bits of mantissa), sums stay f32. A table has the product only where a matrix engine runs it
//! (`x86/amx.rs`); elsewhere attention takes the f32 kernels on bf16-rounded inputs.
//!
//! Layouts: A is row-major bf16, `lda` elements per row (a multiple of 32), rows padded to a multiple of 16 (a tile
//! loads 16). B is packed once as `PackedBf16`: panels of 16 columns, each K/32 tiles of 16 rows x 16 columns x 2,
//! row r of a tile holding (b[2r, j], b[2r + 1, j]) for its 16 columns j, AMX's pair layout.

use crate::ops::Ops;

mod reference;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    pub(crate) mod amx;
    pub(crate) mod avx512bf16;
}

pub use reference::gemm_bf16_ref;

/// Columns of a B panel and rows of an A tile.
pub const TILE: usize = 16;
/// K of one tile: 32 bf16 (64 bytes) per tile row.
pub const TILE_K: usize = 32;

/// x rounded to the nearest bf16 (ties to even), as its bits. Finite inputs (values past bf16's range give inf).
#[inline(always)]
pub fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of bf16 bits.
#[inline(always)]
pub fn f32_of(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// x rounded to bf16, kept as f32: what the AMX path computes with, for the f32 kernels to do the same elsewhere.
#[inline(always)]
pub fn round(x: f32) -> f32 {
    f32_of(bf16(x))
}

/// Rounds 16 values to bf16 into `out[..16]` (a kernel generic over it picks the instruction).
pub(crate) trait Round16 {
    fn round16(e: &[f32; 16], out: &mut [u16]);
}

/// `bf16` per value: integer ops the compiler vectorises, six per 16 values.
pub(crate) struct Portable;

impl Round16 for Portable {
    #[inline(always)]
    fn round16(e: &[f32; 16], out: &mut [u16]) {
        for (o, &v) in out[..16].iter_mut().zip(e) {
            *o = bf16(v);
        }
    }
}

crate::multiversion!(
    /// dst[i] = bf16(src[i]).
    pub convert, convert_on; (src: &[f32], dst: &mut [u16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16(s);
        }
    }
);

/// B (k x n, element (p, j) = `src[j * sn + p * sk]`) in AMX's pair layout, zero-padded to whole tiles; reused
/// across calls like `PackedF32`.
#[derive(Default)]
pub struct PackedBf16 {
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) data: Vec<u32>, // [panels][k_pad / 32][16 rows][16 columns]: pairs of bf16
}

impl PackedBf16 {
    pub fn new() -> Self {
        Self::default()
    }

    /// K padded to whole tiles: the `lda` an A multiplying this must have at least.
    pub fn k_pad(&self) -> usize {
        self.k.next_multiple_of(TILE_K)
    }

    /// Packs B; no allocation once it has held a matrix this large.
    pub fn repack(&mut self, src: &[f32], n: usize, k: usize, sn: usize, sk: usize) {
        assert!(n == 0 || k == 0 || src.len() > (n - 1) * sn + (k - 1) * sk, "bf16 B source too short for {k} x {n}");
        (self.n, self.k) = (n, k);
        let (panels, k_pad) = (n.div_ceil(TILE), self.k_pad());
        let len = panels * k_pad / 2 * TILE;
        if self.data.len() < len {
            self.data.resize(len, 0);
        }
        pack_pairs(src, n, k, sn, sk, &mut self.data[..len]);
    }
}

/// Pairs of a column `pack_pairs` rounds at a time (a head dimension up to 256 in one go).
const MAX_PAIRS: usize = 128;

/// bf16(lo) | bf16(hi) << 16: one AMX pair.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16(lo) as u32 | (bf16(hi) as u32) << 16
}

crate::multiversion!(
    /// The pair words of `PackedBf16`: word (pair r, column j) = pair(b[2r, j], b[2r + 1, j]) at index
    /// (j / 16) k_pad 8 + r 16 + j % 16. Walked along whichever of n, k is contiguous in `src`, so the inner loop
    /// reads consecutive values; padding (past n, past k) is zeroed.
    pub pack_pairs, pack_pairs_on; (src: &[f32], n: usize, k: usize, sn: usize, sk: usize, data: &mut [u32]) {
        let k_pad = k.next_multiple_of(TILE_K);
        if !n.is_multiple_of(TILE) || k != k_pad {
            data.fill(0);
        }
        let (pairs, panel) = (k / 2, k_pad / 2 * TILE);
        let b = |p: usize, j: usize| src[j * sn + p * sk];
        if sn == 1 {
            // Columns adjacent (V of one head, keys down k): two source rows interleave into one tile row.
            for r in 0..pairs {
                let (lo, hi) = (&src[2 * r * sk..][..n], &src[(2 * r + 1) * sk..][..n]);
                for (p, (lo, hi)) in lo.chunks(TILE).zip(hi.chunks(TILE)).enumerate() {
                    let dst = &mut data[p * panel + r * TILE..][..lo.len()];
                    for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                        *d = pair(l, h);
                    }
                }
            }
        } else {
            // K down a column (K of one head, D down k): each column's pairs go down its tile column. Rounded into
            // a row first, up to MAX_PAIRS at a time, where contiguous loads (sk = 1) and the rounding vectorise,
            // then stored down the column (fused, the strided stores kept it all scalar: 5% of the int8 forward).
            let mut row = [0u32; MAX_PAIRS];
            for j in 0..n {
                for r0 in (0..pairs).step_by(MAX_PAIRS) {
                    let chunk = &mut row[..MAX_PAIRS.min(pairs - r0)];
                    if sk == 1 {
                        let col = &src[j * sn + 2 * r0..][..2 * chunk.len()];
                        for (w, p) in chunk.iter_mut().zip(col.chunks_exact(2)) {
                            *w = pair(p[0], p[1]);
                        }
                    } else {
                        for (i, w) in chunk.iter_mut().enumerate() {
                            *w = pair(b(2 * (r0 + i), j), b(2 * (r0 + i) + 1, j));
                        }
                    }
                    let dst = &mut data[(j / TILE) * panel + r0 * TILE + j % TILE..];
                    for (r, &w) in chunk.iter().enumerate() {
                        dst[r * TILE] = w;
                    }
                }
            }
        }
        if k % 2 == 1 {
            for j in 0..n {
                data[(j / TILE) * panel + pairs * TILE + j % TILE] = pair(b(k - 1, j), 0.0);
            }
        }
    }
);

/// A bf16 product kernel (`gemm_bf16`'s shapes, checked before the call).
pub(crate) type Gemm = unsafe fn(&mut [f32], usize, &[u16], usize, usize, &PackedBf16);

/// out (rows x n, row i at `out[i * ldc..]`) = A (rows x k, bf16, `lda` apart, `rows.next_multiple_of(16)` rows
/// readable) · B, at the level in use; only where its table has the product (`Ops::has_bf16_gemm`).
/// `gemm_bf16_ref` is the reference.
pub fn gemm_bf16(out: &mut [f32], ldc: usize, a: &[u16], lda: usize, rows: usize, b: &PackedBf16) {
    gemm_bf16_on(crate::ops::ops(), out, ldc, a, lda, rows, b)
}

/// `gemm_bf16` on the kernel of `ops`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16_on(ops: &Ops, out: &mut [f32], ldc: usize, a: &[u16], lda: usize, rows: usize, b: &PackedBf16) {
    let (n, k_pad) = (b.n, b.k_pad());
    if rows == 0 || n == 0 {
        return;
    }
    let gemm = ops.gemm_bf16.expect("gemm_bf16 needs a bf16 matrix engine (Ops::has_bf16_gemm)");
    assert!(lda >= k_pad && a.len() >= rows.next_multiple_of(TILE) * lda, "bf16 A: {rows} rows x {k_pad} at stride {lda}");
    assert!(ldc >= n && out.len() >= (rows - 1) * ldc + n, "bf16 output too short for {rows} x {n} at stride {ldc}");
    // SAFETY: shapes checked above; the table's kernel runs on this CPU.
    unsafe { gemm(out, ldc, a, lda, rows, b) }
}
