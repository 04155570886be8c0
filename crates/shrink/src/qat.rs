//! `shrink qat`: quantization-aware training. Each step sees the model with its quantized weights fake-quantized
//! on exactly the grid the PTQ writer stores (int8 per output channel, or int4 per group of 32 with f16 scales;
//! optionally the token embedding table per row), through the straight-through estimator
//! w + (q(w) - w).detach(): the forward computes with q(w), the gradient reaches w unchanged. Activations are not
//! fake-quantized (the runtime's dynamic per-token int8 error is small next to the int4 weight error). The best
//! epoch's fp32 weights are then written through the PTQ writer (`quantize::emit`), whose round to nearest of
//! those weights gives exactly the grid trained on. `--distill` adds KL on the logits of the fp32 model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use serde_json::json;
use shrink_model::{Bert, Config};
use shrink_runtime::Site;

use crate::distill::examples::{self, Rows};
use crate::distill::teacher::Targets;
use crate::distill::{self, EmbedLoss, LossWeights, Objective, Outcome, Split, Splits, Task};
use crate::model;
use crate::quantize::gptq::Grid;
use crate::quantize::{self, calib::Calibration, EmbeddingStorage, Plan, Scheme};
use crate::train::TrainOptions;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QatScheme {
    /// int8 per-channel weights (as `quantize --scheme int8-dynamic`).
    Int8,
    /// int4 weights in groups of 32 (as `quantize --scheme int4 --group 32`).
    #[value(name = "int4-g32")]
    Int4G32,
}

impl QatScheme {
    /// The PTQ writer's options for this scheme.
    pub fn options(self, embeddings: EmbeddingStorage) -> quantize::Options {
        let mut o = match self {
            Self::Int8 => quantize::Options::new(Scheme::Int8Dynamic),
            Self::Int4G32 => quantize::Options::new(Scheme::Int4),
        };
        o.group = 32;
        o.embeddings = embeddings;
        o
    }
}

/// The weights that are fake-quantized, each with its grid.
pub struct FakeQuant {
    grids: HashMap<String, Grid>,
}

impl FakeQuant {
    /// Every encoder Linear (the sites the PTQ writer quantizes) and, if `opts` quantizes it, the token table.
    pub fn new(cfg: &Config, opts: &quantize::Options) -> Result<Self> {
        let storage = opts.format()?.storage;
        let Some(grid) = quantize::weight_grid(storage) else { bail!("QAT needs an integer weight format, not {storage:?}") };
        let mut grids: HashMap<String, Grid> = (0..cfg.num_hidden_layers)
            .flat_map(|l| Site::ALL.into_iter().flat_map(move |s| s.names(l)))
            .map(|name| (format!("{name}.weight"), grid))
            .collect();
        if let Some(g) = opts.embeddings.grid() {
            grids.insert("embeddings.word_embeddings.weight".into(), g);
        }
        Ok(Self { grids })
    }

    /// `m` with each fake-quantized weight replaced by its straight-through version.
    pub fn view(&self, m: &Bert) -> Result<Bert> {
        let mut v = m.clone();
        let mut failure = None;
        v.visit(&mut |name, t| {
            if let Some(grid) = self.grids.get(name) {
                match straight_through(t, grid) {
                    Ok(x) => *t = x,
                    Err(e) => failure = Some(e.context(format!("fake-quantizing {name}"))),
                }
            }
        });
        failure.map_or(Ok(v), Err)
    }
}

/// w + (q(w) - w).detach(): the value q(w), the gradient of w. w: (N, K)
pub fn straight_through(w: &Tensor, grid: &Grid) -> Result<Tensor> {
    let (n, k) = w.dims2()?;
    let q = quantize::fake_quantize(&w.flatten_all()?.to_vec1::<f32>()?, n, k, grid);
    let q = Tensor::from_vec(q, (n, k), w.device())?; // (N, K)
    Ok(w.broadcast_add(&(q - w.detach())?.detach())?)
}

pub struct QatOptions {
    pub scheme: QatScheme,
    pub embeddings: EmbeddingStorage,
    /// KL on the fp32 model's logits (weight 1, beside cross-entropy weight 1).
    pub distill: bool,
    pub temperature: f64,
    pub rows: Rows,
    pub train: TrainOptions,
    /// Also keep the trained fp32 weights here (the exported folder is their round to nearest).
    pub fp32_out: Option<PathBuf>,
}

/// Trains `model` with fake-quantized weights on `data`, then writes the quantized folder `out`.
pub fn qat(model_spec: &str, data: &Path, out: &Path, o: &QatOptions) -> Result<(Outcome, quantize::Summary)> {
    let m = model::load(model_spec, o.rows.max_len)?;
    let Some(labels) = m.model.config.labels().filter(|_| m.model.classifier.is_some()) else {
        bail!("{}: no classification head; QAT trains a fine-tuned classifier (shrink finetune first)", m.dir.display());
    };
    let qopts = o.scheme.options(o.embeddings);
    qopts.check()?;
    let fq = FakeQuant::new(&m.model.config, &qopts)?;
    let (train_ex, dev_ex) = examples::read_split(data, &m.tokenizer, Some(&labels), &o.rows, o.train.seed)?;
    let teacher_ex: &[_] = if o.distill { &train_ex } else { &[] };
    let targets = Targets::compute(&m.model, Task::Classify, teacher_ex, &[], false)?;
    let no_targets = Targets::compute(&m.model, Task::Classify, &[], &[], false)?;
    let weights = LossWeights {
        ce: 1.0,
        kl: if o.distill { 1.0 } else { 0.0 },
        temperature: o.temperature,
        hidden: 0.0,
        attn: 0.0,
        embed: 0.0,
        embed_loss: EmbedLoss::Cosine,
    };
    let objective = Objective { task: Task::Classify, weights, projections: Vec::new() };
    let splits = Splits { train: Split { examples: &train_ex, targets: &targets }, dev: Split { examples: &dev_ex, targets: &no_targets } };
    if !dev_ex.is_empty() {
        let fp32 = objective.score(&m.model, &splits.dev)?;
        let rtn = objective.score(&fq.view(&m.model)?, &splits.dev)?;
        eprintln!("dev accuracy before QAT: fp32 {fp32:.4}, fake-quantized (round to nearest) {rtn:.4}");
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("{}: cannot create folder", parent.display()))?;
    let staging = tempfile::Builder::new().prefix(".shrink-qat-").tempdir_in(parent)?;
    let fp32_dir = o.fp32_out.clone().unwrap_or_else(|| staging.path().join("fp32"));
    let outcome = distill::train_student(m.model.clone(), &|b| fq.view(b), &objective, &splits, &o.train, &fp32_dir, &m.dir)?;
    let src = quantize::Source::open(&fp32_dir)?;
    let plan = Plan::uniform(src.cfg.num_hidden_layers, qopts.format()?);
    let cal = Calibration::default();
    let mut recipe = quantize::recipe(&qopts, 0, &cal);
    recipe["qat"] = json!({
        "from": m.dir.display().to_string(), "data": data.display().to_string(), "examples": train_ex.len(),
        "epochs": o.train.epochs, "lr": o.train.lr, "distill": o.distill, "temperature": o.temperature,
        "activations_fake_quantized": false, "best_epoch": outcome.best_epoch, "dev_accuracy": outcome.dev_score,
    });
    let summary = quantize::emit(&src, out, &qopts, &plan, &cal, recipe)?;
    Ok((outcome, summary))
}
