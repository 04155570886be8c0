use std::path::PathBuf;

use anyhow::Result;
use shrink_compress::quantize::job::{self, Job};

use crate::args::{OutArgs, QuantArgs};

/// Quantize a model folder for the runtime; the output is an HF-style folder every shrink command loads.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    shrink quantize assets/models/all-MiniLM-L6-v2 --scheme int8-dynamic --out out/minilm-int8\n  \
    shrink quantize out/bbc-classifier-128 --scheme int8-static --observer entropy --calib assets/data/bbc/train.jsonl --out out/cls-static\n  \
    shrink quantize out/bbc-classifier-128 --scheme int4 --group 32 --gptq --embeddings int4 --calib assets/data/bbc/train.jsonl --out out/cls-int4\n  \
    shrink quantize out/bbc-classifier-128 --scheme int4 --max-drop 0.5 --calib assets/data/bbc/train.jsonl --out out/cls-mixed")]
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
    /// Write the search / spread report here as JSON (the lineage step: parameters, and the search and spread under metrics).
    #[arg(long)]
    report: Option<PathBuf>,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
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
}
