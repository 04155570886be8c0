//! Unstructured and N:M pruning of the encoder's Linear weights (Q, K, V, attention output, FFN in and out): one-shot
//! by magnitude, or during fine-tuning on the cubic schedule of Zhu & Gupta (2017), scored by magnitude |w| or by
//! movement (Sanh et al. 2020: S = -Σ_t w·∂L/∂w, the weights moving away from zero score high). The result is a dense
//! fp32 folder whose pruned weights are exact zeros; `shrink quantize --scheme sparse` stores it for the runtime's
//! sparse kernel. Embeddings, biases, LayerNorms and the head are never pruned.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp1, Layout, Var};
use rayon::prelude::*;
use shrink_model::Bert;

use crate::optim::f32_slice;
use crate::train::StepHook;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Keep the largest |w|.
    Magnitude,
    /// Keep the weights whose -Σ w·grad is largest (needs training data, and long training: the score ignores
    /// magnitude, so the first masks cut large weights as often as small ones; on BBC with 2-4 epochs it collapsed
    /// to chance where magnitude kept 90% accuracy at 90% sparsity).
    Movement,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// The same sparsity in every Linear.
    Layer,
    /// One threshold over all encoder Linears: layers that matter less give up more.
    Global,
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
}

impl Options {
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
        Ok(())
    }

    pub fn target(&self) -> f64 {
        self.nm.map_or(self.sparsity, |(n, m)| 1.0 - n as f64 / m as f64)
    }

    /// Sparsity after `step` of `total`: s (1 - (1 - progress)³) between begin and end (fast early, gentle late, so
    /// the network can recover); N:M has no intermediate pattern and is applied whole at `begin`.
    pub fn sparsity_at(&self, step: usize, total: usize) -> f64 {
        let (t0, t1) = (self.begin * total as f64, self.end * total as f64);
        let t = step as f64 + 1.0;
        if t < t0 {
            0.0
        } else if self.nm.is_some() || t >= t1 {
            self.target()
        } else {
            self.target() * (1.0 - (1.0 - (t - t0) / (t1 - t0)).powi(3))
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
    let keep_above = |threshold: (f32, usize), s: &[f32], offset: usize| -> Vec<bool> {
        // (score, global index) order makes ties deterministic and the pruned count exact.
        s.iter().enumerate().map(|(i, &v)| (v, offset + i) > threshold).collect()
    };
    let nth = |all: &mut Vec<(f32, usize)>, prune: usize| -> (f32, usize) {
        if prune == 0 {
            return (f32::NEG_INFINITY, 0);
        }
        let (_, t, _) = all.select_nth_unstable_by(prune - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        *t
    };
    match scope {
        Scope::Layer => Ok(scores
            .par_iter()
            .map(|&(s, _)| {
                let mut all: Vec<(f32, usize)> = s.iter().copied().zip(0..).collect();
                let t = nth(&mut all, (s.len() as f64 * sparsity).round() as usize);
                keep_above(t, s, 0)
            })
            .collect()),
        Scope::Global => {
            let mut all: Vec<(f32, usize)> = Vec::new();
            for &(s, _) in scores {
                let off = all.len();
                all.extend(s.iter().copied().zip(off..));
            }
            let total = all.len();
            let t = nth(&mut all, (total as f64 * sparsity).round() as usize);
            let mut off = 0;
            Ok(scores
                .iter()
                .map(|&(s, _)| {
                    let m = keep_above(t, s, off);
                    off += s.len();
                    m
                })
                .collect())
        }
    }
}

/// Zeroes a parameter where its mask is false, in place.
struct ApplyMask<'a>(&'a [bool]);

impl InplaceOp1 for ApplyMask<'_> {
    fn name(&self) -> &'static str {
        "apply-mask"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(w) = storage else { candle_core::bail!("apply-mask: parameters must be f32") };
        let Some((a, b)) = layout.contiguous_offsets() else { candle_core::bail!("apply-mask: parameter not contiguous") };
        w[a..b].par_iter_mut().zip(self.0).for_each(|(w, &keep)| {
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

/// One pruned parameter inside the training loop.
struct Target {
    /// Index into the trainer's params.
    param: usize,
    /// Input width K of the (N, K) weight.
    k: usize,
    /// Movement score per weight.
    score: Vec<f32>,
    keep: Vec<bool>,
    /// The value each pruned weight had when it was pruned: movement scores it with that value (as Sanh et al.'s
    /// straight-through masks do) and it comes back with it if its score climbs back into the kept set.
    shadow: Vec<f32>,
}

/// Gradual pruning inside the fine-tuning loop: recomputes the masks every `every` steps on the schedule and
/// re-applies them after every update (AdamW's momentum would otherwise revive pruned weights).
pub struct Pruner {
    opts: Options,
    total_steps: usize,
    every: usize,
    targets: Vec<Target>,
    current: f64,
}

impl Pruner {
    pub fn new(opts: Options, total_steps: usize) -> Self {
        // About 50 mask updates over the pruning window (Zhu & Gupta prune every few hundred of many thousand steps).
        let window = ((opts.end - opts.begin) * total_steps as f64).max(1.0);
        Self { opts, total_steps, every: (window / 50.0).ceil().max(1.0) as usize, targets: Vec::new(), current: 0.0 }
    }

    fn init(&mut self, params: &[(String, Var)]) {
        if self.targets.is_empty() {
            for (param, (name, v)) in params.iter().enumerate() {
                if is_target(name, v.dims()) {
                    let n = v.elem_count();
                    self.targets.push(Target { param, k: v.dims()[1], score: vec![0.0; n], keep: vec![true; n], shadow: vec![0.0; n] });
                }
            }
        }
    }
}

impl StepHook for Pruner {
    fn before_update(&mut self, _step: usize, params: &[(String, Var)], grads: &GradStore) -> Result<()> {
        self.init(params);
        if self.opts.method == Method::Movement {
            for t in &mut self.targets {
                let v = &params[t.param].1;
                let Some(g) = grads.get(v.as_tensor()) else { continue };
                let (gs, gl) = g.storage_and_layout();
                let g = f32_slice(&gs, gl)?;
                let (ws, wl) = v.as_tensor().storage_and_layout();
                let w = f32_slice(&ws, wl)?;
                let (keep, shadow) = (&t.keep, &t.shadow);
                t.score.par_iter_mut().enumerate().for_each(|(i, s)| *s -= if keep[i] { w[i] } else { shadow[i] } * g[i]);
            }
        }
        Ok(())
    }

    fn after_update(&mut self, step: usize, params: &[(String, Var)]) -> Result<()> {
        self.init(params);
        let want = self.opts.sparsity_at(step, self.total_steps);
        let due = want > self.current && ((step + 1).is_multiple_of(self.every) || want >= self.opts.target());
        if !due {
            if self.current > 0.0 {
                for t in &self.targets {
                    params[t.param].1.as_tensor().inplace_op1(&ApplyMask(&t.keep))?;
                }
            }
            return Ok(());
        }
        let values: Vec<Vec<f32>> = self.targets.iter().map(|t| values(&params[t.param].1)).collect::<Result<_>>()?;
        let scores: Vec<Vec<f32>> = match self.opts.method {
            Method::Magnitude => values.iter().map(|w| w.iter().map(|w| w.abs()).collect()).collect(),
            Method::Movement => self.targets.iter().map(|t| t.score.clone()).collect(),
        };
        let refs: Vec<(&[f32], usize)> = scores.iter().zip(&self.targets).map(|(s, t)| (&s[..], t.k)).collect();
        let masks = keep_masks(&refs, want, self.opts.scope, self.opts.nm)?;
        for ((t, keep), mut w) in self.targets.iter_mut().zip(masks).zip(values) {
            for i in 0..w.len() {
                match (t.keep[i], keep[i]) {
                    (true, false) => (t.shadow[i], w[i]) = (w[i], 0.0),
                    (false, true) => w[i] = t.shadow[i],
                    (false, false) => w[i] = 0.0,
                    (true, true) => {}
                }
            }
            t.keep = keep;
            let v = &params[t.param].1;
            v.set(&candle_core::Tensor::from_vec(w, v.dims(), v.device())?)?;
        }
        self.current = want;
        Ok(())
    }
}

/// One-shot magnitude pruning of `model` to `opts.sparsity`.
pub fn oneshot(model: &mut Bert, opts: &Options) -> Result<()> {
    if opts.method == Method::Movement {
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
        Options { sparsity, method: Method::Magnitude, scope: Scope::Layer, nm: None, begin: 0.2, end: 0.6 }
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
