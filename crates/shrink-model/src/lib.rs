//! shrink-model: the BERT family on candle tensors, built from differentiable basic ops so it is both the fp32
//! reference and the model we train. Names mirror the Hugging Face checkpoint.
//!
//! Dimensions: B batch, T tokens, C hidden, H heads, D head width, F FFN width, V vocab, L labels.

pub mod attention;
pub mod bert;
pub mod checkpoint;
pub mod embeddings;
pub mod fused;
pub mod layer;
pub mod layer_norm;
pub mod linear;
pub mod ops;
pub mod params;
pub mod pooling;

pub use bert::Bert;
pub use checkpoint::resolve_model;
pub use shrink_format::{config, tokenizer, Config, TextTokenizer};
pub use tokenizer::Batch;

use candle_core::{Device, Tensor};

/// (B, T) ids and mask as candle tensors.
pub fn batch_tensors(b: &Batch) -> candle_core::Result<(Tensor, Tensor)> {
    let ids = Tensor::from_slice(&b.ids, (b.b, b.t), &Device::Cpu)?;
    let mask = Tensor::from_slice(&b.mask, (b.b, b.t), &Device::Cpu)?;
    Ok((ids, mask))
}
