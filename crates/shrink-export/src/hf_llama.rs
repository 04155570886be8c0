//! `shrink convert`: a Llama GGUF file as an HF Llama folder, as transformers saves one: config.json,
//! model.safetensors (f32: every tensor dequantized), tokenizer.json rebuilt from the file's metadata and
//! tokenizer_config.json with its chat template and special tokens, generation_config.json with the stop ids. Names and the row order of Q and K come from
//! `shrink_format::arch::llama`; the runtime reads the folder back as the same model.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use shrink_format::arch::llama::{halves_apart, hf_name, HfConfig};
use shrink_format::folder::{write_atomic, CONFIG_FILE, GENERATION_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use shrink_format::gguf::{tokenizer::tokenizer, GgufFile, Value};
use shrink_format::tensors::{serialize, OwnedTensor};
use shrink_format::outdir::OutDir;

#[derive(Debug)]
pub struct Converted {
    pub tensors: usize,
    /// Bytes of model.safetensors.
    pub bytes: u64,
}

/// Writes the folder `out` from the GGUF file `input`.
pub fn gguf_to_hf(input: &Path, out: &OutDir) -> Result<Converted> {
    let f = GgufFile::open(input)?;
    let cfg = HfConfig::of_gguf(&f)?;
    let tok = tokenizer(&f)?;
    let mut tensors = Vec::with_capacity(f.tensors.len());
    for t in &f.tensors {
        let name = hf_name(&t.name).with_context(|| format!("{}: tensor {} has no transformers name", input.display(), t.name))?;
        let w = f.dequantize(&t.name)?;
        // GGUF dims run fastest first; safetensors', slowest first.
        let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
        let k = shape.last().copied().unwrap_or(1);
        let w = match t.name.rsplit('.').nth(1) {
            Some("attn_q") => halves_apart(&w, cfg.heads, k),
            Some("attn_k") => halves_apart(&w, cfg.kv_heads, k),
            _ => w,
        };
        tensors.push(OwnedTensor::f32(name, shape, &w));
        f.release(t);
    }
    let count = tensors.len();
    let weights = serialize(tensors)?;
    let bytes = weights.len() as u64;
    let special = |id: Option<u64>| id.and_then(|i| tok.id_to_token(i as u32));
    let tokenizer_config = json!({
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": special(cfg.bos),
        "eos_token": special(cfg.eos),
        "unk_token": special(f.uint("tokenizer.ggml.unknown_token_id").ok()),
        "pad_token": special(f.uint("tokenizer.ggml.padding_token_id").ok()),
        "add_bos_token": f.get("tokenizer.ggml.add_bos_token").is_some_and(|v| matches!(v, Value::Bool(true))),
        "chat_template": f.string("tokenizer.chat_template").ok(),
        "model_max_length": cfg.context,
    });
    // generate stops at the chat template's end of turn too: transformers reads every stop id from here.
    let mut stops: Vec<u64> = cfg.eos.into_iter().collect();
    stops.extend(f.uint("tokenizer.ggml.eot_token_id").ok().filter(|t| !stops.contains(t)));
    let generation_config = json!({ "bos_token_id": cfg.bos, "eos_token_id": stops });
    out.write(|dir| {
        write_atomic(&dir.join(WEIGHTS_FILE), &weights)?;
        write_atomic(&dir.join(CONFIG_FILE), serde_json::to_string_pretty(&cfg.to_json())?.as_bytes())?;
        let tok_json = tok.to_string(false).map_err(|e| anyhow::anyhow!("{}: cannot write the tokenizer: {e}", input.display()))?;
        write_atomic(&dir.join(TOKENIZER_FILE), tok_json.as_bytes())?;
        write_atomic(&dir.join("tokenizer_config.json"), serde_json::to_string_pretty(&tokenizer_config)?.as_bytes())?;
        write_atomic(&dir.join(GENERATION_FILE), serde_json::to_string_pretty(&generation_config)?.as_bytes())
    })?;
    Ok(Converted { tensors: count, bytes })
}
