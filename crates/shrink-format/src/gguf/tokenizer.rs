//! A llama.cpp file's tokenizer rebuilt from its metadata: the byte-level BPE of `tokenizer.ggml.model = "gpt2"`
//! (tokens, merges, control tokens), with the pre-tokenizer `tokenizer.ggml.pre` names. The pre-tokenizers known
//! here are those whose split is HF's ByteLevel regex, optionally after single digits.

use anyhow::{bail, Context, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use super::{GgufFile, Value};

/// ggml's token type of control tokens (<|im_start|>, <|endoftext|>, ...): matched whole, before BPE.
const CONTROL: u64 = 3;

fn strings<'a>(f: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let a = f.get(key).and_then(Value::as_array).with_context(|| format!("{}: metadata {key} missing or not an array", f.path.display()))?;
    a.iter().map(|v| v.as_str().with_context(|| format!("{}: {key} holds a non-string", f.path.display()))).collect()
}

pub fn tokenizer(f: &GgufFile) -> Result<Tokenizer> {
    let path = f.path.display();
    let model = f.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        bail!("{path}: tokenizer model {model:?}; shrink rebuilds gpt2 (byte-level BPE) tokenizers");
    }
    let pre = f.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
    let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    let pre_tokenizer = match pre {
        "default" | "gpt-2" => byte_level,
        "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![PreTokenizerWrapper::Digits(Digits::new(true)), byte_level])),
        other => bail!("{path}: pre-tokenizer {other:?} is not one shrink rebuilds (it knows default, gpt-2, smollm)"),
    };
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.to_string(), i as u32)).collect();
    let merges = strings(f, "tokenizer.ggml.merges")?
        .iter()
        .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).with_context(|| format!("{path}: merge {m:?} is not two tokens")))
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| anyhow::anyhow!("{path}: BPE: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tokenizer));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let types = f.get("tokenizer.ggml.token_type").and_then(Value::as_array).unwrap_or(&[]);
    let control: Vec<AddedToken> = types
        .iter()
        .zip(&tokens)
        .filter(|(t, _)| t.as_u64() == Some(CONTROL))
        .map(|(_, s)| AddedToken::from(s.to_string(), true))
        .collect();
    tok.add_special_tokens(&control);
    Ok(tok)
}
