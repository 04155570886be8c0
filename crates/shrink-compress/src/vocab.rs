//! Vocabulary trimming: a model deployed on one domain uses a fraction of BERT's 30522 WordPiece tokens, yet the
//! token table is most of a small model's file (11.7 MB of a 3-layer int8 MiniLM's 18 MB). `trim` keeps the tokens
//! that a corpus uses, plus every special token and every single-character piece (`x`, `##x`), so any unseen word
//! still splits into kept pieces instead of becoming [UNK]. Kept tokens keep their relative order, and the
//! tokenizer files are rewritten with the new ids, so the result is an ordinary HF folder every command loads.
//!
//! Exactness: WordPiece is greedy longest-match, and every piece of every corpus word is kept, so each corpus text
//! gets the same pieces as before and the same embedding rows; `trim` re-tokenises the corpus to prove it. Above
//! `min_count` 1 rare tokens go too, and words holding them split into smaller kept pieces.
//!
//! BPE (RoBERTa's byte-level one) builds a token by merges through intermediate tokens, so a kept token also keeps
//! the two parts of every merge that makes it, down to single characters (every byte, for byte-level BPE), and
//! only merges between kept tokens stay, in their order. A corpus word then meets the same merges as before: each
//! one the full list applied to it made a token that survives into a kept piece, and no merge was added, so at
//! every step the best-ranked merge is the one it was.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;
use serde_json::Value;
use shrink_model::checkpoint::TOKENIZER_FILE;
use shrink_model::{Bert, TextTokenizer};
use shrink_format::folder::OutDir;
use shrink_format::schema::Step;

/// Texts are tokenised whole: a longer `--max-len` at deployment must not meet tokens trimmed away.
const NO_TRUNCATION: usize = 1 << 20;

#[derive(Debug, Serialize)]
pub struct Report {
    pub vocab_before: usize,
    pub vocab_after: usize,
    /// Of the kept: special tokens, single-character pieces, and tokens seen at least `min_count` times.
    pub special: usize,
    pub single_chars: usize,
    pub seen: usize,
    /// BPE only: tokens kept because a merge makes a kept token from them.
    pub merge_parts: usize,
    pub texts: usize,
    /// Corpus texts whose pieces did not change (all of them at `min_count` 1; above it, texts with a rare token
    /// now split it into smaller kept pieces).
    pub texts_unchanged: usize,
    pub table_bytes_before: usize,
    pub table_bytes_after: usize,
    /// The longest sequence the position table numbers, before and after `max_positions`.
    pub positions_before: usize,
    pub positions_after: usize,
}

/// The tokenizer models trimming knows how to rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    WordPiece,
    Bpe,
}

/// `tokenizer.json`'s model kind and id -> token list (its vocabulary is the whole model).
fn id_to_token(json: &Value, file: &Path) -> Result<(Kind, Vec<String>)> {
    let model = &json["model"];
    let kind = match model["type"].as_str() {
        Some("WordPiece") => Kind::WordPiece,
        Some("BPE") => Kind::Bpe,
        _ => bail!("{}: vocabulary trimming supports WordPiece (BERT) and BPE (RoBERTa) tokenizers; this one is {}", file.display(), model["type"]),
    };
    if kind == Kind::Bpe && [&model["continuing_subword_prefix"], &model["end_of_word_suffix"]].iter().any(|v| !v.is_null()) {
        bail!("{}: a BPE with a subword prefix or word suffix: its merges are not plain concatenations, which trimming relies on", file.display());
    }
    let Some(vocab) = model["vocab"].as_object() else { bail!("{}: model.vocab is not an object", file.display()) };
    let mut tokens = vec![None; vocab.len()];
    for (tok, id) in vocab {
        match id.as_u64().map(|i| i as usize) {
            Some(i) if i < tokens.len() && tokens[i].is_none() => tokens[i] = Some(tok.clone()),
            _ => bail!("{}: token {tok:?} has id {id}, not a unique id below {}", file.display(), vocab.len()),
        }
    }
    Ok((kind, tokens.into_iter().map(|t| t.expect("ids are a permutation of 0..len")).collect()))
}

/// A BPE's merges as (left, right) pairs, in rank order; either spelling tokenizers writes ("a b" or ["a", "b"]).
fn merges(json: &Value, file: &Path) -> Result<Vec<(String, String)>> {
    let bad = |m: &Value| anyhow::anyhow!("{}: merge {m} is neither \"a b\" nor [\"a\", \"b\"]", file.display());
    let list = json["model"]["merges"].as_array().with_context(|| format!("{}: model.merges is not a list", file.display()))?;
    list.iter()
        .map(|m| match m {
            Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).ok_or_else(|| bad(m)),
            Value::Array(p) => match (p.first().and_then(Value::as_str), p.get(1).and_then(Value::as_str), p.len()) {
                (Some(a), Some(b), 2) => Ok((a.to_string(), b.to_string())),
                _ => Err(bad(m)),
            },
            _ => Err(bad(m)),
        })
        .collect()
}

/// Adds to `keep` the parts of every merge that makes a kept token, until nothing changes; returns how many it
/// added, and the merges to keep (both parts and the result kept), in their order.
fn close_over_merges(keep: &mut [bool], tokens: &[String], merges: &[(String, String)]) -> (usize, Vec<usize>) {
    let id: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let triple = |(a, b): &(String, String)| Some((*id.get(a.as_str())?, *id.get(b.as_str())?, *id.get(format!("{a}{b}").as_str())?));
    let triples: Vec<Option<(usize, usize, usize)>> = merges.iter().map(triple).collect();
    let mut added = 0;
    loop {
        let before = added;
        for &(a, b, r) in triples.iter().flatten() {
            if keep[r] {
                for p in [a, b] {
                    added += usize::from(!keep[p]);
                    keep[p] = true;
                }
            }
        }
        if added == before {
            break;
        }
    }
    let kept = triples.iter().enumerate().filter(|(_, t)| t.is_some_and(|(a, b, r)| keep[a] && keep[b] && keep[r])).map(|(i, _)| i).collect();
    (added, kept)
}

/// A single character, or WordPiece's `##` piece of one: always kept, so unseen words still split.
fn is_single_char(token: &str, kind: Kind) -> bool {
    let piece = if kind == Kind::WordPiece { token.strip_prefix("##").unwrap_or(token) } else { token };
    piece.chars().count() == 1
}

/// Rewrites every id `tokenizer.json` holds (vocab, added tokens, post-processor, padding) through `new_id`.
fn remap_tokenizer(json: &mut Value, tokens: &[String], kept: &[u32], new_id: &HashMap<u32, u32>, file: &Path) -> Result<()> {
    let map = |id: &Value| -> Result<Value> {
        let old = id.as_u64().with_context(|| format!("{}: id {id} is not a number", file.display()))? as u32;
        let new = new_id.get(&old).with_context(|| format!("{}: token id {old} is used but not kept", file.display()))?;
        Ok(Value::from(*new))
    };
    json["model"]["vocab"] = Value::Object(kept.iter().enumerate().map(|(n, &o)| (tokens[o as usize].clone(), Value::from(n))).collect());
    if let Some(added) = json["added_tokens"].as_array_mut() {
        for t in added {
            t["id"] = map(&t["id"])?;
        }
    }
    remap_post_processor(&mut json["post_processor"], &map, file)?;
    if json["padding"].is_object() {
        json["padding"]["pad_id"] = map(&json["padding"]["pad_id"])?;
    }
    Ok(())
}

fn remap_post_processor(p: &mut Value, map: &dyn Fn(&Value) -> Result<Value>, file: &Path) -> Result<()> {
    match p["type"].as_str() {
        None if p.is_null() => {}
        Some("TemplateProcessing") => {
            if let Some(specials) = p["special_tokens"].as_object_mut() {
                for s in specials.values_mut() {
                    if let Some(ids) = s["ids"].as_array_mut() {
                        for id in ids {
                            *id = map(id)?;
                        }
                    }
                }
            }
        }
        Some("BertProcessing" | "RobertaProcessing") => {
            for key in ["sep", "cls"] {
                p[key][1] = map(&p[key][1])?;
            }
        }
        Some("Sequence") => {
            if let Some(ps) = p["processors"].as_array_mut() {
                for q in ps {
                    remap_post_processor(q, map, file)?;
                }
            }
        }
        other => bail!("{}: post-processor {other:?} is not one vocabulary trimming knows how to rewrite", file.display()),
    }
    Ok(())
}

/// Which old ids to keep: specials, single characters, and tokens of `texts` seen `min_count` times, with the count
/// of each class.
fn select(json: &Value, kind: Kind, tokens: &[String], seqs: &[Vec<u32>], min_count: usize) -> (Vec<bool>, [usize; 3]) {
    let mut count = vec![0usize; tokens.len()];
    for &id in seqs.iter().flatten() {
        count[id as usize] += 1;
    }
    let special: Vec<u32> = json["added_tokens"].as_array().into_iter().flatten().filter_map(|t| t["id"].as_u64()).map(|i| i as u32).collect();
    let unk = json["model"]["unk_token"].as_str().and_then(|u| tokens.iter().position(|t| t == u));
    let mut n = [0usize; 3];
    let keep = (0..tokens.len())
        .map(|i| {
            let class = if special.contains(&(i as u32)) || unk == Some(i) {
                0
            } else if is_single_char(&tokens[i], kind) {
                1
            } else if count[i] >= min_count {
                2
            } else {
                return false;
            };
            n[class] += 1;
            true
        })
        .collect();
    (keep, n)
}

/// Writes `out`: `model` (fp32 folder) with only the tokens `texts` need. `min_count` 1 keeps every token seen.
/// `shrink trim-vocab`: `model` trimmed to the tokens of `data`'s `text_field` texts (.jsonl, or .txt lines).
/// `max_positions` also cuts the position table to that many tokens (a model only ever run on 128-token inputs
/// does not need rows for 512).
pub fn trim_model(model: &str, data: &Path, text_field: &str, min_count: usize, max_positions: Option<usize>, out: &OutDir) -> Result<Report> {
    let m = shrink_io::model::load(model, None)?;
    let texts = shrink_io::data::read_texts(data, text_field)?;
    trim(&m.dir, &m.model, &texts, min_count, max_positions, out)
}

pub fn trim(src: &Path, model: &Bert, texts: &[String], min_count: usize, max_positions: Option<usize>, out: &OutDir) -> Result<Report> {
    if min_count == 0 {
        bail!("--min-count must be at least 1 (0 would keep every token)");
    }
    let positions_before = model.config.max_tokens();
    let positions_after = max_positions.unwrap_or(positions_before);
    if positions_after == 0 || positions_after > positions_before {
        bail!("--max-positions {positions_after}: must be between 1 and the {positions_before} tokens the model numbers");
    }
    let file = src.join(TOKENIZER_FILE);
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&file).with_context(|| format!("{}: cannot read", file.display()))?)
        .with_context(|| format!("{}: malformed JSON", file.display()))?;
    let (kind, tokens) = id_to_token(&json, &file)?;
    let v = model.config.vocab_size;
    if tokens.len() != v {
        bail!("{}: {} tokens but config.json vocab_size is {v}", file.display(), tokens.len());
    }
    let tok = TextTokenizer::load(src, NO_TRUNCATION)?;
    let seqs = texts.iter().map(|t| tok.encode(t)).collect::<Result<Vec<_>>>()?;
    let (mut keep, [special, single_chars, seen]) = select(&json, kind, &tokens, &seqs, min_count);
    let merge_parts = if kind == Kind::Bpe {
        let all = merges(&json, &file)?;
        let (added, kept_merges) = close_over_merges(&mut keep, &tokens, &all);
        json["model"]["merges"] = Value::Array(kept_merges.iter().map(|&i| serde_json::json!([all[i].0, all[i].1])).collect());
        added
    } else {
        0
    };
    let kept: Vec<u32> = (0..tokens.len() as u32).filter(|&i| keep[i as usize]).collect();
    // old id -> new id of every kept token
    let new_id: HashMap<u32, u32> = kept.iter().enumerate().map(|(n, &o)| (o, n as u32)).collect();
    remap_tokenizer(&mut json, &tokens, &kept, &new_id, &file)?;

    // The new tokenizer files go to a scratch folder that `save_dir` copies from, with the untouched companions.
    let scratch = tempfile::tempdir()?;
    std::fs::write(scratch.path().join(TOKENIZER_FILE), serde_json::to_string(&json)?)?;
    // WordPiece's vocab.txt beside it (BPE's vocab.json and merges.txt are not written: tokenizer.json holds both).
    if kind == Kind::WordPiece {
        let vocab_txt: String = kept.iter().map(|&o| format!("{}\n", tokens[o as usize])).collect();
        std::fs::write(scratch.path().join("vocab.txt"), vocab_txt)?;
    }
    for name in ["tokenizer_config.json", "special_tokens_map.json"] {
        if src.join(name).is_file() {
            std::fs::copy(src.join(name), scratch.path().join(name))?;
        }
    }
    let trimmed_tok = TextTokenizer::load(scratch.path(), NO_TRUNCATION)?;
    let mut unchanged = 0;
    for (text, old) in texts.iter().zip(&seqs) {
        let want: Option<Vec<u32>> = old.iter().map(|o| new_id.get(o).copied()).collect();
        unchanged += usize::from(want.as_ref() == Some(&trimmed_tok.encode(text)?));
    }
    if min_count == 1 && unchanged != texts.len() {
        bail!("internal: the trimmed tokenizer splits {} of {} corpus texts differently", texts.len() - unchanged, texts.len());
    }

    let mut out_model = model.clone();
    let rows = Tensor::from_vec(kept.clone(), kept.len(), &Device::Cpu)?;
    let e = &mut out_model.embeddings;
    e.word_embeddings = e.word_embeddings.index_select(&rows, 0)?; // (V', C)
    out_model.config.vocab_size = kept.len();
    // The table's rows: the positions kept plus RoBERTa's offset rows before them.
    let rows = out_model.config.max_position_embeddings - positions_before + positions_after;
    e.position_embeddings = e.position_embeddings.narrow(0, 0, rows)?; // (P', C)
    out_model.config.max_position_embeddings = rows;
    let step = Step::new("trim-vocab", src, serde_json::json!({ "min_count": min_count, "max_positions": max_positions }))?;
    let step = step.metric("vocab_before", v).metric("vocab_after", kept.len()).metric("texts", texts.len());
    out_model.config.lineage.push(step.metric("positions_before", positions_before).metric("positions_after", positions_after));
    out_model.save_dir(out, scratch.path())?;
    let c = model.config.hidden_size;
    Ok(Report {
        vocab_before: v,
        vocab_after: kept.len(),
        special,
        single_chars,
        seen,
        merge_parts,
        texts: texts.len(),
        texts_unchanged: unchanged,
        table_bytes_before: v * c * 4,
        table_bytes_after: kept.len() * c * 4,
        positions_before,
        positions_after,
    })
}
