use anyhow::Result;
use shrink_eval::bench;

use crate::args::positive;

/// Latency (median, p90), sequences per second, peak RSS, weights in memory and load time of a model on the runtime.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink --threads 1 bench out/minilm-int8 --batch 1 --seq 128 --runs 50")]
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
    #[arg(long)]
    json: bool,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let r = bench::bench_model(&self.model, self.batch, self.seq, self.runs, self.warmup, threads)?;
        if self.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print!("{}", bench::render(&r));
        }
        Ok(())
    }
}
