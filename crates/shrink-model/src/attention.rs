//! `attention.self` + `attention.output`: multi-head self-attention, output projection, residual, LayerNorm.

use anyhow::Result;
use candle_core::Tensor;
use rand::rngs::StdRng;

use crate::checkpoint::Weights;
use crate::config::Config;
use crate::layer_norm::LayerNorm;
use crate::linear::Linear;
use crate::{fused, ops};
use crate::params::ParamVisitor;

#[derive(Clone)]
pub struct Attention {
    pub query: Linear,      // (C, C)
    pub key: Linear,        // (C, C)
    pub value: Linear,      // (C, C)
    pub output: Linear,     // (C, C)
    pub layer_norm: LayerNorm,
    heads: usize,
    probs_dropout: f32,
    hidden_dropout: f32,
}

impl Attention {
    pub fn load(w: &mut Weights, prefix: &str, cfg: &Config) -> Result<Self> {
        let c = cfg.hidden_size;
        Ok(Self {
            query: Linear::load(w, &format!("{prefix}.self.query"), c, c)?,
            key: Linear::load(w, &format!("{prefix}.self.key"), c, c)?,
            value: Linear::load(w, &format!("{prefix}.self.value"), c, c)?,
            output: Linear::load(w, &format!("{prefix}.output.dense"), c, c)?,
            layer_norm: LayerNorm::load(w, &format!("{prefix}.output.LayerNorm"), c, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            probs_dropout: cfg.attention_probs_dropout_prob,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    /// x: (B, T, C), bias: (B, T) additive mask -> (B, T, C)
    pub fn forward(&self, x: &Tensor, bias: &Tensor, mut rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let (h, d) = (self.heads, c / self.heads);
        let split = |y: Tensor| y.reshape((b, t, h, d))?.transpose(1, 2)?.contiguous(); // (B, H, T, D)
        let q = split(self.query.forward(x)?)?;
        let k = split(self.key.forward(x)?)?;
        let v = split(self.value.forward(x)?)?;
        let drop = ops::drop_mask(self.probs_dropout, rng.as_deref_mut());
        let ctx = fused::attention(&q, &k, &v, bias, 1.0 / (d as f64).sqrt(), drop)?; // (B, H, T, D)
        let ctx = ctx.transpose(1, 2)?.reshape((b, t, c))?; // (B, T, C)
        let drop = ops::drop_mask(self.hidden_dropout, rng);
        self.layer_norm.forward(&self.output.forward(&ctx)?, x, drop)
    }

    pub fn visit(&mut self, prefix: &str, f: &mut ParamVisitor) {
        self.query.visit(&format!("{prefix}.self.query"), f);
        self.key.visit(&format!("{prefix}.self.key"), f);
        self.value.visit(&format!("{prefix}.self.value"), f);
        self.output.visit(&format!("{prefix}.output.dense"), f);
        self.layer_norm.visit(&format!("{prefix}.output.LayerNorm"), f);
    }
}
