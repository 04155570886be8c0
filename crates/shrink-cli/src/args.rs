//! Flags shared by several subcommands, and the value parsers for library choices.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use shrink_compress::quantize::{self, observer};
use shrink_format::folder::OutDir;
use shrink_io::Choice;
use shrink_train::distill::examples::{Fields, Rows};
use shrink_train::prune::importance::Method;
use shrink_train::train::TrainOptions;

/// The values of a library enum as clap sees them: its spellings and help lines.
pub fn choice<T: Choice>() -> impl TypedValueParser<Value = T> {
    let values = T::CHOICES.iter().map(|&(_, name, help)| if help.is_empty() { PossibleValue::new(name) } else { PossibleValue::new(name).help(help) });
    PossibleValuesParser::new(values).map(|s| T::from_name(&s).expect("clap accepts only listed names"))
}

/// A count that must be at least 1 (batch sizes, sequence lengths, runs).
pub fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// Decoders' `--kv`: how the KV cache stores keys and values.
pub fn kv_format(s: &str) -> Result<shrink_eval::decoder::KvFormat, String> {
    use shrink_eval::decoder::KvFormat;
    KvFormat::parse(s).ok_or_else(|| format!("'{s}': one of {}", KvFormat::NAMES.join(", ")))
}

/// Where a command writes its model folder: `--out` and `--force`.
#[derive(clap::Args)]
pub struct OutArgs {
    /// Output model folder (self-contained, HF-style): a new or empty folder, or with --force a model folder shrink
    /// wrote. Never the input model, a folder holding it, or the current folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out when it holds a model folder shrink wrote (a folder holding anything else is never replaced).
    #[arg(long)]
    pub force: bool,
}

impl OutArgs {
    /// The checked destination, before any work: `inputs` are the model folders the command reads.
    pub fn dir(&self, inputs: &[&str]) -> Result<OutDir> {
        let inputs: Vec<&Path> = inputs.iter().map(Path::new).collect();
        OutDir::new(&self.out, &inputs, self.force)
    }

    /// The checked destination of a decoder written as one GGUF file (`what` says what becomes it).
    pub fn gguf_file(&self, what: &str) -> Result<&Path> {
        let out = self.out.as_path();
        if out.extension().is_none_or(|e| e != "gguf") {
            bail!("{}: {what} is written as one .gguf file; name --out FILE.gguf", out.display());
        }
        if out.exists() && !self.force {
            bail!("{}: exists; pass --force to replace it", out.display());
        }
        Ok(out)
    }
}

/// Optimisation and data flags shared by finetune, distill, qat and sparsify.
#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Fraction of the steps used for linear warm-up.
    #[arg(long, default_value_t = 0.1)]
    pub warmup: f64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Train on a random sample of N rows (seeded by --seed), for quick experiments.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value = "text")]
    pub text_field: String,
    #[arg(long, default_value = "label")]
    pub label_field: String,
}

impl TrainArgs {
    pub fn options(&self) -> Result<TrainOptions> {
        if self.epochs == 0 || self.batch == 0 {
            bail!("--epochs and --batch must be at least 1");
        }
        let Self { epochs, lr, batch, seed, weight_decay, warmup, clip, .. } = *self;
        let o = TrainOptions { epochs, batch, lr, weight_decay, warmup, clip, seed };
        o.check()?;
        Ok(o)
    }

    pub fn fields(&self) -> Fields {
        Fields { text: self.text_field.clone(), label: self.label_field.clone() }
    }
}

/// Tokens per text and the dev split, for distill and qat.
#[derive(clap::Args)]
pub struct RowArgs {
    /// Tokens per text (default: the model's fine-tuning length, else 128).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Fraction of --data held out (seeded) to pick the best epoch (0: keep the last).
    #[arg(long, default_value_t = 0.1)]
    pub dev_fraction: f64,
}

impl RowArgs {
    pub fn rows(&self, t: &TrainArgs) -> Rows {
        Rows { fields: t.fields(), max_len: self.max_len, limit: t.limit, dev_fraction: self.dev_fraction }
    }
}

/// JSONL field names of a task's inputs (eval, sensitivity).
#[derive(clap::Args)]
pub struct FieldArgs {
    /// Retrieval: the query field (each query's own row is its only relevant doc).
    #[arg(long, default_value = "title")]
    pub query_field: String,
    #[arg(long, default_value = "body")]
    pub doc_field: String,
    /// Classification: the text and label fields.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    #[arg(long, default_value = "label")]
    pub label_field: String,
}

impl FieldArgs {
    pub fn fields(self) -> shrink_eval::task::Fields {
        let Self { query_field, doc_field, text_field, label_field } = self;
        shrink_eval::task::Fields { query_field, doc_field, text_field, label_field }
    }
}

/// How to quantize: shared by `quantize` and `sensitivity`.
#[derive(clap::Args)]
pub struct QuantArgs {
    #[arg(long, value_parser = choice::<quantize::Scheme>())]
    pub scheme: quantize::Scheme,
    /// Calibration texts (JSONL); needed by int8-static, --smooth-alpha, --gptq, --max-drop.
    #[arg(long)]
    pub calib: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub calib_samples: usize,
    /// Field of the calibration rows holding the text.
    #[arg(long, default_value = "text")]
    pub calib_field: String,
    /// Seed of the calibration / dev sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// int8-static: how the activation range is chosen.
    #[arg(long, value_parser = choice::<observer::Kind>(), default_value = "minmax")]
    pub observer: observer::Kind,
    /// --observer percentile: the percentile of |x| kept.
    #[arg(long, default_value_t = 99.99)]
    pub percentile: f64,
    #[arg(long, value_parser = choice::<quantize::Granularity>(), default_value = "per-channel")]
    pub weights: quantize::Granularity,
    /// Symmetric activations (zero point 128) instead of asymmetric.
    #[arg(long)]
    pub symmetric: bool,
    /// int4: weights per group of this many inputs (32, 64 or 128).
    #[arg(long, default_value_t = 32)]
    pub group: usize,
    /// int4: activations int8 per token (int4 x int8 GEMM; a .gguf decoder's per block of 32), static int8 (one
    /// calibrated scale per tensor, as int8-static; needs --calib) or f32 (weight-only; int4 on disk, f32 at run time).
    #[arg(long, value_parser = choice::<quantize::ActStorage>(), default_value = "int8")]
    pub activations: quantize::ActStorage,
    /// SmoothQuant migration strength in [0, 1] (0.5 is the paper's default).
    #[arg(long)]
    pub smooth_alpha: Option<f32>,
    /// Decoders: search each site's scales (AWQ: mean |x|^r / mean |w|^(1-r), SmoothQuant's max form, or none) by
    /// its measured output error on the --calib text, instead of one --smooth-alpha.
    #[arg(long)]
    pub awq: bool,
    /// Round weights with GPTQ (calibration Hessian) instead of to nearest.
    #[arg(long)]
    pub gptq: bool,
    /// GPTQ dampening, as a fraction of the mean Hessian diagonal.
    #[arg(long, default_value_t = 0.01)]
    pub damp: f64,
    /// GPTQ: quantize columns in order of decreasing Hessian diagonal.
    #[arg(long)]
    pub act_order: bool,
    /// Storage of the token embedding table (default: fp16 for --scheme fp16, else fp32).
    #[arg(long, value_parser = choice::<quantize::EmbeddingStorage>())]
    pub embeddings: Option<quantize::EmbeddingStorage>,
    /// Attention's products: bf16 inputs with f32 sums on AMX-BF16 tiles (plain f32 on CPUs without them), or fp32. Default:
    /// bf16 when every Linear takes int8 activations, else fp32.
    #[arg(long, value_parser = choice::<quantize::AttentionPrecision>())]
    pub attention: Option<quantize::AttentionPrecision>,
    /// Tokens per calibration / dev text (default: the model's fine-tuning length, else 128).
    #[arg(long)]
    pub max_len: Option<usize>,
}

impl QuantArgs {
    pub fn options(&self) -> quantize::Options {
        let mut o = quantize::Options::new(self.scheme);
        o.embeddings = self.embeddings.unwrap_or(quantize::EmbeddingStorage::default_for(self.scheme));
        o.weights = self.weights;
        o.observer = observer::Method::new(self.observer, self.percentile);
        o.symmetric = self.symmetric;
        o.group = self.group;
        o.int4_acts = self.activations;
        o.smooth_alpha = self.smooth_alpha;
        o.awq = self.awq;
        o.attention = self.attention;
        o.gptq = self.gptq.then_some(quantize::gptq::GptqOptions { damp: self.damp, act_order: self.act_order, ..Default::default() });
        o
    }

    pub fn calib(&self) -> quantize::job::Calib {
        quantize::job::Calib { path: self.calib.clone(), samples: self.calib_samples, field: self.calib_field.clone(), seed: self.seed }
    }
}

/// How importance is scored: shared by `importance` and `prune`.
#[derive(clap::Args)]
pub struct ScoreArgs {
    /// Labelled JSONL (text + label fields) to score on; prune's --recover trains on all of it.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Rows of --data (a seeded random sample) the scores are measured on.
    #[arg(long, default_value_t = 256)]
    pub samples: usize,
    #[arg(long, value_parser = choice::<Method>(), default_value = "taylor")]
    pub method: Method,
    /// Batch of the scoring passes.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens per text (default: the model's fine-tuning length, else 128).
    #[arg(long)]
    pub max_len: Option<usize>,
    #[arg(long, default_value = "text")]
    pub text_field: String,
    #[arg(long, default_value = "label")]
    pub label_field: String,
}

impl ScoreArgs {
    pub fn scoring(self) -> shrink_train::prune::job::Scoring {
        let Self { data, samples, method, batch, seed, max_len, text_field, label_field } = self;
        shrink_train::prune::job::Scoring { data, samples, method, batch, seed, max_len, fields: Fields { text: text_field, label: label_field } }
    }
}
