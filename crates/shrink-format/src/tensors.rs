//! A safetensors file, memory-mapped and validated once; tensors are looked up by their HF name without a `bert.`
//! prefix and read as f32 (from F32/F16/BF16), i8 or u8, each with its shape and finiteness checked and the file
//! and tensor named in every error.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::{Dtype, SafeTensors};

pub struct TensorFile {
    pub file: PathBuf,
    map: memmap2::Mmap,
    /// Normalised name -> (dtype, shape, byte range in `map`).
    index: HashMap<String, (Dtype, Vec<usize>, std::ops::Range<usize>)>,
}

impl TensorFile {
    pub fn open(file: &Path) -> Result<Self> {
        let f = std::fs::File::open(file).with_context(|| format!("{}: cannot open weights", file.display()))?;
        // SAFETY: read-only map; model files are not modified while a model is loaded.
        let map = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("{}: cannot map weights", file.display()))?;
        let bad = |e: safetensors::SafeTensorError| {
            anyhow!("{}: not a valid safetensors file (truncated or corrupt?): {e}", file.display())
        };
        SafeTensors::deserialize(&map).map_err(bad)?; // bounds and overlap checks
        let (header, meta) = SafeTensors::read_metadata(&map).map_err(bad)?;
        let base = 8 + header;
        let index = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (s, e) = info.data_offsets;
                (normalize_name(&name), (info.dtype, info.shape.clone(), base + s..base + e))
            })
            .collect();
        Ok(Self { file: file.to_path_buf(), map, index })
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
        Ok((*dtype, &self.map[range.clone()]))
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
    /// H_l and F_l): biases [N], weights [N, K] (packed int4: [N, K/2]). The error names the file, tensor and layer.
    pub fn check_layer_shapes(&self, cfg: &crate::Config) -> Result<()> {
        let c = cfg.hidden_size;
        for l in 0..cfg.num_hidden_layers {
            let (a, f) = (cfg.attention_width(l), cfg.ffn(l));
            let linears =
                [("attention.self.query", a, c), ("attention.self.key", a, c), ("attention.self.value", a, c),
                 ("attention.output.dense", c, a), ("intermediate.dense", f, c), ("output.dense", c, f)];
            for (name, n, k) in linears {
                let (w, b) = (format!("encoder.layer.{l}.{name}.weight"), format!("encoder.layer.{l}.{name}.bias"));
                let k = if self.dtype(&w) == Some(Dtype::U8) { k / 2 } else { k };
                for (t, want) in [(&w, vec![n, k]), (&b, vec![n])] {
                    let got = self.shape(t).ok_or_else(|| anyhow!("{}: tensor {t} is missing", self.file.display()))?;
                    if got != want.as_slice() {
                        bail!(
                            "{}: tensor {t} has shape {got:?} but config.json implies {want:?} (layer {l}: {} heads, FFN width {f})",
                            self.file.display(),
                            cfg.heads(l)
                        );
                    }
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
            F32Data::Mapped { file, range } => unsafe { file.map[range.clone()].align_to::<f32>().1 },
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

/// `bert.encoder...` -> `encoder...`; old `LayerNorm.gamma/beta` -> `weight/bias`.
pub fn normalize_name(name: &str) -> String {
    let n = name.strip_prefix("bert.").unwrap_or(name);
    if let Some(stem) = n.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = n.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        n.to_string()
    }
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
