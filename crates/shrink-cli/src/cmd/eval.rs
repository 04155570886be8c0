use std::path::PathBuf;

use anyhow::Result;
use shrink_eval::evaluate::{self, Job};
use shrink_eval::task::Task;

use crate::args::{choice, positive, FieldArgs};

/// Evaluate a model on a task: retrieval (query field ranks all docs by cosine) or classify.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  shrink eval assets/models/all-MiniLM-L6-v2 --task retrieval --data assets/data/bbc/test.jsonl\n  \
                        shrink eval out/bbc-classifier --task classify --data assets/data/bbc/test.jsonl --json")]
pub struct Args {
    model: String,
    #[arg(long, value_parser = choice::<Task>())]
    task: Task,
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    fields: FieldArgs,
    /// Default: the length the model was fine-tuned with, else 128.
    #[arg(long)]
    max_len: Option<usize>,
    #[arg(long, default_value_t = 32, value_parser = positive())]
    batch: usize,
    #[arg(long)]
    json: bool,
    /// Also run this model (e.g. the fp32 original) and report how far the outputs moved: `output_error`
    /// (mean relative change of logits or doc embeddings) and, for retrieval, `mean_cosine` of doc embeddings.
    #[arg(long)]
    compare: Option<String>,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let Self { model, task, data, fields, max_len, batch, json, compare } = self;
        let outcome = evaluate::run(&Job { model, task, data, fields: fields.fields(), max_len, batch, compare, threads })?;
        if let (false, Some((labels, confusion))) = (json, &outcome.confusion) {
            eprintln!("confusion (rows = true, columns = predicted; {}):", labels.join(", "));
            for row in confusion {
                eprintln!("  {row:?}");
            }
        }
        let report = outcome.report;
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            for (k, v) in report.as_object().expect("report is an object") {
                println!("{k:>10}: {v}");
            }
        }
        Ok(())
    }
}
