//! Llama-family decoders read from a GGUF file, fp32 (every tensor dequantized once, the Linears packed for the
//! f32 kernel): the causal forward of one sequence over a contiguous KV cache, for logits and every layer's hidden
//! state, and greedy generation on it. The first step of issue 20: no sampling, int8 KV or quantized decode kernels
//! yet.
//!
//! Dimensions: T tokens, C hidden, H query heads, G key/value heads (H / G queries share one), D head width,
//! F FFN width, V vocabulary.
//!
//! GGUF stores Q and K with each head's rows in adjacent pairs (llama.cpp's converter permutes HF's), so RoPE here
//! rotates (2i, 2i + 1); attention scores equal HF's rotate-half ones, since Q and K are permuted alike.

use anyhow::{bail, Context, Result};
use shrink_format::gguf::GgufFile;
use shrink_kernels::sgemm::{gemm_f32, PackedF32};
use shrink_kernels::epilogue::Epilogue;

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
    fn of(f: &GgufFile) -> Result<Self> {
        let arch = f.string("general.architecture")?;
        if arch != "llama" {
            bail!("{}: architecture {arch:?}; the decoder reads llama", f.path.display());
        }
        let n = |k: &str| f.uint(&format!("llama.{k}")).map(|v| v as usize);
        let (c, h) = (n("embedding_length")?, n("attention.head_count")?);
        let g = n("attention.head_count_kv").unwrap_or(h);
        if h == 0 || g == 0 || c % h != 0 || h % g != 0 {
            bail!("{}: {h} heads, {g} key/value heads and width {c} do not divide", f.path.display());
        }
        let v = f.tensor("token_embd.weight")?.shape()[0];
        Ok(Self {
            layers: n("block_count")?,
            c,
            h,
            g,
            d: c / h,
            f: n("feed_forward_length")?,
            v,
            eps: f.float("llama.attention.layer_norm_rms_epsilon")? as f32,
            rope_base: f.float("llama.rope.freq_base").unwrap_or(10000.0) as f32,
        })
    }
}

struct Layer {
    attn_norm: Vec<f32>, // (C)
    q: PackedF32,        // (H*D, C)
    k: PackedF32,        // (G*D, C)
    v: PackedF32,        // (G*D, C)
    o: PackedF32,        // (C, H*D)
    ffn_norm: Vec<f32>,  // (C)
    gate: PackedF32,     // (F, C)
    up: PackedF32,       // (F, C)
    down: PackedF32,     // (C, F)
}

pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Vec<f32>, // (V, C)
    layers: Vec<Layer>,
    norm: Vec<f32>, // (C)
    head: PackedF32, // (V, C): output.weight, or the tied embeddings
}

impl Llama {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let cfg = LlamaConfig::of(f)?;
        let (c, hd, gd, ff) = (cfg.c, cfg.h * cfg.d, cfg.g * cfg.d, cfg.f);
        let tensor = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = f.tensor(name)?;
            if t.shape() != shape {
                bail!("{}: {name} is {:?}, expected {shape:?}", f.path.display(), t.shape());
            }
            f.dequantize(name)
        };
        let linear = |name: &str, n: usize, k: usize| Ok::<_, anyhow::Error>(PackedF32::pack(&tensor(name, &[n, k])?, n, k));
        let layers = (0..cfg.layers)
            .map(|i| {
                let p = |leaf: &str| format!("blk.{i}.{leaf}.weight");
                Ok(Layer {
                    attn_norm: tensor(&p("attn_norm"), &[c])?,
                    q: linear(&p("attn_q"), hd, c)?,
                    k: linear(&p("attn_k"), gd, c)?,
                    v: linear(&p("attn_v"), gd, c)?,
                    o: linear(&p("attn_output"), c, hd)?,
                    ffn_norm: tensor(&p("ffn_norm"), &[c])?,
                    gate: linear(&p("ffn_gate"), ff, c)?,
                    up: linear(&p("ffn_up"), ff, c)?,
                    down: linear(&p("ffn_down"), c, ff)?,
                })
            })
            .collect::<Result<_>>()
            .with_context(|| format!("loading {}", f.path.display()))?;
        let embed = tensor("token_embd.weight", &[cfg.v, c])?;
        let head = match f.tensor("output.weight") {
            Ok(_) => linear("output.weight", cfg.v, c)?,
            Err(_) => PackedF32::pack(&embed, cfg.v, c),
        };
        Ok(Self { norm: tensor("output_norm.weight", &[c])?, cfg, embed, layers, head })
    }

    /// Logits (T, V) of one sequence from its start; `hidden`, when given, receives the embeddings and each layer's
    /// output (the last after the final norm, as transformers reports them), each (T, C).
    pub fn forward(&self, ids: &[u32], hidden: Option<&mut Vec<Vec<f32>>>) -> Result<Vec<f32>> {
        self.extend(&mut KvCache::default(), ids, hidden)
    }

    /// Greedy decoding: the prompt in one pass, then one token at a time on the cache, until `eos` (included) or
    /// `max_new` tokens; `on_token` sees each as it is chosen.
    pub fn greedy(&self, prompt: &[u32], max_new: usize, eos: Option<u32>, on_token: &mut dyn FnMut(u32)) -> Result<Vec<u32>> {
        let mut cache = KvCache::default();
        let (mut out, mut logits) = (Vec::new(), self.extend(&mut cache, prompt, None)?);
        while out.len() < max_new {
            let last = &logits[logits.len() - self.cfg.v..];
            let next = last.iter().enumerate().fold(0, |b, (i, &x)| if x > last[b] { i } else { b }) as u32;
            out.push(next);
            on_token(next);
            if Some(next) == eos || out.len() == max_new {
                break;
            }
            logits = self.extend(&mut cache, &[next], None)?;
        }
        Ok(out)
    }

    /// Runs the T tokens `ids` after the `cache.len` already in `cache`, appending their keys and values: logits
    /// (T, V) of the new tokens.
    pub fn extend(&self, cache: &mut KvCache, ids: &[u32], mut hidden: Option<&mut Vec<Vec<f32>>>) -> Result<Vec<f32>> {
        let LlamaConfig { c, h, g, d, f: ff, v, .. } = self.cfg;
        let (t, past) = (ids.len(), cache.len);
        if cache.k.is_empty() {
            cache.k = vec![Vec::new(); self.layers.len()];
            cache.v = vec![Vec::new(); self.layers.len()];
        }
        let mut x = Vec::with_capacity(t * c); // (T, C)
        for &id in ids {
            let row = self.embed.get(id as usize * c..(id as usize + 1) * c).with_context(|| format!("token id {id} is past the vocabulary of {v}"))?;
            x.extend_from_slice(row);
        }
        let keep = |hidden: &mut Option<&mut Vec<Vec<f32>>>, x: &[f32]| {
            if let Some(hs) = hidden {
                hs.push(x.to_vec());
            }
        };
        keep(&mut hidden, &x);
        let (mut n, mut q, mut k, mut vv) = (vec![0f32; t * c], vec![0f32; t * h * d], vec![0f32; t * g * d], vec![0f32; t * g * d]);
        let (mut att, mut gate, mut up) = (vec![0f32; t * h * d], vec![0f32; t * ff], vec![0f32; t * ff]);
        let mut residual = vec![0f32; t * c]; // x before each block: the GEMM adds it while writing x
        let (cos, sin) = rope_tables(past, t, d, self.cfg.rope_base);
        for (i, l) in self.layers.iter().enumerate() {
            rms_norm(&x, &l.attn_norm, self.cfg.eps, &mut n);
            gemm_f32(&mut q, &n, t, &l.q, Epilogue::default());
            gemm_f32(&mut k, &n, t, &l.k, Epilogue::default());
            gemm_f32(&mut vv, &n, t, &l.v, Epilogue::default());
            rope(&mut q, d, &cos, &sin);
            rope(&mut k, d, &cos, &sin);
            cache.k[i].extend_from_slice(&k);
            cache.v[i].extend_from_slice(&vv);
            causal_attention(&q, &cache.k[i], &cache.v[i], past, h, g, d, &mut att);
            residual.copy_from_slice(&x);
            gemm_f32(&mut x, &att, t, &l.o, Epilogue { residual: Some(&residual), ..Epilogue::default() });
            rms_norm(&x, &l.ffn_norm, self.cfg.eps, &mut n);
            gemm_f32(&mut gate, &n, t, &l.gate, Epilogue::default());
            gemm_f32(&mut up, &n, t, &l.up, Epilogue::default());
            gate.iter_mut().zip(&up).for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u); // SwiGLU: silu(gate) up
            residual.copy_from_slice(&x);
            gemm_f32(&mut x, &gate, t, &l.down, Epilogue { residual: Some(&residual), ..Epilogue::default() });
            if i + 1 < self.layers.len() {
                keep(&mut hidden, &x);
            }
        }
        cache.len += t;
        rms_norm(&x, &self.norm, self.cfg.eps, &mut n);
        keep(&mut hidden, &n);
        let mut logits = vec![0f32; t * v];
        gemm_f32(&mut logits, &n, t, &self.head, Epilogue::default());
        Ok(logits)
    }
}

/// Keys and values of the tokens run so far, per layer (len, G*D) each, after RoPE: contiguous, grown per call.
#[derive(Default)]
pub struct KvCache {
    pub len: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
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

/// softmax(q k^T / sqrt(D)) v per query head, the new token i (position past + i) seeing the cache's keys up to its
/// own; query head j reads key/value head j / (H / G). q (T, H*D), k and v (past + T, G*D), out (T, H*D).
#[allow(clippy::too_many_arguments)]
fn causal_attention(q: &[f32], k: &[f32], v: &[f32], past: usize, h: usize, g: usize, d: usize, out: &mut [f32]) {
    let (t, scale) = (q.len() / (h * d), 1.0 / (d as f32).sqrt());
    let mut p = vec![0f32; past + t];
    for head in 0..h {
        let kv = head / (h / g);
        for i in 0..t {
            let seen = past + i + 1;
            let qi = &q[(i * h + head) * d..][..d];
            for (j, s) in p[..seen].iter_mut().enumerate() {
                *s = qi.iter().zip(&k[(j * g + kv) * d..][..d]).map(|(a, b)| a * b).sum::<f32>() * scale;
            }
            let max = p[..seen].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            p[..seen].iter_mut().for_each(|s| {
                *s = (*s - max).exp();
                sum += *s;
            });
            let (o, inv) = (&mut out[(i * h + head) * d..][..d], 1.0 / sum);
            o.fill(0.0);
            for (j, &pj) in p[..seen].iter().enumerate() {
                let pj = pj * inv;
                o.iter_mut().zip(&v[(j * g + kv) * d..][..d]).for_each(|(o, &vv)| *o += pj * vv);
            }
        }
    }
}
