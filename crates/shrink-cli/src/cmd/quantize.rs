use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use shrink_compress::decoder;
use shrink_compress::quantize::job::{self, Job};
use shrink_compress::quantize::EmbeddingStorage;

use crate::args::{OutArgs, QuantArgs};

/// Quantize a model folder for the runtime; the output is an HF-style folder every shrink command loads. A decoder
/// given as a .gguf file or an HF Llama folder (converted to a temp f32 .gguf beside --out first; int8-dynamic or int4 in groups of 32, rounded to nearest or by --gptq, optionally after
/// --smooth-alpha or --awq, calibrated on --calib text; embeddings int8 unless --embeddings says otherwise; int4
/// mixed with int8 sites within a perplexity budget by --max-ppl-increase) is written as a .gguf file that
/// llama.cpp runs too.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    shrink quantize assets/models/all-MiniLM-L6-v2 --scheme int8-dynamic --out out/minilm-int8\n  \
    shrink quantize out/bbc-classifier-128 --scheme int8-static --observer entropy --calib assets/data/bbc/train.jsonl --out out/cls-static\n  \
    shrink quantize out/bbc-classifier-128 --scheme int4 --group 32 --gptq --embeddings int4 --calib assets/data/bbc/train.jsonl --out out/cls-int4\n  \
    shrink quantize out/bbc-classifier-128 --scheme int4 --max-drop 0.5 --calib assets/data/bbc/train.jsonl --out out/cls-mixed\n  \
    shrink quantize assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --scheme int4 --gptq --act-order --awq \\\n      \
    --calib ../shared/data/wikitext-2/valid.txt --out out/smollm2-int4.gguf\n  \
    shrink quantize assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --scheme int4 --gptq --act-order --awq \\\n      \
    --max-ppl-increase 5 --calib ../shared/data/wikitext-2/valid.txt --out out/smollm2-int4-mixed.gguf\n  \
    shrink quantize out/smollm2-hf --scheme int8-dynamic --out out/smollm2-int8.gguf")]
pub struct Args {
    model: String,
    #[command(flatten)]
    q: QuantArgs,
    #[command(flatten)]
    out: OutArgs,
    /// Mixed precision: promote the most sensitive sites to `--fallback` until the drop on a dev subset
    /// carved from the --calib file (disjoint from the calibration texts) is at most this many points.
    #[arg(long)]
    max_drop: Option<f64>,
    /// Wider format for --max-drop (default: int8 for int4 schemes, fp32 otherwise).
    #[arg(long)]
    fallback: Option<String>,
    /// Rows of the --calib file held out as the dev subset (for --max-drop and --calib-repeats).
    #[arg(long, default_value_t = 400)]
    dev_samples: usize,
    /// Quantize with this many disjoint calibration subsets and report the spread of the dev metric; the
    /// folder written uses the first.
    #[arg(long, default_value_t = 1)]
    calib_repeats: usize,
    /// Decoders: tokens of the --calib text (plain text, e.g. wikitext-2 valid) run for SmoothQuant and GPTQ, in
    /// windows of --max-len (default 512).
    #[arg(long, default_value_t = 8192)]
    calib_tokens: usize,
    /// Decoders, int4: mixed precision. Sites (a layer's QKV, O, gate+up, down) go to int8, those that cut the
    /// divergence from fp32 most per byte first, until the perplexity on held-out --calib text (--dev-tokens
    /// after the --calib-tokens) is within this many percent of the fp32 model's.
    #[arg(long)]
    max_ppl_increase: Option<f64>,
    /// Decoders: tokens of the --calib text after the calibration tokens held out for --max-ppl-increase.
    #[arg(long, default_value_t = 2048)]
    dev_tokens: usize,
    /// Write the search / spread report here as JSON (the lineage step: parameters, and the search and spread under metrics).
    #[arg(long)]
    report: Option<PathBuf>,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        if let Some(gguf) = shrink_format::gguf::file_of(self.model.as_ref()) {
            return self.decoder(&gguf);
        }
        if shrink_format::arch::llama::HfConfig::is_folder(self.model.as_ref()) {
            let dir = PathBuf::from(&self.model);
            return self.decoder(&dir);
        }
        if self.max_ppl_increase.is_some() {
            bail!("--max-ppl-increase is a decoder's (.gguf or HF Llama folder) budget; an encoder's is --max-drop");
        }
        let out = self.out.dir(&[&self.model])?;
        let job = Job {
            opts: self.q.options(),
            calib: self.q.calib(),
            max_len: self.q.max_len,
            model: self.model,
            max_drop: self.max_drop,
            fallback: self.fallback,
            dev_samples: self.dev_samples,
            calib_repeats: self.calib_repeats,
            report: self.report,
            threads,
        };
        let r = job::run(&job, &out)?;
        eprintln!(
            "quantized {} Linears: {:.1} MB -> {:.1} MB ({:.2}x smaller); wrote {}",
            r.quantized,
            r.bytes_in as f64 / 1e6,
            r.bytes_out as f64 / 1e6,
            r.bytes_in as f64 / r.bytes_out as f64,
            out.path().display()
        );
        Ok(())
    }

    fn decoder(self, input: &Path) -> Result<()> {
        if self.max_drop.is_some() {
            bail!("--max-drop is an encoder's accuracy budget; a decoder's is --max-ppl-increase");
        }
        let out = self.out.gguf_file("a decoder")?;
        let mut opts = self.q.options();
        opts.embeddings = self.q.embeddings.unwrap_or(EmbeddingStorage::Int8);
        let calib = self.q.calib.as_deref().map(|path| decoder::Calib { path, tokens: self.calib_tokens, ctx: self.q.max_len.unwrap_or(512) });
        if let Some(p) = self.max_ppl_increase.filter(|p| !(p.is_finite() && *p >= 0.0)) {
            bail!("--max-ppl-increase {p}: a percentage, 0 or more");
        }
        let budget = self.max_ppl_increase.map(|max_increase| decoder::MixedBudget { max_increase, dev_tokens: self.dev_tokens });
        let r = match input.is_dir() {
            true => decoder::quantize_hf(input, out, &opts, calib.as_ref(), budget.as_ref())?,
            false => decoder::quantize_gguf(input, out, &opts, calib.as_ref(), budget.as_ref())?,
        };
        if !r.awq.is_empty() {
            eprintln!("{}", decoder::describe(&r.awq));
        }
        if let Some(m) = &r.mixed {
            eprintln!(
                "mixed precision: {} of {} sites int8; held-out perplexity {:.3} (fp32 {:.3}, all int4 {:.3}): {:+.2}%",
                m.promoted.len(),
                m.sites,
                m.chosen,
                m.fp32,
                m.int4,
                (m.chosen / m.fp32 - 1.0) * 100.0
            );
        }
        eprintln!(
            "quantized {} tensors: {:.1} MB -> {:.1} MB of tensors; wrote {}",
            r.quantized,
            r.bytes_in as f64 / 1e6,
            r.bytes_out as f64 / 1e6,
            out.display()
        );
        Ok(())
    }
}
