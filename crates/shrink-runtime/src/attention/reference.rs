//! The dense masked form every attention variant is tested against, in f64: each query row over the keys it may
//! see, as a T-wide row (the T x T work the kernels avoid).

use super::{Kind, Shape};

/// Whether query i sees key j under `kind` (padding aside).
fn sees(kind: Kind, i: usize, j: usize) -> bool {
    match kind {
        Kind::Sliding { window, global } => i.abs_diff(j) <= window || i < global || j < global,
        Kind::Full | Kind::Linear { .. } => true,
    }
}

/// ctx (B*T, H*D) from qkv (B*T, 3·H·D) as `attention` takes it; `real` (B*T): false for padding keys.
pub(super) fn attention(qkv: &[f32], real: &[bool], s: &Shape, kind: Kind) -> Vec<f32> {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    let mut ctx = vec![0f32; s.b * t * c];
    let at = |bi: usize, i: usize, part: usize, h: usize| &qkv[(bi * t + i) * 3 * c + part * c + h * d..][..d];
    let elu1 = |x: &[f32]| -> Vec<f64> { x.iter().map(|&v| if v > 0.0 { v as f64 + 1.0 } else { (v as f64).exp() }).collect() };
    for bi in 0..s.b {
        for h in 0..s.h {
            for i in 0..t {
                let keys: Vec<usize> = (0..t).filter(|&j| real[bi * t + j] && sees(kind, i, j)).collect();
                // A weight per visible key: softmax of the scores, or φ(q)·φ(k) (normalised below either way).
                let w: Vec<f64> = match kind {
                    Kind::Linear { .. } => {
                        let q = elu1(at(bi, i, 0, h));
                        keys.iter().map(|&j| q.iter().zip(elu1(at(bi, j, 1, h))).map(|(a, b)| a * b).sum()).collect()
                    }
                    _ => {
                        let q = at(bi, i, 0, h);
                        let sc: Vec<f64> = keys.iter().map(|&j| q.iter().zip(at(bi, j, 1, h)).map(|(&a, &b)| a as f64 * b as f64).sum()).collect();
                        let max = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        sc.iter().map(|v| (v - max).exp()).collect()
                    }
                };
                let total: f64 = w.iter().sum();
                for e in 0..d {
                    let v: f64 = keys.iter().zip(&w).map(|(&j, &w)| w * at(bi, j, 2, h)[e] as f64).sum();
                    ctx[(bi * t + i) * c + h * d + e] = (v / total) as f32;
                }
            }
        }
    }
    ctx
}
