//! `shrink finetune`: a fresh classification head for the data's labels, then `train::finetune`.

use std::path::PathBuf;

use anyhow::Result;
use shrink_format::folder::OutDir;
use shrink_format::schema::Step;
use shrink_io::{data, events, model};

use crate::distill::examples::Fields;
use crate::train::{self, TrainOptions};

pub struct Job {
    pub model: String,
    /// Labelled JSONL; `limit`: a seeded random sample of this many rows.
    pub data: PathBuf,
    pub fields: Fields,
    pub limit: Option<usize>,
    pub max_len: usize,
    pub train: TrainOptions,
}

/// Trains and writes the classifier to `out` (checked by the caller before any work).
pub fn run(job: &Job, out: &OutDir) -> Result<()> {
    let Job { model, data: path, fields, limit, max_len, train: opts } = job;
    let mut m = model::load(model, Some(*max_len))?;
    let rows = data::read_jsonl(path)?;
    let rows = &data::sample(rows, *limit, opts.seed);
    let labels = data::label_set(path, rows, &fields.label)?;
    let examples = train::examples(path, rows, &m.tokenizer, (&fields.text, &fields.label), &labels)?;
    events::note(format!("fine-tuning on {} examples, {} labels, max_len {max_len}", examples.len(), labels.len()));
    m.model.add_classifier(&labels, opts.seed)?;
    let mut tuned = train::finetune(m.model, &examples, opts, &train::cross_entropy, &mut train::Plain)?;
    if let Some(s) = tuned.config.shrink.as_mut() {
        s.max_len = Some(*max_len);
    }
    let parameters = serde_json::json!({ "data": path.display().to_string(), "limit": limit, "max_len": max_len, "train": opts });
    tuned.config.lineage.push(Step::new("finetune", &m.dir, parameters)?.metric("examples", examples.len()));
    tuned.save_dir(out, &m.dir)
}
