use std::path::PathBuf;

use anyhow::Result;
use shrink_compress::quantize::job::{self, Sensitivity};
use shrink_eval::task::Task;

use crate::args::{choice, positive, FieldArgs, QuantArgs};

/// Per-site sensitivity: quantize one site (QKV, attention output, FFN in, FFN out of one layer) at a time,
/// the rest fp32, and measure the task drop and the output error; writes a table, JSON and an SVG plot.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  \
    shrink sensitivity out/bbc-classifier-128 --task classify --data dev.jsonl --scheme int4 --calib assets/data/bbc/train.jsonl --out-dir out/sens")]
pub struct Args {
    model: String,
    #[arg(long, value_parser = choice::<Task>())]
    task: Task,
    /// Dev data (never the test file).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    fields: FieldArgs,
    /// Use the first N rows of --data.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    q: QuantArgs,
    #[arg(long)]
    out_dir: PathBuf,
    #[arg(long, default_value_t = 32, value_parser = positive())]
    batch: usize,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let job = Sensitivity {
            opts: self.q.options(),
            calib: self.q.calib(),
            max_len: self.q.max_len,
            model: self.model,
            task: self.task,
            data: self.data,
            fields: self.fields.fields(),
            limit: self.limit,
            batch: self.batch,
            out_dir: self.out_dir,
            threads,
        };
        print!("{}", job::sensitivity(&job)?);
        Ok(())
    }
}
