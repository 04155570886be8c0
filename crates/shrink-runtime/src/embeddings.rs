//! Word + position + token-type embeddings (type 0; zeros for families without a table), then LayerNorm. The
//! word table is used in place from the mapped file when stored as F32, or dequantized row by row when stored int8
//! or int4. Positions follow the family's rule (`arch::Positions`: RoBERTa's start after the padding id).

use anyhow::{bail, Result};
use shrink_format::arch::{self, Module, Positions};
use shrink_format::{Config, F32Data, TensorFile};
use shrink_kernels::qgemm::INT4_GROUPS;
use std::sync::Arc;

use crate::norm::LayerNorm;

/// A [rows, C] table.
enum Table {
    F32(F32Data),
    /// Half precision, widened row by row as ids are looked up (half the memory of F32).
    F16(Vec<half::f16>),
    /// Per-row symmetric int8: row r = scale[r] * q[r].
    Int8 { q: Vec<i8>, scale: Vec<f32> },
    /// Per-row groups of int4 (`quantize_int4` layout): row r = q[r] nibbles x scale[r, k / group].
    Int4 { q: Vec<u8>, scale: Vec<f32>, group: usize },
}

pub struct Embeddings {
    word: Table,                // (V, C)
    position: Vec<f32>,         // (P, C)
    token_type: Vec<f32>,       // (C): type 0, the only one sentence models use; zeros without a table
    positions: Positions,
    norm: LayerNorm,
    c: usize,
    pub vocab: usize,
    /// Longest sequence the position table numbers.
    pub max_positions: usize,
}

impl Embeddings {
    pub fn load(file: &Arc<TensorFile>, cfg: &Config, format: &str) -> Result<Self> {
        let (v, c, p) = (cfg.vocab_size, cfg.hidden_size, cfg.max_position_embeddings);
        let weight = |m| format!("{}.weight", arch::name(m));
        let name = &weight(Module::Word);
        let word = match format {
            "fp32" => Table::F32(file.f32_shared(name, &[v, c])?),
            "fp16" => Table::F16(file.f16(name, &[v, c])?),
            "int8" => Table::Int8 {
                q: file.i8(name, &[v, c])?.to_vec(),
                scale: file.f32(&format!("{name}_scale"), &[v])?.into_owned(),
            },
            int4 if int4.starts_with("int4-g") => {
                let group = int4["int4-g".len()..].parse().ok().filter(|g| INT4_GROUPS.contains(g) && c % g == 0);
                let Some(group) = group else {
                    bail!("{}: embeddings stored as {int4:?}: the group must be one of {INT4_GROUPS:?} and divide C = {c}", file.file.display());
                };
                Table::Int4 {
                    q: file.u8(name, &[v, c / 2])?.to_vec(),
                    scale: file.f32(&format!("{name}_scale"), &[v, c / group])?.into_owned(),
                    group,
                }
            }
            other => bail!("{}: embeddings stored as {other:?}; expected fp32, fp16, int8 or int4-g32/64/128", file.file.display()),
        };
        let token_type = match cfg.type_vocab_size {
            0 => vec![0.0; c],
            n => file.f32(&weight(Module::TokenType), &[n, c])?[..c].to_vec(),
        };
        Ok(Self {
            word,
            position: file.f32(&weight(Module::Position), &[p, c])?.into_owned(),
            token_type,
            positions: cfg.positions(),
            norm: LayerNorm::load(file, &arch::name(Module::EmbedNorm), c, cfg.layer_norm_eps)?,
            c,
            vocab: v,
            max_positions: cfg.max_tokens(),
        })
    }

    /// x (B*T, C) for ids and mask (B, T).
    pub fn forward(&self, ids: &[u32], mask: &[u32], t: usize, x: &mut [f32]) {
        let c = self.c;
        let positions = mask.chunks_exact(t).flat_map(|row| self.positions.of(row));
        for ((row, &id), pos) in x.chunks_exact_mut(c).zip(ids).zip(positions) {
            let id = id as usize;
            match &self.word {
                Table::F32(w) => row.copy_from_slice(&w[id * c..(id + 1) * c]),
                Table::F16(w) => row.iter_mut().zip(&w[id * c..(id + 1) * c]).for_each(|(o, h)| *o = h.to_f32()),
                Table::Int8 { q, scale } => {
                    for (o, &qv) in row.iter_mut().zip(&q[id * c..(id + 1) * c]) {
                        *o = qv as f32 * scale[id];
                    }
                }
                Table::Int4 { q, scale, group } => {
                    let (q, s) = (&q[id * c / 2..][..c / 2], &scale[id * (c / group)..][..c / group]);
                    for (i, (o, &byte)) in row.chunks_exact_mut(2).zip(q).enumerate() {
                        // Two's complement nibbles, low = even column; a pair never straddles a group.
                        let s = s[2 * i / group];
                        o[0] = ((byte << 4) as i8 >> 4) as f32 * s;
                        o[1] = (byte as i8 >> 4) as f32 * s;
                    }
                }
            }
            let pos = &self.position[pos * c..][..c];
            for ((o, &p), &ty) in row.iter_mut().zip(pos).zip(&self.token_type) {
                *o += p + ty;
            }
        }
        self.norm.forward(x);
    }

    pub fn bytes(&self) -> usize {
        let word = match &self.word {
            Table::F32(w) => w.len() * 4,
            Table::F16(w) => w.len() * 2,
            Table::Int8 { q, scale } => q.len() + scale.len() * 4,
            Table::Int4 { q, scale, .. } => q.len() + scale.len() * 4,
        };
        word + (self.position.len() + self.token_type.len()) * 4
    }
}
