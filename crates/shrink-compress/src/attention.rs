//! `shrink attention`: sets the attention variant of a model's layers (`shrink_attention` in config.json) and, for
//! inputs longer than the checkpoint learned, lengthens its position table the way Longformer did: position p takes
//! learned row p mod P (P = 512 for BERT), so every new position starts from a trained vector and the first P
//! are unchanged. The weights of Q, K and V are kept as they are; the new variant (and the copied positions) then
//! need recovery training: attention-transfer distillation from the unconverted model, then a task fine-tune at the
//! new length.

use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::Serialize;
use shrink_format::folder::OutDir;
use shrink_format::schema::{Attention, FeatureMap, PositionExtension, Step};
use shrink_model::attention::FeatureMapWeights;

/// What `shrink attention` did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Layer l's attention afterwards.
    pub layers: Vec<String>,
    /// The longest input the position table numbers, before and after.
    pub positions_before: usize,
    pub positions_after: usize,
    /// Positions the checkpoint itself learned (the rest are copies).
    pub learned: usize,
}

pub struct Options {
    pub to: Attention,
    /// Converts only these layers (all when None).
    pub layers: Option<Vec<usize>>,
    /// Lengthens the position table to this many tokens.
    pub max_len: Option<usize>,
}

/// Writes `out`: `model` (an fp32 folder; the loader refuses a quantized one) with `opts` applied.
pub fn convert(model: &str, opts: &Options, out: &OutDir) -> Result<Report> {
    let m = shrink_io::model::load(model, None)?;
    let mut bert = m.model.clone();
    let cfg = &mut bert.config;
    let n = cfg.num_hidden_layers;
    opts.to.validate(0)?;
    let layers = opts.layers.clone().unwrap_or_else(|| (0..n).collect());
    if let Some(&l) = layers.iter().find(|&&l| l >= n) {
        bail!("--layers names layer {l}, but the model has {n} (0 to {})", n - 1);
    }
    let mut kinds: Vec<Attention> = (0..n).map(|l| cfg.attention(l)).collect();
    for &l in &layers {
        kinds[l] = opts.to;
    }
    let before = cfg.max_tokens();
    let learned = cfg.position_extension.as_ref().map_or(before, |p| p.learned);
    let after = opts.max_len.unwrap_or(before);
    if after < before {
        bail!("--max-len {after}: the model already numbers {before} positions (this command lengthens, never cuts; trim-vocab --max-positions cuts)");
    }
    if after > before {
        // RoBERTa numbers positions after pad_token_id: those offset rows stay first, as they are.
        let offset = cfg.max_position_embeddings - before;
        let table = &bert.embeddings.position_embeddings; // (offset + before, C)
        let rows: Vec<u32> = (0..offset).chain((0..after).map(|p| offset + p % learned)).map(|r| r as u32).collect();
        let index = Tensor::from_vec(rows, offset + after, table.device())?;
        bert.embeddings.position_embeddings = table.index_select(&index, 0)?; // (offset + after, C)
        let cfg = &mut bert.config;
        cfg.max_position_embeddings = offset + after;
        cfg.position_extension = Some(PositionExtension {
            learned,
            method: "copy".into(),
            note: format!("positions {learned} to {} are copies of positions 0 to {}; train at the new length before use", after - 1, learned - 1),
        });
    }
    // Learned maps start at W = I, b = 0; a layer already Hedgehog keeps its trained ones.
    for (l, layer) in bert.layers.iter_mut().enumerate() {
        let a = &mut layer.attention;
        a.feature_maps = match kinds[l] {
            Attention::Linear { feature_map: FeatureMap::Hedgehog } => match a.feature_maps.take() {
                Some(m) => Some(m),
                None => Some([FeatureMapWeights::identity(a.heads, a.head_dim)?, FeatureMapWeights::identity(a.heads, a.head_dim)?]),
            },
            _ => None,
        };
        a.kind = kinds[l];
    }
    let cfg = &mut bert.config;
    cfg.layer_attention = kinds.iter().any(|k| *k != Attention::Full).then(|| kinds.clone());
    let params = serde_json::json!({ "to": opts.to, "layers": opts.layers, "max_len": opts.max_len });
    cfg.lineage.push(Step::new("attention", &m.dir, params)?.metric("positions_before", before).metric("positions_after", after));
    bert.save_dir(out, &m.dir)?;
    Ok(Report { layers: kinds.iter().map(Attention::label).collect(), positions_before: before, positions_after: after, learned })
}
