//! Structured surgery on the candle model: removes whole heads (their Q/K/V rows and attention-output columns),
//! FFN neurons (intermediate rows and output columns) and whole layers, and records the per-layer widths in
//! config.json (`layer_heads`, `layer_intermediate_sizes`) so every loader sees the smaller shapes; and hidden
//! channels (`cut_hidden`: a narrower model width C', for distillation students).

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use shrink_model::layer_norm::LayerNorm;
use shrink_model::linear::Linear;
use shrink_model::Bert;

/// What survives, by index into the model being cut (sorted, no duplicates).
#[derive(Debug, Clone, PartialEq)]
pub struct Keep {
    /// Layers kept, in order.
    pub layers: Vec<usize>,
    /// Per kept layer (same order as `layers`): the heads it keeps.
    pub heads: Vec<Vec<usize>>,
    /// Per kept layer: the FFN neurons it keeps.
    pub neurons: Vec<Vec<usize>>,
}

fn indices(idx: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), idx.len(), &Device::Cpu)
}

/// Keeps output rows `rows` of a Linear (weight (N, K) -> (n, K), bias (N) -> (n)).
fn keep_rows(lin: &Linear, rows: &Tensor) -> candle_core::Result<Linear> {
    Ok(Linear { weight: lin.weight.index_select(rows, 0)?, bias: lin.bias.index_select(rows, 0)?, input_quant: None })
}

/// Keeps input columns `cols` of a Linear (weight (N, K) -> (N, k)); the bias is per output and stays.
fn keep_cols(lin: &Linear, cols: &Tensor) -> candle_core::Result<Linear> {
    Ok(Linear { weight: lin.weight.index_select(cols, 1)?.contiguous()?, bias: lin.bias.clone(), input_quant: None })
}

/// The model with only what `keep` names; config.json's per-layer lists describe the new shapes.
pub fn cut(model: &Bert, keep: &Keep) -> Result<Bert> {
    if keep.layers.is_empty() {
        bail!("pruning would remove every layer; keep at least one");
    }
    if keep.heads.len() != keep.layers.len() || keep.neurons.len() != keep.layers.len() {
        bail!("internal: {} layers kept but {} head and {} neuron lists", keep.layers.len(), keep.heads.len(), keep.neurons.len());
    }
    let mut out = model.clone();
    out.layers.clear();
    for ((&l, heads), neurons) in keep.layers.iter().zip(&keep.heads).zip(&keep.neurons) {
        let Some(src) = model.layers.get(l) else { bail!("internal: layer {l} does not exist") };
        if heads.is_empty() || neurons.is_empty() {
            bail!("layer {l} would keep {} heads and {} FFN neurons; every kept layer needs at least one of each", heads.len(), neurons.len());
        }
        let d = src.attention.head_dim;
        let rows = indices(&heads.iter().flat_map(|&h| h * d..(h + 1) * d).collect::<Vec<_>>())?; // (A')
        let ffn = indices(neurons)?; // (F')
        let mut layer = src.clone();
        let a = &mut layer.attention;
        a.query = keep_rows(&src.attention.query, &rows)?; // (A', C)
        a.key = keep_rows(&src.attention.key, &rows)?; // (A', C)
        a.value = keep_rows(&src.attention.value, &rows)?; // (A', C)
        a.output = keep_cols(&src.attention.output, &rows)?; // (C, A')
        a.heads = heads.len();
        a.head_mask = None;
        // A Hedgehog layer's maps are per head: the kept heads keep theirs.
        let kept = indices(heads)?; // (H')
        for m in a.feature_maps.iter_mut().flatten() {
            m.weight = m.weight.index_select(&kept, 0)?; // (H', D, D)
            m.bias = m.bias.index_select(&kept, 0)?; // (H', D)
        }
        layer.intermediate = keep_rows(&src.intermediate, &ffn)?; // (F', C)
        layer.output = keep_cols(&src.output, &ffn)?; // (C, F')
        out.layers.push(layer);
    }
    let cfg = &mut out.config;
    cfg.num_hidden_layers = out.layers.len();
    cfg.layer_attention = cfg.layer_attention.take().map(|kinds| keep.layers.iter().map(|&l| kinds[l]).collect());
    cfg.layer_heads = Some(out.layers.iter().map(|l| l.attention.heads).collect());
    cfg.layer_intermediate_sizes = Some(out.layers.iter().map(|l| l.intermediate.weight.dims()[0]).collect());
    cfg.validate()?;
    Ok(out)
}

/// Keeps channels `idx` of a LayerNorm's (C) scale and shift.
fn keep_channels(ln: &LayerNorm, idx: &Tensor) -> candle_core::Result<LayerNorm> {
    Ok(LayerNorm { weight: ln.weight.index_select(idx, 0)?, bias: ln.bias.index_select(idx, 0)?, eps: ln.eps })
}

/// The model on hidden channels `channels` only (sorted, no duplicates; C' of them): every tensor with a C
/// dimension is sliced the same way, so channel i of the narrow model is channel `channels[i]` of `model`.
/// Heads keep their width D; the narrow model has C' / D attention heads at most (`num_attention_heads`), and
/// config.json lists each layer's heads, which must fit (cut heads first).
pub fn cut_hidden(model: &Bert, channels: &[usize]) -> Result<Bert> {
    let (c, d) = (model.config.hidden_size, model.config.head_dim());
    if channels.is_empty() || !channels.len().is_multiple_of(d) || channels.windows(2).any(|w| w[0] >= w[1]) || channels.iter().any(|&i| i >= c) {
        bail!("internal: {} hidden channels of {c} kept; need a sorted multiple of the head width {d}", channels.len());
    }
    let idx = indices(channels)?; // (C')
    let cols = |t: &Tensor| t.index_select(&idx, 1)?.contiguous();
    let mut out = model.clone();
    let e = &mut out.embeddings;
    e.word_embeddings = cols(&model.embeddings.word_embeddings)?; // (V, C')
    e.position_embeddings = cols(&model.embeddings.position_embeddings)?; // (P, C')
    e.token_type_embeddings = model.embeddings.token_type_embeddings.as_ref().map(cols).transpose()?; // (types, C')
    e.layer_norm = keep_channels(&model.embeddings.layer_norm, &idx)?; // (C')
    for (layer, src) in out.layers.iter_mut().zip(&model.layers) {
        let (a, s) = (&mut layer.attention, &src.attention);
        a.query = keep_cols(&s.query, &idx)?; // (A, C')
        a.key = keep_cols(&s.key, &idx)?; // (A, C')
        a.value = keep_cols(&s.value, &idx)?; // (A, C')
        a.output = keep_rows(&s.output, &idx)?; // (C', A)
        a.layer_norm = keep_channels(&s.layer_norm, &idx)?; // (C')
        layer.intermediate = keep_cols(&src.intermediate, &idx)?; // (F, C')
        layer.output = keep_rows(&src.output, &idx)?; // (C', F)
        layer.layer_norm = keep_channels(&src.layer_norm, &idx)?; // (C')
    }
    if let Some(head) = &model.classifier {
        out.classifier = Some(keep_cols(head, &idx)?); // (L, C')
    }
    let cfg = &mut out.config;
    cfg.hidden_size = channels.len();
    cfg.num_attention_heads = channels.len() / d;
    // Absent would now mean C' / D heads everywhere: say what each layer has.
    cfg.layer_heads = Some(out.layers.iter().map(|l| l.attention.heads).collect());
    cfg.validate()?;
    Ok(out)
}
