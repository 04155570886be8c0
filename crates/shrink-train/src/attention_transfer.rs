//! `shrink attention-transfer`: recovery after `shrink attention`, layer by layer. Each converted layer (sliding or
//! linear) learns to give the attention output that the unconverted model's softmax attention gives on the same
//! input: the teacher's forward supplies every layer's input and its softmax context, and the converted layer's
//! context on that input is pulled towards it by MSE over the real tokens (LoLCATs' attention transfer; Hedgehog
//! trains its feature maps this way). Teacher-forced, so each layer trains on the inputs it will see once the
//! layers below it match, and the loss costs one teacher forward and the converted layers' attention only. A task
//! fine-tune at the new length (`shrink finetune`) follows.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use shrink_format::folder::OutDir;
use shrink_format::schema::{Attention, FeatureMap, Step};
use shrink_io::choices;
use shrink_io::model;
use shrink_model::Bert;

use crate::distill::examples::{self, Example, Rows};
use crate::train::{self, Hook, Loss, TrainOptions};

choices! {
    pub enum Train {
        Maps = "maps": "Only Hedgehog's feature maps; Q, K and V stay as they are (the default for hedgehog layers)",
        Qk = "qk": "The converted layers' query and key projections (and feature maps): the default for elu and sliding",
    }
}

pub struct Options {
    /// The unconverted model; None: the model itself with every layer's attention full (conversion keeps the
    /// weights, so that is the model before `shrink attention`).
    pub teacher: Option<String>,
    /// None: maps where every converted layer has them, else qk.
    pub train: Option<Train>,
    pub rows: Rows,
    pub opts: TrainOptions,
}

/// How the run went: the mean transfer loss on the dev split before training and after the saved epoch.
#[derive(Debug, serde::Serialize)]
pub struct Outcome {
    pub layers: Vec<usize>,
    pub train: Train,
    pub dev_loss_before: f64,
    pub dev_loss_after: f64,
    pub best_epoch: usize,
    pub train_seconds: f64,
}

/// Examples per teacher forward when scoring the dev split.
const DEV_BATCH: usize = 16;

/// The converted layers and what trains in them.
struct Transfer {
    teacher: Bert,
    layers: Vec<usize>,
    train: Train,
}

impl Transfer {
    /// Mean over the converted layers of the MSE between their context and the teacher's softmax context on the
    /// teacher's input, real query tokens only (padded queries have no meaning in either).
    fn loss(&self, m: &Bert, examples: &[Example], batch: &[usize], mut rng: Option<&mut StdRng>) -> Result<Tensor> {
        let (ids, mask) = train::batch_of(&batch.iter().map(|&j| examples[j].ids.as_slice()).collect::<Vec<_>>())?; // (B, T)
        let bias = shrink_model::embeddings::mask_bias(&mask)?; // (B, T)
        let mut hs = Vec::new();
        self.teacher.forward(&ids, &mask, None, Some(&mut hs))?; // hs[l]: layer l's input (B, T, C)
        let keep = mask.to_dtype(DType::F32)?.unsqueeze(1)?.unsqueeze(3)?; // (B, 1, T, 1)
        let mut sum = Tensor::zeros((), DType::F32, ids.device())?;
        for &l in &self.layers {
            let x = hs[l].detach();
            let t = &self.teacher.layers[l].attention;
            let (tq, tk, tv) = t.heads_of(&x)?;
            let target = t.context(&tq, &tk, &tv, &bias, None)?.detach(); // (B, H, T, D)
            let s = &m.layers[l].attention;
            let (q, k, v) = s.heads_of(&x)?;
            let (q, k) = match self.train {
                Train::Maps => (q.detach(), k.detach()),
                Train::Qk => (q, k),
            };
            let ctx = s.context(&q, &k, &v.detach(), &bias, rng.as_deref_mut())?; // (B, H, T, D)
            let sq = (ctx - target)?.sqr()?.broadcast_mul(&keep)?; // (B, H, T, D)
            let (_, h, _, d) = sq.dims4()?;
            let count = (keep.sum_all()?.to_scalar::<f32>()? as f64 * (h * d) as f64).max(1.0);
            sum = (sum + (sq.sum_all()? / count)?)?;
        }
        Ok((sum / self.layers.len() as f64)?)
    }

    fn dev_loss(&self, m: &Bert, dev: &[Example]) -> Result<f64> {
        let idx: Vec<usize> = (0..dev.len()).collect();
        let mut total = 0.0;
        for chunk in idx.chunks(DEV_BATCH) {
            total += f64::from(self.loss(m, dev, chunk, None)?.to_scalar::<f32>()?) * chunk.len() as f64;
        }
        Ok(total / dev.len().max(1) as f64)
    }
}

/// Trains the converted layers of `student` (a folder `shrink attention` wrote) on the texts of `data`; writes the
/// epoch with the lowest dev loss to `out`.
pub fn transfer(student: &str, data: &Path, out: &OutDir, o: &Options) -> Result<Outcome> {
    o.opts.check()?;
    let s = model::load(student, o.rows.max_len)?;
    let cfg = &s.model.config;
    let cfg_path = s.dir.join(shrink_model::checkpoint::CONFIG_FILE);
    let layers: Vec<usize> = (0..cfg.num_hidden_layers).filter(|&l| cfg.attention(l) != Attention::Full).collect();
    if layers.is_empty() {
        bail!("{}: every layer computes full attention, so there is nothing to transfer (convert with `shrink attention` first)", cfg_path.display());
    }
    let hedgehog = |l: &usize| cfg.attention(*l) == Attention::Linear { feature_map: FeatureMap::Hedgehog };
    let train = o.train.unwrap_or(if layers.iter().all(hedgehog) { Train::Maps } else { Train::Qk });
    if train == Train::Maps && !layers.iter().all(hedgehog) {
        bail!("--train maps: layers {:?} have no learned feature map (only --to linear --feature-map hedgehog does); use --train qk", layers.iter().filter(|l| !hedgehog(l)).collect::<Vec<_>>());
    }
    let teacher = match &o.teacher {
        None => {
            let mut t = s.model.clone();
            for layer in &mut t.layers {
                layer.attention.kind = Attention::Full;
                layer.attention.feature_maps = None;
            }
            t
        }
        Some(path) => {
            let t = model::load(path, None)?.model;
            let tc = &t.config;
            let same = tc.num_hidden_layers == cfg.num_hidden_layers
                && tc.hidden_size == cfg.hidden_size
                && (0..cfg.num_hidden_layers).all(|l| tc.heads(l) == cfg.heads(l));
            if !same {
                bail!("--teacher {path}: its layers, width or heads differ from {}'s; attention transfer matches layer by layer", s.dir.display());
            }
            if let Some(l) = (0..tc.num_hidden_layers).find(|&l| tc.attention(l) != Attention::Full) {
                bail!("--teacher {path}: layer {l} computes {} attention; the teacher must be the unconverted, full-attention model", tc.attention(l).label());
            }
            t
        }
    };
    let (train_ex, dev_ex) = examples::read_split(data, &s.tokenizer, None, &o.rows, o.opts.seed)?;
    if dev_ex.is_empty() {
        bail!("--dev-fraction 0: attention transfer keeps the epoch with the lowest dev loss, so it needs dev rows");
    }
    let longest = train_ex.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    if longest > teacher.config.max_tokens() {
        bail!("texts of {longest} tokens, but the teacher numbers {} positions: pass --max-len {}", teacher.config.max_tokens(), teacher.config.max_tokens());
    }
    let job = Transfer { teacher, layers, train };
    let before = job.dev_loss(&s.model, &dev_ex)?;
    eprintln!(
        "attention transfer: layers {:?} ({}), training {:?} on {} texts ({} dev) of up to {} tokens; dev loss {before:.6}",
        job.layers,
        job.layers.iter().map(|&l| cfg.attention(l).label()).collect::<Vec<_>>().join(", "),
        train,
        train_ex.len(),
        dev_ex.len(),
        s.tokenizer.max_len
    );
    let mut bert = s.model.clone();
    let params = serde_json::json!({ "data": data.display().to_string(), "teacher": o.teacher, "train": train, "layers": job.layers, "opts": o.opts });
    bert.config.lineage.push(Step::new("attention-transfer", &s.dir, params)?.metric("dev_loss_before", before));
    let start = Instant::now();
    let mut best = Best { job: &job, dev: &dev_ex, out, tokenizer_src: &s.dir, best: None };
    let step = |m: &Bert, batch: &[usize], rng: &mut StdRng| {
        let total = job.loss(m, &train_ex, batch, Some(rng))?;
        let v = total.to_scalar::<f32>()?;
        Ok(Loss { total, parts: vec![("loss", v)] })
    };
    train::fit(bert, Vec::new(), train_ex.len(), &o.opts, step, &mut best)?;
    let (best_epoch, after) = best.best.unwrap_or((0, before));
    Ok(Outcome { layers: job.layers.clone(), train, dev_loss_before: before, dev_loss_after: after, best_epoch, train_seconds: start.elapsed().as_secs_f64() })
}

/// After each epoch: the dev loss, and the model saved when it is the lowest so far.
struct Best<'a> {
    job: &'a Transfer,
    dev: &'a [Example],
    out: &'a OutDir,
    tokenizer_src: &'a Path,
    best: Option<(usize, f64)>,
}

impl Hook for Best<'_> {
    fn after_epoch(&mut self, epoch: usize, m: &Bert) -> Result<()> {
        let loss = self.job.dev_loss(m, self.dev)?;
        eprintln!("epoch {}: dev transfer loss {loss:.6}", epoch + 1);
        if self.best.is_none_or(|(_, b)| loss < b) {
            m.save_dir(self.out, self.tokenizer_src)?;
            self.best = Some((epoch + 1, loss));
        }
        Ok(())
    }
}
