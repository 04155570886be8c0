//! Unstructured and N:M pruning of the encoder's Linear weights (Q, K, V, attention output, FFN in and out): one-shot
//! by magnitude, or during fine-tuning on the cubic schedule of Zhu & Gupta (2017), by magnitude |w| or by movement
//! (Sanh et al. 2020: learned scores S, the forward uses W ⊙ M(S), S trained through the straight-through estimator,
//! so the weights moving away from zero are kept). The result is a dense fp32 folder whose pruned weights are exact
//! zeros; `shrink quantize --scheme sparse` stores it for the runtime's sparse kernel. Embeddings, biases, LayerNorms
//! and the head are never pruned.

pub mod job;

use anyhow::{bail, Result};
use shrink_io::choices;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Tensor, Var};
use rayon::prelude::*;
use shrink_model::Bert;

use crate::optim::{f32_slice, f32_slice_mut, AdamW};
use crate::prune::distill;
use crate::distill::teacher::Targets;
use crate::example::Example;
use crate::train::{self, Hook, Prepared, TrainOptions};

choices! {
    pub enum Method {
        Magnitude = "magnitude": "Keep the largest |w|",
        Movement = "movement": "Hard movement: keep the top of learned scores (exactly --sparsity pruned, per tensor or --scope global)",
        SoftMovement = "soft-movement": "Soft movement: keep σ(score) > --threshold; an L1 penalty --l1 on σ(score) sets how many go",
    }
}

choices! {
    /// Where movement's scores start.
    pub enum ScoreInit {
        Zeros = "zeros": "All zero, as Sanh et al.: the first masks are arbitrary until the scores have learned (thousands of steps). On BBC (333 steps to 90%) it collapsed to chance: masks blind to magnitude cut BERT's few outlier weights (soft movement's first 14% zeros, as large on average as the kept weights, already left chance-level loss)",
        Magnitude = "magnitude": "|W| / mean |W| per Linear: movement refines a magnitude mask instead of starting from none",
    }
}

choices! {
    pub enum Scope {
        Layer = "layer": "The same sparsity in every Linear",
        Global = "global": "One threshold over all encoder Linears: layers that matter less give up more",
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Final fraction of the encoder Linears' weights that are zero (for N:M: 1 - N/M).
    pub sparsity: f64,
    pub method: Method,
    pub scope: Scope,
    /// Keep N of every M consecutive inputs of each row (2:4 is what sparse tensor cores run).
    pub nm: Option<(usize, usize)>,
    /// Gradual pruning runs from this fraction of the training steps to `end`, then the mask is held.
    pub begin: f64,
    pub end: f64,
    /// Movement: Adam learning rate of the scores, and where they start.
    pub score_lr: f64,
    pub score_init: ScoreInit,
    /// Soft movement: the kept weights are those with σ(score) > threshold ...
    pub threshold: f64,
    /// ... under the penalty l1 · mean σ(score), ramped up on the cubic schedule.
    pub l1: f64,
}

impl Options {
    /// Magnitude pruning to `sparsity` over the whole run (the movement fields at the CLI's defaults).
    pub fn magnitude(sparsity: f64, scope: Scope) -> Self {
        Self {
            sparsity,
            method: Method::Magnitude,
            scope,
            nm: None,
            begin: 0.0,
            end: 1.0,
            score_lr: 1e-2,
            score_init: ScoreInit::Magnitude,
            threshold: 0.1,
            l1: 100.0,
        }
    }

    pub fn check(&self) -> Result<()> {
        if let Some((n, m)) = self.nm {
            if n == 0 || n >= m {
                bail!("--nm {n}:{m}: need 0 < N < M");
            }
        } else if !(0.0..1.0).contains(&self.sparsity) {
            bail!("--sparsity {} must be in [0, 1)", self.sparsity);
        }
        if !(0.0 <= self.begin && self.begin <= self.end && self.end <= 1.0) {
            bail!("--begin {} and --end {} must satisfy 0 <= begin <= end <= 1", self.begin, self.end);
        }
        if self.method != Method::Magnitude && self.nm.is_some() {
            bail!("--nm is magnitude pruning: drop --method {:?}", self.method);
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            bail!("--threshold {} must be in (0, 1)", self.threshold);
        }
        if !(self.score_lr.is_finite() && self.score_lr > 0.0 && self.l1.is_finite() && self.l1 >= 0.0) {
            bail!("--score-lr {} must be finite and > 0, and --l1 {} finite and >= 0", self.score_lr, self.l1);
        }
        Ok(())
    }

    pub fn target(&self) -> f64 {
        self.nm.map_or(self.sparsity, |(n, m)| 1.0 - n as f64 / m as f64)
    }

    /// Sparsity after `step` of `total`: s (1 - (1 - progress)³) between begin and end (fast early, gentle late, so
    /// the network can recover); N:M has no intermediate pattern and is applied whole at `begin`.
    pub fn sparsity_at(&self, step: usize, total: usize) -> f64 {
        match self.nm {
            Some(_) if (step as f64 + 1.0) < self.begin * total as f64 => 0.0,
            Some(_) => self.target(),
            None => self.target() * self.ramp(step, total),
        }
    }

    /// The cubic ramp 1 - (1 - progress)³ from 0 before `begin` to 1 from `end` on.
    pub fn ramp(&self, step: usize, total: usize) -> f64 {
        let (t0, t1) = (self.begin * total as f64, self.end * total as f64);
        let t = step as f64 + 1.0;
        if t < t0 {
            0.0
        } else if t >= t1 {
            1.0
        } else {
            1.0 - (1.0 - (t - t0) / (t1 - t0)).powi(3)
        }
    }
}

/// The pruned tensors: 2-D weights of the encoder layers.
pub fn is_target(name: &str, shape: &[usize]) -> bool {
    name.starts_with("encoder.layer.") && name.ends_with(".weight") && shape.len() == 2
}

/// Keep-masks (true = kept) for the given scores (each an (N, K) tensor, K given), pruning `sparsity` of them.
pub fn keep_masks(scores: &[(&[f32], usize)], sparsity: f64, scope: Scope, nm: Option<(usize, usize)>) -> Result<Vec<Vec<bool>>> {
    if let Some((n, m)) = nm {
        return scores
            .iter()
            .map(|&(s, k)| {
                if !k.is_multiple_of(m) {
                    bail!("--nm {n}:{m}: an input width of {k} is not a multiple of {m}");
                }
                let mut keep = vec![false; s.len()];
                for (g, group) in s.chunks_exact(m).enumerate() {
                    let mut idx: Vec<usize> = (0..m).collect();
                    idx.sort_by(|&a, &b| group[b].total_cmp(&group[a]));
                    idx[..n].iter().for_each(|&i| keep[g * m + i] = true);
                }
                Ok(keep)
            })
            .collect();
    }
    match scope {
        Scope::Layer => Ok(scores.par_iter().map(|&(s, _)| keep_top(s, (s.len() as f64 * sparsity).round() as usize)).collect()),
        Scope::Global => {
            let all: Vec<f32> = scores.iter().flat_map(|&(s, _)| s.iter().copied()).collect();
            let keep = keep_top(&all, (all.len() as f64 * sparsity).round() as usize);
            let mut off = 0;
            Ok(scores
                .iter()
                .map(|&(s, _)| {
                    off += s.len();
                    keep[off - s.len()..off].to_vec()
                })
                .collect())
        }
    }
}

/// Keep-mask pruning the `prune` lowest scores; among equal scores the earlier index goes first, so ties keep the
/// pruned count exact and the mask deterministic. Selects on the f32s alone: movement recomputes this every step.
fn keep_top(s: &[f32], prune: usize) -> Vec<bool> {
    if prune == 0 {
        return vec![true; s.len()];
    }
    let mut v = s.to_vec();
    let t = *v.select_nth_unstable_by(prune - 1, f32::total_cmp).1;
    let mut ties = prune - s.iter().filter(|x| x.total_cmp(&t).is_lt()).count();
    s.iter()
        .map(|x| match x.total_cmp(&t) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal if ties > 0 => {
                ties -= 1;
                false
            }
            std::cmp::Ordering::Equal => true,
        })
        .collect()
}

/// Zeroes a parameter where its mask is false, in place.
struct ApplyMask<'a>(&'a [bool]);

impl InplaceOp1 for ApplyMask<'_> {
    fn name(&self) -> &'static str {
        "apply-mask"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        f32_slice_mut(storage, layout, "apply-mask")?.par_iter_mut().zip(self.0).for_each(|(w, &keep)| {
            if !keep {
                *w = 0.0
            }
        });
        Ok(())
    }
}

/// The contiguous values of a variable.
fn values(v: &Var) -> Result<Vec<f32>> {
    let (storage, layout) = v.as_tensor().storage_and_layout();
    Ok(f32_slice(&storage, layout)?.to_vec())
}

/// Fine-tunes `model` on `examples` while pruning it gradually, and returns it with the pruned weights exact zeros.
/// `teacher`: the unpruned model's logits per example (N, L); given, the loss is `prune::distill::loss` (cross-entropy
/// and KL at T to them, as Sanh et al.'s best runs), else cross-entropy.
pub fn gradual(model: Bert, examples: &[Example], topts: &TrainOptions, opts: &Options, teacher: Option<&Targets>) -> Result<Bert> {
    let total_steps = examples.len().div_ceil(topts.batch) * topts.epochs;
    let loss = |logits: &Tensor, idx: &[usize], labels: &Tensor| match teacher {
        Some(t) => train::Loss::single("loss", distill::loss(logits, &t.outputs_of(idx)?, labels)?),
        None => train::cross_entropy(logits, idx, labels),
    };
    match opts.method {
        Method::Magnitude => {
            let mut pruner = MagnitudePruner::new(*opts, total_steps);
            train::finetune(model, examples, topts, &loss, &mut pruner)
        }
        Method::Movement | Method::SoftMovement => {
            let mut pruner = MovementPruner::new(&model, *opts, topts, total_steps)?;
            let mut model = train::finetune(model, examples, topts, &loss, &mut pruner)?;
            pruner.finish(&mut model)?;
            Ok(model)
        }
    }
}

/// One magnitude-pruned parameter inside the training loop.
struct Target {
    /// Index into the trainer's params.
    param: usize,
    /// Input width K of the (N, K) weight.
    k: usize,
    keep: Vec<bool>,
}

/// Gradual magnitude pruning (Zhu & Gupta): recomputes the masks every `every` steps on the schedule and re-applies
/// them after every update (AdamW's momentum would otherwise revive pruned weights).
struct MagnitudePruner {
    opts: Options,
    total_steps: usize,
    every: usize,
    targets: Vec<Target>,
    current: f64,
}

impl MagnitudePruner {
    fn new(opts: Options, total_steps: usize) -> Self {
        // About 50 mask updates over the pruning window (Zhu & Gupta prune every few hundred of many thousand steps).
        let window = ((opts.end - opts.begin) * total_steps as f64).max(1.0);
        Self { opts, total_steps, every: (window / 50.0).ceil().max(1.0) as usize, targets: Vec::new(), current: 0.0 }
    }
}

impl Hook for MagnitudePruner {
    fn before_update(&mut self, _step: usize, _params: &[(String, Var)], _grads: &GradStore) -> Result<()> {
        Ok(())
    }

    fn after_update(&mut self, step: usize, params: &[(String, Var)]) -> Result<()> {
        if self.targets.is_empty() {
            for (param, (name, v)) in params.iter().enumerate() {
                if is_target(name, v.dims()) {
                    self.targets.push(Target { param, k: v.dims()[1], keep: vec![true; v.elem_count()] });
                }
            }
        }
        let want = self.opts.sparsity_at(step, self.total_steps);
        let due = want > self.current && ((step + 1).is_multiple_of(self.every) || want >= self.opts.target());
        if due {
            let scores: Vec<Vec<f32>> = self
                .targets
                .iter()
                .map(|t| Ok(values(&params[t.param].1)?.iter().map(|w| w.abs()).collect()))
                .collect::<Result<_>>()?;
            let refs: Vec<(&[f32], usize)> = scores.iter().zip(&self.targets).map(|(s, t)| (&s[..], t.k)).collect();
            for (t, keep) in self.targets.iter_mut().zip(keep_masks(&refs, want, self.opts.scope, self.opts.nm)?) {
                t.keep = keep;
            }
            self.current = want;
        }
        if self.current > 0.0 {
            for t in &self.targets {
                params[t.param].1.as_tensor().inplace_op1(&ApplyMask(&t.keep))?;
            }
        }
        Ok(())
    }
}

/// W' = W ⊙ (M + S - stop_gradient(S)): W ⊙ M forward, and backward ∂L/∂S = ∂L/∂W' ⊙ W (the straight-through
/// estimator: the mask's step function is taken as the identity), ∂L/∂W = ∂L/∂W' ⊙ M. w, keep, score: (N, K)
fn straight_through(w: &Tensor, keep: &Tensor, score: &Tensor) -> candle_core::Result<Tensor> {
    w.mul(&(keep + (score - score.detach())?)?)
}

/// One movement-pruned Linear: its learned importance scores and the mask of the last forward.
struct Scored {
    name: String,
    k: usize,
    score: Var,   // (N, K), like the weight
    keep: Tensor, // (N, K) 1 kept / 0 pruned
}

/// Movement pruning as Sanh et al. (2020): each pruned Linear gets a score matrix S (zeros at first), the forward uses
/// W ⊙ M(S), and S learns through the straight-through estimator ∂L/∂S = ∂L/∂W' ⊙ W with its own Adam (no decay):
/// the weights that training pushes away from zero gain score. M is the top (1 - s_t) of S per tensor or globally
/// (hard, s_t on the cubic schedule) or σ(S) > τ with an L1 penalty λ_t · mean σ(S) (soft, λ_t on the same ramp).
/// From `end` on the mask is held and the scores stop training.
struct MovementPruner {
    opts: Options,
    total_steps: usize,
    targets: Vec<Scored>,
    optim: AdamW,
    /// The weights' warm-up and decay, applied to `opts.score_lr` as Sanh et al.'s one scheduler does.
    schedule: train::LinearSchedule,
    frozen: bool,
}

impl MovementPruner {
    fn new(model: &Bert, opts: Options, topts: &TrainOptions, total_steps: usize) -> Result<Self> {
        let mut targets = Vec::new();
        for (name, w) in model.named_params() {
            if is_target(&name, w.dims()) {
                let score = match opts.score_init {
                    ScoreInit::Zeros => Var::zeros(w.dims(), DType::F32, w.device())?,
                    // |W| over its mean: the first masks are magnitude's, the drift of ±1 the scores learn over a few
                    // hundred Adam steps reorders the weights near the threshold.
                    ScoreInit::Magnitude => Var::from_tensor(&w.abs()?.broadcast_div(&w.abs()?.mean_all()?)?)?,
                };
                let keep = Tensor::ones(w.dims(), DType::F32, w.device())?;
                targets.push(Scored { name, k: w.dims()[1], score, keep });
            }
        }
        let optim = AdamW::new(targets.iter().map(|t| (t.score.clone(), 0.0)).collect(), opts.score_lr);
        let schedule = train::LinearSchedule {
            lr: 1.0,
            warmup_steps: (total_steps as f64 * topts.warmup).round() as usize,
            total_steps: total_steps.max(1),
        };
        Ok(Self { opts, total_steps, targets, optim, schedule, frozen: false })
    }

    /// Recomputes every mask from the scores for `step`.
    fn update_masks(&mut self, step: usize) -> Result<()> {
        let scores: Vec<Vec<f32>> = self.targets.iter().map(|t| values(&t.score)).collect::<Result<_>>()?;
        let masks: Vec<Vec<bool>> = match self.opts.method {
            Method::SoftMovement => {
                // σ(s) > τ without a sigmoid per weight.
                let logit = (self.opts.threshold / (1.0 - self.opts.threshold)).ln() as f32;
                scores.iter().map(|s| s.iter().map(|&v| v > logit).collect()).collect()
            }
            _ => {
                let refs: Vec<(&[f32], usize)> = scores.iter().zip(&self.targets).map(|(s, t)| (&s[..], t.k)).collect();
                keep_masks(&refs, self.opts.sparsity_at(step, self.total_steps), self.opts.scope, None)?
            }
        };
        for (t, keep) in self.targets.iter_mut().zip(masks) {
            let keep: Vec<f32> = keep.iter().map(|&k| f32::from(u8::from(k))).collect();
            t.keep = Tensor::from_vec(keep, t.score.dims(), t.score.device())?;
        }
        Ok(())
    }

    /// `model` with each target weight replaced by `f(weight, target)`.
    fn with_weights(&self, model: &mut Bert, f: impl Fn(&Tensor, &Scored) -> candle_core::Result<Tensor>) -> Result<()> {
        let index: std::collections::HashMap<&str, &Scored> = self.targets.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut failure = None;
        model.visit(&mut |name, w| {
            if let Some(t) = index.get(name) {
                match f(w, t) {
                    Ok(masked) => *w = masked,
                    Err(e) => failure = Some(e),
                }
            }
        });
        failure.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Writes the last masks into the trained weights: pruned ones become exact zeros.
    fn finish(&self, model: &mut Bert) -> Result<()> {
        self.with_weights(model, |w, t| w.detach().mul(&t.keep))
    }
}

impl Hook for MovementPruner {
    fn prepare(&mut self, step: usize, model: &Bert) -> Result<Prepared> {
        if !self.frozen {
            self.update_masks(step)?;
            self.frozen = step as f64 + 1.0 >= self.opts.end * self.total_steps as f64;
        }
        let mut masked = model.clone();
        if self.frozen {
            self.with_weights(&mut masked, |w, t| w.mul(&t.keep))?;
            return Ok(Prepared { model: Some(masked), penalty: None });
        }
        self.with_weights(&mut masked, |w, t| straight_through(w, &t.keep, t.score.as_tensor()))?;
        let lambda = self.opts.l1 * self.opts.ramp(step, self.total_steps);
        let penalty = if self.opts.method == Method::SoftMovement && lambda > 0.0 {
            // λ · the mean over Linears of mean σ(S): the L1 norm of the soft mask, per weight.
            let mut sum = Tensor::zeros((), DType::F32, &candle_core::Device::Cpu)?;
            for t in &self.targets {
                let sigmoid = (t.score.as_tensor().neg()?.exp()? + 1.0)?.recip()?; // (N, K)
                sum = (sum + sigmoid.mean_all()?)?;
            }
            Some(("l1", (sum * (lambda / self.targets.len() as f64))?))
        } else {
            None
        };
        Ok(Prepared { model: Some(masked), penalty })
    }

    fn before_update(&mut self, step: usize, _params: &[(String, Var)], grads: &GradStore) -> Result<()> {
        if !self.frozen {
            self.optim.lr = self.opts.score_lr * self.schedule.at(step);
            self.optim.step(grads, 1.0)?;
        }
        Ok(())
    }

    fn after_update(&mut self, _step: usize, _params: &[(String, Var)]) -> Result<()> {
        Ok(())
    }
}

/// One-shot magnitude pruning of `model` to `opts.sparsity`.
pub fn oneshot(model: &mut Bert, opts: &Options) -> Result<()> {
    if opts.method != Method::Magnitude {
        bail!("--method movement scores weights by how they move during training: pass --data to fine-tune while pruning");
    }
    let targets: Vec<(String, candle_core::Tensor)> =
        model.named_params().into_iter().filter(|(n, t)| is_target(n, t.dims())).collect();
    let scores: Vec<(Vec<f32>, usize)> = targets
        .iter()
        .map(|(_, t)| Ok((t.flatten_all()?.to_vec1::<f32>()?.iter().map(|w| w.abs()).collect(), t.dims()[1])))
        .collect::<Result<_>>()?;
    let refs: Vec<(&[f32], usize)> = scores.iter().map(|(s, k)| (&s[..], *k)).collect();
    let masks = keep_masks(&refs, opts.target(), opts.scope, opts.nm)?;
    let pruned: std::collections::HashMap<&str, &[bool]> = targets.iter().map(|(n, _)| n.as_str()).zip(masks.iter().map(|m| &m[..])).collect();
    let mut failure = None;
    model.visit(&mut |name, t| {
        if let Some(keep) = pruned.get(name) {
            let masked = t
                .flatten_all()
                .and_then(|f| f.to_vec1::<f32>())
                .map(|w| w.iter().zip(*keep).map(|(&w, &k)| if k { w } else { 0.0 }).collect::<Vec<f32>>())
                .and_then(|w| candle_core::Tensor::from_vec(w, t.dims(), t.device()));
            match masked {
                Ok(m) => *t = m,
                Err(e) => failure = Some(e),
            }
        }
    });
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Fraction of zeros over the encoder Linears' weights, and their count.
pub fn measured_sparsity(model: &Bert) -> Result<(f64, usize)> {
    let (mut zeros, mut total) = (0usize, 0usize);
    for (n, t) in model.named_params() {
        if is_target(&n, t.dims()) {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            zeros += v.iter().filter(|&&w| w == 0.0).count();
            total += v.len();
        }
    }
    Ok((zeros as f64 / total.max(1) as f64, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(sparsity: f64) -> Options {
        Options { begin: 0.2, end: 0.6, ..Options::magnitude(sparsity, Scope::Layer) }
    }

    #[test]
    fn masks_prune_exactly_the_smallest() {
        let a: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..100).map(|i| 1000.0 + i as f32).collect();
        let layer = keep_masks(&[(&a, 10), (&b, 10)], 0.3, Scope::Layer, None).unwrap();
        for m in &layer {
            assert_eq!(m.iter().filter(|&&k| !k).count(), 30);
            assert!(m[..30].iter().all(|&k| !k) && m[30..].iter().all(|&k| k));
        }
        // One threshold: all of the small tensor's 60 go before any of the large one's.
        let global = keep_masks(&[(&a, 10), (&b, 10)], 0.3, Scope::Global, None).unwrap();
        assert_eq!(global[0].iter().filter(|&&k| !k).count(), 60);
        assert!(global[1].iter().all(|&k| k));
        // Ties are broken by position, so the pruned count stays exact.
        let flat = vec![1.0f32; 40];
        assert_eq!(keep_masks(&[(&flat, 8)], 0.25, Scope::Layer, None).unwrap()[0].iter().filter(|&&k| !k).count(), 10);
    }

    #[test]
    fn n_m_keeps_the_largest_n_of_every_m() {
        let s = [0.1f32, -5.0, 3.0, 2.0, 9.0, 8.0, 7.0, 6.0];
        let m = keep_masks(&[(&s, 8)], 0.0, Scope::Layer, Some((2, 4))).unwrap();
        assert_eq!(m[0], [false, false, true, true, true, true, false, false]);
        assert!(keep_masks(&[(&s[..6], 6)], 0.0, Scope::Layer, Some((2, 4))).unwrap_err().to_string().contains("multiple of 4"));
    }

    #[test]
    fn scores_learn_through_the_mask() {
        let dev = candle_core::Device::Cpu;
        let w = Var::new(&[[0.5f32, -2.0, 3.0], [1.5, -0.25, 4.0]], &dev).unwrap();
        let s = Var::new(&[[0.1f32, -0.3, 0.2], [0.0, 0.7, -0.1]], &dev).unwrap();
        let keep = Tensor::new(&[[1f32, 0.0, 1.0], [0.0, 1.0, 1.0]], &dev).unwrap();
        let up = Tensor::new(&[[1f32, 2.0, -1.0], [0.5, -3.0, 2.0]], &dev).unwrap(); // ∂L/∂W'
        let masked = straight_through(w.as_tensor(), &keep, s.as_tensor()).unwrap();
        let want = (w.as_tensor() * &keep).unwrap();
        assert_eq!(masked.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap(), "forward: exactly W ⊙ M");
        let grads = (masked * &up).unwrap().sum_all().unwrap().backward().unwrap();
        let g = |v: &Var| grads.get(v.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        // Pruned weights' scores learn too: that is how a weight comes back.
        assert_eq!(g(&s), (&up * w.as_tensor()).unwrap().to_vec2::<f32>().unwrap());
        assert_eq!(g(&w), (&up * &keep).unwrap().to_vec2::<f32>().unwrap());
    }

    #[test]
    fn cubic_schedule_rises_fast_then_holds() {
        let o = opts(0.9);
        assert_eq!(o.sparsity_at(0, 100), 0.0);
        assert_eq!(o.sparsity_at(18, 100), 0.0);
        let mid = o.sparsity_at(39, 100); // halfway through the window: 0.9 (1 - 0.5³)
        assert!((mid - 0.9 * 0.875).abs() < 1e-9, "{mid}");
        assert_eq!(o.sparsity_at(59, 100), 0.9);
        assert_eq!(o.sparsity_at(99, 100), 0.9);
        let nm = Options { nm: Some((2, 4)), ..o };
        assert_eq!((nm.sparsity_at(18, 100), nm.sparsity_at(19, 100)), (0.0, 0.5));
        assert!(opts(1.0).check().is_err() && Options { nm: Some((4, 4)), ..o }.check().is_err());
        assert!(Options { begin: 0.7, ..o }.check().is_err());
    }
}
