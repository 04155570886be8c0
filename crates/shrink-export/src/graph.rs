//! Building an ONNX graph: nodes with generated value names, initializers, deduplicated constants, and the
//! model file (initializers over a size limit moved to an external data file beside it, as ONNX requires past
//! protobuf's 2 GB).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Result};
use prost::Message;

use crate::proto::{self, attr_type, dtype, AttributeProto, NodeProto, StringStringEntryProto, TensorProto};

/// A node attribute.
pub enum Attr {
    I(i64),
    F(f32),
    Ints(Vec<i64>),
    S(&'static str),
    /// A tensor (ConstantOfShape's value).
    T(TensorProto),
}

/// Microsoft's contrib domain (MatMulNBits).
pub const MS: &str = "com.microsoft";

#[derive(Default)]
pub struct Graph {
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    /// Small constants by (dtype, dims, bytes): one initializer each.
    consts: HashMap<(i32, Vec<i64>, Vec<u8>), String>,
    /// Prefix of generated names (`layer.0.attn`), so the graph reads like the checkpoint.
    pub scope: String,
    count: usize,
    /// The default domain's opset (ReduceMin / ReduceMax take their axes as an input from 18).
    pub opset: i64,
    /// Per-token int8 activations by input value (`linear::per_token`'s q, scales and correction rows), shared by
    /// the Linears that read one input.
    pub per_token: HashMap<String, [String; 3]>,
}

fn attribute(name: &str, a: Attr) -> AttributeProto {
    let mut p = AttributeProto { name: name.to_string(), ..Default::default() };
    match a {
        Attr::I(i) => (p.r#type, p.i) = (attr_type::INT, i),
        Attr::F(f) => (p.r#type, p.f) = (attr_type::FLOAT, f),
        Attr::Ints(v) => (p.r#type, p.ints) = (attr_type::INTS, v),
        Attr::S(s) => (p.r#type, p.s) = (attr_type::STRING, s.as_bytes().to_vec()),
        Attr::T(t) => (p.r#type, p.t) = (attr_type::TENSOR, Some(t)),
    }
    p
}

/// A tensor of `dtype` holding `raw` (little-endian, as ONNX's raw_data).
pub fn tensor(name: &str, dtype: i32, dims: &[usize], raw: Vec<u8>) -> TensorProto {
    TensorProto { name: name.to_string(), data_type: dtype, dims: dims.iter().map(|&d| d as i64).collect(), raw_data: raw, ..Default::default() }
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Graph {
    /// An empty graph for the default domain's `opset`.
    pub fn new(opset: i64) -> Self {
        Self { opset, ..Self::default() }
    }

    fn fresh(&mut self, op: &str) -> String {
        self.count += 1;
        match self.scope.as_str() {
            "" => format!("{op}_{}", self.count),
            s => format!("{s}/{op}_{}", self.count),
        }
    }

    /// A node of `domain` with `outputs` fresh outputs; "" in `inputs` skips an optional input.
    pub fn node_in(&mut self, domain: &str, op: &str, inputs: &[&str], outputs: usize, attrs: Vec<(&str, Attr)>) -> Vec<String> {
        let outs: Vec<String> = (0..outputs).map(|_| self.fresh(op)).collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outs.clone(),
            name: format!("{}/node", outs[0]),
            op_type: op.to_string(),
            domain: domain.to_string(),
            attribute: attrs.into_iter().map(|(n, a)| attribute(n, a)).collect(),
        });
        outs
    }

    /// A standard-domain node with one output.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.node_in("", op, inputs, 1, attrs).remove(0)
    }

    /// Renames the output of the last node (graph outputs have fixed names).
    pub fn rename_last(&mut self, name: &str) {
        let last = self.nodes.last_mut().expect("a node");
        last.output[0] = name.to_string();
    }

    /// An initializer named `name`.
    pub fn init(&mut self, name: &str, dtype: i32, dims: &[usize], raw: Vec<u8>) -> String {
        self.inits.push(tensor(name, dtype, dims, raw));
        name.to_string()
    }

    pub fn f32(&mut self, name: &str, dims: &[usize], v: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), v.len(), "{name}: dims {dims:?}");
        self.init(name, dtype::FLOAT, dims, f32_bytes(v))
    }

    /// A small constant, shared by every node that uses the same value.
    fn constant(&mut self, dtype: i32, dims: &[usize], raw: Vec<u8>) -> String {
        let key = (dtype, dims.iter().map(|&d| d as i64).collect(), raw);
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = format!("const_{}", self.consts.len());
        self.init(&name, dtype, dims, key.2.clone());
        self.consts.insert(key, name.clone());
        name
    }

    /// A 0-d f32 constant.
    pub fn scalar(&mut self, v: f32) -> String {
        self.constant(dtype::FLOAT, &[], v.to_le_bytes().to_vec())
    }

    /// A 1-d i64 constant (shapes, axes).
    pub fn i64s(&mut self, v: &[i64]) -> String {
        self.constant(dtype::INT64, &[v.len()], v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    /// A 0-d i64 constant (an index, an axis).
    pub fn i64_scalar(&mut self, v: i64) -> String {
        self.constant(dtype::INT64, &[], v.to_le_bytes().to_vec())
    }

    /// ReduceMin / ReduceMax / ReduceMean of x over `axes`, keeping the reduced dimensions.
    pub fn reduce(&mut self, op: &str, x: &str, axes: &[i64]) -> String {
        if self.opset >= 18 {
            let a = self.i64s(axes);
            self.op(op, &[x, &a], vec![])
        } else {
            self.op(op, &[x], vec![("axes", Attr::Ints(axes.to_vec()))])
        }
    }

    /// A 0-d u8 constant (a zero point).
    pub fn u8_scalar(&mut self, v: u8) -> String {
        self.constant(dtype::UINT8, &[], vec![v])
    }

    pub fn bytes(&self) -> usize {
        self.inits.iter().map(|t| t.raw_data.len()).sum()
    }
}

/// Graph inputs and outputs: a tensor of `dtype` with named (dynamic) or fixed dimensions.
pub fn value(name: &str, dtype: i32, dims: &[Result<usize, &str>]) -> proto::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| proto::Dimension {
            value: Some(match d {
                Ok(n) => proto::DimValue::Value(*n as i64),
                Err(p) => proto::DimValue::Param(p.to_string()),
            }),
        })
        .collect();
    let tensor_type = proto::TypeTensor { elem_type: dtype, shape: Some(proto::TensorShapeProto { dim }) };
    proto::ValueInfoProto { name: name.to_string(), r#type: Some(proto::TypeProto { tensor_type: Some(tensor_type) }) }
}

pub fn entry(key: &str, value: impl Into<String>) -> StringStringEntryProto {
    StringStringEntryProto { key: key.to_string(), value: value.into() }
}

/// Protobuf messages are limited to 2 GB; a model with more initializer bytes than this keeps them in a file beside.
pub const EXTERNAL_ABOVE: usize = 1 << 30;

/// Serialises `model` to `path`, atomically. When its initializers hold more than `external_above` bytes, those of
/// at least 1 KiB go to `<file name>.data` beside it (offsets aligned to 4 KiB, ONNX's external data convention),
/// written first so the model never names data that is not there. Returns the files written.
pub fn write(mut model: proto::ModelProto, path: &Path, external_above: usize) -> Result<Vec<std::path::PathBuf>> {
    let Some(graph) = model.graph.as_mut() else { bail!("no graph") };
    let mut written = Vec::new();
    let total: usize = graph.initializer.iter().map(|t| t.raw_data.len()).sum();
    if total > external_above {
        let file = path.file_name().map(|f| format!("{}.data", f.to_string_lossy())).unwrap_or_else(|| "model.onnx.data".into());
        let mut data = Vec::new();
        for t in graph.initializer.iter_mut().filter(|t| t.raw_data.len() >= 1024) {
            data.resize(data.len().next_multiple_of(4096), 0);
            let raw = std::mem::take(&mut t.raw_data);
            t.external_data = vec![entry("location", &file), entry("offset", data.len().to_string()), entry("length", raw.len().to_string())];
            t.data_location = 1;
            data.extend_from_slice(&raw);
        }
        let data_path = path.with_file_name(&file);
        shrink_format::folder::write_atomic(&data_path, &data)?;
        written.push(data_path);
    }
    let bytes = model.encode_to_vec();
    if bytes.len() >= i32::MAX as usize {
        bail!("{}: the graph alone is {} bytes, past protobuf's 2 GB limit", path.display(), bytes.len());
    }
    shrink_format::folder::write_atomic(path, &bytes)?;
    written.push(path.to_path_buf());
    Ok(written)
}
