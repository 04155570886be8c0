//! One trial: its stages run (each reused when done before, by any trial), then the last folder measured for
//! real, each measurement in its own `shrink` process so peak RSS is the model's and not the training's. The
//! result is written whole to `OUT/trials/ID.json`; a trial with a result is done.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shrink_eval::task::Task;
use shrink_format::folder::write_atomic;

use crate::run::{run_stages, RunStage, StageRun};
use crate::search::plan::{Layout, Plan, Settings};

/// Runs a `shrink` command line (no program name) in its own process and returns what it printed on stdout.
pub trait Shrink {
    fn output(&self, argv: &[String]) -> Result<String>;
}

/// A model folder measured: the task on one split, its files, and the runtime at the plan's shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Measured {
    /// The plan's metric (accuracy or MRR@10), a fraction.
    pub score: f64,
    /// Everything `shrink eval --json` reported.
    pub metrics: serde_json::Value,
    pub file_bytes: u64,
    pub latency_ms: f64,
    pub peak_rss_mb: f64,
}

/// Bytes of every file in `dir` (of the file, for a decoder's .gguf).
pub fn folder_bytes(dir: &Path) -> Result<u64> {
    if dir.is_file() {
        return Ok(std::fs::metadata(dir)?.len());
    }
    let mut n = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))? {
        let m = e?.metadata()?;
        if m.is_file() {
            n += m.len();
        }
    }
    Ok(n)
}

/// The task score of `dir` on `data` (`shrink eval`).
pub fn score(sh: &dyn Shrink, s: &Settings, dir: &Path, data: &Path) -> Result<(f64, serde_json::Value)> {
    let argv: Vec<String> = ["eval", &dir.display().to_string(), "--task", shrink_format::choice::Choice::name(s.task), "--data", &data.display().to_string(), "--json"]
        .map(String::from)
        .into();
    let out = sh.output(&argv)?;
    let metrics: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("shrink eval printed {out:?}"))?;
    match metrics[s.metric()].as_f64() {
        Some(v) if v.is_finite() => Ok((v, metrics)),
        _ => bail!("{}: shrink eval reported no finite {} ({out})", dir.display(), s.metric()),
    }
}

/// `shrink bench` of `model` at the plan's shape on `threads`: (latency ms, peak RSS MB). An encoder's latency
/// is the median forward at batch x seq; a decoder's the median generated token after a seq-token prompt.
pub fn bench(sh: &dyn Shrink, s: &Settings, model: &Path, threads: usize, (runs, warmup): (usize, usize)) -> Result<(f64, f64)> {
    let (b, t, threads) = (s.batch.to_string(), s.seq.to_string(), threads.to_string());
    let (n, w) = (runs.to_string(), warmup.to_string());
    let model = model.display().to_string();
    let shape: [&str; 4] = match s.task {
        Task::Perplexity => ["--pp", &t, "--tg", "64"],
        _ => ["--batch", &b, "--seq", &t],
    };
    let mut argv: Vec<String> = ["--threads", &threads, "bench", &model].map(String::from).into();
    argv.extend(shape.map(String::from));
    argv.extend(["--runs", &n, "--warmup", &w, "--json"].map(String::from));
    let out = sh.output(&argv)?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).with_context(|| format!("shrink bench printed {out:?}"))?;
    let num = |k: &str| v[k].as_f64().filter(|v| v.is_finite() && *v > 0.0).with_context(|| format!("shrink bench reported no {k} ({out})"));
    let ms = match s.task {
        Task::Perplexity => 1000.0 / num("tg_tokens_per_s")?,
        _ => num("median_ms")?,
    };
    Ok((ms, num("peak_rss_mb")?))
}

/// `dir` measured on `data` (dev for trials) and on the runtime (`shrink bench` at the plan's shape).
pub fn measure(sh: &dyn Shrink, s: &Settings, dir: &Path, data: &Path) -> Result<Measured> {
    let (score, metrics) = score(sh, s, dir, data)?;
    // A decoder's run generates 64 tokens: fewer runs take as long.
    let runs = if s.task == Task::Perplexity { (5, 1) } else { (20, 3) };
    let (latency_ms, peak_rss_mb) = bench(sh, s, dir, s.latency_threads, runs)?;
    Ok(Measured { score, metrics, file_bytes: folder_bytes(dir)?, latency_ms, peak_rss_mb })
}

/// What a trial produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrialResult {
    pub id: String,
    /// The model folder it measured (the last stage's).
    pub dir: PathBuf,
    pub stages: Vec<StageRunRecord>,
    /// On dev.
    pub dev: Measured,
    /// Wall time of the trial: stages not found done, plus measuring.
    pub seconds: f64,
}

/// A stage of a trial: its folder and whether an earlier trial had made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageRunRecord {
    pub command: String,
    pub dir: PathBuf,
    pub cached: bool,
    pub seconds: f64,
}

impl From<StageRun> for StageRunRecord {
    fn from(s: StageRun) -> Self {
        Self { command: s.command, dir: s.dir, cached: s.cached, seconds: s.seconds }
    }
}

/// A finished trial's result, if it has one.
pub fn result(layout: &Layout, id: &str) -> Result<Option<TrialResult>> {
    let path = layout.trial(id);
    if !path.exists() {
        return Ok(None);
    }
    let text = shrink_format::folder::read_regular(&path, "trial result")?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a trial result", path.display()))?))
}

/// `shrink trial PLAN ID`: runs trial `id` of the plan at `plan_path` unless it has a result.
pub fn run_trial(plan_path: &Path, id: &str, sh: &dyn Shrink, stage: &mut RunStage) -> Result<TrialResult> {
    let plan = Plan::load(plan_path)?;
    let layout = Layout { out: plan_path.parent().unwrap_or(Path::new(".")).to_path_buf() };
    if let Some(done) = result(&layout, id)? {
        return Ok(done);
    }
    let spec = plan.trial(id)?;
    let start = Instant::now();
    let (runs, dir) = run_stages(&spec.stages, Path::new("."), &plan.settings.model, &layout.stages(), stage)?;
    let dev = measure(sh, &plan.settings, &dir, &plan.settings.dev).with_context(|| format!("trial {id}: measuring {}", dir.display()))?;
    let r = TrialResult { id: id.to_string(), dir, stages: runs.into_iter().map(Into::into).collect(), dev, seconds: start.elapsed().as_secs_f64() };
    let path = layout.trial(id);
    std::fs::create_dir_all(path.parent().expect("trials/"))?;
    write_atomic(&path, serde_json::to_string_pretty(&r)?.as_bytes())?;
    Ok(r)
}
