use std::path::PathBuf;

use anyhow::Result;
use clap::ValueEnum;
use shrink_export::{Int8Form, Options, Output};

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Onnx,
}

#[derive(Clone, Copy, ValueEnum)]
enum Int8Arg {
    /// Per-token u8 activations as on shrink's runtime (the same integers), MatMulInteger (CPU).
    Dynamic,
    /// DynamicQuantizeLinear + MatMulInteger: ONNX Runtime's quantize_dynamic form, one grid per tensor (CPU).
    DynamicTensor,
    /// QuantizeLinear / DequantizeLinear with the calibrated scales of an int8-static folder (NNAPI, QNN).
    Qdq,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Logits,
    SentenceEmbedding,
    LastHiddenState,
}

/// A model folder as an ONNX model for ONNX Runtime (CPU and its mobile execution providers): fp32, fp16, pruned,
/// trimmed, int8 (dynamic or QDQ), int4 (MatMulNBits) and sparse (written dense) folders. Writes model.onnx, the
/// folder's tokenizer.json and <name>.manifest.json beside it.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  shrink export out/bbc-int8 --format onnx --out export/bbc-int8.onnx --check\n  shrink export out/bbc-int8-static --format onnx --int8 qdq --out export/bbc-qdq.onnx\n  shrink export assets/models/all-MiniLM-L6-v2 --format onnx --outputs sentence-embedding,last-hidden-state --out export/minilm.onnx")]
pub struct Args {
    /// Model folder (config.json, model.safetensors, tokenizer.json) or hub id org/name.
    model: String,
    #[arg(long, value_enum, default_value = "onnx")]
    format: FormatArg,
    /// The .onnx file to write (its folder is created when missing).
    #[arg(long)]
    out: PathBuf,
    /// ONNX opset (17 ..= 21).
    #[arg(long, default_value_t = 17)]
    opset: i64,
    /// How int8 activations are written (default: qdq for int8-static folders, else dynamic).
    #[arg(long, value_enum)]
    int8: Option<Int8Arg>,
    /// Graph outputs, comma-separated (default: logits for a classifier, else sentence-embedding).
    #[arg(long, value_enum, value_delimiter = ',')]
    outputs: Vec<OutputArg>,
    /// Print the graph's ops and which ONNX Runtime execution providers take each.
    #[arg(long)]
    check: bool,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let FormatArg::Onnx = self.format;
        let dir = shrink_io::model::resolve_model(&self.model)?;
        let outputs = self.outputs.iter().map(|o| match o {
            OutputArg::Logits => Output::Logits,
            OutputArg::SentenceEmbedding => Output::SentenceEmbedding,
            OutputArg::LastHiddenState => Output::LastHiddenState,
        });
        let outputs: Vec<Output> = outputs.collect();
        let int8 = self.int8.map(|f| match f {
            Int8Arg::Dynamic => Int8Form::Dynamic,
            Int8Arg::DynamicTensor => Int8Form::DynamicTensor,
            Int8Arg::Qdq => Int8Form::Qdq,
        });
        let opts = Options { opset: self.opset, int8, outputs, force: self.force, ..Options::default() };
        let done = shrink_export::export(&dir, &self.out, &opts)?;
        let m = &done.manifest;
        let size = std::fs::metadata(&self.out).map(|m| m.len()).unwrap_or(0);
        eprintln!("wrote {} ({:.2} MB, opset {}, {} nodes)", self.out.display(), size as f64 / 1e6, m.opset, done.ops.values().sum::<usize>());
        eprintln!("  inputs:  {}", m.inputs.iter().map(|t| format!("{} {}[{}]", t.name, t.dtype, t.shape.join(", "))).collect::<Vec<_>>().join("; "));
        eprintln!("  outputs: {}", m.outputs.iter().map(|t| format!("{} {}[{}]", t.name, t.dtype, t.shape.join(", "))).collect::<Vec<_>>().join("; "));
        for (k, v) in &m.quantization {
            eprintln!("  {k}: {v}");
        }
        for n in &m.notes {
            eprintln!("  note: {n}");
        }
        eprintln!("  manifest: {}", done.manifest_path.display());
        if self.check {
            print!("{}", shrink_export::check::render(&done.ops));
        }
        Ok(())
    }
}
