//! `shrink inspect`: parameters, bytes as stored and at each precision, bits per weight, and FLOPs, per component
//! and per layer. Reads the folder itself (config.json + safetensors), so fp32 and quantized folders alike.

use std::path::Path;

use anyhow::{bail, Result};
use safetensors::Dtype;
use serde::Serialize;
use shrink_format::folder::{CONFIG_FILE, WEIGHTS_FILE};
use shrink_format::quant::{leaf, TableFormat};
use shrink_format::schema::AttentionPrecision;
use shrink_format::{Config, TensorFile};
use shrink_io::Choice;

/// Weight matrices and embedding tables quantize; vectors (biases, LayerNorm) stay f32 below 16 bits. These are the
/// storage rules the numbers assume (those of `shrink quantize`): int8 = 1 byte per weight + an f32 scale per output
/// row; int4 = half a byte per weight + an f16 scale per group of 32.
const INT4_GROUP: usize = 32;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Size {
    pub params: usize,
    /// Bytes in this folder's file, scales included.
    pub stored_bytes: usize,
    pub fp32_bytes: usize,
    pub fp16_bytes: usize,
    pub int8_bytes: usize,
    pub int4_bytes: usize,
}

impl Size {
    fn of(dims: &[usize]) -> Self {
        let n: usize = dims.iter().product();
        let (int8, int4) = if dims.len() == 2 {
            (n + 4 * dims[0], n.div_ceil(2) + 2 * n.div_ceil(INT4_GROUP))
        } else {
            (4 * n, 4 * n)
        };
        Self { params: n, stored_bytes: 0, fp32_bytes: 4 * n, fp16_bytes: 2 * n, int8_bytes: int8, int4_bytes: int4 }
    }

    /// Average stored bits per parameter.
    pub fn bits(&self) -> f64 {
        self.stored_bytes as f64 * 8.0 / self.params.max(1) as f64
    }

    fn add(&mut self, o: &Size) {
        self.params += o.params;
        self.stored_bytes += o.stored_bytes;
        self.fp32_bytes += o.fp32_bytes;
        self.fp16_bytes += o.fp16_bytes;
        self.int8_bytes += o.int8_bytes;
        self.int4_bytes += o.int4_bytes;
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub components: Vec<(String, Size)>,
    pub layers: Vec<(String, Size)>,
    pub total: Size,
    pub seq: usize,
    /// Multiply-adds counted as 2 FLOPs: every Linear plus attention scores and context, for one sequence.
    pub flops_per_sequence: u64,
    pub flops_per_layer: Vec<u64>,
    /// How attention's products run (config.json `quantization.attention`; fp32 for an unquantized folder).
    pub attention: AttentionPrecision,
}

pub const COMPONENTS: [&str; 10] = [
    "token embeddings",
    "position embeddings",
    "type embeddings",
    "attention q/k/v",
    "attention output",
    "ffn up",
    "ffn down",
    "layernorms",
    "head",
    "pooler (unused)",
];

fn component(name: &str) -> &'static str {
    match name {
        n if n.contains("LayerNorm") => "layernorms",
        n if n.starts_with("embeddings.word_") => "token embeddings",
        n if n.starts_with("embeddings.position_") => "position embeddings",
        n if n.starts_with("embeddings.token_type_") => "type embeddings",
        n if n.contains(".attention.self.") => "attention q/k/v",
        n if n.contains(".attention.output.") => "attention output",
        n if n.contains(".intermediate.") => "ffn up",
        n if n.contains(".output.dense") => "ffn down",
        // BERT's [CLS] pooler: mean-pooling sentence models never run it.
        n if n.starts_with("pooler.") => "pooler (unused)",
        _ => "head",
    }
}

/// Bytes of a tensor as stored.
fn stored(file: &TensorFile, name: &str) -> usize {
    let n: usize = file.shape(name).map_or(0, |s| s.iter().product());
    (n * file.dtype(name).map_or(0, |d| d.bitsize())).div_ceil(8)
}

/// `inspect` of a folder or hub id.
pub fn inspect_model(model: &str, seq: usize) -> Result<Report> {
    inspect(&shrink_model::resolve_model(model)?, seq)
}

pub fn inspect(dir: &Path, seq: usize) -> Result<Report> {
    let cfg = Config::load(&dir.join(CONFIG_FILE))?;
    if seq == 0 || seq > cfg.max_position_embeddings {
        bail!("--seq {seq}: the model takes 1 ..= {} tokens (max_position_embeddings in {})", cfg.max_position_embeddings, dir.join(CONFIG_FILE).display());
    }
    let file = TensorFile::open(&dir.join(WEIGHTS_FILE))?;
    file.check_layer_shapes(&cfg)?;
    // Encoder weights count as the dense [N, K] they stand for, however they are stored (int4 packs two per byte
    // along K, sparse keeps only the nonzeros).
    let dense: std::collections::HashMap<String, [usize; 2]> =
        cfg.encoder_linears().into_iter().map(|(_, name, n, k)| (format!("{name}.weight"), [n, k])).collect();
    let mut comps: Vec<(String, Size)> = COMPONENTS.iter().map(|c| (c.to_string(), Size::default())).collect();
    // A quantized folder's layers are labelled with their formats (from config.json), e.g. "layer 0 int4-g32".
    let formats = |l: usize| -> String {
        let Some(q) = &cfg.quantization else { return String::new() };
        let prefix = format!("encoder.layer.{l}.");
        let set: std::collections::BTreeSet<&str> =
            q.layers.iter().filter(|(n, _)| n.starts_with(&prefix)).map(|(_, f)| f.name).collect();
        format!(" {}", set.into_iter().collect::<Vec<_>>().join("+"))
    };
    // A pruned folder's layers also show their own head count and FFN width, e.g. "layer 0 H6 F768".
    let pruned = cfg.layer_heads.is_some() || cfg.layer_intermediate_sizes.is_some();
    let dims = |l: usize| if pruned { format!(" H{} F{}", cfg.heads(l), cfg.ffn(l)) } else { String::new() };
    let mut layers: Vec<(String, Size)> =
        (0..cfg.num_hidden_layers).map(|l| (format!("layer {l}{}{}", dims(l), formats(l)), Size::default())).collect();
    let mut total = Size::default();
    let word = format!("{}.weight", shrink_format::arch::name(shrink_format::arch::Module::Word));
    let word_format = cfg.quantization.as_ref().map_or(TableFormat::F32, |q| q.embeddings);
    let mut names: Vec<&str> = file.names().collect();
    names.sort();
    for name in names {
        // Quantization and sparse metadata is counted with its weight; integer buffers (position_ids) are not
        // parameters.
        if leaf::split_metadata(name).is_some()
            || !matches!(file.dtype(name), Some(Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::I8 | Dtype::U8))
        {
            continue;
        }
        let mut dims = file.shape(name).unwrap_or_default().to_vec();
        if let Some(d) = dense.get(name) {
            dims = d.to_vec();
        } else if name == word && matches!(word_format, TableFormat::Int4 { .. }) {
            // A packed int4 embedding table: two weights per byte along C.
            if let Some(k) = dims.last_mut() {
                *k *= 2;
            }
        }
        let mut s = Size::of(&dims);
        let base = name.strip_suffix(".weight").unwrap_or(name);
        s.stored_bytes = stored(&file, name) + leaf::METADATA.iter().map(|m| stored(&file, &leaf::of(base, m))).sum::<usize>();
        let c = component(name);
        comps.iter_mut().find(|(n, _)| n == c).expect("known component").1.add(&s);
        if let Some(l) = name.strip_prefix("encoder.layer.").and_then(|r| r.split('.').next()?.parse::<usize>().ok()) {
            if let Some(layer) = layers.get_mut(l) {
                layer.1.add(&s);
            }
        }
        total.add(&s);
    }
    comps.retain(|(_, s)| s.params > 0);
    let (t, c) = (seq as u64, cfg.hidden_size as u64);
    // Q, K, V, output (C x A each), FFN up and down (C x F), then attention's two products in the layer's variant
    // (T x T x A each for full attention); pruned layers have their own A = H_l·D and F_l. Checked: a config's
    // widths are whatever its file says.
    let product = |xs: &[u64]| xs.iter().try_fold(1u64, |acc, &x| acc.checked_mul(x));
    let layer = |l: usize| {
        let (a, f) = (cfg.attention_width(l) as u64, cfg.ffn(l) as u64);
        let heads = product(&[2, cfg.heads(l) as u64, cfg.attention(l).head_macs(t, cfg.head_dim() as u64)?])?;
        let terms = [product(&[8, t, c, a])?, product(&[4, t, c, f])?, heads];
        terms.iter().try_fold(0u64, |acc, &x| acc.checked_add(x))
    };
    let labels = cfg.labels().filter(|_| file.contains("classifier.weight")).map_or(0, |l| l.len() as u64);
    let counts = (0..cfg.num_hidden_layers).map(layer).collect::<Option<Vec<u64>>>();
    let sum = counts.as_ref().and_then(|v| v.iter().try_fold(product(&[2, c, labels])?, |acc, &x| acc.checked_add(x)));
    let (Some(flops_per_layer), Some(flops_per_sequence)) = (counts, sum) else {
        bail!("--seq {seq}: the FLOP count of {} overflows 64 bits", dir.display());
    };
    let attention = cfg.quantization.as_ref().map(|q| q.attention).unwrap_or_default();
    Ok(Report { components: comps, layers, total, seq, flops_per_sequence, flops_per_layer, attention })
}

fn mb(b: usize) -> String {
    format!("{:.2}", b as f64 / 1e6)
}

pub fn render(r: &Report) -> String {
    let mut s = format!(
        "{:<22} {:>12} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "component", "params", "bits", "stored MB", "fp32 MB", "fp16 MB", "int8 MB", "int4 MB"
    );
    let row = |name: &str, z: &Size| {
        format!(
            "{:<22} {:>12} {:>6.2} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            name,
            z.params,
            z.bits(),
            mb(z.stored_bytes),
            mb(z.fp32_bytes),
            mb(z.fp16_bytes),
            mb(z.int8_bytes),
            mb(z.int4_bytes)
        )
    };
    for (n, z) in &r.components {
        s += &row(n, z);
    }
    s += &row("total", &r.total);
    s += "\n";
    for ((n, z), f) in r.layers.iter().zip(&r.flops_per_layer) {
        s += &row(&format!("{n} ({:.3} GFLOP)", *f as f64 / 1e9), z);
    }
    s += &format!(
        "\nFLOPs per sequence of {} tokens: {:.3} GFLOP (matmuls; a multiply-add = 2); attention products in {}\n\
         int8 = 1 B/weight + f32 scale per row; int4 = 0.5 B/weight + f16 scale per {INT4_GROUP}; vectors stay f32\n",
        r.seq,
        r.flops_per_sequence as f64 / 1e9,
        r.attention.name()
    );
    s
}
