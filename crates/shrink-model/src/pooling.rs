//! Sentence pooling over the attention mask.

use candle_core::{DType, Result, Tensor, D};

/// h: (B, T, C), mask: (B, T) -> mean over real tokens (B, C)
pub fn mean_pool(h: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (B, T, 1)
    let sum = h.broadcast_mul(&m)?.sum(1)?; // (B, C)
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?; // (B, 1)
    sum.broadcast_div(&count)
}

/// x: (B, C) -> rows of unit length
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}
