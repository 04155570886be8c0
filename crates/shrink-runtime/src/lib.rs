//! shrink-runtime: the on-device engine. Loads an fp32 HF folder or a shrink-quantized one, packs weights once,
//! plans activation buffers once per shape, and runs BERT on shrink-kernels (f32, int8). No candle, no training.
//!
//! ```no_run
//! let mut engine = shrink_runtime::Engine::load("model".as_ref(), shrink_runtime::Options { threads: 2, ..Default::default() })?;
//! let embeddings = engine.embed(&["a sentence", "another one"])?;
//! # anyhow::Ok(())
//! ```
//!
//! Dimensions: B batch, T tokens, M = B*T rows, C hidden, H heads, D head width, F FFN width, L labels.

mod attention;
mod embeddings;
mod engine;
pub mod error;
pub mod linear;
mod kv;
pub mod llama;
mod model;
mod norm;
pub mod sample;
mod table;

pub use engine::{check_threads, max_threads, Engine, NonFinite, Options, Prediction};
pub use error::Error;
pub use shrink_format::quant::{Acts, Format, Storage, FORMATS};
pub use model::{Observer, Site};
pub use shrink_format::{Batch, Config};
