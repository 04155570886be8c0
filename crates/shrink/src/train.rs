//! Fine-tuning a classifier: mean pooling + linear head, cross-entropy, AdamW with linear warm-up and decay,
//! gradient clipping, seeded shuffling and dropout.

use anyhow::{bail, Result};
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

/// The model with every parameter turned into a trainable variable, and its optimiser.
pub struct Trainer {
    pub model: Bert,
    vars: Vec<Var>,
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
        let params: Vec<(Var, f64)> = trainable(&mut model)?
            .into_iter()
            .map(|(name, v)| {
                // As in BERT: no weight decay on biases and LayerNorm parameters.
                let decay = if name.ends_with(".bias") || name.contains("LayerNorm") { 0.0 } else { opts.weight_decay };
                (v, decay)
            })
            .collect();
        let vars = params.iter().map(|(v, _)| v.clone()).collect();
        Ok(Self {
            model,
            vars,
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
    pub fn step(&mut self, ids: &Tensor, mask: &Tensor, labels: &Tensor) -> Result<f32> {
        self.step_with(ids, mask, |logits| Ok(ops::cross_entropy(logits, labels)?))
    }

    /// `step` with the loss computed by `loss` from the logits (B, L).
    pub fn step_with(&mut self, ids: &Tensor, mask: &Tensor, loss: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<f32> {
        let logits = self.model.logits(ids, mask, Some(&mut self.rng))?; // (B, L)
        let loss = loss(&logits)?;
        let grads = loss.backward()?;
        let scale = if self.clip > 0.0 { clip_scale(&grads, &self.vars, self.clip)? } else { 1.0 };
        self.optim.lr = self.schedule.at(self.step);
        self.optim.step(&grads, scale)?;
        self.step += 1;
        Ok(loss.to_scalar::<f32>()?)
    }
}

/// Turns every parameter of `model` into a variable (in place) so a backward pass reaches it; name + variable.
pub fn trainable(model: &mut Bert) -> Result<Vec<(String, Var)>> {
    let mut params = Vec::new();
    let mut failure = None;
    model.visit(&mut |name, t| match Var::from_tensor(t) {
        Ok(v) => {
            *t = v.as_tensor().clone();
            params.push((name.to_string(), v));
        }
        Err(e) => failure = Some(e),
    });
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(params),
    }
}

/// Tokenised (ids, label index) pairs of a labelled JSONL file; every label must be one of `labels`.
pub fn examples(
    path: &std::path::Path,
    rows: &[serde_json::Map<String, serde_json::Value>],
    tokenizer: &shrink_model::TextTokenizer,
    fields: (&str, &str),
    labels: &[String],
) -> Result<Vec<(Vec<u32>, u32)>> {
    let (text_field, label_field) = fields;
    let texts = crate::data::field(path, rows, text_field)?;
    let names = crate::data::field(path, rows, label_field)?;
    texts
        .iter()
        .zip(&names)
        .enumerate()
        .map(|(i, (t, l))| {
            let row = || format!("{}: row {}", path.display(), i + 1);
            let ids = tokenizer.encode(t).map_err(|e| e.context(row()))?;
            let Some(y) = labels.iter().position(|x| x == l) else {
                bail!("{}: label {l:?} is not one the model knows ({labels:?})", row());
            };
            Ok((ids, y as u32))
        })
        .collect()
}

/// Factor that brings the global L2 norm of the gradients down to `max_norm` (1 when already below).
fn clip_scale(grads: &candle_core::backprop::GradStore, vars: &[Var], max_norm: f64) -> Result<f32> {
    let mut sq = 0f64;
    for v in vars {
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

/// Fine-tunes `model` (which must already have its head) on pre-tokenised examples, with cross-entropy.
pub fn finetune(model: Bert, examples: &[(Vec<u32>, u32)], opts: &TrainOptions) -> Result<Bert> {
    finetune_with(model, examples, opts, &|logits, _, labels| Ok(ops::cross_entropy(logits, labels)?))
}

/// The loss of one batch from its logits (B, L), the batch's indices into the examples and its labels (B).
pub type BatchLoss<'a> = &'a dyn Fn(&Tensor, &[usize], &Tensor) -> Result<Tensor>;

/// `finetune` with another loss (e.g. distillation, which looks up each example's teacher output by index).
pub fn finetune_with(model: Bert, examples: &[(Vec<u32>, u32)], opts: &TrainOptions, loss: BatchLoss) -> Result<Bert> {
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
            let value = trainer.step_with(&ids, &mask, |logits| loss(logits, chunk, &labels))?;
            total += value;
            pb.set_message(format!("loss {value:.4} avg {:.4}", total / (i + 1) as f32));
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
