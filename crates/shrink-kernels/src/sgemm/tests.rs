//! The f32 GEMM's suite for one level's table (`kernel_tests!`), wide and narrow panels, against `gemm_f32_ref`.

use super::*;
use crate::testdata::uniform as rand_vec;

/// |fast - ref| <= budget x sum_k |x w|: reordered f32 sums differ by a few ulps of the absolute sum.
const F32_GEMM_REL_BUDGET: f32 = 1e-5;

/// Empty packings of both widths for `ops`.
fn packings(ops: &Ops) -> [(bool, PackedF32); 2] {
    [(false, PackedF32::empty(ops)), (true, PackedF32::empty_narrow(ops))]
}

pub(crate) fn matches_reference(ops: &Ops) {
    let level = ops.isa;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for &(m, k, n) in &[(1, 1, 1), (1, 5, 7), (3, 33, 17), (9, 130, 50), (17, 384, 97), (128, 384, 384), (2, 1536, 48)] {
        let (x, w, bias, res) = (rand_vec(m * k, 1), rand_vec(n * k, 2), rand_vec(n, 3), rand_vec(m * n, 4));
        let mag: Vec<f32> = (0..m * n).map(|i| (0..k).map(|p| (x[i / n * k + p] * w[i % n * k + p]).abs()).sum()).collect();
        for ep in [
            Epilogue::default(),
            Epilogue { bias: Some(&bias), gelu: true, residual: None },
            Epilogue { bias: Some(&bias), gelu: false, residual: Some(&res) },
        ] {
            let mut want = vec![0f32; m * n];
            gemm_f32_ref(&mut want, &x, m, &w, n, k, ep);
            for (narrow, mut packed) in packings(ops) {
                packed.repack(&w, n, k, k, 1);
                for threads in [1, 2] {
                    let mut got = vec![f32::NAN; m * n];
                    match threads {
                        1 => gemm_f32_ex(&mut got, n, &x, k, m, &packed, ep, 1),
                        _ => pool.install(|| gemm_f32(&mut got, &x, m, &packed, ep)),
                    }
                    for i in 0..m * n {
                        let tol = F32_GEMM_REL_BUDGET * (mag[i] + 1.0);
                        assert!(
                            (got[i] - want[i]).abs() <= tol,
                            "{level:?} narrow {narrow} {threads}t m{m} k{k} n{n} [{i}]: {} vs {}",
                            got[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }
}

pub(crate) fn strided_and_transposed(ops: &Ops) {
    let level = ops.isa;
    let (m, k, n, lda, ldc) = (19, 40, 33, 57, 70);
    let x = rand_vec(m * lda, 5);
    let w = rand_vec(n * k, 6);
    let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect(); // (K, N)
    let dense: Vec<f32> = (0..m * k).map(|i| x[i / k * lda + i % k]).collect();
    let mut want = vec![0f32; m * n];
    gemm_f32_ref(&mut want, &dense, m, &w, n, k, Epilogue::default());
    for (narrow, mut p) in packings(ops) {
        p.repack(&rand_vec(3 * n * k, 7), n + 5, k, k, 1); // leaves stale panels behind
        p.repack(&wt, n, k, 1, n);
        let mut got = vec![-7f32; m * ldc];
        gemm_f32_ex(&mut got, ldc, &x, lda, m, &p, Epilogue::default(), 2);
        for i in 0..m {
            for j in 0..n {
                assert!((got[i * ldc + j] - want[i * n + j]).abs() < 1e-4, "{level:?} narrow {narrow} ({i},{j})");
            }
            assert!(got[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == -7.0), "{level:?} narrow {narrow}: wrote past n");
        }
    }
}

/// `gemm_f32_block` against the reference on the sub-matrix: column blocks from each panel boundary (ending inside a
/// panel or at N), depth blocks anywhere (longer than KC too), stored at a stride and added to what is there.
pub(crate) fn blocks_match_reference(ops: &Ops) {
    let level = ops.isa;
    let (m, k, n) = (21, 700, 83);
    let (x, w) = (rand_vec(m * k, 8), rand_vec(n * k, 9));
    for (narrow, mut packed) in packings(ops) {
        packed.repack(&w, n, k, k, 1);
        let nr = packed.panel_width();
        for (cols, depth) in [(0..n, 0..k), (nr..n, 5..9), (0..nr.min(n) - 3, 300..700), (nr..(3 * nr).min(n), 1..k - 1), (0..1, 0..1)] {
            let (bn, bk, ldc) = (cols.len(), depth.len(), cols.len() + 3);
            let sub_w: Vec<f32> = cols.clone().flat_map(|j| w[j * k..][depth.clone()].to_vec()).collect();
            let sub_x: Vec<f32> = (0..m).flat_map(|i| x[i * k..][depth.clone()].to_vec()).collect();
            let mut want = vec![0f32; m * bn];
            gemm_f32_ref(&mut want, &sub_x, m, &sub_w, bn, bk, Epilogue::default());
            for accumulate in [false, true] {
                let mut got = vec![0.5f32; m * ldc];
                gemm_f32_block(&mut got, ldc, &sub_x, bk, m, &packed, cols.clone(), depth.clone(), accumulate);
                for i in 0..m {
                    for j in 0..bn {
                        let base = if accumulate { 0.5 } else { 0.0 };
                        let (g, e) = (got[i * ldc + j], want[i * bn + j] + base);
                        assert!((g - e).abs() <= 1e-4 * (1.0 + e.abs()), "{level:?} narrow {narrow} {cols:?}x{depth:?} acc {accumulate} ({i},{j}): {g} vs {e}");
                    }
                    assert!(got[i * ldc + bn..(i + 1) * ldc].iter().all(|&v| v == 0.5), "{level:?}: wrote past the block");
                }
            }
        }
    }
}

#[test]
fn a_block_off_a_panel_boundary_is_refused() {
    let packed = PackedF32::pack(&rand_vec(40 * 8, 1), 40, 8);
    let mut out = vec![0f32; 40];
    let r = std::panic::catch_unwind(move || gemm_f32_block(&mut out, 39, &[0.0; 8], 8, 1, &packed, 1..40, 0..8, false));
    assert!(r.is_err(), "a block starting at column 1 ran");
}

#[test]
fn a_column_reads_back_as_packed() {
    let (n, k) = (50, 37);
    let w = rand_vec(n * k, 5);
    for ops in crate::ops::available() {
        for (narrow, mut packed) in packings(ops) {
            packed.repack(&w, n, k, k, 1);
            let mut col = vec![f32::NAN; k];
            for j in [0, 1, 15, 16, 47, 49] {
                packed.column(j, &mut col);
                assert_eq!(col, w[j * k..][..k], "{:?} narrow {narrow}: column {j}", ops.isa);
            }
        }
    }
}
