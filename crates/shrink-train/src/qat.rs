//! `shrink qat`: quantization-aware training. Each step sees the model with its quantized weights fake-quantized
//! on exactly the grid the PTQ writer stores (int8 per output channel, or int4 per group of 32 with f16 scales;
//! optionally the token embedding table per row), through the straight-through estimator
//! w + (q(w) - w).detach(): the forward computes with q(w), the gradient reaches w unchanged.
//!
//! Activations: with `--activations dynamic` (the default) they stay f32 in training, since the runtime's
//! per-token int8 ranges are computed on every call and their error is small next to the int4 weight error. With
//! `--activations static` every quantized Linear's input is fake-quantized on the runtime's static u8 grid
//! (`int8-static`, `int4-g32-static`: one scale and zero point per site, the one input Q, K and V share included),
//! gradient straight through inside the range and 0 where it clips. Each site's range starts from a PTQ
//! calibration pass on the runtime (min/max of real tokens over the first training texts) and then follows an
//! exponential moving average of every training batch's (min, max) (`--ema-momentum`; the batch range includes
//! padding rows, which the calibration skips). The best epoch's fp32 weights are written through the PTQ writer
//! (`quantize::emit`), whose round to nearest of those weights gives exactly the grid trained on, with that
//! epoch's ranges as input_scale / input_zero. `--distill` adds KL on the logits of the fp32 model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context, Result};
use shrink_io::{choices, Choice};
use candle_core::Tensor;
use serde_json::json;
use shrink_model::linear::{InputQuant, Linear, SeenRange as Seen};
use shrink_model::{Bert, Config};
use shrink_runtime::Site;
use shrink_format::folder::OutDir;
use shrink_format::schema::Step;

use crate::distill::examples::{self, Rows};
use crate::distill::teacher::Targets;
use crate::distill::{self, EmbedLoss, LossWeights, Objective, Outcome, Split, Splits, Task};
use shrink_io::model;
use shrink_compress::quantize::calib::{Calibration, SiteKey};
use shrink_compress::quantize::gptq::Grid;
use shrink_compress::quantize::observer::{ActGrid, Method};
use shrink_compress::quantize::{self, ActStorage, EmbeddingStorage, Plan, Scheme};
use crate::train::{Hook, Prepared, TrainOptions};

choices! {
    pub enum QatScheme {
        Int8 = "int8": "int8 per-channel weights (as `quantize --scheme int8-dynamic`, or `int8-static` with static activations)",
        Int4G32 = "int4-g32": "int4 weights in groups of 32 (as `quantize --scheme int4 --group 32`)",
    }
}

choices! {
    pub enum QatActs {
        Dynamic = "dynamic": "int8 per token with ranges the runtime computes on every call; not fake-quantized in training",
        Static = "static": "int8 with one scale and zero point per Linear input, fake-quantized in training and fixed at export",
    }
}

impl QatScheme {
    /// The PTQ writer's options for this scheme.
    pub fn options(self, embeddings: EmbeddingStorage, acts: QatActs) -> quantize::Options {
        let mut o = match (self, acts) {
            (Self::Int8, QatActs::Dynamic) => quantize::Options::new(Scheme::Int8Dynamic),
            (Self::Int8, QatActs::Static) => quantize::Options::new(Scheme::Int8Static),
            (Self::Int4G32, _) => quantize::Options::new(Scheme::Int4),
        };
        o.group = 32;
        o.int4_acts = if acts == QatActs::Static { ActStorage::Static } else { ActStorage::Int8 };
        o.embeddings = embeddings;
        // The fake-quant forward trained against f32 attention: the folder keeps it, so the runtime computes the
        // model that was trained (bf16 attention moved logits by 4% of their range in the parity test).
        o.attention = Some(quantize::AttentionPrecision::Fp32);
        o
    }
}

/// A lock that outlives a panicking holder (the data are plain ranges, valid at any point).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct SiteRange {
    /// (lo, hi) now.
    range: Mutex<(f32, f32)>,
    /// The last training forward's batch range, not folded in yet.
    seen: Seen,
}

/// The static activation range of every site: a moving average of the training batches' (min, max).
pub struct ActRanges {
    momentum: f32,
    sites: BTreeMap<SiteKey, SiteRange>,
    /// The grids at the last `snapshot` (the epoch whose weights were saved).
    best: Mutex<BTreeMap<SiteKey, ActGrid>>,
}

impl ActRanges {
    /// Starts every site at its range in `init`; each training batch then moves it by `momentum` of the way to
    /// the batch's own (min, max).
    pub fn new(init: BTreeMap<SiteKey, (f32, f32)>, momentum: f32) -> Result<Self> {
        if !(momentum > 0.0 && momentum <= 1.0) {
            bail!("--ema-momentum {momentum}: must be in (0, 1]");
        }
        let sites = init.into_iter().map(|(k, r)| (k, SiteRange { range: Mutex::new(r), seen: Seen::default() })).collect();
        let a = Self { momentum, sites, best: Mutex::default() };
        a.snapshot();
        Ok(a)
    }

    /// Folds each site's recorded batch range into its average.
    fn fold(&self) {
        for s in self.sites.values() {
            if let Some((lo, hi)) = lock(&s.seen).take() {
                let mut r = lock(&s.range);
                r.0 += self.momentum * (lo - r.0);
                r.1 += self.momentum * (hi - r.1);
            }
        }
    }

    /// Each site's u8 grid now, derived from its range as the PTQ writer derives it (asymmetric).
    pub fn params(&self) -> BTreeMap<SiteKey, ActGrid> {
        self.sites.iter().map(|(k, s)| (*k, { let (lo, hi) = *lock(&s.range); ActGrid::from_range(lo, hi, false) })).collect()
    }

    fn snapshot(&self) {
        *lock(&self.best) = self.params();
    }

    /// The grids of the saved epoch.
    pub fn best(&self) -> BTreeMap<SiteKey, ActGrid> {
        lock(&self.best).clone()
    }
}

/// Fake-quantizes the input of each site in `params` in `m` on its grid (the three Linears of Q, K and V get the
/// same one); with `seen`, each site's forward records its batch range there.
pub fn quantize_inputs(m: &mut Bert, params: &BTreeMap<SiteKey, ActGrid>, seen: Option<&BTreeMap<SiteKey, Seen>>) -> Result<()> {
    let layers = m.layers.len();
    for (&(l, site), p) in params {
        let Some(layer) = m.layers.get_mut(l) else { bail!("an activation range for layer {l}; the model has {layers} layers") };
        let a = &mut layer.attention;
        let linears: Vec<&mut Linear> = match site {
            Site::Qkv => vec![&mut a.query, &mut a.key, &mut a.value],
            Site::AttnOut => vec![&mut a.output],
            Site::Inter => vec![&mut layer.intermediate],
            Site::Out => vec![&mut layer.output],
        };
        let q = InputQuant { scale: p.scale, zero: p.zero, seen: seen.and_then(|s| s.get(&(l, site))).cloned() };
        for lin in linears {
            lin.input_quant = Some(q.clone());
        }
    }
    Ok(())
}

/// The weights that are fake-quantized, each with its grid, and the static activation ranges if any.
pub struct FakeQuant {
    grids: HashMap<String, Grid>,
    acts: Option<ActRanges>,
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
        Ok(Self { grids, acts: None })
    }

    /// Also fake-quantize every site's input on `acts`.
    pub fn with_acts(self, acts: ActRanges) -> Self {
        Self { acts: Some(acts), ..self }
    }

    pub fn acts(&self) -> Option<&ActRanges> {
        self.acts.as_ref()
    }

    /// `m` as the runtime will compute it (eval: no range is recorded).
    pub fn view(&self, m: &Bert) -> Result<Bert> {
        self.build(m, false)
    }

    /// `m` with each fake-quantized weight replaced by its straight-through version and, with static
    /// activations, every site's input on its current grid (after folding in the last training batch's range);
    /// `record`: this forward's batch ranges are recorded for the next fold.
    fn build(&self, m: &Bert, record: bool) -> Result<Bert> {
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
        if let Some(e) = failure {
            return Err(e);
        }
        if let Some(a) = &self.acts {
            a.fold();
            let seen: Option<BTreeMap<SiteKey, Seen>> = record.then(|| a.sites.iter().map(|(k, s)| (*k, s.seen.clone())).collect());
            quantize_inputs(&mut v, &a.params(), seen.as_ref())?;
        }
        Ok(v)
    }
}

/// QAT's hook: every step's loss runs on the fake-quantized student (recording the batch's activation ranges), and
/// so does the dev score.
impl Hook for FakeQuant {
    fn prepare(&mut self, _step: usize, m: &Bert) -> Result<Prepared> {
        Ok(Prepared { model: Some(self.build(m, true)?), penalty: None })
    }

    fn eval_model(&self, m: &Bert) -> Result<Option<Bert>> {
        Ok(Some(self.build(m, false)?))
    }

    fn saved(&mut self) {
        if let Some(a) = &self.acts {
            a.snapshot();
        }
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
    pub acts: QatActs,
    /// Static activations: how far each training batch moves a range towards its own (min, max).
    /// None: `EMA_MOMENTUM`; only static activations have ranges to move.
    pub ema_momentum: Option<f32>,
    /// KL on the fp32 model's logits (weight 1, beside cross-entropy weight 1).
    pub distill: bool,
    pub temperature: f64,
    pub rows: Rows,
    pub train: TrainOptions,
    /// Also keep the trained fp32 weights here (the exported folder is their round to nearest).
    pub fp32_out: Option<OutDir>,
}

/// Static activations: the moving average's default momentum (PyTorch's MovingAverageMinMaxObserver).
pub const EMA_MOMENTUM: f32 = 0.01;
/// Static activations: training texts the initial ranges are calibrated on (as `quantize --calib-samples`).
const CALIB_TEXTS: usize = 256;

/// What `qat` trained and wrote.
pub struct Trained {
    pub outcome: Outcome,
    pub summary: quantize::Summary,
    /// Static activations: the exported grid of every site (empty for dynamic).
    pub acts: BTreeMap<SiteKey, ActGrid>,
}

/// Trains `model` with fake-quantized weights (and static activations if asked) on `data`, then writes the
/// quantized folder `out`.
pub fn qat(model_spec: &str, data: &Path, out: &OutDir, o: &QatOptions) -> Result<Trained> {
    if o.ema_momentum.is_some() && o.acts != QatActs::Static {
        bail!("--ema-momentum sets the moving average of static activation ranges: add --activations static");
    }
    let ema_momentum = o.ema_momentum.unwrap_or(EMA_MOMENTUM);
    let m = model::load(model_spec, o.rows.max_len)?;
    let Some(labels) = m.model.config.labels().filter(|_| m.model.classifier.is_some()) else {
        bail!("{}: no classification head; QAT trains a fine-tuned classifier (shrink finetune first)", m.dir.display());
    };
    let qopts = o.scheme.options(o.embeddings, o.acts);
    qopts.check()?;
    let format = qopts.format()?;
    let mut fq = FakeQuant::new(&m.model.config, &qopts)?;
    let (train_ex, dev_ex) = examples::read_split(data, &m.tokenizer, Some(&labels), &o.rows, o.train.seed)?;
    let calib: Vec<String> = match o.acts {
        QatActs::Dynamic => Vec::new(),
        QatActs::Static => train_ex.iter().take(CALIB_TEXTS).map(|e| e.text.clone()).collect(),
    };
    if o.acts == QatActs::Static {
        let src = quantize::Source::open(&m.dir, rayon::current_num_threads(), Some(m.tokenizer.max_len))?;
        let plan = Plan::uniform(src.cfg.num_hidden_layers, format);
        let cal = src.calibrate(&plan, &qopts, &calib)?;
        let init = cal
            .sites
            .iter()
            .map(|(&(l, site), st)| Ok(((l, site), st.observer.range(Method::MinMax, false).map_err(|e| anyhow!("layer {l} {site:?}: {e}"))?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        fq = fq.with_acts(ActRanges::new(init, ema_momentum)?);
    }
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
        eprintln!("dev accuracy before QAT: fp32 {fp32:.4}, fake-quantized ({}, round to nearest) {rtn:.4}", format.name);
    }
    let staging = tempfile::Builder::new().prefix("shrink-qat-").tempdir().context("cannot create a temp folder")?;
    let fp32_dir = match &o.fp32_out {
        Some(d) => d.clone(),
        None => OutDir::new(&staging.path().join("fp32"), &[], false)?,
    };
    let outcome = distill::train_student(m.model.clone(), &mut fq, &objective, &splits, &o.train, &fp32_dir, &m.dir)?;
    let src = quantize::Source::open(fp32_dir.path(), 1, None)?;
    let plan = Plan::uniform(src.cfg.num_hidden_layers, format);
    let cal = Calibration { fixed: fq.acts().map(ActRanges::best).unwrap_or_default(), ..Calibration::default() };
    let parameters = json!({
        "quantize": quantize::parameters(&qopts), "data": data.display().to_string(),
        "epochs": o.train.epochs, "lr": o.train.lr, "distill": o.distill, "temperature": o.temperature,
        "activations": o.acts.name(), "activations_fake_quantized": o.acts == QatActs::Static,
        "activation_ranges": (o.acts == QatActs::Static).then(|| json!({
            "init": "minmax on the runtime", "calibration_texts": calib.len(), "ema_momentum": ema_momentum,
        })),
    });
    let step = Step::new("qat", &m.dir, parameters)?
        .metric("examples", train_ex.len())
        .metric("best_epoch", outcome.best_epoch)
        .metric("dev_accuracy", outcome.dev_score);
    let summary = quantize::emit(&src, out, &qopts, &plan, &cal, Some(step))?;
    Ok(Trained { outcome, summary, acts: cal.fixed })
}
