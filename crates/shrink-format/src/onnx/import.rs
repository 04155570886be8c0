//! A BERT-family encoder in an ONNX file, back into a model folder: each parameter found by the checkpoint name
//! the exporter kept, through the architecture table, and written under shrink's canonical names.
//!
//! torch.onnx.export keeps the names of what it stores as-is (embeddings, LayerNorms, biases) under the module path
//! it traced (`model.0.auto_model.` for a sentence-transformers wrapper), and stores each Linear's weight transposed
//! under an anonymous name (`onnx::MatMul_470`). So a Linear is found from its bias: a MatMul (or Gemm) whose
//! weight is constant and whose output an Add of a named `{module}.bias` reads. Weights the graph dequantizes
//! (`Cast(int8) * scale`, `DequantizeLinear`, QDQ) are read as the f32 values it computes (`values.rs`), and a
//! `MatMulInteger`'s (quantize_dynamic) with the weight scale found after it. A `com.microsoft`
//! `MatMulIntegerToFloat` (shrink's per-token int8 export) names its weight `{linear}.weight_quantized` and takes
//! the scale as an input. What cannot be mapped this way (other com.microsoft ops, fused graphs, graphs with no
//! names at all) is refused by name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use prost::Message;
use serde_json::json;

use super::proto::{GraphProto, ModelProto, NodeProto};
use super::values::{attr, dequantize, Consts, Value};
use crate::arch::{self, Arch, Module, Part};
use crate::folder::{open_regular, write_model_dir, OutDir};
use crate::schema::lineage::{file_hash, Input, Step};
use crate::tensors::{serialize, OwnedTensor};
use crate::Config;

/// What an import found.
#[derive(Debug)]
pub struct Imported {
    pub arch: Arch,
    pub layers: usize,
    pub tensors: usize,
    /// f32 bytes written.
    pub bytes: usize,
    /// Whether the graph's classifier came along (only shrink's own mean-pooled head does).
    pub classifier: bool,
    /// Things the user should know (a head left behind, a default taken).
    pub notes: Vec<String>,
}

/// Ops an unfused encoder graph uses; any other is a graph this importer would misread.
const OPS: &[&str] = &[
    "Abs", "Add", "And", "Cast", "CastLike", "Clip", "Concat", "Constant", "ConstantOfShape", "CumSum", "DequantizeLinear", "Div", "DynamicQuantizeLinear", "Equal",
    "Erf", "Exp", "Expand", "Flatten", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "Greater", "GreaterOrEqual", "Identity",
    "IsInf", "IsNaN", "LayerNormalization", "Less", "LessOrEqual", "MatMul", "MatMulInteger", "Max", "Min", "Mul", "Neg", "Not", "Or", "Pow",
    "QuantizeLinear", "Range", "Reciprocal", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Reshape", "Round", "ScatterND", "Shape", "Sign",
    "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Tile", "Transpose", "Trilu", "Unsqueeze", "Where",
];

const WORD: &str = "embeddings.word_embeddings.weight";
const CLASSIFIER: &str = "classifier";

/// Reads and decodes an ONNX file.
pub fn read_model(file: &Path) -> Result<ModelProto> {
    let mut bytes = Vec::new();
    open_regular(file, "ONNX model")?.read_to_end(&mut bytes).with_context(|| format!("{}: cannot read", file.display()))?;
    let model = ModelProto::decode(&bytes[..]).map_err(|e| anyhow!("{}: not an ONNX model (protobuf: {e})", file.display()))?;
    if model.graph.is_none() {
        bail!("{}: an ONNX model with no graph", file.display());
    }
    Ok(model)
}

/// Imports `file` into the folder `out` (config.json, model.safetensors in f32, and the tokenizer files found
/// beside `file`).
pub fn import(file: &Path, out: &OutDir) -> Result<Imported> {
    let model = read_model(file)?;
    let graph = model.graph.as_ref().expect("checked by read_model");
    check_ops(file, graph)?;
    let consts = Consts::new(file, graph);
    let readers = readers(graph);
    let found = Found::collect(file, graph, &consts, &readers)?;
    let mut notes = Vec::new();
    let weight = |m: Module| format!("{}.weight", arch::name(m));
    let pad = roberta_pad(graph, &consts, &readers)?;
    let arch = if pad.is_some() || found.prefix.contains("roberta") {
        Arch::Roberta
    } else if found.spelled.iter().any(|n| n.contains("transformer.layer.")) || !found.values.contains_key(&weight(Module::TokenType)) {
        // DistilBERT is the family without a token-type table (shrink's export writes BERT's names for it).
        Arch::DistilBert
    } else {
        Arch::Bert
    };
    let get = |name: &str| found.values.get(name).ok_or_else(|| anyhow!("{}: no tensor for {name} in the graph (looked for `{}{name}`, or a MatMul whose bias it is)", file.display(), found.prefix));
    let bias = |m: Module| format!("{}.bias", arch::name(m));
    let word = get(&weight(Module::Word))?;
    let [v, c] = word.dims[..] else { bail!("{}: {} has shape {:?}, expected (V, C)", file.display(), weight(Module::Word), word.dims) };
    let layers = found.layers;
    if layers == 0 {
        bail!("{}: no encoder layer found (no tensor named under {}encoder.layer.N or transformer.layer.N)", file.display(), found.prefix);
    }
    let d = head_dim(file, graph, &consts, c)?;

    // Every tensor the table has for this family, with its shape; the classifier comes after.
    let mut want: Vec<(String, Vec<usize>)> = Vec::new();
    let table = |name: &str| get(name).map(|t| t.dims.clone());
    want.push((weight(Module::Word), vec![v, c]));
    let p = table(&weight(Module::Position))?.first().copied().unwrap_or(0);
    want.push((weight(Module::Position), vec![p, c]));
    let types = match arch.spec().names.token_type {
        Some(_) => {
            let n = table(&weight(Module::TokenType))?.first().copied().unwrap_or(0);
            want.push((weight(Module::TokenType), vec![n, c]));
            n
        }
        None => 0,
    };
    for name in [weight(Module::EmbedNorm), bias(Module::EmbedNorm)] {
        want.push((name, vec![c]));
    }
    let (mut heads, mut ffn) = (Vec::new(), Vec::new());
    for l in 0..layers {
        let rows = |part: Part| table(&weight(Module::Layer(l, part))).map(|d| d.first().copied().unwrap_or(0));
        let (a, f) = (rows(Part::Query)?, rows(Part::FfnIn)?);
        if a == 0 || a % d != 0 {
            bail!("{}: layer {l}'s query has {a} rows, not a whole number of heads of size {d}", file.display());
        }
        heads.push(a / d);
        ffn.push(f);
        for part in Part::ALL {
            let m = Module::Layer(l, part);
            let (w, b) = match part {
                Part::Query | Part::Key | Part::Value => (vec![a, c], a),
                Part::AttnOut => (vec![c, a], c),
                Part::FfnIn => (vec![f, c], f),
                Part::FfnOut => (vec![c, f], c),
                Part::AttnNorm | Part::OutNorm => (vec![c], c),
            };
            want.push((weight(m), w));
            want.push((bias(m), vec![b]));
        }
    }
    let labels = labels(&model);
    let has_head = found.values.contains_key(&format!("{CLASSIFIER}.weight"));
    let classifier = match (&labels, has_head) {
        (Some(l), true) => {
            want.push((format!("{CLASSIFIER}.weight"), vec![l.len(), c]));
            want.push((format!("{CLASSIFIER}.bias"), vec![l.len()]));
            true
        }
        (None, true) => {
            notes.push("the graph's classifier was left out: without shrink's id2label metadata its pooling is unknown".into());
            false
        }
        _ => false,
    };

    let mut tensors = Vec::with_capacity(want.len());
    let mut bytes = 0;
    for (name, shape) in &want {
        let t = get(name)?;
        if &t.dims != shape {
            bail!("{}: {name} has shape {:?}, expected {shape:?}", file.display(), t.dims);
        }
        let values = t.f32();
        if let Some(i) = values.iter().position(|x| !x.is_finite()) {
            bail!("{}: {name} holds a non-finite value ({} at index {i})", file.display(), values[i]);
        }
        bytes += values.len() * 4;
        tensors.push(OwnedTensor::f32(name.clone(), shape.clone(), &values));
    }

    let heads_all = c / d;
    let f_max = ffn.iter().copied().max().unwrap_or(0);
    let eps = graph.node.iter().find(|n| n.op_type == "LayerNormalization").map(|n| attr(n, "epsilon").map_or(1e-5, |a| a.f));
    // The graph's f32, widened through its shortest decimal (1e-12, not 9.99999996e-13).
    let eps = eps.map(|e| e.to_string().parse::<f64>().unwrap_or(e as f64));
    let eps = eps.unwrap_or_else(|| {
        notes.push("no LayerNormalization node (a decomposed LayerNorm): layer_norm_eps taken as 1e-12, BERT's".into());
        1e-12
    });
    let mut map = json!({
        "model_type": arch.spec().model_types[0],
        "vocab_size": v,
        "hidden_size": c,
        "num_hidden_layers": layers,
        "num_attention_heads": heads_all,
        "intermediate_size": f_max,
        "hidden_act": "gelu",
        "max_position_embeddings": p,
        "type_vocab_size": types,
        "layer_norm_eps": eps,
        "pad_token_id": if arch == Arch::Roberta { pad.unwrap_or(1) } else { 0 },
        "position_embedding_type": "absolute",
    });
    let obj = map.as_object_mut().expect("an object");
    if heads.iter().any(|&h| h != heads_all) {
        obj.insert("layer_heads".into(), json!(heads));
    }
    if ffn.iter().any(|&f| f != f_max) {
        obj.insert("layer_intermediate_sizes".into(), json!(ffn));
    }
    if let (true, Some(l)) = (classifier, &labels) {
        obj.insert("id2label".into(), json!(l.iter().enumerate().map(|(i, n)| (i.to_string(), n.clone())).collect::<BTreeMap<_, _>>()));
        obj.insert("label2id".into(), json!(l.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect::<BTreeMap<_, _>>()));
        obj.insert("shrink".into(), json!({"pooling": "mean", "head": "classifier"}));
    }
    let opset = model.opset_import.iter().find(|o| o.domain.is_empty() || o.domain == "ai.onnx").map_or(0, |o| o.version);
    let step = Step {
        stage: "import".into(),
        shrink: env!("CARGO_PKG_VERSION").into(),
        input: Input { path: file.display().to_string(), hash: file_hash(file)? },
        parameters: json!({"format": "onnx", "opset": opset, "producer": format!("{} {}", model.producer_name, model.producer_version).trim()}),
        metrics: serde_json::Map::new(),
    };
    obj.insert("shrink_lineage".into(), json!([step]));
    arch.write_config(obj);
    let cfg = Config::parse(&map.to_string()).with_context(|| format!("{}: the config read from the graph", file.display()))?;
    let config = serde_json::to_string_pretty(&cfg)?;
    let n = tensors.len();
    let weights = serialize(tensors)?;
    let beside = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    write_model_dir(out, &config, &weights, beside)?;
    Ok(Imported { arch, layers, tensors: n, bytes, classifier, notes })
}

/// RoBERTa's padding id, when the graph numbers positions as RoBERTa does: a cumulative sum over the mask, times
/// the mask, plus the padding id (`create_position_ids_from_input_ids`). None: no such CumSum.
fn roberta_pad(graph: &GraphProto, consts: &Consts, readers: &Readers) -> Result<Option<usize>> {
    let Some(cumsum) = graph.node.iter().find(|n| n.op_type == "CumSum") else { return Ok(None) };
    // A few ops on (casts, the mask product) to the Add of a constant.
    let mut frontier: Vec<&str> = cumsum.output.iter().map(String::as_str).collect();
    for _ in 0..4 {
        let mut next = Vec::new();
        for v in frontier {
            for n in readers.get(v).into_iter().flatten() {
                if n.op_type == "Add" {
                    for i in n.input.iter().filter(|i| *i != v) {
                        if let Some(c) = consts.eval(i)?.and_then(|c| c.ints().and_then(|x| x.first().copied())) {
                            return Ok(Some(c.max(0) as usize));
                        }
                    }
                }
                next.extend(n.output.iter().map(String::as_str));
            }
        }
        frontier = next;
    }
    Ok(Some(1))
}

/// Refuses a graph with ops outside `OPS` (fused attention, MatMulInteger, ...), naming them.
fn check_ops(file: &Path, graph: &GraphProto) -> Result<()> {
    let odd: BTreeSet<String> = graph
        .node
        .iter()
        .filter(|n| match n.domain.as_str() {
            "" | "ai.onnx" => !OPS.contains(&n.op_type.as_str()),
            d => !(d == "com.microsoft" && n.op_type == "MatMulIntegerToFloat"),
        })
        .map(|n| if n.domain.is_empty() { n.op_type.clone() } else { format!("{} ({})", n.op_type, n.domain) })
        .collect();
    if !odd.is_empty() {
        bail!(
            "{}: the graph uses {}, which shrink does not import; it reads unfused float, weight-only int8, QDQ and \
             quantize_dynamic encoder graphs (export without ONNX Runtime's graph optimisations)",
            file.display(),
            odd.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The parameters found, by canonical name.
struct Found {
    /// What the exporter put before the checkpoint names (`model.0.auto_model.`).
    prefix: String,
    /// The names as the graph spelled them, after the prefix.
    spelled: Vec<String>,
    values: HashMap<String, Value>,
    layers: usize,
}

impl Found {
    fn collect(file: &Path, graph: &GraphProto, consts: &Consts, readers: &Readers) -> Result<Self> {
        let gathered = gathered_tables(graph, readers, consts)?;
        let names: Vec<&str> = graph
            .initializer
            .iter()
            .map(|t| t.name.as_str())
            .chain(graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)))
            .chain(gathered.keys().map(String::as_str))
            .collect();
        let prefix = names.iter().find_map(|n| n.strip_suffix(WORD)).ok_or_else(|| {
            anyhow!(
                "{}: no tensor is named ...{WORD}: shrink maps a graph's weights by the checkpoint names torch.onnx.export keeps, \
                 and this graph does not carry them",
                file.display()
            )
        })?;
        let spelled: Vec<String> = names.iter().filter_map(|n| n.strip_prefix(prefix)).map(String::from).collect();
        // Graph value name for each known canonical name.
        let mut by_name: HashMap<String, &str> = HashMap::new();
        for (graph_name, s) in names.iter().filter(|n| n.starts_with(prefix)).zip(&spelled) {
            let canon = arch::canonical(s);
            // A Linear's weight is read through its MatMul, whose orientation is known; under its own name it
            // may be stored either way round (shrink's export keeps the name on the (K, N) copy).
            if known(&canon) && !is_linear_weight(&canon) {
                by_name.entry(canon).or_insert(graph_name);
            }
        }
        let mut values = HashMap::new();
        for (canon, graph_name) in &by_name {
            let v = match gathered.get(*graph_name) {
                Some(v) => Some(v.clone()),
                None => consts.eval(graph_name)?,
            };
            if let Some(v) = v {
                let v = if v.ints().is_some() { scaled(file, graph_name, v, consts)? } else { v };
                values.insert(canon.clone(), v);
            }
        }
        // Linears: a constant weight found through the bias its output gets.
        let mut unplaced = 0;
        let bias_after = |out: &str| {
            let add = readers.get(out).into_iter().flatten().find(|n| n.op_type == "Add")?;
            add.input.iter().map(String::as_str).find(|i| *i != out)
        };
        let linears = graph.node.iter().filter(|n| matches!(n.op_type.as_str(), "MatMul" | "Gemm" | "MatMulInteger" | "MatMulIntegerToFloat"));
        for node in linears {
            let out = node.output.first().map(String::as_str).unwrap_or_default();
            // MatMulInteger's weight scale sits after it: y = Cast(acc) * (x_scale * w_scale), as quantize_dynamic
            // (and shrink's per-tensor export) write it. MatMulIntegerToFloat takes it as input 3.
            let mut scale = None;
            let (w, bias) = match node.op_type.as_str() {
                "Gemm" => (node.input.get(1), node.input.get(2).map(String::as_str)),
                "MatMulInteger" => match integer_scale(out, readers, consts)? {
                    Some((y, ws)) => {
                        scale = Some(ws);
                        (node.input.get(1), bias_after(y))
                    }
                    None => continue,
                },
                "MatMulIntegerToFloat" => {
                    let Some(ws) = node.input.get(3) else { continue };
                    scale = consts.eval(ws)?;
                    (node.input.get(1), None)
                }
                _ => (node.input.get(1), bias_after(out)),
            };
            let Some(w) = w else { continue };
            let target = match node.op_type.as_str() {
                // Its weight keeps its name (`{linear}.weight_quantized`, shrink's per-token export): the bias
                // is folded into the Gemm after it, with the zero point's correction.
                "MatMulIntegerToFloat" => w.strip_suffix("_quantized").and_then(|b| b.strip_prefix(prefix)).map(arch::canonical),
                _ => bias.and_then(|b| b.strip_prefix(prefix)).map(arch::canonical).and_then(|b| b.strip_suffix(".bias").map(|m| format!("{m}.weight"))),
            };
            let target = target.filter(|t| known(t));
            let Some(target) = target else {
                // Attention's MatMuls read no constant; a constant weight with no named bias cannot be placed.
                if consts.eval(w)?.is_some() {
                    unplaced += 1;
                }
                continue;
            };
            if values.contains_key(&target) {
                continue;
            }
            let Some(mut value) = consts.eval(w)? else { continue };
            if let Some(ws) = scale {
                let at = if node.op_type == "MatMulIntegerToFloat" { 5 } else { 3 };
                let zero = match node.input.get(at).filter(|z| !z.is_empty()) {
                    Some(z) => consts.eval(z)?,
                    None => None,
                };
                value = dequantize(&value, &ws, zero.as_ref(), 1).with_context(|| format!("{}: {target}'s MatMulInteger weight", file.display()))?;
            }
            if value.dims.len() != 2 {
                bail!("{}: {target} is a MatMul weight of shape {:?}, expected 2-D", file.display(), value.dims);
            }
            let trans_b = node.op_type == "Gemm" && attr(node, "transB").is_some_and(|a| a.i != 0);
            if !trans_b {
                value = transposed(value);
            }
            values.insert(target, value);
        }
        let layers = values.keys().filter_map(|n| layer_param(n)).map(|(l, _, _)| l + 1).max().unwrap_or(0);
        if unplaced > 0 && (0..layers).any(|l| !values.contains_key(&format!("{}.weight", arch::layer(l, Part::Query)))) {
            bail!(
                "{}: {unplaced} MatMul weights carry no checkpoint name (neither their own nor a named bias after them), so they cannot be \
                 placed in the architecture",
                file.display()
            );
        }
        Ok(Self { prefix: prefix.to_string(), spelled, values, layers })
    }
}

/// Tables a graph gathers quantized and dequantizes after the Gather (quantize_dynamic's embeddings), by the name
/// of the stored table without its `_quantized`: the whole table dequantized with the same per-tensor scale.
fn gathered_tables(graph: &GraphProto, readers: &Readers, consts: &Consts) -> Result<HashMap<String, Value>> {
    let mut tables = HashMap::new();
    for g in graph.node.iter().filter(|n| n.op_type == "Gather") {
        let (Some(data), Some(out)) = (g.input.first(), g.output.first()) else { continue };
        let Some(name) = data.strip_suffix("_quantized") else { continue };
        let Some(dq) = readers.get(out.as_str()).into_iter().flatten().find(|n| n.op_type == "DequantizeLinear" && n.input.first() == Some(out)) else { continue };
        let eval = |i: usize| match dq.input.get(i).filter(|x| !x.is_empty()) {
            Some(x) => consts.eval(x),
            None => Ok(None),
        };
        let (Some(q), Some(scale)) = (consts.eval(data)?, eval(1)?) else { continue };
        // A per-axis scale would apply to the gathered rows' axes, not the table's.
        if scale.dims.iter().product::<usize>() == 1 {
            tables.insert(name.to_string(), dequantize(&q, &scale, eval(2)?.as_ref(), 1)?);
        }
    }
    Ok(tables)
}

/// A table stored as integers and scaled after its Gather (shrink's int8 export gathers `{name}_scale` per row):
/// the table times that scale, per row or per tensor. Integers with no such scale are refused, not read as floats.
fn scaled(file: &Path, name: &str, q: Value, consts: &Consts) -> Result<Value> {
    let scale_name = format!("{name}_scale");
    let Some(mut scale) = consts.eval(&scale_name)? else {
        bail!("{}: {name} is stored as integers, and no {scale_name} says how to scale them", file.display());
    };
    let n: usize = scale.dims.iter().product();
    let rows = q.dims.first().copied().unwrap_or(0);
    if n != 1 && n != rows {
        bail!("{}: {scale_name} has shape {:?}: neither one scale nor one per row of {name} {:?}", file.display(), scale.dims, q.dims);
    }
    scale.dims = vec![n];
    dequantize(&q, &scale, None, 0).with_context(|| format!("{}: {name}", file.display()))
}

/// After a MatMulInteger's output `acc`: the value `Cast(acc) * (x_scale * w_scale)` and the constant w_scale.
fn integer_scale<'g>(acc: &str, readers: &Readers<'g>, consts: &Consts<'g>) -> Result<Option<(&'g str, Value)>> {
    let next = |v: &str, op: &str| readers.get(v).into_iter().flatten().find(|n| n.op_type == op).copied();
    let Some(cast) = next(acc, "Cast") else { return Ok(None) };
    let Some(mul) = cast.output.first().and_then(|c| next(c, "Mul")) else { return Ok(None) };
    let Some(product) = mul.input.iter().find(|i| Some(*i) != cast.output.first()) else { return Ok(None) };
    let Some(scales) = consts.producer(product).filter(|p| p.op_type == "Mul") else { return Ok(None) };
    for i in &scales.input {
        if let Some(ws) = consts.eval(i)? {
            return Ok(mul.output.first().map(|y| (y.as_str(), ws)));
        }
    }
    Ok(None)
}

/// Whether a canonical name is one the table (or shrink's classifier) has.
fn known(canon: &str) -> bool {
    let Some((module, leaf)) = canon.rsplit_once('.') else { return false };
    let embed = [Module::Word, Module::Position, Module::TokenType, Module::EmbedNorm].into_iter().any(|m| arch::name(m) == module);
    (leaf == "weight" || leaf == "bias") && (embed || module == CLASSIFIER || layer_param(canon).is_some())
}

/// A layer parameter's (layer, part, leaf) from its canonical name (`encoder.layer.3.intermediate.dense.weight`).
fn layer_param(canon: &str) -> Option<(usize, Part, &str)> {
    let (l, rest) = canon.strip_prefix("encoder.layer.")?.split_once('.')?;
    let l = l.parse().ok()?;
    Part::ALL.into_iter().find_map(|p| {
        let path = arch::layer(0, p);
        let leaf = rest.strip_prefix(path.strip_prefix("encoder.layer.0.")?)?.strip_prefix('.')?;
        Some((l, p, leaf))
    })
}

fn is_linear_weight(canon: &str) -> bool {
    canon == format!("{CLASSIFIER}.weight")
        || layer_param(canon).is_some_and(|(_, p, leaf)| leaf == "weight" && !matches!(p, Part::AttnNorm | Part::OutNorm))
}

/// The nodes that read each value.
type Readers<'g> = HashMap<&'g str, Vec<&'g NodeProto>>;

fn readers(graph: &GraphProto) -> Readers<'_> {
    let mut map: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
    for n in &graph.node {
        for i in &n.input {
            map.entry(i.as_str()).or_default().push(n);
        }
    }
    map
}

fn transposed(v: Value) -> Value {
    let [k, n] = v.dims[..] else { unreachable!("checked 2-D") };
    let src = v.f32();
    let mut out = vec![0.0; k * n];
    for (i, row) in src.chunks_exact(n).enumerate() {
        for (j, &x) in row.iter().enumerate() {
            out[j * k + i] = x;
        }
    }
    Value { dims: vec![n, k], data: super::values::Data::F32(out) }
}

/// The attention head size D: the last dimension of the graph's (B, T, H, D) Reshapes (or (B*T, H, D)), the one
/// most of them use.
fn head_dim(file: &Path, graph: &GraphProto, consts: &Consts, c: usize) -> Result<usize> {
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for node in graph.node.iter().filter(|n| n.op_type == "Reshape") {
        let Some(shape) = node.input.get(1) else { continue };
        // The shape is a constant, or a Concat of the batch and sequence sizes (or B*T) with constants.
        let last = match consts.eval(shape)? {
            Some(v) => v.ints().and_then(|s| s.last().copied()),
            None => match consts.producer(shape) {
                Some(cat) if cat.op_type == "Concat" => match cat.input.last() {
                    Some(tail) => consts.eval(tail)?.and_then(|v| v.ints()?.last().copied()),
                    None => None,
                },
                _ => None,
            },
        };
        // Heads x head size is C, so D divides it and is below it; (.., C) and (.., F) reshapes drop out.
        if let Some(d) = last.filter(|&d| d > 1 && (d as usize) < c && c.is_multiple_of(d as usize)) {
            *seen.entry(d as usize).or_default() += 1;
        }
    }
    seen.into_iter().max_by_key(|&(d, n)| (n, d)).map(|(d, _)| d).ok_or_else(|| {
        anyhow!("{}: cannot tell the attention head size: no Reshape to (batch, sequence, heads, head size) with a constant head size", file.display())
    })
}

/// id2label from the model's metadata, as shrink's export writes it.
fn labels(model: &ModelProto) -> Option<Vec<String>> {
    let text = &model.metadata_props.iter().find(|e| e.key == "id2label")?.value;
    let map: BTreeMap<String, String> = serde_json::from_str(text).ok()?;
    let mut v: Vec<(usize, String)> = map.into_iter().filter_map(|(k, l)| Some((k.parse().ok()?, l))).collect();
    v.sort();
    v.iter().enumerate().all(|(i, (k, _))| i == *k).then(|| v.into_iter().map(|(_, l)| l).collect())
}
