//! `shrink quantize` on a Llama-family decoder in a GGUF file. Every Linear of the blocks becomes int8 (per row, f16
//! scales) or int4 (groups of 32), rounded to nearest or by GPTQ, optionally after SmoothQuant (`calib`); the token
//! embeddings (also the tied head) int8, int4, fp16 or fp32 rounded to nearest. Instead of SmoothQuant's one strength,
//! `awq` searches each site's scales on its measured output error. The result is a GGUF file whose
//! Q8_0 / Q4_0 blocks hold our formats exactly (`shrink_format::gguf::ours`): llama.cpp runs it as it is, and the
//! runtime reads it back as its int8 / int4 GEMMs. Every other tensor is copied (the norms rewritten when smoothing
//! folds into them).

mod awq;
mod calib;
pub mod mixed;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use shrink_format::gguf::from_hf::from_hf;
use shrink_format::gguf::ours::{kind, q4_0_of, q8_0_of, Q4_0, Q8_0};
use shrink_format::gguf::tokenizer::tokenizer;
use shrink_format::gguf::write::{write, Tensor};
use shrink_format::gguf::{type_info, GgufFile, Value};
use shrink_format::quant::grid::f16_round;
use shrink_format::quant::{Int4Weight, Int8Weight};
use shrink_io::events;
use shrink_runtime::linear::{Linear, Stored};
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

/// Mixed precision (`mixed`): int4 sites promoted to int8 until the perplexity on the `dev_tokens` of the
/// calibration text after its calibration tokens is within `max_increase` percent of the fp32 model's.
pub struct MixedBudget {
    pub max_increase: f64,
    pub dev_tokens: usize,
}

#[derive(Debug)]
pub struct Summary {
    /// Tensors re-encoded: the Linears and the embedding tables (norms rewritten by smoothing aside).
    pub quantized: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The AWQ search's choice per (layer, site), when asked.
    pub awq: Vec<Choice>,
    /// The mixed-precision search, when asked.
    pub mixed: Option<mixed::Outcome>,
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

/// The token ids of `c`'s text.
fn calib_ids(f: &GgufFile, c: &Calib) -> Result<Vec<u32>> {
    let text = std::fs::read_to_string(c.path).with_context(|| format!("{}: cannot read the calibration text", c.path.display()))?;
    let ids = tokenizer(f)?.encode(text, false).map_err(|e| anyhow::anyhow!("{}: cannot tokenize: {e}", c.path.display()))?;
    Ok(ids.get_ids().to_vec())
}

/// Whether `opts` asks for int4 (else int8); an error for what a GGUF file cannot hold, or for calibration missing
/// or unused.
fn is_int4(opts: &Options, calibrated: bool, mixed: bool) -> Result<bool> {
    if (opts.gptq.is_some() || opts.smooth_alpha.is_some() || opts.awq || mixed) != calibrated {
        bail!("--calib (a text file) goes with --gptq, --smooth-alpha, --awq or --max-ppl-increase, and they need it");
    }
    if mixed && opts.scheme != Scheme::Int4 {
        bail!("--max-ppl-increase promotes int4 sites to int8: pass --scheme int4");
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

/// Quantizes the decoder in `input` into the GGUF file `out`, calibrated on `calib` for SmoothQuant and GPTQ, and
/// mixed under `budget` when given.
pub fn quantize_gguf(input: &Path, out: &Path, opts: &Options, calib: Option<&Calib>, budget: Option<&MixedBudget>) -> Result<Summary> {
    is_int4(opts, calib.is_some(), budget.is_some())?;
    let f = GgufFile::open(input)?;
    let Some(c) = calib else { return quantize_file(&f, out, opts, None, None) };
    let ids = calib_ids(&f, c)?;
    let (calib_ids, dev) = ids.split_at(ids.len().min(c.tokens));
    let stats = (opts.gptq.is_some() || opts.smooth_alpha.is_some() || opts.awq)
        .then(|| calibrate(&Llama::from_gguf(&f)?, calib_ids, c.ctx, opts.gptq.is_some(), if opts.awq { awq::SAMPLES } else { 0 }))
        .transpose()?;
    let budget = match budget {
        None => None,
        Some(b) if b.dev_tokens < 2 => bail!("--dev-tokens {}: a perplexity needs at least 2 tokens", b.dev_tokens),
        Some(b) if dev.len() < b.dev_tokens => bail!(
            "{}: {} tokens; --max-ppl-increase holds out {} after the {} calibration tokens (--dev-tokens, --calib-tokens)",
            c.path.display(),
            ids.len(),
            b.dev_tokens,
            c.tokens
        ),
        Some(b) => Some(mixed::Budget { max_increase: b.max_increase, dev: &dev[..b.dev_tokens], ctx: c.ctx }),
    };
    quantize_file(&f, out, opts, stats.as_ref(), budget.as_ref())
}

/// `quantize_gguf` for an HF Llama folder, written first as a GGUF file in f32 (a temp file beside `out`, removed
/// after), as llama.cpp converts a folder before it quantizes.
pub fn quantize_hf(dir: &Path, out: &Path, opts: &Options, calib: Option<&Calib>, budget: Option<&MixedBudget>) -> Result<Summary> {
    is_int4(opts, calib.is_some(), budget.is_some())?;
    let beside = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let f32_file = tempfile::Builder::new().prefix(".shrink-f32-").suffix(".gguf").tempfile_in(beside).with_context(|| format!("{}: cannot create a temp file", beside.display()))?;
    from_hf(dir, f32_file.path())?;
    quantize_gguf(f32_file.path(), out, opts, calib, budget)
}

/// `quantize_gguf` with the calibration statistics and the held-out tokens at hand.
fn quantize_file(f: &GgufFile, out: &Path, opts: &Options, stats: Option<&Stats>, budget: Option<&mixed::Budget>) -> Result<Summary> {
    let int4 = is_int4(opts, stats.is_some() || budget.is_some(), budget.is_some())?;
    let input = f.path.as_path();
    let cfg = LlamaConfig::of(f)?;
    // Each layer's Linears and norms, smoothed and quantized: ggml type and bytes by tensor name.
    let mut done: HashMap<String, (u32, Vec<u8>)> = HashMap::new();
    // With a budget, each Linear's int8 version too (round to nearest: int8 with activations in blocks is within
    // 0.1% of fp32 on SmolLM2).
    let mut int8: HashMap<String, Int8Weight> = HashMap::new();
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
            if budget.is_some() {
                int8.insert(name(leaf), Int8Weight::encode_f16(&t[leaf], n, k));
            }
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
    let ftype = if int4 { FTYPE_Q4_0 } else { FTYPE_Q8_0 };
    let mut metadata = f.metadata.clone();
    match metadata.iter_mut().find(|(k, _)| k == "general.file_type") {
        Some((_, v)) => *v = Value::U32(ftype),
        None => metadata.push(("general.file_type".into(), Value::U32(ftype))),
    }
    let mixed = match budget {
        None => None,
        Some(b) => {
            let outcome = mix(f, out, &metadata, &done, &int8, &cfg, b)?;
            for &(layer, site) in &outcome.promoted {
                for leaf in LINEARS.iter().filter(|l| l.1 == site).map(|l| l.0) {
                    let name = format!("blk.{layer}.{leaf}.weight");
                    done.insert(name.clone(), (Q8_0, q8_0_of(&int8[&name], &format!("{}: {name}", input.display()))?));
                }
            }
            Some(outcome)
        }
    };
    let tensors = tensors_of(f, &done);
    write(out, input, &metadata, &tensors)?;
    Ok(Summary {
        quantized,
        bytes_in: f.tensors.iter().map(|t| t.len as u64).sum(),
        bytes_out: tensors.iter().map(|t| t.data.len() as u64).sum(),
        awq: chosen,
        mixed,
    })
}

/// The file's tensors in order, those in `done` re-encoded.
fn tensors_of<'a>(f: &'a GgufFile, done: &'a HashMap<String, (u32, Vec<u8>)>) -> Vec<Tensor<'a>> {
    f.tensors
        .iter()
        .map(|t| {
            let (id, data) = match done.get(&t.name) {
                Some((id, b)) => (*id, Cow::Borrowed(b.as_slice())),
                None => (t.kind.id, Cow::Borrowed(f.bytes(t))),
            };
            let kind = if id == Q8_0 || id == Q4_0 { kind(id) } else { type_info(id).expect("F32, F16 and the input's types are in the table") };
            Tensor { name: t.name.clone(), dims: t.dims.clone(), kind, data }
        })
        .collect()
}

/// The mixed-precision search on the all-int4 encoding `done`: the runtime loads it from a temporary file beside
/// `out` (removed after), each site's int8 version is stacked as the loader stacks it.
fn mix(
    f: &GgufFile, out: &Path, metadata: &[(String, Value)], done: &HashMap<String, (u32, Vec<u8>)>, int8: &HashMap<String, Int8Weight>,
    cfg: &LlamaConfig, b: &mixed::Budget,
) -> Result<mixed::Outcome> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().suffix(".gguf").tempfile_in(dir).with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    write(tmp.path(), &f.path, metadata, &tensors_of(f, done))?;
    let mut model = Llama::from_gguf(&GgufFile::open(tmp.path())?)?;
    let fp32 = Llama::from_gguf(f)?;
    let mut alternates = Vec::new();
    for layer in 0..cfg.layers {
        for site in [Site::Qkv, Site::O, Site::GateUp, Site::Down] {
            let parts: Vec<&Int8Weight> = LINEARS.iter().filter(|l| l.1 == site).map(|l| &int8[&format!("blk.{layer}.{}.weight", l.0)]).collect();
            let (k, n) = (parts[0].k, parts.iter().map(|w| w.n).sum::<usize>());
            let linear = Linear::stack(parts.into_iter().map(|w| Stored::Int8(w.clone())).collect(), k)?;
            // Q8_0 holds 34 bytes per 32 values, Q4_0 18.
            alternates.push(mixed::Alternate { layer, site, linear, extra_bytes: n * k / 32 * 16 });
        }
    }
    mixed::search(&fp32, &mut model, alternates, b).with_context(|| format!("{}: mixed precision", f.path.display()))
}

#[cfg(test)]
mod tests;
