//! The model's own `tokenizer.json` (HF tokenizers), with truncation and padding to a batch.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;
use tokenizers::normalizers::Precompiled;
use tokenizers::processors::template::TemplateProcessing;
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
        let json = read_regular(&file, "tokenizer")?;
        Self::from_json(json.as_bytes(), file, max_len)
    }

    /// `load` on tokenizer.json bytes already read; `file` names them in errors.
    pub fn from_json(json: &[u8], file: PathBuf, max_len: usize) -> Result<Self> {
        if max_len < 3 {
            bail!("max length (--max-len) {max_len} leaves no room for text: [CLS] and [SEP] take 2 tokens, so at least 3");
        }
        check_json(json).map_err(|e| anyhow!("{}: cannot read tokenizer: {e}", file.display()))?;
        let mut inner =
            Tokenizer::from_bytes(json).map_err(|e| anyhow!("{}: cannot read tokenizer: {e}", file.display()))?;
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

/// Rejects what tokenizers 0.22 panics on (an `expect`, an index) instead of returning an error: a JSON syntax error
/// inside `decoder` (so the whole file must be JSON first), a `Precompiled` normalizer whose charsmap does not
/// decode (decoded here the same way: from JSON text, the charsmap read as a borrowed string), and a
/// `TemplateProcessing` whose templates name a special token it does not define, or defines with unequal ids and
/// tokens (deserialising skips the builder's checks; encoding then indexes the missing token). Post-processors are
/// matched by shape, not by their "type": serde reads `TemplateProcessing` and `Sequence` whatever the tag says.
fn check_json(json: &[u8]) -> Result<()> {
    let doc: Value = serde_json::from_slice(json).map_err(|e| anyhow!("not JSON: {e}"))?;
    for n in components(&doc, "normalizer", "normalizers") {
        if n.get("type").and_then(Value::as_str) == Some("Precompiled") {
            serde_json::from_str::<Precompiled>(&n.to_string()).map_err(|e| anyhow!("Precompiled normalizer: {e}"))?;
        }
    }
    for p in components(&doc, "post_processor", "processors") {
        // Anything that is not a template is left to tokenizers; the canonical form spells every piece out.
        let Ok(t) = serde_json::from_value::<TemplateProcessing>(p.clone()) else { continue };
        let t = serde_json::to_value(&t)?;
        let defined = t["special_tokens"].as_object().cloned().unwrap_or_default();
        for (name, tok) in &defined {
            if tok["ids"].as_array().map(Vec::len) != tok["tokens"].as_array().map(Vec::len) {
                bail!("TemplateProcessing: special token {name:?} has different numbers of ids and tokens");
            }
        }
        let pieces = ["single", "pair"].into_iter().filter_map(|f| t[f].as_array()).flatten();
        if let Some(id) = pieces.filter_map(|p| p["SpecialToken"]["id"].as_str()).find(|id| !defined.contains_key(*id)) {
            bail!("TemplateProcessing: the template uses special token {id:?}, which special_tokens does not define");
        }
    }
    Ok(())
}

/// `doc[key]` and every component nested in it through `list` arrays (a `Sequence`'s, whatever its "type" says).
fn components<'a>(doc: &'a Value, key: &str, list: &str) -> Vec<&'a Value> {
    let (mut all, mut todo): (Vec<&Value>, Vec<&Value>) = (Vec::new(), doc.get(key).into_iter().collect());
    while let Some(c) = todo.pop() {
        todo.extend(c.get(list).and_then(Value::as_array).into_iter().flatten());
        all.push(c);
    }
    all
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer_json(normalizer: &str, decoder: &str) -> Vec<u8> {
        let json = format!(
            r#"{{"version":"1.0","normalizer":{normalizer},"pre_tokenizer":null,"post_processor":null,"decoder":{decoder},
                "added_tokens":[],"model":{{"type":"WordLevel","vocab":{{"[UNK]":0}},"unk_token":"[UNK]"}}}}"#
        );
        json.into_bytes()
    }

    fn load_err(json: &[u8]) -> String {
        TextTokenizer::from_json(json, "t/tokenizer.json".into(), 8).err().expect("loaded").to_string()
    }

    /// Found by fuzz/fuzz_targets/tokenizer.rs: tokenizers panicked on these instead of returning an error.
    #[test]
    fn what_tokenizers_panics_on_is_an_error() {
        assert!(TextTokenizer::from_json(&tokenizer_json("null", "null"), "t".into(), 8).is_ok());
        for charsmap in ["null", "\"not base64!\"", "\"\\u0041AAA\"", "\"AAAA\""] {
            let n = format!(r#"{{"type":"Sequence","normalizers":[{{"type":"Precompiled","precompiled_charsmap":{charsmap}}}]}}"#);
            let err = load_err(&tokenizer_json(&n, "null"));
            assert!(err.contains("t/tokenizer.json: cannot read tokenizer: Precompiled"), "{err}");
        }
        // Invalid UTF-8 inside the decoder: a syntax error there was an `expect("Helper")`.
        let mut json = tokenizer_json("null", r#"{"type":"Fuse","x":"?"}"#);
        let at = json.iter().position(|&b| b == b'?').unwrap();
        json[at] = 0x90;
        assert!(load_err(&json).contains("cannot read tokenizer: not JSON"));
        // A template naming an undefined special token, or one with more ids than tokens, inside a Sequence.
        for (key, ids, want) in [("[SEPM", "[3]", "uses special token \"[SEP]\""), ("[SEP]", "[3, 4]", "different numbers")] {
            // Mistyped tags: serde takes both objects for what their fields say they are.
            let p = format!(
                r#"{{"type":"Sequ]ence","processors":[{{"type":"TemplateProc]essing",
                    "single":[{{"SpecialToken":{{"id":"[SEP]","type_id":0}}}},{{"Sequence":{{"id":"A","type_id":0}}}}],
                    "pair":[{{"Sequence":{{"id":"A","type_id":0}}}},{{"Sequence":{{"id":"B","type_id":1}}}}],
                    "special_tokens":{{"{key}":{{"id":"[SEP]","ids":{ids},"tokens":["[SEP]"]}}}}}}]}}"#
            );
            let json = String::from_utf8(tokenizer_json("null", "null")).unwrap();
            let json = json.replace(r#""post_processor":null"#, &format!(r#""post_processor":{p}"#));
            let err = load_err(json.as_bytes());
            assert!(err.contains("cannot read tokenizer: TemplateProcessing: ") && err.contains(want), "{err}");
        }
    }
}
