//! Training shared by fine-tuning, distillation and QAT: AdamW with linear warm-up and decay, gradient clipping,
//! seeded shuffling and dropout, and the epoch loop (`fit`) each objective plugs its batch loss into.
//! `finetune` is the plain case: mean pooling + linear head, cross-entropy.

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use shrink_model::{batch_tensors, ops, tokenizer, Bert};

pub use crate::example::Example;
use crate::optim::AdamW;
use shrink_io::events::{self, Event};

#[derive(Debug, Clone, serde::Serialize)]
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

impl TrainOptions {
    /// The optimiser's numbers, named by their flags: a NaN or infinite one would train a NaN model.
    pub fn check(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr {}: the learning rate must be a finite number above 0", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("--weight-decay {}: must be a finite number >= 0", self.weight_decay);
        }
        if !(0.0..=1.0).contains(&self.warmup) {
            bail!("--warmup {}: the warm-up fraction of the steps must be in [0, 1]", self.warmup);
        }
        if !(self.clip.is_finite() && self.clip >= 0.0) {
            bail!("--clip {}: the gradient-norm clip must be a finite number >= 0 (0 = off)", self.clip);
        }
        Ok(())
    }
}

/// The one way to extend the training loop. A hook may stand another model in for a step's forward (masked or
/// fake-quantized weights) and add a term to its loss, see the gradients before the update, rewrite parameters
/// after it (pruning masks), and act after each epoch (evaluation, checkpoints). Every method defaults to doing
/// nothing. `params` are the trainable (HF name, variable) pairs.
pub trait Hook {
    fn prepare(&mut self, _step: usize, _model: &Bert) -> Result<Prepared> {
        Ok(Prepared::default())
    }
    fn before_update(&mut self, _step: usize, _params: &[(String, Var)], _grads: &GradStore) -> Result<()> {
        Ok(())
    }
    fn after_update(&mut self, _step: usize, _params: &[(String, Var)]) -> Result<()> {
        Ok(())
    }
    /// After epoch `epoch` (0-based), on the trained model.
    fn after_epoch(&mut self, _epoch: usize, _model: &Bert) -> Result<()> {
        Ok(())
    }
    /// The model evaluation sees (QAT: fake-quantized); None: the trained model itself.
    fn eval_model(&self, _model: &Bert) -> Result<Option<Bert>> {
        Ok(None)
    }
    /// The trained weights were just saved as the best so far.
    fn saved(&mut self) {}
}

/// Training as it is.
pub struct Plain;

impl Hook for Plain {}

/// What a hook hands the forward of one step.
#[derive(Default)]
pub struct Prepared {
    /// The model the loss is computed on instead of the trained one (its graph must reach the trained variables).
    pub model: Option<Bert>,
    /// A named scalar added to the loss (a regulariser).
    pub penalty: Option<(&'static str, Tensor)>,
}

/// The model with every parameter turned into a trainable variable, and its optimiser.
pub struct Trainer {
    pub model: Bert,
    params: Vec<(String, Var)>,
    /// Trained beside the model but not part of it (distillation's width projections): optimised and clipped with
    /// it, never saved, and not shown to a `Hook`.
    extra: Vec<(String, Var)>,
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

/// One batch's loss: `total` is minimised; `parts` are its weighted terms by name, for the progress bar.
pub struct Loss {
    pub total: Tensor, // scalar
    pub parts: Vec<(&'static str, f32)>,
}

impl Loss {
    /// A loss of one term.
    pub fn single(name: &'static str, total: Tensor) -> Result<Self> {
        let v = total.to_scalar::<f32>()?;
        Ok(Self { total, parts: vec![(name, v)] })
    }
}

impl Trainer {
    /// `extra`: variables outside the model that the loss also trains.
    pub fn new(mut model: Bert, extra: Vec<(String, Var)>, opts: &TrainOptions, total_steps: usize) -> Result<Self> {
        let named = trainable(&mut model)?;
        // As in BERT: no weight decay on biases and LayerNorm parameters.
        let params: Vec<(Var, f64)> = named
            .iter()
            .chain(&extra)
            .map(|(name, v)| (v.clone(), if name.ends_with(".bias") || name.contains("LayerNorm") { 0.0 } else { opts.weight_decay }))
            .collect();
        Ok(Self {
            model,
            params: named,
            extra,
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

    /// One optimisation step on the loss `loss` computes from the model and the dropout RNG; `hook` sees it.
    pub fn step(&mut self, loss: impl FnOnce(&Bert, &mut StdRng) -> Result<Loss>, hook: &mut dyn Hook) -> Result<Vec<(&'static str, f32)>> {
        let prepared = hook.prepare(self.step, &self.model)?;
        let mut loss = loss(prepared.model.as_ref().unwrap_or(&self.model), &mut self.rng)?;
        if let Some((name, p)) = prepared.penalty {
            loss.parts.push((name, p.to_scalar::<f32>()?));
            loss.total = (loss.total + p)?;
        }
        // Before any update: a NaN step would leave a NaN model to save.
        let total = loss.total.to_scalar::<f32>()?;
        if !total.is_finite() {
            bail!("loss is {total}: training diverged (lower --lr?)");
        }
        let grads = loss.total.backward()?;
        hook.before_update(self.step, &self.params, &grads)?;
        // Measured even with clipping off: a finite loss can still have NaN gradients.
        let norm = grad_norm(&grads, self.params.iter().chain(&self.extra))?;
        let scale = if self.clip > 0.0 && norm > self.clip { (self.clip / (norm + 1e-6)) as f32 } else { 1.0 };
        self.optim.lr = self.schedule.at(self.step);
        self.optim.step(&grads, scale)?;
        hook.after_update(self.step, &self.params)?;
        self.step += 1;
        Ok(loss.parts)
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

/// Tokenised labelled examples of a JSONL file; every label must be one of `labels`.
pub fn examples(
    path: &std::path::Path,
    rows: &[serde_json::Map<String, serde_json::Value>],
    tokenizer: &shrink_model::TextTokenizer,
    fields: (&str, &str),
    labels: &[String],
) -> Result<Vec<Example>> {
    let (text_field, label_field) = fields;
    let texts = shrink_io::data::field(path, rows, text_field)?;
    let names = shrink_io::data::field(path, rows, label_field)?;
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
            Ok(Example { ids, label: Some(y as u32), text: t.to_string() })
        })
        .collect()
}

/// The label indices of `batch` (B); an example without one is an error, not a silent class 0.
pub fn labels_of(examples: &[Example], batch: &[usize]) -> Result<Vec<u32>> {
    batch.iter().map(|&j| examples[j].label.ok_or_else(|| anyhow::anyhow!("example {j} has no label to train a classifier on"))).collect()
}

/// The global L2 norm of the gradients; not finite is an error.
fn grad_norm<'a>(grads: &GradStore, params: impl Iterator<Item = &'a (String, Var)>) -> Result<f64> {
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
    Ok(norm)
}

/// Running means of the loss parts over an epoch.
#[derive(Default)]
struct PartMeans(Vec<(&'static str, f64)>, usize);

impl PartMeans {
    fn add(&mut self, parts: &[(&'static str, f32)]) {
        if self.0.is_empty() {
            self.0 = parts.iter().map(|&(n, _)| (n, 0.0)).collect();
        }
        self.0.iter_mut().zip(parts).for_each(|(m, &(_, v))| m.1 += f64::from(v));
        self.1 += 1;
    }

    fn means(&self) -> Vec<(String, f64)> {
        let n = self.1.max(1) as f64;
        self.0.iter().map(|&(name, s)| (name.to_string(), s / n)).collect()
    }
}

/// The one trainer: `n` examples shuffled (seeded) into batches of indices, one step of `batch_loss` per batch, the
/// progress bar showing the epoch's mean of every loss part, then `hook.after_epoch`. `extra`: variables outside
/// the model the loss also trains (see `Trainer::new`). Returns the trained model.
pub fn fit(
    model: Bert,
    extra: Vec<(String, Var)>,
    n: usize,
    opts: &TrainOptions,
    mut batch_loss: impl FnMut(&Bert, &[usize], &mut StdRng) -> Result<Loss>,
    hook: &mut dyn Hook,
) -> Result<Bert> {
    if n == 0 {
        bail!("no training examples");
    }
    let steps_per_epoch = n.div_ceil(opts.batch);
    let mut trainer = Trainer::new(model, extra, opts, steps_per_epoch * opts.epochs)?;
    let mut order: Vec<usize> = (0..n).collect();
    let mut shuffle_rng = StdRng::seed_from_u64(opts.seed);
    for epoch in 0..opts.epochs {
        order.shuffle(&mut shuffle_rng);
        let pb = events::bar(steps_per_epoch, &format!("epoch {}/{}", epoch + 1, opts.epochs));
        let mut means = PartMeans::default();
        for (step, chunk) in order.chunks(opts.batch).enumerate() {
            let parts = trainer
                .step(|m, rng| batch_loss(m, chunk, rng), hook)
                .with_context(|| format!("epoch {}/{}, step {}/{steps_per_epoch}", epoch + 1, opts.epochs, step + 1))?;
            means.add(&parts);
            pb.set_message(events::render_means(&means.means()));
            pb.inc(1);
        }
        pb.finish();
        events::emit(Event::Epoch { epoch: epoch + 1, means: means.means() });
        hook.after_epoch(epoch, &trainer.model)?;
    }
    Ok(trainer.model)
}

/// (B, T) ids and mask of some pre-tokenised examples.
pub fn batch_of(seqs: &[&[u32]]) -> Result<(Tensor, Tensor)> {
    let seqs: Vec<Vec<u32>> = seqs.iter().map(|s| s.to_vec()).collect();
    Ok(batch_tensors(&tokenizer::pad(&seqs, 0))?)
}

/// A classifier's loss from its logits (B, L), the batch's indices into the examples and its labels (B):
/// distillation looks each example's teacher output up by index.
pub type LogitsLoss<'a> = &'a dyn Fn(&Tensor, &[usize], &Tensor) -> Result<Loss>;

/// Plain cross-entropy, the `LogitsLoss` of fine-tuning.
pub fn cross_entropy(logits: &Tensor, _batch: &[usize], labels: &Tensor) -> Result<Loss> {
    Loss::single("loss", ops::cross_entropy(logits, labels)?)
}

/// Fine-tunes `model` (which must already have its head) on labelled examples with `loss`, dropout on; `hook`
/// runs in every step.
pub fn finetune(model: Bert, examples: &[Example], opts: &TrainOptions, loss: LogitsLoss, hook: &mut dyn Hook) -> Result<Bert> {
    let step = |m: &Bert, batch: &[usize], rng: &mut StdRng| {
        let (ids, mask) = batch_of(&batch.iter().map(|&j| examples[j].ids.as_slice()).collect::<Vec<_>>())?; // (B, T)
        let labels = Tensor::new(labels_of(examples, batch)?.as_slice(), ids.device())?; // (B,)
        loss(&m.logits(&ids, &mask, Some(rng))?, batch, &labels) // logits (B, L)
    };
    fit(model, Vec::new(), examples.len(), opts, step, hook)
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
