//! The distillation losses, from candle's basic ops (every one has a backward).

use candle_core::{DType, Result, Tensor, D};
use shrink_model::pooling;

/// log softmax over the last dimension; the max is detached (the gradient is unchanged). (B, L)
fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?; // (B, L)
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// Hinton's soft-target loss: T² · mean over the batch of KL(softmax(teacher / T) || softmax(student / T)).
/// The T² keeps its gradient on the scale of the cross-entropy's as T grows. student, teacher: (B, L)
pub fn kl_at_temperature(student: &Tensor, teacher: &Tensor, t: f64) -> Result<Tensor> {
    let log_p = log_softmax(&(teacher / t)?)?.detach(); // (B, L)
    let log_q = log_softmax(&(student / t)?)?; // (B, L)
    let kl = (log_p.exp()? * (&log_p - log_q)?)?.sum(D::Minus1)?; // (B,)
    kl.mean_all()? * (t * t)
}

/// log softmax(Q Kᵀ / sqrt(D) + mask bias) per head: one layer's attention distributions, from basic ops (the
/// fused attention op keeps its probabilities to itself). q, k: (B, T, C); bias: (B, T) -> (B, H, T, T)
pub fn attention_log_probs(q: &Tensor, k: &Tensor, bias: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, c) = q.dims3()?;
    let d = c / heads;
    let split = |y: &Tensor| y.reshape((b, t, heads, d))?.transpose(1, 2)?.contiguous(); // (B, H, T, D)
    let scores = (split(q)?.matmul(&split(k)?.t()?)? / (d as f64).sqrt())?; // (B, H, T, T)
    log_softmax(&scores.broadcast_add(&bias.reshape((b, 1, 1, t))?)?)
}

/// KL(teacher || student) of attention rows, averaged over heads and real query tokens (MiniLM's attention loss).
/// student, teacher: (B, H, T, T) log probabilities; mask: (B, T) 0/1
pub fn attention_kl(student: &Tensor, teacher: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let teacher = teacher.detach();
    let kl = (teacher.exp()? * (&teacher - student)?)?.sum(D::Minus1)?; // (B, H, T)
    let m = mask.to_dtype(DType::F32)?.unsqueeze(1)?; // (B, 1, T)
    let count = (m.sum_all()?.to_scalar::<f32>()? as f64 * kl.dim(1)? as f64).max(1.0);
    kl.broadcast_mul(&m)?.sum_all()? / count
}

/// Mean squared error over the real tokens. student, teacher: (B, T, C); mask: (B, T) 0/1
pub fn masked_mse(student: &Tensor, teacher: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (B, T, 1)
    let sq = (student - teacher)?.sqr()?.broadcast_mul(&m)?; // (B, T, C)
    let count = (m.sum_all()?.to_scalar::<f32>()? as f64 * student.dim(2)? as f64).max(1.0);
    sq.sum_all()? / count
}

/// 1 - cosine similarity, averaged over the batch. student, teacher: (B, C)
pub fn cosine_distance(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    let cos = (pooling::l2_normalize(student)? * pooling::l2_normalize(teacher)?)?.sum(D::Minus1)?; // (B,)
    cos.mean_all()?.affine(-1.0, 1.0)
}

/// Mean squared error of the raw embeddings (sentence-transformers' distillation loss). student, teacher: (B, C)
pub fn mse(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    (student - teacher)?.sqr()?.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// f32 exp/log against an f64 hand computation.
    const KL_TOL: f32 = 1e-5;

    #[test]
    fn kl_at_temperature_matches_a_hand_computation() {
        let s = [[1.0f32, 0.0, -1.0], [0.5, 0.5, 0.0]];
        let t = [[2.0f32, 0.0, 0.0], [0.0, 1.0, -1.0]];
        let temp = 2.0f64;
        let softmax = |z: &[f32; 3]| {
            let e: Vec<f64> = z.iter().map(|&v| (f64::from(v) / temp).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.into_iter().map(|v| v / sum).collect::<Vec<f64>>()
        };
        let mut want = 0.0;
        for (s, t) in s.iter().zip(&t) {
            let (p, q) = (softmax(t), softmax(s));
            want += p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum::<f64>();
        }
        want *= temp * temp / 2.0;
        let (st, tt) = (Tensor::new(&s, &Device::Cpu).unwrap(), Tensor::new(&t, &Device::Cpu).unwrap());
        let got: f32 = kl_at_temperature(&st, &tt, temp).unwrap().to_scalar().unwrap();
        assert!((got - want as f32).abs() < KL_TOL, "{got} vs {want}");
        let same: f32 = kl_at_temperature(&tt, &tt, temp).unwrap().to_scalar().unwrap();
        assert!(same.abs() < KL_TOL);
    }

    #[test]
    fn attention_kl_is_zero_for_equal_maps_and_ignores_padded_queries() {
        let dev = &Device::Cpu;
        let q = Tensor::new(&[[[1.0f32, 0.0, 0.5, -1.0], [0.0, 2.0, 1.0, 0.0], [3.0, 3.0, 3.0, 3.0]]], dev).unwrap(); // (1, 3, 4)
        let k = Tensor::new(&[[[0.5f32, 1.0, -1.0, 0.0], [1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]]], dev).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 0]], dev).unwrap();
        let bias = shrink_model::embeddings::mask_bias(&mask).unwrap();
        let p = attention_log_probs(&q, &k, &bias, 2).unwrap(); // (1, 2, 3, 3)
        assert_eq!(p.dims(), [1, 2, 3, 3]);
        // Rows sum to 1 and padded keys get nothing.
        let probs = p.exp().unwrap();
        let sums: Vec<f32> = probs.sum(3).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6), "{sums:?}");
        assert!(probs.narrow(3, 2, 1).unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-12);
        let same: f32 = attention_kl(&p, &p, &mask).unwrap().to_scalar().unwrap();
        assert!(same.abs() < 1e-6);
        // Changing only the padded query row changes nothing.
        let q2 = q.slice_assign(&[0..1, 2..3, 0..4], &Tensor::new(&[[[-5.0f32, 1.0, 0.0, 9.0]]], dev).unwrap()).unwrap();
        let p2 = attention_log_probs(&q2, &k, &bias, 2).unwrap();
        let d: f32 = attention_kl(&p2, &p, &mask).unwrap().to_scalar().unwrap();
        assert!(d.abs() < 1e-6, "{d}");
    }

    #[test]
    fn masked_mse_ignores_padding_and_cosine_is_zero_for_parallel_rows() {
        let s = Tensor::new(&[[[1.0f32, 1.0], [9.0, 9.0]]], &Device::Cpu).unwrap(); // (1, 2, 2)
        let t = Tensor::new(&[[[0.0f32, 3.0], [0.0, 0.0]]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 0]], &Device::Cpu).unwrap();
        let got: f32 = masked_mse(&s, &t, &mask).unwrap().to_scalar().unwrap();
        assert!((got - 2.5).abs() < 1e-6, "{got}");
        let a = Tensor::new(&[[1.0f32, 2.0], [3.0, -1.0]], &Device::Cpu).unwrap();
        let d: f32 = cosine_distance(&a, &(&a * 3.0).unwrap()).unwrap().to_scalar().unwrap();
        assert!(d.abs() < 1e-6, "{d}");
    }
}
