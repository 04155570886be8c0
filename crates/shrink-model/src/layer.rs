//! Encoder layer l: attention block, then the FFN (`Part::FfnIn` + GELU, `Part::FfnOut`, residual, LayerNorm).

use anyhow::Result;
use candle_core::Tensor;
use rand::rngs::StdRng;

use shrink_format::arch::{self, Part};

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
        Ok(Self {
            attention: Attention::load(w, cfg, l)?,
            intermediate: Linear::load_part(w, cfg, l, Part::FfnIn)?,
            output: Linear::load_part(w, cfg, l, Part::FfnOut)?,
            layer_norm: LayerNorm::load(w, &arch::layer(l, Part::OutNorm), cfg.hidden_size, cfg.layer_norm_eps)?,
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
        self.attention.visit(l, f);
        self.intermediate.visit(&arch::layer(l, Part::FfnIn), f);
        self.output.visit(&arch::layer(l, Part::FfnOut), f);
        self.layer_norm.visit(&arch::layer(l, Part::OutNorm), f);
    }
}
