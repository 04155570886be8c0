//! config.json and seeded random weights in each family's own checkpoint layout, as transformers saves the base
//! model (no task prefix). The names are spelled out here rather than taken from shrink's architecture table, so
//! the fixture checks that table instead of repeating it.

use std::collections::BTreeMap;

use anyhow::Result;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use safetensors::tensor::TensorView;
use serde_json::{json, Value};

use crate::{Family, FFN, HEADS, HIDDEN, LAYERS, MAX_POSITIONS};

/// RoBERTa's padding_idx: position ids start after it.
const ROBERTA_PAD: usize = 1;

pub fn config(family: Family, vocab: usize) -> Value {
    match family {
        Family::Bert | Family::Roberta => {
            let roberta = family == Family::Roberta;
            json!({
                "architectures": [if roberta { "RobertaModel" } else { "BertModel" }],
                "model_type": family.model_type(),
                "vocab_size": vocab,
                "hidden_size": HIDDEN,
                "num_hidden_layers": LAYERS,
                "num_attention_heads": HEADS,
                "intermediate_size": FFN,
                "hidden_act": "gelu",
                "hidden_dropout_prob": 0.1,
                "attention_probs_dropout_prob": 0.1,
                "max_position_embeddings": if roberta { MAX_POSITIONS + ROBERTA_PAD + 1 } else { MAX_POSITIONS },
                "type_vocab_size": if roberta { 1 } else { 2 },
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

/// (name, shape, is a LayerNorm) of every parameter.
fn params(family: Family, vocab: usize) -> Vec<(String, Vec<usize>, bool)> {
    let (c, f) = (HIDDEN, FFN);
    let mut p = vec![("embeddings.word_embeddings".to_string(), vec![vocab, c], false)];
    let positions = if family == Family::Roberta { MAX_POSITIONS + ROBERTA_PAD + 1 } else { MAX_POSITIONS };
    p.push(("embeddings.position_embeddings".into(), vec![positions, c], false));
    if family != Family::DistilBert {
        p.push(("embeddings.token_type_embeddings".into(), vec![if family == Family::Roberta { 1 } else { 2 }, c], false));
    }
    let (layers, parts): (&str, [&str; 8]) = match family {
        Family::DistilBert => (
            "transformer.layer",
            ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm"],
        ),
        _ => (
            "encoder.layer",
            [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ],
        ),
    };
    let mut out: Vec<(String, Vec<usize>, bool)> = p.into_iter().map(|(n, s, ln)| (format!("{n}.weight"), s, ln)).collect();
    let ln = |out: &mut Vec<(String, Vec<usize>, bool)>, name: String| {
        out.push((format!("{name}.weight"), vec![c], true));
        out.push((format!("{name}.bias"), vec![c], false));
    };
    ln(&mut out, "embeddings.LayerNorm".into());
    for l in 0..LAYERS {
        // (out, in) of the Linears in `parts` order; None for the LayerNorms.
        let dims = [Some((c, c)), Some((c, c)), Some((c, c)), Some((c, c)), None, Some((f, c)), Some((c, f)), None];
        for (part, d) in parts.iter().zip(dims) {
            let name = format!("{layers}.{l}.{part}");
            match d {
                Some((n, k)) => {
                    out.push((format!("{name}.weight"), vec![n, k], false));
                    out.push((format!("{name}.bias"), vec![n], false));
                }
                None => ln(&mut out, name),
            }
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
