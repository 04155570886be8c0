use std::path::PathBuf;

use anyhow::Result;
use shrink_eval::evaluate::{self, Job};
use shrink_eval::perplexity;
use shrink_eval::task::Task;

use shrink_eval::decoder::KvFormat;

use crate::args::{choice, kv_format, positive, FieldArgs};

/// Evaluate a model on a task: retrieval (query field ranks all docs by cosine), classify, or a decoder's perplexity
/// on a text file.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  shrink eval assets/models/all-MiniLM-L6-v2 --task retrieval --data assets/data/bbc/test.jsonl\n  \
                        shrink eval out/bbc-classifier --task classify --data assets/data/bbc/test.jsonl --json\n  \
                        shrink eval assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --task perplexity \\\n      \
                        --data ../shared/data/wikitext-2/test.txt --max-tokens 4096 --ctx 512")]
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
    /// Perplexity: tokens per window.
    #[arg(long, default_value_t = 512, value_parser = positive())]
    ctx: usize,
    /// Perplexity: tokens between window starts (default: --ctx, windows that do not overlap). Each window scores
    /// the tokens no earlier one did.
    #[arg(long, value_parser = positive())]
    stride: Option<usize>,
    /// Perplexity: score only the text's first N tokens.
    #[arg(long, value_parser = positive())]
    max_tokens: Option<usize>,
    /// Also run this model (e.g. the fp32 original) and report how far the outputs moved: `output_error`
    /// (mean relative change of logits or doc embeddings) and, for retrieval, `mean_cosine` of doc embeddings; for
    /// perplexity, `kl_divergence` (mean KL(base || model) per token, nats) and `same_top1`.
    #[arg(long)]
    compare: Option<String>,
    /// Perplexity: the KV cache's keys and values in f32, or int8 with one scale per head and token.
    #[arg(long, default_value = "f32", value_parser = kv_format)]
    kv: KvFormat,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let Self { model, task, data, fields, max_len, batch, json, compare, ctx, stride, max_tokens, kv } = self;
        if task == Task::Perplexity {
            let job = perplexity::Job { model: model.into(), data, ctx, stride: stride.unwrap_or(ctx), max_tokens, compare: compare.map(Into::into), kv };
            return print(&serde_json::to_value(perplexity::run(&job)?)?, json);
        }
        let outcome = evaluate::run(&Job { model, task, data, fields: fields.fields(), max_len, batch, compare, threads })?;
        if let (false, Some((labels, confusion))) = (json, &outcome.confusion) {
            eprintln!("confusion (rows = true, columns = predicted; {}):", labels.join(", "));
            for row in confusion {
                eprintln!("  {row:?}");
            }
        }
        print(&outcome.report, json)
    }
}

fn print(report: &serde_json::Value, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        for (k, v) in report.as_object().expect("report is an object") {
            println!("{k:>10}: {v}");
        }
    }
    Ok(())
}
