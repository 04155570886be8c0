//! `shrink distill`: knowledge distillation into a shallower and/or narrower student initialised from the
//! teacher's own layers and its most important heads, FFN neurons and hidden channels (`student.rs`). The teacher runs once per example and its outputs are cached (`teacher.rs`); the student trains
//! on a weighted sum of losses (`loss.rs`) through the shared epoch loop (`train::fit`), scored on a seeded dev
//! split after every epoch, the best epoch kept. QAT (`crate::qat`) trains through the same `train_student`.

pub mod examples;
pub mod loss;
pub mod student;
pub mod teacher;

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use shrink_io::choices;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var, D};
use rand::rngs::StdRng;
use shrink_model::linear::Linear;
use shrink_model::{pooling, Bert};
use shrink_format::folder::OutDir;
use shrink_format::schema::Step;

use shrink_io::model;
use crate::prune::importance::Method;
use crate::train::{self, Hook, Loss, Plain, Prepared, TrainOptions};
use examples::{Example, Rows};
use student::{LayerMap, Width};
use teacher::Targets;

choices! {
    pub enum Task {
        Classify = "classify": "The teacher's classifier: cross-entropy on the labels and KL on its logits",
        Embedding = "embedding": "Task-agnostic: the teacher's mean-pooled sentence embeddings on unlabelled text",
    }
}

choices! {
    pub enum EmbedLoss {
        Cosine = "cosine": "1 - cosine of the mean-pooled embeddings",
        Mse = "mse": "MSE of the raw mean-pooled embeddings",
    }
}

/// Weight of each loss term (0 = off).
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct LossWeights {
    pub ce: f64,
    pub kl: f64,
    pub temperature: f64,
    pub hidden: f64,
    /// KL of the last layer's attention distributions (MiniLM).
    pub attn: f64,
    pub embed: f64,
    pub embed_loss: EmbedLoss,
}

/// The loss-weight flags as given; None: the task's default (classify: ce 0.5 and kl 0.5, embedding: embed 1).
#[derive(Clone, Copy, Debug)]
pub struct WeightFlags {
    pub ce: Option<f64>,
    pub kl: Option<f64>,
    pub temperature: f64,
    pub hidden: f64,
    pub attn: f64,
    pub embed: Option<f64>,
    pub embed_loss: EmbedLoss,
}

impl WeightFlags {
    /// The weights `task` trains with; a term the task cannot have, or nothing to learn, is an error.
    pub fn resolve(&self, task: Task) -> Result<LossWeights> {
        let classify = task == Task::Classify;
        if !classify && (self.ce.is_some_and(|w| w > 0.0) || self.kl.is_some_and(|w| w > 0.0)) {
            bail!("--ce-weight and --kl-weight need --task classify (the embedding task has no labels or logits)");
        }
        if classify && self.embed.is_some_and(|w| w > 0.0) {
            bail!("--embed-weight needs --task embedding");
        }
        let temperature = self.temperature;
        if !(temperature.is_finite() && temperature > 0.0) {
            bail!("--temperature {temperature}: must be a finite number above 0");
        }
        let on = |w: Option<f64>, default: f64, active: bool| if active { w.unwrap_or(default) } else { 0.0 };
        let weights = LossWeights {
            ce: on(self.ce, 0.5, classify),
            kl: on(self.kl, 0.5, classify),
            temperature,
            hidden: self.hidden,
            attn: self.attn,
            embed: on(self.embed, 1.0, !classify),
            embed_loss: self.embed_loss,
        };
        if [weights.ce, weights.kl, weights.hidden, weights.attn, weights.embed].iter().all(|&w| w <= 0.0) {
            bail!("every loss weight is 0: nothing to learn");
        }
        Ok(weights)
    }
}

/// The task output and, if `hidden`, every hidden state (embedding output first) of one forward pass. `rng`
/// switches dropout on. ids, mask: (B, T) -> (B, L) logits or (B, C) mean-pooled embedding
pub fn forward(m: &Bert, task: Task, ids: &Tensor, mask: &Tensor, rng: Option<&mut StdRng>, hidden: bool) -> Result<(Tensor, Vec<Tensor>)> {
    let mut hs = Vec::new();
    let h = m.forward(ids, mask, rng, hidden.then_some(&mut hs))?; // (B, T, C)
    let pooled = pooling::mean_pool(&h, mask)?; // (B, C)
    let out = match (task, &m.classifier) {
        (Task::Embedding, _) => pooled,
        (Task::Classify, Some(head)) => head.forward(&pooled)?, // (B, L)
        (Task::Classify, None) => bail!("the model has no classification head"),
    };
    Ok((out, hs))
}

/// Examples per dev forward pass.
const DEV_BATCH: usize = 32;

/// One split: the examples and the teacher's outputs on them.
pub struct Split<'a> {
    pub examples: &'a [Example],
    pub targets: &'a Targets,
}

/// The training split and the dev split that picks the best epoch.
pub struct Splits<'a> {
    pub train: Split<'a>,
    pub dev: Split<'a>,
}

/// What the student learns. With hidden matching, student layer i's output is matched with the teacher targets'
/// hidden slot i, through `projections[i]` when the student is narrower (empty: same width).
pub struct Objective {
    pub task: Task,
    pub weights: LossWeights,
    /// Linear C' -> C per matched layer (`student::projections`), trained with the student.
    pub projections: Vec<Linear>,
}

impl Objective {
    /// The projections' parameters as the variables they are (shared, so training updates `projections`).
    pub fn params(&self) -> Result<Vec<(String, Var)>> {
        let mut out = Vec::new();
        for (i, p) in self.projections.iter().enumerate() {
            for (part, t) in [("weight", &p.weight), ("bias", &p.bias)] {
                if !t.is_variable() {
                    bail!("internal: projection {i} {part} is not a variable; build it with student::projections");
                }
                out.push((format!("projection.{i}.{part}"), Var::from_tensor(t)?));
            }
        }
        Ok(out)
    }

    /// The weighted loss of the examples `batch`; parts are reported unweighted.
    pub fn loss(&self, m: &Bert, split: &Split, batch: &[usize], rng: &mut StdRng) -> Result<Loss> {
        let w = &self.weights;
        let ex = split.examples;
        let (ids, mask) = train::batch_of(&batch.iter().map(|&j| ex[j].ids.as_slice()).collect::<Vec<_>>())?; // (B, T)
        let t = ids.dim(1)?;
        let (out, hs) = forward(m, self.task, &ids, &mask, Some(rng), w.hidden > 0.0 || w.attn > 0.0)?; // (B, L|C)
        let teacher_out = || split.targets.outputs_of(batch); // (B, L|C)
        let mut terms: Vec<(&'static str, f64, Tensor)> = Vec::new();
        if w.ce > 0.0 {
            let labels = Tensor::new(train::labels_of(ex, batch)?.as_slice(), ids.device())?; // (B,)
            terms.push(("ce", w.ce, shrink_model::ops::cross_entropy(&out, &labels)?));
        }
        if w.kl > 0.0 {
            terms.push(("kl", w.kl, loss::kl_at_temperature(&out, &teacher_out()?, w.temperature)?));
        }
        if w.embed > 0.0 {
            let target = teacher_out()?;
            let l = match w.embed_loss {
                EmbedLoss::Cosine => loss::cosine_distance(&out, &target)?,
                EmbedLoss::Mse => loss::mse(&out, &target)?,
            };
            terms.push(("embed", w.embed, l));
        }
        if w.hidden > 0.0 {
            let mut sum = Tensor::zeros((), candle_core::DType::F32, ids.device())?;
            for slot in 0..hs.len() - 1 {
                let target = split.targets.batch(&split.targets.hidden, ex, batch, slot, t)?; // (B, T, C)
                let h = match self.projections.get(slot) {
                    Some(p) => p.forward(&hs[slot + 1])?, // (B, T, C') -> (B, T, C)
                    None => hs[slot + 1].clone(),         // (B, T, C)
                };
                sum = (sum + loss::masked_mse(&h, &target, &mask)?)?;
            }
            terms.push(("hidden", w.hidden, (sum / (hs.len() - 1) as f64)?));
        }
        if w.attn > 0.0 {
            // The student's last layer recomputed from its input on basic ops: same parameters, so the same gradient
            // as if the probabilities came out of the fused forward.
            let (last, x) = (&m.layers[m.layers.len() - 1], &hs[hs.len() - 2]); // x: (B, T, C)
            let bias = shrink_model::embeddings::mask_bias(&mask)?; // (B, T)
            let heads = m.config.num_attention_heads;
            let student = loss::attention_log_probs(&last.attention.query.forward(x)?, &last.attention.key.forward(x)?, &bias, heads)?;
            let store = &split.targets.attention;
            let (tq, tk) = (split.targets.batch(store, ex, batch, 0, t)?, split.targets.batch(store, ex, batch, 1, t)?); // (B, T, C)
            let teacher = loss::attention_log_probs(&tq, &tk, &bias, heads)?; // (B, H, T, T)
            terms.push(("attn", w.attn, loss::attention_kl(&student, &teacher, &mask)?));
        }
        let mut total = Tensor::zeros((), candle_core::DType::F32, ids.device())?;
        let mut parts = vec![("loss", 0.0)];
        for (name, weight, l) in terms {
            parts.push((name, l.to_scalar::<f32>()?));
            total = (total + (l * weight)?)?;
        }
        parts[0].1 = total.to_scalar::<f32>()?;
        Ok(Loss { total, parts })
    }

    /// Dev score in eval mode: accuracy (classify) or mean cosine to the teacher's embeddings (embedding).
    pub fn score(&self, m: &Bert, split: &Split) -> Result<f64> {
        let mut sum = 0.0;
        for (k, chunk) in split.examples.chunks(DEV_BATCH).enumerate() {
            let (ids, mask) = train::batch_of(&chunk.iter().map(|e| e.ids.as_slice()).collect::<Vec<_>>())?; // (B, T)
            let (out, _) = forward(m, self.task, &ids, &mask, None, false)?; // (B, L|C)
            sum += match self.task {
                Task::Classify => {
                    let pred = out.argmax(D::Minus1)?.to_vec1::<u32>()?; // (B,)
                    chunk.iter().zip(pred).filter(|(e, p)| e.label == Some(*p)).count() as f64
                }
                Task::Embedding => {
                    let rows: Vec<f32> = (0..chunk.len()).flat_map(|i| split.targets.outputs[k * DEV_BATCH + i].clone()).collect();
                    let target = Tensor::from_vec(rows, out.shape(), out.device())?; // (B, C)
                    chunk.len() as f64 * (1.0 - f64::from(loss::cosine_distance(&out, &target)?.to_scalar::<f32>()?))
                }
            };
        }
        Ok(sum / split.examples.len().max(1) as f64)
    }
}

/// How a training run went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// 1-based epoch whose weights were saved, and its dev score (None without a dev split: the last epoch).
    pub best_epoch: usize,
    pub dev_score: Option<f64>,
    pub train_seconds: f64,
}

/// Trains `student` with `view` (distillation: `Plain`; QAT: its fake quantization) in every step: the loss on the
/// model `view` prepares, the dev score on `view.eval_model`. Saves the student's own weights (fp32) to `out`
/// after each epoch whose dev score is the best so far, or after every epoch without a dev split.
pub fn train_student(
    student: Bert,
    view: &mut dyn Hook,
    objective: &Objective,
    data: &Splits,
    opts: &TrainOptions,
    out: &OutDir,
    tokenizer_src: &Path,
) -> Result<Outcome> {
    let start = Instant::now();
    let mut best = BestEpoch { view, objective, dev: &data.dev, out, tokenizer_src, best: None };
    let train_split = &data.train;
    let step = |m: &Bert, batch: &[usize], rng: &mut StdRng| objective.loss(m, train_split, batch, rng);
    train::fit(student, objective.params()?, train_split.examples.len(), opts, step, &mut best)?;
    let (best_epoch, dev_score) = best.best.unwrap_or((0, None));
    Ok(Outcome { best_epoch, dev_score, train_seconds: start.elapsed().as_secs_f64() })
}

/// `train_student`'s hook: the view's steps, then after each epoch the dev score and a checkpoint of the best.
struct BestEpoch<'a> {
    view: &'a mut dyn Hook,
    objective: &'a Objective,
    dev: &'a Split<'a>,
    out: &'a OutDir,
    tokenizer_src: &'a Path,
    /// (1-based epoch, dev score) saved last.
    best: Option<(usize, Option<f64>)>,
}

impl Hook for BestEpoch<'_> {
    fn prepare(&mut self, step: usize, model: &Bert) -> Result<Prepared> {
        self.view.prepare(step, model)
    }

    fn before_update(&mut self, step: usize, params: &[(String, Var)], grads: &GradStore) -> Result<()> {
        self.view.before_update(step, params, grads)
    }

    fn after_update(&mut self, step: usize, params: &[(String, Var)]) -> Result<()> {
        self.view.after_update(step, params)
    }

    fn after_epoch(&mut self, epoch: usize, m: &Bert) -> Result<()> {
        let score = match self.dev.examples.is_empty() {
            true => None,
            false => Some(match self.view.eval_model(m)? {
                Some(v) => self.objective.score(&v, self.dev)?,
                None => self.objective.score(m, self.dev)?,
            }),
        };
        if let Some(s) = score {
            eprintln!("epoch {}: dev {} {s:.4}", epoch + 1, if self.objective.task == Task::Classify { "accuracy" } else { "cosine" });
        }
        if score.is_none() || self.best.is_none_or(|(_, b)| score > b) {
            m.save_dir(self.out, self.tokenizer_src)?;
            self.view.saved();
            self.best = Some((epoch + 1, score));
        }
        Ok(())
    }
}

pub struct DistillOptions {
    pub task: Task,
    pub student_layers: usize,
    /// `--layer-map`: every-other, first, or 0-based indices like 0,2,4.
    pub layer_map: String,
    pub width: Width,
    /// Ranks the heads and FFN neurons a narrower student keeps (taylor needs the classify task; None: taylor for
    /// classify, l2 for embedding).
    pub importance: Option<Method>,
    /// Training examples the importance is measured on.
    pub importance_samples: usize,
    pub weights: WeightFlags,
    pub rows: Rows,
    pub train: TrainOptions,
}

/// Distils `teacher` into a student of `o.student_layers` layers of `o.width` trained on `data`; writes the best
/// epoch to `out`.
pub fn distill(teacher: &str, data_path: &Path, out: &OutDir, o: &DistillOptions) -> Result<Outcome> {
    let weights = o.weights.resolve(o.task)?;
    let layer_map: LayerMap = o.layer_map.parse()?;
    let importance = o.importance.unwrap_or(if o.task == Task::Classify { Method::Taylor } else { Method::L2 });
    let t = model::load(teacher, o.rows.max_len)?;
    let cfg_path = t.dir.join(shrink_model::checkpoint::CONFIG_FILE);
    let labels = match o.task {
        Task::Classify => match (&t.model.classifier, t.model.config.labels()) {
            (Some(_), Some(l)) => Some(l),
            _ => bail!(
                "--task classify: teacher {} has no classification head (config.json has no shrink head / id2label); \
                 fine-tune it first or use --task embedding",
                cfg_path.display()
            ),
        },
        Task::Embedding => None,
    };
    let map = layer_map.teacher_layers(t.model.config.num_hidden_layers, o.student_layers, &cfg_path)?;
    let widths = o.width.resolve(&t.model.config, &map, &cfg_path)?;
    let c = t.model.config.hidden_size;
    let narrower = widths.hidden.is_some_and(|h| h < c);
    if weights.attn > 0.0 && map.iter().zip(&widths.heads).any(|(&l, &h)| h != t.model.config.heads(l)) {
        bail!("--attn-weight compares attention maps head by head: the student must keep every teacher head (drop --heads / --hidden)");
    }
    if o.task == Task::Embedding && narrower {
        bail!("--task embedding with --hidden below {c}: the student's sentence embeddings would not be comparable with the teacher's");
    }
    if o.task == Task::Embedding && importance == Method::Taylor && !o.width.is_teacher() {
        bail!("--importance taylor scores the classification loss: use --task classify or --importance l2");
    }
    let (train_ex, dev_ex) = examples::read_split(data_path, &t.tokenizer, labels.as_deref(), &o.rows, o.train.seed)?;
    let hidden_layers = if weights.hidden > 0.0 { map.clone() } else { Vec::new() };
    eprintln!(
        "distilling {} layers -> {} (teacher layers {map:?}) on {} examples ({} dev), max_len {}",
        t.model.config.num_hidden_layers,
        map.len(),
        train_ex.len(),
        dev_ex.len(),
        t.tokenizer.max_len
    );
    let train_targets = Targets::compute(&t.model, o.task, &train_ex, &hidden_layers, weights.attn > 0.0)?;
    let dev_targets = Targets::compute(&t.model, o.task, &dev_ex, &[], false)?;
    let mut s = student::build(&t.model, &map);
    let mut projections = Vec::new();
    if !o.width.is_teacher() {
        let sample = &train_ex[..o.importance_samples.min(train_ex.len())];
        let rank = student::Ranking { examples: sample, method: importance, batch: o.train.batch };
        let (narrow, kept) = student::narrow(&s, &widths, &rank)?;
        eprintln!(
            "narrow student: hidden {}, heads {:?}, FFN {:?} ({:?} importance on {} examples)",
            narrow.config.hidden_size,
            narrow.config.layer_heads.as_deref().unwrap_or_default(),
            narrow.config.layer_intermediate_sizes.as_deref().unwrap_or_default(),
            importance,
            sample.len()
        );
        if narrower && !hidden_layers.is_empty() {
            projections = student::projections(&kept, c, hidden_layers.len())?;
        }
        s = narrow;
    }
    let objective = Objective { task: o.task, weights, projections };
    let data = Splits { train: Split { examples: &train_ex, targets: &train_targets }, dev: Split { examples: &dev_ex, targets: &dev_targets } };
    if o.task == Task::Classify && !dev_ex.is_empty() {
        eprintln!("teacher dev accuracy {:.4}", objective.score(&t.model, &data.dev)?);
    }
    match o.task {
        Task::Classify => s.config.shrink.iter_mut().for_each(|sh| sh.max_len = Some(t.tokenizer.max_len)),
        // A pure encoder: sentence embeddings need no head.
        Task::Embedding => {
            s.classifier = None;
            s.config.shrink = None;
        }
    }
    let parameters = serde_json::json!({
        "data": data_path.display().to_string(), "task": o.task, "teacher_layers": map, "importance": importance,
        "width": {"hidden": o.width.hidden, "heads": o.width.heads, "ffn": o.width.ffn}, "weights": objective.weights, "train": o.train,
    });
    s.config.lineage.push(Step::new("distill", &t.dir, parameters)?.metric("examples", train_ex.len()).metric("dev_examples", dev_ex.len()));
    train_student(s, &mut Plain, &objective, &data, &o.train, out, &t.dir)
}
