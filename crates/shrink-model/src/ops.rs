//! Differentiable building blocks made of candle's basic ops only (candle's own `softmax_last_dim` and `layer_norm`
//! have no backward and would silently cut the gradient). `softmax` and `layer_norm` are the references that the
//! faster `fused` ops are tested against.

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

/// A dropout mask as a pure function of (seed, element index), so fused ops can regenerate it in backward instead
/// of storing it, and fill it in parallel.
#[derive(Debug, Clone, Copy)]
pub struct DropMask {
    pub seed: u64,
    /// Drop when the hash's low 32 bits fall below p * 2^32.
    threshold: u64,
    /// 1 / (1 - p): kept values are scaled so the expectation is unchanged.
    pub scale: f32,
}

impl DropMask {
    /// `None` when dropout is off (eval mode or p = 0). One draw from `rng` seeds the whole mask.
    pub fn new(p: f32, rng: Option<&mut rand::rngs::StdRng>) -> Option<Self> {
        let rng = rng.filter(|_| p > 0.0)?;
        Some(Self { seed: rng.random(), threshold: (p as f64 * 4_294_967_296.0) as u64, scale: 1.0 / (1.0 - p) })
    }

    /// The multiplier of element `i`: 0 or 1 / (1 - p). SplitMix64 of seed + i.
    #[inline(always)]
    pub fn factor(&self, i: usize) -> f32 {
        let mut z = self.seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        if (z ^ (z >> 31)) & 0xffff_ffff < self.threshold { 0.0 } else { self.scale }
    }
}

/// Inverted dropout with a caller-owned, seeded RNG (candle's CPU RNG cannot be seeded). `None` = eval mode.
pub fn dropout(x: &Tensor, p: f32, rng: Option<&mut rand::rngs::StdRng>) -> Result<Tensor> {
    let Some(mask) = DropMask::new(p, rng) else { return Ok(x.clone()) };
    use rayon::prelude::*;
    let keep: Vec<f32> = (0..x.elem_count()).into_par_iter().map(|i| mask.factor(i)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn dropout_keeps_about_1_minus_p_scaled_and_is_seeded() {
        let x = Tensor::ones(100_000, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let run = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            dropout(&x, 0.1, Some(&mut rng)).unwrap().to_vec1::<f32>().unwrap()
        };
        let y = run(7);
        let kept = y.iter().filter(|&&v| v > 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.9).abs() < 0.005, "kept {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        assert_eq!(y, run(7));
        assert_ne!(y, run(8));
        assert_eq!(dropout(&x, 0.1, None).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 100_000]);
    }
}
