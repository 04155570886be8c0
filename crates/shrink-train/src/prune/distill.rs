//! Recovery by distillation: the pruned student learns the unpruned model's soft outputs (Hinton et al. 2015),
//! cached once by `distill::teacher::Targets::logits_on`. `shrink distill` owns general distillation.

use candle_core::Tensor;

/// Softmax temperature of the soft targets.
pub const TEMPERATURE: f64 = 2.0;
/// Weight of the soft (KL) term; the rest goes to cross-entropy on the labels.
pub const SOFT_WEIGHT: f64 = 0.5;

/// SOFT_WEIGHT · T² · KL(teacher_T || student_T) + (1 - SOFT_WEIGHT) · CE(student, labels), batch means.
/// student: (B, L) logits; teacher: (B, L) logits; labels: (B).
pub fn loss(student: &Tensor, teacher: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let kl = crate::distill::loss::kl_at_temperature(student, teacher, TEMPERATURE)?;
    let ce = shrink_model::ops::cross_entropy(student, labels)?;
    (kl * SOFT_WEIGHT)? + (ce * (1.0 - SOFT_WEIGHT))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn soft_term_vanishes_when_student_matches_teacher() {
        let logits = Tensor::new(&[[1.0f32, -2.0, 0.5], [0.0, 3.0, -1.0]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let ce = shrink_model::ops::cross_entropy(&logits, &labels).unwrap().to_scalar::<f32>().unwrap();
        let same = loss(&logits, &logits, &labels).unwrap().to_scalar::<f32>().unwrap();
        assert!((same - (1.0 - SOFT_WEIGHT as f32) * ce).abs() < 1e-6, "{same} vs {ce}");
        let flat = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(loss(&flat, &logits, &labels).unwrap().to_scalar::<f32>().unwrap() > same);
    }
}
