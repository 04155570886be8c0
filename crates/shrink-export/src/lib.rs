//! shrink-export: a shrink model folder as an ONNX model other runtimes run (ONNX Runtime on the CPU and its
//! mobile execution providers). Reads folders through `shrink-format` alone; protobuf through prost (`shrink_format::onnx::proto`, shared with the importer).
//!
//! `export` writes `model.onnx` (atomically; initializers past 1 GiB into `model.onnx.data` beside it), the
//! folder's `tokenizer.json`, and `<stem>.manifest.json`: inputs and outputs with their shapes, opset, how each
//! Linear was written, the label names and the folder's lineage.

pub mod check;
pub mod encoder;
pub mod graph;
pub mod hf_llama;
pub mod linear;
pub use shrink_format::onnx::proto;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use shrink_format::folder::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use shrink_format::quant::{Acts, Storage, TableFormat};
use shrink_format::{Config, TensorFile};

pub use encoder::Output;
pub use linear::Int8Form;

use crate::graph::{entry, value, Graph, EXTERNAL_ABOVE, MS};
use crate::proto::{dtype, ModelProto, OperatorSetIdProto};

/// Opsets the graph is valid in (LayerNormalization needs 17).
pub const OPSETS: std::ops::RangeInclusive<i64> = 17..=21;

#[derive(Clone, Debug)]
pub struct Options {
    pub opset: i64,
    /// None: QDQ when every int8 Linear has a calibrated grid, else dynamic.
    pub int8: Option<Int8Form>,
    /// Empty: the folder's head (logits for a classifier, else the sentence embedding).
    pub outputs: Vec<Output>,
    /// Replace existing output files.
    pub force: bool,
    /// Initializer bytes above which data goes to an external file.
    pub external_above: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { opset: 17, int8: None, outputs: Vec::new(), force: false, external_above: EXTERNAL_ABOVE }
    }
}

/// What the manifest says about one graph input or output.
#[derive(Clone, Debug, Serialize)]
pub struct Tensor {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<String>,
}

/// `<stem>.manifest.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    pub model: String,
    pub source: String,
    pub producer: String,
    pub opset: i64,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
    /// Folder scheme (`fp32` when unquantized), int8 form, embedding storage.
    pub quantization: BTreeMap<String, String>,
    /// Storage of each Linear as written in the graph.
    pub layers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id2label: Option<Vec<String>>,
    /// Where the graph differs from the folder (sparse written dense, per-tensor dynamic activations, f32 attention).
    pub notes: Vec<String>,
    pub lineage: serde_json::Value,
    /// Files written, model last.
    pub files: Vec<String>,
}

/// The result of an export: the manifest and the op counts of the graph.
pub struct Exported {
    pub manifest: Manifest,
    pub manifest_path: PathBuf,
    /// (domain, op) -> nodes.
    pub ops: BTreeMap<(String, String), usize>,
}

fn refuse_existing(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!("{}: exists; pass --force to replace it", path.display());
    }
    Ok(())
}

/// Exports the folder `model` to `out` (a `.onnx` path).
pub fn export(model: &Path, out: &Path, opts: &Options) -> Result<Exported> {
    if !OPSETS.contains(&opts.opset) {
        bail!("--opset {}: shrink writes opsets {} to {}", opts.opset, OPSETS.start(), OPSETS.end());
    }
    if out.extension().and_then(|e| e.to_str()) != Some("onnx") {
        bail!("--out {}: name the model file, ending in .onnx (its tokenizer and manifest are written beside it)", out.display());
    }
    if !model.is_dir() {
        bail!("{}: no such model folder", model.display());
    }
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if dir.canonicalize().ok() == model.canonicalize().ok() {
        bail!("--out {}: inside the model folder {}; write the export elsewhere", out.display(), model.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("--out {}: cannot create folder {}", out.display(), dir.display()))?;
    let stem = out.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let manifest_path = dir.join(format!("{stem}.manifest.json"));
    let tokenizer_out = dir.join(TOKENIZER_FILE);
    for p in [out, manifest_path.as_path()] {
        refuse_existing(p, opts.force)?;
    }
    let tokenizer_src = model.join(TOKENIZER_FILE);
    // Another export's tokenizer.json in the same folder is fine when it is the same file.
    if tokenizer_src.is_file() && tokenizer_out.exists() && !opts.force && std::fs::read(&tokenizer_out).ok() != std::fs::read(&tokenizer_src).ok() {
        bail!("{}: exists and differs from {}; pass --force to replace it", tokenizer_out.display(), tokenizer_src.display());
    }

    if let Some(o) = opts.outputs.iter().enumerate().find_map(|(i, o)| opts.outputs[..i].contains(o).then_some(o)) {
        bail!("--outputs names {} twice", o.name());
    }
    let cfg = Config::load(&model.join(CONFIG_FILE))?;
    if let Some(l) = (0..cfg.num_hidden_layers).find(|&l| cfg.attention(l) != shrink_format::schema::Attention::Full) {
        bail!(
            "{}: layer {l} computes {} attention; the ONNX export writes full attention only (run it on shrink's runtime)",
            model.display(),
            cfg.attention(l).label()
        );
    }
    let file = TensorFile::open(&model.join(WEIGHTS_FILE))?;
    let quantized: Vec<_> = cfg.quantization.iter().flat_map(|q| q.layers.values()).filter(|f| f.acts != Acts::F32).collect();
    let form = match opts.int8 {
        Some(f) => f,
        None if !quantized.is_empty() && quantized.iter().all(|f| f.acts == Acts::Static) => Int8Form::Qdq,
        None => Int8Form::Dynamic,
    };
    let labels = cfg.labels().filter(|_| file.contains("classifier.weight"));
    let outputs = match opts.outputs.is_empty() {
        true if labels.is_some() => vec![Output::Logits],
        true => vec![Output::SentenceEmbedding],
        false => opts.outputs.clone(),
    };

    let mut g = Graph::new(opts.opset);
    let types = cfg.arch().spec().names.token_type.is_some() && cfg.type_vocab_size > 0;
    let inputs = encoder::Inputs { ids: "input_ids", mask: "attention_mask", types: types.then_some("token_type_ids") };
    let values = encoder::encoder(&mut g, &file, &cfg, form, &inputs, &outputs).with_context(|| format!("exporting {}", model.display()))?;

    // Graph outputs carry their own names: an Identity from each value.
    for (o, v) in &values {
        g.nodes.push(proto::NodeProto { input: vec![v.clone()], output: vec![o.name().into()], name: format!("{}/identity", o.name()), op_type: "Identity".into(), ..Default::default() });
    }
    let bt = [Err("batch"), Err("sequence")];
    let mut ins = vec![value(inputs.ids, dtype::INT64, &bt), value(inputs.mask, dtype::INT64, &bt)];
    if let Some(t) = inputs.types {
        ins.push(value(t, dtype::INT64, &bt));
    }
    let c = cfg.hidden_size;
    let shape_of = |o: Output| -> Vec<Result<usize, &str>> {
        match o {
            Output::Logits => vec![Err("batch"), Ok(labels.as_ref().map_or(0, Vec::len))],
            Output::SentenceEmbedding => vec![Err("batch"), Ok(c)],
            Output::LastHiddenState => vec![Err("batch"), Err("sequence"), Ok(c)],
        }
    };
    let outs: Vec<_> = outputs.iter().map(|&o| value(o.name(), dtype::FLOAT, &shape_of(o))).collect();

    let mut ops: BTreeMap<(String, String), usize> = BTreeMap::new();
    for n in &g.nodes {
        *ops.entry((n.domain.clone(), n.op_type.clone())).or_default() += 1;
    }
    let mut opset_import = vec![OperatorSetIdProto { domain: String::new(), version: opts.opset }];
    if ops.keys().any(|(d, _)| d == MS) {
        opset_import.push(OperatorSetIdProto { domain: MS.into(), version: 1 });
    }

    // Manifest facts.
    let scheme = cfg.quantization.as_ref().map_or("fp32".to_string(), |q| q.scheme.name().to_string());
    let table = cfg.quantization.as_ref().map_or(TableFormat::F32, |q| q.embeddings);
    let mut quantization = BTreeMap::from([("scheme".to_string(), scheme), ("embeddings".to_string(), table.name())]);
    if !quantized.is_empty() {
        let f = match form {
            Int8Form::Dynamic => "dynamic (u8 per token as on shrink's runtime + com.microsoft MatMulIntegerToFloat)",
            Int8Form::DynamicTensor => "dynamic-tensor (DynamicQuantizeLinear + MatMulInteger; u8 per tensor)",
            Int8Form::Qdq => "qdq (QuantizeLinear / DequantizeLinear, calibrated u8 per tensor)",
        };
        quantization.insert("int8".into(), f.into());
    }
    let mut notes = Vec::new();
    let formats = cfg.quantization.as_ref().map(|q| q.layers.clone()).unwrap_or_default();
    if formats.values().any(|f| f.storage == Storage::Sparse) {
        notes.push("sparse Linears are written dense: ONNX Runtime has no sparse MatMul on its CPU or mobile providers".into());
    }
    if form == Int8Form::DynamicTensor && formats.values().any(|f| f.acts == Acts::Dynamic) {
        notes.push("int8 activations are quantized per tensor (DynamicQuantizeLinear), not per token as on shrink's runtime: outputs differ slightly".into());
    }
    if cfg.quantization.as_ref().is_some_and(|q| q.attention == shrink_format::schema::quant::AttentionPrecision::Bf16) {
        notes.push("attention runs in f32 (the folder asks bf16 products, which only shrink's runtime implements)".into());
    }
    let layers = cfg.encoder_linears().into_iter().map(|(_, n, _, _)| n).chain(labels.as_ref().map(|_| "classifier".to_string()));
    let layers = layers.map(|n| (n.clone(), formats.get(&n).map_or("fp32", |f| f.name).to_string())).collect();
    let tensor = |v: &proto::ValueInfoProto| {
        let t = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        let shape = t.and_then(|t| t.shape.as_ref()).map(|s| s.dim.iter().map(|d| match &d.value {
            Some(proto::DimValue::Value(n)) => n.to_string(),
            Some(proto::DimValue::Param(p)) => p.clone(),
            None => "?".into(),
        }).collect()).unwrap_or_default();
        Tensor { name: v.name.clone(), dtype: if t.map(|t| t.elem_type) == Some(dtype::INT64) { "int64" } else { "float32" }, shape }
    };
    let producer = format!("shrink {}", env!("CARGO_PKG_VERSION"));
    let mut manifest = Manifest {
        model: out.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
        source: model.display().to_string(),
        producer: producer.clone(),
        opset: opts.opset,
        inputs: ins.iter().map(tensor).collect(),
        outputs: outs.iter().map(tensor).collect(),
        quantization,
        layers,
        id2label: labels.clone(),
        notes,
        lineage: serde_json::to_value(&cfg.lineage)?,
        files: Vec::new(),
    };

    let mut metadata = vec![entry("shrink.quantization", serde_json::to_string(&manifest.quantization)?)];
    if let Some(l) = &labels {
        metadata.push(entry("id2label", serde_json::to_string(&l.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect::<BTreeMap<_, _>>())?));
    }
    let ir_version = match opts.opset {
        17 | 18 => 8,
        19 | 20 => 9,
        _ => 10,
    };
    let proto = ModelProto {
        ir_version,
        opset_import,
        producer_name: "shrink".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{} exported by {producer}", model.display()),
        graph: Some(proto::GraphProto { node: g.nodes, name: "shrink_encoder".into(), initializer: g.inits, input: ins, output: outs }),
        metadata_props: metadata,
    };
    let mut files = graph::write(proto, out, opts.external_above)?;
    if tokenizer_src.is_file() {
        shrink_format::folder::write_atomic(&tokenizer_out, &std::fs::read(&tokenizer_src).with_context(|| tokenizer_src.display().to_string())?)?;
        files.insert(0, tokenizer_out);
    } else {
        manifest.notes.push(format!("{} has no tokenizer.json: feed token ids", model.display()));
    }
    manifest.files = files.iter().map(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()).collect();
    shrink_format::folder::write_atomic(&manifest_path, serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    Ok(Exported { manifest, manifest_path, ops })
}
