use std::path::PathBuf;

use anyhow::Result;
use shrink_train::sparsify::job::{self, Job};
use shrink_train::sparsify::{Method, Options, Scope, ScoreInit};

use crate::args::{choice, OutArgs, TrainArgs};

/// Prune the encoder's Linear weights, unstructured or N:M: one-shot by magnitude, or gradually while
/// fine-tuning (--data) by magnitude or movement (learned scores, Sanh et al. 2020; --distill learns from the
/// unpruned model's logits too). Writes a dense fp32 folder with exact zeros; `shrink quantize --scheme sparse`
/// then stores it for the runtime's sparse kernel.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    shrink sparsify out/bbc-classifier-128 --sparsity 0.5 --out out/cls-sparse50\n  \
    shrink sparsify out/bbc-classifier-128 --nm 2:4 --out out/cls-2of4\n  \
    shrink --threads 1 sparsify out/bbc-classifier-128 --sparsity 0.9 --data assets/data/bbc/train.jsonl --method movement --distill --epochs 2 --begin 0.1 --end 0.7 --lr 1e-4 --out out/cls-move90\n  \
    shrink --threads 1 sparsify out/bbc-classifier-32 --method soft-movement --l1 100 --threshold 0.1 --data assets/data/bbc/train.jsonl --out out/cls-soft\n  \
    shrink quantize out/cls-move90 --scheme sparse --out out/cls-move90-runtime")]
pub struct Args {
    model: String,
    #[command(flatten)]
    out: OutArgs,
    /// Fraction of the encoder Linears' weights set to zero [default: 0.5; soft movement: set by --l1].
    #[arg(long)]
    sparsity: Option<f64>,
    #[arg(long, value_parser = choice::<Method>(), default_value = "magnitude")]
    method: Method,
    #[arg(long, value_parser = choice::<Scope>(), default_value = "layer")]
    scope: Scope,
    /// N:M pattern instead of --sparsity, e.g. 2:4 (keep the 2 largest of every 4 consecutive inputs).
    #[arg(long, value_parser = parse_nm)]
    nm: Option<(usize, usize)>,
    /// Labelled training data: prune gradually while fine-tuning the model's head and encoder on it.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Gradual pruning starts at this fraction of the training steps (movement's scores learn from step 0) ...
    #[arg(long, default_value_t = 0.1)]
    begin: f64,
    /// ... and reaches the final sparsity at this one; the mask is then held while training goes on.
    #[arg(long, default_value_t = 0.7)]
    end: f64,
    /// Movement: Adam learning rate of the scores (no weight decay).
    #[arg(long, default_value_t = 1e-2)]
    score_lr: f64,
    /// Movement: where the scores start (zeros is Sanh et al.'s, and needs far longer training than BBC's few
    /// hundred steps).
    #[arg(long, value_parser = choice::<ScoreInit>(), default_value = "magnitude")]
    score_init: ScoreInit,
    /// Soft movement: keep the weights whose σ(score) exceeds this.
    #[arg(long, default_value_t = 0.1)]
    threshold: f64,
    /// Soft movement: final weight of the penalty mean σ(score) (ramped up on the cubic schedule); larger prunes more.
    #[arg(long, default_value_t = 100.0)]
    l1: f64,
    /// Also learn the input model's logits (half cross-entropy, half KL at T = 2); the model needs its head.
    #[arg(long)]
    distill: bool,
    /// Tokens per text (default: the model's fine-tuning length, else 128).
    #[arg(long)]
    max_len: Option<usize>,
    #[command(flatten)]
    train: TrainArgs,
}

/// "N:M" as in 2:4.
fn parse_nm(s: &str) -> Result<(usize, usize), String> {
    let (n, m) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected N:M, e.g. 2:4"))?;
    Ok((n.trim().parse().map_err(|e| format!("{s:?}: {e}"))?, m.trim().parse().map_err(|e| format!("{s:?}: {e}"))?))
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let out = self.out.dir(&[&self.model])?;
        let Self { method, scope, nm, begin, end, score_lr, score_init, threshold, l1, .. } = self;
        let opts = Options { sparsity: 0.0, method, scope, nm, begin, end, score_lr, score_init, threshold, l1 };
        let t = &self.train;
        let job = Job {
            model: self.model.clone(),
            sparsity: self.sparsity,
            opts,
            data: self.data,
            fields: t.fields(),
            limit: t.limit,
            distill: self.distill,
            max_len: self.max_len,
            train: t.options()?,
            threads,
        };
        let r = job::run(&job, &out)?;
        eprintln!(
            "{:.1}% of {} encoder Linear weights are zero; wrote {} (`shrink quantize {} --scheme sparse` stores it sparse)",
            r.achieved * 100.0,
            r.weights,
            out.path().display(),
            out.path().display()
        );
        Ok(())
    }
}
