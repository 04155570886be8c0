//! Training rows for distillation and QAT: tokenised texts with optional label indices, split into train and a
//! seeded dev subset.

use std::path::Path;

use anyhow::{bail, Result};
use shrink_model::TextTokenizer;

use shrink_io::data;

pub use crate::example::Example;

/// Which JSONL fields hold the text and the label.
#[derive(Clone, Debug)]
pub struct Fields {
    pub text: String,
    pub label: String,
}

/// Which rows to train on, shared by distill and qat.
#[derive(Clone, Debug)]
pub struct Rows {
    pub fields: Fields,
    /// Tokens per text (None: the model's fine-tuning length, else 128).
    pub max_len: Option<usize>,
    /// A seeded sample of this many rows.
    pub limit: Option<usize>,
    /// Fraction held out (seeded) as the dev split.
    pub dev_fraction: f64,
}

/// (train, dev) examples of `path` under `rows`.
pub fn read_split(path: &Path, tok: &TextTokenizer, labels: Option<&[String]>, rows: &Rows, seed: u64) -> Result<(Vec<Example>, Vec<Example>)> {
    split(read(path, tok, labels, &rows.fields, rows.limit, seed)?, rows.dev_fraction, seed)
}

/// Reads `path` (a seeded sample of `limit` rows if given) and tokenises it; `labels` (the model's, in index
/// order) maps each row's label field, or None for unlabelled text.
pub fn read(path: &Path, tok: &TextTokenizer, labels: Option<&[String]>, fields: &Fields, limit: Option<usize>, seed: u64) -> Result<Vec<Example>> {
    let rows = data::sample(data::read_jsonl(path)?, limit, seed);
    if let Some(names) = labels {
        return crate::train::examples(path, &rows, tok, (&fields.text, &fields.label), names);
    }
    let texts = data::field(path, &rows, &fields.text)?;
    texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let ids = tok.encode(&text).map_err(|e| e.context(format!("{}: row {}", path.display(), i + 1)))?;
            Ok(Example { ids, label: None, text })
        })
        .collect()
}

/// (train, dev): a seeded random `fraction` of the examples held out for choosing the best epoch.
pub fn split(examples: Vec<Example>, fraction: f64, seed: u64) -> Result<(Vec<Example>, Vec<Example>)> {
    if !(0.0..1.0).contains(&fraction) {
        bail!("--dev-fraction {fraction}: must be in [0, 1)");
    }
    let mut shuffled = data::shuffled(examples, seed ^ 0xde5);
    let dev_len = (shuffled.len() as f64 * fraction).round() as usize;
    let train = shuffled.split_off(dev_len);
    if train.is_empty() {
        bail!("--dev-fraction {fraction} leaves no training rows");
    }
    Ok((train, shuffled))
}
