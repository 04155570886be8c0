//! GGUF files (llama.cpp's format, versions 2 and 3), read-only: the header, the metadata, the tensor infos, and
//! every tensor dequantized to f32 through `blocks::TYPES` (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K ..
//! Q6_K). The file is memory-mapped; every offset and size is
//! checked against the file before use, and errors name the file and the field or tensor at fault.
//!
//! Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata (key, u32 type, value),
//! the tensor infos (name, u32 dims, u64 x dims with the fastest-varying first, u32 ggml type, u64 offset into the
//! data), then the data, starting at the next multiple of `general.alignment` (default 32).

pub mod blocks;
pub mod from_hf;
pub mod kquants;
pub mod tokenizer;
pub mod write;
pub mod ours;
mod value;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::folder::open_regular;
pub use blocks::{type_info, TypeInfo};
pub use value::Value;
use value::Cursor;

const MAGIC: &[u8; 4] = b"GGUF";

/// A decoder stage's folder (a `shrink run` or `shrink compress` stage) holds its model as this one file.
pub const FOLDER_FILE: &str = "model.gguf";

/// The GGUF file `path` names: itself, or the `FOLDER_FILE` of a stage folder.
pub fn file_of(path: &Path) -> Option<PathBuf> {
    match path.is_dir() {
        true => Some(path.join(FOLDER_FILE)).filter(|f| f.is_file()),
        false => Some(path.to_path_buf()).filter(|p| p.extension().is_some_and(|e| e == "gguf")),
    }
}
const DEFAULT_ALIGNMENT: u64 = 32;

/// One tensor's entry: `dims` fastest-varying first (ggml's ne), so a [out, in] Linear is `[in, out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub kind: &'static TypeInfo,
    /// Byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    pub fn elems(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// The dimensions as PyTorch writes them (slowest first): a Linear's [out, in].
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    map: memmap2::Mmap,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_regular(path, "GGUF file")?;
        // SAFETY: the map is read-only; a file truncated under it is the caller's contract, as for safetensors.
        let map = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("{}: cannot map the GGUF file", path.display()))?;
        let (version, metadata, tensors) = parse(&map).with_context(|| format!("{}: not a readable GGUF file", path.display()))?;
        Ok(Self { path: path.to_path_buf(), version, metadata, tensors, map })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A metadata value that must be there, as an unsigned integer.
    pub fn uint(&self, key: &str) -> Result<u64> {
        self.get(key).and_then(Value::as_u64).with_context(|| format!("{}: metadata {key} missing or not an integer", self.path.display()))
    }

    pub fn float(&self, key: &str) -> Result<f64> {
        self.get(key).and_then(Value::as_f64).with_context(|| format!("{}: metadata {key} missing or not a number", self.path.display()))
    }

    pub fn string(&self, key: &str) -> Result<&str> {
        self.get(key).and_then(Value::as_str).with_context(|| format!("{}: metadata {key} missing or not a string", self.path.display()))
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name).with_context(|| format!("{}: no tensor {name}", self.path.display()))
    }

    /// The stored bytes of a tensor.
    pub fn bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.map[t.start..t.start + t.len]
    }

    /// Drops the mapped pages of a tensor from memory (read from the file again if touched): a loader that has copied
    /// it calls this, so loading peaks at about the model once, not the model plus the file.
    pub fn release(&self, t: &TensorInfo) {
        #[cfg(unix)]
        // SAFETY: the map is private and read-only, so dropped pages come back from the file unchanged; failure
        // only leaves them resident.
        let _ = unsafe { self.map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, t.start, t.len) };
    }

    /// Rows `rows` of a tensor (a row is `dims[0]` values), dequantized: the embedding rows of some tokens without
    /// decoding the whole table.
    pub fn dequantize_rows(&self, name: &str, rows: &[usize]) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        let width = t.dims.first().copied().unwrap_or(1) as usize;
        let n_rows = t.elems() / width.max(1);
        let row_bytes = width / t.kind.block_elems * t.kind.block_bytes;
        let mut out = vec![0f32; rows.len() * width];
        for (o, &r) in out.chunks_exact_mut(width).zip(rows) {
            if r >= n_rows {
                bail!("{}: row {r} of {name}, which has {n_rows}", self.path.display());
            }
            t.kind.decode(&self.bytes(t)[r * row_bytes..][..row_bytes], o);
        }
        Ok(out)
    }

    /// A whole tensor as f32, in storage order (`dims[0]` fastest: row-major of `shape()`).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor(name)?;
        let mut out = vec![0f32; t.elems()];
        t.kind.decode(self.bytes(t), &mut out);
        Ok(out)
    }
}

type Parsed = (u32, Vec<(String, Value)>, Vec<TensorInfo>);

fn parse(b: &[u8]) -> Result<Parsed> {
    let mut c = Cursor::new(b);
    if c.take(4).context("the header")? != MAGIC {
        bail!("no GGUF magic (the file starts with {:02x?})", &b[..b.len().min(4)]);
    }
    let version = c.u32().context("the version")?;
    if !(2..=3).contains(&version) {
        bail!("GGUF version {version}: versions 2 and 3 are read");
    }
    let n_tensors = c.u64().context("the tensor count")?;
    let n_kv = c.u64().context("the metadata count")?;
    // Each entry takes at least 8 bytes on disk: a count beyond that cannot be honest.
    for (what, n) in [("tensors", n_tensors), ("metadata entries", n_kv)] {
        if n > (b.len() / 8) as u64 {
            bail!("the header claims {n} {what}, more than the file's {} bytes could hold", b.len());
        }
    }
    let mut metadata = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = c.string().with_context(|| format!("metadata entry {i}'s key"))?;
        let value = c.value().with_context(|| format!("metadata {key}"))?;
        metadata.push((key, value));
    }
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => a,
            _ => bail!("general.alignment is {v:?}: expected a power of two"),
        },
    };
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = c.string().with_context(|| format!("tensor {i}'s name"))?;
        let n_dims = c.u32().with_context(|| format!("tensor {name}'s dimension count"))?;
        if n_dims > 4 {
            bail!("tensor {name} has {n_dims} dimensions; ggml has at most 4");
        }
        let dims = (0..n_dims).map(|_| c.u64()).collect::<Result<Vec<_>>>().with_context(|| format!("tensor {name}'s dimensions"))?;
        let kind = c.u32().with_context(|| format!("tensor {name}'s type"))?;
        let offset = c.u64().with_context(|| format!("tensor {name}'s offset"))?;
        raw.push((name, dims, kind, offset));
    }
    let data = (c.pos() as u64).next_multiple_of(alignment);
    let tensors = raw.into_iter().map(|(name, dims, kind, offset)| tensor(b.len(), data, alignment, name, dims, kind, offset)).collect::<Result<_>>()?;
    Ok((version, metadata, tensors))
}

/// One tensor info checked: a known type, whole blocks per row, its bytes aligned and inside the file.
fn tensor(file_len: usize, data: u64, alignment: u64, name: String, dims: Vec<u64>, kind: u32, offset: u64) -> Result<TensorInfo> {
    let Some(info) = type_info(kind) else {
        let known = blocks::TYPES.iter().map(|t| t.name).collect::<Vec<_>>().join(", ");
        match blocks::UNSUPPORTED.iter().find(|(id, _)| *id == kind) {
            Some((_, n)) => bail!("tensor {name} is {n}, which shrink does not read yet (it reads {known})"),
            None => bail!("tensor {name} has ggml type {kind}, unknown (shrink reads {known})"),
        }
    };
    let elems = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).with_context(|| format!("tensor {name}: {dims:?} overflows"))?;
    let width = dims.first().copied().unwrap_or(1);
    if !width.is_multiple_of(info.block_elems as u64) {
        bail!("tensor {name}: rows of {width} values are not whole {} blocks of {}", info.name, info.block_elems);
    }
    if !offset.is_multiple_of(alignment) {
        bail!("tensor {name}: offset {offset} is not a multiple of the alignment {alignment}");
    }
    let len = (elems / info.block_elems as u64).checked_mul(info.block_bytes as u64);
    let start = data.checked_add(offset);
    match (start, len) {
        (Some(s), Some(l)) if s.checked_add(l).is_some_and(|e| e <= file_len as u64) => {
            Ok(TensorInfo { name, dims, kind: info, start: s as usize, len: l as usize })
        }
        _ => bail!("tensor {name}: {dims:?} {} at offset {offset} runs past the end of the file ({file_len} bytes)", info.name),
    }
}

#[cfg(test)]
mod tests;
