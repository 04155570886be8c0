//! `embeddings.*`: word + learned position + token type (when the family has one), then LayerNorm and dropout.

use anyhow::Result;
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use shrink_format::arch::{self, Module, Positions};

use crate::checkpoint::Weights;
use crate::config::Config;
use crate::layer_norm::LayerNorm;
use crate::ops;
use crate::params::ParamVisitor;

#[derive(Clone)]
pub struct Embeddings {
    pub word_embeddings: Tensor,     // (V, C)
    pub position_embeddings: Tensor, // (P, C)
    /// (types, C); None for families without one (DistilBERT).
    pub token_type_embeddings: Option<Tensor>,
    pub layer_norm: LayerNorm,
    positions: Positions,
    dropout: f32,
}

impl Embeddings {
    pub fn load(w: &mut Weights, cfg: &Config) -> Result<Self> {
        let c = cfg.hidden_size;
        let types = match cfg.type_vocab_size {
            0 => None,
            n => Some(w.take(&weight(Module::TokenType), &[n, c])?),
        };
        Ok(Self {
            word_embeddings: w.take(&weight(Module::Word), &[cfg.vocab_size, c])?,
            position_embeddings: w.take(&weight(Module::Position), &[cfg.max_position_embeddings, c])?,
            token_type_embeddings: types,
            layer_norm: LayerNorm::load(w, &arch::name(Module::EmbedNorm), c, cfg.layer_norm_eps)?,
            positions: cfg.positions(),
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// ids, mask: (B, T) u32 -> (B, T, C). Token type 0 everywhere (single-segment inputs); the mask numbers
    /// RoBERTa's positions.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let c = self.word_embeddings.dim(1)?;
        let words = self.word_embeddings.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, c))?; // (B, T, C)
        // The type row joins the positions before they broadcast over B, so BERT's graph (and its gradient sums)
        // stay what they were before families without a type table existed.
        let typ = self.token_type_embeddings.as_ref().map(|t| t.narrow(0, 0, 1)).transpose()?; // (1, C)
        let with_type = |x: Tensor| match &typ {
            Some(t) => x.broadcast_add(t),
            None => Ok(x),
        };
        let extra = match self.positions {
            Positions::FromZero => with_type(self.position_embeddings.narrow(0, 0, t)?)?.broadcast_as((b, t, c))?, // (B, T, C)
            rule => {
                let mask: Vec<u32> = mask.to_dtype(DType::U32)?.flatten_all()?.to_vec1()?;
                let pos: Vec<u32> = mask.chunks_exact(t).flat_map(|row| rule.of(row)).map(|p| p as u32).collect();
                let pos = Tensor::from_vec(pos, b * t, ids.device())?;
                with_type(self.position_embeddings.index_select(&pos, 0)?.reshape((b, t, c))?)? // (B, T, C)
            }
        };
        ops::dropout(&self.layer_norm.forward(&words, &extra, None)?, self.dropout, rng)
    }

    pub fn visit(&mut self, f: &mut ParamVisitor) {
        f(&weight(Module::Word), &mut self.word_embeddings);
        f(&weight(Module::Position), &mut self.position_embeddings);
        if let Some(t) = &mut self.token_type_embeddings {
            f(&weight(Module::TokenType), t);
        }
        self.layer_norm.visit(&arch::name(Module::EmbedNorm), f);
    }

    /// Longest sequence the position table numbers.
    pub fn max_positions(&self) -> usize {
        self.positions.max_tokens(self.position_embeddings.dims()[0])
    }
}

/// A table's `.weight` tensor.
fn weight(m: Module) -> String {
    format!("{}.weight", arch::name(m))
}

/// The additive attention bias of a key a query may not see (padding, outside a band); the runtime uses the same.
pub const MASKED: f32 = -1e9;

/// Additive attention bias from a (B, T) 0/1 mask: 0 for tokens, `MASKED` for padding. (B, T)
pub fn mask_bias(mask: &Tensor) -> candle_core::Result<Tensor> {
    (mask.to_dtype(DType::F32)? - 1.0)? * -(MASKED as f64)
}
