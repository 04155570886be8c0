//! `shrink quantize` on a Llama-family decoder in a GGUF file. Every Linear of the blocks becomes int8 (per row, f16
//! scales) or int4 (groups of 32), rounded to nearest or by GPTQ, optionally after SmoothQuant (`calib`); the token
//! embeddings (also the tied head) int8, int4, fp16 or fp32 rounded to nearest. Instead of SmoothQuant's one strength,
//! `awq` searches each site's scales on its measured output error. The result is a GGUF file whose
//! Q8_0 / Q4_0 blocks hold our formats exactly (`shrink_format::gguf::ours`): llama.cpp runs it as it is, and the
//! runtime reads it back as its int8 / int4 GEMMs. Every other tensor is copied (the norms rewritten when smoothing
//! folds into them).

mod awq;
mod calib;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use shrink_format::gguf::ours::{kind, q4_0_of, q8_0_of, Q4_0, Q8_0};
use shrink_format::gguf::tokenizer::tokenizer;
use shrink_format::gguf::write::{write, Tensor};
use shrink_format::gguf::{type_info, GgufFile, Value};
use shrink_format::quant::grid::f16_round;
use shrink_format::quant::{Int4Weight, Int8Weight};
use shrink_io::events;
use shrink_runtime::llama::{Llama, LlamaConfig, Site};

use crate::quantize::gptq::{gptq, Hessian};
use crate::quantize::{ActStorage, EmbeddingStorage, Options, Scheme};
pub use awq::{describe, Choice};
use calib::{calibrate, smooth, Stats, Tensors};

/// ggml's F32 and F16 type ids.
const F32: u32 = 0;
const F16: u32 = 1;
/// llama.cpp's `general.file_type` for a file mostly of these blocks (LLAMA_FTYPE_MOSTLY_Q8_0 / _Q4_0).
const FTYPE_Q8_0: u32 = 7;
const FTYPE_Q4_0: u32 = 2;
/// The blocks' Linears as llama.cpp names them, with the input they read.
const LINEARS: [(&str, Site); 7] = [
    ("attn_q", Site::Qkv),
    ("attn_k", Site::Qkv),
    ("attn_v", Site::Qkv),
    ("attn_output", Site::O),
    ("ffn_gate", Site::GateUp),
    ("ffn_up", Site::GateUp),
    ("ffn_down", Site::Down),
];
const NORMS: [&str; 2] = ["attn_norm", "ffn_norm"];

/// Calibration text for SmoothQuant and GPTQ: its first `tokens` tokens, in windows of `ctx`.
pub struct Calib<'a> {
    pub path: &'a Path,
    pub tokens: usize,
    pub ctx: usize,
}

#[derive(Debug)]
pub struct Summary {
    /// Tensors re-encoded: the Linears and the embedding tables (norms rewritten by smoothing aside).
    pub quantized: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The AWQ search's choice per (layer, site), when asked.
    pub awq: Vec<Choice>,
}

/// One (N, K) table in `storage`, rounded to nearest: its ggml type and bytes.
fn encode(w: &[f32], n: usize, k: usize, storage: EmbeddingStorage, name: &str) -> Result<(u32, Vec<u8>)> {
    Ok(match storage {
        EmbeddingStorage::Int8 => (Q8_0, q8_0_of(&Int8Weight::encode_f16(w, n, k), name)?),
        EmbeddingStorage::Int4 => (Q4_0, q4_0_of(&Int4Weight::encode(w, n, k, 32)?, name)?),
        EmbeddingStorage::Fp16 => (F16, w.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()),
        EmbeddingStorage::Fp32 => (F32, f32_bytes(w)),
    })
}

fn f32_bytes(w: &[f32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// One Linear (N, K): GPTQ with `h` when given, else round to nearest.
fn encode_linear(w: &[f32], n: usize, k: usize, int4: bool, h: Option<&Hessian>, opts: &Options, name: &str) -> Result<(u32, Vec<u8>)> {
    let Some((h, g)) = h.zip(opts.gptq.as_ref()) else {
        return encode(w, n, k, if int4 { EmbeddingStorage::Int4 } else { EmbeddingStorage::Int8 }, name);
    };
    let grid = if int4 { Int4Weight::grid(32) } else { Int8Weight::GRID };
    let r = gptq(w, n, k, h, &grid, g, &f16_round).map_err(|e| anyhow::anyhow!("{name}: GPTQ: {e}"))?;
    Ok(if int4 { (Q4_0, q4_0_of(&Int4Weight::from_rounded(r, n, k, 32), name)?) } else { (Q8_0, q8_0_of(&Int8Weight::from_rounded(r, n, k), name)?) })
}

/// The calibration statistics of the input model (fp32 on the runtime) on `c`'s text.
fn stats_of(f: &GgufFile, c: &Calib, opts: &Options) -> Result<Stats> {
    let text = std::fs::read_to_string(c.path).with_context(|| format!("{}: cannot read the calibration text", c.path.display()))?;
    let ids = tokenizer(f)?.encode(text, false).map_err(|e| anyhow::anyhow!("{}: cannot tokenize: {e}", c.path.display()))?;
    let ids = &ids.get_ids()[..ids.len().min(c.tokens)];
    calibrate(&Llama::from_gguf(f)?, ids, c.ctx, opts.gptq.is_some(), if opts.awq { awq::SAMPLES } else { 0 })
}

/// Whether `opts` asks for int4 (else int8); an error for what a GGUF file cannot hold, or for calibration missing
/// or unused.
fn is_int4(opts: &Options, calibrated: bool) -> Result<bool> {
    if (opts.gptq.is_some() || opts.smooth_alpha.is_some() || opts.awq) != calibrated {
        bail!("--calib (a text file) goes with --gptq, --smooth-alpha or --awq, and they need it");
    }
    if opts.awq && opts.smooth_alpha.is_some() {
        bail!("--awq searches each site's scales, --smooth-alpha fixes them: pass one");
    }
    Ok(match (opts.scheme, opts.group, opts.int4_acts) {
        (Scheme::Int8Dynamic, ..) => false,
        (Scheme::Int4, 32, ActStorage::Int8) => true,
        (Scheme::Int4, g, ActStorage::Int8) => bail!("--group {g}: a GGUF file holds int4 in groups of 32 (Q4_0)"),
        (Scheme::Int4, ..) => bail!("--activations: decoders take int8 activations per token so far"),
        (s, ..) => bail!("--scheme {}: decoders (a .gguf model) are quantized with int8-dynamic or int4 so far", shrink_io::Choice::name(s)),
    })
}

/// Quantizes the decoder in `input` into the GGUF file `out`, calibrated on `calib` for SmoothQuant and GPTQ.
pub fn quantize_gguf(input: &Path, out: &Path, opts: &Options, calib: Option<&Calib>) -> Result<Summary> {
    is_int4(opts, calib.is_some())?;
    let f = GgufFile::open(input)?;
    let stats = calib.map(|c| stats_of(&f, c, opts)).transpose()?;
    quantize_file(&f, out, opts, stats.as_ref())
}

/// `quantize_gguf` with the calibration statistics at hand.
fn quantize_file(f: &GgufFile, out: &Path, opts: &Options, stats: Option<&Stats>) -> Result<Summary> {
    let int4 = is_int4(opts, stats.is_some())?;
    let input = f.path.as_path();
    let cfg = LlamaConfig::of(f)?;
    // Each layer's Linears and norms, smoothed and quantized: ggml type and bytes by tensor name.
    let mut done: HashMap<String, (u32, Vec<u8>)> = HashMap::new();
    let (mut quantized, mut chosen) = (0, Vec::new());
    let bar = events::bar(cfg.layers, "quantize");
    for layer in 0..cfg.layers {
        let name = |leaf: &str| format!("blk.{layer}.{leaf}.weight");
        let mut t: Tensors = HashMap::new();
        for leaf in LINEARS.iter().map(|l| l.0).chain(NORMS) {
            t.insert(leaf, f.dequantize(&name(leaf))?);
        }
        let inv = match (stats, opts.smooth_alpha) {
            (Some(s), _) if opts.awq => {
                let (inv, c) = awq::search(&cfg, layer, &mut t, s, int4).map_err(|e| anyhow::anyhow!("{}: AWQ: {e:#}", input.display()))?;
                chosen.extend(c);
                inv
            }
            (Some(s), Some(alpha)) => smooth(&cfg, layer, &mut t, &s.amax, alpha),
            _ => HashMap::new(),
        };
        for (leaf, site) in LINEARS {
            let info = f.tensor(&name(leaf))?;
            let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
            let h = stats.and_then(|s| s.hessians.get(&(layer, site))).map(|h| match inv.get(&site) {
                Some(d) => h.scaled(d),
                None => h.clone(),
            });
            let what = format!("{}: {}", input.display(), name(leaf));
            done.insert(name(leaf), encode_linear(&t[leaf], n, k, int4, h.as_ref(), opts, &what)?);
            quantized += 1;
        }
        if !inv.is_empty() {
            for leaf in NORMS {
                done.insert(name(leaf), (F32, f32_bytes(&t[leaf])));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    for table in ["token_embd.weight", "output.weight"] {
        if let Ok(info) = f.tensor(table) {
            let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
            done.insert(table.into(), encode(&f.dequantize(table)?, n, k, opts.embeddings, &format!("{}: {table}", input.display()))?);
            quantized += 1;
        }
    }
    let tensors: Vec<Tensor> = f
        .tensors
        .iter()
        .map(|t| {
            let (id, data) = match done.remove(&t.name) {
                Some((id, b)) => (id, Cow::Owned(b)),
                None => (t.kind.id, Cow::Borrowed(f.bytes(t))),
            };
            let kind = if id == Q8_0 || id == Q4_0 { kind(id) } else { type_info(id).expect("F32, F16 and the input's types are in the table") };
            Tensor { name: t.name.clone(), dims: t.dims.clone(), kind, data }
        })
        .collect();
    let ftype = if int4 { FTYPE_Q4_0 } else { FTYPE_Q8_0 };
    let mut metadata = f.metadata.clone();
    match metadata.iter_mut().find(|(k, _)| k == "general.file_type") {
        Some((_, v)) => *v = Value::U32(ftype),
        None => metadata.push(("general.file_type".into(), Value::U32(ftype))),
    }
    write(out, input, &metadata, &tensors)?;
    Ok(Summary {
        quantized,
        bytes_in: f.tensors.iter().map(|t| t.len as u64).sum(),
        bytes_out: tensors.iter().map(|t| t.data.len() as u64).sum(),
        awq: chosen,
    })
}

#[cfg(test)]
mod tests;
