//! The encoder of any family in `shrink_format::arch` (`embeddings`, `encoder.layer.*` in canonical names) and
//! shrink's optional classification head (`classifier`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;

use crate::checkpoint::{self, Weights, CONFIG_FILE, WEIGHTS_FILE};
use crate::config::{Config, ShrinkSection};
use crate::embeddings::{mask_bias, Embeddings};
use crate::layer::Layer;
use crate::linear::Linear;
use crate::params::ParamVisitor;
use crate::pooling;

#[derive(Clone)]
pub struct Bert {
    pub config: Config,
    pub embeddings: Embeddings,
    pub layers: Vec<Layer>,
    /// Linear(C, num labels) over the mean-pooled output, present in fine-tuned classifiers.
    pub classifier: Option<Linear>,
}

impl Bert {
    /// Loads `dir/config.json` + `dir/model.safetensors`; every problem names the file and the tensor.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let config = Config::load(&dir.join(CONFIG_FILE))?;
        if let Some(q) = &config.quantization {
            bail!(
                "{}: a quantized model ({}); training needs the fp32 folder it came from (inference commands take either)",
                dir.display(),
                q.scheme
            );
        }
        let mut w = Weights::load(&dir.join(WEIGHTS_FILE))?;
        Self::from_weights(config, &mut w)
    }

    pub fn from_weights(config: Config, w: &mut Weights) -> Result<Self> {
        let embeddings = Embeddings::load(w, &config)?;
        let layers = (0..config.num_hidden_layers).map(|l| Layer::load(w, l, &config)).collect::<Result<Vec<_>>>()?;
        let classifier = match (&config.shrink, config.labels()) {
            (Some(_), Some(labels)) => Some(Linear::load(w, "classifier", labels.len(), config.hidden_size)?),
            (Some(_), None) => bail!("{}: config.json has a shrink head but no id2label", w.file.display()),
            _ => None,
        };
        config.check_layer_count(&w.file, |n| w.contains(n))?;
        Ok(Self { config, embeddings, layers, classifier })
    }

    /// Last hidden state. ids, mask: (B, T) u32 -> (B, T, C). `hidden`, if given, receives the embedding output
    /// and every layer's output (HF `hidden_states`). `rng` switches dropout on (training).
    pub fn forward(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        mut rng: Option<&mut StdRng>,
        mut hidden: Option<&mut Vec<Tensor>>,
    ) -> candle_core::Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if t > self.embeddings.max_positions() {
            candle_core::bail!("sequence of {t} tokens exceeds the {} that max_position_embeddings numbers", self.embeddings.max_positions());
        }
        let bias = mask_bias(mask)?; // (B, T)
        let mut x = self.embeddings.forward(ids, mask, rng.as_deref_mut())?; // (B, T, C)
        if let Some(h) = hidden.as_deref_mut() {
            h.push(x.clone());
        }
        for layer in &self.layers {
            x = layer.forward(&x, &bias, rng.as_deref_mut())?;
            if let Some(h) = hidden.as_deref_mut() {
                h.push(x.clone());
            }
        }
        Ok(x)
    }

    /// Sentence embeddings: mean over real tokens, L2-normalised (sentence-transformers). (B, C)
    pub fn embed(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.forward(ids, mask, None, None)?;
        pooling::l2_normalize(&pooling::mean_pool(&h, mask)?)
    }

    /// Classifier logits (B, L) from the mean-pooled (not normalised) output.
    pub fn logits(&self, ids: &Tensor, mask: &Tensor, rng: Option<&mut StdRng>) -> Result<Tensor> {
        let Some(head) = &self.classifier else {
            bail!("this model has no classification head (fine-tune it with `shrink finetune` first)")
        };
        let h = self.forward(ids, mask, rng, None)?;
        Ok(head.forward(&pooling::mean_pool(&h, mask)?)?)
    }

    /// Adds a fresh classification head: weights ~ N(0, initializer_range), bias 0 (HF init).
    pub fn add_classifier(&mut self, labels: &[String], seed: u64) -> Result<()> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let c = self.config.hidden_size;
        let std = self.config.extra.get("initializer_range").and_then(|v| v.as_f64()).unwrap_or(0.02);
        let normal = Normal::new(0.0f32, std as f32)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let w: Vec<f32> = (0..labels.len() * c).map(|_| normal.sample(&mut rng)).collect();
        self.classifier = Some(Linear {
            weight: Tensor::from_vec(w, (labels.len(), c), &Device::Cpu)?,
            bias: Tensor::zeros(labels.len(), candle_core::DType::F32, &Device::Cpu)?,
            input_quant: None,
        });
        self.config.set_labels(labels);
        self.config.shrink = Some(ShrinkSection { pooling: "mean".into(), head: "classifier".into(), max_len: None });
        Ok(())
    }

    /// Every parameter with its checkpoint name.
    pub fn visit(&mut self, f: &mut ParamVisitor) {
        self.embeddings.visit(f);
        for (l, layer) in self.layers.iter_mut().enumerate() {
            layer.visit(l, f);
        }
        if let Some(c) = &mut self.classifier {
            c.visit("classifier", f);
        }
    }

    pub fn named_params(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.clone().visit(&mut |n, t| out.push((n.to_string(), t.clone())));
        out
    }

    /// Writes a self-contained HF-style folder (config, weights, tokenizer files from `tokenizer_src`).
    pub fn save_dir(&self, out: &checkpoint::OutDir, tokenizer_src: &Path) -> Result<()> {
        let weights = checkpoint::safetensors_bytes(&self.named_params())?;
        let cfg = serde_json::to_string_pretty(&self.config)?;
        checkpoint::write_model_dir(out, &cfg, &weights, tokenizer_src).with_context(|| format!("saving {}", out.path().display()))
    }
}
