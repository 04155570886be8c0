use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use shrink_eval::generate;

use crate::args::positive;

/// Greedy text from a Llama-family GGUF file on the runtime (int8 / int4 where `shrink quantize` wrote it, else
/// fp32), streamed; prompt and generation speeds on stderr.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink generate assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --prompt \"The capital of France is\" --max-new 32")]
pub struct Args {
    /// A .gguf file of a llama-architecture model with a gpt2 (byte-level BPE) tokenizer.
    model: PathBuf,
    /// The text to continue, as is (no chat template is applied).
    #[arg(long)]
    prompt: String,
    /// New tokens at most; generation also stops at the file's EOS token.
    #[arg(long, default_value_t = 64, value_parser = positive())]
    max_new: usize,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let mut out = std::io::stdout();
        let g = generate::generate(&self.model, &self.prompt, self.max_new, &mut |text| {
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        })?;
        println!();
        eprintln!(
            "prompt: {} tokens to the first new one in {:.1} ms ({:.1} tokens/s); generation: {} more in {:.1} ms ({:.1} tokens/s)",
            g.prompt_tokens,
            g.prompt_ms,
            g.prompt_tokens_per_s(),
            g.new_tokens.saturating_sub(1),
            g.generation_ms,
            g.generation_tokens_per_s()
        );
        Ok(())
    }
}
