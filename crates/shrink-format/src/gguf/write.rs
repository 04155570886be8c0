//! Writing GGUF version 3: the metadata and tensors given, data aligned to `general.alignment` (32 unless the
//! metadata says otherwise). The file appears whole or not at all: it is written beside its destination under a
//! temp name and renamed into place.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{TypeInfo, Value, DEFAULT_ALIGNMENT, MAGIC};

/// One tensor to write: `dims` fastest-varying first (ggml's order), `data` whole blocks of `kind`.
pub struct Tensor<'a> {
    pub name: String,
    pub dims: Vec<u64>,
    pub kind: &'static TypeInfo,
    pub data: std::borrow::Cow<'a, [u8]>,
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// The value without its type id (an array's items share one, written once).
    fn put(&self, key: &str, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.push(*v as u8),
            Value::U16(v) => out.extend(v.to_le_bytes()),
            Value::I16(v) => out.extend(v.to_le_bytes()),
            Value::U32(v) => out.extend(v.to_le_bytes()),
            Value::I32(v) => out.extend(v.to_le_bytes()),
            Value::F32(v) => out.extend(v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::Str(s) => put_str(s, out),
            Value::Array(items) => {
                let item = items.first().map_or(0, Value::type_id);
                if items.iter().any(|v| v.type_id() != item) {
                    bail!("metadata {key}: an array's items must share one type");
                }
                out.extend(item.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for v in items {
                    v.put(key, out)?;
                }
            }
            Value::U64(v) => out.extend(v.to_le_bytes()),
            Value::I64(v) => out.extend(v.to_le_bytes()),
            Value::F64(v) => out.extend(v.to_le_bytes()),
        }
        Ok(())
    }
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// The whole file's bytes.
pub fn encode(metadata: &[(String, Value)], tensors: &[Tensor]) -> Result<Vec<u8>> {
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => v.as_u64().filter(|a| a.is_power_of_two()).with_context(|| format!("general.alignment is {v:?}: expected a power of two"))?,
    } as usize;
    let mut out = Vec::new();
    out.extend(MAGIC);
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(k, &mut out);
        out.extend(v.type_id().to_le_bytes());
        v.put(k, &mut out)?;
    }
    let mut offset = 0usize;
    for t in tensors {
        let elems = t.dims.iter().product::<u64>() as usize;
        let width = t.dims.first().copied().unwrap_or(1) as usize;
        if !width.is_multiple_of(t.kind.block_elems) || t.data.len() != elems / t.kind.block_elems * t.kind.block_bytes {
            bail!("tensor {}: {} bytes of {} do not hold {:?}", t.name, t.data.len(), t.kind.name, t.dims);
        }
        put_str(&t.name, &mut out);
        out.extend((t.dims.len() as u32).to_le_bytes());
        t.dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(t.kind.id.to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset = (offset + t.data.len()).next_multiple_of(alignment);
    }
    for t in tensors {
        out.resize(out.len().next_multiple_of(alignment), 0);
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}

/// Writes `path` whole (temp file, then rename); never over `keep`, the file the tensors were read from.
pub fn write(path: &Path, keep: &Path, metadata: &[(String, Value)], tensors: &[Tensor]) -> Result<()> {
    if let (Ok(a), Ok(b)) = (path.canonicalize(), keep.canonicalize()) {
        if a == b {
            bail!("{}: is the input file; name another output", path.display());
        }
    }
    let bytes = encode(metadata, tensors)?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".shrink-tmp-").tempfile_in(dir).with_context(|| format!("{}: cannot create a temp file", dir.display()))?;
    tmp.write_all(&bytes).and_then(|_| tmp.as_file().sync_all()).with_context(|| format!("{}: cannot write", path.display()))?;
    // tempfile creates 0600; a model file is as readable as any other the user writes.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(path).map_err(|e| e.error).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}
