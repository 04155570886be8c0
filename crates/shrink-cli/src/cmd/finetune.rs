use std::path::PathBuf;

use anyhow::Result;
use shrink_train::finetune::{self, Job};

use crate::args::{OutArgs, TrainArgs};

/// Fine-tune a text classifier: mean pooling + linear head, AdamW, linear warm-up and decay.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink finetune assets/models/all-MiniLM-L6-v2 --data assets/data/bbc/train.jsonl --out out/bbc-classifier")]
pub struct Args {
    model: String,
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    out: OutArgs,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    #[command(flatten)]
    train: TrainArgs,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let out = self.out.dir(&[&self.model])?;
        let t = &self.train;
        let job = Job { model: self.model.clone(), data: self.data, fields: t.fields(), limit: t.limit, max_len: self.max_len, train: t.options()? };
        finetune::run(&job, &out)?;
        eprintln!("saved {}", out.path().display());
        Ok(())
    }
}
