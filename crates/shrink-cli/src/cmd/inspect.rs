use anyhow::Result;
use shrink_eval::inspect;

use crate::args::positive;

/// Parameters and bytes per component and layer at fp32/fp16/int8/int4, and FLOPs per sequence.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink inspect assets/models/all-MiniLM-L6-v2 --seq 128")]
pub struct Args {
    /// Model folder (config.json, model.safetensors, tokenizer.json) or hub id org/name.
    model: String,
    #[arg(long)]
    json: bool,
    /// Sequence length for the FLOP count (1 ..= max_position_embeddings).
    #[arg(long, default_value_t = 128, value_parser = positive())]
    seq: usize,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let r = inspect::inspect_model(&self.model, self.seq)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{}", inspect::render(&r));
        }
        Ok(())
    }
}
