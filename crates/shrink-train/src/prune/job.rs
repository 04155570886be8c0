//! The `importance` and `prune` commands as library calls: the scoring rows, the report files, recovery training.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use shrink_format::folder::{write_atomic, OutDir};
use shrink_format::schema::Step;
use shrink_io::{choices, data, model, Choice};

use super::importance::{self, Method, Scores};
use super::{distill, plot, Options};
use crate::distill::examples::Fields;
use crate::distill::teacher::Targets;
use crate::example::Example;
use crate::train::{self, Plain, TrainOptions};

/// What importance is scored on: `--data` (labelled JSONL, in a seeded random order), `--samples` rows of it.
pub struct Scoring {
    pub data: Option<PathBuf>,
    pub samples: usize,
    pub method: Method,
    pub batch: usize,
    pub seed: u64,
    pub max_len: Option<usize>,
    pub fields: Fields,
}

impl Scoring {
    /// All of --data in a seeded random order (empty without --data); `m`'s labels index them.
    fn examples(&self, m: &model::Loaded) -> Result<Vec<Example>> {
        if self.samples == 0 {
            bail!("--samples 0: importance is measured on at least 1 row");
        }
        let Some(path) = &self.data else { return Ok(Vec::new()) };
        let Some(labels) = m.model.config.labels() else {
            bail!("{}: the model has no id2label; --data needs a fine-tuned classifier", m.dir.join("config.json").display());
        };
        let rows = data::shuffled(data::read_jsonl(path)?, self.seed);
        train::examples(path, &rows, &m.tokenizer, (&self.fields.text, &self.fields.label), &labels)
    }
}

/// `shrink importance`: scores every head, neuron and layer of `model`; writes importance.json and heads.svg to
/// `out`.
pub fn importance_report(model: &str, score: &Scoring, out: &Path) -> Result<Scores> {
    let m = model::load(model, score.max_len)?;
    let examples = score.examples(&m)?;
    let sample = &examples[..score.samples.min(examples.len())];
    let scores = importance::score(&m.model, sample, score.method, score.batch, true)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create folder", out.display()))?;
    let title = format!("head importance of {model} ({:?}, {} samples, unit norm per layer)", score.method, scores.samples);
    write_atomic(&out.join("importance.json"), serde_json::to_string_pretty(&scores)?.as_bytes())?;
    write_atomic(&out.join("heads.svg"), plot::heatmap(&scores.heads, &title).as_bytes())?;
    Ok(scores)
}

choices! {
    /// Training after the cut.
    pub enum Recover {
        None = "none",
        Finetune = "finetune": "Cross-entropy on the labels (the `finetune` loop)",
        Distill = "distill": "The same loop, half cross-entropy and half KL to the unpruned model's logits at temperature 2",
    }
}

pub struct Job {
    pub model: String,
    pub opts: Options,
    pub score: Scoring,
    pub recover: Recover,
    pub epochs: usize,
    pub lr: f64,
    pub batch: usize,
    pub threads: usize,
}

/// `shrink prune`: cuts `job.model` and writes it to `out` (checked by the caller before any work).
pub fn run(job: &Job, out: &OutDir) -> Result<()> {
    let Job { model, opts, score, recover, epochs, lr, batch, threads } = job;
    let m = model::load(model, score.max_len)?;
    opts.check(m.model.layers.len())?;
    if *recover != Recover::None && score.data.is_none() {
        bail!("--recover trains on --data: pass --data FILE.jsonl");
    }
    // The optimiser settings of `shrink finetune`'s defaults; only epochs, lr and batch have flags here.
    let topts = TrainOptions { epochs: *epochs, batch: *batch, lr: *lr, weight_decay: 0.01, warmup: 0.1, clip: 1.0, seed: score.seed };
    topts.check()?;
    let examples = score.examples(&m)?;
    let sample = &examples[..score.samples.min(examples.len())];
    let mut pruned = super::prune(m.model, sample, opts)?;
    match recover {
        Recover::None => {}
        Recover::Finetune => pruned = train::finetune(pruned, &examples, &topts, &train::cross_entropy, &mut Plain)?,
        Recover::Distill => {
            let teacher = Targets::logits_on(&mut model::engine(model, score.max_len, *threads)?, &examples)?;
            let loss = |logits: &Tensor, idx: &[usize], labels: &Tensor| {
                train::Loss::single("loss", distill::loss(logits, &teacher.outputs_of(idx)?, labels)?) // teacher (B, L)
            };
            pruned = train::finetune(pruned, &examples, &topts, &loss, &mut Plain)?;
        }
    }
    let Options { heads, ffn, layers, schedule, steps, method, .. } = *opts;
    let parameters = serde_json::json!({ "heads": heads, "ffn": ffn, "layers": layers, "method": method,
        "schedule": schedule.name(), "steps": steps,
        "recover": match recover { Recover::None => "none".into(), r => format!("{} {epochs} epochs", r.name()) } });
    pruned.config.lineage.push(Step::new("prune", &m.dir, parameters)?.metric("samples", sample.len()));
    pruned.save_dir(out, &m.dir)
}
