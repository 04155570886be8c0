//! `nn.Linear`: y = x W^T + b, W stored (out, in) as in the checkpoint.

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Result};
use candle_core::Tensor;
use shrink_format::arch::{self, Part};

use crate::checkpoint::Weights;
use crate::config::Config;
use crate::params::ParamVisitor;

#[derive(Clone)]
pub struct Linear {
    pub weight: Tensor, // (O, I)
    pub bias: Tensor,   // (O,)
    /// Fake quantization of the input, set only on a QAT view (`shrink qat --activations static`).
    pub input_quant: Option<InputQuant>,
}

/// Where a training forward records the (min, max) of a Linear's input.
pub type SeenRange = Arc<Mutex<Option<(f32, f32)>>>;

/// The input's static u8 grid (the runtime's `int8-static`: scale, zero point in 0..=255) and, while training,
/// where the batch's (min, max) is recorded for the moving average of the range.
#[derive(Clone, Debug)]
pub struct InputQuant {
    pub scale: f32,
    pub zero: i32,
    pub seen: Option<SeenRange>,
}

impl Linear {
    pub fn load(w: &mut Weights, prefix: &str, out_dim: usize, in_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.take(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
            bias: w.take(&format!("{prefix}.bias"), &[out_dim])?,
            input_quant: None,
        })
    }

    /// Layer `l`'s Linear `part` by its canonical name, with the shape that layer's widths give.
    pub fn load_part(w: &mut Weights, cfg: &Config, l: usize, part: Part) -> Result<Self> {
        let (n, k) = cfg.linear_shape(l, part).ok_or_else(|| anyhow!("{part:?} is not a Linear"))?;
        Self::load(w, &arch::layer(l, part), n, k)
    }

    /// x: (..., I) -> (..., O)
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.input_quant {
            None => crate::fused::linear(x, &self.weight, &self.bias),
            Some(q) => {
                let xq = crate::fused::fake_quant_u8(x, q.scale, q.zero, q.seen.as_deref())?; // (..., I)
                crate::fused::linear(&xq, &self.weight, &self.bias)
            }
        }
    }

    pub fn visit(&mut self, prefix: &str, f: &mut ParamVisitor) {
        f(&format!("{prefix}.weight"), &mut self.weight);
        f(&format!("{prefix}.bias"), &mut self.bias);
    }
}
