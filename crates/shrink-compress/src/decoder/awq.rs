//! Activation-aware scaling searched per site (AWQ, Lin et al. 2023), on the error the runtime actually makes.
//!
//! Each site's input channels are divided by factors s folded into the tensor that makes them, as SmoothQuant does
//! (`calib.rs`), so the f32 function is unchanged; what changes is how the weights W·diag(s) and the activations
//! x / s round. AWQ picks s = mean|x|^r / mean|w|^(1-r) with r from a grid, by the output error on calibration
//! inputs. Here the candidates are that family, SmoothQuant's (max |x|, max |w|) and no scaling, and the error is
//! measured by running the sampled inputs through the runtime's own int8 / int4 Linear, with its int8
//! activations in blocks of 32: the one objective covers weight-only rounding (where AWQ helps int4) and activation outliers
//! (where SmoothQuant helps int8). Sites whose factors fold into another site's weights (down into up's rows, O
//! into V's) are chosen first, so the later searches see the weights they will quantize.

use std::collections::HashMap;

use anyhow::{bail, Result};
use shrink_format::quant::{Int4Weight, Int8Weight};
use shrink_kernels::qgemm::QuantActs;
use shrink_runtime::linear::{Linear, Stored};
use shrink_runtime::llama::{LlamaConfig, Site};

use super::calib::{factors, linears, Folding, Stats, Tensors};

/// Tokens whose inputs `calibrate` keeps per site for the search.
pub const SAMPLES: usize = 512;
/// The grid of the exponent r: 0.05, 0.10, ..., 1.
const RATIOS: usize = 20;
/// The order of the search: down and O fold into rows that Q, K, V and gate, up read.
const ORDER: [Site; 4] = [Site::Down, Site::O, Site::Qkv, Site::GateUp];

/// What the search chose for one site.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub layer: usize,
    pub site: Site,
    /// "none", "awq" (mean |x|, mean |w|) or "smoothquant" (max |x|, max |w|), at exponent `ratio`.
    pub family: &'static str,
    pub ratio: f32,
    /// Squared output error over the samples, chosen and unscaled.
    pub error: f64,
    pub unscaled: f64,
}

/// The site's Linears stacked along N: (N, K).
fn stacked(t: &Tensors, site: Site) -> Vec<f32> {
    linears(site).iter().flat_map(|n| t[n].iter().copied()).collect()
}

/// ||(runtime(x / s, W·diag(s)) - x·Wᵀ)·diag(post)||² over the samples x (m, K). `post` (N) undoes earlier folds
/// into these rows (V's by O's factors, up's by down's), so every site's error is in the original model's units.
struct Objective<'a> {
    x: &'a [f32],
    m: usize,
    k: usize,
    want: Vec<f32>, // (m, N)
    post: Vec<f32>, // N
    int4: bool,
    qa: QuantActs,
}

impl<'a> Objective<'a> {
    fn new(x: &'a [f32], w: &[f32], k: usize, post: Vec<f32>, int4: bool) -> Result<Self> {
        let (m, n) = (x.len() / k, w.len() / k);
        let mut want = vec![0f32; m * n];
        let mut qa = QuantActs::new();
        Linear::stack(vec![Stored::F32 { w: w.to_vec(), n }], k)?.forward(x, m, &mut want, &mut qa, false, None);
        Ok(Self { x, m, k, want, post, int4, qa })
    }

    /// The error with input factors `s` (K).
    fn error(&mut self, w: &[f32], s: &[f32]) -> Result<f64> {
        let (m, k, n) = (self.m, self.k, w.len() / self.k);
        let mut ws = w.to_vec();
        for row in ws.chunks_exact_mut(k) {
            row.iter_mut().zip(s).for_each(|(v, s)| *v *= s);
        }
        let mut xs = self.x.to_vec();
        for row in xs.chunks_exact_mut(k) {
            row.iter_mut().zip(s).for_each(|(v, s)| *v /= s);
        }
        let q = if self.int4 { Stored::Int4(Int4Weight::encode(&ws, n, k, 32)?) } else { Stored::Int8(Int8Weight::encode_f16(&ws, n, k)) };
        let mut got = vec![0f32; m * n];
        Linear::stack(vec![q], k)?.forward(&xs, m, &mut got, &mut self.qa, false, None);
        let post = self.post.iter().cycle();
        Ok(got.iter().zip(&self.want).zip(post).map(|((a, b), p)| f64::from((a - b) * p).powi(2)).sum())
    }
}

/// Searches and folds the factors of one layer's four sites into `t`; returns each site's input factors 1 / s (for
/// its Hessian) and the choices.
pub fn search(cfg: &LlamaConfig, layer: usize, t: &mut Tensors, stats: &Stats, int4: bool) -> Result<(HashMap<Site, Vec<f32>>, Vec<Choice>)> {
    let fold = Folding::new(cfg);
    let (mut inv, mut choices) = (HashMap::new(), Vec::new());
    // The factors folded into rows of later sites' Linears: O's into V's, down's into up's.
    let mut folded: HashMap<Site, Vec<f32>> = HashMap::new();
    for site in ORDER {
        let Some(x) = stats.samples.get(&(layer, site)) else {
            bail!("layer {layer}: no calibration samples for the AWQ search");
        };
        let w = stacked(t, site);
        let k = stats.amax[&(layer, site)].len();
        let post = match site {
            Site::Qkv => [vec![1.0; cfg.h * cfg.d + cfg.g * cfg.d], folded[&Site::O].clone()].concat(),
            Site::GateUp => [vec![1.0; cfg.f], folded[&Site::Down].clone()].concat(),
            _ => vec![1.0; w.len() / k],
        };
        let mut objective = Objective::new(x, &w, k, post, int4)?;
        let ones = fold.reduce(site, &vec![1.0; k]);
        let unscaled = objective.error(&w, &fold.expand(site, &ones))?;
        let mut best = (unscaled, "none", 0.0, ones);
        for (family, stat, mean) in [("awq", &stats.amean, true), ("smoothquant", &stats.amax, false)] {
            let (xs, ws) = fold.stats(site, t, &stat[&(layer, site)], mean);
            for i in 1..=RATIOS {
                let ratio = i as f32 / RATIOS as f32;
                let s = factors(&xs, &ws, ratio);
                let e = objective.error(&w, &fold.expand(site, &s))?;
                if e < best.0 {
                    best = (e, family, ratio, s);
                }
            }
        }
        let (error, family, ratio, s) = best;
        inv.insert(site, fold.fold(cfg, site, t, &s));
        folded.insert(site, s);
        choices.push(Choice { layer, site, family, ratio, error, unscaled });
    }
    Ok((inv, choices))
}

/// One line on the choices: how much the search cut the output error, and which forms it took.
pub fn describe(choices: &[Choice]) -> String {
    let gain = choices.iter().map(|c| if c.unscaled > 0.0 { (c.error / c.unscaled).ln() } else { 0.0 }).sum::<f64>() / choices.len().max(1) as f64;
    let count = |f: &str| choices.iter().filter(|c| c.family == f).count();
    format!(
        "AWQ search: {} sites, output error {:.2}x of unscaled (geometric mean); awq form {}, smoothquant form {}, unscaled {}",
        choices.len(),
        gain.exp(),
        count("awq"),
        count("smoothquant"),
        count("none")
    )
}
