//! Calibration of a decoder on a text file, and SmoothQuant folded into its weights.
//!
//! The fp32 model runs windows of the text; each layer's four Linear inputs (`Site`) give a per-channel max |x| and
//! mean |x|, for GPTQ a Hessian, and for the AWQ search (`awq.rs`) a sample of the input rows themselves. SmoothQuant (Xiao et al. 2022) divides input channel j by
//! s_j = max|x_j|^α / max|W_:,j|^(1-α) and multiplies the weights' column j by it. Here the division is folded into
//! the tensor that makes the input, so the file computes the same function in f32 and llama.cpp runs it unchanged:
//! - Q, K, V and gate, up: into the RMSNorm weight before them;
//! - down: into up's rows (silu(gate) * up is linear in up);
//! - O: into V's rows. Query heads of one group read the same V head, so s is shared by (key/value head, d): the
//!   largest |x| over the group's heads.

use std::collections::HashMap;

use anyhow::{bail, Result};
use shrink_io::events;
use shrink_runtime::llama::{KvCache, Llama, LlamaConfig, Site};

use crate::quantize::gptq::Hessian;

pub struct Stats {
    /// max |x| and mean |x| per input channel, per (layer, site).
    pub amax: HashMap<(usize, Site), Vec<f32>>,
    pub amean: HashMap<(usize, Site), Vec<f32>>,
    /// Input rows (rows x K) of evenly spaced tokens, per (layer, site), when asked.
    pub samples: HashMap<(usize, Site), Vec<f32>>,
    /// Hessians of the inputs, per (layer, site), when asked.
    pub hessians: HashMap<(usize, Site), Hessian>,
}

/// Runs `ids` in windows of `ctx` tokens through `model`, keeping the inputs of about `samples` tokens.
pub fn calibrate(model: &Llama, ids: &[u32], ctx: usize, hessians: bool, samples: usize) -> Result<Stats> {
    if ids.len() < 2 {
        bail!("the calibration text has {} tokens; it needs at least 2", ids.len());
    }
    let mut stats = Stats { amax: HashMap::new(), amean: HashMap::new(), samples: HashMap::new(), hessians: HashMap::new() };
    let every = ids.len().div_ceil(samples.max(1));
    let bar = events::bar(ids.len().div_ceil(ctx), "calibrate");
    for (w, window) in ids.chunks(ctx).enumerate() {
        model.extend_tapped(&mut KvCache::default(), window, None, true, &mut |layer, site, x| {
            let k = x.len() / window.len();
            let m = stats.amax.entry((layer, site)).or_insert_with(|| vec![0.0; k]);
            let a = stats.amean.entry((layer, site)).or_insert_with(|| vec![0.0; k]);
            for (i, row) in x.chunks_exact(k).enumerate() {
                m.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
                a.iter_mut().zip(row).for_each(|(a, v)| *a += v.abs() / ids.len() as f32);
                if samples > 0 && (w * ctx + i).is_multiple_of(every) {
                    stats.samples.entry((layer, site)).or_default().extend_from_slice(row);
                }
            }
            if hessians {
                stats.hessians.entry((layer, site)).or_insert_with(|| Hessian::new(k)).add(x);
            }
        })?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(stats)
}

/// A layer's tensors as f32, by GGUF leaf name (`attn_q`, `ffn_norm`, ...): norms (C), Linears (N, K) row-major.
pub type Tensors = HashMap<&'static str, Vec<f32>>;

/// The statistic of each of the `k` columns over the given (N, K) weights: max |w|, or mean |w|.
fn column_stat(ws: &[&[f32]], k: usize, mean: bool) -> Vec<f32> {
    let mut m = vec![0f32; k];
    let rows = ws.iter().map(|w| w.len() / k).sum::<usize>() as f32;
    for w in ws {
        for row in w.chunks_exact(k) {
            if mean {
                m.iter_mut().zip(row).for_each(|(m, v)| *m += v.abs() / rows);
            } else {
                m.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
            }
        }
    }
    m
}

/// SmoothQuant's factors x^α / w^(1-α); 1 where a channel never fired or its weights are all zero.
pub fn factors(x: &[f32], w: &[f32], alpha: f32) -> Vec<f32> {
    x.iter().zip(w).map(|(&x, &w)| if x > 0.0 && w > 0.0 { (x.powf(alpha) / w.powf(1.0 - alpha)).clamp(1e-5, 1e5) } else { 1.0 }).collect()
}

fn scale_columns(w: &mut [f32], s: &[f32]) {
    for row in w.chunks_exact_mut(s.len()) {
        row.iter_mut().zip(s).for_each(|(v, s)| *v *= s);
    }
}

fn divide_rows(w: &mut [f32], k: usize, s: &[f32]) {
    for (row, s) in w.chunks_exact_mut(k).zip(s) {
        row.iter_mut().for_each(|v| *v /= s);
    }
}

fn get<'a>(t: &'a mut Tensors, name: &str) -> &'a mut Vec<f32> {
    t.get_mut(name).unwrap_or_else(|| panic!("a layer's tensors hold {name}"))
}

/// The Linears that read a site's input, and the tensor whose output it is (a norm, or rows of a Linear).
pub fn linears(site: Site) -> &'static [&'static str] {
    match site {
        Site::Qkv => &["attn_q", "attn_k", "attn_v"],
        Site::O => &["attn_output"],
        Site::GateUp => &["ffn_gate", "ffn_up"],
        Site::Down => &["ffn_down"],
    }
}

/// The factors a site folds: one per input channel, except O's, one per (key/value head, d), since the query heads
/// of a group read the same V rows. `expand` gives one per input channel.
pub struct Folding {
    per_group: usize,
    d: usize,
}

impl Folding {
    pub fn new(cfg: &LlamaConfig) -> Self {
        Self { per_group: cfg.h / cfg.g, d: cfg.d }
    }

    /// A per-input-channel statistic reduced to the factors' shape (O: the largest over the group's heads).
    pub fn reduce(&self, site: Site, m: &[f32]) -> Vec<f32> {
        let (per_group, d) = (self.per_group, self.d);
        match site {
            Site::O => (0..m.len() / per_group).map(|r| (0..per_group).map(|i| m[((r / d) * per_group + i) * d + r % d]).fold(0f32, f32::max)).collect(),
            _ => m.to_vec(),
        }
    }

    /// One factor per input channel of the site's Linears.
    pub fn expand(&self, site: Site, s: &[f32]) -> Vec<f32> {
        let (per_group, d) = (self.per_group, self.d);
        match site {
            Site::O => (0..s.len() * per_group).map(|col| s[col / d / per_group * d + col % d]).collect(),
            _ => s.to_vec(),
        }
    }

    /// A site's per-channel input statistic `x` and the same statistic (max or mean |w|) of its weights' columns,
    /// both reduced to the factors' shape: what `factors` takes.
    pub fn stats(&self, site: Site, t: &Tensors, x: &[f32], mean: bool) -> (Vec<f32>, Vec<f32>) {
        let ws: Vec<&[f32]> = linears(site).iter().map(|n| t[n].as_slice()).collect();
        (self.reduce(site, x), self.reduce(site, &column_stat(&ws, x.len(), mean)))
    }

    /// Divides the site's input by `s` in the tensor that makes it and multiplies its Linears' columns by it: the
    /// same function in f32. Returns the input factors 1 / s, by which the site's Hessian is scaled.
    pub fn fold(&self, cfg: &LlamaConfig, site: Site, t: &mut Tensors, s: &[f32]) -> Vec<f32> {
        match site {
            Site::Qkv => get(t, "attn_norm").iter_mut().zip(s).for_each(|(w, s)| *w /= s),
            Site::GateUp => get(t, "ffn_norm").iter_mut().zip(s).for_each(|(w, s)| *w /= s),
            // Row j of up makes channel j of silu(gate) * up.
            Site::Down => divide_rows(get(t, "ffn_up"), cfg.c, s),
            // Attention column (head, j) is made from V row (head / (H / G), j).
            Site::O => divide_rows(get(t, "attn_v"), cfg.c, s),
        }
        let s = self.expand(site, s);
        for n in linears(site) {
            scale_columns(get(t, n), &s);
        }
        s.iter().map(|s| 1.0 / s).collect()
    }
}

/// Folds SmoothQuant at strength `alpha` into one layer's tensors; returns each site's input factors 1 / s (one per
/// input column of its Linears), by which its Hessian is scaled.
pub fn smooth(cfg: &LlamaConfig, layer: usize, t: &mut Tensors, amax: &HashMap<(usize, Site), Vec<f32>>, alpha: f32) -> HashMap<Site, Vec<f32>> {
    let fold = Folding::new(cfg);
    let mut inv = HashMap::new();
    // The weights' maxima of each site are taken before any fold into them (V and up rows), as SmoothQuant does.
    let s: Vec<(Site, Vec<f32>)> = [Site::Qkv, Site::GateUp, Site::Down, Site::O]
        .into_iter()
        .map(|site| {
            let (x, w) = fold.stats(site, t, &amax[&(layer, site)], false);
            (site, factors(&x, &w, alpha))
        })
        .collect();
    for (site, s) in s {
        inv.insert(site, fold.fold(cfg, site, t, &s));
    }
    inv
}
