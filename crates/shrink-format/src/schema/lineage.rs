//! The lineage record: config.json `shrink_lineage`, one step per shrink stage that made the folder, oldest first.
//! A stage copies its input's record and appends what it ran, with which parameters, on which input (by content
//! hash) and what it measured. It replaces the per-command provenance blobs; a folder's history reads in one place
//! and a pipeline can key finished stages on the input hash.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One stage's entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    /// The command that ran (`quantize`, `prune`, ...).
    pub stage: String,
    /// Version of shrink that ran it.
    pub shrink: String,
    pub input: Input,
    /// The stage's settings, as its options name them.
    pub parameters: Value,
    /// What it measured (sparsity reached, calibration tokens, dev scores, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metrics: Map<String, Value>,
}

/// The folder a stage read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Input {
    /// As given on the command line (a hub id resolves to its local folder).
    pub path: String,
    /// `folder_hash` of it.
    pub hash: String,
}

impl Step {
    /// `stage` run with `parameters` on the folder `input` (hashed now, before anything is written).
    pub fn new(stage: &str, input: &Path, parameters: Value) -> Result<Self> {
        Ok(Self {
            stage: stage.into(),
            shrink: env!("CARGO_PKG_VERSION").into(),
            input: Input { path: input.display().to_string(), hash: folder_hash(input)? },
            parameters,
            metrics: Map::new(),
        })
    }

    /// Adds a measurement.
    pub fn metric(mut self, name: &str, value: impl Serialize) -> Self {
        self.metrics.insert(name.into(), serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }
}

/// 64-bit FNV-1a state.
struct Fnv(u64);

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Content hash of a model folder: FNV-1a 64 over each regular top-level file in name order (its name, length and
/// bytes), so a renamed, edited or extra file changes it. For cache keys, not security.
pub fn folder_hash(dir: &Path) -> Result<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the folder", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name())
        .collect();
    files.sort();
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let mut buf = vec![0u8; 1 << 20];
    for name in files {
        let path = dir.join(&name);
        let mut f = std::fs::File::open(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        h.write(name.as_encoded_bytes());
        h.write(&f.metadata()?.len().to_le_bytes());
        loop {
            let n = f.read(&mut buf).with_context(|| format!("{}: cannot read", path.display()))?;
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
        }
    }
    Ok(format!("fnv1a64:{:016x}", h.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_follows_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.json"), "{}").unwrap();
        std::fs::write(d.join("model.safetensors"), [1u8, 2, 3]).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap(); // folders are not part of the model
        let a = folder_hash(d).unwrap();
        assert!(a.starts_with("fnv1a64:") && a.len() == 8 + 16, "{a}");
        assert_eq!(folder_hash(d).unwrap(), a);
        std::fs::write(d.join("model.safetensors"), [1u8, 2, 4]).unwrap();
        let b = folder_hash(d).unwrap();
        assert_ne!(a, b);
        std::fs::rename(d.join("config.json"), d.join("config2.json")).unwrap();
        assert_ne!(folder_hash(d).unwrap(), b);
        // The empty input's hash is FNV-1a's offset basis.
        assert_eq!(folder_hash(tempfile::tempdir().unwrap().path()).unwrap(), "fnv1a64:cbf29ce484222325");
        let e = folder_hash(&d.join("missing")).unwrap_err().to_string();
        assert!(e.contains("missing: cannot list the folder"), "{e}");
    }

    #[test]
    fn step_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = Step::new("prune", dir.path(), serde_json::json!({"heads": 0.5})).unwrap().metric("kept", 3);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Step>(&text).unwrap(), s);
        assert_eq!(s.metrics["kept"], 3);
    }
}
