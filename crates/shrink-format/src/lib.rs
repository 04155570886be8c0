//! shrink-format: the on-disk contract, shared by the training side (shrink-model), the conversion stages and the
//! on-device runtime (shrink-runtime): the architecture table (`arch`), the storage formats with their reference
//! encode/decode (`quant`), typed config.json (`schema`), safetensors files checked tensor by tensor, the
//! tokenizer, JSONL datasets, GGUF files (`gguf`, read-only), and atomic writes. No candle, no network.

pub mod arch;
pub mod choice;
pub mod error;
pub mod folder;
pub mod gguf;
pub mod jsonl;
pub mod onnx;
pub mod outdir;
pub mod quant;
pub mod schema;
pub mod tensors;
pub mod tokenizer;

pub use arch::{Arch, Site};
pub use error::Error;
pub use schema::config;
pub use schema::{config::Config, QuantSection};
pub use tensors::{F32Data, TensorFile};
pub use tokenizer::{Batch, TextTokenizer};
