use anyhow::Result;
use shrink_train::prune::job::{self, Job, Recover};
use shrink_train::prune::{Options, Schedule};

use crate::args::{choice, OutArgs, ScoreArgs};

/// Structured pruning: removes the least important heads, FFN neurons and layers from the weights and writes a
/// normal (smaller, faster) model folder; optionally fine-tunes it to recover.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink --threads 1 prune out/bbc-classifier-128 --heads 0.5 --ffn 0.5 --data assets/data/bbc/train.jsonl \\\n    \
                        --recover finetune --epochs 1 --out out/prune-50")]
pub struct Args {
    model: String,
    /// Fraction of all attention heads to remove (ranked globally; every layer keeps at least one).
    #[arg(long, default_value_t = 0.0)]
    heads: f64,
    /// Fraction of each layer's FFN neurons to remove (kept widths rounded to a multiple of 32).
    #[arg(long, default_value_t = 0.0)]
    ffn: f64,
    /// Whole layers to drop: the N whose removal raises the loss least.
    #[arg(long, default_value_t = 0)]
    layers: usize,
    #[arg(long, value_parser = choice::<Schedule>(), default_value = "oneshot")]
    schedule: Schedule,
    /// Rounds of --schedule iterative.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    #[command(flatten)]
    score: ScoreArgs,
    /// After the cut: none, or train on all of --data with the `finetune` loop (finetune: labels; distill: labels
    /// and the unpruned model's outputs).
    #[arg(long, value_parser = choice::<Recover>(), default_value = "none")]
    recover: Recover,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Fine-tuning batch of --recover.
    #[arg(long, default_value_t = 16)]
    train_batch: usize,
    #[command(flatten)]
    out: OutArgs,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let out = self.out.dir(&[&self.model])?;
        let Self { heads, ffn, layers, schedule, steps, .. } = self;
        let opts = Options { heads, ffn, layers, schedule, steps, method: self.score.method, batch: self.score.batch };
        let job = Job {
            model: self.model,
            opts,
            score: self.score.scoring(),
            recover: self.recover,
            epochs: self.epochs,
            lr: self.lr,
            batch: self.train_batch,
            threads,
        };
        job::run(&job, &out)?;
        eprintln!("saved {}", out.path().display());
        Ok(())
    }
}
