//! Measuring a model on the runtime: tasks and their metrics (`task`), sentence embeddings (`embed`), the latency
//! harness (`bench`; `decoder_bench` for decoders' tokens/s) and parameter, byte and FLOP counts (`inspect`;
//! `inspect_gguf` for llama.cpp files).

pub mod bench;
pub mod chat;
pub mod decoder;
pub mod decoder_bench;
pub mod embed;
pub mod evaluate;
pub mod generate;
pub mod inspect;
pub mod inspect_gguf;
pub mod perplexity;
pub mod task;
