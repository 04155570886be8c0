use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use shrink_eval::task::Task;
use shrink_pipeline::search::plan::{Layout, Objective, Settings};

use super::local::Local;
use crate::args::choice;

/// The budget search: from a checkpoint and labelled data to the smallest (or fastest) model within --max-drop
/// points of the teacher on dev. Structures (pruned heads / FFN / layers, shallower students) are trained
/// briefly, the better half trained again with twice the epochs (successive halving), each with the
/// post-training formats that kept the teacher within the budget; every candidate is a real folder measured on
/// dev and on the runtime. The chosen model is scored once on --test and copied to OUT/model, with
/// report.html / report.md / report.json and recipe.toml beside it. Run again with the same flags to resume.
/// A decoder (.gguf, --task perplexity) has no structures to train yet: its trials are int8, int4 (GPTQ + AWQ)
/// and mixed int4/int8 at two shares of the budget, and --max-drop is percent of perplexity added.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    shrink compress assets/models/all-MiniLM-L6-v2 --task classify --data assets/data/bbc/train.jsonl --dev-fraction 0.1 \\\n    \
    --test assets/data/bbc/test.jsonl --max-drop 1.0 --objective size --time-budget 45m --out out/compress-bbc\n  \
    shrink compress assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf --task perplexity \\\n    \
    --data ../shared/data/wikitext-2/valid.txt --test ../shared/data/wikitext-2/test.txt --max-drop 5 --objective latency --out out/compress-smollm2\n  \
    shrink compress ... --dry-run      (the plan with estimated times; runs nothing)\n\
    OUT holds plan.json (the trials, each runnable as `shrink trial OUT/plan.json ID`), trials/ (results),\n\
    stages/ (every model folder, shared by trials), artifacts/ (sensitivity, head importance), model/ (the result).")]
pub struct Args {
    /// The checkpoint: a classifier of the data's labels is the teacher as it is; a checkpoint without one is
    /// fine-tuned on --data first (3 epochs).
    model: String,
    #[arg(long, value_parser = choice::<Task>(), default_value = "classify")]
    task: Task,
    /// Training rows (JSONL: text and label for classify; title and body for retrieval; plain text, the
    /// calibration text, for perplexity).
    #[arg(long)]
    data: PathBuf,
    /// Dev rows the search ranks on (default: --dev-fraction of --data, seeded, never trained on).
    #[arg(long)]
    dev: Option<PathBuf>,
    #[arg(long, default_value_t = 0.1)]
    dev_fraction: f64,
    /// Held-out rows: only the chosen model and the teacher are scored on them, once, after the search.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Points (percent) of accuracy, or of MRR@10 for retrieval, the result may lose against the teacher on dev;
    /// for perplexity, percent it may add.
    #[arg(long, default_value_t = 1.0)]
    max_drop: f64,
    #[arg(long, value_parser = choice::<Objective>(), default_value = "size")]
    objective: Objective,
    /// Latency (and peak RSS) measured at BATCHxSEQ; SEQ is also the fine-tuning length. A decoder's latency is
    /// per generated token after a SEQ-token prompt.
    #[arg(long, default_value = "1x128")]
    latency_at: String,
    #[arg(long, default_value_t = 1)]
    latency_threads: usize,
    /// Stop starting (and stop) trials after this much search time, e.g. 3h, 45m, 1h30m, 600s; the best model
    /// measured by then is the result. Time spent by earlier runs of the same search counts.
    #[arg(long)]
    time_budget: Option<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    out: PathBuf,
    /// Print the plan with estimated times and run nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What a compress folder holds: its own outputs only, so `--out` cannot name a folder with other files in it.
const OURS: [&str; 10] = ["plan.json", "data", "stages", "trials", "artifacts", "model", "recipe.toml", "report.json", "report.md", "report.html"];

/// `3h`, `45m`, `1h30m`, `90s`, or plain seconds.
pub fn duration_s(text: &str) -> Result<f64> {
    let bad = || format!("--time-budget {text:?}: not a duration (like 3h, 45m, 1h30m, 600s)");
    if let Ok(s) = text.parse::<f64>() {
        return if s > 0.0 { Ok(s) } else { bail!(bad()) };
    }
    let (mut total, mut num) = (0.0, String::new());
    for c in text.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'h' | 'm' | 's' => {
                let v: f64 = num.parse().with_context(bad)?;
                total += v * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => bail!(bad()),
        }
    }
    if !num.is_empty() || total <= 0.0 {
        bail!(bad());
    }
    Ok(total)
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}: cannot make the path absolute", p.display()))
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let decoder = shrink_eval::decoder::Decoder::is_decoder(self.model.as_ref());
        match (self.task == Task::Perplexity, decoder) {
            (true, false) => bail!("{}: --task perplexity searches a decoder (a .gguf file); this is not one", self.model),
            (false, true) => bail!("{}: a decoder; its search is --task perplexity (with plain text as --data)", self.model),
            _ => {}
        }
        if shrink_format::arch::llama::HfConfig::is_folder(self.model.as_ref()) {
            bail!("{}: an HF Llama folder; decoders are searched from a .gguf file so far (quantize reads .gguf)", self.model);
        }
        let (batch, seq) = self
            .latency_at
            .split_once('x')
            .and_then(|(b, t)| Some((b.parse::<usize>().ok()?, t.parse::<usize>().ok()?)))
            .filter(|&(b, t)| b > 0 && t > 0)
            .with_context(|| format!("--latency-at {:?}: give it as BATCHxSEQ, like 1x128", self.latency_at))?;
        if !(self.max_drop >= 0.0) {
            bail!("--max-drop {}: must be 0 or more points", self.max_drop);
        }
        let time_budget_s = self.time_budget.as_deref().map(duration_s).transpose()?;
        let out = absolute(&self.out)?;
        if out.exists() {
            let names: Vec<String> = std::fs::read_dir(&out).with_context(|| format!("{}: cannot list", out.display()))?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<std::io::Result<_>>()?;
            if let Some(other) = names.iter().find(|n| !OURS.contains(&n.as_str())) {
                bail!("{}: exists and holds {other:?}, which a shrink compress folder does not; name a new or empty folder", out.display());
            }
        }
        let layout = Layout { out: out.clone() };
        let model = match decoder {
            true => absolute(Path::new(&self.model))?,
            false => absolute(&shrink_io::model::resolve_model(&self.model)?)?,
        };
        for p in [Some(&self.data), self.dev.as_ref(), self.test.as_ref()].into_iter().flatten() {
            if !p.is_file() {
                bail!("{}: no such data file", p.display());
            }
        }
        let (data, dev, test) = (absolute(&self.data)?, self.dev.as_deref().map(absolute).transpose()?, self.test.as_deref().map(absolute).transpose()?);
        if !self.dry_run {
            std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
        }
        // A dry run writes nothing into OUT: its split (only counted) goes to a temp folder.
        let scratch = tempfile::tempdir().context("cannot create a temp folder")?;
        let split_in = if self.dry_run && !out.join("plan.json").exists() { Layout { out: scratch.path().to_path_buf() } } else { layout.clone() };
        let (train, dev) = shrink_pipeline::search::split(self.task, &data, dev.as_deref(), self.dev_fraction, self.seed, &split_in)?;
        let finetune = shrink_pipeline::search::needs_finetune(self.task, &model, &train)?;
        if !finetune && self.task == Task::Classify && self.dev.is_none() {
            eprintln!("note: {} already classifies these labels; if it was trained on {}, the dev split carved from it is not held out (pass --dev)", model.display(), data.display());
        }
        let settings = Settings {
            task: self.task,
            model,
            finetune,
            train_rows: shrink_pipeline::search::lines(&train)?.len(),
            dev_rows: shrink_pipeline::search::lines(&dev)?.len(),
            train,
            dev,
            test,
            max_drop: self.max_drop,
            objective: self.objective,
            batch,
            seq,
            latency_threads: self.latency_threads,
            threads,
            time_budget_s,
            seed: self.seed,
        };
        let local = Local { threads };
        if self.dry_run {
            print!("{}", shrink_pipeline::search::dry_run(settings, &layout, &local)?);
            return Ok(());
        }
        let outcome = shrink_pipeline::search::compress(settings, &layout, &local, &local)?;
        eprintln!("{}", shrink_report::html::headline(&outcome.report));
        eprintln!("model: {}; report: {}", outcome.model.display(), out.join("report.html").display());
        let chosen = outcome.report.trials.iter().find(|t| t.id == outcome.report.chosen);
        println!("{}", serde_json::to_string(&serde_json::json!({ "model": outcome.model, "chosen": chosen, "report": out.join("report.json") }))?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::duration_s;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration_s("3h").unwrap(), 10800.0);
        assert_eq!(duration_s("1h30m").unwrap(), 5400.0);
        assert_eq!(duration_s("45m").unwrap(), 2700.0);
        assert_eq!(duration_s("90").unwrap(), 90.0);
        for bad in ["", "3x", "h", "-5", "10m5"] {
            assert!(duration_s(bad).is_err(), "{bad}");
        }
    }
}
