use std::path::{Path, PathBuf};

use anyhow::Result;
use shrink_compress::quantize::EmbeddingStorage;
use shrink_format::folder::OutDir;
use shrink_train::qat::{self, QatActs, QatOptions, QatScheme};

use crate::args::{choice, OutArgs, RowArgs, TrainArgs};

/// Quantization-aware training: fake-quantized weights and, with --activations static, fake-quantized Linear
/// inputs on moving-average ranges (straight-through estimator), then the PTQ writer's folder.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    shrink --threads 1 qat --model out/bbc-classifier-32 --scheme int4-g32 --embeddings int4 --data assets/data/bbc/train.jsonl --distill --out out/distill-qat-int4\n  \
    shrink --threads 1 qat --model out/bbc-classifier-32 --scheme int8 --activations static --data assets/data/bbc/train.jsonl --distill --out out/qat-int8-static")]
pub struct Args {
    /// Fine-tuned fp32 classifier folder.
    #[arg(long)]
    model: String,
    #[arg(long, value_parser = choice::<QatScheme>())]
    scheme: QatScheme,
    /// Storage of the token embedding table (fake-quantized too when not fp32).
    #[arg(long, value_parser = choice::<EmbeddingStorage>(), default_value = "fp32")]
    embeddings: EmbeddingStorage,
    /// int8 activations per token at run time (dynamic, not fake-quantized), or one scale and zero point per
    /// Linear input trained with the weights and exported (static: int8-static / int4-g32-static).
    #[arg(long, value_parser = choice::<QatActs>(), default_value = "dynamic")]
    activations: QatActs,
    /// --activations static: each training batch moves a range this far towards its own (min, max)
    /// [default: 0.01].
    #[arg(long)]
    ema_momentum: Option<f32>,
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    out: OutArgs,
    /// Add KL on the fp32 model's logits (weight 1) to the cross-entropy.
    #[arg(long)]
    distill: bool,
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    /// Also keep the trained fp32 weights in this folder.
    #[arg(long)]
    fp32_out: Option<PathBuf>,
    #[command(flatten)]
    rows: RowArgs,
    #[command(flatten)]
    train: TrainArgs,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let fp32_out = self.fp32_out.map(|p| OutDir::new(&p, &[Path::new(&self.model)], self.out.force)).transpose()?;
        let out = self.out.dir(&[&self.model])?;
        let o = QatOptions {
            scheme: self.scheme,
            embeddings: self.embeddings,
            acts: self.activations,
            ema_momentum: self.ema_momentum,
            distill: self.distill,
            temperature: self.temperature,
            rows: self.rows.rows(&self.train),
            train: self.train.options()?,
            fp32_out,
        };
        let qat::Trained { outcome: r, summary: s, .. } = qat::qat(&self.model, &self.data, &out, &o)?;
        eprintln!(
            "saved {} ({:.1} MB; epoch {}, dev {:?}, trained in {:.0} s)",
            out.path().display(),
            s.bytes_out as f64 / 1e6,
            r.best_epoch,
            r.dev_score,
            r.train_seconds
        );
        shrink_io::events::report(&r)?;
        Ok(())
    }
}
