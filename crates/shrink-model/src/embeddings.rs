//! `embeddings.*`: word + absolute position + token type, then LayerNorm and dropout.

use anyhow::Result;
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;

use crate::checkpoint::Weights;
use crate::config::Config;
use crate::layer_norm::LayerNorm;
use crate::ops;
use crate::params::ParamVisitor;

#[derive(Clone)]
pub struct Embeddings {
    pub word_embeddings: Tensor,       // (V, C)
    pub position_embeddings: Tensor,   // (P, C)
    pub token_type_embeddings: Tensor, // (2, C)
    pub layer_norm: LayerNorm,
    dropout: f32,
}

impl Embeddings {
    pub fn load(w: &mut Weights, cfg: &Config) -> Result<Self> {
        let c = cfg.hidden_size;
        Ok(Self {
            word_embeddings: w.take("embeddings.word_embeddings.weight", &[cfg.vocab_size, c])?,
            position_embeddings: w.take("embeddings.position_embeddings.weight", &[cfg.max_position_embeddings, c])?,
            token_type_embeddings: w.take("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, c])?,
            layer_norm: LayerNorm::load(w, "embeddings.LayerNorm", c, cfg.layer_norm_eps)?,
            dropout: cfg.hidden_dropout_prob,
        })
    }

    /// ids: (B, T) u32 -> (B, T, C). Token type 0 everywhere (single-segment inputs).
    pub fn forward(&self, ids: &Tensor, rng: Option<&mut StdRng>) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let c = self.word_embeddings.dim(1)?;
        let words = self.word_embeddings.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, c))?; // (B, T, C)
        let pos = self.position_embeddings.narrow(0, 0, t)?; // (T, C)
        let typ = self.token_type_embeddings.narrow(0, 0, 1)?; // (1, C)
        let pos_typ = pos.broadcast_add(&typ)?.broadcast_as((b, t, c))?; // (B, T, C)
        ops::dropout(&self.layer_norm.forward(&words, &pos_typ, None)?, self.dropout, rng)
    }

    pub fn visit(&mut self, f: &mut ParamVisitor) {
        f("embeddings.word_embeddings.weight", &mut self.word_embeddings);
        f("embeddings.position_embeddings.weight", &mut self.position_embeddings);
        f("embeddings.token_type_embeddings.weight", &mut self.token_type_embeddings);
        self.layer_norm.visit("embeddings.LayerNorm", f);
    }

    pub fn max_positions(&self) -> usize {
        self.position_embeddings.dims()[0]
    }
}

/// Additive attention bias from a (B, T) 0/1 mask: 0 for tokens, a large negative for padding. (B, T)
pub fn mask_bias(mask: &Tensor) -> candle_core::Result<Tensor> {
    (mask.to_dtype(DType::F32)? - 1.0)? * 1e9
}
