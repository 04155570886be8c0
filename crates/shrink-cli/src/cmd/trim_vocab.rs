use std::path::PathBuf;

use anyhow::Result;

use crate::args::OutArgs;

/// Keeps only the vocabulary a corpus uses (plus special tokens and single characters, so unseen words still
/// split into pieces; a BPE also keeps the tokens its merges go through): a smaller token table and tokenizer
/// (WordPiece or BPE), the same output on every corpus text.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink trim-vocab out/distill-cls3 --data assets/data/bbc/train.jsonl --out out/distill-cls3-bbcvocab\n  \
    shrink quantize out/distill-cls3-bbcvocab --scheme int8-dynamic --embeddings int8 --out out/distill-cls3-bbcvocab-int8")]
pub struct Args {
    /// An fp32 model folder (trim before quantizing).
    model: String,
    /// Texts whose tokens are kept: .jsonl (--text-field) or .txt (one per line).
    #[arg(long)]
    data: PathBuf,
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Keep a token seen at least this many times.
    #[arg(long, default_value_t = 1)]
    min_count: usize,
    /// Also cut the position table to this many tokens: the model then refuses longer inputs (set it to the
    /// longest input it will run, e.g. its fine-tuning --max-len).
    #[arg(long)]
    max_positions: Option<usize>,
    #[command(flatten)]
    out: OutArgs,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let out = self.out.dir(&[&self.model])?;
        let r = shrink_compress::vocab::trim_model(&self.model, &self.data, &self.text_field, self.min_count, self.max_positions, &out)?;
        eprintln!(
            "kept {} of {} tokens ({} special, {} single characters, {} seen in {} texts, {} of which split as before); token table {:.1} -> {:.1} MB fp32; positions {} -> {}; wrote {}",
            r.vocab_after,
            r.vocab_before,
            r.special,
            r.single_chars,
            r.seen,
            r.texts,
            r.texts_unchanged,
            r.table_bytes_before as f64 / 1e6,
            r.table_bytes_after as f64 / 1e6,
            r.positions_before,
            r.positions_after,
            out.path().display()
        );
        shrink_io::events::report(&r)?;
        Ok(())
    }
}
