//! The row kernels' suite for one level's table (`kernel_tests!`): each build against the generic one (the same
//! loop; only reassociated sums differ), the generic LayerNorm against f64, the bf16 softmax against f64 exps.

use super::reference;
use super::*;
use crate::ops::{self, Ops};

/// SIMD vs generic build of the same loop: only reassociated sums differ.
const SIMD_TOL: f32 = 1e-6;
/// `math::exp` vs f64, relative.
const EXP_REL_TOL: f64 = 1e-6;
/// f32 LayerNorm vs the f64 textbook formula.
const LN_TOL: f32 = 1e-5;

/// bf16 softmax probabilities vs f64 exps: bf16's half ulp (up to 2^-8 of the value) plus `exp_bf16`'s 5e-5.
const BF16_PROB_REL_TOL: f64 = 4e-3;
/// Their f32 sums vs f64.
const BF16_SUM_REL_TOL: f64 = 1e-4;

pub(crate) fn softmax_bf16_matches_f64(ops: &Ops) {
    let isa = ops.isa;
    // 1, 4 and 7 rows (the 4-row path and the single rows); t short of a lane, one lane and past three.
    for (rows, t) in [(1, 5), (4, 16), (7, 53)] {
        let x: Vec<f32> = crate::testdata::uniform(rows * t, 11).iter().map(|v| v * 8.0).collect();
        let bias: Vec<f32> = (0..t).map(|i| if i == t - 1 { -1e9 } else { 0.0 }).collect();
        let ld = t.next_multiple_of(32);
        let (mut y, mut sums, mut out) = (x.clone(), vec![0f32; rows], vec![7u16; rows * ld]);
        softmax_rows_bf16_on(ops, &mut y, t, &bias, &mut sums, &mut out, ld);
        for r in 0..rows {
            let (e, sum) = reference::exps(&x[r * t..(r + 1) * t], &bias);
            assert!((sums[r] as f64 - sum).abs() <= BF16_SUM_REL_TOL * sum, "{isa:?} row {r}: sum {} vs {sum}", sums[r]);
            for i in 0..t {
                let got = crate::bf16::f32_of(out[r * ld + i]) as f64;
                assert!((got - e[i]).abs() <= BF16_PROB_REL_TOL * e[i] + 1e-30, "{isa:?} ({r},{i}): {got} vs {}", e[i]);
            }
            assert!(out[r * ld + t..(r + 1) * ld].iter().all(|&v| v == 0), "{isa:?} row {r}: padding not zeroed");
        }
    }
}

fn data(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect()
}

/// Online softmax probabilities vs f64 exps of the whole row: f32 exps rescaled across blocks.
const ONLINE_PROB_TOL: f64 = 1e-6;

/// Online softmax over key blocks against f64 exps of whole rows: each block's exps times the later blocks' alphas,
/// over the final sums, are the probabilities (up to the reassociated sums and `math::exp`).
pub(crate) fn softmax_online_matches_f64(ops: &Ops) {
    let (rows, t) = (7, 301);
    let x: Vec<f32> = (0..rows * t).map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0).collect();
    let bias: Vec<f32> = (0..t).map(|j| if j % 5 == 4 { -1e9 } else { 0.0 }).collect();
    for blocks in [vec![0..t], vec![0..64, 64..65, 65..200, 200..t], vec![0..0, 0..150, 150..t]] {
        let (mut max, mut sums, mut alpha) = (vec![f32::NEG_INFINITY; rows], vec![0f32; rows], vec![0f32; rows]);
        let mut p = vec![0f64; rows * t];
        for cols in &blocks {
            let w = cols.len();
            let mut y: Vec<f32> = (0..rows).flat_map(|r| x[r * t..][cols.clone()].to_vec()).collect();
            softmax_rows_online_on(ops, &mut y, w, &bias[cols.clone()], &mut max, &mut sums, &mut alpha);
            for r in 0..rows {
                p[r * t..r * t + cols.start].iter_mut().for_each(|v| *v *= alpha[r] as f64);
                for (j, &e) in cols.clone().zip(&y[r * w..(r + 1) * w]) {
                    p[r * t + j] = e as f64;
                }
            }
        }
        for r in 0..rows {
            let (e, sum) = reference::exps(&x[r * t..(r + 1) * t], &bias);
            for j in 0..t {
                let (got, want) = (p[r * t + j] / sums[r] as f64, e[j] / sum);
                assert!((got - want).abs() <= ONLINE_PROB_TOL, "{:?} blocks {blocks:?} ({r},{j}): {got} vs {want}", ops.isa);
            }
        }
    }
}

pub(crate) fn matches_reference(ops: &Ops) {
    let generic = ops::generic();
    for n in [1, 7, 16, 33, 1000] {
        let x = data(n);
        let dy: Vec<f32> = x.iter().map(|v| v * 0.3 + 0.1).collect();
        let bias: Vec<f32> = (0..n).map(|i| if i % 3 == 2 { -1e9 } else { 0.0 }).collect();
        let run = |ops: &Ops| {
            let (mut y, mut dx, mut p, mut dp, mut tmp) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            gelu_on(ops, &x, &mut y);
            gelu_backward_on(ops, &x, &dy, &mut dx);
            let mut phi = x.clone();
            elu_plus_one_on(ops, &mut phi);
            dx.extend(phi);
            softmax_row_on(ops, &x, &bias, 0.7, &mut p);
            softmax_row_backward_on(ops, &p, &dy, 0.7, &mut tmp, &mut dp);
            let mut q: Vec<f32> = x.iter().map(|v| v * 0.7).collect();
            let mut sum = [0f32];
            softmax_rows_unnormalized_on(ops, &mut q, n, &bias, &mut sum);
            q.iter_mut().for_each(|v| *v /= sum[0]);
            let mut ln = x.clone();
            layer_norm_rows_on(ops, &mut ln, &dy, &bias[..n].iter().map(|b| b.max(-1.0)).collect::<Vec<_>>(), 1e-12);
            (y, dx, p, dp, ln, q)
        };
        let reference = run(generic);
        assert!((reference.2.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let elu = |v: f32| if v > 0.0 { v as f64 + 1.0 } else { (v as f64).exp() };
        let d = reference.1[n..].iter().zip(&x).map(|(&u, &v)| (u as f64 - elu(v)).abs() / elu(v)).fold(0f64, f64::max);
        assert!(d <= EXP_REL_TOL, "generic elu + 1 vs f64: {d}");
        let ln_want = reference::layer_norm(&x, &dy, &(0..n).map(|i| if i % 3 == 2 { -1.0 } else { 0.0 }).collect::<Vec<_>>());
        let d = reference.4.iter().zip(&ln_want).map(|(u, v)| (u - v).abs()).fold(0f32, f32::max);
        assert!(d <= LN_TOL, "generic layer norm vs f64 reference: {d}");
        let got = run(ops);
        for (a, b) in [(&got.0, &reference.0), (&got.1, &reference.1), (&got.2, &reference.2), (&got.3, &reference.3), (&got.4, &reference.4), (&got.5, &reference.2)] {
            let d = a.iter().zip(b.iter()).map(|(u, v)| (u - v).abs()).fold(0f32, f32::max);
            assert!(d <= SIMD_TOL, "{:?} n={n}: {d}", ops.isa);
        }
    }
}
