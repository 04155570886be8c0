use anyhow::{bail, Result};

use crate::args::OutArgs;

/// A Llama-family GGUF file as an HF Llama folder (config.json, model.safetensors in f32, tokenizer.json and
/// tokenizer_config.json with the chat template), as transformers saves one: every tensor dequantized, named and
/// ordered as transformers expects. generate, eval and bench read the folder as they read the file.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink convert assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --out out/smollm2-hf\n  \
    shrink eval out/smollm2-hf --task perplexity --data ../shared/data/wikitext-2/test.txt --max-tokens 4096")]
pub struct Args {
    /// A .gguf file of a llama-architecture model.
    model: String,
    #[command(flatten)]
    out: OutArgs,
}

impl Args {
    pub fn run(self) -> Result<()> {
        if !self.model.ends_with(".gguf") {
            bail!("{}: convert reads a .gguf file", self.model);
        }
        let out = self.out.dir(&[&self.model])?;
        let r = shrink_export::hf_llama::gguf_to_hf(self.model.as_ref(), &out)?;
        eprintln!("wrote {} tensors in f32 ({:.1} MB) to {}", r.tensors, r.bytes as f64 / 1e6, out.path().display());
        Ok(())
    }
}
