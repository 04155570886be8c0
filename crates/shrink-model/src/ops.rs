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

pub use shrink_kernels::dropout::Mask as DropMask;

/// The dropout mask of one call site: `None` when dropout is off (eval mode or p = 0). One draw from the caller's
/// seeded RNG seeds the whole mask (candle's CPU RNG cannot be seeded).
pub fn drop_mask(p: f32, rng: Option<&mut rand::rngs::StdRng>) -> Option<DropMask> {
    let rng = rng.filter(|_| p > 0.0)?;
    Some(DropMask::new(p, rng.random()))
}

/// Elements per parallel task when filling masks.
const MASK_CHUNK: usize = 1 << 14;

/// Inverted dropout; `rng: None` = eval mode.
pub fn dropout(x: &Tensor, p: f32, rng: Option<&mut rand::rngs::StdRng>) -> Result<Tensor> {
    use rayon::prelude::*;
    let Some(mask) = drop_mask(p, rng) else { return Ok(x.clone()) };
    let mut keep = vec![0f32; x.elem_count()];
    keep.par_chunks_mut(MASK_CHUNK).enumerate().for_each(|(k, c)| mask.fill(k * MASK_CHUNK, c));
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

/// Fake quantization on the static u8 grid from basic ops, the reference of `fused::fake_quant_u8`:
/// scale·(round(clamp(x / scale + zero, 0, 255)) − zero), gradient 1 inside the grid and 0 where it clips.
pub fn fake_quant_u8(x: &Tensor, scale: f32, zero: i32) -> Result<Tensor> {
    let v = x.affine(f64::from(1.0 / scale), f64::from(zero))?;
    let inside = v.ge(0.0)?.to_dtype(candle_core::DType::F32)?.mul(&v.le(255.0)?.to_dtype(candle_core::DType::F32)?)?;
    let q = v.clamp(0f32, 255f32)?.round()?.affine(f64::from(scale), -f64::from(scale) * f64::from(zero))?;
    let xm = x.mul(&inside)?;
    xm.add(&(q - &xm)?.detach())
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
