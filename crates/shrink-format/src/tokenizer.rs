//! The model's own `tokenizer.json` (HF tokenizers), with truncation and padding to a batch.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use tokenizers::{Tokenizer, TruncationParams};

use crate::folder::{read_regular, TOKENIZER_FILE};

pub struct TextTokenizer {
    /// None for a folder without tokenizer.json (`absent`): it runs on token ids only.
    inner: Option<Tokenizer>,
    file: PathBuf,
    pub max_len: usize,
    pad_id: u32,
}

/// A padded batch: B sequences of T tokens, row-major.
#[derive(Debug, Clone)]
pub struct Batch {
    pub ids: Vec<u32>,  // (B, T)
    pub mask: Vec<u32>, // (B, T): 1 = real token, 0 = padding
    pub b: usize,
    pub t: usize,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`; texts are cut to `max_len` tokens, special tokens included.
    pub fn load(dir: &Path, max_len: usize) -> Result<Self> {
        let file = dir.join(TOKENIZER_FILE);
        if !file.exists() {
            bail!("{}: tokenizer missing (a model folder needs tokenizer.json)", file.display());
        }
        if max_len < 3 {
            bail!("max length (--max-len) {max_len} leaves no room for text: [CLS] and [SEP] take 2 tokens, so at least 3");
        }
        let json = read_regular(&file, "tokenizer")?;
        let mut inner = Tokenizer::from_bytes(json).map_err(|e| anyhow!("{}: cannot read tokenizer: {e}", file.display()))?;
        inner
            .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| anyhow!("{}: {e}", file.display()))?;
        inner.with_padding(None);
        // WordPiece vocabularies say [PAD], RoBERTa's BPE <pad>.
        let pad_id = ["[PAD]", "<pad>"].iter().find_map(|t| inner.token_to_id(t)).unwrap_or(0);
        Ok(Self { inner: Some(inner), file, max_len, pad_id })
    }

    /// The stand-in for a folder that has no tokenizer.json (RoBERTa checkpoints often ship it apart): every text
    /// method is an error naming the missing file.
    pub fn absent(dir: &Path, max_len: usize) -> Self {
        Self { inner: None, file: dir.join(TOKENIZER_FILE), max_len, pad_id: 0 }
    }

    fn inner(&self) -> Result<&Tokenizer> {
        self.inner.as_ref().ok_or_else(|| anyhow!("{}: tokenizer missing (this model takes token ids only)", self.file.display()))
    }

    /// `load`, then checks every token id fits the model's embedding table of `vocab_size` rows.
    pub fn for_model(dir: &Path, max_len: usize, vocab_size: usize) -> Result<Self> {
        let tok = Self::load(dir, max_len)?;
        // The largest id, not the count: a vocabulary with gaps in its ids can be small and still point past the table.
        let vocab = tok.inner()?.get_vocab(true);
        if let Some((token, id)) = vocab.iter().max_by_key(|(_, &id)| id).filter(|(_, &id)| id as usize >= vocab_size) {
            bail!(
                "{}: tokenizer has {} tokens (ids up to {id}, {token:?}) but config.json vocab_size is {vocab_size}",
                tok.file.display(),
                vocab.len()
            );
        }
        Ok(tok)
    }

    /// Token ids of one text, with special tokens, truncated to `max_len`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.trim().is_empty() {
            bail!("empty text: nothing to encode");
        }
        let enc = self.inner()?.encode(text, true).map_err(|e| anyhow!("{}: tokenization failed: {e}", self.file.display()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes and right-pads to the longest text of the batch.
    pub fn batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<Batch> {
        let seqs = texts.iter().map(|t| self.encode(t.as_ref())).collect::<Result<Vec<_>>>()?;
        Ok(pad(&seqs, self.pad_id))
    }

    /// Tokens in the vocabulary (0 when `absent`).
    pub fn vocab_size(&self) -> usize {
        self.inner.as_ref().map_or(0, |t| t.get_vocab_size(true))
    }
}

/// Right-pads id sequences to a (B, T) batch with its attention mask.
pub fn pad(seqs: &[Vec<u32>], pad_id: u32) -> Batch {
    let b = seqs.len();
    let t = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = vec![pad_id; b * t];
    let mut mask = vec![0u32; b * t];
    for (i, s) in seqs.iter().enumerate() {
        ids[i * t..i * t + s.len()].copy_from_slice(s);
        mask[i * t..i * t + s.len()].fill(1);
    }
    Batch { ids, mask, b, t }
}
