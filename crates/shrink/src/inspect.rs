//! `shrink inspect`: parameters, bytes at each precision and FLOPs, per component and per layer.

use serde::Serialize;
use shrink_model::Bert;

/// Weight matrices and embedding tables quantize; vectors (biases, LayerNorm) stay f32 below 16 bits. These are the storage rules the
/// numbers assume: int8 = 1 byte per weight + an f32 scale per output row; int4 = half a byte per weight + an f32
/// scale per group of 32.
const INT4_GROUP: usize = 32;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Size {
    pub params: usize,
    pub fp32_bytes: usize,
    pub fp16_bytes: usize,
    pub int8_bytes: usize,
    pub int4_bytes: usize,
}

impl Size {
    fn of(dims: &[usize]) -> Self {
        let n: usize = dims.iter().product();
        let (int8, int4) = if dims.len() == 2 {
            (n + 4 * dims[0], n.div_ceil(2) + 4 * n.div_ceil(INT4_GROUP))
        } else {
            (4 * n, 4 * n)
        };
        Self { params: n, fp32_bytes: 4 * n, fp16_bytes: 2 * n, int8_bytes: int8, int4_bytes: int4 }
    }

    fn add(&mut self, o: &Size) {
        self.params += o.params;
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
}

pub const COMPONENTS: [&str; 9] = [
    "token embeddings",
    "position embeddings",
    "type embeddings",
    "attention q/k/v",
    "attention output",
    "ffn up",
    "ffn down",
    "layernorms",
    "head",
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
        _ => "head",
    }
}

pub fn inspect(model: &Bert, seq: usize) -> Report {
    let mut comps: Vec<(String, Size)> = COMPONENTS.iter().map(|c| (c.to_string(), Size::default())).collect();
    let mut layers: Vec<(String, Size)> =
        (0..model.layers.len()).map(|l| (format!("layer {l}"), Size::default())).collect();
    let mut total = Size::default();
    for (name, t) in model.named_params() {
        let s = Size::of(t.dims());
        let c = component(&name);
        comps.iter_mut().find(|(n, _)| n == c).expect("known component").1.add(&s);
        if let Some(l) = name.strip_prefix("encoder.layer.").and_then(|r| r.split('.').next()?.parse::<usize>().ok()) {
            layers[l].1.add(&s);
        }
        total.add(&s);
    }
    comps.retain(|(_, s)| s.params > 0);
    let t = seq as u64;
    let linear = |l: &shrink_model::linear::Linear| 2 * t * l.weight.elem_count() as u64;
    let flops_per_layer: Vec<u64> = model
        .layers
        .iter()
        .map(|l| {
            let a = &l.attention;
            let c = a.query.weight.dims()[0] as u64;
            linear(&a.query) + linear(&a.key) + linear(&a.value) + linear(&a.output)
                + 2 * 2 * t * t * c // scores Q K^T and context P V
                + linear(&l.intermediate) + linear(&l.output)
        })
        .collect();
    let head = model.classifier.as_ref().map_or(0, |h| 2 * h.weight.elem_count() as u64);
    let flops_per_sequence = flops_per_layer.iter().sum::<u64>() + head;
    Report { components: comps, layers, total, seq, flops_per_sequence, flops_per_layer }
}

fn mb(b: usize) -> String {
    format!("{:.2}", b as f64 / 1e6)
}

pub fn render(r: &Report) -> String {
    let mut s = format!(
        "{:<22} {:>12} {:>10} {:>10} {:>10} {:>10}\n",
        "component", "params", "fp32 MB", "fp16 MB", "int8 MB", "int4 MB"
    );
    let row = |name: &str, z: &Size| {
        format!(
            "{:<22} {:>12} {:>10} {:>10} {:>10} {:>10}\n",
            name,
            z.params,
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
        "\nFLOPs per sequence of {} tokens: {:.3} GFLOP (matmuls; a multiply-add = 2)\n\
         int8 = 1 B/weight + f32 scale per row; int4 = 0.5 B/weight + f32 scale per {INT4_GROUP}; vectors stay f32\n",
        r.seq,
        r.flops_per_sequence as f64 / 1e9
    );
    s
}
