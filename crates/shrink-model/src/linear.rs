//! `nn.Linear`: y = x W^T + b, W stored (out, in) as in the checkpoint.

use anyhow::Result;
use candle_core::Tensor;

use crate::checkpoint::Weights;
use crate::params::ParamVisitor;

#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor, // (O, I)
    pub bias: Tensor,   // (O,)
}

impl Linear {
    pub fn load(w: &mut Weights, prefix: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
            bias: w.take(&format!("{prefix}.bias"), &[out_dim])?,
        })
    }

    /// x: (..., I) -> (..., O)
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::fused::linear(x, &self.weight, &self.bias)
    }

    pub fn visit(&mut self, prefix: &str, f: &mut ParamVisitor) {
        f(&format!("{prefix}.weight"), &mut self.weight);
        f(&format!("{prefix}.bias"), &mut self.bias);
    }
}
