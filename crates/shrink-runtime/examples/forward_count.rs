//! Runs a model folder's forward pass on one fixed B x T batch of token ids `reps` times, on one thread at the
//! level in use (`SHRINK_ISA`): what bench/arm-instructions.py counts under the emulator. The difference between
//! two reps counts is one whole forward (embeddings, every Linear, attention, LayerNorm, GELU), loading cancelled.
//!
//! cargo run --release -p shrink-runtime --example forward_count -- assets/models/all-MiniLM-L6-v2 1 128 2

use shrink_runtime::{Engine, Options};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: forward_count MODEL_DIR B T REPS";
    let [dir, b, t, reps] = <[String; 4]>::try_from(args).map_err(|_| anyhow::anyhow!("{usage}"))?;
    let num = |s: &str| s.parse::<usize>().map_err(|_| anyhow::anyhow!("{usage}: {s} is not a count"));
    let (b, t, reps) = (num(&b)?, num(&t)?, num(&reps)?);
    let mut engine = Engine::load_ids(Path::new(&dir), Options { threads: 1, max_len: Some(t), mmap: true })?;
    // [CLS] ... [SEP] with ordinary word-piece ids between: the forward's cost does not depend on which.
    let ids: Vec<u32> = (0..b * t)
        .map(|i| match i % t {
            0 => 101,
            p if p == t - 1 => 102,
            _ => 1000 + (i as u32 * 37) % 20000,
        })
        .collect();
    let mask = vec![1u32; b * t];
    let mut sum = 0f32;
    for _ in 0..reps {
        sum += engine.forward(&ids, &mask, b, t)?.iter().sum::<f32>();
    }
    // Keeps the work observable.
    println!("{sum}");
    Ok(())
}
