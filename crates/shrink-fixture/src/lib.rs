//! A tiny generated model for tests that exercise the wiring, not the numbers: 2 layers, hidden 64, 4 heads, FFN
//! 128, in the checkpoint layout of BERT, DistilBERT or RoBERTa (that family's config keys and tensor names), with
//! a tokenizer of its family (WordPiece for BERT and DistilBERT, byte-level BPE for RoBERTa) built from BBC texts,
//! and a labelled slice of BBC train / test. Everything is written into a temp folder, deterministically from a
//! seed: a test that fine-tunes it takes seconds where MiniLM takes minutes.
//!
//! Tests that pin real numbers (golden parity, BBC accuracy, int8 quality) stay on MiniLM.

mod data;
mod tokenizer;
mod weights;

use std::path::{Path, PathBuf};

use anyhow::Result;

pub use data::{bbc_rows, write_slice};

/// The checkpoint layouts the fixture writes: shrink's architecture families.
pub use shrink_format::arch::Arch as Family;
pub use weights::model_type;

/// The model's dimensions (see the crate doc).
pub const LAYERS: usize = 2;
pub const HIDDEN: usize = 64;
pub const HEADS: usize = 4;
pub const FFN: usize = 128;
/// Token positions the model numbers (RoBERTa's table holds 2 rows more: positions start after padding_idx 1).
pub const MAX_POSITIONS: usize = 128;

/// A generated model folder and data slice in a temp folder that lives as long as this value.
pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub family: Family,
    /// config.json, model.safetensors, tokenizer.json.
    pub model: PathBuf,
    /// Labelled BBC rows (`id`, `title`, `body`, `text`, `label`), all five topics in each.
    pub train: PathBuf,
    pub test: PathBuf,
    /// A folder for the test's outputs, removed with the fixture.
    pub scratch: PathBuf,
}

/// Train and test rows in the slice: enough for every topic, few enough that an epoch takes a second.
pub const TRAIN_ROWS: usize = 120;
pub const TEST_ROWS: usize = 40;

impl Fixture {
    pub fn new(family: Family, seed: u64) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let model = tmp.path().join("model");
        write_model(&model, family, seed)?;
        let train = tmp.path().join("train.jsonl");
        let test = tmp.path().join("test.jsonl");
        write_slice(&bbc_file("train.jsonl"), &train, TRAIN_ROWS)?;
        write_slice(&bbc_file("test.jsonl"), &test, TEST_ROWS)?;
        let scratch = tmp.path().join("out");
        std::fs::create_dir(&scratch)?;
        Ok(Self { _tmp: tmp, family, model, train, test, scratch })
    }
}

/// The repository's BBC split (scripts/fetch-assets.sh writes it).
pub fn bbc_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/data/bbc").join(name)
}

/// Writes `dir` (created): config.json in `family`'s keys, model.safetensors with seeded random weights under its
/// checkpoint names, and a tokenizer.json of its kind built from BBC train texts.
pub fn write_model(dir: &Path, family: Family, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let texts: Vec<String> = bbc_rows(&bbc_file("train.jsonl"))?.into_iter().map(|r| r.text).collect();
    let tok = match family {
        Family::Bert | Family::DistilBert => tokenizer::wordpiece(&texts)?,
        Family::Roberta => tokenizer::byte_level_bpe(&texts)?,
    };
    let vocab = tok.vocab_size;
    std::fs::write(dir.join("tokenizer.json"), tok.json)?;
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&weights::config(family, vocab))?)?;
    std::fs::write(dir.join("model.safetensors"), weights::safetensors(family, vocab, seed)?)?;
    Ok(())
}
