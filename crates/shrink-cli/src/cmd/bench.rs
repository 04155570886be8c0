use anyhow::Result;
use shrink_eval::{bench, decoder_bench};

use shrink_eval::decoder::KvFormat;

use crate::args::{kv_format, positive};

/// Latency (median, p90), sequences per second, peak RSS, weights in memory and load time of a model on the runtime.
/// A decoder (.gguf file) reports prompt and generation tokens/s instead, as llama-bench does (--pp / --tg).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  shrink --threads 1 bench out/minilm-int8 --batch 1 --seq 128 --runs 50\n  \
    shrink --threads 2 bench out/smollm2-int8.gguf --pp 128 --tg 64 --runs 5\n  \
    shrink --threads 2 bench out/smollm2-int8.gguf --pp 512 --tg 512 --kv int8")]
pub struct Args {
    model: String,
    #[arg(long, default_value_t = 1, value_parser = positive())]
    batch: usize,
    #[arg(long, default_value_t = 128, value_parser = positive())]
    seq: usize,
    #[arg(long, default_value_t = 50, value_parser = positive())]
    runs: usize,
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Decoders: prompt tokens run in one pass from an empty cache.
    #[arg(long, default_value_t = 128, value_parser = positive())]
    pp: usize,
    /// Decoders: tokens generated one at a time from an empty cache.
    #[arg(long, default_value_t = 64, value_parser = positive())]
    tg: usize,
    /// Decoders: the KV cache's keys and values in f32, or int8 with one scale per head and token.
    #[arg(long, default_value = "f32", value_parser = kv_format)]
    kv: KvFormat,
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        if shrink_eval::decoder::Decoder::is_decoder(self.model.as_ref()) {
            let r = decoder_bench::bench_decoder(self.model.as_ref(), self.pp, self.tg, self.runs, self.warmup, threads, self.kv)?;
            match self.json {
                true => println!("{}", serde_json::to_string(&r)?),
                false => print!("{}", decoder_bench::render(&r)),
            }
            return Ok(());
        }
        let r = bench::bench_model(&self.model, self.batch, self.seq, self.runs, self.warmup, threads)?;
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print!("{}", bench::render(&r));
        }
        Ok(())
    }
}
