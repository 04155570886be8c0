//! `shrink sparsify` as a library call: one-shot, or gradual while fine-tuning (a head added for the data's labels
//! when the model has none, the unpruned logits as teacher with `distill`), and its step in the lineage record.

use std::path::PathBuf;

use anyhow::{bail, Result};
use shrink_format::folder::OutDir;
use shrink_format::schema::Step;
use shrink_io::{data, events, model, Choice};

use super::{gradual, measured_sparsity, oneshot, Method, Options};
use crate::distill::examples::Fields;
use crate::distill::teacher::Targets;
use crate::train::{self, TrainOptions};

pub struct Job {
    pub model: String,
    /// None: the default sparsity (0.5) unless soft movement, which prunes what its l1 and threshold decide.
    pub sparsity: Option<f64>,
    /// `opts.sparsity` is replaced by `sparsity` resolved.
    pub opts: Options,
    /// Labelled JSONL to fine-tune on while pruning gradually; a seeded sample of `limit` rows.
    pub data: Option<PathBuf>,
    pub fields: Fields,
    pub limit: Option<usize>,
    pub distill: bool,
    pub max_len: Option<usize>,
    pub train: TrainOptions,
    pub threads: usize,
}

/// What was pruned: the fraction of encoder Linear weights now zero, of how many.
pub struct Report {
    pub achieved: f64,
    pub weights: usize,
}

/// Prunes `job.model` and writes it to `out` (checked by the caller before any work).
pub fn run(job: &Job, out: &OutDir) -> Result<Report> {
    let (method, t) = (job.opts.method, &job.train);
    if method == Method::SoftMovement && job.sparsity.is_some() {
        bail!("--method soft-movement prunes what --l1 and --threshold decide: drop --sparsity");
    }
    let opts = Options { sparsity: job.sparsity.unwrap_or(0.5), ..job.opts };
    opts.check()?;
    t.check()?;
    let mut m = model::load(&job.model, job.max_len)?;
    let pruned = match &job.data {
        None => {
            if job.distill {
                bail!("--distill trains: pass --data FILE.jsonl");
            }
            let mut model = m.model;
            oneshot(&mut model, &opts)?;
            model
        }
        Some(path) => {
            let rows = data::sample(data::read_jsonl(path)?, job.limit, t.seed);
            // A model without a head gets one for the data's labels: pruning while learning the task, from
            // the pretrained weights, is Sanh et al.'s fine-pruning.
            let labels = match m.model.config.labels() {
                Some(l) => l,
                None if job.distill => {
                    bail!("--distill learns from {}'s logits, but it has no classification head (fine-tune it first)", job.model)
                }
                None => {
                    let labels = data::label_set(path, &rows, &job.fields.label)?;
                    m.model.add_classifier(&labels, t.seed)?;
                    if let Some(s) = m.model.config.shrink.as_mut() {
                        s.max_len = Some(m.tokenizer.max_len);
                    }
                    labels
                }
            };
            let examples = train::examples(path, &rows, &m.tokenizer, (&job.fields.text, &job.fields.label), &labels)?;
            let teacher = job
                .distill
                .then(|| Targets::logits_on(&mut model::engine(&job.model, Some(m.tokenizer.max_len), job.threads)?, &examples))
                .transpose()?;
            events::note(match method {
                Method::SoftMovement => format!("soft movement pruning while fine-tuning on {} examples", examples.len()),
                _ => format!("pruning to {:.0}% while fine-tuning on {} examples", opts.target() * 100.0, examples.len()),
            });
            gradual(m.model, &examples, t, &opts, teacher.as_ref())?
        }
    };
    let (achieved, weights) = measured_sparsity(&pruned)?;
    let mut pruned = pruned;
    let Options { scope, nm, begin, end, score_lr, score_init, threshold, l1, .. } = opts;
    let parameters = serde_json::json!({
        "target": (method != Method::SoftMovement).then(|| opts.target()),
        "method": method.name(),
        "scope": scope.name(), "nm": nm.map(|(n, m)| format!("{n}:{m}")),
        "gradual": job.data.as_ref().map(|_| serde_json::json!({"epochs": t.epochs, "begin": begin, "end": end, "lr": t.lr,
            "distill": job.distill, "score_lr": (method != Method::Magnitude).then_some(score_lr),
            "score_init": (method != Method::Magnitude).then(|| score_init.name()),
            "threshold": (method == Method::SoftMovement).then_some(threshold),
            "l1": (method == Method::SoftMovement).then_some(l1)})),
    });
    pruned.config.lineage.push(Step::new("sparsify", &m.dir, parameters)?.metric("achieved", achieved));
    pruned.save_dir(out, &m.dir)?;
    Ok(Report { achieved, weights })
}
