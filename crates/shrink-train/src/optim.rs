//! AdamW (decoupled weight decay) updating each parameter in place in one fused pass: candle_nn's version runs ~14
//! tensor ops with fresh allocations per parameter, which costs more than the encoder's backward at MiniLM size.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp1, Layout, Var};
use rayon::prelude::*;

/// Parameters per parallel task.
const ELEMS_PER_TASK: usize = 1 << 16;

pub struct AdamW {
    params: Vec<Param>,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    step: i32,
}

struct Param {
    var: Var,
    decay: f64,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl AdamW {
    /// `params`: (variable, weight decay) pairs.
    pub fn new(params: Vec<(Var, f64)>, lr: f64) -> Self {
        let params = params
            .into_iter()
            .map(|(var, decay)| {
                let n = var.elem_count();
                Param { var, decay, m: vec![0.0; n], v: vec![0.0; n] }
            })
            .collect();
        Self { params, lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 0 }
    }

    /// `grad_scale` multiplies every gradient first (gradient clipping without rewriting the gradients).
    pub fn step(&mut self, grads: &GradStore, grad_scale: f32) -> Result<()> {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step);
        let bc2 = 1.0 - self.beta2.powi(self.step);
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            let (storage, layout) = g.storage_and_layout();
            let g = f32_slice(&storage, layout)?;
            let op = Update {
                g,
                grad_scale,
                m: std::cell::RefCell::new(&mut p.m),
                v: std::cell::RefCell::new(&mut p.v),
                lr: self.lr as f32,
                decay: (self.lr * p.decay) as f32,
                beta1: self.beta1 as f32,
                beta2: self.beta2 as f32,
                bc1: bc1 as f32,
                bc2: bc2 as f32,
                eps: self.eps as f32,
            };
            p.var.as_tensor().inplace_op1(&op)?;
        }
        Ok(())
    }
}

/// The contiguous f32 data of a CPU tensor, without a copy.
pub fn f32_slice<'a>(storage: &'a candle_core::Storage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(CpuStorage::F32(v)), Some((a, b))) => Ok(&v[a..b]),
        _ => anyhow::bail!("expected a contiguous f32 CPU tensor"),
    }
}

/// The contiguous f32 elements an in-place op (`InplaceOp1::cpu_fwd`) may write; `op` names it in errors.
pub fn f32_slice_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = storage else { candle_core::bail!("{op}: parameters must be f32") };
    let Some((a, b)) = layout.contiguous_offsets() else { candle_core::bail!("{op}: parameter not contiguous") };
    Ok(&mut v[a..b])
}

struct Update<'a> {
    g: &'a [f32],
    grad_scale: f32,
    m: std::cell::RefCell<&'a mut Vec<f32>>,
    v: std::cell::RefCell<&'a mut Vec<f32>>,
    lr: f32,
    decay: f32,
    beta1: f32,
    beta2: f32,
    bc1: f32,
    bc2: f32,
    eps: f32,
}

impl InplaceOp1 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let theta = f32_slice_mut(storage, layout, "adamw")?;
        let (mut m, mut v) = (self.m.borrow_mut(), self.v.borrow_mut());
        let Update { grad_scale, lr, decay, beta1, beta2, bc1, bc2, eps, .. } = *self;
        theta
            .par_chunks_mut(ELEMS_PER_TASK)
            .zip(m.par_chunks_mut(ELEMS_PER_TASK).zip(v.par_chunks_mut(ELEMS_PER_TASK)))
            .zip(self.g.par_chunks(ELEMS_PER_TASK))
            .for_each(|((theta, (m, v)), g)| {
                for i in 0..theta.len() {
                    let g = g[i] * grad_scale;
                    m[i] = beta1 * m[i] + (1.0 - beta1) * g;
                    v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
                    let update = (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps);
                    theta[i] -= decay * theta[i] + lr * update;
                }
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Same formula, different f32 operation order: a few ulps at parameter magnitudes of ~3.
    const ADAMW_TOL: f32 = 1e-5;

    /// Against candle_nn's AdamW (the textbook formula) on a small quadratic.
    #[test]
    fn matches_candle_nn_adamw() {
        use candle_nn::Optimizer;
        let init = Tensor::new(&[1.0f32, -2.0, 0.5, 3.0], &Device::Cpu).unwrap();
        let (a, b) = (Var::from_tensor(&init).unwrap(), Var::from_tensor(&init).unwrap());
        let mut ours = AdamW::new(vec![(a.clone(), 0.01)], 0.1);
        let params = candle_nn::ParamsAdamW { lr: 0.1, weight_decay: 0.01, ..Default::default() };
        let mut reference = candle_nn::AdamW::new(vec![b.clone()], params).unwrap();
        for _ in 0..5 {
            ours.step(&(a.as_tensor().sqr().unwrap().sum_all().unwrap()).backward().unwrap(), 1.0).unwrap();
            reference.step(&(b.as_tensor().sqr().unwrap().sum_all().unwrap()).backward().unwrap()).unwrap();
        }
        let d: f32 = (a.as_tensor() - b.as_tensor()).unwrap().abs().unwrap().max(0).unwrap().to_scalar().unwrap();
        assert!(d < ADAMW_TOL, "diff {d}");
    }
}
