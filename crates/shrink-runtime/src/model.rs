//! The encoder (any family of `shrink_format::arch`, in canonical names) on the runtime's kernels: embeddings, then per layer fused QKV GEMM, blocked attention, output
//! GEMM + residual + LayerNorm, FFN GEMM + GELU, GEMM + residual + LayerNorm. Weights are packed once at load;
//! every activation lives in `Buffers`, planned once per shape.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
pub use shrink_format::arch::Site;
use shrink_format::arch::{self, Part};
use shrink_format::quant::{Format, TableFormat};
use shrink_format::{Config, TensorFile};
use shrink_kernels::qgemm::QuantActs;

use crate::attention::{self, FeatureMaps, Kind, Precision, Scratch, Shape, MASKED};
use shrink_format::schema::FeatureMap;
use crate::embeddings::Embeddings;
use crate::linear::Linear;
use crate::norm::LayerNorm;

/// One encoder layer; pruned layers have their own H_l heads (A_l = H_l * D) and FFN width F_l.
pub struct Layer {
    qkv: Linear,      // C -> 3A: query, key, value stacked
    attn_out: Linear, // A -> C
    ln1: LayerNorm,
    inter: Linear, // C -> F, GELU fused
    out: Linear,   // F -> C
    ln2: LayerNorm,
    heads: usize,  // H_l
    attention: Kind,
    /// A Hedgehog layer's learned feature maps.
    maps: Option<FeatureMaps>,
}

pub struct Model {
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
    /// Mean-pooled sentence -> label logits, for fine-tuned classifiers.
    pub classifier: Option<Linear>,
    /// The folder's `quantization.attention` (fp32 without one).
    pub attention: Precision,
    c: usize,
    d: usize,
}

/// Activations for the largest batch seen so far; smaller batches reuse them, so a steady workload allocates
/// nothing after its first call.
#[derive(Default)]
pub struct Buffers {
    x: Vec<f32>,         // (M, C) hidden state
    y: Vec<f32>,         // (M, C) pre-LayerNorm sum
    /// (M, 3A) QKV, later (M, F) FFN activations of the widest layer: never live at once, so they share memory.
    wide: Vec<f32>,
    ctx: Vec<f32>, // (M, A) of the widest layer
    bias: Vec<f32>,      // (B, T) mask bias
    padded: Vec<bool>,   // (B): any padding in the sequence
    pub pooled: Vec<f32>, // (B, C)
    pub logits: Vec<f32>, // (B, L)
    qa: QuantActs,
    attn: Vec<Scratch>, // one per thread
}

/// Element counts of the buffers for one (B, T) batch, and about how many bytes a forward pass at that shape holds.
pub struct Plan {
    b: usize,
    m: usize,      // B*T
    x: usize,      // M x C (x and y)
    wide: usize,   // M x widest 3A or F
    ctx: usize,    // M x widest A
    pooled: usize, // B x C
    logits: usize, // B x L
    threads: usize,
    /// Buffers, kernel staging and attention scratch together.
    pub bytes: usize,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

impl Layer {
    /// A_l: the context width the output projection reads.
    fn attn_out_width(&self) -> usize {
        self.qkv.n() / 3
    }
}

/// Sees what a forward pass computes, for calibration and layer-by-layer checks. Rows are all B*T tokens,
/// padding included (the caller has the mask).
pub trait Observer: Send {
    /// The input (M, K) of layer `layer`'s Linears at `site`.
    fn linear_input(&mut self, _layer: usize, _site: Site, _x: &[f32], _k: usize) {}
    /// The embedding output, then each layer's output, (M, C).
    fn hidden(&mut self, _x: &[f32]) {}
}

/// Collects every hidden state.
impl Observer for Vec<Vec<f32>> {
    fn hidden(&mut self, x: &[f32]) {
        self.push(x.to_vec());
    }
}

/// Which storage each Linear uses: the quantization section's table, fp32 when the folder has none.
struct Formats<'a>(Option<&'a BTreeMap<String, Format>>);

impl Formats<'_> {
    fn of(&self, file: &TensorFile, names: &[&str]) -> Result<Format> {
        let get = |n: &str| match self.0 {
            None => Ok(Format::FP32),
            Some(map) => map.get(n).copied().ok_or_else(|| anyhow!("{}: quantization.layers has no entry for {n}", file.file.display())),
        };
        let first = get(names[0])?;
        for n in &names[1..] {
            if get(n)? != first {
                bail!("{}: {} and {n} must share a format (they run as one GEMM)", file.file.display(), names[0]);
            }
        }
        Ok(first)
    }
}

impl Model {
    pub fn load(file: &Arc<TensorFile>, cfg: &Config, labels: Option<usize>) -> Result<Self> {
        let (c, d) = (cfg.hidden_size, cfg.head_dim());
        let q = cfg.quantization.as_ref();
        let formats = Formats(q.map(|q| &q.layers));
        let embeddings = Embeddings::load(file, cfg, q.map_or(TableFormat::F32, |q| q.embeddings))?;
        cfg.check_layer_count(&file.file, |n| file.contains(n))?;
        let eps = cfg.layer_norm_eps;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                // A site's Linears share K and stack their N (Q, K, V: 3 x A).
                let load = |site: Site| {
                    let names = site.names(l);
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    let (n, k) = cfg.linear_shape(l, site.parts()[0]).ok_or_else(|| anyhow!("{site:?} has no Linear"))?;
                    Linear::load(file, &names, n, k, formats.of(file, &names)?)
                };
                let norm = |part| LayerNorm::load(file, &arch::layer(l, part), c, eps);
                let mut qkv = load(Site::Qkv)?;
                // Softmax attention's 1/sqrt(D) folded into the query rows: exact for int8 and int4 (it scales the
                // scales). Linear attention's feature map takes Q unscaled.
                let attention = cfg.attention(l);
                if !matches!(attention, Kind::Linear { .. }) {
                    qkv.scale_rows(0..cfg.attention_width(l), 1.0 / (d as f32).sqrt());
                }
                Ok(Layer {
                    qkv,
                    attn_out: load(Site::AttnOut)?,
                    ln1: norm(Part::AttnNorm)?,
                    inter: load(Site::Inter)?,
                    out: load(Site::Out)?,
                    ln2: norm(Part::OutNorm)?,
                    heads: cfg.heads(l),
                    attention,
                    maps: match attention {
                        Kind::Linear { feature_map: FeatureMap::Hedgehog } => Some(FeatureMaps::load(file, l, cfg.heads(l), d)?),
                        _ => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let classifier = match labels {
            Some(l) => Some(Linear::load(file, &["classifier"], l, c, formats.of(file, &["classifier"])?)?),
            None => None,
        };
        let attention = q.map(|q| q.attention).unwrap_or_default();
        Ok(Self { embeddings, layers, classifier, attention, c, d })
    }

    /// Bytes of weights held in memory (mapped tables included).
    pub fn bytes(&self) -> usize {
        let layers: usize = self.layers.iter().map(|l| l.qkv.bytes() + l.attn_out.bytes() + l.inter.bytes() + l.out.bytes()).sum();
        self.embeddings.bytes() + layers + self.classifier.as_ref().map_or(0, Linear::bytes)
    }

    /// The buffer sizes of a (B, T) batch on `threads` threads, or None when one overflows.
    pub fn plan(&self, b: usize, t: usize, threads: usize) -> Option<Plan> {
        let (c, d) = (self.c, self.d);
        // The widest layer sets the shared buffers; narrower (pruned) layers use a prefix.
        let wide = self.layers.iter().map(|l| l.inter.n().max(l.qkv.n())).max().unwrap_or(0);
        let a = self.layers.iter().map(|l| l.attn_out_width()).max().unwrap_or(0);
        let labels = self.classifier.as_ref().map_or(0, Linear::n);
        let m = b.checked_mul(t)?;
        let sizes = [m.checked_mul(c)?, m.checked_mul(wide)?, m.checked_mul(a)?, m, b.checked_mul(c)?, b.checked_mul(labels)?];
        let floats = sizes.iter().try_fold(sizes[0], |acc, &n| acc.checked_add(n))?; // x and y are both M x C
        // Grown inside the kernels: u8 activations (rows padded to 16) and the sparse kernel's f32 copy, M x widest
        // K; per thread, attention's block of scores and outputs and one head's K and V packed (padded panels).
        let staging = m.checked_add(16)?.checked_mul(c.max(a).max(wide))?.checked_mul(1 + 4)?;
        let scratch = self.layers.iter().map(|l| attention::scratch_floats(l.attention, t, d)).try_fold(0, |m, s| Some(m.max(s?)))?;
        let bytes = floats
            .checked_mul(4)?
            .checked_add(b)?
            .checked_add(staging)?
            .checked_add(scratch.checked_mul(6)?.checked_mul(threads)?)?; // f32 plus the bf16 path's copies
        Some(Plan { b, x: sizes[0], wide: sizes[1], ctx: sizes[2], m, pooled: sizes[4], logits: sizes[5], threads, bytes })
    }

    /// Grows every buffer to `plan` (never shrinks: a steady workload allocates once).
    pub fn grow(&self, bufs: &mut Buffers, plan: &Plan) {
        for (v, n) in [(&mut bufs.x, plan.x), (&mut bufs.y, plan.x), (&mut bufs.wide, plan.wide), (&mut bufs.ctx, plan.ctx)] {
            grow(v, n);
        }
        grow(&mut bufs.bias, plan.m);
        if bufs.padded.len() < plan.b {
            bufs.padded.resize(plan.b, false);
        }
        grow(&mut bufs.pooled, plan.pooled);
        grow(&mut bufs.logits, plan.logits);
        bufs.attn.resize_with(plan.threads.max(bufs.attn.len()), Scratch::new);
    }

    /// Last hidden state (B*T, C) into `bufs.x`; `obs` (if given) sees every Linear input and hidden state.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(&self, ids: &[u32], mask: &[u32], b: usize, t: usize, threads: usize, bufs: &mut Buffers, mut obs: Option<&mut dyn Observer>) {
        let (m, c) = (b * t, self.c);
        for (o, &v) in bufs.bias[..m].iter_mut().zip(mask) {
            *o = if v == 0 { MASKED } else { 0.0 };
        }
        for (p, row) in bufs.padded.iter_mut().zip(mask.chunks_exact(t)) {
            *p = row.contains(&0);
        }
        let Buffers { x, y, wide, ctx, bias, padded, qa, attn, .. } = bufs;
        let bias = &bias[..m];
        self.embeddings.forward(ids, mask, t, &mut x[..m * c]);
        if let Some(o) = obs.as_deref_mut() {
            o.hidden(&x[..m * c]);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let mut see = |site: Site, x: &[f32], k: usize| {
                if let Some(o) = obs.as_deref_mut() {
                    o.linear_input(l, site, x, k);
                }
            };
            let (a, f) = (layer.attn_out_width(), layer.inter.n());
            let shape = Shape { b, t, h: layer.heads, d: self.d };
            let qkv = &mut wide[..3 * m * a];
            let ctx = &mut ctx[..m * a]; // (M, A)
            see(Site::Qkv, &x[..m * c], c);
            layer.qkv.forward(&x[..m * c], m, qkv, qa, false, None);
            attention::attention(qkv, bias, &padded[..b], &shape, layer.attention, layer.maps.as_ref(), self.attention, ctx, &mut attn[..threads]);
            see(Site::AttnOut, ctx, a);
            layer.attn_out.forward(ctx, m, &mut y[..m * c], qa, false, Some(&x[..m * c]));
            layer.ln1.forward(&mut y[..m * c]);
            std::mem::swap(x, y);
            let ffn = &mut wide[..m * f];
            see(Site::Inter, &x[..m * c], c);
            layer.inter.forward(&x[..m * c], m, ffn, qa, true, None);
            see(Site::Out, ffn, f);
            layer.out.forward(ffn, m, &mut y[..m * c], qa, false, Some(&x[..m * c]));
            layer.ln2.forward(&mut y[..m * c]);
            std::mem::swap(x, y);
            if let Some(o) = obs.as_deref_mut() {
                o.hidden(&x[..m * c]);
            }
        }
    }

    /// Mean over real tokens of `bufs.x` into `bufs.pooled` (B, C).
    pub fn pool(&self, mask: &[u32], b: usize, t: usize, bufs: &mut Buffers) {
        let c = self.c;
        let Buffers { x, pooled, .. } = bufs;
        for (bi, out) in pooled[..b * c].chunks_exact_mut(c).enumerate() {
            out.fill(0.0);
            let mut n = 0.0f32;
            for ti in (0..t).filter(|&ti| mask[bi * t + ti] != 0) {
                for (o, &v) in out.iter_mut().zip(&x[(bi * t + ti) * c..][..c]) {
                    *o += v;
                }
                n += 1.0;
            }
            let inv = 1.0 / n.max(1e-9);
            out.iter_mut().for_each(|o| *o *= inv);
        }
    }

    /// The hidden state `forward` left in `bufs`.
    pub fn hidden<'a>(&self, bufs: &'a Buffers) -> &'a [f32] {
        &bufs.x
    }

    /// Classifier logits of `bufs.pooled` into `bufs.logits` (B, L).
    pub fn head(&self, b: usize, bufs: &mut Buffers) -> Result<()> {
        let head = self.classifier.as_ref().ok_or_else(|| anyhow!("this model has no classification head"))?;
        let Buffers { pooled, logits, qa, .. } = bufs;
        head.forward(&pooled[..b * self.c], b, &mut logits[..b * head.n()], qa, false, None);
        Ok(())
    }
}
