use std::path::PathBuf;

use anyhow::Result;
use shrink_train::distill::{self, student::Width, DistillOptions, EmbedLoss, Task, WeightFlags};
use shrink_train::prune::importance::Method;

use crate::args::{choice, OutArgs, RowArgs, TrainArgs};

/// Knowledge distillation into a shallower and/or narrower student initialised from the teacher's layers and its
/// most important heads, FFN neurons and hidden channels (a normal model folder).
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    shrink --threads 1 distill --teacher out/bbc-classifier-128 --data assets/data/bbc/train.jsonl --student-layers 3 --out out/distill-cls3\n  \
    shrink --threads 1 distill --teacher out/bbc-classifier-128 --data assets/data/bbc/train.jsonl --student-layers 3 --hidden 256 \\\n    \
    --ffn 768 --hidden-weight 1 --out out/distill-cls3-256\n  \
    shrink distill --teacher assets/models/all-MiniLM-L6-v2 --task embedding --data assets/data/bbc/train.jsonl --out out/distill-emb3")]
pub struct Args {
    /// Teacher model folder (classify: a fine-tuned classifier with its head).
    #[arg(long)]
    teacher: String,
    /// Training rows (JSONL); classify needs --label-field, embedding only --text-field.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    out: OutArgs,
    #[arg(long, value_parser = choice::<Task>(), default_value = "classify")]
    task: Task,
    #[arg(long, default_value_t = 3)]
    student_layers: usize,
    /// every-other (evenly spaced, ending at the last layer: 6 -> 3 takes 1,3,5), first, or 0-based indices like 0,2,4.
    #[arg(long, default_value = "every-other")]
    layer_map: String,
    /// Model width C' of the student: the C' hidden channels with the most activation energy over the importance
    /// sample are kept in every tensor; a multiple of the head width (32 for MiniLM), the student has C' / 32 heads
    /// at most. Hidden-state matching then goes through a learned C' -> C projection per layer (not saved).
    #[arg(long)]
    hidden: Option<usize>,
    /// Attention heads per student layer (default: the teacher's, at most --hidden / head width), the most
    /// important kept (head-mask gradients, as `shrink prune`).
    #[arg(long)]
    heads: Option<usize>,
    /// FFN neurons per student layer, the most important kept (Taylor, as `shrink prune`); a multiple of 32 keeps
    /// int4 quantization possible.
    #[arg(long)]
    ffn: Option<usize>,
    /// How --heads / --ffn rank heads and neurons (default: taylor for classify, l2 for embedding).
    #[arg(long, value_parser = choice::<Method>())]
    importance: Option<Method>,
    /// Training rows the importance of heads, neurons and hidden channels is measured on.
    #[arg(long, default_value_t = 256)]
    importance_samples: usize,
    /// Cross-entropy on the labels (classify; default 0.5).
    #[arg(long)]
    ce_weight: Option<f64>,
    /// KL(teacher || student) of the logits at --temperature, times T^2 (classify; default 0.5).
    #[arg(long)]
    kl_weight: Option<f64>,
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    /// MSE between each student layer's output and its mapped teacher layer's, real tokens only.
    #[arg(long, default_value_t = 0.0)]
    hidden_weight: f64,
    /// KL of the last layer's attention distributions, teacher's last layer vs the student's (MiniLM).
    #[arg(long, default_value_t = 0.0)]
    attn_weight: f64,
    /// Sentence-embedding loss against the teacher's mean-pooled embeddings (embedding; default 1).
    #[arg(long)]
    embed_weight: Option<f64>,
    #[arg(long, value_parser = choice::<EmbedLoss>(), default_value = "cosine")]
    embed_loss: EmbedLoss,
    #[command(flatten)]
    rows: RowArgs,
    #[command(flatten)]
    train: TrainArgs,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let out = self.out.dir(&[&self.teacher])?;
        let weights = WeightFlags {
            ce: self.ce_weight,
            kl: self.kl_weight,
            temperature: self.temperature,
            hidden: self.hidden_weight,
            attn: self.attn_weight,
            embed: self.embed_weight,
            embed_loss: self.embed_loss,
        };
        let o = DistillOptions {
            task: self.task,
            student_layers: self.student_layers,
            layer_map: self.layer_map,
            width: Width { hidden: self.hidden, heads: self.heads, ffn: self.ffn },
            importance: self.importance,
            importance_samples: self.importance_samples,
            weights,
            rows: self.rows.rows(&self.train),
            train: self.train.options()?,
        };
        let r = distill::distill(&self.teacher, &self.data, &out, &o)?;
        eprintln!("saved {} (epoch {}, dev {:?}, trained in {:.0} s)", out.path().display(), r.best_epoch, r.dev_score, r.train_seconds);
        shrink_io::events::report(&r)?;
        Ok(())
    }
}
