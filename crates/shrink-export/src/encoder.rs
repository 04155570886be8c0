//! The encoder of a model folder (any `shrink_format::arch` family, any storage) as one ONNX graph, written the
//! way `torch.onnx.export` writes HF BERT so ONNX Runtime's fusions (LayerNorm, Gelu, attention) apply: embeddings
//! with positions computed from the inputs, per layer Q/K/V MatMuls, scores / sqrt(D) + mask, softmax, context,
//! output projection + residual + LayerNorm, FFN with the erf GELU, + residual + LayerNorm. Then the heads: mean
//! pooling over the mask, L2 normalisation for sentence embeddings, the classifier for logits.
//!
//! Shapes: B batch, T tokens, C hidden, H_l heads of width D (A_l = H_l * D), F_l FFN width, V vocabulary.

use anyhow::{anyhow, bail, Result};
use shrink_format::arch::{self, Module, Part, Positions, Site};
use shrink_format::quant::{leaf, Acts, Format, Int4Weight, Int8Weight, TableFormat};
use shrink_format::{Config, TensorFile};

use crate::graph::{Attr, Graph};
use crate::linear::{linear, Int8Form};
use crate::proto::dtype;

/// Added to the scores of padding keys, as shrink's runtime does.
const MASKED: f32 = -1e9;

/// A graph output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// (B, L) classifier logits.
    Logits,
    /// (B, C) mean-pooled, L2-normalised.
    SentenceEmbedding,
    /// (B, T, C) the last layer's output.
    LastHiddenState,
}

impl Output {
    pub fn name(self) -> &'static str {
        match self {
            Output::Logits => "logits",
            Output::SentenceEmbedding => "sentence_embedding",
            Output::LastHiddenState => "last_hidden_state",
        }
    }
}

/// The storage of every Linear: the folder's table, fp32 without one.
fn format_of(cfg: &Config, file: &TensorFile, name: &str) -> Result<Format> {
    match &cfg.quantization {
        None => Ok(Format::FP32),
        Some(q) => q.layers.get(name).copied().ok_or_else(|| anyhow!("{}: quantization.layers has no entry for {name}", file.file.display())),
    }
}

/// The word embeddings of `ids` [B, T] -> [B, T, C] from the table as stored: f16 widened, int8 and int4 rows
/// scaled after the lookup (int4 through com.microsoft.GatherBlockQuantized, kept packed).
fn word_embeddings(g: &mut Graph, file: &TensorFile, cfg: &Config, ids: &str) -> Result<String> {
    let (v, c) = (cfg.vocab_size, cfg.hidden_size);
    let word = arch::name(Module::Word);
    let wname = leaf::of(&word, leaf::WEIGHT);
    let table = cfg.quantization.as_ref().map_or(TableFormat::F32, |q| q.embeddings);
    let to_f32 = ("to", Attr::I(dtype::FLOAT as i64));
    Ok(match table {
        TableFormat::F32 => {
            let w = g.f32(&wname, &[v, c], &file.f32(&wname, &[v, c])?);
            g.op("Gather", &[&w, ids], vec![])
        }
        TableFormat::F16 => {
            let raw = file.f16(&wname, &[v, c])?.iter().flat_map(|h| h.to_le_bytes()).collect();
            let w = g.init(&wname, dtype::FLOAT16, &[v, c], raw);
            let rows = g.op("Gather", &[&w, ids], vec![]);
            g.op("Cast", &[&rows], vec![to_f32])
        }
        TableFormat::Int8 => {
            let w = Int8Weight::read(file, &word, v, c)?;
            let q = g.init(&wname, dtype::INT8, &[v, c], w.q.iter().map(|&x| x as u8).collect());
            let s = g.f32(&leaf::of(&word, leaf::WEIGHT_SCALE), &[v, 1], &w.scale);
            let (rows, scales) = (g.op("Gather", &[&q, ids], vec![]), g.op("Gather", &[&s, ids], vec![]));
            let rows = g.op("Cast", &[&rows], vec![to_f32]);
            g.op("Mul", &[&rows, &scales], vec![])
        }
        TableFormat::Int4 { group } => {
            if c % group != 0 {
                bail!("{}: embeddings stored as int4-g{group}: the group must divide C = {c}", file.file.display());
            }
            let w = Int4Weight::read(file, &word, v, c, group)?;
            // GatherBlockQuantized on uint8 data takes MatMulNBits' nibbles (q + 8), so the table stays 4-bit.
            let q = g.init(&wname, dtype::UINT8, &[v, c / 2], crate::linear::nbits_nibbles(&w.packed));
            let s = g.f32(&leaf::of(&word, leaf::WEIGHT_SCALE), &[v, c / group], &w.scale);
            let attrs = vec![("gather_axis", Attr::I(0)), ("quantize_axis", Attr::I(1)), ("block_size", Attr::I(group as i64)), ("bits", Attr::I(4))];
            g.node_in(crate::graph::MS, "GatherBlockQuantized", &[&q, ids, &s], 1, attrs).remove(0)
        }
    })
}

fn layer_norm(g: &mut Graph, file: &TensorFile, prefix: &str, c: usize, eps: f64, x: &str) -> Result<String> {
    let w = leaf::of(prefix, leaf::WEIGHT);
    let b = leaf::of(prefix, leaf::BIAS);
    let w = g.f32(&w, &[c], &file.f32(&w, &[c])?);
    let b = g.f32(&b, &[c], &file.f32(&b, &[c])?);
    Ok(g.op("LayerNormalization", &[x, &w, &b], vec![("axis", Attr::I(-1)), ("epsilon", Attr::F(eps as f32))]))
}

/// Embedding output [B, T, C]: words + positions (+ token types) then LayerNorm.
fn embeddings(g: &mut Graph, file: &TensorFile, cfg: &Config, ids: &str, mask: &str, types: Option<&str>) -> Result<String> {
    let (c, p) = (cfg.hidden_size, cfg.max_position_embeddings);
    g.scope = "embeddings".into();
    let words = word_embeddings(g, file, cfg, ids)?;
    let pname = leaf::of(&arch::name(Module::Position), leaf::WEIGHT);
    let table = g.f32(&pname, &[p, c], &file.f32(&pname, &[p, c])?);
    let positions = match cfg.positions() {
        // 0 .. T for every sequence: [T] ids, [T, C] rows broadcast over B.
        Positions::FromZero => {
            let shape = g.op("Shape", &[ids], vec![]);
            let one = g.i64_scalar(1);
            let t = g.op("Gather", &[&shape, &one], vec![("axis", Attr::I(0))]);
            let zero = g.i64_scalar(0);
            g.op("Range", &[&zero, &t, &one], vec![])
        }
        // RoBERTa: real tokens count from pad + 1, padding takes pad (mask-based, as the runtime does).
        Positions::AfterPadding(pad) => {
            let axis = g.i64_scalar(1);
            let count = g.op("CumSum", &[mask, &axis], vec![]);
            let real = g.op("Mul", &[&count, mask], vec![]);
            let pad = g.i64_scalar(pad as i64);
            g.op("Add", &[&real, &pad], vec![])
        }
    };
    let pos = g.op("Gather", &[&table, &positions], vec![]);
    let mut x = g.op("Add", &[&words, &pos], vec![]);
    if let Some(types) = types {
        let tname = leaf::of(&arch::name(Module::TokenType), leaf::WEIGHT);
        let n = cfg.type_vocab_size;
        let table = g.f32(&tname, &[n, c], &file.f32(&tname, &[n, c])?);
        let rows = g.op("Gather", &[&table, types], vec![]);
        x = g.op("Add", &[&x, &rows], vec![]);
    }
    layer_norm(g, file, &arch::name(Module::EmbedNorm), c, cfg.layer_norm_eps, &x)
}

/// The shape [B, T, dims..] when the graph is flat (rows are B*T tokens): `bt` is Shape(input_ids).
fn unflat(g: &mut Graph, bt: &str, dims: &[i64]) -> String {
    let tail = g.i64s(dims);
    g.op("Concat", &[bt, &tail], vec![("axis", Attr::I(0))])
}

/// [B, T, A] (or flat [B*T, A]) -> [B, H, T, D] (or [B, H, D, T] with `keys`).
fn heads(g: &mut Graph, x: &str, h: usize, d: usize, keys: bool, flat: Option<&str>) -> String {
    let shape = match flat {
        Some(bt) => unflat(g, bt, &[h as i64, d as i64]),
        None => g.i64s(&[0, 0, h as i64, d as i64]),
    };
    let x = g.op("Reshape", &[x, &shape], vec![]);
    let perm = if keys { vec![0, 2, 3, 1] } else { vec![0, 2, 1, 3] };
    g.op("Transpose", &[&x], vec![("perm", Attr::Ints(perm))])
}

/// One post-norm encoder layer.
fn layer(g: &mut Graph, file: &TensorFile, cfg: &Config, l: usize, form: Int8Form, x: &str, bias: &str, flat: Option<&str>) -> Result<String> {
    let (c, d, h, eps) = (cfg.hidden_size, cfg.head_dim(), cfg.heads(l), cfg.layer_norm_eps);
    let lin = |g: &mut Graph, part: Part, x: &str| -> Result<String> {
        let name = arch::layer(l, part);
        let (n, k) = cfg.linear_shape(l, part).ok_or_else(|| anyhow!("{part:?} is no Linear"))?;
        linear(g, file, &name, n, k, format_of(cfg, file, &name)?, form, x)
    };
    // Q, K and V share one input, so one format (as the runtime requires).
    let formats: Vec<Format> = Site::Qkv.names(l).iter().map(|n| format_of(cfg, file, n)).collect::<Result<_>>()?;
    if formats.iter().any(|f| *f != formats[0]) {
        bail!("{}: layer {l}'s query, key and value must share a format", file.file.display());
    }
    g.scope = format!("layer.{l}.attention");
    let q = lin(g, Part::Query, x)?;
    let k = lin(g, Part::Key, x)?;
    let v = lin(g, Part::Value, x)?;
    let (q, k, v) = (heads(g, &q, h, d, false, flat), heads(g, &k, h, d, true, flat), heads(g, &v, h, d, false, flat));
    let scores = g.op("MatMul", &[&q, &k], vec![]); // [B, H, T, T]
    let root = g.scalar((d as f32).sqrt());
    let scores = g.op("Div", &[&scores, &root], vec![]);
    let scores = g.op("Add", &[&scores, bias], vec![]);
    let probs = g.op("Softmax", &[&scores], vec![("axis", Attr::I(-1))]);
    let ctx = g.op("MatMul", &[&probs, &v], vec![]); // [B, H, T, D]
    let ctx = g.op("Transpose", &[&ctx], vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))]);
    let shape = if flat.is_some() { g.i64s(&[-1, (h * d) as i64]) } else { g.i64s(&[0, 0, (h * d) as i64]) };
    let ctx = g.op("Reshape", &[&ctx, &shape], vec![]); // [B, T, A] or [B*T, A]
    let y = lin(g, Part::AttnOut, &ctx)?;
    let y = g.op("Add", &[&y, x], vec![]);
    let x = layer_norm(g, file, &arch::layer(l, Part::AttnNorm), c, eps, &y)?;
    g.scope = format!("layer.{l}.ffn");
    let f = lin(g, Part::FfnIn, &x)?; // [B, T, F]
    // GELU(x) = x * 0.5 * (1 + erf(x / sqrt 2)), as torch exports it (ORT fuses it into Gelu).
    let sqrt2 = g.scalar(std::f32::consts::SQRT_2);
    let e = g.op("Div", &[&f, &sqrt2], vec![]);
    let e = g.op("Erf", &[&e], vec![]);
    let one = g.scalar(1.0);
    let e = g.op("Add", &[&e, &one], vec![]);
    let f = g.op("Mul", &[&f, &e], vec![]);
    let half = g.scalar(0.5);
    let f = g.op("Mul", &[&f, &half], vec![]);
    let y = lin(g, Part::FfnOut, &f)?;
    let y = g.op("Add", &[&y, &x], vec![]);
    layer_norm(g, file, &arch::layer(l, Part::OutNorm), c, eps, &y)
}

/// Mean of x [B, T, C] over real tokens: sum(x * m) / max(sum(m), 1e-9) -> [B, C]; m is the f32 mask [B, T].
fn mean_pool(g: &mut Graph, x: &str, m: &str) -> String {
    let axis = g.i64s(&[-1]);
    let m3 = g.op("Unsqueeze", &[m, &axis], vec![]); // [B, T, 1]
    let xm = g.op("Mul", &[x, &m3], vec![]);
    let t_axis = g.i64s(&[1]);
    let sum = g.op("ReduceSum", &[&xm, &t_axis], vec![("keepdims", Attr::I(0))]);
    let count = g.op("ReduceSum", &[&m3, &t_axis], vec![("keepdims", Attr::I(0))]); // [B, 1]
    let tiny = g.scalar(1e-9);
    let count = g.op("Max", &[&count, &tiny], vec![]);
    g.op("Div", &[&sum, &count], vec![])
}

/// Graph inputs' names.
pub struct Inputs<'a> {
    pub ids: &'a str,
    pub mask: &'a str,
    pub types: Option<&'a str>,
}

/// The encoder and the requested heads; returns (output, its value name) pairs.
pub fn encoder(g: &mut Graph, file: &TensorFile, cfg: &Config, form: Int8Form, inputs: &Inputs, outputs: &[Output]) -> Result<Vec<(Output, String)>> {
    cfg.check_layer_count(&file.file, |n| file.contains(n))?;
    let mut x = embeddings(g, file, cfg, inputs.ids, inputs.mask, inputs.types)?;
    g.scope = "mask".into();
    // [B, T] 0/1 -> [B, 1, 1, T] score bias: 0 for tokens, MASKED for padding.
    let m = g.op("Cast", &[inputs.mask], vec![("to", Attr::I(dtype::FLOAT as i64))]);
    let one = g.scalar(1.0);
    let inv = g.op("Sub", &[&one, &m], vec![]);
    let masked = g.scalar(MASKED);
    let bias = g.op("Mul", &[&inv, &masked], vec![]);
    let axes = g.i64s(&[1, 2]);
    let bias = g.op("Unsqueeze", &[&bias, &axes], vec![]);
    // QDQ graphs run flat, rows = B*T tokens: NNAPI takes a MatMul only as 2-D x constant 2-D. So do per-token
    // int8 ones, whose scales are per row of a Gemm.
    let per_token = form == Int8Form::Dynamic && cfg.quantization.as_ref().is_some_and(|q| q.layers.values().any(|f| f.acts != Acts::F32));
    let flat = (form == Int8Form::Qdq || per_token).then(|| g.op("Shape", &[inputs.ids], vec![]));
    if flat.is_some() {
        let rows = g.i64s(&[-1, cfg.hidden_size as i64]);
        x = g.op("Reshape", &[&x, &rows], vec![]);
    }
    for l in 0..cfg.num_hidden_layers {
        x = layer(g, file, cfg, l, form, &x, &bias, flat.as_deref())?;
    }
    if let Some(bt) = &flat {
        let shape = unflat(g, bt, &[cfg.hidden_size as i64]);
        x = g.op("Reshape", &[&x, &shape], vec![]);
    }
    g.scope = "head".into();
    let mut pooled: Option<String> = None;
    let mut out = Vec::new();
    for &o in outputs {
        let y = match o {
            Output::LastHiddenState => x.clone(),
            Output::SentenceEmbedding => {
                let p = pooled.get_or_insert_with(|| mean_pool(g, &x, &m)).clone();
                let sq = g.op("Mul", &[&p, &p], vec![]);
                let c_axis = g.i64s(&[1]);
                let ss = g.op("ReduceSum", &[&sq, &c_axis], vec![("keepdims", Attr::I(1))]);
                let norm = g.op("Sqrt", &[&ss], vec![]);
                let eps = g.scalar(1e-12);
                let norm = g.op("Max", &[&norm, &eps], vec![]);
                g.op("Div", &[&p, &norm], vec![])
            }
            Output::Logits => {
                let labels = cfg.labels().map(|l| l.len()).ok_or_else(|| anyhow!("{}: config.json has no id2label, so no classifier to export", file.file.display()))?;
                if !file.contains("classifier.weight") {
                    bail!("{}: no classifier.weight: this folder has no classification head (export its sentence_embedding)", file.file.display());
                }
                let p = pooled.get_or_insert_with(|| mean_pool(g, &x, &m)).clone();
                linear(g, file, "classifier", labels, cfg.hidden_size, format_of(cfg, file, "classifier")?, form, &p)?
            }
        };
        out.push((o, y));
    }
    Ok(out)
}
