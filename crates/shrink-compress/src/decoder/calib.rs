//! Calibration of a decoder on a text file, and SmoothQuant folded into its weights.
//!
//! The fp32 model runs windows of the text; each layer's four Linear inputs (`Site`) give a per-channel max |x|
//! and, for GPTQ, a Hessian. SmoothQuant (Xiao et al. 2022) divides input channel j by
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
    /// max |x| per input channel, per (layer, site).
    pub amax: HashMap<(usize, Site), Vec<f32>>,
    /// Hessians of the inputs, per (layer, site), when asked.
    pub hessians: HashMap<(usize, Site), Hessian>,
}

/// Runs `ids` in windows of `ctx` tokens through `model`.
pub fn calibrate(model: &Llama, ids: &[u32], ctx: usize, hessians: bool) -> Result<Stats> {
    if ids.len() < 2 {
        bail!("the calibration text has {} tokens; it needs at least 2", ids.len());
    }
    let mut stats = Stats { amax: HashMap::new(), hessians: HashMap::new() };
    let bar = events::bar(ids.len().div_ceil(ctx), "calibrate");
    for window in ids.chunks(ctx) {
        model.extend_tapped(&mut KvCache::default(), window, None, true, &mut |layer, site, x| {
            let k = x.len() / window.len();
            let m = stats.amax.entry((layer, site)).or_insert_with(|| vec![0.0; k]);
            for row in x.chunks_exact(k) {
                m.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
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

/// max |w| of each of the `k` columns over the given (N, K) weights.
fn column_amax(ws: &[&[f32]], k: usize) -> Vec<f32> {
    let mut m = vec![0f32; k];
    for w in ws {
        for row in w.chunks_exact(k) {
            m.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(v.abs()));
        }
    }
    m
}

/// SmoothQuant's factors; 1 where a channel never fired or its weights are all zero.
fn factors(x: &[f32], w: &[f32], alpha: f32) -> Vec<f32> {
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

/// Folds SmoothQuant at strength `alpha` into one layer's tensors; returns each site's input factors 1 / s (one per
/// input column of its Linears), by which its Hessian is scaled.
pub fn smooth(cfg: &LlamaConfig, layer: usize, t: &mut Tensors, amax: &HashMap<(usize, Site), Vec<f32>>, alpha: f32) -> HashMap<Site, Vec<f32>> {
    let LlamaConfig { c, h, g, d, f, .. } = *cfg;
    let mut inv = HashMap::new();
    for (site, norm, linears) in [(Site::Qkv, "attn_norm", ["attn_q", "attn_k", "attn_v"].as_slice()), (Site::GateUp, "ffn_norm", &["ffn_gate", "ffn_up"])] {
        let wa = column_amax(&linears.iter().map(|n| t[n].as_slice()).collect::<Vec<_>>(), c);
        let s = factors(&amax[&(layer, site)], &wa, alpha);
        get(t, norm).iter_mut().zip(&s).for_each(|(w, s)| *w /= s);
        for n in linears {
            scale_columns(get(t, n), &s);
        }
        inv.insert(site, s.iter().map(|s| 1.0 / s).collect());
    }
    // down: row j of up makes channel j of silu(gate) * up.
    let s = factors(&amax[&(layer, Site::Down)], &column_amax(&[&t["ffn_down"]], f), alpha);
    divide_rows(get(t, "ffn_up"), c, &s);
    scale_columns(get(t, "ffn_down"), &s);
    inv.insert(Site::Down, s.iter().map(|s| 1.0 / s).collect());
    // O: attention column (head, j) is made from V row (head / (H / G), j).
    let per_group = h / g;
    let (xa, wa) = (&amax[&(layer, Site::O)], column_amax(&[&t["attn_output"]], h * d));
    let group_max = |m: &[f32]| -> Vec<f32> { (0..g * d).map(|r| (0..per_group).map(|i| m[((r / d) * per_group + i) * d + r % d]).fold(0f32, f32::max)).collect() };
    let s_kv = factors(&group_max(xa), &group_max(&wa), alpha); // (G*D)
    divide_rows(get(t, "attn_v"), c, &s_kv);
    let s: Vec<f32> = (0..h * d).map(|col| s_kv[col / d / per_group * d + col % d]).collect();
    scale_columns(get(t, "attn_output"), &s);
    inv.insert(Site::O, s.iter().map(|s| 1.0 / s).collect());
    inv
}
