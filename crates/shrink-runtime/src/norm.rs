//! LayerNorm over the hidden width, in place.

use anyhow::Result;
use shrink_format::TensorFile;
use shrink_kernels::activation::layer_norm_rows;
use shrink_kernels::ROWS_PER_TASK;


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

    /// x: (M, C), normalised row by row; large batches on all the pool's threads.
    pub fn forward(&self, x: &mut [f32]) {
        let c = self.weight.len();
        let tasks = rayon::current_num_threads().min(x.len() / c / ROWS_PER_TASK).max(1);
        if tasks == 1 {
            return layer_norm_rows(x, &self.weight, &self.bias, self.eps);
        }
        use rayon::prelude::*;
        let rows = (x.len() / c).div_ceil(tasks);
        x.par_chunks_mut(rows * c).for_each(|x| layer_norm_rows(x, &self.weight, &self.bias, self.eps));
    }
}
