//! After the search: the chosen model copied to OUT/model with its recipe, each stage of its recipe measured, the
//! teacher and each stage scored once on the held-out split, and report.json / .md / .html written into OUT.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use shrink_format::folder::write_atomic;
use shrink_format::quant::Format;
use shrink_report::schema as rs;

use crate::recipe::Recipe;
use crate::search::plan::Settings;
use crate::search::strategy::State;
use crate::search::trial::{measure, score, Measured, Shrink, TrialResult};
use crate::search::Outcome;

fn scores(score: f64, metrics: &serde_json::Value) -> rs::Scores {
    rs::Scores { score, metrics: metrics.clone() }
}

fn test_scores(sh: &dyn Shrink, s: &Settings, dir: &Path) -> Result<Option<rs::Scores>> {
    s.test.as_ref().map(|t| score(sh, s, dir, t).map(|(v, m)| scores(v, &m))).transpose()
}

/// Ids on the front of score against `x`: each one scores better than every trial with a smaller `x`.
fn front(s: &Settings, results: &[&TrialResult], x: impl Fn(&TrialResult) -> f64) -> Vec<String> {
    let q = |r: &TrialResult| s.quality(r.dev.score);
    let mut v: Vec<&&TrialResult> = results.iter().collect();
    v.sort_by(|a, b| x(a).total_cmp(&x(b)).then(q(b).total_cmp(&q(a))));
    let mut best = f64::NEG_INFINITY;
    v.into_iter()
        .filter(|r| {
            let keep = q(r) > best;
            best = best.max(q(r));
            keep
        })
        .map(|r| r.id.clone())
        .collect()
}

/// The format and bits of each quantized Linear of the model in `dir`, from its config.json (a decoder's: each
/// layer weight's GGUF type, with its bits per weight rounded down).
fn bits(dir: &Path) -> Result<Vec<rs::LayerBits>> {
    if let Some(gguf) = shrink_format::gguf::file_of(dir) {
        let f = shrink_format::gguf::GgufFile::open(&gguf)?;
        let layer = |t: &&shrink_format::gguf::TensorInfo| t.name.starts_with("blk.") && t.name.ends_with(".weight") && t.dims.len() == 2;
        return Ok(f
            .tensors
            .iter()
            .filter(layer)
            .map(|t| rs::LayerBits { name: t.name.clone(), format: t.kind.name.to_string(), bits: (t.kind.block_bytes * 8 / t.kind.block_elems) as u32 })
            .collect());
    }
    let path = dir.join("config.json");
    let c: serde_json::Value = serde_json::from_str(&shrink_format::folder::read_regular(&path, "model config")?)?;
    let Some(layers) = c["quantization"]["layers"].as_object() else { return Ok(vec![]) };
    layers
        .iter()
        .map(|(name, f)| {
            let f = f.as_str().with_context(|| format!("{}: quantization.layers.{name} is not a string", path.display()))?;
            Ok(rs::LayerBits { name: name.clone(), format: f.to_string(), bits: Format::parse(f)?.bits })
        })
        .collect()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count())
}

/// Copies the folder `from` to `to` whole: into a staging folder beside it, then renamed over the old copy. A
/// decoder's .gguf file becomes the folder's one file.
fn copy_model(from: &Path, to: &Path) -> Result<()> {
    let parent = to.parent().unwrap_or(Path::new("."));
    let tmp = shrink_format::outdir::staging_dir(parent)?;
    let files: Vec<(PathBuf, PathBuf)> = match from.is_file() {
        true => vec![(from.to_path_buf(), tmp.path().join(shrink_format::gguf::FOLDER_FILE))],
        false => std::fs::read_dir(from)
            .with_context(|| format!("{}: cannot list", from.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.metadata().is_ok_and(|m| m.is_file()))
            .map(|e| (e.path(), tmp.path().join(e.file_name())))
            .collect(),
    };
    for (src, dest) in files {
        std::fs::copy(&src, dest).with_context(|| format!("{}: cannot copy", src.display()))?;
    }
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("{}: cannot replace the previous result", to.display()))?;
    }
    std::fs::rename(tmp.keep(), to).with_context(|| format!("{}: cannot write", to.display()))
}

pub fn finish(st: &State, sh: &dyn Shrink, out_of_time: bool) -> Result<Outcome> {
    let s = &st.plan.settings;
    let out = &st.layout.out;
    let teacher = st.teacher().context("the teacher was not measured: no result to report")?;
    let chosen = st.best().unwrap_or(teacher);
    let spec = st.plan.trial(&chosen.id)?;

    // The chosen recipe's stages: the teacher (the checkpoint, or its fine-tuned copy), then each stage after it.
    let first = usize::from(s.finetune);
    let mut stages = Vec::new();
    let row = |stage: String, args: Vec<String>, dir: &Path, m: &Measured| -> Result<rs::StageRow> {
        Ok(rs::StageRow { stage, args, dev: scores(m.score, &m.metrics), test: test_scores(sh, s, dir)?, file_bytes: m.file_bytes, latency_ms: m.latency_ms, peak_rss_mb: m.peak_rss_mb })
    };
    let teacher_name = if s.finetune { "finetune".to_string() } else { "model".to_string() };
    let teacher_args = if s.finetune { spec.stages[0].args(Path::new(".")) } else { vec![] };
    stages.push(row(teacher_name, teacher_args, &teacher.dir, &teacher.dev)?);
    for (i, stage) in spec.stages.iter().enumerate().skip(first) {
        let dir = &chosen.stages[i].dir;
        let m = match st.results.values().find(|r| &r.dir == dir) {
            Some(r) => r.dev.clone(),
            None => measure(sh, s, dir, &s.dev)?,
        };
        stages.push(row(stage.command.clone(), stage.args(Path::new(".")), dir, &m)?);
    }
    let test_of = |dir: &Path| stages.iter().zip(std::iter::once(&teacher.dir).chain(chosen.stages.iter().skip(first).map(|x| &x.dir))).find(|(_, d)| d.as_path() == dir).and_then(|(r, _)| r.test.clone());

    let results: Vec<&TrialResult> = st.plan.trials.iter().filter_map(|t| st.results.get(&t.id)).collect();
    let trials = results
        .iter()
        .map(|r| {
            let t = st.plan.trial(&r.id).expect("planned");
            let test = if r.id == chosen.id || r.id == teacher.id { test_of(&r.dir) } else { None };
            rs::Trial {
                id: r.id.clone(),
                round: t.round,
                structure: t.structure.clone(),
                epochs: t.epochs,
                variant: t.variant.clone(),
                dev: scores(r.dev.score, &r.dev.metrics),
                test,
                file_bytes: r.dev.file_bytes,
                latency_ms: r.dev.latency_ms,
                peak_rss_mb: r.dev.peak_rss_mb,
                seconds: r.seconds,
                estimate_s: t.estimate_s,
                passed: st.passes(r),
                dir: r.dir.display().to_string(),
            }
        })
        .collect();
    let failed = st
        .failures
        .values()
        .map(|f| {
            let t = st.plan.trial(&f.id).expect("planned");
            rs::Failed { id: f.id.clone(), structure: t.structure.clone(), variant: t.variant.clone(), error: f.error.clone() }
        })
        .collect();

    let sensitivity = std::fs::read_to_string(st.layout.artifacts().join("sensitivity/sensitivity.json")).ok().and_then(|t| {
        let v: serde_json::Value = serde_json::from_str(&t).ok()?;
        let sites = v["sites"].as_array()?.iter().filter_map(|x| Some(rs::Site { layer: x["layer"].as_u64()? as usize, site: x["site"].as_str()?.to_string(), drop_points: x["drop_points"].as_f64()? })).collect();
        Some(rs::Sensitivity { format: v["format"].as_str()?.to_string(), sites })
    });
    let head_importance = std::fs::read_to_string(st.layout.artifacts().join("importance/importance.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| serde_json::from_value::<Vec<Vec<f64>>>(v["heads"].clone()).ok());

    let model_dir = out.join("model");
    copy_model(&chosen.dir, &model_dir)?;
    let recipe = Recipe { dir: ".".into(), model: Some(s.model.display().to_string()), stages: spec.stages.clone() }.to_toml();
    write_atomic(&out.join("recipe.toml"), recipe.as_bytes())?;

    let report = rs::Report {
        schema: rs::SCHEMA,
        shrink: env!("CARGO_PKG_VERSION").to_string(),
        machine: machine(),
        task: shrink_format::choice::Choice::name(s.task).to_string(),
        metric: s.metric().to_string(),
        objective: shrink_format::choice::Choice::name(s.objective).to_string(),
        max_drop_points: s.max_drop,
        batch: s.batch,
        seq: s.seq,
        latency_threads: s.latency_threads,
        data: rs::Data {
            train: s.train.display().to_string(),
            train_rows: count(&s.train),
            dev: s.dev.display().to_string(),
            dev_rows: count(&s.dev),
            test: s.test.as_ref().map(|t| t.display().to_string()),
            test_rows: s.test.as_deref().map(count),
        },
        time: rs::Time { budget_s: s.time_budget_s, spent_s: st.spent(), out_of_time },
        teacher: teacher.id.clone(),
        chosen: chosen.id.clone(),
        trials,
        failed,
        front_size: front(s, &results, |r| r.dev.file_bytes as f64),
        front_latency: front(s, &results, |r| r.dev.latency_ms),
        stages,
        sensitivity,
        head_importance,
        bits: bits(&chosen.dir)?,
        recipe,
    };
    shrink_report::write(out, &report)?;
    Ok(Outcome { report, model: model_dir })
}
