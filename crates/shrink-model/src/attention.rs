//! Q, K, V, attention output (`Part::Query` .. `Part::AttnNorm`): multi-head self-attention, output projection,
//! residual, LayerNorm.

use anyhow::Result;
use candle_core::Tensor;
use rand::rngs::StdRng;

use shrink_format::arch::{self, Part};

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
        let drop = ops::drop_mask(self.probs_dropout, rng.as_deref_mut());
        let mut ctx = fused::attention(&q, &k, &v, bias, 1.0 / (d as f64).sqrt(), drop)?; // (B, H, T, D)
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
