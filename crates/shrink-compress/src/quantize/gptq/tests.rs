use super::*;

/// Hessian::add against the naive sum, relative.
const HESSIAN_RTOL: f64 = 1e-12;
/// add_gram / scaled against add: f32 products and sums in the Gram matrix.
const GRAM_RTOL: f64 = 1e-5;
/// |w - s q| may exceed s / 2 only by f32 rounding of the product.
const RTN_SLACK: f32 = 1e-6;
/// UᵀU H = I up to this, for the well-conditioned test H.
const INVERSE_TOL: f64 = 1e-9;
/// With a near-identity H (i.i.d. inputs, many rows), at least this fraction of q must equal RTN's.
const NEAR_RTN_AGREEMENT: f64 = 0.9;
/// output_error(gptq) <= GAIN * output_error(rtn) on correlated inputs with outlier channels.
const GAIN: f64 = 0.8;

use super::super::testrng::Rng;

fn ident(s: f32) -> f32 {
    s
}

/// rows x k inputs Z·A: A mixes channels (correlated inputs), a few of its columns are large (outlier channels
/// as in BERT's LayerNorm outputs).
fn correlated(rng: &mut Rng, rows: usize, k: usize) -> Vec<f32> {
    let z = rng.normals(rows * k);
    let mut a: Vec<f32> = rng.normals(k * k).iter().map(|v| v / (k as f32).sqrt()).collect();
    for i in 0..k {
        a[i * k + i] += 1.0;
    }
    for c in [3, k / 2, k - 5] {
        for i in 0..k {
            a[i * k + c] *= 12.0;
        }
    }
    let mut x = vec![0f32; rows * k];
    for r in 0..rows {
        for i in 0..k {
            let zi = z[r * k + i];
            for c in 0..k {
                x[r * k + c] += zi * a[i * k + c];
            }
        }
    }
    x
}

fn hessian(x: &[f32], k: usize) -> Hessian {
    let mut h = Hessian::new(k);
    h.add(x);
    h
}

#[test]
fn hessian_matches_naive_sum() {
    let (k, mut rng) = (13, Rng(1));
    let (a, b) = (rng.normals(7 * k), rng.normals(70 * k)); // remainders of both the quad and the chunk
    let mut h = Hessian::new(k);
    h.add(&a);
    h.add(&b);
    h.add(&[]);
    assert_eq!((h.rows(), h.k()), (77, k));
    let hm = h.matrix();
    for i in 0..k {
        for j in 0..k {
            let naive: f64 = a.chunks(k).chain(b.chunks(k)).map(|x| f64::from(x[i]) * f64::from(x[j])).sum();
            let naive = 2.0 * naive / 77.0;
            assert!((hm[i * k + j] - naive).abs() <= HESSIAN_RTOL * naive.abs().max(1.0), "H[{i}][{j}]");
        }
    }
}

#[test]
fn gram_and_scaling_match_add() {
    let (k, rows, mut rng) = (9, 30, Rng(10));
    let x = rng.normals(rows * k);
    let mut gram = vec![0f32; k * k];
    for r in x.chunks(k) {
        for i in 0..k {
            for j in 0..k {
                gram[i * k + j] += r[i] * r[j];
            }
        }
    }
    let mut g = Hessian::new(k);
    g.add_gram(&gram, rows);
    let d: Vec<f32> = (0..k).map(|i| 0.5 + i as f32 / 4.0).collect();
    let xd: Vec<f32> = x.chunks(k).flat_map(|r| r.iter().zip(&d).map(|(v, s)| v * s)).collect();
    for (got, want) in [(g, hessian(&x, k)), (hessian(&x, k).scaled(&d), hessian(&xd, k))] {
        assert_eq!(got.rows(), want.rows());
        for (a, b) in got.matrix().iter().zip(want.matrix()) {
            assert!((a - b).abs() <= GRAM_RTOL * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}

#[test]
#[should_panic(expected = "not whole rows")]
fn hessian_rejects_partial_rows() {
    Hessian::new(4).add(&[1.0; 6]);
}

#[test]
fn inverse_cholesky_factor_inverts_h() {
    let (k, mut rng) = (37, Rng(2));
    let h = hessian(&correlated(&mut rng, 200, k), k);
    let hm = h.matrix();
    let mut perm: Vec<usize> = (0..k).collect();
    perm.reverse();
    perm.swap(3, 20);
    let u = inverse_cholesky_upper(&hm, k, &perm).unwrap();
    let scale = (0..k).map(|i| hm[i * k + i]).fold(0f64, f64::max);
    for i in 0..k {
        for j in 0..k {
            // (UᵀU Hp)[i][j]
            let v: f64 = (0..k).map(|m| (0..=i.min(m)).map(|p| u[p * k + i] * u[p * k + m]).sum::<f64>() * hm[perm[m] * k + perm[j]]).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((v - want).abs() < INVERSE_TOL * scale, "(UᵀU H)[{i}][{j}] = {v}");
        }
        for j in 0..i {
            assert_eq!(u[i * k + j], 0.0);
        }
    }
}

#[test]
fn rtn_stays_on_the_grid() {
    let (n, k, mut rng) = (6, 64, Rng(3));
    let mut w = rng.normals(n * k);
    w[2 * k..3 * k].fill(0.0); // a zero row
    w[4 * k + 40..4 * k + 48].fill(0.0); // part of a group
    for grid in [Grid::PerChannel { max_q: 127 }, Grid::Groups { max_q: 7, group: 16 }] {
        let r = rtn(&w, n, k, &grid, &ident);
        let (g, groups) = (grid.group_len(k), grid.groups(k));
        assert_eq!((r.q.len(), r.scale.len()), (n * k, n * groups));
        let wh = r.dequantize(n, k, &grid);
        for row in 0..n {
            for c in 0..k {
                let s = r.scale[row * groups + c / g];
                let i = row * k + c;
                assert!(i32::from(r.q[i]).abs() <= grid.max_q());
                assert!((w[i] - wh[i]).abs() <= s / 2.0 + RTN_SLACK, "{grid:?} [{row}, {c}]");
            }
            for gi in 0..groups {
                let amax = w[row * k + gi * g..row * k + (gi + 1) * g].iter().fold(0f32, |a, v| a.max(v.abs()));
                assert_eq!(r.scale[row * groups + gi], amax / grid.max_q() as f32, "each group its own amax");
            }
        }
        assert!(r.scale[2 * groups..3 * groups].iter().all(|&s| s == 0.0));
        assert!(r.q[2 * k..3 * k].iter().all(|&q| q == 0));
    }
}

#[test]
fn diagonal_hessian_gives_rtn() {
    let (n, k, mut rng) = (16, 64, Rng(4));
    let w = rng.normals(n * k);
    let mut eye = vec![0f32; k * k];
    for i in 0..k {
        eye[i * k + i] = 1.0;
    }
    let h = hessian(&eye, k); // H = (2 / k) I exactly: nothing to compensate
    for grid in [Grid::PerChannel { max_q: 127 }, Grid::Groups { max_q: 7, group: 32 }] {
        for act_order in [false, true] {
            let opts = GptqOptions { act_order, block: 24, ..Default::default() };
            let g = gptq(&w, n, k, &h, &grid, &opts, &ident).unwrap();
            let r = rtn(&w, n, k, &grid, &ident);
            assert_eq!((&g.q, &g.scale), (&r.q, &r.scale), "{grid:?} act_order {act_order}");
        }
    }
    // Near-identity H from i.i.d. inputs: compensation is small, so nearly all q agree with RTN.
    let h = hessian(&rng.normals(8192 * k), k);
    let grid = Grid::Groups { max_q: 7, group: 32 };
    let opts = GptqOptions { act_order: false, ..Default::default() };
    let g = gptq(&w, n, k, &h, &grid, &opts, &ident).unwrap();
    let r = rtn(&w, n, k, &grid, &ident);
    let same = g.q.iter().zip(&r.q).filter(|(a, b)| a == b).count() as f64 / (n * k) as f64;
    println!("near-identity H: {:.3} of q equal to RTN", same);
    assert!(same >= NEAR_RTN_AGREEMENT, "{same}");
}

#[test]
fn gptq_beats_rtn_on_correlated_inputs() {
    let (n, k, rows, mut rng) = (64, 128, 1024, Rng(5));
    let x = correlated(&mut rng, rows, k);
    let h = hessian(&x, k);
    let w = rng.normals(n * k);
    for grid in [Grid::PerChannel { max_q: 127 }, Grid::Groups { max_q: 7, group: 32 }] {
        let base = output_error(&w, &rtn(&w, n, k, &grid, &ident).dequantize(n, k, &grid), n, k, &h);
        for act_order in [false, true] {
            let opts = GptqOptions { act_order, ..Default::default() };
            let g = gptq(&w, n, k, &h, &grid, &opts, &ident).unwrap();
            assert!(g.q.iter().all(|&q| i32::from(q).abs() <= grid.max_q()));
            let e = output_error(&w, &g.dequantize(n, k, &grid), n, k, &h);
            println!("{grid:?} act_order {act_order}: gptq / rtn output error = {:.3} ({e:.3e} / {base:.3e})", e / base);
            assert!(e <= GAIN * base, "{grid:?} act_order {act_order}: {e} vs rtn {base}");
        }
    }
}

#[test]
fn output_error_matches_direct_computation() {
    let (n, k, rows, mut rng) = (5, 24, 40, Rng(6));
    let x = rng.normals(rows * k);
    let (w, wh) = (rng.normals(n * k), rng.normals(n * k));
    let direct: f64 = x
        .chunks(k)
        .map(|x| {
            (0..n)
                .map(|r| {
                    let y: f64 = (0..k).map(|c| f64::from(x[c]) * (f64::from(w[r * k + c]) - f64::from(wh[r * k + c]))).sum();
                    y * y
                })
                .sum::<f64>()
        })
        .sum::<f64>()
        / rows as f64;
    let e = output_error(&w, &wh, n, k, &hessian(&x, k));
    assert!((e - direct).abs() <= 1e-9 * direct, "{e} vs {direct}");
}

#[test]
fn dead_inputs_are_zeroed() {
    let (n, k, rows, mut rng) = (8, 32, 256, Rng(7));
    let mut x = correlated(&mut rng, rows, k);
    let dead = [5, 17];
    for r in 0..rows {
        for &c in &dead {
            x[r * k + c] = 0.0;
        }
    }
    let h = hessian(&x, k);
    let mut w = rng.normals(n * k);
    for r in 0..n {
        w[r * k + 5] = 100.0; // would dominate the row's scale if it counted
    }
    for grid in [Grid::PerChannel { max_q: 127 }, Grid::Groups { max_q: 7, group: 16 }] {
        for act_order in [false, true] {
            let opts = GptqOptions { act_order, ..Default::default() };
            let g = gptq(&w, n, k, &h, &grid, &opts, &ident).unwrap();
            assert!(g.scale.iter().all(|s| s.is_finite() && *s < 1.0), "{grid:?} {:?}", g.scale);
            for r in 0..n {
                assert!(dead.iter().all(|&c| g.q[r * k + c] == 0));
            }
            assert!(output_error(&w, &g.dequantize(n, k, &grid), n, k, &h).is_finite());
        }
    }
}

#[test]
fn bad_hessians_are_errors() {
    let (n, k) = (4, 8);
    let w = vec![0.5f32; n * k];
    let (grid, opts) = (Grid::PerChannel { max_q: 127 }, GptqOptions::default());
    let e = gptq(&w, n, k, &Hessian::new(k), &grid, &opts, &ident).unwrap_err();
    assert!(e.contains("no calibration rows"), "{e}");
    let mut x = vec![1f32; 3 * k];
    x[k + 2] = f32::NAN;
    let e = gptq(&w, n, k, &hessian(&x, k), &grid, &opts, &ident).unwrap_err();
    assert!(e.contains("non-finite"), "{e}");
    // One calibration row: H has rank one, singular without damping.
    let h = hessian(&[1f32; 8], k);
    let undamped = GptqOptions { damp: 0.0, ..opts };
    let e = gptq(&w, n, k, &h, &grid, &undamped, &ident).unwrap_err();
    assert!(e.contains("input column"), "{e}");
    assert!(gptq(&w, n, k, &h, &grid, &opts, &ident).is_ok(), "damping makes it definite");
    let e = gptq(&w, n, k, &h, &Grid::Groups { max_q: 7, group: 3 }, &opts, &ident).unwrap_err();
    assert!(e.contains("divide"), "{e}");
}

#[test]
fn round_scale_is_respected() {
    let (n, k, rows, mut rng) = (16, 64, 256, Rng(8));
    let h = hessian(&correlated(&mut rng, rows, k), k);
    let w: Vec<f32> = rng.normals(n * k).iter().map(|v| 4.0 * v).collect();
    // Down to a multiple of 1/16: below amax / max_q, so the largest weights need the clamp.
    let floor16 = |s: f32| (s * 16.0).floor() / 16.0;
    for grid in [Grid::PerChannel { max_q: 127 }, Grid::Groups { max_q: 7, group: 16 }] {
        for act_order in [false, true] {
            let opts = GptqOptions { act_order, ..Default::default() };
            let g = gptq(&w, n, k, &h, &grid, &opts, &floor16).unwrap();
            let r = rtn(&w, n, k, &grid, &floor16);
            for qz in [&g, &r] {
                assert!(qz.scale.iter().all(|&s| s * 16.0 == (s * 16.0).round()), "{:?}", qz.scale);
                assert!(qz.q.iter().all(|&q| i32::from(q).abs() <= grid.max_q()));
            }
            assert!(r.q.iter().any(|&q| i32::from(q).abs() == grid.max_q()), "the clamp was exercised");
        }
    }
}
