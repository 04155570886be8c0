//! LayerNorm with checkpoint names `*.LayerNorm.weight/bias`.

use anyhow::Result;
use candle_core::Tensor;

use crate::checkpoint::Weights;
use crate::fused;
use crate::ops::DropMask;
use crate::params::ParamVisitor;

#[derive(Clone)]
pub struct LayerNorm {
    pub weight: Tensor, // (C,)
    pub bias: Tensor,   // (C,)
    pub eps: f64,
}

impl LayerNorm {
    pub fn load(w: &mut Weights, prefix: &str, c: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: w.take(&format!("{prefix}.weight"), &[c])?, bias: w.take(&format!("{prefix}.bias"), &[c])?, eps })
    }

    /// LayerNorm(dropout(y) + residual): the end of every post-norm block. (..., C)
    pub fn forward(&self, y: &Tensor, residual: &Tensor, drop: Option<DropMask>) -> candle_core::Result<Tensor> {
        fused::residual_layer_norm(y, residual, &self.weight, &self.bias, self.eps, drop)
    }

    pub fn visit(&mut self, prefix: &str, f: &mut ParamVisitor) {
        f(&format!("{prefix}.weight"), &mut self.weight);
        f(&format!("{prefix}.bias"), &mut self.bias);
    }
}
