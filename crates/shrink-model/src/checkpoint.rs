//! Hugging Face checkpoint folders: find them (local or hub) and read their weights into candle tensors. File
//! names, validation and atomic writes live in shrink-format, shared with the runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::Dtype;
pub use shrink_format::folder::{write_atomic, write_model_dir, OutDir, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use shrink_format::tensors::{self, OwnedTensor};
use shrink_format::TensorFile;

/// A local folder, a `.onnx` file (imported once into shrink's cache: `shrink_format::onnx::cached`), or a hub id
/// `org/name` fetched through the hub cache.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.is_file() && shrink_format::onnx::is_onnx(path) {
        return shrink_format::onnx::cached(path);
    }
    if path.exists() {
        bail!("{spec}: expected a model folder (config.json + model.safetensors + tokenizer.json) or a .onnx file, found a file");
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

/// Every floating tensor of one safetensors file as a candle tensor, keyed by canonical name (`arch::canonical`).
pub struct Weights {
    pub file: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Reads every floating tensor; rejects truncated/corrupt files and NaN/Inf values with the file and tensor named.
    pub fn load(file: &Path) -> Result<Self> {
        let tf = TensorFile::open(file)?;
        let mut tensors = HashMap::new();
        for name in tf.names() {
            // Integer buffers (e.g. `embeddings.position_ids`) are not parameters.
            if !matches!(tf.dtype(name), Some(Dtype::F32 | Dtype::F16 | Dtype::BF16)) {
                continue;
            }
            let shape = tf.shape(name).unwrap_or_default().to_vec();
            let values = tf.f32(name, &shape)?;
            tensors.insert(name.to_string(), Tensor::from_slice(&values, shape, &Device::Cpu)?);
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

/// Serialises f32 tensors to safetensors bytes (sorted by name, as HF does).
pub fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let owned = tensors
        .iter()
        .map(|(name, t)| {
            let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            Ok(OwnedTensor::f32(name.clone(), t.dims().to_vec(), &v))
        })
        .collect::<Result<Vec<_>>>()?;
    tensors::serialize(owned)
}

