//! shrink-format: what a model folder holds and how to read it, shared by the training side (shrink-model) and the
//! on-device runtime (shrink-runtime): `config.json` (with shrink's head and quantization sections), safetensors
//! files checked tensor by tensor, the tokenizer, JSONL datasets, and atomic writes. No candle, no network.

pub mod arch;
pub mod config;
pub mod folder;
pub mod jsonl;
pub mod outdir;
pub mod tensors;
pub mod tokenizer;

pub use arch::{Arch, Site};
pub use config::{Config, QuantSection};
pub use tensors::{F32Data, TensorFile};
pub use tokenizer::{Batch, TextTokenizer};
