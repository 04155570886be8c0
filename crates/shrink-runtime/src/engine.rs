//! The public face of the runtime: load a folder once, then embed, classify or run the raw forward pass.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use shrink_format::folder::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use shrink_format::tensors::Load;
use shrink_format::{Batch, Config, TensorFile, TextTokenizer};

use crate::error::Error;
use crate::model::{Buffers, Model, Observer};

#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads for this engine's own pool: 1 ..= `max_threads()` (0 means 1).
    pub threads: usize,
    /// Tokens per text (longer texts are cut); None = what the model was fine-tuned with, else 128.
    pub max_len: Option<usize>,
    /// Memory-map model.safetensors (true: pages shared with the page cache; the file must not be truncated or
    /// rewritten in place while the engine lives, or the process dies of SIGBUS) or read it into memory (false).
    pub mmap: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { threads: 1, max_len: None, mmap: true }
    }
}

/// A text of the batch whose output holds NaN or infinity: the forward pass overflowed (weights too large) or the
/// weights hold NaN. Returned by `embed_batch` / `logits_batch` (and so `embed` / `classify`) instead of the numbers,
/// which would otherwise rank or classify as if they meant something; callers map `item` back to their row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFinite {
    /// Index of the text in the batch (0-based).
    pub item: usize,
    /// "embedding" or "logits".
    pub output: &'static str,
}

impl NonFinite {
    /// What went wrong, without the batch position.
    pub fn reason(&self) -> String {
        format!("NaN or infinity in its {}: the forward pass overflowed or the weights hold NaN", self.output)
    }

    /// The first row of `rows` (B rows of `width`) holding a non-finite value.
    fn check(rows: &[f32], width: usize, output: &'static str) -> Result<()> {
        match rows.chunks_exact(width.max(1)).position(|r| !r.iter().all(|v| v.is_finite())) {
            Some(item) => Err(Error::NonFinite(Self { item, output }).into()),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "text {} of the batch: {}", self.item + 1, self.reason())
    }
}

impl std::error::Error for NonFinite {}

/// Most worker threads an engine starts: 4 x the cores this process may use. More only queue for the cores, and
/// starting tens of thousands took tens of seconds before the pool failed.
pub fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `threads` if it is at most `max_threads()` (0 counts as 1), else an error saying the limit.
pub fn check_threads(threads: usize) -> Result<usize> {
    let max = max_threads();
    if threads > max {
        bail!(Error::Threads(format!("{threads} worker threads: at most {max} (4 x the {} cores available)", max / 4)));
    }
    Ok(threads.max(1))
}

/// One classified text.
#[derive(Clone, Debug)]
pub struct Prediction {
    pub index: usize,
    pub label: String,
    /// Softmax over the labels.
    pub probs: Vec<f32>,
}

pub struct Engine {
    pub config: Config,
    pub dir: PathBuf,
    pub tokenizer: TextTokenizer,
    model: Model,
    bufs: Buffers,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Bytes of the largest plan checked against free memory so far: smaller shapes need no new check.
    planned_bytes: usize,
}

impl Engine {
    /// Loads an fp32 HF folder or a folder written by `shrink quantize`: packs the weights once and maps the
    /// embedding table in place when it is stored as F32.
    pub fn load(dir: &Path, opts: Options) -> Result<Self> {
        Self::open(dir, opts, true)
    }

    /// `load` for a folder that may have no tokenizer.json (RoBERTa checkpoints often ship it apart): `forward`
    /// runs on token ids; without the file, text methods are errors naming it.
    pub fn load_ids(dir: &Path, opts: Options) -> Result<Self> {
        Self::open(dir, opts, dir.join(TOKENIZER_FILE).exists())
    }

    fn open(dir: &Path, opts: Options, tokenizer: bool) -> Result<Self> {
        let threads = check_threads(opts.threads)?;
        if !dir.is_dir() {
            bail!("{}: no such model folder", dir.display());
        }
        let config = Config::load(&dir.join(CONFIG_FILE))?;
        let max_len = opts.max_len.or(config.shrink.as_ref().and_then(|s| s.max_len)).unwrap_or(128);
        if max_len > config.max_tokens() {
            bail!(
                "max length {max_len} exceeds the {} tokens max_position_embeddings {} numbers ({})",
                config.max_tokens(),
                config.max_position_embeddings,
                dir.join(CONFIG_FILE).display()
            );
        }
        let tokenizer = match tokenizer {
            true => TextTokenizer::for_model(dir, max_len, config.vocab_size)?,
            false => TextTokenizer::absent(dir, max_len),
        };
        let load = if opts.mmap { Load::Map } else { Load::Copy };
        let file = Arc::new(TensorFile::open_with(&dir.join(WEIGHTS_FILE), load)?);
        let labels = match (&config.shrink, config.labels()) {
            (Some(_), Some(l)) => Some(l.len()),
            (Some(_), None) => bail!("{}: config.json has a shrink head but no id2label", dir.join(CONFIG_FILE).display()),
            _ => None,
        };
        let model = Model::load(&file, &config, labels).with_context(|| format!("loading {}", dir.display()))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("shrink-{i}"))
            .build()
            .context("cannot start worker threads")?;
        Ok(Self { config, dir: dir.to_path_buf(), tokenizer, model, bufs: Buffers::default(), pool, threads, planned_bytes: 0 })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Bytes of weights in memory (a mapped table counts, though its pages are shared with the page cache).
    pub fn weight_bytes(&self) -> usize {
        self.model.bytes()
    }

    pub fn labels(&self) -> Option<Vec<String>> {
        self.model.classifier.as_ref().and(self.config.labels())
    }

    /// Last hidden state (B*T, C) for ids and mask (B, T, row-major; mask 1 = token, 0 = padding). After the first
    /// call at a given size, allocates nothing.
    pub fn forward(&mut self, ids: &[u32], mask: &[u32], b: usize, t: usize) -> Result<&[f32]> {
        self.run(ids, mask, b, t, None)?;
        Ok(&self.model.hidden(&self.bufs)[..b * t * self.config.hidden_size])
    }

    /// `forward` that also returns the embedding output and every layer's output, each (B*T, C).
    pub fn forward_all_layers(&mut self, ids: &[u32], mask: &[u32], b: usize, t: usize) -> Result<Vec<Vec<f32>>> {
        let mut hidden: Vec<Vec<f32>> = Vec::new();
        self.run(ids, mask, b, t, Some(&mut hidden))?;
        Ok(hidden)
    }

    /// Runs `batch` with `obs` seeing every Linear's input and every hidden state (calibration, layer checks).
    pub fn observe(&mut self, batch: &Batch, obs: &mut dyn Observer) -> Result<()> {
        self.run(&batch.ids, &batch.mask, batch.b, batch.t, Some(obs))
    }

    /// Sentence embeddings: mean over real tokens, L2-normalised; (B, C) row-major. A row that is not finite is a
    /// `NonFinite` error.
    pub fn embed_batch(&mut self, batch: &Batch) -> Result<&[f32]> {
        self.run(&batch.ids, &batch.mask, batch.b, batch.t, None)?;
        let c = self.config.hidden_size;
        self.model.pool(&batch.mask, batch.b, batch.t, &mut self.bufs);
        let pooled = &mut self.bufs.pooled[..batch.b * c];
        for row in pooled.chunks_exact_mut(c) {
            let inv = 1.0 / row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v *= inv);
        }
        NonFinite::check(pooled, c, "embedding")?;
        Ok(pooled)
    }

    /// Classifier logits (B, L) from the mean-pooled output. A row that is not finite is a `NonFinite` error.
    pub fn logits_batch(&mut self, batch: &Batch) -> Result<&[f32]> {
        if self.model.classifier.is_none() {
            bail!(Error::NoHead(self.dir.display().to_string()));
        }
        self.run(&batch.ids, &batch.mask, batch.b, batch.t, None)?;
        self.model.pool(&batch.mask, batch.b, batch.t, &mut self.bufs);
        self.model.head(batch.b, &mut self.bufs)?;
        let l = self.model.classifier.as_ref().map_or(0, |h| h.n());
        let logits = &self.bufs.logits[..batch.b * l];
        NonFinite::check(logits, l, "logits")?;
        Ok(logits)
    }

    /// One embedding per text.
    pub fn embed<S: AsRef<str>>(&mut self, texts: &[S]) -> Result<Vec<Vec<f32>>> {
        let batch = self.tokenizer.batch(texts)?;
        let c = self.config.hidden_size;
        Ok(self.embed_batch(&batch)?.chunks_exact(c).map(<[f32]>::to_vec).collect())
    }

    /// The most likely label of each text, with the probabilities of all labels.
    pub fn classify<S: AsRef<str>>(&mut self, texts: &[S]) -> Result<Vec<Prediction>> {
        let batch = self.tokenizer.batch(texts)?;
        let names = self.labels().unwrap_or_default();
        let l = names.len();
        let logits = self.logits_batch(&batch)?;
        Ok(logits
            .chunks_exact(l.max(1))
            .map(|row| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                let probs: Vec<f32> = e.iter().map(|v| v / sum).collect();
                let index = (0..l).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap_or(0);
                Prediction { index, label: names.get(index).cloned().unwrap_or_default(), probs }
            })
            .collect())
    }

    /// Sizes the buffers for a (B, T) batch, first checking the sizes fit in memory: an error, not an abort, when
    /// they overflow or exceed what the machine has free. `forward` and friends call it; a caller can call it
    /// before making a batch that large.
    pub fn reserve(&mut self, b: usize, t: usize) -> Result<()> {
        self.check_shape(b, t)?;
        let plan = self.model.plan(b, t, self.threads).ok_or_else(|| Error::Memory(format!("a batch of {b} x {t} tokens: buffer sizes overflow")))?;
        if plan.bytes > self.planned_bytes {
            let more = plan.bytes - self.planned_bytes;
            if let Some(free) = available_memory().filter(|&free| more > free) {
                bail!(Error::Memory(format!(
                    "a batch of {b} x {t} tokens needs about {:.1} MB more for activations, but only {:.1} MB of memory is available",
                    more as f64 / 1e6,
                    free as f64 / 1e6
                )));
            }
            self.planned_bytes = plan.bytes;
        }
        self.model.grow(&mut self.bufs, &plan);
        Ok(())
    }

    fn run(&mut self, ids: &[u32], mask: &[u32], b: usize, t: usize, obs: Option<&mut dyn Observer>) -> Result<()> {
        self.check(ids, mask, b, t)?;
        self.reserve(b, t)?;
        let threads = self.threads;
        let Self { model, bufs, pool, .. } = self;
        pool.install(|| model.forward(ids, mask, b, t, threads, bufs, obs));
        Ok(())
    }

    /// B x T, checked: both at least 1, T within the position table, the product without overflow.
    fn check_shape(&self, b: usize, t: usize) -> Result<usize> {
        if b == 0 || t == 0 {
            bail!(Error::Input(format!("empty batch ({b} x {t})")));
        }
        if t > self.model.embeddings.max_positions {
            bail!(Error::Input(format!("sequence of {t} tokens exceeds the {} that max_position_embeddings numbers", self.model.embeddings.max_positions)));
        }
        Ok(b.checked_mul(t).ok_or_else(|| Error::Input(format!("a batch of {b} x {t} tokens: B x T overflows")))?)
    }

    fn check(&self, ids: &[u32], mask: &[u32], b: usize, t: usize) -> Result<()> {
        let m = self.check_shape(b, t)?;
        if ids.len() != m || mask.len() != m {
            bail!(Error::Input(format!("ids ({}) and mask ({}) must both hold B x T = {b} x {t} values", ids.len(), mask.len())));
        }
        let vocab = self.model.embeddings.vocab;
        if let Some(i) = ids.iter().position(|&id| id as usize >= vocab) {
            bail!(Error::Input(format!(
                "{}: token id {} (sequence {}, position {}) is outside the vocabulary of {vocab} (config.json vocab_size)",
                self.dir.display(),
                ids[i],
                i / t,
                i % t
            )));
        }
        if let Some(i) = mask.iter().position(|&v| v > 1) {
            bail!(Error::Input(format!("mask value {} at position {i}: expected 0 or 1", mask[i])));
        }
        Ok(())
    }
}

/// Bytes of memory the system could still hand out: MemAvailable (free plus reclaimable cache) from /proc/meminfo,
/// MemTotal on kernels without it; None where there is no /proc/meminfo (no check is made).
fn available_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |key: &str| -> Option<usize> {
        let kb = info.lines().find_map(|l| l.strip_prefix(key))?.trim().strip_suffix("kB")?.trim().parse::<usize>().ok()?;
        kb.checked_mul(1024)
    };
    field("MemAvailable:").or_else(|| field("MemTotal:"))
}
