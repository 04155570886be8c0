//! Mixed precision for decoders under a perplexity budget (`shrink quantize --max-ppl-increase`). Every site (a
//! layer's QKV, O, gate + up or down) starts in int4. Each site's int8 version is swapped in alone and scored by
//! how much it cuts the KL divergence from the fp32 model on one window of held-out text, per byte it adds; then
//! the fewest sites in that order whose promotion keeps the held-out perplexity within the budget are found by
//! bisection, each step measured on the runtime. llama.cpp's Q4_K_M makes the same trade by a fixed rule (attn_v
//! and ffn_down wider in some layers); here the model's own measurements choose.

use anyhow::{bail, Result};
use shrink_eval::perplexity::{log_softmax, perplexity_of};
use shrink_io::events;
use shrink_runtime::linear::Linear;
use shrink_runtime::llama::{Llama, Site};

/// The budget: perplexity at most (1 + `max_increase` / 100) x the fp32 model's on `dev` (held-out tokens), in
/// windows of `ctx`.
pub struct Budget<'a> {
    pub max_increase: f64,
    pub dev: &'a [u32],
    pub ctx: usize,
}

/// One site's int8 version and the bytes it adds to the file over int4.
pub struct Alternate {
    pub layer: usize,
    pub site: Site,
    pub linear: Linear,
    pub extra_bytes: usize,
}

/// A site's measured value: the KL divergence (nats per token) its int8 version removes.
#[derive(Clone, Debug)]
pub struct Gain {
    pub layer: usize,
    pub site: Site,
    pub kl_cut: f64,
    pub extra_bytes: usize,
}

#[derive(Debug)]
pub struct Outcome {
    /// Held-out perplexities: the fp32 model, all sites int4, and the chosen mix.
    pub fp32: f64,
    pub int4: f64,
    pub chosen: f64,
    /// Sites in the model; those promoted to int8, most valuable first; every site's gain in the search's order
    /// (none when int4 alone is within the budget).
    pub sites: usize,
    pub promoted: Vec<(usize, Site)>,
    pub gains: Vec<Gain>,
}

/// Mean KL(base || model) over the rows of `base` (log-probabilities of the window's positions, each V).
fn kl(model: &Llama, window: &[u32], base: &[Vec<f32>]) -> Result<f64> {
    let (v, logits) = (model.cfg.v, model.forward(window, None)?); // (T, V)
    let total: f64 = base
        .iter()
        .enumerate()
        .map(|(t, b)| {
            let lp = log_softmax(&logits[t * v..][..v]);
            b.iter().zip(&lp).map(|(&b, m)| (b as f64).exp() * (b as f64 - m)).sum::<f64>()
        })
        .sum();
    Ok(total / base.len() as f64)
}

/// Finds the fewest sites of `model` (all int4) whose int8 `alternates` keep its perplexity on `b.dev` within the
/// budget of `fp32`'s; the caller writes them (`model` keeps the last mix measured). An error when even every site
/// in int8 is over.
pub fn search(fp32: &Llama, model: &mut Llama, mut alternates: Vec<Alternate>, b: &Budget) -> Result<Outcome> {
    let base_ppl = perplexity_of(fp32, b.dev, b.ctx)?;
    let target = base_ppl * (1.0 + b.max_increase / 100.0);
    let int4 = perplexity_of(model, b.dev, b.ctx)?;
    let sites = alternates.len();
    let none = |chosen| Outcome { fp32: base_ppl, int4, chosen, sites, promoted: Vec::new(), gains: Vec::new() };
    if int4 <= target {
        return Ok(none(int4));
    }
    // Sensitivity on the first window: fp32's log-probabilities once, then each site's int8 version alone.
    let window = &b.dev[..b.ctx.min(b.dev.len())];
    let v = fp32.cfg.v;
    let base: Vec<Vec<f32>> = fp32.forward(window, None)?.chunks_exact(v).map(|r| log_softmax(r).iter().map(|&x| x as f32).collect()).collect();
    let kl4 = kl(model, window, &base)?;
    let bar = events::bar(alternates.len(), "site sensitivity");
    let mut gains = Vec::with_capacity(alternates.len());
    for a in &mut alternates {
        std::mem::swap(model.site_mut(a.layer, a.site), &mut a.linear);
        let with = kl(model, window, &base);
        std::mem::swap(model.site_mut(a.layer, a.site), &mut a.linear);
        gains.push(Gain { layer: a.layer, site: a.site, kl_cut: kl4 - with?, extra_bytes: a.extra_bytes });
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Most KL removed per byte added first (a greedy knapsack: the smallest file for the budget).
    let mut order: Vec<usize> = (0..gains.len()).collect();
    let value = |i: usize| gains[i].kl_cut / gains[i].extra_bytes.max(1) as f64;
    order.sort_by(|&x, &y| value(y).total_cmp(&value(x)));
    // Sites 0..n of `order` in int8, the rest int4; `is8` tracks which versions `model` holds.
    let mut is8 = vec![false; alternates.len()];
    let mut measure = |n: usize| -> Result<f64> {
        for (rank, &i) in order.iter().enumerate() {
            if (rank < n) != is8[i] {
                let a = &mut alternates[i];
                std::mem::swap(model.site_mut(a.layer, a.site), &mut a.linear);
                is8[i] = rank < n;
            }
        }
        perplexity_of(model, b.dev, b.ctx)
    };
    let all = measure(order.len())?;
    if all > target {
        bail!(
            "--max-ppl-increase {}: even every site in int8 gives perplexity {all:.3} on the held-out text, {:+.2}% over fp32's {base_ppl:.3}",
            b.max_increase,
            (all / base_ppl - 1.0) * 100.0
        );
    }
    // Bisection on the count: lo fails (int4 alone did), hi passes.
    let (mut lo, mut hi, mut chosen) = (0, order.len(), all);
    let bar = events::bar(order.len().ilog2() as usize + 1, "perplexity budget");
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let p = measure(mid)?;
        bar.set_message(format!("{mid} sites int8: {p:.3} (target {target:.3})"));
        if p <= target {
            (hi, chosen) = (mid, p);
        } else {
            lo = mid;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let promoted = order[..hi].iter().map(|&i| (gains[i].layer, gains[i].site)).collect();
    let gains = order.iter().map(|&i| gains[i].clone()).collect();
    Ok(Outcome { promoted, gains, ..none(chosen) })
}
