//! `encoder.layer.{l}`: attention block, then the FFN (intermediate GELU, output projection, residual, LayerNorm).

use anyhow::Result;
use candle_core::Tensor;
use rand::rngs::StdRng;

use crate::attention::Attention;
use crate::checkpoint::Weights;
use crate::config::Config;
use crate::layer_norm::LayerNorm;
use crate::linear::Linear;
use crate::{fused, ops};
use crate::params::ParamVisitor;

#[derive(Clone)]
pub struct Layer {
    pub attention: Attention,
    pub intermediate: Linear, // (F, C)
    pub output: Linear,       // (C, F)
    pub layer_norm: LayerNorm,
    hidden_dropout: f32,
}

impl Layer {
    pub fn load(w: &mut Weights, l: usize, cfg: &Config) -> Result<Self> {
        let p = format!("encoder.layer.{l}");
        let (c, f) = (cfg.hidden_size, cfg.ffn(l));
        Ok(Self {
            attention: Attention::load(w, &format!("{p}.attention"), cfg, l)?,
            intermediate: Linear::load(w, &format!("{p}.intermediate.dense"), f, c)?,
            output: Linear::load(w, &format!("{p}.output.dense"), c, f)?,
            layer_norm: LayerNorm::load(w, &format!("{p}.output.LayerNorm"), c, cfg.layer_norm_eps)?,
            hidden_dropout: cfg.hidden_dropout_prob,
        })
    }

    /// x: (B, T, C) -> (B, T, C)
    pub fn forward(&self, x: &Tensor, bias: &Tensor, mut rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
        let a = self.attention.forward(x, bias, rng.as_deref_mut())?; // (B, T, C)
        let hmid = fused::gelu(&self.intermediate.forward(&a)?)?; // (B, T, F)
        let drop = ops::drop_mask(self.hidden_dropout, rng);
        self.layer_norm.forward(&self.output.forward(&hmid)?, &a, drop)
    }

    pub fn visit(&mut self, l: usize, f: &mut ParamVisitor) {
        let p = format!("encoder.layer.{l}");
        self.attention.visit(&format!("{p}.attention"), f);
        self.intermediate.visit(&format!("{p}.intermediate.dense"), f);
        self.output.visit(&format!("{p}.output.dense"), f);
        self.layer_norm.visit(&format!("{p}.output.LayerNorm"), f);
    }
}
