//! `shrink inspect FILE.gguf`: what a llama.cpp file holds, read through `shrink_format::gguf`: its architecture and
//! geometry from the metadata, the tokenizer, and parameters and bytes per ggml type and per tensor family.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use shrink_format::gguf::{GgufFile, Value};

#[derive(Debug, Default, Clone, Serialize)]
pub struct Group {
    pub tensors: usize,
    pub params: usize,
    pub bytes: usize,
}

impl Group {
    fn add(&mut self, params: usize, bytes: usize) {
        self.tensors += 1;
        self.params += params;
        self.bytes += bytes;
    }

    pub fn bits(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.params.max(1) as f64
    }
}

#[derive(Debug, Serialize)]
pub struct GgufReport {
    pub version: u32,
    pub architecture: String,
    pub name: Option<String>,
    /// The `ARCH.*` metadata with a single number or string (block_count, embedding_length, rope.freq_base, ...).
    pub geometry: BTreeMap<String, String>,
    pub tokenizer: Option<String>,
    pub vocab: Option<usize>,
    pub by_type: BTreeMap<String, Group>,
    /// By tensor family: a name with its block number taken out (`blk.N.attn_q.weight` -> `attn_q.weight`).
    pub by_family: BTreeMap<String, Group>,
    pub total: Group,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        // f32's own shortest form (1e-5, not 0.000009999999747).
        Value::F32(x) => Some(x.to_string()),
        Value::Array(_) => None,
        v => v.as_u64().map(|n| n.to_string()).or_else(|| v.as_f64().map(|x| x.to_string())),
    }
}

pub fn inspect_gguf(path: &Path) -> Result<GgufReport> {
    let f = GgufFile::open(path)?;
    let architecture = f.string("general.architecture")?.to_string();
    let prefix = format!("{architecture}.");
    let geometry = f
        .metadata
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), scalar(v)?)))
        .collect();
    let (mut by_type, mut by_family, mut total) = (BTreeMap::<String, Group>::new(), BTreeMap::<String, Group>::new(), Group::default());
    for t in &f.tensors {
        let family = match t.name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            Some((_, rest)) => rest.to_string(),
            None => t.name.clone(),
        };
        for g in [by_type.entry(t.kind.name.to_string()).or_default(), by_family.entry(family).or_default(), &mut total] {
            g.add(t.elems(), t.len);
        }
    }
    Ok(GgufReport {
        version: f.version,
        name: f.get("general.name").and_then(Value::as_str).map(str::to_string),
        tokenizer: f.get("tokenizer.ggml.model").and_then(Value::as_str).map(str::to_string),
        vocab: f.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(<[Value]>::len),
        architecture,
        geometry,
        by_type,
        by_family,
        total,
    })
}

pub fn render_gguf(r: &GgufReport) -> String {
    let mut s = format!(
        "GGUF v{}: {} ({}), tokenizer {} with {} tokens\n",
        r.version,
        r.architecture,
        r.name.as_deref().unwrap_or("unnamed"),
        r.tokenizer.as_deref().unwrap_or("none"),
        r.vocab.map_or("no".to_string(), |v| v.to_string())
    );
    for (k, v) in &r.geometry {
        s += &format!("  {k} = {v}\n");
    }
    let row = |name: &str, g: &Group| format!("{name:<24} {:>8} {:>12} {:>6.2} {:>10.2}\n", g.tensors, g.params, g.bits(), g.bytes as f64 / 1e6);
    s += &format!("\n{:<24} {:>8} {:>12} {:>6} {:>10}\n", "type", "tensors", "params", "bits", "MB");
    r.by_type.iter().for_each(|(n, g)| s += &row(n, g));
    s += &format!("\n{:<24} {:>8} {:>12} {:>6} {:>10}\n", "tensor family", "tensors", "params", "bits", "MB");
    r.by_family.iter().for_each(|(n, g)| s += &row(n, g));
    s += &row("total", &r.total);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's file (scripts/fetch-assets.sh): 135 M parameters at the mix its README states.
    #[test]
    fn smollm2() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
        let r = inspect_gguf(&path).unwrap_or_else(|e| panic!("{e:#} (run scripts/fetch-assets.sh)"));
        assert_eq!((r.architecture.as_str(), r.vocab, r.tokenizer.as_deref()), ("llama", Some(49152), Some("gpt2")));
        assert_eq!(r.geometry["block_count"], "30");
        // 49152 x 576 embeddings + 30 x (4 attention + 3 FFN Linears + 2 norms) + the final norm.
        let per_layer = 576 * 576 * 2 + 2 * 576 * 192 + 3 * 576 * 1536 + 2 * 576;
        assert_eq!(r.total.params, 49152 * 576 + 30 * per_layer + 576);
        assert_eq!(r.by_family["attn_k.weight"].params, 30 * 576 * 192);
        assert_eq!((r.by_type["Q8_0"].tensors, r.by_type["F32"].tensors, r.by_type["Q4_1"].tensors), (1, 61, 210));
        assert!((r.by_type["Q4_1"].bits() - 5.0).abs() < 1e-9 && (r.by_type["Q8_0"].bits() - 8.5).abs() < 1e-9);
        let text = render_gguf(&r);
        assert!(text.starts_with("GGUF v3: llama") && text.contains("attn_q.weight"), "{text}");
    }
}
