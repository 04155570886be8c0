//! Structured pruning that turns into speed: score heads, FFN neurons and layers (`importance`), pick what to keep,
//! cut it out of the weights (`surgery`), optionally recover with the fine-tune loop. The output is a normal model
//! folder whose config.json carries per-layer head counts and FFN widths.
//!
//! Ranking: heads globally over the per-layer-normalised scores (Michel et al.), every layer keeping at least its
//! best head; FFN neurons per layer (each layer keeps the same fraction, rounded to a multiple of `FFN_MULTIPLE`
//! so int4 groups still divide it); layers by drop-one loss increase.

pub mod distill;
pub mod importance;
pub mod job;
pub mod plot;
pub mod surgery;

use anyhow::{bail, Result};
use shrink_io::choices;
use shrink_model::Bert;

use importance::{Method, Scores};
use surgery::Keep;

/// FFN widths stay multiples of this: the int4 group (32) must divide the output Linear's K.
pub const FFN_MULTIPLE: usize = 32;

choices! {
    pub enum Schedule {
        Oneshot = "oneshot": "Score once, cut once",
        Iterative = "iterative": "`--steps` rounds, each re-scoring the partly pruned model and cutting an equal share",
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Fraction of all heads to remove, in [0, 1).
    pub heads: f64,
    /// Fraction of every layer's FFN neurons to remove, in [0, 1).
    pub ffn: f64,
    /// Whole layers to drop (the least important by drop-one).
    pub layers: usize,
    pub schedule: Schedule,
    pub steps: usize,
    pub method: Method,
    pub batch: usize,
}

impl Options {
    pub fn check(&self, layers: usize) -> Result<()> {
        for (flag, v) in [("--heads", self.heads), ("--ffn", self.ffn)] {
            if !(0.0..1.0).contains(&v) {
                bail!("{flag} {v}: the fraction to remove must be in [0, 1)");
            }
        }
        if self.layers >= layers {
            bail!("--layers {}: the model has {layers} layers and must keep at least one", self.layers);
        }
        if self.schedule == Schedule::Iterative && self.steps == 0 {
            bail!("--steps must be at least 1");
        }
        Ok(())
    }
}

/// FFN width kept out of `f0` after removing `removed` of it: a multiple of FFN_MULTIPLE, at least one, at most f0.
pub fn kept_width(f0: usize, removed: f64) -> usize {
    let multiples = ((f0 as f64 * (1.0 - removed)) / FFN_MULTIPLE as f64).round() as usize;
    (multiples * FFN_MULTIPLE).clamp(FFN_MULTIPLE.min(f0), f0)
}

/// Indices of the `n` largest scores, sorted by index.
pub fn top(scores: &[f64], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut keep = order[..n.min(order.len())].to_vec();
    keep.sort_unstable();
    keep
}

/// The layers left after dropping the `drop` least important (in order).
pub fn kept_layers(scores: &Scores, drop: usize) -> Result<Vec<usize>> {
    let n = scores.heads.len();
    if drop == 0 {
        return Ok((0..n).collect());
    }
    if scores.layers.len() != n {
        bail!("internal: dropping layers needs layer scores");
    }
    Ok(top(&scores.layers, n.saturating_sub(drop)))
}

/// What to keep given `scores`: `layers` (from `kept_layers`), `total_heads` heads over them (each keeps its best)
/// and `widths[l]` neurons in layer l.
pub fn select(scores: &Scores, layers: Vec<usize>, total_heads: usize, widths: &[usize]) -> Keep {
    let mut heads: Vec<Vec<usize>> = layers.iter().map(|&l| top(&scores.heads[l], 1)).collect();
    // (score, position in `layers`, head) of every head beyond each layer's best.
    let mut rest: Vec<(f64, usize, usize)> = Vec::new();
    for (i, &l) in layers.iter().enumerate() {
        rest.extend(scores.heads[l].iter().enumerate().filter(|(h, _)| !heads[i].contains(h)).map(|(h, &s)| (s, i, h)));
    }
    rest.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    for &(_, i, h) in rest.iter().take(total_heads.saturating_sub(layers.len())) {
        heads[i].push(h);
    }
    heads.iter_mut().for_each(|h| h.sort_unstable());
    let neurons = layers.iter().map(|&l| top(&scores.neurons[l], widths[l])).collect();
    Keep { layers, heads, neurons }
}

/// Prunes `model` as `opts` say, scoring on `examples`.
pub fn prune(mut model: Bert, examples: &[crate::example::Example], opts: &Options) -> Result<Bert> {
    opts.check(model.layers.len())?;
    let steps = if opts.schedule == Schedule::Iterative { opts.steps } else { 1 };
    // Targets are fractions of the original model; `f0` follows its layers through the cuts.
    let mut f0: Vec<usize> = model.layers.iter().map(|l| l.intermediate.weight.dims()[0]).collect();
    let mut h0: Vec<usize> = model.layers.iter().map(|l| l.attention.heads).collect();
    for step in 1..=steps {
        let share = step as f64 / steps as f64;
        let drop_layers = if step == 1 { opts.layers } else { 0 };
        let scores = importance::score(&model, examples, opts.method, opts.batch, drop_layers > 0)?;
        let widths: Vec<usize> = f0.iter().map(|&f| kept_width(f, opts.ffn * share)).collect();
        let layers = kept_layers(&scores, drop_layers)?;
        let heads_left: usize = layers.iter().map(|&l| h0[l]).sum();
        let total_heads = ((heads_left as f64) * (1.0 - opts.heads * share)).round() as usize;
        let keep = select(&scores, layers, total_heads, &widths);
        f0 = keep.layers.iter().map(|&l| f0[l]).collect();
        h0 = keep.layers.iter().map(|&l| h0[l]).collect();
        model = surgery::cut(&model, &keep)?;
        eprintln!(
            "round {step}/{steps}: {} layers, heads {:?}, FFN {:?}",
            model.layers.len(),
            model.config.layer_heads.as_deref().unwrap_or_default(),
            model.config.layer_intermediate_sizes.as_deref().unwrap_or_default()
        );
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_widths_are_multiples_of_32_within_the_layer() {
        assert_eq!(kept_width(1536, 0.5), 768);
        assert_eq!(kept_width(1536, 0.3), 1088); // 1075.2 -> the nearest multiple
        assert_eq!(kept_width(1536, 0.99), 32); // never empty
        assert_eq!(kept_width(1536, 0.0), 1536);
        assert_eq!(kept_width(20, 0.5), 20); // narrower than one multiple: left alone
    }

    #[test]
    fn heads_rank_globally_with_one_per_layer_and_layers_by_drop_one() {
        let scores = Scores {
            method: Method::L2,
            samples: 0,
            heads: vec![vec![0.1, 0.2, 0.05], vec![0.9, 0.8, 0.7], vec![0.3, 0.6, 0.4]],
            neurons: vec![vec![3.0, 1.0, 2.0]; 3],
            layers: vec![0.5, 0.01, 0.2],
        };
        let keep = select(&scores, kept_layers(&scores, 0).unwrap(), 5, &[2, 1, 3]);
        // Every layer keeps its best head; the other 2 slots go to the globally best remaining ones (both layer 1's).
        assert_eq!(keep.heads, vec![vec![1], vec![0, 1, 2], vec![1]]);
        assert_eq!(keep.neurons, vec![vec![0, 2], vec![0], vec![0, 1, 2]]);
        let layers = kept_layers(&scores, 1).unwrap();
        assert_eq!(layers, vec![0, 2], "layer 1 matters least by drop-one");
    }
}
