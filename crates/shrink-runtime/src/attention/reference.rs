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

/// Hedgehog maps as plain arrays: W (H, D in, D out) and b (H, D), for Q then K.
pub(super) struct Maps<'a> {
    pub w: [&'a [f32]; 2],
    pub b: [&'a [f32]; 2],
}

/// φ of one head's row `x` of `side` (0: Q, 1: K): elu + 1, or [softmax(y), softmax(-y)] with y = x·W_h + b_h.
fn phi(x: &[f32], maps: Option<&Maps>, side: usize, h: usize) -> Vec<f64> {
    let d = x.len();
    let Some(m) = maps else { return x.iter().map(|&v| if v > 0.0 { v as f64 + 1.0 } else { (v as f64).exp() }).collect() };
    let y: Vec<f64> = (0..d).map(|f| m.b[side][h * d + f] as f64 + (0..d).map(|e| x[e] as f64 * m.w[side][(h * d + e) * d + f] as f64).sum::<f64>()).collect();
    let softmax = |sign: f64| -> Vec<f64> {
        let e: Vec<f64> = y.iter().map(|v| (sign * v).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    };
    [softmax(1.0), softmax(-1.0)].concat()
}

/// ctx (B*T, H*D) from qkv (B*T, 3·H·D) as `attention` takes it; `real` (B*T): false for padding keys; `maps`: a
/// Hedgehog layer's feature maps.
pub(super) fn attention(qkv: &[f32], real: &[bool], s: &Shape, kind: Kind, maps: Option<&Maps>) -> Vec<f32> {
    let (t, d, c) = (s.t, s.d, s.h * s.d);
    let mut ctx = vec![0f32; s.b * t * c];
    let at = |bi: usize, i: usize, part: usize, h: usize| &qkv[(bi * t + i) * 3 * c + part * c + h * d..][..d];
    for bi in 0..s.b {
        for h in 0..s.h {
            for i in 0..t {
                let keys: Vec<usize> = (0..t).filter(|&j| real[bi * t + j] && sees(kind, i, j)).collect();
                // A weight per visible key: softmax of the scores, or φ(q)·φ(k) (normalised below either way).
                let w: Vec<f64> = match kind {
                    Kind::Linear { .. } => {
                        let q = phi(at(bi, i, 0, h), maps, 0, h);
                        keys.iter().map(|&j| q.iter().zip(phi(at(bi, j, 1, h), maps, 1, h)).map(|(a, b)| a * b).sum()).collect()
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
