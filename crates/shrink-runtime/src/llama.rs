//! Llama-family decoders read from a GGUF file: the causal forward of one sequence over a contiguous KV cache, for
//! logits and every layer's hidden state, and greedy generation on it. Tensors whose Q8_0 / Q4_0 blocks hold our
//! int8 / int4 formats (`shrink quantize` writes them; `shrink_format::gguf::ours`) run on the int8 / int4 GEMMs
//! with int8 activations in blocks of 32 (`Linear::stack`); every other tensor is dequantized once and runs in f32. Q, K and V run as one
//! GEMM, and so do the FFN's gate and up.
//!
//! Dimensions: T tokens, C hidden, H query heads, G key/value heads (H / G queries share one), D head width,
//! F FFN width, V vocabulary.
//!
//! GGUF stores Q and K with each head's rows in adjacent pairs (llama.cpp's converter permutes HF's), so RoPE here
//! rotates (2i, 2i + 1); attention scores equal HF's rotate-half ones, since Q and K are permuted alike.

use anyhow::{bail, Context, Result};
use std::path::Path;

use shrink_format::arch::llama::{self as llama_names, HfConfig};
use shrink_format::gguf::{ours, GgufFile};
use shrink_format::tensors::TensorFile;
use shrink_format::F32Data;
use shrink_kernels::qgemm::QuantActs;

pub use crate::kv::{KvCache, KvFormat};
use crate::linear::{Linear, Stored};
use crate::table::Table;

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub layers: usize,
    pub c: usize,
    pub h: usize,
    pub g: usize,
    pub d: usize,
    pub f: usize,
    pub v: usize,
    pub eps: f32,
    pub rope_base: f32,
}

impl LlamaConfig {
    pub fn of(f: &GgufFile) -> Result<Self> {
        Ok(Self::of_hf(&HfConfig::of_gguf(f)?))
    }
}

/// The Linears of a layer, by the input they share: Q, K and V read the attention norm's output; O the attention;
/// gate and up the FFN norm's output; down silu(gate) * up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Site {
    Qkv,
    O,
    GateUp,
    Down,
}

struct Layer {
    attn_norm: Vec<f32>, // (C)
    qkv: Linear,         // (H*D + 2*G*D, C): Q, K, V stacked
    o: Linear,           // (C, H*D)
    ffn_norm: Vec<f32>,  // (C)
    gate_up: Linear,     // (2F, C): gate, up stacked
    down: Linear,        // (C, F)
}

pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Option<Table>, // (V, C); None: tied, its rows read from the head
    layers: Vec<Layer>,
    norm: Vec<f32>, // (C)
    head: Linear,   // (V, C): output.weight, or the tied embeddings
    /// The format of the caches `forward` and `decode` make (f32 unless set).
    pub kv: KvFormat,
}

/// Where a model's tensors come from, by their GGUF names.
trait Source {
    fn what(&self) -> String;
    fn has(&self, name: &str) -> bool;
    /// A (len) vector.
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>>;
    /// An [n, k] weight, in our int8 / int4 format where the file holds one.
    fn stored(&self, name: &str, n: usize, k: usize) -> Result<Stored>;
}

impl Source for GgufFile {
    fn what(&self) -> String {
        self.path.display().to_string()
    }

    fn has(&self, name: &str) -> bool {
        self.tensor(name).is_ok()
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        if t.shape() != [len] {
            bail!("{}: {name} is {:?}, expected [{len}]", self.path.display(), t.shape());
        }
        self.dequantize(name)
    }

    fn stored(&self, name: &str, n: usize, k: usize) -> Result<Stored> {
        let t = self.tensor(name)?;
        if t.shape() != [n, k] {
            bail!("{}: {name} is {:?}, expected [{n}, {k}]", self.path.display(), t.shape());
        }
        let w = match (ours::int8_of(self, t), ours::int4_of(self, t)) {
            (Some(w), _) => Stored::Int8(w),
            (_, Some(w)) => Stored::Int4(w),
            _ => Stored::F32 { w: self.dequantize(name)?, n },
        };
        self.release(t);
        Ok(w)
    }
}

/// An HF Llama folder's model.safetensors, read by GGUF names; Q and K rows into GGUF's RoPE order.
struct HfSource {
    file: TensorFile,
    heads: usize,
    kv_heads: usize,
}

impl HfSource {
    fn name(&self, gguf: &str) -> Result<String> {
        llama_names::hf_name(gguf).with_context(|| format!("{}: no transformers name for {gguf}", self.file.file.display()))
    }
}

impl Source for HfSource {
    fn what(&self) -> String {
        self.file.file.display().to_string()
    }

    fn has(&self, name: &str) -> bool {
        self.name(name).is_ok_and(|n| self.file.contains(&n))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        Ok(self.file.f32(&self.name(name)?, &[len])?.into_owned())
    }

    fn stored(&self, name: &str, n: usize, k: usize) -> Result<Stored> {
        let w = self.file.f32(&self.name(name)?, &[n, k])?;
        let w = match name.rsplit('.').nth(1) {
            Some("attn_q") => llama_names::pairs_adjacent(&w, self.heads, k),
            Some("attn_k") => llama_names::pairs_adjacent(&w, self.kv_heads, k),
            _ => w.into_owned(),
        };
        Ok(Stored::F32 { w, n })
    }
}

impl LlamaConfig {
    fn of_hf(c: &HfConfig) -> Self {
        let d = c.hidden / c.heads;
        Self { layers: c.layers, c: c.hidden, h: c.heads, g: c.kv_heads, d, f: c.ffn, v: c.vocab, eps: c.eps as f32, rope_base: c.rope_theta as f32 }
    }
}

impl Llama {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        Self::build(LlamaConfig::of(f)?, f)
    }

    /// An HF Llama folder: config.json and model.safetensors (f32, f16 or bf16), as transformers saves them.
    pub fn from_hf(dir: &Path) -> Result<Self> {
        let cfg = HfConfig::read(dir)?;
        let file = TensorFile::open(&dir.join("model.safetensors"))?;
        let src = HfSource { file, heads: cfg.heads, kv_heads: cfg.kv_heads };
        Self::build(LlamaConfig::of_hf(&cfg), &src)
    }

    fn build(cfg: LlamaConfig, f: &dyn Source) -> Result<Self> {
        let (c, hd, gd, ff) = (cfg.c, cfg.h * cfg.d, cfg.g * cfg.d, cfg.f);
        let linear = |parts: &[(&str, usize)], k: usize| -> Result<Linear> {
            let stored = parts.iter().map(|&(name, n)| f.stored(name, n, k)).collect::<Result<_>>()?;
            Linear::stack(stored, k).with_context(|| format!("{}: {}", f.what(), parts[0].0))
        };
        let embed = f.stored("token_embd.weight", cfg.v, c)?;
        // Tied: one copy, the head's, whose packed rows the lookup decodes. The largest tensors go first, so their
        // temporaries are freed before the layers take their memory: the load peaks near the model's size.
        let (embed, head) = match f.has("output.weight") {
            false => (None, Linear::stack(vec![embed], c)?),
            true => (
                Some(match embed {
                    Stored::Int8(w) => Table::Int8(w),
                    Stored::Int4(w) => Table::Int4(w),
                    Stored::F32 { w, .. } => Table::F32(F32Data::Owned(w)),
                }),
                linear(&[("output.weight", cfg.v)], c)?,
            ),
        };
        let layers = (0..cfg.layers)
            .map(|i| {
                let p = |leaf: &str| format!("blk.{i}.{leaf}.weight");
                Ok(Layer {
                    attn_norm: f.vector(&p("attn_norm"), c)?,
                    qkv: linear(&[(&p("attn_q"), hd), (&p("attn_k"), gd), (&p("attn_v"), gd)], c)?,
                    o: linear(&[(&p("attn_output"), c)], hd)?,
                    ffn_norm: f.vector(&p("ffn_norm"), c)?,
                    gate_up: linear(&[(&p("ffn_gate"), ff), (&p("ffn_up"), ff)], c)?,
                    down: linear(&[(&p("ffn_down"), c)], ff)?,
                })
            })
            .collect::<Result<_>>()
            .with_context(|| format!("loading {}", f.what()))?;
        Ok(Self { norm: f.vector("output_norm.weight", c)?, cfg, embed, layers, head, kv: KvFormat::F32 })
    }

    /// Logits (T, V) of one sequence from its start; `hidden`, when given, receives the embeddings and each layer's
    /// output (the last after the final norm, as transformers reports them), each (T, C).
    pub fn forward(&self, ids: &[u32], hidden: Option<&mut Vec<Vec<f32>>>) -> Result<Vec<f32>> {
        self.extend(&mut KvCache::new(self.kv), ids, hidden)
    }

    /// Greedy decoding: the prompt in one pass, then one token at a time on the cache, until `eos` (included) or
    /// `max_new` tokens; `on_token` sees each as it is chosen.
    pub fn greedy(&self, prompt: &[u32], max_new: usize, eos: Option<u32>, on_token: &mut dyn FnMut(u32)) -> Result<Vec<u32>> {
        self.decode(prompt, max_new, eos.as_slice(), &mut crate::sample::argmax, on_token)
    }

    /// Decoding: the prompt in one pass, then one token at a time on the cache, each chosen by `pick` from the last
    /// logits (V), until one of `stops` (included) or `max_new` tokens; `on_token` sees each as it is chosen.
    pub fn decode(
        &self, prompt: &[u32], max_new: usize, stops: &[u32], pick: &mut dyn FnMut(&[f32]) -> u32, on_token: &mut dyn FnMut(u32),
    ) -> Result<Vec<u32>> {
        let mut cache = KvCache::new(self.kv);
        let (mut out, mut logits) = (Vec::new(), self.next_logits(&mut cache, prompt)?);
        while out.len() < max_new {
            let next = pick(&logits);
            out.push(next);
            on_token(next);
            if stops.contains(&next) || out.len() == max_new {
                break;
            }
            logits = self.next_logits(&mut cache, &[next])?;
        }
        Ok(out)
    }

    /// Runs the T tokens `ids` after the `cache.len` already in `cache`, appending their keys and values: logits
    /// (T, V) of the new tokens.
    pub fn extend(&self, cache: &mut KvCache, ids: &[u32], hidden: Option<&mut Vec<Vec<f32>>>) -> Result<Vec<f32>> {
        self.extend_tapped(cache, ids, hidden, false, &mut |_, _, _| {})
    }

    /// `extend` for generation: the logits (V) of the last new token only, so a prompt skips the head on the rest.
    pub fn next_logits(&self, cache: &mut KvCache, ids: &[u32]) -> Result<Vec<f32>> {
        self.extend_tapped(cache, ids, None, true, &mut |_, _, _| {})
    }

    /// `extend` (or `next_logits` when `last_only`), showing `tap` the input (T, K) of every Linear of every layer as
    /// it runs: what calibration reads.
    pub fn extend_tapped(
        &self,
        cache: &mut KvCache,
        ids: &[u32],
        mut hidden: Option<&mut Vec<Vec<f32>>>,
        last_only: bool,
        tap: &mut dyn FnMut(usize, Site, &[f32]),
    ) -> Result<Vec<f32>> {
        let LlamaConfig { c, h, g, d, f: ff, v, .. } = self.cfg;
        let (t, past) = (ids.len(), cache.len);
        if t == 0 {
            bail!("no tokens to run: the prompt is empty");
        }
        let mut x = vec![0f32; t * c]; // (T, C)
        for (row, &id) in x.chunks_exact_mut(c).zip(ids) {
            if id as usize >= v {
                bail!("token id {id} is past the vocabulary of {v}");
            }
            match &self.embed {
                Some(table) => table.row(id as usize, row),
                None => self.head.weight_row(id as usize, row),
            }
        }
        let keep = |hidden: &mut Option<&mut Vec<Vec<f32>>>, x: &[f32]| {
            if let Some(hs) = hidden {
                hs.push(x.to_vec());
            }
        };
        keep(&mut hidden, &x);
        let (hd, gd) = (h * d, g * d);
        let mut n = vec![0f32; t * c];
        let (mut qkv, mut q, mut k, mut vv) = (vec![0f32; t * (hd + 2 * gd)], vec![0f32; t * hd], vec![0f32; t * gd], vec![0f32; t * gd]);
        let (mut att, mut gate_up, mut act) = (vec![0f32; t * hd], vec![0f32; t * 2 * ff], vec![0f32; t * ff]);
        let mut residual = vec![0f32; t * c]; // x before each block: the GEMM adds it while writing x
        let mut qa = QuantActs::new();
        let (cos, sin) = rope_tables(past, t, d, self.cfg.rope_base);
        for (i, l) in self.layers.iter().enumerate() {
            rms_norm(&x, &l.attn_norm, self.cfg.eps, &mut n);
            tap(i, Site::Qkv, &n);
            l.qkv.forward(&n, t, &mut qkv, &mut qa, false, None);
            for (r, row) in qkv.chunks_exact(hd + 2 * gd).enumerate() {
                q[r * hd..][..hd].copy_from_slice(&row[..hd]);
                k[r * gd..][..gd].copy_from_slice(&row[hd..hd + gd]);
                vv[r * gd..][..gd].copy_from_slice(&row[hd + gd..]);
            }
            rope(&mut q, d, &cos, &sin);
            rope(&mut k, d, &cos, &sin);
            cache.push(self.layers.len(), i, &k, &vv, d);
            cache.attend(i, &q, past, (h, g, d), &mut att);
            tap(i, Site::O, &att);
            residual.copy_from_slice(&x);
            l.o.forward(&att, t, &mut x, &mut qa, false, Some(&residual));
            rms_norm(&x, &l.ffn_norm, self.cfg.eps, &mut n);
            tap(i, Site::GateUp, &n);
            l.gate_up.forward(&n, t, &mut gate_up, &mut qa, false, None);
            for (a, gu) in act.chunks_exact_mut(ff).zip(gate_up.chunks_exact(2 * ff)) {
                let (gate, up) = gu.split_at(ff);
                a.iter_mut().zip(gate).zip(up).for_each(|((a, &g), &u)| *a = g / (1.0 + (-g).exp()) * u); // SwiGLU: silu(gate) up
            }
            tap(i, Site::Down, &act);
            residual.copy_from_slice(&x);
            l.down.forward(&act, t, &mut x, &mut qa, false, Some(&residual));
            if i + 1 < self.layers.len() {
                keep(&mut hidden, &x);
            }
        }
        cache.len += t;
        rms_norm(&x, &self.norm, self.cfg.eps, &mut n);
        keep(&mut hidden, &n);
        let rows = if last_only { 1 } else { t };
        let mut logits = vec![0f32; rows * v];
        self.head.forward(&n[(t - rows) * c..], rows, &mut logits, &mut qa, false, None);
        Ok(logits)
    }

    /// Whether a decode step's GEMVs (M = 1, under `PARALLEL_MIN_MACS`) run faster split over the current pool's
    /// threads on this machine: times decode steps both ways, interleaved, and keeps the faster for the process.
    /// Split was slower on the AMX Xeons (waking a worker outweighed a GEMV's share) and 1.2-1.3x faster at 2
    /// threads on a Zen 5; the outputs are the same either way. Returns whether it splits.
    pub fn tune_decode_threads(&self) -> Result<bool> {
        use shrink_kernels::qgemm::{set_parallel_min_macs, PARALLEL_MIN_MACS};
        if rayon::current_num_threads() < 2 {
            return Ok(false);
        }
        // Every Linear of a step, in both settings, `STEPS` tokens per turn, `TURNS` turns each.
        const STEPS: usize = 4;
        const TURNS: usize = 3;
        let (mut serial, mut split) = (Vec::new(), Vec::new());
        for turn in 0..2 * TURNS {
            let splits = turn % 2 == 1;
            set_parallel_min_macs(if splits { 1 << 16 } else { PARALLEL_MIN_MACS });
            let mut cache = KvCache::new(self.kv);
            self.next_logits(&mut cache, &[0])?;
            let start = std::time::Instant::now();
            for t in 0..STEPS {
                self.next_logits(&mut cache, &[t as u32 + 1])?;
            }
            (if splits { &mut split } else { &mut serial }).push(start.elapsed());
        }
        serial.sort();
        split.sort();
        let splits = split[TURNS / 2] < serial[TURNS / 2];
        set_parallel_min_macs(if splits { 1 << 16 } else { PARALLEL_MIN_MACS });
        Ok(splits)
    }

    /// The Linear of `site` in layer `layer`: a mixed-precision search swaps versions in and out.
    pub fn site_mut(&mut self, layer: usize, site: Site) -> &mut Linear {
        let l = &mut self.layers[layer];
        match site {
            Site::Qkv => &mut l.qkv,
            Site::O => &mut l.o,
            Site::GateUp => &mut l.gate_up,
            Site::Down => &mut l.down,
        }
    }

    /// Bytes of the weights in memory: the Linears as packed, the embedding table, the norms.
    pub fn bytes(&self) -> usize {
        let norms = (self.layers.len() * 2 + 1) * self.cfg.c * 4;
        norms + self.embed.as_ref().map_or(0, Table::bytes) + self.head.bytes() + self.layers.iter().map(|l| l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes()).sum::<usize>()
    }
}

/// x / sqrt(mean(x^2) + eps) * w, per row of C.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let c = w.len();
    for (row, o) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / c as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        o.iter_mut().zip(row).zip(w).for_each(|((o, &v), &w)| *o = w * (v * inv));
    }
}

/// cos and sin of position p times frequency i (base^(-2i / D)) for positions past..past + T, (T, D/2) each.
fn rope_tables(past: usize, t: usize, d: usize, base: f32) -> (Vec<f32>, Vec<f32>) {
    let inv: Vec<f32> = (0..d / 2).map(|i| 1.0 / base.powf(2.0 * i as f32 / d as f32)).collect();
    let angles: Vec<f32> = (past..past + t).flat_map(|p| inv.iter().map(move |f| p as f32 * f)).collect();
    (angles.iter().map(|a| a.cos()).collect(), angles.iter().map(|a| a.sin()).collect())
}

/// Rotates each head's adjacent pairs of every row by its position's angles (rows of heads x D).
fn rope(x: &mut [f32], d: usize, cos: &[f32], sin: &[f32]) {
    let per_row = x.len() / (cos.len() / (d / 2));
    for (p, row) in x.chunks_exact_mut(per_row).enumerate() {
        let (cos, sin) = (&cos[p * d / 2..][..d / 2], &sin[p * d / 2..][..d / 2]);
        for head in row.chunks_exact_mut(d) {
            for (i, pair) in head.chunks_exact_mut(2).enumerate() {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos[i] - b * sin[i];
                pair[1] = a * sin[i] + b * cos[i];
            }
        }
    }
}
