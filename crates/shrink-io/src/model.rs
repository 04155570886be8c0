//! Opening a model folder (or hub id) for a command: on the runtime engine for inference commands, as a trainable
//! candle model (weights, config and tokenizer together) for training commands.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use shrink_model::{Bert, TextTokenizer};
use shrink_runtime::{Engine, Options};

/// Threads for the numeric work: `--threads` (at most `shrink_runtime::max_threads()`), else every core.
pub fn threads(flag: Option<usize>) -> Result<usize> {
    match flag {
        Some(n) => shrink_runtime::check_threads(n).context("--threads"),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// `--no-mmap` clears it: every runtime engine this process loads then reads its weights into memory.
static MAP_WEIGHTS: AtomicBool = AtomicBool::new(true);

pub fn set_map_weights(on: bool) {
    MAP_WEIGHTS.store(on, Ordering::Relaxed);
}

/// Runtime options with this process's `--no-mmap` setting.
pub fn engine_options(threads: usize, max_len: Option<usize>) -> Options {
    Options { threads, max_len, mmap: MAP_WEIGHTS.load(Ordering::Relaxed) }
}

/// The runtime engine for any model folder (fp32 or quantized). `max_len`: None = what the model was fine-tuned
/// with, else 128.
pub fn engine(spec: &str, max_len: Option<usize>, threads: usize) -> Result<Engine> {
    let dir = shrink_model::resolve_model(spec)?;
    Engine::load(&dir, engine_options(threads, max_len)).with_context(|| format!("loading model {spec}"))
}

/// A local folder for a folder path or hub id.
pub use shrink_model::resolve_model;

pub struct Loaded {
    pub dir: PathBuf,
    pub model: Bert,
    pub tokenizer: TextTokenizer,
}

/// `max_len`: None = what the model was fine-tuned with, else 128.
pub fn load(spec: &str, max_len: Option<usize>) -> Result<Loaded> {
    let dir = shrink_model::resolve_model(spec)?;
    let model = Bert::load_dir(&dir).with_context(|| format!("loading model {spec}"))?;
    let max_len = max_len.or(model.config.shrink.as_ref().and_then(|s| s.max_len)).unwrap_or(128);
    if max_len > model.config.max_position_embeddings {
        bail!(
            "--max-len {max_len} exceeds the model's max_position_embeddings {} ({})",
            model.config.max_position_embeddings,
            dir.join("config.json").display()
        );
    }
    let tokenizer = TextTokenizer::for_model(&dir, max_len, model.config.vocab_size)?;
    Ok(Loaded { dir, model, tokenizer })
}
