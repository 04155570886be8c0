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

/// Inverted dropout with a caller-owned, seeded RNG (candle's CPU RNG cannot be seeded). `None` = eval mode.
/// One draw from `rng` seeds a SplitMix64 stream for the mask: a BERT step needs ~30M draws, too many for StdRng.
pub fn dropout(x: &Tensor, p: f32, rng: Option<&mut rand::rngs::StdRng>) -> Result<Tensor> {
    let Some(rng) = rng else { return Ok(x.clone()) };
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let scale = 1.0 / (1.0 - p);
    let threshold = (p as f64 * 4_294_967_296.0) as u64; // keep when the low 32 bits are >= p * 2^32
    let mut state: u64 = rng.random();
    let keep: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            if (z ^ (z >> 31)) & 0xffff_ffff < threshold { 0.0 } else { scale }
        })
        .collect();
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
