//! Fine-tuning a classifier: mean pooling + linear head, cross-entropy, AdamW with linear warm-up and decay,
//! gradient clipping, seeded shuffling and dropout.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use shrink_model::{batch_tensors, ops, tokenizer, Bert};

use crate::optim::AdamW;
use crate::progress;

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of all steps spent warming the learning rate up from 0.
    pub warmup: f64,
    /// Global gradient-norm clip (0 = off).
    pub clip: f64,
    pub seed: u64,
}

/// Runs inside every training step: sees the gradients before the update and may rewrite parameters after it
/// (pruning masks, say). `params` are the trainable (HF name, variable) pairs.
pub trait StepHook {
    fn before_update(&mut self, step: usize, params: &[(String, Var)], grads: &GradStore) -> Result<()>;
    fn after_update(&mut self, step: usize, params: &[(String, Var)]) -> Result<()>;
}

/// The model with every parameter turned into a trainable variable, and its optimiser.
pub struct Trainer {
    pub model: Bert,
    params: Vec<(String, Var)>,
    optim: AdamW,
    rng: StdRng,
    schedule: LinearSchedule,
    clip: f64,
    step: usize,
}

/// Linear warm-up to `lr`, then linear decay to 0 at the last step (HF's linear schedule).
#[derive(Debug, Clone, Copy)]
pub struct LinearSchedule {
    pub lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LinearSchedule {
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            self.lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            let left = self.total_steps.saturating_sub(step) as f64;
            self.lr * left / self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64
        }
    }
}

impl Trainer {
    pub fn new(mut model: Bert, opts: &TrainOptions, total_steps: usize) -> Result<Self> {
        let mut params = Vec::new();
        let mut failure = None;
        let mut named = Vec::new();
        model.visit(&mut |name, t| match Var::from_tensor(t) {
            Ok(v) => {
                *t = v.as_tensor().clone();
                // As in BERT: no weight decay on biases and LayerNorm parameters.
                let decay = if name.ends_with(".bias") || name.contains("LayerNorm") { 0.0 } else { opts.weight_decay };
                named.push((name.to_string(), v.clone()));
                params.push((v, decay));
            }
            Err(e) => failure = Some(e),
        });
        if let Some(e) = failure {
            return Err(e.into());
        }
        Ok(Self {
            model,
            params: named,
            optim: AdamW::new(params, opts.lr),
            rng: StdRng::seed_from_u64(opts.seed ^ 0x5eed),
            schedule: LinearSchedule {
                lr: opts.lr,
                warmup_steps: ((total_steps as f64) * opts.warmup).round() as usize,
                total_steps: total_steps.max(1),
            },
            clip: opts.clip,
            step: 0,
        })
    }

    /// One optimisation step on a batch; returns the loss. ids, mask: (B, T); labels: (B,)
    pub fn step(&mut self, ids: &Tensor, mask: &Tensor, labels: &Tensor, mut hook: Option<&mut dyn StepHook>) -> Result<f32> {
        let logits = self.model.logits(ids, mask, Some(&mut self.rng))?; // (B, L)
        let loss = ops::cross_entropy(&logits, labels)?;
        let grads = loss.backward()?;
        if let Some(h) = hook.as_deref_mut() {
            h.before_update(self.step, &self.params, &grads)?;
        }
        let scale = if self.clip > 0.0 { clip_scale(&grads, &self.params, self.clip)? } else { 1.0 };
        self.optim.lr = self.schedule.at(self.step);
        self.optim.step(&grads, scale)?;
        if let Some(h) = hook {
            h.after_update(self.step, &self.params)?;
        }
        self.step += 1;
        Ok(loss.to_scalar::<f32>()?)
    }
}

/// Factor that brings the global L2 norm of the gradients down to `max_norm` (1 when already below).
fn clip_scale(grads: &GradStore, params: &[(String, Var)], max_norm: f64) -> Result<f32> {
    let mut sq = 0f64;
    for (_, v) in params {
        if let Some(g) = grads.get(v.as_tensor()) {
            let (storage, layout) = g.storage_and_layout();
            let g = crate::optim::f32_slice(&storage, layout)?;
            sq += g.par_chunks(1 << 16).map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>()).sum::<f64>();
        }
    }
    let norm = sq.sqrt();
    if !norm.is_finite() {
        bail!("gradient norm is {norm}: training diverged (lower --lr?)");
    }
    Ok(if norm > max_norm { (max_norm / (norm + 1e-6)) as f32 } else { 1.0 })
}

/// Tokenised (ids, label index) pairs; `labels` are the head's classes in index order. `path` names the file in errors.
pub fn labelled_examples(
    tokenizer: &shrink_model::TextTokenizer,
    labels: &[String],
    path: &std::path::Path,
    texts: &[String],
    gold: &[String],
) -> Result<Vec<(Vec<u32>, u32)>> {
    texts
        .iter()
        .zip(gold)
        .enumerate()
        .map(|(i, (t, l))| {
            let ids = tokenizer.encode(t).map_err(|e| e.context(format!("{}: row {}", path.display(), i + 1)))?;
            match labels.iter().position(|x| x == l) {
                Some(c) => Ok((ids, c as u32)),
                None => bail!("{}: row {}: label {l:?} is not one the model knows ({labels:?})", path.display(), i + 1),
            }
        })
        .collect()
}

/// Fine-tunes `model` (which must already have its head) on pre-tokenised examples; `hook` runs in every step.
pub fn finetune(model: Bert, examples: &[(Vec<u32>, u32)], opts: &TrainOptions, mut hook: Option<&mut dyn StepHook>) -> Result<Bert> {
    if examples.is_empty() {
        bail!("no training examples");
    }
    let steps_per_epoch = examples.len().div_ceil(opts.batch);
    let mut trainer = Trainer::new(model, opts, steps_per_epoch * opts.epochs)?;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut shuffle_rng = StdRng::seed_from_u64(opts.seed);
    for epoch in 0..opts.epochs {
        order.shuffle(&mut shuffle_rng);
        let pb = progress::bar(steps_per_epoch, &format!("epoch {}/{}", epoch + 1, opts.epochs));
        let mut total = 0.0;
        for (i, chunk) in order.chunks(opts.batch).enumerate() {
            let seqs: Vec<Vec<u32>> = chunk.iter().map(|&j| examples[j].0.clone()).collect();
            let labels: Vec<u32> = chunk.iter().map(|&j| examples[j].1).collect();
            let (ids, mask) = batch_tensors(&tokenizer::pad(&seqs, 0))?;
            let labels = Tensor::new(labels.as_slice(), ids.device())?;
            let loss = trainer.step(&ids, &mask, &labels, hook.as_mut().map(|h| &mut **h as &mut dyn StepHook))?;
            total += loss;
            pb.set_message(format!("loss {loss:.4} avg {:.4}", total / (i + 1) as f32));
            pb.inc(1);
        }
        pb.finish();
        eprintln!("epoch {}: mean loss {:.4}", epoch + 1, total / steps_per_epoch as f32);
    }
    Ok(trainer.model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = LinearSchedule { lr: 1.0, warmup_steps: 10, total_steps: 100 };
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert!((s.at(9) - 1.0).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        assert!((s.at(55) - 0.5).abs() < 1e-12);
        assert!(s.at(99) > 0.0 && s.at(99) < 0.02);
    }
}
