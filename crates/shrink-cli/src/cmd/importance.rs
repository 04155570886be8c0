use std::path::PathBuf;

use anyhow::Result;
use shrink_train::prune::job::importance_report;

use crate::args::ScoreArgs;

/// Importance of every head, FFN neuron and layer: head-mask sensitivity (Michel et al.), first-order Taylor,
/// drop-one; or weight norms (--method l2). Writes importance.json and a layers x heads heatmap (heads.svg).
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink importance out/bbc-classifier-128 --data assets/data/bbc/train.jsonl --samples 128 --out out/prune-importance")]
pub struct Args {
    model: String,
    #[command(flatten)]
    score: ScoreArgs,
    /// Output folder for importance.json and heads.svg.
    #[arg(long)]
    out: PathBuf,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let scores = importance_report(&self.model, &self.score.scoring(), &self.out)?;
        for (l, h) in scores.heads.iter().enumerate() {
            let row: Vec<String> = h.iter().map(|v| format!("{v:.2}")).collect();
            println!("layer {l}: heads [{}]{}", row.join(" "), scores.layers.get(l).map_or(String::new(), |d| format!(", drop-one {d:+.4}")));
        }
        eprintln!("wrote {} and {}", self.out.join("importance.json").display(), self.out.join("heads.svg").display());
        Ok(())
    }
}
