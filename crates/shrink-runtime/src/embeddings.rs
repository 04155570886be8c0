//! Word + position + token-type embeddings, then LayerNorm. The word table is used in place from the mapped file
//! when stored as F32, or dequantized row by row when stored int8.

use anyhow::{bail, Result};
use shrink_format::{Config, F32Data, TensorFile};
use std::sync::Arc;

use crate::norm::LayerNorm;

/// A [rows, C] table.
enum Table {
    F32(F32Data),
    /// Per-row symmetric int8: row r = scale[r] * q[r].
    Int8 { q: Vec<i8>, scale: Vec<f32> },
}

pub struct Embeddings {
    word: Table,                // (V, C)
    position: Vec<f32>,         // (P, C)
    token_type: Vec<f32>,       // (C): type 0, the only one sentence models use
    norm: LayerNorm,
    c: usize,
    pub vocab: usize,
    pub max_positions: usize,
}

impl Embeddings {
    pub fn load(file: &Arc<TensorFile>, cfg: &Config, format: &str) -> Result<Self> {
        let (v, c, p) = (cfg.vocab_size, cfg.hidden_size, cfg.max_position_embeddings);
        let name = "embeddings.word_embeddings.weight";
        let word = match format {
            "fp32" => Table::F32(file.f32_shared(name, &[v, c])?),
            "int8" => Table::Int8 {
                q: file.i8(name, &[v, c])?.to_vec(),
                scale: file.f32("embeddings.word_embeddings.weight_scale", &[v])?.into_owned(),
            },
            other => bail!("{}: embeddings stored as {other:?}; expected \"fp32\" or \"int8\"", file.file.display()),
        };
        Ok(Self {
            word,
            position: file.f32("embeddings.position_embeddings.weight", &[p, c])?.into_owned(),
            token_type: file.f32("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, c])?[..c].to_vec(),
            norm: LayerNorm::load(file, "embeddings.LayerNorm", c, cfg.layer_norm_eps)?,
            c,
            vocab: v,
            max_positions: p,
        })
    }

    /// x (B*T, C) for ids (B, T).
    pub fn forward(&self, ids: &[u32], t: usize, x: &mut [f32]) {
        let c = self.c;
        for (r, (row, &id)) in x.chunks_exact_mut(c).zip(ids).enumerate() {
            let id = id as usize;
            match &self.word {
                Table::F32(w) => row.copy_from_slice(&w[id * c..(id + 1) * c]),
                Table::Int8 { q, scale } => {
                    for (o, &qv) in row.iter_mut().zip(&q[id * c..(id + 1) * c]) {
                        *o = qv as f32 * scale[id];
                    }
                }
            }
            let pos = &self.position[(r % t) * c..][..c];
            for ((o, &p), &ty) in row.iter_mut().zip(pos).zip(&self.token_type) {
                *o += p + ty;
            }
        }
        self.norm.forward(x);
    }

    pub fn bytes(&self) -> usize {
        let word = match &self.word {
            Table::F32(w) => w.len() * 4,
            Table::Int8 { q, scale } => q.len() + scale.len() * 4,
        };
        word + (self.position.len() + self.token_type.len()) * 4
    }
}
