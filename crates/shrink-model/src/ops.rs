//! Differentiable building blocks made of candle's basic ops only: candle's fused `softmax_last_dim` and
//! `layer_norm` have no backward and would silently cut the gradient.

use candle_core::{Result, Tensor, D};
use rand::Rng;

/// Softmax over the last dimension; the max is detached, which leaves the gradient unchanged.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// LayerNorm over the last dimension (biased variance, as PyTorch).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xn.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Inverted dropout with a caller-owned, seeded RNG (candle's CPU RNG cannot be seeded). `None` = eval mode.
pub fn dropout(x: &Tensor, p: f32, rng: Option<&mut rand::rngs::StdRng>) -> Result<Tensor> {
    let Some(rng) = rng else { return Ok(x.clone()) };
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let scale = 1.0 / (1.0 - p);
    let keep: Vec<f32> = (0..x.elem_count()).map(|_| if rng.random::<f32>() < p { 0.0 } else { scale }).collect();
    x.mul(&Tensor::from_vec(keep, x.shape(), x.device())?)
}

/// Mean cross-entropy of logits (B, L) against class indices (B,) u32.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?; // (B, L)
    let log_probs = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?; // (B, L)
    let picked = log_probs.gather(&labels.unsqueeze(1)?, 1)?; // (B, 1)
    picked.mean_all()?.neg()
}
