//! A safetensors file, memory-mapped and validated once; tensors are looked up by their canonical name
//! (`arch::canonical`: BERT's HF spelling, whatever family wrote the file) and read as f32 (from F32/F16/BF16),
//! i8 or u8, each with its shape and finiteness checked and the file and tensor named in every error.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::{Dtype, SafeTensors};

pub struct TensorFile {
    pub file: PathBuf,
    bytes: Bytes,
    /// Normalised name -> (dtype, shape, byte range in `bytes`).
    index: HashMap<String, (Dtype, Vec<usize>, std::ops::Range<usize>)>,
}

/// How a weights file is held after it is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Load {
    /// Memory-mapped: pages are shared with the page cache and read when first used. The file must not shrink
    /// while it is open: touching a page past its new end kills the process with SIGBUS.
    #[default]
    Map,
    /// Read whole into memory: after `open` the process no longer depends on the file.
    Copy,
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Copied(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Copied(v) => v,
        }
    }
}

impl TensorFile {
    /// Maps `file` (`Load::Map`).
    pub fn open(file: &Path) -> Result<Self> {
        Self::open_with(file, Load::Map)
    }

    pub fn open_with(file: &Path, load: Load) -> Result<Self> {
        let f = crate::folder::open_regular(file, "weights")?;
        let bytes = match load {
            // SAFETY: read-only map; see `Load::Map` for what a file shrinking under it does.
            Load::Map => Bytes::Mapped(
                unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("{}: cannot map weights", file.display()))?,
            ),
            Load::Copy => Bytes::Copied(read_all(f).with_context(|| format!("{}: cannot read weights", file.display()))?),
        };
        let bad = |e: String| anyhow!("{}: not a valid safetensors file (truncated or corrupt?): {e}", file.display());
        let (base, mut tensors) = header(&bytes).map_err(bad)?;
        SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?; // whatever `header` does not check
        // Two spellings of one tensor (`bert.X` and `X`, `.gamma` and `.weight`, DistilBERT's `q_lin` and BERT's
        // `self.query`) would leave which one is used to the hash order: refused, naming both. Sorted, so the same
        // file always gives the same message.
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let mut index = HashMap::new();
        let mut spelling: HashMap<String, String> = HashMap::new();
        for (name, info) in tensors {
            let key = crate::arch::canonical(&name);
            if let Some(first) = spelling.get(&key) {
                bail!("{}: tensors {first} and {name} are both {key} (drop one of them)", file.display());
            }
            let (s, e) = info.data_offsets;
            index.insert(key.clone(), (info.dtype, info.shape, base + s..base + e));
            spelling.insert(key, name);
        }
        Ok(Self { file: file.to_path_buf(), bytes, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.index.get(name).map(|t| t.0)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|t| t.1.as_slice())
    }

    /// Raw bytes, checking the shape config.json implies.
    fn bytes(&self, name: &str, shape: &[usize]) -> Result<(Dtype, &[u8])> {
        let (dtype, got, range) =
            self.index.get(name).ok_or_else(|| anyhow!("{}: tensor {name} is missing", self.file.display()))?;
        if got != shape {
            bail!("{}: tensor {name} has shape {got:?} but config.json implies {shape:?}", self.file.display());
        }
        Ok((*dtype, &self.bytes[range.clone()]))
    }

    /// A floating tensor as f32, borrowed straight from the map when it is stored as aligned F32.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Cow<'_, [f32]>> {
        let (dtype, data) = self.bytes(name, shape)?;
        let values: Cow<[f32]> = match dtype {
            Dtype::F32 => match unsafe { data.align_to::<f32>() } {
                // SAFETY: any bit pattern is a valid f32; the middle part is aligned and whole.
                ([], v, []) if cfg!(target_endian = "little") => Cow::Borrowed(v),
                _ => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            },
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => bail!("{}: tensor {name} is {other:?}, expected a floating type", self.file.display()),
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!("{}: tensor {name} holds a non-finite value ({}) at flat index {i}", self.file.display(), values[i]);
        }
        Ok(values)
    }

    /// An I8 tensor (quantized weights).
    pub fn i8(&self, name: &str, shape: &[usize]) -> Result<&[i8]> {
        match self.bytes(name, shape)? {
            // SAFETY: i8 and u8 have the same size and alignment.
            (Dtype::I8, d) => Ok(unsafe { std::slice::from_raw_parts(d.as_ptr().cast(), d.len()) }),
            (other, _) => bail!("{}: tensor {name} is {other:?}, expected I8", self.file.display()),
        }
    }

    /// A U8 tensor (packed int4 nibbles).
    pub fn u8(&self, name: &str, shape: &[usize]) -> Result<&[u8]> {
        match self.bytes(name, shape)? {
            (Dtype::U8, d) => Ok(d),
            (other, _) => bail!("{}: tensor {name} is {other:?}, expected U8", self.file.display()),
        }
    }

    /// An F16 tensor as stored (no widening).
    pub fn f16(&self, name: &str, shape: &[usize]) -> Result<Vec<half::f16>> {
        match self.bytes(name, shape)? {
            (Dtype::F16, d) => Ok(d.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]])).collect()),
            (other, _) => bail!("{}: tensor {name} is {other:?}, expected F16", self.file.display()),
        }
    }

    /// A U16 tensor (sparse column indices and row counts).
    pub fn u16(&self, name: &str, shape: &[usize]) -> Result<Vec<u16>> {
        match self.bytes(name, shape)? {
            (Dtype::U16, d) => Ok(d.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()),
            (other, _) => bail!("{}: tensor {name} is {other:?}, expected U16", self.file.display()),
        }
    }
}

impl TensorFile {
    /// Checks every encoder Linear against the per-layer widths config.json gives (pruned layers have their own
    /// H_l and F_l), holding the tensors `quant::layout` lists for the format `quantization.layers` names (fp32
    /// without one). The error names the file, tensor and layer.
    pub fn check_layer_shapes(&self, cfg: &crate::Config) -> Result<()> {
        use crate::quant::{layout, Format};
        for (l, name, n, k) in cfg.encoder_linears() {
            let format = cfg.quantization.as_ref().and_then(|q| q.layers.get(&name).copied()).unwrap_or(Format::FP32);
            let want = layout::linear(format, &name, n, k, self)?;
            for (t, want) in want {
                let got = self.shape(&t).ok_or_else(|| anyhow!("{}: tensor {t} is missing", self.file.display()))?;
                if got != want.as_slice() {
                    bail!(
                        "{}: tensor {t} has shape {got:?} but config.json implies {want:?} (layer {l}: {} heads, FFN width {})",
                        self.file.display(),
                        cfg.heads(l),
                        cfg.ffn(l)
                    );
                }
            }
        }
        Ok(())
    }
}

/// A floating tensor's values for as long as they are needed: borrowed from a shared map when the file stores them
/// as aligned F32 (nothing copied, pages shared with the page cache), else converted into an owned buffer.
pub enum F32Data {
    Mapped { file: Arc<TensorFile>, range: std::ops::Range<usize> },
    Owned(Vec<f32>),
}

impl std::ops::Deref for F32Data {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            // SAFETY: `range` was checked to be aligned, whole F32 data when this value was made.
            F32Data::Mapped { file, range } => unsafe { file.bytes[range.clone()].align_to::<f32>().1 },
            F32Data::Owned(v) => v,
        }
    }
}

impl TensorFile {
    /// `f32` (same checks), kept without a copy when the file layout allows.
    pub fn f32_shared(self: &Arc<Self>, name: &str, shape: &[usize]) -> Result<F32Data> {
        Ok(match self.f32(name, shape)? {
            Cow::Borrowed(_) => F32Data::Mapped { file: Arc::clone(self), range: self.index[name].2.clone() },
            Cow::Owned(v) => F32Data::Owned(v),
        })
    }
}

/// The whole file, failing cleanly when memory is short.
fn read_all(mut f: std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let len = usize::try_from(f.metadata()?.len()).map_err(|_| std::io::Error::other("larger than the address space"))?;
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| std::io::Error::other(format!("not enough memory for {len} bytes")))?;
    f.read_to_end(&mut v)?;
    Ok(v)
}

/// The header's tensors, each checked against the data before anything reads it, so an error names the tensor
/// (safetensors' own checks do not always): size = dtype x shape, offsets inside the data, no overlap, no gap,
/// nothing after the last tensor. Returns where the data starts and the tensors with offsets relative to it.
fn header(bytes: &[u8]) -> Result<(usize, Vec<(String, safetensors::tensor::TensorInfo)>), String> {
    let len = bytes.len();
    let n = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let n = n.ok_or(format!("{len} bytes, shorter than the 8-byte header length"))?;
    let base = usize::try_from(n).ok().and_then(|n| n.checked_add(8)).filter(|&b| b <= len);
    let base = base.ok_or(format!("a header of {n} bytes runs past the end of the file ({len} bytes)"))?;
    let json: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..base]).map_err(|e| format!("header is not a JSON object: {e}"))?;
    let mut tensors = Vec::new();
    for (name, v) in json.into_iter().filter(|(name, _)| name != "__metadata__") {
        let info: safetensors::tensor::TensorInfo = serde_json::from_value(v).map_err(|e| format!("tensor {name}: {e}"))?;
        let (s, e) = info.data_offsets;
        let bits = info.shape.iter().try_fold(info.dtype.bitsize(), |a, &d| a.checked_mul(d));
        let size = bits.filter(|b| b % 8 == 0).map(|b| b / 8);
        let size = size.ok_or(format!("tensor {name}: {:?} {:?} is not a whole number of bytes below 2^64", info.dtype, info.shape))?;
        let data = len - base;
        if e < s || e > data {
            return Err(format!("tensor {name}: data_offsets [{s}, {e}] are outside the {data} bytes of data"));
        }
        if e - s != size {
            return Err(format!("tensor {name}: data_offsets [{s}, {e}] hold {} bytes but {:?} {:?} is {size}", e - s, info.dtype, info.shape));
        }
        tensors.push((name, info));
    }
    tensors.sort_by_key(|(_, i)| i.data_offsets);
    let (mut end, mut last) = (0, None::<&str>);
    for (name, info) in &tensors {
        let (s, e) = info.data_offsets;
        match last {
            Some(prev) if s < end => return Err(format!("tensors {prev} and {name} overlap")),
            _ if s != end => return Err(format!("{} unused bytes before tensor {name}", s - end)),
            _ => (end, last) = (e, Some(name.as_str())),
        }
    }
    if end != len - base {
        return Err(format!("{} bytes after the last tensor {}", len - base - end, last.unwrap_or("(none)")));
    }
    Ok((base, tensors))
}

/// One tensor to serialise: name, shape, dtype and little-endian bytes.
pub struct OwnedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub bytes: Vec<u8>,
}

impl OwnedTensor {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, v: &[f32]) -> Self {
        Self { name: name.into(), shape, dtype: Dtype::F32, bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    pub fn i8(name: impl Into<String>, shape: Vec<usize>, v: &[i8]) -> Self {
        Self { name: name.into(), shape, dtype: Dtype::I8, bytes: v.iter().map(|&x| x as u8).collect() }
    }
    pub fn u8(name: impl Into<String>, shape: Vec<usize>, v: Vec<u8>) -> Self {
        Self { name: name.into(), shape, dtype: Dtype::U8, bytes: v }
    }
    pub fn u16(name: impl Into<String>, shape: Vec<usize>, v: &[u16]) -> Self {
        Self { name: name.into(), shape, dtype: Dtype::U16, bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    /// Rounds to the nearest f16.
    pub fn f16(name: impl Into<String>, shape: Vec<usize>, v: &[f32]) -> Self {
        let bytes = v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        Self { name: name.into(), shape, dtype: Dtype::F16, bytes }
    }
}

/// safetensors bytes, tensors sorted by name as HF writes them.
pub fn serialize(mut tensors: Vec<OwnedTensor>) -> Result<Vec<u8>> {
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let views = tensors
        .iter()
        .map(|t| Ok((t.name.clone(), safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    Ok(safetensors::serialize(views, Some(meta))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file from a header written by hand (offsets as given) and `data` bytes.
    fn raw(header: &str, data: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        b
    }

    fn open_err(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("model.safetensors");
        std::fs::write(&f, bytes).unwrap();
        format!("{:#}", TensorFile::open(&f).err().expect("should not open"))
    }

    #[test]
    fn bad_offsets_name_the_tensor() {
        let t = |name: &str, shape: usize, s: usize, e: usize| format!("\"{name}\":{{\"dtype\":\"F32\",\"shape\":[{shape}],\"data_offsets\":[{s},{e}]}}");
        let cases = [
            (format!("{{{},{}}}", t("a", 2, 0, 8), t("b", 2, 8, 16)), 12, "tensor b: data_offsets [8, 16] are outside the 12 bytes of data"),
            (format!("{{{},{}}}", t("a", 2, 0, 8), t("b", 2, 4, 12)), 12, "tensors a and b overlap"),
            (format!("{{{},{}}}", t("a", 3, 0, 8), t("b", 2, 8, 16)), 16, "tensor a: data_offsets [0, 8] hold 8 bytes but F32 [3] is 12"),
            (format!("{{{},{}}}", t("a", 2, 0, 8), t("b", 2, 12, 20)), 20, "4 unused bytes before tensor b"),
            (format!("{{{}}}", t("a", 2, 0, 8)), 10, "2 bytes after the last tensor a"),
        ];
        for (header, data, want) in cases {
            let e = open_err(&raw(&header, data));
            assert!(e.contains("model.safetensors: not a valid safetensors file") && e.contains(want), "{header}: {e}");
        }
        assert!(open_err(b"\x00\x00").contains("2 bytes, shorter than the 8-byte header length"));
        assert!(open_err(&u64::MAX.to_le_bytes()).contains("runs past the end of the file"));
    }

    #[test]
    fn two_spellings_of_one_tensor_are_refused() {
        for (a, b) in [("bert.encoder.x.weight", "encoder.x.weight"), ("encoder.LayerNorm.gamma", "encoder.LayerNorm.weight"),
            ("transformer.layer.0.ffn.lin1.bias", "encoder.layer.0.intermediate.dense.bias")] {
            let bytes = serialize(vec![OwnedTensor::f32(a, vec![2], &[1.0, 2.0]), OwnedTensor::f32(b, vec![2], &[3.0, 4.0])]).unwrap();
            let e = open_err(&bytes);
            let (first, second) = if a < b { (a, b) } else { (b, a) };
            assert!(e.contains(&format!("tensors {first} and {second} are both {}", crate::arch::canonical(a))), "{e}");
        }
    }

    #[test]
    fn copied_weights_outlive_changes_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("model.safetensors");
        let values: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        std::fs::write(&f, serialize(vec![OwnedTensor::f32("w", vec![1000], &values)]).unwrap()).unwrap();
        let copied = Arc::new(TensorFile::open_with(&f, Load::Copy).unwrap());
        let shared = copied.f32_shared("w", &[1000]).unwrap();
        // Truncating a mapped file under a reader is SIGBUS; a copy does not see it at all.
        std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(8).unwrap();
        assert_eq!(&*shared, values.as_slice());
        assert_eq!(&*copied.f32("w", &[1000]).unwrap(), values.as_slice());
    }
}
