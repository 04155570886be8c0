//! Llama's checkpoint names in its two spellings, stated once: llama.cpp's GGUF (`blk.{l}.attn_q.weight`, the
//! runtime's own) and transformers' (`model.layers.{l}.self_attn.q_proj.weight`); the config.json fields of an HF
//! Llama folder; and the row order of Q and K. llama.cpp's converter permutes each head's Q and K rows so that RoPE
//! rotates adjacent pairs (2i, 2i + 1), where transformers rotates the halves (i, i + D/2): `pairs_adjacent` is
//! that permutation and `halves_apart` its inverse.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::gguf::GgufFile;

/// (GGUF, transformers) names of each layer's tensors, before `.weight`.
pub const LAYER: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];
/// (GGUF, transformers) names of the tensors outside the layers, before `.weight`.
pub const GLOBAL: [(&str, &str); 3] = [("token_embd", "model.embed_tokens"), ("output_norm", "model.norm"), ("output", "lm_head")];

/// The transformers name of a GGUF tensor name, for the tensors above.
pub fn hf_name(gguf: &str) -> Option<String> {
    let stem = gguf.strip_suffix(".weight")?;
    if let Some(hf) = GLOBAL.iter().find(|g| g.0 == stem).map(|g| g.1) {
        return Some(format!("{hf}.weight"));
    }
    let (layer, leaf) = stem.strip_prefix("blk.")?.split_once('.')?;
    let hf = LAYER.iter().find(|l| l.0 == leaf)?.1;
    Some(format!("model.layers.{}.{hf}.weight", layer.parse::<usize>().ok()?))
}

/// Maps row r of each head (D rows) to row `to(r)`: rows of K values each.
fn permute_rows(w: &[f32], heads: usize, k: usize, to: impl Fn(usize, usize) -> usize) -> Vec<f32> {
    let d = w.len() / k / heads.max(1);
    let mut out = vec![0f32; w.len()];
    for (r, row) in w.chunks_exact(k).enumerate() {
        let (h, i) = (r / d, r % d);
        out[(h * d + to(i, d)) * k..][..k].copy_from_slice(row);
    }
    out
}

/// Q or K rows (heads x D, K each) from transformers' order to GGUF's: row i < D/2 of a head goes to 2i, row
/// D/2 + i to 2i + 1.
pub fn pairs_adjacent(w: &[f32], heads: usize, k: usize) -> Vec<f32> {
    permute_rows(w, heads, k, |i, d| if i < d / 2 { 2 * i } else { 2 * (i - d / 2) + 1 })
}

/// The inverse of `pairs_adjacent`: GGUF's Q or K rows in transformers' order.
pub fn halves_apart(w: &[f32], heads: usize, k: usize) -> Vec<f32> {
    permute_rows(w, heads, k, |i, d| i / 2 + (i % 2) * (d / 2))
}

fn shortest(v: f64) -> f64 {
    (v as f32).to_string().parse().unwrap_or(v)
}

/// The dimensions of a Llama model, as config.json holds them.
#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub eps: f64,
    pub rope_theta: f64,
    pub tied: bool,
    pub bos: Option<u64>,
    pub eos: Option<u64>,
    /// The context length it was trained for (`max_position_embeddings`, GGUF's `llama.context_length`).
    pub context: Option<u64>,
}

impl HfConfig {
    /// `dir`'s config.json.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let v: Value = serde_json::from_str(&crate::folder::read_regular(&path, "config")?).with_context(|| format!("{}: not valid JSON", path.display()))?;
        Self::parse(&v, &path.display().to_string())
    }

    /// Whether `dir` holds an HF Llama model (a config.json with model_type "llama").
    pub fn is_folder(dir: &Path) -> bool {
        let v = crate::folder::read_regular(&dir.join("config.json"), "config").ok().and_then(|t| serde_json::from_str::<Value>(&t).ok());
        dir.is_dir() && v.is_some_and(|v| v["model_type"] == "llama")
    }

    /// The dimensions a llama GGUF file's metadata states (tied when it has no output.weight).
    pub fn of_gguf(f: &GgufFile) -> Result<Self> {
        let arch = f.string("general.architecture")?;
        if arch != "llama" {
            bail!("{}: architecture {arch:?}; the decoder reads llama", f.path.display());
        }
        let n = |k: &str| f.uint(&format!("llama.{k}")).map(|v| v as usize);
        let (hidden, heads) = (n("embedding_length")?, n("attention.head_count")?);
        let kv_heads = n("attention.head_count_kv").unwrap_or(heads);
        if heads == 0 || kv_heads == 0 || hidden % heads != 0 || heads % kv_heads != 0 {
            bail!("{}: {heads} heads, {kv_heads} key/value heads and width {hidden} do not divide", f.path.display());
        }
        Ok(Self {
            layers: n("block_count")?,
            hidden,
            heads,
            kv_heads,
            ffn: n("feed_forward_length")?,
            vocab: f.tensor("token_embd.weight")?.shape()[0],
            // Stored as f32: written back as the shortest decimal of that f32 (1e-5, not 9.9999997e-6).
            eps: shortest(f.float("llama.attention.layer_norm_rms_epsilon")?),
            rope_theta: shortest(f.float("llama.rope.freq_base").unwrap_or(10000.0)),
            tied: f.tensor("output.weight").is_err(),
            bos: f.uint("tokenizer.ggml.bos_token_id").ok(),
            eos: f.uint("tokenizer.ggml.eos_token_id").ok(),
            context: f.uint("llama.context_length").ok(),
        })
    }

    /// Reads an HF Llama config.json; `what` names the file in errors.
    pub fn parse(v: &Value, what: &str) -> Result<Self> {
        match v["model_type"].as_str() {
            Some("llama") => {}
            other => bail!("{what}: model_type {other:?}; the decoder reads \"llama\""),
        }
        let n = |k: &str| v[k].as_u64().map(|x| x as usize).with_context(|| format!("{what}: {k} is missing or not a number"));
        let (heads, hidden) = (n("num_attention_heads")?, n("hidden_size")?);
        let kv_heads = v["num_key_value_heads"].as_u64().map_or(heads, |x| x as usize);
        if heads == 0 || kv_heads == 0 || hidden % heads != 0 || heads % kv_heads != 0 {
            bail!("{what}: {heads} heads, {kv_heads} key/value heads and width {hidden} do not divide");
        }
        if v.get("rope_scaling").is_some_and(|s| !s.is_null()) {
            bail!("{what}: rope_scaling is not supported yet");
        }
        Ok(Self {
            layers: n("num_hidden_layers")?,
            hidden,
            heads,
            kv_heads,
            ffn: n("intermediate_size")?,
            vocab: n("vocab_size")?,
            eps: v["rms_norm_eps"].as_f64().with_context(|| format!("{what}: rms_norm_eps is missing"))?,
            rope_theta: v["rope_theta"].as_f64().unwrap_or(10000.0),
            tied: v["tie_word_embeddings"].as_bool().unwrap_or(false),
            bos: v["bos_token_id"].as_u64(),
            eos: v["eos_token_id"].as_u64(),
            context: v["max_position_embeddings"].as_u64(),
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.hidden / self.heads,
            "hidden_act": "silu",
            "rms_norm_eps": self.eps,
            "rope_theta": self.rope_theta,
            "vocab_size": self.vocab,
            "tie_word_embeddings": self.tied,
            "bos_token_id": self.bos,
            "eos_token_id": self.eos,
            "max_position_embeddings": self.context,
            "torch_dtype": "float32",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_and_the_row_orders_invert() {
        assert_eq!(hf_name("blk.12.attn_k.weight").as_deref(), Some("model.layers.12.self_attn.k_proj.weight"));
        assert_eq!(hf_name("token_embd.weight").as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("blk.x.attn_k.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
        // 2 heads of D = 4, K = 3: row r holds r in every column.
        let (heads, d, k) = (2, 4, 3);
        let w: Vec<f32> = (0..heads * d).flat_map(|r| [r as f32; 3]).collect();
        let pairs = pairs_adjacent(&w, heads, k);
        let rows: Vec<f32> = pairs.chunks_exact(k).map(|r| r[0]).collect();
        // Head 0: HF rows (0, 1 | 2, 3) = (x0, x1 | y0, y1) become pairs (x0, y0), (x1, y1).
        assert_eq!(rows, [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert_eq!(halves_apart(&pairs, heads, k), w);
    }

    #[test]
    fn config_round_trips_and_bad_ones_are_named() {
        let c = HfConfig { layers: 2, hidden: 64, heads: 4, kv_heads: 2, ffn: 96, vocab: 40, eps: 1e-5, rope_theta: 1e5, tied: true, bos: Some(1), eos: Some(2), context: Some(2048) };
        assert_eq!(HfConfig::parse(&c.to_json(), "config.json").unwrap(), c);
        let mut bad = c.to_json();
        bad["model_type"] = json!("gpt2");
        assert!(HfConfig::parse(&bad, "x/config.json").unwrap_err().to_string().contains("x/config.json: model_type Some(\"gpt2\")"));
        let mut bad = c.to_json();
        bad["num_key_value_heads"] = json!(3);
        assert!(HfConfig::parse(&bad, "c").unwrap_err().to_string().contains("do not divide"));
        let mut bad = c.to_json();
        bad["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        assert!(HfConfig::parse(&bad, "c").unwrap_err().to_string().contains("rope_scaling"));
    }
}
