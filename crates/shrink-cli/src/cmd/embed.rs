use std::path::PathBuf;

use anyhow::Result;

use crate::args::positive;

/// Sentence embeddings (mean-pooled, L2-normalised) for a .txt (one text per line) or .jsonl file.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink embed assets/models/all-MiniLM-L6-v2 --input texts.txt --output emb.npy")]
pub struct Args {
    model: String,
    #[arg(long)]
    input: PathBuf,
    /// .jsonl ({"embedding": [...]} per line, input order) or .npy (float32, N x C).
    #[arg(long)]
    output: PathBuf,
    /// Field holding the text in .jsonl input.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Tokens per text, special tokens included; longer texts are truncated.
    #[arg(long)]
    max_len: Option<usize>,
    #[arg(long, default_value_t = 32, value_parser = positive())]
    batch: usize,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let Self { model, input, output, text_field, max_len, batch } = self;
        let (n, dims) = shrink_eval::embed::embed_file(&model, &input, &output, &text_field, max_len, batch, threads)?;
        eprintln!("wrote {n} embeddings of {dims} dims to {}", output.display());
        Ok(())
    }
}
