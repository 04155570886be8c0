//! LayerNorm over the hidden width, in place.

use anyhow::Result;
use shrink_format::TensorFile;
use shrink_kernels::activation::layer_norm_rows;

pub struct LayerNorm {
    weight: Vec<f32>, // C
    bias: Vec<f32>,   // C
    eps: f32,
}

impl LayerNorm {
    pub fn load(file: &TensorFile, prefix: &str, c: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: file.f32(&format!("{prefix}.weight"), &[c])?.into_owned(),
            bias: file.f32(&format!("{prefix}.bias"), &[c])?.into_owned(),
            eps: eps as f32,
        })
    }

    /// x: (M, C), normalised row by row.
    pub fn forward(&self, x: &mut [f32]) {
        layer_norm_rows(x, &self.weight, &self.bias, self.eps);
    }
}
