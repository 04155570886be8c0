use std::path::Path;

use anyhow::Result;
use shrink_eval::{inspect, inspect_gguf};

use crate::args::positive;

/// Parameters and bytes per component and layer at fp32/fp16/int8/int4, and FLOPs per sequence; for a .gguf file,
/// its architecture, tokenizer, and parameters and bytes per ggml type and tensor family.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  shrink inspect assets/models/all-MiniLM-L6-v2 --seq 128\n  shrink inspect assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf")]
pub struct Args {
    /// Model folder (config.json, model.safetensors, tokenizer.json), hub id org/name, or a .gguf file.
    model: String,
    #[arg(long)]
    json: bool,
    /// Sequence length for the FLOP count (1 ..= max_position_embeddings).
    #[arg(long, default_value_t = 128, value_parser = positive())]
    seq: usize,
}

impl Args {
    pub fn run(self) -> Result<()> {
        if self.model.ends_with(".gguf") {
            let r = inspect_gguf::inspect_gguf(Path::new(&self.model))?;
            match self.json {
                true => println!("{}", serde_json::to_string_pretty(&r)?),
                false => print!("{}", inspect_gguf::render_gguf(&r)),
            }
            return Ok(());
        }
        let r = inspect::inspect_model(&self.model, self.seq)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            print!("{}", inspect::render(&r));
        }
        Ok(())
    }
}
