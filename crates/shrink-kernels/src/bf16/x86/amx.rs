//! AMX-BF16's product for `gemm_bf16` (the table's `gemm_bf16` at the AMX level, where the CPU has AMX-BF16).

use std::arch::asm;

use crate::bf16::{PackedBf16, TILE, TILE_K};

/// Column tiles computed side by side: their sums sit in tmm4-7, so four tdpbf16ps chains overlap (one chain at a
/// time waited on each instruction's latency and on the store of its tile: 7% of an int8 forward pass).
const COLS: usize = 4;

/// tmm0 the A tile, tmm1-3 B tiles (rotating), tmm4-7 the sums of up to `COLS` column tiles. Edge tiles (fewer
/// rows or columns) go through a stack tile so the output is written only where it exists.
pub(crate) unsafe fn gemm(out: &mut [f32], ldc: usize, a: &[u16], lda: usize, rows: usize, b: &PackedBf16) {
    let (n, k_pad) = (b.n, b.k_pad());
    let panels = n.div_ceil(TILE);
    asm!("ldtilecfg [{}]", in(reg) crate::qgemm::x86::amx::tile_config(), options(nostack, readonly));
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
