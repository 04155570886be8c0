//! A small tokenizer of each kind, built from BBC texts: WordPiece as BERT's (lower-cased, accents stripped, split
//! on whitespace and punctuation; every character seen and its `##` piece, common suffixes, the most frequent
//! words), and byte-level BPE as RoBERTa's (trained on the texts, `<s> ... </s>`, `<pad>` = 1).

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, Tokenizer};

pub struct Built {
    pub json: String,
    pub vocab_size: usize,
}

/// Whole words kept beside the characters: a vocabulary of about 800 tokens.
const WORDS: usize = 500;
/// Multi-character word endings (the single-character ones are among the `##` pieces already).
const SUFFIXES: [&str; 5] = ["##ed", "##ing", "##ly", "##er", "##es"];
/// The BPE's vocabulary: 256 bytes, 5 specials, the rest merges; learnt from all the texts given, so the fixture's
/// train slice uses only part of it (as a domain corpus does a real vocabulary) and trim-vocab has work to do.
const BPE_VOCAB: usize = 4000;

fn finish(tok: Tokenizer) -> Result<Built> {
    let vocab_size = tok.get_vocab_size(true);
    Ok(Built { json: tok.to_string(true).map_err(|e| anyhow!("tokenizer JSON: {e}"))?, vocab_size })
}

pub fn wordpiece(texts: &[String]) -> Result<Built> {
    let (normalizer, pre) = (BertNormalizer::default(), BertPreTokenizer);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in texts {
        let mut n = NormalizedString::from(t.as_str());
        normalizer.normalize(&mut n).map_err(|e| anyhow!("{e}"))?;
        let mut p = PreTokenizedString::from(n);
        pre.pre_tokenize(&mut p).map_err(|e| anyhow!("{e}"))?;
        for (word, _, _) in p.get_splits(OffsetReferential::Normalized, OffsetType::Byte) {
            *counts.entry(word.to_string()).or_default() += 1;
        }
    }
    let mut chars: Vec<char> = counts.keys().flat_map(|w| w.chars()).collect();
    chars.sort_unstable();
    chars.dedup();
    let mut words: Vec<(&String, &usize)> = counts.iter().filter(|(w, _)| w.chars().count() > 1).collect();
    words.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut tokens: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from).to_vec();
    tokens.extend(chars.iter().map(|c| c.to_string()));
    tokens.extend(chars.iter().map(|c| format!("##{c}")));
    tokens.extend(SUFFIXES.map(String::from));
    tokens.extend(words.into_iter().take(WORDS).map(|(w, _)| w.clone()));
    // The builder takes its vocabulary from a vocab.txt (one token a line, the line number its id).
    let vocab_txt = tempfile::NamedTempFile::new()?;
    std::fs::write(vocab_txt.path(), tokens.join("\n"))?;
    let path = vocab_txt.path().to_str().ok_or_else(|| anyhow!("temp path is not UTF-8"))?.to_string();
    let model = WordPiece::from_file(&path).unk_token("[UNK]".into()).build().map_err(|e| anyhow!("{e}"))?;
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(normalizer)).with_pre_tokenizer(Some(pre)).with_decoder(Some(WordPieceDecoder::default()));
    tok.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), 3), ("[CLS]".into(), 2))));
    tok.add_special_tokens(&["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(|s| AddedToken::from(s, true)));
    finish(tok)
}

pub fn byte_level_bpe(texts: &[String]) -> Result<Built> {
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_decoder(Some(ByteLevelDecoder::default()))
        .with_post_processor(Some(RobertaProcessing::new(("</s>".into(), 2), ("<s>".into(), 0)).add_prefix_space(false)));
    let specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"].map(|s| AddedToken::from(s, true)).to_vec();
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(BPE_VOCAB)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tok.train(&mut trainer, texts.iter()).map_err(|e| anyhow!("training the BPE: {e}"))?;
    finish(tok)
}
