//! config.json and seeded random weights in each family's own checkpoint layout, as transformers saves the base
//! model (no task prefix). The module names come from shrink's architecture table (`shrink_format::arch`), which the
//! golden tests check against transformers' own checkpoints; config.json is spelled out in each family's keys.

use std::collections::BTreeMap;

use anyhow::Result;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use safetensors::tensor::TensorView;
use serde_json::{json, Value};
use shrink_format::arch::Part;

use crate::{Family, FFN, HEADS, HIDDEN, LAYERS, MAX_POSITIONS};

/// RoBERTa's padding_idx: position ids start after it.
const ROBERTA_PAD: usize = 1;

/// Rows of the position table: RoBERTa's holds padding_idx + 1 more, as its positions start after padding_idx.
fn position_rows(family: Family) -> usize {
    if family == Family::Roberta { MAX_POSITIONS + ROBERTA_PAD + 1 } else { MAX_POSITIONS }
}

/// Rows of the token-type table: RoBERTa has one type, BERT two (DistilBERT has no table).
fn type_rows(family: Family) -> usize {
    if family == Family::Roberta { 1 } else { 2 }
}

/// The family's own `model_type` (the first its table row reads).
pub fn model_type(family: Family) -> &'static str {
    family.spec().model_types[0]
}

pub fn config(family: Family, vocab: usize) -> Value {
    match family {
        Family::Bert | Family::Roberta => {
            let roberta = family == Family::Roberta;
            json!({
                "architectures": [if roberta { "RobertaModel" } else { "BertModel" }],
                "model_type": model_type(family),
                "vocab_size": vocab,
                "hidden_size": HIDDEN,
                "num_hidden_layers": LAYERS,
                "num_attention_heads": HEADS,
                "intermediate_size": FFN,
                "hidden_act": "gelu",
                "hidden_dropout_prob": 0.1,
                "attention_probs_dropout_prob": 0.1,
                "max_position_embeddings": position_rows(family),
                "type_vocab_size": type_rows(family),
                "layer_norm_eps": if roberta { 1e-5 } else { 1e-12 },
                "pad_token_id": if roberta { ROBERTA_PAD } else { 0 },
                "bos_token_id": 0,
                "eos_token_id": 2,
                "position_embedding_type": "absolute",
            })
        }
        Family::DistilBert => json!({
            "architectures": ["DistilBertModel"],
            "model_type": "distilbert",
            "vocab_size": vocab,
            "dim": HIDDEN,
            "n_layers": LAYERS,
            "n_heads": HEADS,
            "hidden_dim": FFN,
            "activation": "gelu",
            "dropout": 0.1,
            "attention_dropout": 0.1,
            "max_position_embeddings": MAX_POSITIONS,
            "pad_token_id": 0,
            "sinusoidal_pos_embds": false,
        }),
    }
}

/// (name, shape, is a LayerNorm gain) of every parameter.
fn params(family: Family, vocab: usize) -> Vec<(String, Vec<usize>, bool)> {
    let (c, f) = (HIDDEN, FFN);
    let names = &family.spec().names;
    let mut out = vec![(format!("{}.weight", names.word), vec![vocab, c], false)];
    out.push((format!("{}.weight", names.position), vec![position_rows(family), c], false));
    if let Some(types) = names.token_type {
        out.push((format!("{types}.weight"), vec![type_rows(family), c], false));
    }
    let norm = |out: &mut Vec<(String, Vec<usize>, bool)>, name: String| {
        out.push((format!("{name}.weight"), vec![c], true));
        out.push((format!("{name}.bias"), vec![c], false));
    };
    norm(&mut out, names.embed_norm.to_string());
    for l in 0..LAYERS {
        for (part, path) in Part::ALL.iter().zip(names.parts) {
            let name = format!("{}.{l}.{path}", names.layers);
            let (n, k) = match part {
                Part::AttnNorm | Part::OutNorm => {
                    norm(&mut out, name);
                    continue;
                }
                Part::FfnIn => (f, c),
                Part::FfnOut => (c, f),
                _ => (c, c),
            };
            out.push((format!("{name}.weight"), vec![n, k], false));
            out.push((format!("{name}.bias"), vec![n], false));
        }
    }
    out
}

/// Weights N(0, 0.05), biases N(0, 0.02), LayerNorm gains 1 + N(0, 0.02): random, but not the identity anywhere.
pub fn safetensors(family: Family, vocab: usize, seed: u64) -> Result<Vec<u8>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = params(family, vocab)
        .into_iter()
        .map(|(name, shape, gain)| {
            let std = if shape.len() == 2 { 0.05 } else { 0.02 };
            let normal = Normal::new(0.0f32, std).expect("a positive std");
            let n: usize = shape.iter().product();
            let bytes = (0..n).flat_map(|_| (normal.sample(&mut rng) + if gain { 1.0 } else { 0.0 }).to_le_bytes()).collect();
            (name, (shape, bytes))
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (shape, bytes))| Ok((n.clone(), TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<_>>()?;
    Ok(safetensors::serialize(views, None)?)
}
