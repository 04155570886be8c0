//! `shrink quantize`: conversion-time quantization of a model folder into a folder the runtime loads.
//! `int8-dynamic`: every Linear of the encoder becomes symmetric per-output-channel int8 (I8 weight + F32 scale per
//! row); activations are quantized per token at run time; embedding tables stay f32 unless asked for int8 (per
//! row). The unused [CLS] pooler is dropped. The folder stays HF-style; config.json gains a `quantization` section
//! saying how each Linear is stored.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::Dtype;
use shrink_format::folder::{write_model_dir, CONFIG_FILE, WEIGHTS_FILE};
use shrink_format::tensors::{serialize, OwnedTensor};
use shrink_format::{Config, QuantSection, TensorFile};
use shrink_kernels::qgemm::quantize_per_channel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheme {
    /// int8 per-channel weights, int8 per-token activations computed at run time.
    Int8Dynamic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbeddingStorage {
    Fp32,
    /// Per-row symmetric int8 of the token embedding table (the largest tensor of small models).
    Int8,
}

/// The Linears of a BERT encoder, by HF name, in checkpoint order.
pub fn linear_names(cfg: &Config) -> Vec<String> {
    let mut v = Vec::new();
    for l in 0..cfg.num_hidden_layers {
        for s in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense"] {
            v.push(format!("encoder.layer.{l}.{s}"));
        }
    }
    v
}

pub struct Summary {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub quantized: usize,
}

pub fn quantize(src: &Path, out: &Path, scheme: Scheme, embeddings: EmbeddingStorage) -> Result<Summary> {
    let cfg_path = src.join(CONFIG_FILE);
    let cfg = Config::load(&cfg_path)?;
    if cfg.quantization.is_some() {
        bail!("{}: this model is already quantized; start from the fp32 folder", cfg_path.display());
    }
    let file = TensorFile::open(&src.join(WEIGHTS_FILE))?;
    let names = linear_names(&cfg);
    let (c, v) = (cfg.hidden_size, cfg.vocab_size);
    let word = "embeddings.word_embeddings.weight";
    let mut layers = BTreeMap::new();
    let mut tensors = Vec::new();
    let pb = crate::progress::bar(names.len(), "quantize");
    for name in &names {
        let w = format!("{name}.weight");
        let shape = file.shape(&w).map(<[usize]>::to_vec).with_context(|| format!("{}: tensor {w} is missing", file.file.display()))?;
        if shape.len() != 2 {
            bail!("{}: tensor {w} has shape {shape:?}; a Linear weight is 2-D", file.file.display());
        }
        let (q, scale) = quantize_per_channel(&file.f32(&w, &shape)?, shape[0], shape[1]);
        tensors.push(OwnedTensor::i8(w.clone(), shape.clone(), &q));
        tensors.push(OwnedTensor::f32(format!("{w}_scale"), vec![shape[0]], &scale));
        layers.insert(name.clone(), "int8".to_string());
        pb.inc(1);
    }
    pb.finish_and_clear();
    if file.contains("classifier.weight") {
        // The head is tiny and its errors go straight into the logits.
        layers.insert("classifier".to_string(), "fp32".to_string());
    }
    if embeddings == EmbeddingStorage::Int8 {
        let (q, scale) = quantize_per_channel(&file.f32(word, &[v, c])?, v, c);
        tensors.push(OwnedTensor::i8(word, vec![v, c], &q));
        tensors.push(OwnedTensor::f32(format!("{word}_scale"), vec![v], &scale));
    }
    // Everything else (biases, LayerNorms, position and type tables, the head) is copied as f32.
    let done: std::collections::HashSet<String> = tensors.iter().map(|t| t.name.clone()).collect();
    // The [CLS] pooler is never run by mean-pooling models: dropped.
    let mut rest: Vec<&str> = file.names().filter(|n| !done.contains(*n) && !n.starts_with("pooler.")).collect();
    rest.sort();
    for name in rest {
        if !matches!(file.dtype(name), Some(Dtype::F32 | Dtype::F16 | Dtype::BF16)) {
            continue; // integer buffers such as position_ids are not parameters
        }
        let shape = file.shape(name).unwrap_or_default().to_vec();
        tensors.push(OwnedTensor::f32(name, shape.clone(), &file.f32(name, &shape)?));
    }
    let mut out_cfg = cfg.clone();
    out_cfg.quantization = Some(QuantSection {
        scheme: match scheme {
            Scheme::Int8Dynamic => "int8-dynamic".into(),
        },
        activations: "int8-per-token-dynamic".into(),
        embeddings: match embeddings {
            EmbeddingStorage::Fp32 => "fp32".into(),
            EmbeddingStorage::Int8 => "int8".into(),
        },
        layers,
    });
    let bytes = serialize(tensors)?;
    write_model_dir(out, &serde_json::to_string_pretty(&out_cfg)?, &bytes, src)?;
    let bytes_in = std::fs::metadata(src.join(WEIGHTS_FILE))?.len();
    Ok(Summary { bytes_in, bytes_out: bytes.len() as u64, quantized: names.len() })
}
