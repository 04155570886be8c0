//! Linear attention of one head, the parallel (encoder) form: ctx_i = φ(q_i)·S / φ(q_i)·z with S = Σ_j φ(k_j)ᵀ v_j
//! (F x D) and z = Σ_j φ(k_j) over the real keys, φ = elu + 1 (F = D) or a learned Hedgehog map (F = 2D). Two GEMMs
//! of T·F·D each and nothing T x T: S (with z as its last column) from φ(K)ᵀ against V's panels, then each block of
//! φ(Q) rows against that.

use anyhow::Result;
use shrink_format::arch::{self, Side};
use shrink_format::TensorFile;
use shrink_kernels::activation::{elu_plus_one, softmax_rows_unnormalized};
use shrink_kernels::epilogue::Epilogue;
use shrink_kernels::sgemm::{gemm_f32_ex, PackedF32};

use super::blocked::QUERY_BLOCK;
use super::{finish_block, Ctx, Scratch, Shape};

/// Hedgehog's learned maps of one layer (`FeatureMap::Hedgehog`): per side (Q, K) and head, y = x·W_h + b_h packed
/// as a GEMM weight, then φ = [softmax(y), softmax(-y)].
pub struct FeatureMaps {
    w: [Vec<PackedF32>; 2], // [side][head]: W_hᵀ (D out, D in)
    b: [Vec<f32>; 2],       // [side]: (H, D)
}

impl FeatureMaps {
    /// Layer `l`'s maps from `file` (`arch::feature_map`), for `h` heads of `d`.
    pub fn load(file: &TensorFile, l: usize, h: usize, d: usize) -> Result<Self> {
        let side = |side| -> Result<[Vec<f32>; 2]> {
            let path = arch::feature_map(l, side);
            Ok([file.f32(&format!("{path}.weight"), &[h, d, d])?.into_owned(), file.f32(&format!("{path}.bias"), &[h, d])?.into_owned()])
        };
        let ([wq, bq], [wk, bk]) = (side(Side::Query)?, side(Side::Key)?);
        Ok(Self::new([&wq, &wk], [bq, bk], d))
    }

    /// From W (H, D in, D out) and b (H, D) of Q's map, then K's.
    pub fn new(w: [&[f32]; 2], b: [Vec<f32>; 2], d: usize) -> Self {
        let level = shrink_kernels::ops::ops();
        let pack = |w: &[f32]| -> Vec<PackedF32> {
            w.chunks_exact(d * d)
                .map(|wh| {
                    let mut p = PackedF32::empty_narrow(level);
                    p.repack(wh, d, d, 1, d); // element (out f, in e) = W_h[e][f]
                    p
                })
                .collect()
        };
        Self { w: [pack(w[0]), pack(w[1])], b }
    }
}

/// φ of `n` rows of one head (`x`: n x D) into `out` (n x F): elu + 1, or head `h`'s Hedgehog map of `side`.
fn features(x: &[f32], n: usize, d: usize, maps: Option<(&FeatureMaps, Side)>, h: usize, out: &mut [f32], sums: &mut [f32]) {
    let Some((m, side)) = maps else {
        out[..n * d].copy_from_slice(&x[..n * d]);
        return elu_plus_one(&mut out[..n * d]);
    };
    let s = side as usize;
    let out = &mut out[..n * 2 * d]; // row r: [y | -y], then each half through a softmax
    let bias = Some(&m.b[s][h * d..(h + 1) * d]);
    gemm_f32_ex(out, 2 * d, x, d, n, &m.w[s][h], Epilogue { bias, ..Epilogue::default() }, 1);
    for row in out.chunks_exact_mut(2 * d) {
        let (y, neg) = row.split_at_mut(d);
        neg.iter_mut().zip(y.iter()).for_each(|(o, &v)| *o = -v);
    }
    let sums = &mut sums[..2 * n];
    softmax_rows_unnormalized(out, d, &[], sums);
    for (half, &sum) in out.chunks_exact_mut(d).zip(sums.iter()) {
        half.iter_mut().for_each(|v| *v /= sum);
    }
}

/// Head h of sequence bi; `bias` (T) is empty when the sequence has no padding (padding keys add nothing to S, z).
#[allow(clippy::too_many_arguments)]
pub(super) fn head(qkv: &[f32], bias: &[f32], s: &Shape, bi: usize, h: usize, maps: Option<&FeatureMaps>, ctx: Ctx, sc: &mut Scratch) {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    let f = if maps.is_some() { 2 * d } else { d };
    let ld = 3 * c;
    let seq = &qkv[bi * t * ld..(bi + 1) * t * ld]; // (T, 3C)
    grow(&mut sc.phi, f * t.max(QUERY_BLOCK));
    grow(&mut sc.kv, f * (d + 1));
    grow(&mut sc.rows, QUERY_BLOCK * (d + f));
    sc.reserve(QUERY_BLOCK, 0, d);
    grow(&mut sc.sums, 2 * QUERY_BLOCK);
    let (rows, feat) = sc.rows.split_at_mut(QUERY_BLOCK * d); // a block of Q or K rows (QB, D), and their φ (QB, F)
    // φ(K)ᵀ (F, T): a block of K rows through φ, then transposed in; padding columns zero.
    let phi_kt = &mut sc.phi[..f * t];
    for j0 in (0..t).step_by(QUERY_BLOCK) {
        let n = QUERY_BLOCK.min(t - j0);
        for (r, dst) in rows[..n * d].chunks_exact_mut(d).enumerate() {
            dst.copy_from_slice(&seq[(j0 + r) * ld + c + h * d..][..d]);
        }
        features(rows, n, d, maps.map(|m| (m, Side::Key)), h, feat, &mut sc.sums);
        for (r, src) in feat[..n * f].chunks_exact(f).enumerate() {
            let keep = bias.is_empty() || bias[j0 + r] == 0.0;
            for (e, &v) in src.iter().enumerate() {
                phi_kt[e * t + j0 + r] = if keep { v } else { 0.0 };
            }
        }
    }
    // S (F, D) = φ(K)ᵀ V, into columns 0..D of kv (F, D + 1); z = row sums of φ(K)ᵀ into column D.
    sc.v.repack(&seq[2 * c + h * d..], d, t, 1, ld);
    gemm_f32_ex(&mut sc.kv, d + 1, phi_kt, t, f, &sc.v, Epilogue::default(), 1);
    for (e, z) in phi_kt.chunks_exact(t).enumerate() {
        sc.kv[e * (d + 1) + d] = z.iter().sum();
    }
    // As a GEMM weight: output column e (D + 1 of them) of φ(q)·[S | z] reads kv's column e.
    sc.kvz.repack(&sc.kv, d + 1, f, 1, d + 1);
    for q0 in (0..t).step_by(QUERY_BLOCK) {
        let n = QUERY_BLOCK.min(t - q0);
        for (r, dst) in rows[..n * d].chunks_exact_mut(d).enumerate() {
            dst.copy_from_slice(&seq[(q0 + r) * ld + h * d..][..d]);
        }
        features(rows, n, d, maps.map(|m| (m, Side::Query)), h, feat, &mut sc.sums);
        let out = &mut sc.out[..n * (d + 1)]; // (n, D + 1): numerators, then the normaliser
        gemm_f32_ex(out, d + 1, feat, f, n, &sc.kvz, Epilogue::default(), 1);
        for (r, o) in out.chunks_exact(d + 1).enumerate() {
            sc.sums[r] = o[d];
        }
        finish_block(out, d + 1, &sc.sums, s, bi, h, q0, ctx);
    }
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}
