//! Linear attention of one head, the parallel (encoder) form: ctx_i = φ(q_i)·S / φ(q_i)·z with S = Σ_j φ(k_j)ᵀ v_j
//! (D x D) and z = Σ_j φ(k_j) over the real keys, φ = elu + 1. Two GEMMs of T·D² each and nothing T x T: S (with z
//! as its last column) from φ(K)ᵀ against V's panels, then each block of φ(Q) rows against that.

use shrink_kernels::activation::elu_plus_one;
use shrink_kernels::epilogue::Epilogue;
use shrink_kernels::sgemm::gemm_f32_ex;

use super::blocked::QUERY_BLOCK;
use super::{finish_block, Ctx, Scratch, Shape};

/// Head h of sequence bi; `bias` (T) is empty when the sequence has no padding (padding keys add nothing to S, z).
pub(super) fn head(qkv: &[f32], bias: &[f32], s: &Shape, bi: usize, h: usize, ctx: Ctx, sc: &mut Scratch) {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    let ld = 3 * c;
    let seq = &qkv[bi * t * ld..(bi + 1) * t * ld]; // (T, 3C)
    grow(&mut sc.phi, d * t.max(QUERY_BLOCK));
    grow(&mut sc.kv, d * (d + 1));
    // φ(K)ᵀ (D, T): a block of K rows through φ, then transposed in; padding columns zero.
    let phi_kt = &mut sc.phi[..d * t];
    let mut row = [0f32; QUERY_BLOCK * 64];
    let step = (row.len() / d).max(1);
    for j0 in (0..t).step_by(step) {
        let n = step.min(t - j0);
        let rows = &mut row[..n * d];
        for (r, dst) in rows.chunks_exact_mut(d).enumerate() {
            dst.copy_from_slice(&seq[(j0 + r) * ld + c + h * d..][..d]);
        }
        elu_plus_one(rows);
        for (r, src) in rows.chunks_exact(d).enumerate() {
            let keep = bias.is_empty() || bias[j0 + r] == 0.0;
            for (f, &v) in src.iter().enumerate() {
                phi_kt[f * t + j0 + r] = if keep { v } else { 0.0 };
            }
        }
    }
    // S (D, D) = φ(K)ᵀ V, into columns 0..D of kv (D, D + 1); z = row sums of φ(K)ᵀ into column D.
    sc.v.repack(&seq[2 * c + h * d..], d, t, 1, ld);
    gemm_f32_ex(&mut sc.kv, d + 1, phi_kt, t, d, &sc.v, Epilogue::default(), 1);
    for (f, z) in phi_kt.chunks_exact(t).enumerate() {
        sc.kv[f * (d + 1) + d] = z.iter().sum();
    }
    // As a GEMM weight: output column e (D + 1 of them) of φ(q)·[S | z] reads kv's column e.
    sc.kvz.repack(&sc.kv, d + 1, d, 1, d + 1);
    sc.reserve(QUERY_BLOCK, 0, d);
    for q0 in (0..t).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(t - q0);
        let phi_q = &mut sc.phi[..rows * d]; // (rows, D), after φ(K)ᵀ is done with
        for (r, dst) in phi_q.chunks_exact_mut(d).enumerate() {
            dst.copy_from_slice(&seq[(q0 + r) * ld + h * d..][..d]);
        }
        elu_plus_one(phi_q);
        let out = &mut sc.out[..rows * (d + 1)]; // (rows, D + 1): numerators, then the normaliser
        gemm_f32_ex(out, d + 1, phi_q, d, rows, &sc.kvz, Epilogue::default(), 1);
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
