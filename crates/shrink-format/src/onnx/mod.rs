//! ONNX files: the protobuf messages (`proto`, shared with shrink-export's writer), a graph's constant values
//! (`values`) and the import of a BERT-family encoder graph into a model folder (`import`). `cached` is how every
//! command takes a `.onnx` file where it takes a folder: imported once, keyed by content, into shrink's cache.

mod import;
pub mod proto;
pub mod values;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use import::{import, read_model, Imported};

use crate::folder::{holds_model, OutDir, TOKENIZER_FILE};
use crate::schema::lineage::{file_hash, hash_parts};

/// Whether `path` names an ONNX file (by its extension).
pub fn is_onnx(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// shrink's cache: `$SHRINK_CACHE`, else `$XDG_CACHE_HOME/shrink`, else `~/.cache/shrink`.
pub fn cache_root() -> Result<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("SHRINK_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("shrink")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/shrink")))
        .context("no cache folder: set SHRINK_CACHE (or HOME)")
}

/// The model folder of an ONNX file: imported on first use into `cache_root()/onnx/KEY`, KEY hashing the file,
/// the tokenizer.json beside it and shrink's version, so an edited file imports again and an unchanged one never
/// does. The folder is written whole or not at all (`OutDir`).
pub fn cached(file: &Path) -> Result<PathBuf> {
    let tokenizer = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join(TOKENIZER_FILE);
    if !tokenizer.is_file() {
        bail!(
            "{}: no {TOKENIZER_FILE} beside it; an ONNX graph holds no tokenizer, so put the model's {TOKENIZER_FILE} in the same \
             folder (or `shrink convert {} --out DIR` and add one to DIR)",
            file.display(),
            file.display()
        );
    }
    let (model, tok) = (file_hash(file)?, file_hash(&tokenizer)?);
    let key = hash_parts(&[env!("CARGO_PKG_VERSION").as_bytes(), model.as_bytes(), tok.as_bytes()]);
    let parent = cache_root()?.join("onnx");
    std::fs::create_dir_all(&parent).with_context(|| format!("{}: cannot create the cache folder", parent.display()))?;
    // The key's "fnv4x64:" tag would put a colon in a path.
    let dir = parent.join(key.replace(':', "-"));
    if !holds_model(&dir) {
        let r = import(file, &OutDir::new(&dir, &[], false)?)?;
        eprintln!("imported {} ({:?}, {} layers, {} tensors) into {}", file.display(), r.arch, r.layers, r.tensors, dir.display());
        for n in &r.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(dir)
}
