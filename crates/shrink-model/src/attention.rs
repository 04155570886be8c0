//! Q, K, V, attention output (`Part::Query` .. `Part::AttnNorm`): multi-head self-attention, output projection,
//! residual, LayerNorm.

use anyhow::Result;
use candle_core::Tensor;
use rand::rngs::StdRng;

use shrink_format::arch::{self, Part, Side};
use shrink_format::schema::{Attention as Kind, FeatureMap};

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
    /// Hedgehog's learned maps of Q and K, in layers whose kind names them.
    pub feature_maps: Option<[FeatureMapWeights; 2]>,
    probs_dropout: f32,
    hidden_dropout: f32,
}

impl Attention {
    /// Layer `l`'s attention, with that layer's head count.
    pub fn load(w: &mut Weights, cfg: &Config, l: usize) -> Result<Self> {
        let lin = |w: &mut Weights, p| Linear::load_part(w, cfg, l, p);
        let (heads, d) = (cfg.heads(l), cfg.head_dim());
        let feature_maps = match cfg.attention(l) {
            Kind::Linear { feature_map: FeatureMap::Hedgehog } => {
                let load = |w: &mut Weights, side| FeatureMapWeights::load(w, &arch::feature_map(l, side), heads, d);
                Some([load(w, Side::Query)?, load(w, Side::Key)?])
            }
            _ => None,
        };
        Ok(Self {
            query: lin(w, Part::Query)?,
            key: lin(w, Part::Key)?,
            value: lin(w, Part::Value)?,
            output: lin(w, Part::AttnOut)?,
            layer_norm: LayerNorm::load(w, &arch::layer(l, Part::AttnNorm), cfg.hidden_size, cfg.layer_norm_eps)?,
            head_mask: None,
            heads,
            head_dim: d,
            kind: cfg.attention(l),
            feature_maps,
            probs_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    /// x: (B, T, C), bias: (B, T) additive mask -> (B, T, C)
    pub fn forward(&self, x: &Tensor, bias: &Tensor, mut rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (q, k, v) = self.heads_of(x)?;
        let mut ctx = self.context(&q, &k, &v, bias, rng.as_deref_mut())?; // (B, H, T, D)
        if let Some(m) = &self.head_mask {
            ctx = ctx.broadcast_mul(&m.reshape((1, self.heads, 1, 1))?)?; // (B, H, T, D)
        }
        let ctx = ctx.transpose(1, 2)?.reshape((b, t, self.heads * self.head_dim))?; // (B, T, A)
        let drop = ops::drop_mask(self.hidden_dropout, rng);
        self.layer_norm.forward(&self.output.forward(&ctx)?, x, drop)
    }

    /// Q, K and V of x (B, T, C), split into heads: 3 x (B, H, T, D)
    pub fn heads_of(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor| y.reshape((b, t, self.heads, self.head_dim))?.transpose(1, 2)?.contiguous(); // (B, H, T, D)
        Ok((split(self.query.forward(x)?)?, split(self.key.forward(x)?)?, split(self.value.forward(x)?)?))
    }

    /// This layer's attention of its kind (before the output projection). q, k, v: (B, H, T, D), bias: (B, T) ->
    /// (B, H, T, D)
    pub fn context(&self, q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, mut rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        match self.kind {
            Kind::Full => fused::attention(q, k, v, bias, scale, ops::drop_mask(self.probs_dropout, rng.as_deref_mut()), None),
            Kind::Sliding { window, global } => {
                let drop = ops::drop_mask(self.probs_dropout, rng.as_deref_mut());
                fused::attention(q, k, v, bias, scale, drop, Some(fused::Band { window, global }))
            }
            // No T x T probabilities to drop out.
            Kind::Linear { .. } => {
                let (fq, fk) = match &self.feature_maps {
                    Some([mq, mk]) => (mq.forward(q)?, mk.forward(k)?), // (B, H, T, 2D)
                    None => (elu_plus_one(q)?, elu_plus_one(k)?),       // (B, H, T, D)
                };
                linear_attention(&fq, &fk, v, bias)
            }
        }
    }

    pub fn visit(&mut self, l: usize, f: &mut ParamVisitor) {
        self.query.visit(&arch::layer(l, Part::Query), f);
        self.key.visit(&arch::layer(l, Part::Key), f);
        self.value.visit(&arch::layer(l, Part::Value), f);
        self.output.visit(&arch::layer(l, Part::AttnOut), f);
        self.layer_norm.visit(&arch::layer(l, Part::AttnNorm), f);
        for (m, side) in self.feature_maps.iter_mut().flatten().zip(Side::ALL) {
            let path = arch::feature_map(l, side);
            f(&format!("{path}.weight"), &mut m.weight);
            f(&format!("{path}.bias"), &mut m.bias);
        }
    }
}

/// One Hedgehog feature map (`FeatureMap::Hedgehog`) of every head of a layer.
#[derive(Clone)]
pub struct FeatureMapWeights {
    pub weight: Tensor, // (H, D, D): y = x·W_h
    pub bias: Tensor,   // (H, D)
}

impl FeatureMapWeights {
    fn load(w: &mut Weights, path: &str, h: usize, d: usize) -> Result<Self> {
        Ok(Self { weight: w.take(&format!("{path}.weight"), &[h, d, d])?, bias: w.take(&format!("{path}.bias"), &[h, d])? })
    }

    /// W = I, b = 0: where conversion starts, so φ(x) = [softmax(x), softmax(-x)].
    pub fn identity(h: usize, d: usize) -> candle_core::Result<Self> {
        let dev = &candle_core::Device::Cpu;
        let eye = Tensor::eye(d, candle_core::DType::F32, dev)?;
        Ok(Self { weight: eye.unsqueeze(0)?.repeat((h, 1, 1))?, bias: Tensor::zeros((h, d), candle_core::DType::F32, dev)? })
    }

    /// [softmax(y), softmax(-y)] with y = x·W_h + b_h, over each head's features. x: (B, H, T, D) -> (B, H, T, 2D)
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (h, d) = self.bias.dims2()?;
        let y = x.broadcast_matmul(&self.weight.unsqueeze(0)?)?.broadcast_add(&self.bias.reshape((1, h, 1, d))?)?; // (B, H, T, D)
        Tensor::cat(&[ops::softmax(&y)?, ops::softmax(&y.neg()?)?], 3)
    }
}

/// elu(x) + 1 = relu(x) + exp(min(x, 0)), from basic ops.
pub fn elu_plus_one(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + x.minimum(0f32)?.exp()?
}

/// Linear attention from basic ops, each with its backward: ctx_i = φ(q_i)·Σ_j φ(k_j)ᵀv_j / φ(q_i)·Σ_j φ(k_j) over
/// the real keys, given the features φ(Q), φ(K) of unscaled Q and K (the runtime's `linear` kernel computes the
/// same). fq, fk: (B, H, T, F), v: (B, H, T, D), bias: (B, T) -> (B, H, T, D)
pub fn linear_attention(fq: &Tensor, fk: &Tensor, v: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    let (b, _, t, _) = fq.dims4()?;
    let keep = bias.affine(-1.0 / crate::embeddings::MASKED as f64, 1.0)?.reshape((b, 1, t, 1))?; // 1 real, 0 padding
    let fk = fk.broadcast_mul(&keep)?; // (B, H, T, F)
    let s = fk.t()?.matmul(&v.contiguous()?)?; // (B, H, F, D)
    let z = fk.sum_keepdim(2)?; // (B, H, 1, F)
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

    /// φ of one head's D values in f64: elu + 1, or Hedgehog's [softmax(y), softmax(-y)], y = x·W_h + b_h with
    /// `w` (H, D, D) and `bias` (H, D) flattened.
    fn phi_ref(x: &[f32], head: usize, maps: Option<(&[f32], &[f32])>) -> Vec<f64> {
        let d = x.len();
        let Some((w, bias)) = maps else {
            return x.iter().map(|&v| if v > 0.0 { v as f64 + 1.0 } else { (v as f64).exp() }).collect();
        };
        let y: Vec<f64> = (0..d).map(|f| bias[head * d + f] as f64 + (0..d).map(|e| x[e] as f64 * w[(head * d + e) * d + f] as f64).sum::<f64>()).collect();
        let softmax = |sign: f64| {
            let e: Vec<f64> = y.iter().map(|v| (sign * v).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / sum)
        };
        softmax(1.0).chain(softmax(-1.0)).collect()
    }

    /// Linear attention with each feature map (Hedgehog's at random weights, not the identity) against an f64
    /// loop; gradients of Q, K, V and the maps' weights against central differences of that loop.
    #[test]
    fn linear_attention_matches_a_loop_and_its_gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let (b, h, t, d) = (2, 2, 6, 4);
        let var = |seed: f32, shape: &[usize]| {
            let n = shape.iter().product::<usize>();
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + seed).sin() * 1.5).collect();
            Var::from_tensor(&Tensor::from_vec(x, shape, &dev).unwrap()).unwrap()
        };
        let get = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &dev).unwrap();
        let bias = crate::embeddings::mask_bias(&mask).unwrap();
        let mv = get(&mask.to_dtype(candle_core::DType::F32).unwrap());
        for hedgehog in [false, true] {
            let (q, k, v) = (var(0.1, &[b, h, t, d]), var(1.3, &[b, h, t, d]), var(2.9, &[b, h, t, d]));
            // Inputs 0-2: Q, K, V; 3-6: W and b of the Q map, then of the K map.
            let mut inputs = vec![q.clone(), k.clone(), v.clone()];
            if hedgehog {
                inputs.extend([var(0.7, &[h, d, d]), var(4.1, &[h, d]), var(5.3, &[h, d, d]), var(-2.0, &[h, d])]);
            }
            let map = |i: usize| FeatureMapWeights { weight: inputs[i].as_tensor().clone(), bias: inputs[i + 1].as_tensor().clone() };
            let (fq, fk) = match hedgehog {
                true => (map(3).forward(&q).unwrap(), map(5).forward(&k).unwrap()),
                false => (elu_plus_one(&q).unwrap(), elu_plus_one(&k).unwrap()),
            };
            let out = linear_attention(&fq, &fk, &v, &bias).unwrap();
            let values: Vec<Vec<f32>> = inputs.iter().map(|x| get(x.as_tensor())).collect();
            let ov = get(&out);
            let row = |x: &[f32], bh: usize, i: usize| x[(bh * t + i) * d..][..d].to_vec();
            let reference = |xs: &[Vec<f32>], bh: usize, i: usize, e: usize| {
                let maps = |m: usize| hedgehog.then(|| (xs[m].as_slice(), xs[m + 1].as_slice()));
                let keys: Vec<usize> = (0..t).filter(|&j| mv[bh / h * t + j] == 1.0).collect();
                let fq = phi_ref(&row(&xs[0], bh, i), bh % h, maps(3));
                let w: Vec<f64> = keys.iter().map(|&j| fq.iter().zip(phi_ref(&row(&xs[1], bh, j), bh % h, maps(5))).map(|(a, b)| a * b).sum()).collect();
                keys.iter().zip(&w).map(|(&j, w)| w * xs[2][(bh * t + j) * d + e] as f64).sum::<f64>() / w.iter().sum::<f64>()
            };
            let cells = || (0..b * h).flat_map(|bh| (0..t).flat_map(move |i| (0..d).map(move |e| (bh, i, e))));
            for (bh, i, e) in cells() {
                let want = reference(&values, bh, i, e);
                assert!((ov[(bh * t + i) * d + e] as f64 - want).abs() <= VALUE_TOL, "hedgehog {hedgehog} ({bh},{i},{e})");
            }
            // d(sum of out · up)/dx against central differences of the f64 loop, at a few entries of each input.
            let up: Vec<f32> = (0..ov.len()).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
            let loss = |xs: &[Vec<f32>]| -> f64 { cells().map(|(bh, i, e)| reference(xs, bh, i, e) * up[(bh * t + i) * d + e] as f64).sum() };
            let grads = (out * Tensor::from_vec(up.clone(), (b, h, t, d), &dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
            for (which, x) in inputs.iter().enumerate() {
                let g = get(grads.get(x).expect("a gradient"));
                for idx in [0, 5, 17, 45, 70, 90].into_iter().filter(|&i| i < g.len()) {
                    let bump = |delta: f32| {
                        let mut xs = values.clone();
                        xs[which][idx] += delta;
                        loss(&xs)
                    };
                    let numeric = (bump(1e-2) - bump(-1e-2)) / 2e-2;
                    let tol = GRAD_REL_TOL * (1.0 + numeric.abs());
                    assert!((g[idx] as f64 - numeric).abs() <= tol, "hedgehog {hedgehog}, input {which}[{idx}]: {} vs {numeric}", g[idx]);
                }
            }
        }
    }

    #[test]
    fn the_identity_hedgehog_map_is_two_softmaxes() {
        let x = Tensor::new(&[[[[1.0f32, -2.0, 0.5]]]], &Device::Cpu).unwrap(); // (1, 1, 1, 3)
        let got = get_all(&FeatureMapWeights::identity(1, 3).unwrap().forward(&x).unwrap());
        let want = phi_ref(&[1.0, -2.0, 0.5], 0, Some((&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0], &[0.0; 3])));
        assert_eq!(got.len(), 6);
        assert!(got.iter().zip(&want).all(|(a, b)| (*a as f64 - b).abs() < 1e-6), "{got:?} vs {want:?}");
    }

    fn get_all(x: &Tensor) -> Vec<f32> {
        x.flatten_all().unwrap().to_vec1().unwrap()
    }
}
