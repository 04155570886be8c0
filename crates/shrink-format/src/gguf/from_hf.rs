//! An HF Llama folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) as a GGUF file in
//! f32, with the metadata llama.cpp reads: the hyperparameters, and the byte-level BPE tokenizer (tokens by id,
//! token types, merges, special ids, pre-tokenizer, chat template). The inverse of `shrink convert FILE.gguf`:
//! names and the Q/K row order come from `arch::llama`, and the pre-tokenizers are those `tokenizer.rs` rebuilds.
//! Decoders are quantized from GGUF, so an HF folder is quantized through this file (llama.cpp's
//! `convert_hf_to_gguf.py`, then `llama-quantize`).

use std::borrow::Cow;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value as Json;

use super::write::{write, Tensor};
use super::{type_info, Value};
use crate::arch::llama::{pairs_adjacent, HfConfig, GLOBAL, LAYER};
use crate::folder::{read_regular, CONFIG_FILE, GENERATION_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::tensors::TensorFile;

/// ggml's token types.
const NORMAL: u32 = 1;
const CONTROL: u32 = 3;
const USER_DEFINED: u32 = 4;
const UNUSED: u32 = 5;

/// What `from_hf` wrote.
#[derive(Debug)]
pub struct Written {
    pub tensors: usize,
    pub bytes: u64,
}

fn json(path: &Path, what: &str) -> Result<Json> {
    serde_json::from_str(&read_regular(path, what)?).with_context(|| format!("{}: not valid JSON", path.display()))
}

/// A JSON file beside the model that may be missing (tokenizer_config.json, generation_config.json).
fn optional(path: &Path, what: &str) -> Result<Json> {
    if path.exists() {
        json(path, what)
    } else {
        Ok(Json::Null)
    }
}

/// `tokenizer.ggml.pre` for the pre-tokenizer of tokenizer.json: the names `tokenizer.rs` rebuilds.
fn pre_name(pre: &Json, path: &Path) -> Result<&'static str> {
    let byte_level = |p: &Json| p["type"] == "ByteLevel" && p["add_prefix_space"] != true;
    match pre["type"].as_str() {
        Some("ByteLevel") if byte_level(pre) => Ok("gpt-2"),
        Some("Sequence") => match pre["pretokenizers"].as_array().map(Vec::as_slice) {
            Some([d, b]) if d["type"] == "Digits" && d["individual_digits"] == true && byte_level(b) => Ok("smollm"),
            _ => bail!("{}: pre-tokenizer {pre}: shrink writes byte-level ones (ByteLevel, or single Digits then ByteLevel)", path.display()),
        },
        _ => bail!("{}: pre-tokenizer {pre}: shrink writes byte-level ones (ByteLevel, or single Digits then ByteLevel)", path.display()),
    }
}

/// The tokenizer.ggml.* metadata of `dir`'s tokenizer files (`tc`: its tokenizer_config.json), for `vocab` ids.
fn tokenizer_metadata(dir: &Path, tc: &Json, cfg: &HfConfig, vocab: usize) -> Result<Vec<(String, Value)>> {
    let path = dir.join(TOKENIZER_FILE);
    let t = json(&path, "tokenizer")?;
    let model = &t["model"];
    if model["type"] != "BPE" {
        bail!("{}: tokenizer model {}; shrink writes byte-level BPE (gpt2) tokenizers", path.display(), model["type"]);
    }
    let pre = pre_name(&t["pre_tokenizer"], &path)?;
    // Tokens by id: the BPE vocabulary, then the added tokens (special ones are ggml's control tokens).
    let mut tokens: Vec<Option<(String, u32)>> = vec![None; vocab];
    let mut put = |id: u64, text: &str, kind: u32| -> Result<()> {
        match tokens.get_mut(id as usize) {
            Some(slot) => *slot = Some((text.to_string(), kind)),
            None => bail!("{}: token {text:?} has id {id}, past vocab_size {vocab} in config.json", path.display()),
        }
        Ok(())
    };
    for (text, id) in model["vocab"].as_object().with_context(|| format!("{}: model.vocab is not a map", path.display()))? {
        put(id.as_u64().with_context(|| format!("{}: token {text:?} has no integer id", path.display()))?, text, NORMAL)?;
    }
    for a in t["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (a["id"].as_u64(), a["content"].as_str()) else { bail!("{}: added token {a} has no id or content", path.display()) };
        put(id, text, if a["special"] == true { CONTROL } else { USER_DEFINED })?;
    }
    // Ids the tokenizer never produces (a vocabulary padded to a round size) get llama.cpp's placeholders.
    let (texts, kinds): (Vec<Value>, Vec<Value>) =
        tokens.into_iter().enumerate().map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED))).map(|(s, k)| (Value::Str(s), Value::I32(k as i32))).unzip();
    let merges = model["merges"].as_array().with_context(|| format!("{}: model.merges is not a list", path.display()))?;
    let merges = merges
        .iter()
        .map(|m| match (m.as_str(), m.as_array().map(Vec::as_slice)) {
            (Some(s), _) if s.contains(' ') => Ok(Value::Str(s.to_string())),
            (_, Some([Json::String(a), Json::String(b)])) => Ok(Value::Str(format!("{a} {b}"))),
            _ => bail!("{}: merge {m} is not two tokens", path.display()),
        })
        .collect::<Result<Vec<_>>>()?;
    let id_of = |key: &str| -> Option<u64> {
        // tokenizer_config.json spells a special token as its text or as {"content": text}.
        let text = tc[key].as_str().or_else(|| tc[key]["content"].as_str())?;
        texts.iter().position(|v| v.as_str() == Some(text)).map(|i| i as u64)
    };
    let mut m = vec![
        ("tokenizer.ggml.model".to_string(), Value::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::Str(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(texts.clone())),
        ("tokenizer.ggml.token_type".into(), Value::Array(kinds)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(tc["add_bos_token"] == true)),
        ("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)),
    ];
    let generation = optional(&dir.join(GENERATION_FILE), "generation config")?;
    // transformers lists every stop id in generation_config.json; past eos, the first is the end of turn.
    let eot = generation["eos_token_id"].as_array().into_iter().flatten().filter_map(Json::as_u64).find(|&i| Some(i) != cfg.eos);
    let specials = [("bos", cfg.bos), ("eos", cfg.eos), ("eot", eot), ("unknown", id_of("unk_token")), ("padding", id_of("pad_token"))];
    for (name, id) in specials {
        if let Some(id) = id {
            m.push((format!("tokenizer.ggml.{name}_token_id"), Value::U32(id as u32)));
        }
    }
    if let Some(t) = tc["chat_template"].as_str() {
        m.push(("tokenizer.chat_template".into(), Value::Str(t.to_string())));
    }
    Ok(m)
}

/// Writes the HF Llama folder `dir` as the GGUF file `out` (f32 tensors, written whole or not at all).
pub fn from_hf(dir: &Path, out: &Path) -> Result<Written> {
    let cfg = HfConfig::read(dir)?;
    let tc = optional(&dir.join("tokenizer_config.json"), "tokenizer config")?;
    let context = cfg.context.or_else(|| tc["model_max_length"].as_u64().filter(|&n| n < 1 << 32));
    let Some(context) = context else {
        bail!("{}: no max_position_embeddings (nor model_max_length in tokenizer_config.json): llama.cpp needs the context length", dir.join(CONFIG_FILE).display());
    };
    let d = cfg.hidden / cfg.heads;
    let name = dir.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
    let u = |v: usize| Value::U32(v as u32);
    let mut metadata = vec![
        ("general.architecture".to_string(), Value::Str("llama".into())),
        ("general.name".into(), Value::Str(name)),
        ("general.file_type".into(), Value::U32(0)),
        ("general.quantization_version".into(), Value::U32(2)),
        ("llama.block_count".into(), u(cfg.layers)),
        ("llama.context_length".into(), Value::U32(context as u32)),
        ("llama.embedding_length".into(), u(cfg.hidden)),
        ("llama.feed_forward_length".into(), u(cfg.ffn)),
        ("llama.attention.head_count".into(), u(cfg.heads)),
        ("llama.attention.head_count_kv".into(), u(cfg.kv_heads)),
        ("llama.rope.freq_base".into(), Value::F32(cfg.rope_theta as f32)),
        ("llama.attention.layer_norm_rms_epsilon".into(), Value::F32(cfg.eps as f32)),
        ("llama.vocab_size".into(), u(cfg.vocab)),
        ("llama.rope.dimension_count".into(), u(d)),
    ];
    metadata.extend(tokenizer_metadata(dir, &tc, &cfg, cfg.vocab)?);

    let file = TensorFile::open(&dir.join(WEIGHTS_FILE))?;
    let f32_kind = type_info(0).expect("ggml type 0 is F32");
    let mut names: Vec<(String, String)> = GLOBAL.iter().map(|(g, h)| (format!("{g}.weight"), format!("{h}.weight"))).collect();
    for l in 0..cfg.layers {
        names.extend(LAYER.iter().map(|(g, h)| (format!("blk.{l}.{g}.weight"), format!("model.layers.{l}.{h}.weight"))));
    }
    let mut tensors = Vec::with_capacity(names.len());
    for (gguf, hf) in names {
        // Tied models store no lm_head (or one equal to the embeddings, which llama.cpp then reads).
        if gguf == "output.weight" && (cfg.tied || !file.contains(&hf)) {
            continue;
        }
        let shape = file.shape(&hf).with_context(|| format!("{}: tensor {hf} is missing", file.file.display()))?.to_vec();
        let w = file.f32(&hf, &shape)?;
        let k = shape.last().copied().unwrap_or(1);
        let w: Cow<[f32]> = match gguf.rsplit('.').nth(1) {
            Some("attn_q") => pairs_adjacent(&w, cfg.heads, k).into(),
            Some("attn_k") => pairs_adjacent(&w, cfg.kv_heads, k).into(),
            _ => w,
        };
        let data: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        // GGUF dims run fastest first.
        tensors.push(Tensor { name: gguf, dims: shape.iter().rev().map(|&d| d as u64).collect(), kind: f32_kind, data: data.into() });
    }
    write(out, &dir.join(WEIGHTS_FILE), &metadata, &tensors)?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(Written { tensors: tensors.len(), bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HfConfig {
        HfConfig { layers: 1, hidden: 8, heads: 2, kv_heads: 1, ffn: 16, vocab: 6, eps: 1e-5, rope_theta: 1e4, tied: true, bos: Some(0), eos: Some(1), context: None }
    }

    fn metadata(tokenizer: serde_json::Value) -> Result<Vec<(String, Value)>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKENIZER_FILE), tokenizer.to_string()).unwrap();
        std::fs::write(dir.path().join(GENERATION_FILE), r#"{"eos_token_id": [1, 2]}"#).unwrap();
        let tc = serde_json::json!({"unk_token": {"content": "<unk>"}, "chat_template": "{{ x }}"});
        tokenizer_metadata(dir.path(), &tc, &cfg(), cfg().vocab)
    }

    fn tokenizer(merges: serde_json::Value, pre: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "a": 3, "b": 4}, "merges": merges},
            "added_tokens": [{"id": 0, "content": "<s>", "special": true}, {"id": 1, "content": "</s>", "special": true}, {"id": 2, "content": "<unk>", "special": false}],
            "pre_tokenizer": pre,
        })
    }

    #[test]
    fn tokenizer_json_becomes_llama_cpp_metadata() {
        let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false});
        let smollm = serde_json::json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]});
        // Both spellings of merges ("a b" and ["a", "b"]), both byte-level pre-tokenizers.
        for (merges, pre, name) in [(serde_json::json!(["a b"]), &byte_level, "gpt-2"), (serde_json::json!([["a", "b"]]), &smollm, "smollm")] {
            let m = metadata(tokenizer(merges, pre.clone())).unwrap();
            let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{k} missing"));
            assert_eq!(get("tokenizer.ggml.pre"), Value::Str(name.into()));
            assert_eq!(get("tokenizer.ggml.merges"), Value::Array(vec![Value::Str("a b".into())]));
            let texts: Vec<_> = ["<s>", "</s>", "<unk>", "a", "b", "[PAD5]"].iter().map(|t| Value::Str(t.to_string())).collect();
            assert_eq!(get("tokenizer.ggml.tokens"), Value::Array(texts));
            let kinds: Vec<_> = [CONTROL, CONTROL, USER_DEFINED, NORMAL, NORMAL, UNUSED].iter().map(|&k| Value::I32(k as i32)).collect();
            assert_eq!(get("tokenizer.ggml.token_type"), Value::Array(kinds));
            let ids = ["bos", "eos", "eot", "unknown"].map(|s| get(&format!("tokenizer.ggml.{s}_token_id")));
            assert_eq!(ids, [Value::U32(0), Value::U32(1), Value::U32(2), Value::U32(2)]);
            assert_eq!(get("tokenizer.chat_template"), Value::Str("{{ x }}".into()));
        }
        // Refused by name: another model, another pre-tokenizer, an id past the vocabulary, a malformed merge.
        let err = |t: serde_json::Value| metadata(t).unwrap_err().to_string();
        let mut t = tokenizer(serde_json::json!(["a b"]), byte_level.clone());
        t["model"]["type"] = "Unigram".into();
        assert!(err(t).contains("shrink writes byte-level BPE"));
        assert!(err(tokenizer(serde_json::json!(["a b"]), serde_json::json!({"type": "Metaspace"}))).contains("pre-tokenizer"));
        let mut t = tokenizer(serde_json::json!(["a b"]), byte_level.clone());
        t["model"]["vocab"]["c"] = 9.into();
        assert!(err(t).contains("token \"c\" has id 9, past vocab_size 6"));
        assert!(err(tokenizer(serde_json::json!(["ab"]), byte_level)).contains("merge \"ab\" is not two tokens"));
    }
}
