//! Q, K, V, attention output (`Part::Query` .. `Part::AttnNorm`): multi-head self-attention, output projection,
//! residual, LayerNorm.

use anyhow::Result;
use candle_core::Tensor;
use rand::rngs::StdRng;

use shrink_format::arch::{self, Part};
use shrink_format::schema::Attention as Kind;

use crate::checkpoint::Weights;
use crate::config::Config;
use crate::layer_norm::LayerNorm;
use crate::linear::Linear;
use crate::{fused, ops};
use crate::params::ParamVisitor;

#[derive(Clone)]
pub struct Attention {
    pub query: Linear,      // (A, C), A = H·D
    pub key: Linear,        // (A, C)
    pub value: Linear,      // (A, C)
    pub output: Linear,     // (C, A)
    pub layer_norm: LayerNorm,
    /// Multiplies each head's context (H), set only while scoring heads: its gradient is Michel et al.'s importance.
    pub head_mask: Option<Tensor>,
    pub heads: usize,
    pub head_dim: usize,
    /// Which attention this layer computes (config.json `shrink_attention`).
    pub kind: Kind,
    probs_dropout: f32,
    hidden_dropout: f32,
}

impl Attention {
    /// Layer `l`'s attention, with that layer's head count.
    pub fn load(w: &mut Weights, cfg: &Config, l: usize) -> Result<Self> {
        let lin = |w: &mut Weights, p| Linear::load_part(w, cfg, l, p);
        Ok(Self {
            query: lin(w, Part::Query)?,
            key: lin(w, Part::Key)?,
            value: lin(w, Part::Value)?,
            output: lin(w, Part::AttnOut)?,
            layer_norm: LayerNorm::load(w, &arch::layer(l, Part::AttnNorm), cfg.hidden_size, cfg.layer_norm_eps)?,
            head_mask: None,
            heads: cfg.heads(l),
            head_dim: cfg.head_dim(),
            kind: cfg.attention(l),
            probs_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    /// x: (B, T, C), bias: (B, T) additive mask -> (B, T, C)
    pub fn forward(&self, x: &Tensor, bias: &Tensor, mut rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, d) = (self.heads, self.head_dim);
        let split = |y: Tensor| y.reshape((b, t, h, d))?.transpose(1, 2)?.contiguous(); // (B, H, T, D)
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let scale = 1.0 / (d as f64).sqrt();
        let mut ctx = match self.kind {
            Kind::Full => fused::attention(&q, &k, &v, bias, scale, ops::drop_mask(self.probs_dropout, rng.as_deref_mut()), None)?,
            Kind::Sliding { window, global } => {
                let drop = ops::drop_mask(self.probs_dropout, rng.as_deref_mut());
                fused::attention(&q, &k, &v, bias, scale, drop, Some(fused::Band { window, global }))?
            }
            // No T x T probabilities to drop out.
            Kind::Linear { .. } => linear_attention(&q, &k, &v, bias)?,
        }; // (B, H, T, D)
        if let Some(m) = &self.head_mask {
            ctx = ctx.broadcast_mul(&m.reshape((1, h, 1, 1))?)?; // (B, H, T, D)
        }
        let ctx = ctx.transpose(1, 2)?.reshape((b, t, h * d))?; // (B, T, A)
        let drop = ops::drop_mask(self.hidden_dropout, rng);
        self.layer_norm.forward(&self.output.forward(&ctx)?, x, drop)
    }

    pub fn visit(&mut self, l: usize, f: &mut ParamVisitor) {
        self.query.visit(&arch::layer(l, Part::Query), f);
        self.key.visit(&arch::layer(l, Part::Key), f);
        self.value.visit(&arch::layer(l, Part::Value), f);
        self.output.visit(&arch::layer(l, Part::AttnOut), f);
        self.layer_norm.visit(&arch::layer(l, Part::AttnNorm), f);
    }
}

/// Linear attention from basic ops, each with its backward: ctx_i = φ(q_i)·Σ_j φ(k_j)ᵀv_j / φ(q_i)·Σ_j φ(k_j) over
/// the real keys, φ = elu + 1 = relu(x) + exp(min(x, 0)), Q unscaled (the runtime's `linear` kernel computes the
/// same). q, k, v: (B, H, T, D), bias: (B, T) -> (B, H, T, D)
pub fn linear_attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    let (b, _, t, _) = q.dims4()?;
    let phi = |x: &Tensor| x.relu()? + x.minimum(0f32)?.exp()?;
    let keep = bias.affine(-1.0 / crate::embeddings::MASKED as f64, 1.0)?.reshape((b, 1, t, 1))?; // 1 real, 0 padding
    let (fq, fk) = (phi(q)?, phi(k)?.broadcast_mul(&keep)?); // (B, H, T, D)
    let s = fk.t()?.matmul(&v.contiguous()?)?; // (B, H, D, D)
    let z = fk.sum_keepdim(2)?; // (B, H, 1, D)
    let num = fq.matmul(&s)?; // (B, H, T, D)
    let den = fq.broadcast_mul(&z)?.sum_keepdim(3)?; // (B, H, T, 1)
    num.broadcast_div(&den)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// f32 ops against an f64 loop, and gradients against central differences at step 1e-2.
    const VALUE_TOL: f64 = 1e-5;
    const GRAD_REL_TOL: f64 = 2e-2;

    #[test]
    fn linear_attention_matches_a_loop_and_its_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let (b, h, t, d) = (2, 2, 6, 4);
        let var = |seed: f32| {
            let x: Vec<f32> = (0..b * h * t * d).map(|i| (i as f32 * 0.37 + seed).sin() * 1.5).collect();
            Var::from_tensor(&Tensor::from_vec(x, (b, h, t, d), &dev).unwrap()).unwrap()
        };
        let (q, k, v) = (var(0.1), var(1.3), var(2.9));
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &dev).unwrap();
        let bias = crate::embeddings::mask_bias(&mask).unwrap();
        let out = linear_attention(&q, &k, &v, &bias).unwrap();
        let get = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (qv, kv, vv, ov, mv) = (get(&q), get(&k), get(&v), get(&out), mask.flatten_all().unwrap().to_vec1::<u32>().unwrap());
        let phi = |x: f32| if x > 0.0 { x as f64 + 1.0 } else { (x as f64).exp() };
        let at = |x: &[f32], bh: usize, i: usize, e: usize| x[(bh * t + i) * d + e];
        let reference = |qv: &[f32], kv: &[f32], vv: &[f32], bh: usize, i: usize, e: usize| {
            let keys: Vec<usize> = (0..t).filter(|&j| mv[bh / h * t + j] == 1).collect();
            let w: Vec<f64> = keys.iter().map(|&j| (0..d).map(|f| phi(at(qv, bh, i, f)) * phi(at(kv, bh, j, f))).sum()).collect();
            keys.iter().zip(&w).map(|(&j, w)| w * at(vv, bh, j, e) as f64).sum::<f64>() / w.iter().sum::<f64>()
        };
        for bh in 0..b * h {
            for i in 0..t {
                for e in 0..d {
                    let want = reference(&qv, &kv, &vv, bh, i, e);
                    assert!((at(&ov, bh, i, e) as f64 - want).abs() <= VALUE_TOL, "({bh},{i},{e})");
                }
            }
        }
        // d(sum of out · up)/dx against central differences of the f64 loop, at a few entries of each input.
        let up: Vec<f32> = (0..ov.len()).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
        let loss = |qv: &[f32], kv: &[f32], vv: &[f32]| -> f64 {
            (0..b * h).flat_map(|bh| (0..t).flat_map(move |i| (0..d).map(move |e| (bh, i, e)))).map(|(bh, i, e)| reference(qv, kv, vv, bh, i, e) * up[(bh * t + i) * d + e] as f64).sum()
        };
        let grads = (out * Tensor::from_vec(up.clone(), (b, h, t, d), &dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        for (which, x) in [(0, &q), (1, &k), (2, &v)] {
            let g = get(grads.get(x).expect("a gradient"));
            for idx in [0, 17, 45, 70, 90] {
                let bump = |delta: f32| {
                    let mut xs = [qv.clone(), kv.clone(), vv.clone()];
                    xs[which][idx] += delta;
                    loss(&xs[0], &xs[1], &xs[2])
                };
                let numeric = (bump(1e-2) - bump(-1e-2)) / 2e-2;
                assert!((g[idx] as f64 - numeric).abs() <= GRAD_REL_TOL * (1.0 + numeric.abs()), "input {which}[{idx}]: {} vs {numeric}", g[idx]);
            }
        }
    }
}
