use std::path::PathBuf;

use anyhow::Result;
use shrink_train::attention_transfer::{self, Options, Train};

use crate::args::{choice, OutArgs, RowArgs, TrainArgs};

/// Recovery after `shrink attention`: each converted layer (sliding, linear) learns, on the unconverted model's
/// inputs, to give the attention output its softmax attention gave (MSE; Hedgehog / LoLCATs-style attention
/// transfer). Trains Hedgehog's feature maps, or the query and key projections; fine-tune at the new length after.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    shrink attention out/bbc-cls --to linear --feature-map hedgehog --out out/bbc-hedgehog\n  \
    shrink attention-transfer out/bbc-hedgehog --data assets/data/bbc/train.jsonl --max-len 512 --lr 1e-3 --epochs 1 --out out/bbc-hedgehog-at\n  \
    shrink finetune out/bbc-hedgehog-at --data assets/data/bbc/train.jsonl --max-len 512 --epochs 1 --out out/bbc-hedgehog-ft")]
pub struct Args {
    /// A folder `shrink attention` converted (fp32).
    model: String,
    /// Texts to transfer on (JSONL, --text-field; labels are not needed).
    #[arg(long)]
    data: PathBuf,
    /// The unconverted, full-attention model (default: this model with every layer's attention full, which is
    /// what it was before conversion).
    #[arg(long)]
    teacher: Option<String>,
    /// What trains (default: maps when every converted layer is hedgehog, else qk).
    #[arg(long, value_parser = choice::<Train>())]
    train: Option<Train>,
    #[command(flatten)]
    out: OutArgs,
    #[command(flatten)]
    rows: RowArgs,
    #[command(flatten)]
    train_args: TrainArgs,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let out = self.out.dir(&[&self.model])?;
        let o = Options { teacher: self.teacher, train: self.train, rows: self.rows.rows(&self.train_args), opts: self.train_args.options()? };
        let r = attention_transfer::transfer(&self.model, &self.data, &out, &o)?;
        eprintln!(
            "saved {} (epoch {}; dev transfer loss {:.6} -> {:.6}; trained in {:.0} s)",
            out.path().display(),
            r.best_epoch,
            r.dev_loss_before,
            r.dev_loss_after,
            r.train_seconds
        );
        shrink_io::events::report(&r)?;
        Ok(())
    }
}
