//! Word + position + token-type embeddings (type 0; zeros for families without a table), then LayerNorm. The
//! word table is used in place from the mapped file when stored as F32, or dequantized row by row when stored int8
//! or int4. Positions follow the family's rule (`arch::Positions`: RoBERTa's start after the padding id).

use anyhow::{bail, Result};
use shrink_format::arch::{self, Module, Positions};
use shrink_format::quant::{Int4Weight, Int8Weight, TableFormat};
use shrink_format::{Config, TensorFile};
use std::sync::Arc;

use crate::norm::LayerNorm;
use crate::table::Table;

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
    pub fn load(file: &Arc<TensorFile>, cfg: &Config, format: TableFormat) -> Result<Self> {
        let (v, c, p) = (cfg.vocab_size, cfg.hidden_size, cfg.max_position_embeddings);
        let weight = |m| format!("{}.weight", arch::name(m));
        let word = arch::name(Module::Word);
        let word = match format {
            TableFormat::F32 => Table::F32(file.f32_shared(&weight(Module::Word), &[v, c])?),
            TableFormat::F16 => Table::F16(file.f16(&weight(Module::Word), &[v, c])?),
            TableFormat::Int8 => Table::Int8(Int8Weight::read(file, &word, v, c)?),
            TableFormat::Int4 { group } if c % group == 0 => Table::Int4(Int4Weight::read(file, &word, v, c, group)?),
            TableFormat::Int4 { group } => {
                bail!("{}: embeddings stored as int4-g{group}: the group must divide C = {c}", file.file.display())
            }
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
            self.word.row(id as usize, row);
            let pos = &self.position[pos * c..][..c];
            for ((o, &p), &ty) in row.iter_mut().zip(pos).zip(&self.token_type) {
                *o += p + ty;
            }
        }
        self.norm.forward(x);
    }

    pub fn bytes(&self) -> usize {
        self.word.bytes() + (self.position.len() + self.token_type.len()) * 4
    }
}
