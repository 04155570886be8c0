//! The bf16 suite for one level's table (`kernel_tests!`): its packing builds give the generic build's words on
//! every walk, and its matrix-engine product (where it has one) matches `gemm_bf16_ref`.

use super::*;
use crate::testdata::uniform;

/// |gemm - ref| <= budget x sum |a b|: the same bf16 products, summed in another order (and pairwise) in f32.
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

const SHAPES: [(usize, usize, usize); 7] = [(1, 1, 1), (16, 32, 16), (17, 40, 20), (64, 32, 128), (50, 128, 32), (3, 70, 33), (2, 300, 17)];

pub(crate) fn matches_reference(ops: &Ops) {
    let generic = crate::ops::generic();
    let isa = ops.isa;
    for (rows, k, n) in SHAPES {
        let b = uniform(k * n, 2); // (k, n)
        // All walks (columns adjacent, K adjacent, neither) give the generic build's words, over stale data.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect(); // (n, k)
        let strided: Vec<f32> = bt.iter().flat_map(|&v| [v, f32::NAN]).collect(); // (n, k) at K stride 2
        let len = n.div_ceil(TILE) * k.next_multiple_of(TILE_K) / 2 * TILE;
        let mut want = vec![0u32; len];
        pack_pairs_on(generic, &bt, n, k, k, 1, &mut want);
        for (what, src, sn, sk) in [("K walk", &bt, k, 1), ("column walk", &b, 1, n), ("strided walk", &strided, 2 * k, 2)] {
            let mut got = vec![0x5555_5555u32; len];
            pack_pairs_on(ops, src, n, k, sn, sk, &mut got);
            assert_eq!(got, want, "{isa:?} rows{rows} k{k} n{n}: the {what} differs");
        }
        if ops.has_bf16_gemm() {
            gemm_matches_reference(ops, rows, k, n);
        }
    }
}

fn gemm_matches_reference(ops: &Ops, rows: usize, k: usize, n: usize) {
    let (a, b) = (uniform(rows * k, 1), uniform(k * n, 2)); // (rows, k), (k, n)
    let mut want = vec![0f32; rows * n];
    gemm_bf16_ref(&mut want, &a, rows, &b, k, n);
    let mut packed = PackedBf16::new();
    packed.repack(&uniform(3 * k * n + 64, 9), n + 3, k + 5, 1, n + 3); // leaves stale data behind
    packed.repack(&b, n, k, 1, n);
    let lda = packed.k_pad();
    let mut a16 = vec![0u16; rows.next_multiple_of(TILE) * lda];
    for i in 0..rows {
        convert_on(ops, &a[i * k..(i + 1) * k], &mut a16[i * lda..i * lda + k]);
    }
    let ldc = n + 7;
    let mut got = vec![-3f32; rows * ldc];
    gemm_bf16_on(ops, &mut got, ldc, &a16, lda, rows, &packed);
    for i in 0..rows {
        for j in 0..n {
            let mag: f32 = (0..k).map(|p| (a[i * k + p] * b[p * n + j]).abs()).sum();
            let (g, w) = (got[i * ldc + j], want[i * n + j]);
            assert!((g - w).abs() <= BF16_GEMM_REL_BUDGET * (mag + 1.0), "rows{rows} k{k} n{n} ({i},{j}): {g} vs {w}");
        }
        assert!(got[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == -3.0), "wrote past n");
    }
}
