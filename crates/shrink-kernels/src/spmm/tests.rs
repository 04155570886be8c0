//! The sparse GEMM's suite for one level's table (`kernel_tests!`), and the storage round trips.

use super::kernel::{transpose, MB};
use super::*;
use crate::epilogue::Epilogue;
use crate::ops::Ops;
use crate::testdata::uniform;

/// |fast - ref| <= budget x (sum_k |x w| + 1): the sums run in another order than the reference's.
const SPARSE_REL_BUDGET: f32 = 1e-5;

/// uniform values with a fraction `density` kept (by a second stream), the rest exactly 0.
fn sparse_w(n: usize, k: usize, density: f32, seed: u64) -> Vec<f32> {
    let keep = uniform(n * k, seed + 100);
    uniform(n * k, seed).into_iter().zip(keep).map(|(v, r)| if (r + 1.0) / 2.0 < density { v } else { 0.0 }).collect()
}

/// One level's row blocks (and the dispatched product) against the dense reference.
pub(crate) fn matches_reference(ops: &Ops) {
    let level = ops.isa;
    for &(m, k, n, density) in &[(1, 1, 1, 1.0), (1, 5, 7, 0.5), (3, 33, 17, 0.1), (17, 384, 97, 0.3), (130, 100, 50, 0.05), (64, 48, 9, 0.0)] {
        let (x, w, bias, res) = (uniform(m * k, 1), sparse_w(n, k, density, 2), uniform(n, 3), uniform(m * n, 4));
        let s = SparseF32::from_dense(&w, n, k);
        assert_eq!(s.to_dense(), w);
        let mag: Vec<f32> = (0..m * n).map(|i| (0..k).map(|p| (x[i / n * k + p] * w[i % n * k + p]).abs()).sum()).collect();
        for ep in [Epilogue::default(), Epilogue { bias: Some(&bias), gelu: true, residual: Some(&res) }] {
            let mut want = vec![0f32; m * n];
            gemm_sparse_ref(&mut want, &x, m, &s, ep);
            let mut xt = vec![0f32; k * m];
            transpose(&x, m, k, &mut xt);
            let mut got = vec![f32::NAN; m * n];
            for (b, rows) in got.chunks_mut(MB * n).enumerate() {
                rows_block_on(ops, rows, &xt, m, b * MB, &s, &ep);
            }
            let mut dispatched = vec![f32::NAN; m * n];
            gemm_sparse(&mut dispatched, &x, m, &s, ep, &mut Vec::new());
            for i in 0..m * n {
                let tol = SPARSE_REL_BUDGET * (mag[i] + 1.0);
                assert!((got[i] - want[i]).abs() <= tol, "{level:?} m{m} k{k} n{n} [{i}]: {} vs {}", got[i], want[i]);
                assert!((dispatched[i] - want[i]).abs() <= tol, "dispatched m{m} k{k} n{n} [{i}]");
            }
        }
    }
}

#[test]
fn csr_and_mask_round_trip_and_reject_bad_parts() {
    let (n, k) = (13, 70);
    let s = SparseF32::from_dense(&sparse_w(n, k, 0.2, 9), n, k);
    let (row_nnz, col) = s.csr_parts();
    assert_eq!(SparseF32::from_csr(n, k, &row_nnz, col, s.values()).unwrap(), s);
    assert_eq!(SparseF32::from_mask(n, k, &s.mask(), s.values()).unwrap(), s);
    let mut bad = col.to_vec();
    bad[0] = k as u16;
    assert!(SparseF32::from_csr(n, k, &row_nnz, &bad, s.values()).unwrap_err().contains("below 70"));
    assert!(SparseF32::from_csr(n, k, &row_nnz, col, &s.values()[1..]).is_err());
    assert!(SparseF32::from_mask(n, k, &s.mask()[1..], s.values()).unwrap_err().contains("mask of"));
    assert!(SparseF32::from_mask(n, k, &s.mask(), &s.values()[1..]).unwrap_err().contains("values"));
}

/// Row counts whose sum passes u32 used to wrap to the number of values and then panic on a slice.
#[test]
fn row_counts_past_u32_are_an_error() {
    let n = 65_538; // x 65_535 per row = 2^32 + 65_534
    let (row_nnz, col, val) = (vec![u16::MAX; n], vec![0u16; 65_534], vec![1f32; 65_534]);
    assert!(SparseF32::from_csr(n, 100, &row_nnz, &col, &val).unwrap_err().contains("add up to 4295032830"));
}

#[test]
fn scaling_output_rows_scales_only_their_values() {
    let (n, k) = (6, 10);
    let w = sparse_w(n, k, 0.5, 11);
    let mut s = SparseF32::from_dense(&w, n, k);
    s.scale_columns(2..4, 0.5);
    let want: Vec<f32> = w.iter().enumerate().map(|(i, &v)| if (2..4).contains(&(i / k)) { v * 0.5 } else { v }).collect();
    assert_eq!(s.to_dense(), want);
}

