//! Hugging Face checkpoint folders: find them (local or hub), read and validate `model.safetensors`, write folders
//! atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// Files copied along when a model folder is written, so the output is self-contained.
const TOKENIZER_COMPANIONS: [&str; 4] = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"];

/// A local folder, or a hub id `org/name` fetched through the hub cache.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        bail!("{spec}: expected a model folder (config.json + model.safetensors + tokenizer.json), found a file");
    }
    // `org/name` whose `org` is not a local folder; anything else is a local path that does not exist.
    let parent_is_local = path.parent().is_some_and(|p| p.as_os_str().is_empty() || p.is_dir());
    let looks_like_hub_id =
        spec.split('/').count() == 2 && !parent_is_local && !spec.starts_with(['.', '/']) && !spec.contains('\\');
    if !looks_like_hub_id {
        bail!("{spec}: no such model folder (and not a hub id of the form org/name)");
    }
    fetch_from_hub(spec)
}

fn fetch_from_hub(id: &str) -> Result<PathBuf> {
    let api = hf_hub::api::sync::Api::new().context("cannot set up the Hugging Face hub client")?;
    let repo = api.model(id.to_string());
    let mut dir = None;
    for file in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE] {
        let p = repo.get(file).map_err(|e| {
            anyhow!(
                "{id}: no local folder of that name, and downloading {file} from the Hugging Face hub failed \
                 (offline? pass a local folder instead): {e}"
            )
        })?;
        dir = p.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| anyhow!("{id}: hub cache returned no folder"))
}

/// Tensors of one safetensors file, converted to f32 on load and keyed by their HF name without a `bert.` prefix.
pub struct Weights {
    pub file: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Reads every floating tensor; rejects truncated/corrupt files and NaN/Inf values with the file and tensor named.
    pub fn load(file: &Path) -> Result<Self> {
        let f = std::fs::File::open(file).with_context(|| format!("{}: cannot open weights", file.display()))?;
        // SAFETY: read-only map of a file we do not modify; it lives only for this function.
        let mmap = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("{}: cannot map weights", file.display()))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| anyhow!("{}: not a valid safetensors file (truncated or corrupt?): {e}", file.display()))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
                // Integer buffers (e.g. `embeddings.position_ids`) are not parameters.
                _ => continue,
            };
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                bail!("{}: tensor {name} holds a non-finite value ({}) at flat index {i}", file.display(), values[i]);
            }
            let t = Tensor::from_vec(values, view.shape(), &Device::Cpu)?;
            tensors.insert(normalize_name(&name), t);
        }
        Ok(Self { file: file.to_path_buf(), tensors })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Takes a tensor out, checking the shape config.json implies.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| anyhow!("{}: tensor {name} is missing", self.file.display()))?;
        if t.dims() != shape {
            bail!(
                "{}: tensor {name} has shape {:?} but config.json implies {:?}",
                self.file.display(),
                t.dims(),
                shape
            );
        }
        Ok(t)
    }
}

/// `bert.encoder...` -> `encoder...`; old `LayerNorm.gamma/beta` -> `weight/bias`.
fn normalize_name(name: &str) -> String {
    let n = name.strip_prefix("bert.").unwrap_or(name);
    if let Some(stem) = n.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = n.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        n.to_string()
    }
}

/// Writes `bytes` to `path` through a temp file in the same folder and a rename, so a failure leaves no partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("{}: cannot create temp file", dir.display()))?;
    tmp.write_all(bytes).with_context(|| format!("{}: write failed", path.display()))?;
    tmp.persist(path).with_context(|| format!("{}: cannot move temp file into place", path.display()))?;
    Ok(())
}

/// Serialises f32 tensors to safetensors bytes (sorted by name, as HF does).
pub fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        owned.push((name.clone(), t.dims().to_vec(), v.iter().flat_map(|x| x.to_le_bytes()).collect()));
    }
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    Ok(safetensors::serialize(views, Some(meta))?)
}

/// Writes a complete model folder (config, weights, tokenizer files copied from `tokenizer_src`) into a temp folder
/// beside `out`, then swaps it into place: a failed run never leaves a half-written model.
pub fn write_model_dir(out: &Path, config_json: &str, weights: &[u8], tokenizer_src: &Path) -> Result<()> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create folder", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".shrink-tmp-")
        .tempdir_in(parent)
        .with_context(|| format!("{}: cannot create temp folder", parent.display()))?;
    std::fs::write(tmp.path().join(CONFIG_FILE), config_json)?;
    std::fs::write(tmp.path().join(WEIGHTS_FILE), weights)?;
    for name in TOKENIZER_COMPANIONS {
        let src = tokenizer_src.join(name);
        if src.is_file() {
            std::fs::copy(&src, tmp.path().join(name)).with_context(|| format!("{}: cannot copy", src.display()))?;
        }
    }
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("{}: cannot replace existing folder", out.display()))?;
    }
    let tmp_path = tmp.keep();
    std::fs::rename(&tmp_path, out).with_context(|| format!("{}: cannot move finished folder into place", out.display()))?;
    Ok(())
}
