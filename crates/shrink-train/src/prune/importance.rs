//! How much each head, FFN neuron and layer matters, on a labelled data sample.
//! - heads: Michel et al. 2019, the expected |dL/dξ_h| of a multiplier ξ_h = 1 on head h's context, summed over the
//!   sample's batches, then normalised to unit L2 norm per layer (as the paper does before ranking globally);
//! - FFN neurons: first-order Taylor |Σ w·dL/dw| over the neuron's intermediate row (and bias) and output column;
//! - layers: drop-one, the mean loss increase when the layer is skipped.
//!
//! `--method l2` is the data-free proxy: the L2 norm of each head's / neuron's weights, and of each layer's.
//!
//! Hidden channels (a narrower model width, `shrink distill --hidden`): `hidden_channels`, activation energy.

use anyhow::{bail, Result};
use shrink_io::choices;
use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use shrink_model::linear::Linear;
use shrink_model::{batch_tensors, ops, tokenizer, Bert};

use crate::example::Example;
use crate::train;

choices! {
    pub enum Method {
        Taylor = "taylor": "Gradient scores (head-mask sensitivity, Taylor, drop-one): needs labelled data",
        L2 = "l2": "Weight norms: no data",
    }
}

/// [layer][head or neuron] scores.
type PerLayer = Vec<Vec<f64>>;

/// Scores of one model; higher = more important. Indices are the model's own (after any earlier pruning).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scores {
    pub method: Method,
    /// Examples the scores were measured on (0 for l2).
    pub samples: usize,
    /// [layer][head], unit L2 norm per layer.
    pub heads: PerLayer,
    /// [layer][neuron].
    pub neurons: PerLayer,
    /// [layer]: loss increase when dropped (taylor) or weight norm (l2); empty when not asked for.
    pub layers: Vec<f64>,
}

/// Scores `model`'s heads and neurons (and its layers when `layers`), on labelled `examples` for taylor.
pub fn score(model: &Bert, examples: &[Example], method: Method, batch: usize, layers: bool) -> Result<Scores> {
    let (mut heads, neurons, layer_scores) = match method {
        Method::Taylor => {
            if examples.is_empty() {
                bail!("--method taylor needs labelled examples (--data FILE.jsonl)");
            }
            if model.classifier.is_none() {
                bail!("--method taylor scores the classification loss: the model needs a head (fine-tune it first), or use --method l2");
            }
            let (h, n) = gradients(model, examples, batch)?;
            (h, n, if layers { drop_one(model, examples, batch)? } else { Vec::new() })
        }
        Method::L2 => {
            let (h, n) = norms(model)?;
            let l = if layers { model.layers.iter().map(layer_norm).collect::<Result<_>>()? } else { Vec::new() };
            (h, n, l)
        }
    };
    for layer in &mut heads {
        let norm = layer.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            layer.iter_mut().for_each(|v| *v /= norm);
        }
    }
    let samples = if method == Method::Taylor { examples.len() } else { 0 };
    Ok(Scores { method, samples, heads, neurons, layers: layer_scores })
}

/// (B, T) ids and mask of one batch.
fn batch(chunk: &[Example]) -> Result<(Tensor, Tensor)> {
    let seqs: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids.clone()).collect();
    Ok(batch_tensors(&tokenizer::pad(&seqs, 0))?)
}

/// (B) labels of one batch.
fn labels(chunk: &[Example]) -> Result<Tensor> {
    let all: Vec<usize> = (0..chunk.len()).collect();
    Ok(Tensor::new(train::labels_of(chunk, &all)?.as_slice(), &Device::Cpu)?)
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
}

/// Σ over weights of w·g, per output row (dim 1) or per input column (dim 0) of a Linear.
fn taylor(w: &Tensor, grads: &candle_core::backprop::GradStore, dim: usize) -> Result<Tensor> {
    let g = grads.get(w).ok_or_else(|| anyhow::anyhow!("internal: a weight got no gradient"))?;
    Ok(w.mul(g)?.sum(dim)?)
}

/// Head-mask sensitivity and FFN Taylor scores, accumulated as |per-batch value| over the sample.
fn gradients(model: &Bert, examples: &[Example], batch_size: usize) -> Result<(PerLayer, PerLayer)> {
    let mut m = model.clone();
    train::trainable(&mut m)?;
    let masks = m
        .layers
        .iter_mut()
        .map(|l| {
            let v = Var::ones(l.attention.heads, DType::F32, &Device::Cpu)?; // (H)
            l.attention.head_mask = Some(v.as_tensor().clone());
            Ok(v)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut heads: PerLayer = m.layers.iter().map(|l| vec![0.0; l.attention.heads]).collect();
    let mut neurons: PerLayer = m.layers.iter().map(|l| vec![0.0; l.intermediate.weight.dims()[0]]).collect();
    let pb = shrink_io::events::bar(examples.len().div_ceil(batch_size), "importance");
    for chunk in examples.chunks(batch_size.max(1)) {
        let ((ids, mask), labels) = (batch(chunk)?, labels(chunk)?);
        let loss = ops::cross_entropy(&m.logits(&ids, &mask, None)?, &labels)?;
        let grads = loss.backward()?;
        for (l, layer) in m.layers.iter().enumerate() {
            let g = grads.get(masks[l].as_tensor()).ok_or_else(|| anyhow::anyhow!("internal: head mask got no gradient"))?; // (H)
            heads[l].iter_mut().zip(to_f64(&g.abs()?)?).for_each(|(a, v)| *a += v);
            let (inter, out) = (&layer.intermediate, &layer.output);
            let gb = grads.get(&inter.bias).ok_or_else(|| anyhow::anyhow!("internal: a bias got no gradient"))?;
            let s = (taylor(&inter.weight, &grads, 1)? + inter.bias.mul(gb)? + taylor(&out.weight, &grads, 0)?)?; // (F)
            neurons[l].iter_mut().zip(to_f64(&s.abs()?)?).for_each(|(a, v)| *a += v);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok((heads, neurons))
}

/// Importance of each of the C hidden channels: its mean square over the real tokens of every hidden state (the
/// embedding output and each layer's), summed over the states. One set of channels runs through the whole residual
/// stream, and what cutting channel c removes from every Linear's input is x_c; its mean square is that input's
/// share of energy. It needs no labels (the embedding task has none) and keeps BERT's few outlier channels, whose
/// removal would shift every LayerNorm's statistics most. (C)
pub fn hidden_channels(model: &Bert, examples: &[Example], batch_size: usize) -> Result<Vec<f64>> {
    let mut sum = Tensor::zeros(model.config.hidden_size, DType::F32, &Device::Cpu)?; // (C)
    let mut tokens = 0.0;
    for chunk in examples.chunks(batch_size.max(1)) {
        let (ids, mask) = batch(chunk)?;
        let mut hs = Vec::new();
        model.forward(&ids, &mask, None, Some(&mut hs))?;
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (B, T, 1)
        for h in &hs {
            sum = (sum + h.sqr()?.broadcast_mul(&m)?.sum((0, 1))?)?; // (C)
        }
        tokens += f64::from(m.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(to_f64(&sum)?.into_iter().map(|s| s / tokens.max(1.0)).collect())
}

/// Mean cross-entropy of `model` over the examples (no dropout, no gradient).
pub fn mean_loss(model: &Bert, examples: &[Example], batch_size: usize) -> Result<f64> {
    let mut total = 0.0;
    for chunk in examples.chunks(batch_size.max(1)) {
        let ((ids, mask), labels) = (batch(chunk)?, labels(chunk)?);
        let loss = ops::cross_entropy(&model.logits(&ids, &mask, None)?, &labels)?;
        total += f64::from(loss.to_scalar::<f32>()?) * chunk.len() as f64;
    }
    Ok(total / examples.len().max(1) as f64)
}

/// Loss increase when each layer alone is skipped.
fn drop_one(model: &Bert, examples: &[Example], batch_size: usize) -> Result<Vec<f64>> {
    let base = mean_loss(model, examples, batch_size)?;
    (0..model.layers.len())
        .map(|l| {
            let mut m = model.clone();
            m.layers.remove(l);
            Ok(mean_loss(&m, examples, batch_size)? - base)
        })
        .collect()
}

/// Σ w² per output row (dim 1) or per input column (dim 0).
fn sq(lin: &Linear, dim: usize) -> Result<Tensor> {
    Ok(lin.weight.sqr()?.sum(dim)?)
}

/// Per-head (grouped D rows/columns) and per-neuron weight norms.
fn norms(model: &Bert) -> Result<(PerLayer, PerLayer)> {
    let mut heads = Vec::new();
    let mut neurons = Vec::new();
    for layer in &model.layers {
        let a = &layer.attention;
        let rows = (sq(&a.query, 1)? + sq(&a.key, 1)? + sq(&a.value, 1)? + sq(&a.output, 0)?)?; // (A)
        let per_head = rows.reshape((a.heads, a.head_dim))?.sum(1)?.sqrt()?; // (H)
        heads.push(to_f64(&per_head)?);
        let per_neuron = (sq(&layer.intermediate, 1)? + sq(&layer.output, 0)?)?.sqrt()?; // (F)
        neurons.push(to_f64(&per_neuron)?);
    }
    Ok((heads, neurons))
}

/// L2 norm of all of a layer's Linear weights.
fn layer_norm(layer: &shrink_model::layer::Layer) -> Result<f64> {
    let a = &layer.attention;
    let mut sum = 0.0;
    for lin in [&a.query, &a.key, &a.value, &a.output, &layer.intermediate, &layer.output] {
        sum += f64::from(lin.weight.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(sum.sqrt())
}
