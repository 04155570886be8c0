//! The constant values of an ONNX graph: initializers, Constant nodes, and what a few ops compute from constants
//! alone (Identity, Cast, Mul / Div / Add / Sub, DequantizeLinear, Transpose, Reshape). So a weight the graph
//! dequantizes or transposes at run time (`Cast(int8) * scale`, `DequantizeLinear(w, s, z)`, QDQ) reads as the f32
//! tensor the graph computes from it, whatever the exporter named the stored parts.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};

use super::proto::{dtype, AttributeProto, GraphProto, NodeProto, TensorProto};

/// A constant tensor: floats as f32, integers of any width as i64.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub dims: Vec<usize>,
    pub data: Data,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    Int(Vec<i64>),
}

impl Value {
    pub fn f32(&self) -> Cow<'_, [f32]> {
        match &self.data {
            Data::F32(v) => Cow::Borrowed(v),
            Data::Int(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
        }
    }

    pub fn ints(&self) -> Option<&[i64]> {
        match &self.data {
            Data::Int(v) => Some(v),
            Data::F32(_) => None,
        }
    }

    fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::Int(v) => v.len(),
        }
    }
}

/// The graph's constants, computed on demand.
pub struct Consts<'g> {
    file: &'g Path,
    inits: HashMap<&'g str, &'g TensorProto>,
    producer: HashMap<&'g str, &'g NodeProto>,
    /// Whether each name asked about is constant: decided from the graph's structure before any value is
    /// computed, so a big constant is not built only to meet a graph input at the next op.
    constant: RefCell<HashMap<String, bool>>,
}

impl<'g> Consts<'g> {
    pub fn new(file: &'g Path, graph: &'g GraphProto) -> Self {
        let inits = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let producer = graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
        Self { file, inits, producer, constant: RefCell::default() }
    }

    /// Whether `name` depends on constants alone, through ops `node` computes.
    fn is_const(&self, name: &str) -> bool {
        if let Some(&known) = self.constant.borrow().get(name) {
            return known;
        }
        let known = self.inits.contains_key(name)
            || self.producer(name).is_some_and(|n| {
                let input = |i: usize| n.input.get(i).is_some_and(|x| !x.is_empty() && self.is_const(x));
                let optional = |i: usize| n.input.get(i).is_none_or(|x| x.is_empty() || self.is_const(x));
                (n.domain.is_empty() || n.domain == "ai.onnx")
                    && match n.op_type.as_str() {
                        "Constant" => true,
                        "Identity" | "Cast" | "Transpose" => input(0),
                        "Mul" | "Div" | "Add" | "Sub" | "Reshape" => input(0) && input(1),
                        "DequantizeLinear" => input(0) && input(1) && optional(2),
                        _ => false,
                    }
            });
        self.constant.borrow_mut().insert(name.to_string(), known);
        known
    }

    /// The node that computes `name`, if a node does.
    pub fn producer(&self, name: &str) -> Option<&'g NodeProto> {
        self.producer.get(name).copied()
    }

    /// `name`'s value when it depends on constants alone; None when it depends on a graph input or on an op this
    /// does not compute.
    pub fn eval(&self, name: &str) -> Result<Option<Value>> {
        if !self.is_const(name) {
            return Ok(None);
        }
        if let Some(t) = self.inits.get(name) {
            return self.tensor(t).map(Some);
        }
        let Some(node) = self.producer(name) else { return Ok(None) };
        let what = || format!("{}: node {} ({}) computing {name}", self.file.display(), node.name, node.op_type);
        self.node(node).with_context(what)
    }

    /// The i-th input's value; None when it is missing or not constant.
    fn input(&self, node: &NodeProto, i: usize) -> Result<Option<Value>> {
        match node.input.get(i).filter(|n| !n.is_empty()) {
            Some(name) => self.eval(name),
            None => Ok(None),
        }
    }

    fn node(&self, node: &NodeProto) -> Result<Option<Value>> {
        if node.op_type == "Constant" {
            return match constant(node)? {
                Some(t) => self.tensor(&t).map(Some),
                None => Ok(None),
            };
        }
        let Some(x) = self.input(node, 0)? else { return Ok(None) };
        Ok(match node.op_type.as_str() {
            "Identity" => Some(x),
            "Cast" => cast(x, attr(node, "to").map_or(0, |a| a.i as i32)),
            "Mul" | "Div" | "Add" | "Sub" => match self.input(node, 1)? {
                Some(y) => Some(binary(&node.op_type, &x, &y)?),
                None => None,
            },
            "DequantizeLinear" => {
                let Some(scale) = self.input(node, 1)? else { return Ok(None) };
                let zero = self.input(node, 2)?;
                if attr(node, "block_size").is_some_and(|a| a.i != 0) {
                    bail!("blocked DequantizeLinear (block_size) is not read");
                }
                Some(dequantize(&x, &scale, zero.as_ref(), attr(node, "axis").map_or(1, |a| a.i))?)
            }
            "Transpose" => {
                let perm: Vec<usize> = match attr(node, "perm") {
                    Some(a) => a.ints.iter().map(|&p| p as usize).collect(),
                    None => (0..x.dims.len()).rev().collect(),
                };
                Some(transpose(&x, &perm)?)
            }
            "Reshape" => match self.input(node, 1)? {
                Some(shape) => Some(reshape(x, &shape)?),
                None => None,
            },
            _ => None,
        })
    }

    /// A stored tensor's values (inline or in external data beside the model).
    fn tensor(&self, t: &TensorProto) -> Result<Value> {
        let dims: Vec<usize> = t.dims.iter().map(|&d| usize::try_from(d)).collect::<Result<_, _>>().with_context(|| format!("{}: tensor {} has a negative dimension", self.file.display(), t.name))?;
        let external;
        let raw: &[u8] = if t.data_location == 1 {
            external = self.external(t)?;
            &external
        } else {
            &t.raw_data
        };
        let ints = |width: usize, from: fn(&[u8]) -> i64, stored: &[i64]| -> Data {
            if raw.is_empty() { Data::Int(stored.to_vec()) } else { Data::Int(raw.chunks_exact(width).map(from).collect()) }
        };
        let int32: Vec<i64> = t.int32_data.iter().map(|&x| x as i64).collect();
        let halves = |conv: fn(u16) -> f32| -> Data {
            if raw.is_empty() {
                Data::F32(t.int32_data.iter().map(|&x| conv(x as u16)).collect())
            } else {
                Data::F32(raw.chunks_exact(2).map(|b| conv(u16::from_le_bytes([b[0], b[1]]))).collect())
            }
        };
        let data = match t.data_type {
            dtype::FLOAT if raw.is_empty() => Data::F32(t.float_data.clone()),
            dtype::FLOAT => Data::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()),
            dtype::DOUBLE => Data::F32(raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()),
            dtype::FLOAT16 => halves(|h| half::f16::from_bits(h).to_f32()),
            dtype::BFLOAT16 => halves(|h| half::bf16::from_bits(h).to_f32()),
            dtype::INT8 => ints(1, |b| b[0] as i8 as i64, &int32),
            dtype::UINT8 | BOOL => ints(1, |b| b[0] as i64, &int32),
            INT16 => ints(2, |b| i16::from_le_bytes([b[0], b[1]]) as i64, &int32),
            UINT16 => ints(2, |b| u16::from_le_bytes([b[0], b[1]]) as i64, &int32),
            dtype::INT32 => ints(4, |b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64, &int32),
            dtype::INT64 => ints(8, |b| i64::from_le_bytes(b.try_into().expect("8 bytes")), &t.int64_data),
            other => bail!("{}: tensor {} has element type {other}, which shrink does not read", self.file.display(), t.name),
        };
        let v = Value { dims, data };
        let want: usize = v.dims.iter().product();
        if v.len() != want {
            bail!("{}: tensor {} holds {} values for shape {:?}", self.file.display(), t.name, v.len(), v.dims);
        }
        Ok(v)
    }

    /// The bytes of a tensor kept in a file beside the model (`location`, `offset`, `length`).
    fn external(&self, t: &TensorProto) -> Result<Vec<u8>> {
        let key = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.as_str());
        let location = key("location").with_context(|| format!("{}: tensor {} is external but names no location", self.file.display(), t.name))?;
        // Only files in the model's own folder: an ONNX file must not read arbitrary paths.
        if Path::new(location).components().any(|c| !matches!(c, Component::Normal(_))) {
            bail!("{}: tensor {}'s external data {location} is outside the model's folder", self.file.display(), t.name);
        }
        let path = self.file.parent().unwrap_or(Path::new(".")).join(location);
        let num = |k: &str| key(k).map(|v| v.parse::<u64>()).transpose().with_context(|| format!("{}: tensor {}: bad external {k}", self.file.display(), t.name));
        let (offset, length) = (num("offset")?.unwrap_or(0), num("length")?);
        let mut f = crate::folder::open_regular(&path, "external tensor data")?;
        let size = f.metadata()?.len();
        let length = length.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > size) {
            bail!("{}: tensor {} reads past the end of {} ({size} bytes)", self.file.display(), t.name, path.display());
        }
        let mut bytes = vec![0u8; length as usize];
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(&mut bytes).with_context(|| format!("{}: cannot read", path.display()))?;
        Ok(bytes)
    }
}

// TensorProto.DataType values read only here.
const UINT16: i32 = 4;
const INT16: i32 = 5;
const BOOL: i32 = 9;

pub fn attr<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// A Constant node's value as a tensor.
fn constant(node: &NodeProto) -> Result<Option<TensorProto>> {
    let Some(a) = node.attribute.first() else { bail!("a Constant with no value") };
    let int64 = |dims: Vec<i64>, v: Vec<i64>| TensorProto { dims, data_type: dtype::INT64, int64_data: v, ..Default::default() };
    Ok(Some(match a.name.as_str() {
        "value" => a.t.clone().context("a Constant's value holds no tensor")?,
        "value_int" => int64(vec![], vec![a.i]),
        "value_ints" => int64(vec![a.ints.len() as i64], a.ints.clone()),
        "value_float" => TensorProto { data_type: dtype::FLOAT, float_data: vec![a.f], ..Default::default() },
        _ => return Ok(None),
    }))
}

fn cast(x: Value, to: i32) -> Option<Value> {
    let data = match to {
        dtype::FLOAT | dtype::DOUBLE => match x.data {
            Data::F32(v) => Data::F32(v),
            Data::Int(v) => Data::F32(v.iter().map(|&q| q as f32).collect()),
        },
        dtype::FLOAT16 => Data::F32(x.f32().iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()),
        dtype::INT64 | dtype::INT32 => match &x.data {
            Data::Int(v) => Data::Int(v.clone()),
            Data::F32(v) => Data::Int(v.iter().map(|&f| f as i64).collect()),
        },
        _ => return None,
    };
    Some(Value { dims: x.dims, data })
}

/// numpy broadcasting of two shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= n { s[i + s.len() - n] } else { 1 };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => bail!("shapes {a:?} and {b:?} do not broadcast ({x} vs {y})"),
        })
        .collect()
}

/// The flat indices into a tensor of shape `dims` broadcast to `out`, in `out`'s order (an odometer with stride 0
/// along broadcast axes), so no index table is stored.
struct Indices {
    out: Vec<usize>,
    strides: Vec<usize>,
    idx: Vec<usize>,
    flat: usize,
    left: usize,
}

impl Indices {
    fn new(dims: &[usize], out: &[usize]) -> Self {
        let pad = out.len() - dims.len();
        let mut strides = vec![0; out.len()];
        let mut s = 1;
        for i in (0..dims.len()).rev() {
            strides[pad + i] = if dims[i] == 1 { 0 } else { s };
            s *= dims[i];
        }
        Self { out: out.to_vec(), strides, idx: vec![0; out.len()], flat: 0, left: out.iter().product() }
    }

    /// Over `src` laid out with these `strides`: the permuted walk Transpose takes.
    fn with_strides(out: &[usize], strides: Vec<usize>) -> Self {
        Self { out: out.to_vec(), strides, idx: vec![0; out.len()], flat: 0, left: out.iter().product() }
    }
}

impl Iterator for Indices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let here = self.flat;
        for ax in (0..self.out.len()).rev() {
            self.idx[ax] += 1;
            self.flat += self.strides[ax];
            if self.idx[ax] < self.out[ax] {
                break;
            }
            self.flat -= self.strides[ax] * self.idx[ax];
            self.idx[ax] = 0;
        }
        Some(here)
    }
}

fn binary(op: &str, x: &Value, y: &Value) -> Result<Value> {
    let dims = broadcast(&x.dims, &y.dims)?;
    let pairs = || Indices::new(&x.dims, &dims).zip(Indices::new(&y.dims, &dims));
    let data = match (&x.data, &y.data) {
        (Data::Int(a), Data::Int(b)) => {
            let f = match op {
                "Mul" => |p: i64, q: i64| p.wrapping_mul(q),
                "Add" => |p: i64, q: i64| p.wrapping_add(q),
                "Sub" => |p: i64, q: i64| p.wrapping_sub(q),
                _ => |p: i64, q: i64| if q == 0 { 0 } else { p / q },
            };
            Data::Int(pairs().map(|(i, j)| f(a[i], b[j])).collect())
        }
        _ => {
            let (a, b) = (x.f32(), y.f32());
            let (a, b) = (&a[..], &b[..]);
            let f = match op {
                "Mul" => |p: f32, q: f32| p * q,
                "Add" => |p: f32, q: f32| p + q,
                "Sub" => |p: f32, q: f32| p - q,
                _ => |p: f32, q: f32| p / q,
            };
            Data::F32(pairs().map(|(i, j)| f(a[i], b[j])).collect())
        }
    };
    Ok(Value { dims, data })
}

/// (x - zero) * scale; scale and zero are scalars or 1-D along `axis`.
pub fn dequantize(x: &Value, scale: &Value, zero: Option<&Value>, axis: i64) -> Result<Value> {
    let q = x.ints().context("DequantizeLinear of a float tensor")?;
    let s = scale.f32();
    let z: Vec<f32> = zero.map(|z| z.f32().into_owned()).unwrap_or_else(|| vec![0.0; s.len()]);
    if z.len() != s.len() {
        bail!("DequantizeLinear: {} scales but {} zero points", s.len(), z.len());
    }
    let rank = x.dims.len() as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    let out = if s.len() == 1 {
        q.iter().map(|&v| (v as f32 - z[0]) * s[0]).collect()
    } else {
        if axis < 0 || axis >= rank || x.dims[axis as usize] != s.len() {
            bail!("DequantizeLinear: {} scales for axis {axis} of shape {:?}", s.len(), x.dims);
        }
        let inner: usize = x.dims[axis as usize + 1..].iter().product();
        q.iter().enumerate().map(|(i, &v)| {
            let c = (i / inner) % s.len();
            (v as f32 - z[c]) * s[c]
        }).collect()
    };
    Ok(Value { dims: x.dims.clone(), data: Data::F32(out) })
}

fn transpose(x: &Value, perm: &[usize]) -> Result<Value> {
    let rank = x.dims.len();
    let mut seen = vec![false; rank];
    if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
        bail!("Transpose: perm {perm:?} for shape {:?}", x.dims);
    }
    let dims: Vec<usize> = perm.iter().map(|&p| x.dims[p]).collect();
    // The source tensor's strides, in the output's axis order.
    let mut src = vec![1; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        src[i] = src[i + 1] * x.dims[i + 1];
    }
    let order = || Indices::with_strides(&dims, perm.iter().map(|&p| src[p]).collect());
    let data = match &x.data {
        Data::F32(v) => Data::F32(order().map(|i| v[i]).collect()),
        Data::Int(v) => Data::Int(order().map(|i| v[i]).collect()),
    };
    Ok(Value { dims, data })
}

/// Reshape with ONNX's 0 (keep) and -1 (infer).
fn reshape(x: Value, shape: &Value) -> Result<Value> {
    let spec = shape.ints().context("Reshape's shape is not integers")?;
    let total = x.len();
    let mut dims = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            0 => dims.push(*x.dims.get(i).context("Reshape: 0 past the input's rank")?),
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            d if d > 0 => dims.push(d as usize),
            _ => bail!("Reshape: shape {spec:?}"),
        }
    }
    let known: usize = dims.iter().product();
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            bail!("Reshape: {total} values into {spec:?}");
        }
        dims[i] = total / known;
    }
    if dims.iter().product::<usize>() != total {
        bail!("Reshape: {total} values into {spec:?}");
    }
    Ok(Value { dims, data: x.data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(dims: &[usize], v: &[f32]) -> Value {
        Value { dims: dims.to_vec(), data: Data::F32(v.to_vec()) }
    }

    #[test]
    fn broadcasting_multiplies_rows_and_columns() {
        let x = f(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(binary("Mul", &x, &f(&[2, 1], &[10.0, 100.0])).unwrap(), f(&[2, 3], &[10.0, 20.0, 30.0, 400.0, 500.0, 600.0]));
        assert_eq!(binary("Mul", &x, &f(&[1, 3], &[1.0, 0.0, -1.0])).unwrap(), f(&[2, 3], &[1.0, 0.0, -3.0, 4.0, 0.0, -6.0]));
        assert_eq!(binary("Sub", &x, &f(&[], &[1.0])).unwrap(), f(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
        assert!(binary("Mul", &x, &f(&[2], &[1.0, 2.0])).is_err());
    }

    #[test]
    fn transpose_and_dequantize_match_their_definitions() {
        let x = f(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(transpose(&x, &[1, 0]).unwrap(), f(&[3, 2], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
        let q = Value { dims: vec![2, 3], data: Data::Int(vec![-2, 0, 2, 4, 6, 8]) };
        // Per column (axis 1) and per tensor.
        let by_col = dequantize(&q, &f(&[3], &[1.0, 0.5, 0.25]), Some(&Value { dims: vec![3], data: Data::Int(vec![0, 0, 2]) }), 1).unwrap();
        assert_eq!(by_col, f(&[2, 3], &[-2.0, 0.0, 0.0, 4.0, 3.0, 1.5]));
        assert_eq!(dequantize(&q, &f(&[], &[2.0]), None, 1).unwrap(), f(&[2, 3], &[-4.0, 0.0, 4.0, 8.0, 12.0, 16.0]));
        let r = reshape(x, &Value { dims: vec![2], data: Data::Int(vec![0, -1]) }).unwrap();
        assert_eq!(r.dims, vec![2, 3]);
    }
}
