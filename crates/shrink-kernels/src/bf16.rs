//! bf16 GEMM on AMX-BF16 for attention's two small products (Q·Kᵀ and P·V per head): `tdpbf16ps` multiplies a
//! 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32 sums, 8192 products per instruction where an f32 FMA does
//! 16, so the products cost next to nothing and only the conversions and the softmax remain. Inputs are rounded
//! to bf16 (8 bits of mantissa), sums stay f32.
//!
//! Layouts: A is row-major bf16, `lda` elements per row (a multiple of 32), rows padded to a multiple of 16 (a tile
//! loads 16). B is packed once as `PackedBf16`: panels of 16 columns, each K/32 tiles of 16 rows x 16 columns x 2,
//! row r of a tile holding (b[2r, j], b[2r + 1, j]) for its 16 columns j, AMX's pair layout.

#[cfg(target_arch = "x86_64")]
use std::arch::asm;

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

/// AVX512-BF16's vcvtneps2bf16: the same round to nearest even in one instruction, for inputs that are normal or
/// zero (it flushes subnormals, which `bf16` keeps). Only inside functions compiled with `avx512bf16`, on CPUs
/// where `native()` holds.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Native;

#[cfg(target_arch = "x86_64")]
impl Round16 for Native {
    #[inline(always)]
    fn round16(e: &[f32; 16], out: &mut [u16]) {
        use std::arch::x86_64::*;
        assert!(out.len() >= 16);
        // SAFETY: 16 values each side; the caller runs with avx512bf16 on a CPU that has it (see the type's doc).
        unsafe {
            let b = _mm512_cvtneps_pbh(_mm512_loadu_ps(e.as_ptr()));
            _mm256_storeu_si256(out.as_mut_ptr().cast(), std::mem::transmute::<__m256bh, __m256i>(b));
        }
    }
}

/// The CPU has AVX512-BF16 and the AVX-512 level is in use (`SHRINK_ISA` below it turns it off).
pub(crate) fn native() -> bool {
    static NATIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NATIVE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if crate::isa::isa() >= crate::isa::Isa::Avx512 {
            return is_x86_feature_detected!("avx512bf16");
        }
        false
    })
}

crate::multiversion!(
    /// dst[i] = bf16(src[i]).
    convert, convert_on; (src: &[f32], dst: &mut [u16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16(s);
        }
    }
);

/// B (k x n, element (p, j) = `src[j * sn + p * sk]`) in AMX's pair layout, zero-padded to whole tiles; reused
/// across calls like `PackedF32`.
#[derive(Default)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    data: Vec<u32>, // [panels][k_pad / 32][16 rows][16 columns]: pairs of bf16
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
    pack_pairs, pack_pairs_on; (src: &[f32], n: usize, k: usize, sn: usize, sk: usize, data: &mut [u32]) {
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

/// out (rows x n, row i at `out[i * ldc..]`) = A (rows x k, bf16, `lda` apart, `rows.next_multiple_of(16)` rows
/// readable) · B. On AMX-BF16 only (`crate::isa::amx_bf16()`); `gemm_bf16_ref` is the reference.
pub fn gemm_bf16(out: &mut [f32], ldc: usize, a: &[u16], lda: usize, rows: usize, b: &PackedBf16) {
    let (n, k_pad) = (b.n, b.k_pad());
    if rows == 0 || n == 0 {
        return;
    }
    assert!(crate::isa::amx_bf16(), "gemm_bf16 needs AMX-BF16");
    assert!(lda >= k_pad && a.len() >= rows.next_multiple_of(TILE) * lda, "bf16 A: {rows} rows x {k_pad} at stride {lda}");
    assert!(ldc >= n && out.len() >= (rows - 1) * ldc + n, "bf16 output too short for {rows} x {n} at stride {ldc}");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: shapes checked above; AMX-BF16 present and permitted.
    unsafe {
        amx(out, ldc, a, lda, rows, b)
    }
}

/// Column tiles computed side by side: their sums sit in tmm4-7, so four tdpbf16ps chains overlap (one chain at a
/// time waited on each instruction's latency and on the store of its tile: 7% of an int8 forward pass).
const COLS: usize = 4;

/// tmm0 the A tile, tmm1-3 B tiles (rotating), tmm4-7 the sums of up to `COLS` column tiles. Edge tiles (fewer
/// rows or columns) go through a stack tile so the output is written only where it exists.
#[cfg(target_arch = "x86_64")]
unsafe fn amx(out: &mut [f32], ldc: usize, a: &[u16], lda: usize, rows: usize, b: &PackedBf16) {
    let (n, k_pad) = (b.n, b.k_pad());
    let panels = n.div_ceil(TILE);
    asm!("ldtilecfg [{}]", in(reg) crate::qgemm::amx_tile_config(), options(nostack, readonly));
    let mut edge = [[0f32; TILE]; TILE];
    for i0 in (0..rows).step_by(TILE) {
        for p0 in (0..panels).step_by(COLS) {
            let np = COLS.min(panels - p0);
            asm!("tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7", options(nostack));
            for s in 0..k_pad / TILE_K {
                let ap = a.as_ptr().add(i0 * lda + s * TILE_K);
                asm!("tileloadd tmm0, [{a} + {lda} * 1]", a = in(reg) ap, lda = in(reg) lda * 2, options(nostack, readonly));
                let bp = |c: usize| b.data.as_ptr().add(((p0 + c) * k_pad + s * TILE_K) / 2 * TILE);
                macro_rules! step {
                    ($c:literal, $b:literal, $acc:literal) => {
                        if $c < np {
                            asm!(concat!("tileloadd ", $b, ", [{b} + {s} * 1]"), concat!("tdpbf16ps ", $acc, ", tmm0, ", $b),
                                b = in(reg) bp($c), s = in(reg) 64usize, options(nostack, readonly));
                        }
                    };
                }
                step!(0, "tmm1", "tmm4");
                step!(1, "tmm2", "tmm5");
                step!(2, "tmm3", "tmm6");
                step!(3, "tmm1", "tmm7");
            }
            let r = (rows - i0).min(TILE);
            macro_rules! store {
                ($c:literal, $acc:literal) => {
                    if $c < np {
                        let c = (n - (p0 + $c) * TILE).min(TILE);
                        let dst = out.as_mut_ptr().add(i0 * ldc + (p0 + $c) * TILE);
                        if r == TILE && c == TILE {
                            asm!(concat!("tilestored [{c} + {ld} * 1], ", $acc), c = in(reg) dst, ld = in(reg) ldc * 4, options(nostack));
                        } else {
                            asm!(concat!("tilestored [{c} + {ld} * 1], ", $acc), c = in(reg) edge.as_mut_ptr(), ld = in(reg) TILE * 4,
                                options(nostack));
                            for (i, row) in edge.iter().take(r).enumerate() {
                                std::ptr::copy_nonoverlapping(row.as_ptr(), dst.add(i * ldc), c);
                            }
                        }
                    }
                };
            }
            store!(0, "tmm4");
            store!(1, "tmm5");
            store!(2, "tmm6");
            store!(3, "tmm7");
        }
    }
    asm!("tilerelease", options(nostack));
}

/// Naive reference: out = round(A) · round(B) in f32, A and B plain f32 row-major (rows x k, k x n).
pub fn gemm_bf16_ref(out: &mut [f32], a: &[f32], rows: usize, b: &[f32], k: usize, n: usize) {
    for i in 0..rows {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| round(a[i * k + p]) * round(b[p * n + j])).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::uniform;

    /// |amx - ref| <= budget x sum |a b|: the same bf16 products, summed in another order (and pairwise) in f32.
    const BF16_GEMM_REL_BUDGET: f32 = 1e-5;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(bf16(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even (1.0).
        assert_eq!(bf16(1.0 + 1.0 / 256.0), 0x3F80);
        assert_eq!(bf16(1.0 + 3.0 / 256.0), 0x3F82);
        assert_eq!(f32_of(bf16(-2.5)), -2.5);
        for x in uniform(1000, 3) {
            assert!((round(x) - x).abs() <= x.abs() / 256.0, "{x}");
        }
    }

    #[test]
    fn amx_matches_reference_on_awkward_shapes() {
        if !crate::isa::amx_bf16() {
            eprintln!("no AMX-BF16 here: the bf16 GEMM is not run (attention takes the f32 kernels on bf16-rounded inputs)");
            return;
        }
        for &(rows, k, n) in &[(1, 1, 1), (16, 32, 16), (17, 40, 20), (64, 32, 128), (50, 128, 32), (3, 70, 33), (2, 300, 17)] {
            let (a, b) = (uniform(rows * k, 1), uniform(k * n, 2)); // (rows, k), (k, n)
            let mut want = vec![0f32; rows * n];
            gemm_bf16_ref(&mut want, &a, rows, &b, k, n);
            let mut packed = PackedBf16::new();
            packed.repack(&uniform(3 * k * n + 64, 9), n + 3, k + 5, 1, n + 3); // leaves stale data behind
            // All walks (columns adjacent, K adjacent, neither) give the same words.
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect(); // (n, k)
            packed.repack(&bt, n, k, k, 1);
            let by_k = packed.data[..n.div_ceil(TILE) * packed.k_pad() / 2 * TILE].to_vec();
            packed.repack(&b, n, k, 1, n);
            assert_eq!(by_k, packed.data[..by_k.len()], "rows{rows} k{k} n{n}: the column walk differs");
            let strided: Vec<f32> = bt.iter().flat_map(|&v| [v, f32::NAN]).collect(); // (n, k) at K stride 2
            packed.repack(&strided, n, k, 2 * k, 2);
            assert_eq!(by_k, packed.data[..by_k.len()], "rows{rows} k{k} n{n}: the strided walk differs");
            let lda = packed.k_pad();
            let mut a16 = vec![0u16; rows.next_multiple_of(TILE) * lda];
            for i in 0..rows {
                convert(&a[i * k..(i + 1) * k], &mut a16[i * lda..i * lda + k]);
            }
            let ldc = n + 7;
            let mut got = vec![-3f32; rows * ldc];
            gemm_bf16(&mut got, ldc, &a16, lda, rows, &packed);
            for i in 0..rows {
                for j in 0..n {
                    let mag: f32 = (0..k).map(|p| (a[i * k + p] * b[p * n + j]).abs()).sum();
                    let (g, w) = (got[i * ldc + j], want[i * n + j]);
                    assert!((g - w).abs() <= BF16_GEMM_REL_BUDGET * (mag + 1.0), "rows{rows} k{k} n{n} ({i},{j}): {g} vs {w}");
                }
                assert!(got[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == -3.0), "wrote past n");
            }
        }
    }
}
