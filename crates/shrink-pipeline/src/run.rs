//! Runs a recipe: stage i reads stage i-1's folder (the first reads the model) and writes
//! `OUT/stages/NN-COMMAND-KEY`; a folder already there under the same key is this stage done before and is used
//! as it is. Folders are written whole or not at all (`OutDir`), so a stage killed midway leaves nothing and is
//! run again. `OUT/model` points at the last stage's folder; `OUT/run.json` records what ran and what was reused.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use shrink_format::folder::{holds_model, write_atomic};
use shrink_io::events;

use crate::cache::stage_key;
use crate::recipe::{Recipe, Stage};

#[derive(Debug, Clone, Serialize)]
pub struct StageRun {
    pub command: String,
    pub args: Vec<String>,
    pub key: String,
    pub dir: PathBuf,
    /// Found finished under its key, not run.
    pub cached: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub model: PathBuf,
    pub stages: Vec<StageRun>,
    /// The last stage's folder.
    pub output: PathBuf,
}

/// Stage `i`'s key and folder under `stages_dir` for the input folder `input`.
fn place(stages_dir: &Path, i: usize, s: &Stage, args: &[String], input: &Path) -> Result<(String, PathBuf)> {
    let key = stage_key(&s.command, args, input)?;
    let hex = key.rsplit(':').next().unwrap_or(&key);
    let dir = stages_dir.join(format!("{:02}-{}-{}", i + 1, s.command, &hex[..12.min(hex.len())]));
    Ok((key, dir))
}

/// A stage as `plan` sees it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub command: String,
    pub args: Vec<String>,
    /// Its folder, when it is done.
    pub done: Option<PathBuf>,
}

/// What `run` would do now, without doing it: each stage with its folder when it is done. The stages after the
/// first one not done are unknown until it runs (their keys depend on its output), so they have no folder either.
pub fn plan(recipe: &Recipe, model: &Path, out: &Path) -> Result<Vec<Planned>> {
    let stages_dir = out.join("stages");
    let mut input = Some(model.to_path_buf());
    let mut plan = Vec::new();
    for (i, s) in recipe.stages.iter().enumerate() {
        let args = s.args(&recipe.dir);
        let done = match &input {
            Some(inp) => Some(place(&stages_dir, i, s, &args, inp)?.1).filter(|d| holds_model(d)),
            None => None,
        };
        input = done.clone();
        plan.push(Planned { command: s.command.clone(), args, done });
    }
    Ok(plan)
}

/// Runs one stage: (stage, its arguments, input folder, output folder to write).
pub type RunStage<'a> = dyn FnMut(&Stage, &[String], &Path, &Path) -> Result<()> + 'a;

/// Runs `stages` from the model folder `model`, each stage's folder under `stages_dir` (trials of a search share
/// one, so a prefix two of them have in common runs once); returns what ran and the last folder.
pub fn run_stages(stages: &[Stage], recipe_dir: &Path, model: &Path, stages_dir: &Path, stage: &mut RunStage) -> Result<(Vec<StageRun>, PathBuf)> {
    std::fs::create_dir_all(stages_dir).with_context(|| format!("{}: cannot create", stages_dir.display()))?;
    let mut input = model.to_path_buf();
    let mut runs = Vec::new();
    let n = stages.len();
    for (i, s) in stages.iter().enumerate() {
        let args = s.args(recipe_dir);
        let (key, dir) = place(stages_dir, i, s, &args, &input)?;
        let start = Instant::now();
        let cached = holds_model(&dir);
        if cached {
            events::note(format!("stage {}/{n} {}: done before, reusing {}", i + 1, s.command, dir.display()));
        } else {
            events::note(format!("stage {}/{n} {} {}", i + 1, s.command, args.join(" ")));
            stage(s, &args, &input, &dir).with_context(|| format!("stage {}/{n} ({})", i + 1, s.command))?;
            if !holds_model(&dir) {
                bail!("stage {}/{n} ({}) wrote no model folder at {}", i + 1, s.command, dir.display());
            }
        }
        runs.push(StageRun { command: s.command.clone(), args, key, dir: dir.clone(), cached, seconds: start.elapsed().as_secs_f64() });
        input = dir;
    }
    Ok((runs, input))
}

/// Runs `recipe` from the model folder `model` into `out`, each stage through `stage`.
pub fn run(recipe: &Recipe, model: &Path, out: &Path, stage: &mut RunStage) -> Result<Record> {
    if out.exists() && !out.join("stages").is_dir() {
        bail!("{}: exists and is not a recipe run's folder (no stages/); name a new folder", out.display());
    }
    let (runs, last) = run_stages(&recipe.stages, &recipe.dir, model, &out.join("stages"), stage)?;
    let record = Record { model: model.to_path_buf(), stages: runs, output: last.clone() };
    write_atomic(&out.join("run.json"), serde_json::to_string_pretty(&record)?.as_bytes())?;
    let link = out.join("model");
    if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        std::fs::remove_file(&link)?;
    }
    let target = last.strip_prefix(out).unwrap_or(&last);
    std::os::unix::fs::symlink(target, &link).with_context(|| format!("{}: cannot link the output", link.display()))?;
    Ok(record)
}
