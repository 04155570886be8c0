//! Choosing precision with data: per-site sensitivity (one site quantized at a time, the rest fp32), mixed
//! precision under an accuracy budget (the most sensitive sites promoted to a wider format until the dev drop
//! holds), and the spread of the metric over disjoint calibration subsets. Every trial writes a real folder and
//! runs it on the runtime, so what is measured is what ships.

use std::path::Path;

use anyhow::{bail, Context, Result};
use shrink_format::folder::OutDir;
use serde::Serialize;
use shrink_runtime::{Engine, Format};

use super::calib::{Calibration, SiteKey};
use super::{emit, Options, Plan, Source};
use shrink_eval::task::{output_error, Outcome, TaskData};

/// A dev task with the fp32 model's outcome on it.
pub struct Dev {
    pub data: TaskData,
    pub base: Outcome,
    pub batch: usize,
}

impl Dev {
    pub fn new(src: &Source, data: TaskData, batch: usize) -> Result<Self> {
        let base = data.run(&mut src.engine(), batch)?;
        Ok(Self { data, base, batch })
    }
}

/// One measured folder.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// Accuracy or MRR@10 (fraction).
    pub score: f64,
    /// fp32 score minus this one, in points (percent).
    pub drop_points: f64,
    /// Mean relative change of the outputs (logits or embeddings) from fp32.
    pub output_error: f64,
    pub file_bytes: u64,
}

/// Trial folders go under the system temp dir, removed when dropped.
fn scratch() -> Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("shrink-trials-").tempdir().context("cannot create a temp folder for the trials")
}

/// Where trials run.
pub struct Bench<'a> {
    pub src: &'a Source,
    pub opts: &'a Options,
    pub cal: &'a Calibration,
    pub dev: &'a Dev,
    pub threads: usize,
    pub max_len: Option<usize>,
    pub scratch: &'a Path,
}

impl Bench<'_> {
    /// Writes `plan` to the scratch folder, loads it and runs the dev task.
    pub fn trial(&self, plan: &Plan, cal: Option<&Calibration>) -> Result<Trial> {
        let out = self.scratch.join("trial");
        let cal = cal.unwrap_or(self.cal);
        // Each trial replaces the previous one in this run's own scratch folder.
        let summary = emit(self.src, &OutDir::new(&out, &[], true)?, self.opts, plan, cal, None)?;
        let mut engine = Engine::load(&out, shrink_io::model::engine_options(self.threads, self.max_len))?;
        let got = self.dev.data.run(&mut engine, self.dev.batch)?;
        let base = &self.dev.base;
        Ok(Trial {
            score: got.score,
            drop_points: 100.0 * (base.score - got.score),
            output_error: output_error(&base.outputs, &got.outputs),
            file_bytes: summary.bytes_out,
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SiteSensitivity {
    #[serde(skip)]
    pub key: SiteKey,
    pub layer: usize,
    pub site: String,
    pub linears: Vec<String>,
    #[serde(flatten)]
    pub trial: Trial,
}

/// Each site alone in `low`, every other site fp32.
pub fn sensitivity(b: &Bench, layers: usize, low: Format) -> Result<Vec<SiteSensitivity>> {
    let all = Plan::uniform(layers, Format::FP32);
    let pb = shrink_io::events::bar(all.0.len(), "sensitivity");
    let mut out = Vec::new();
    for &(layer, site) in all.0.keys() {
        let mut plan = all.clone();
        plan.0.insert((layer, site), low);
        let trial = b.trial(&plan, None)?;
        out.push(SiteSensitivity { key: (layer, site), layer, site: format!("{site:?}"), linears: site.names(layer), trial });
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// Most sensitive first: larger dev drop, then larger output error.
fn order(sens: &[SiteSensitivity]) -> Vec<SiteKey> {
    let mut v: Vec<&SiteSensitivity> = sens.iter().collect();
    v.sort_by(|a, b| {
        b.trial.drop_points.total_cmp(&a.trial.drop_points).then(b.trial.output_error.total_cmp(&a.trial.output_error))
    });
    v.iter().map(|s| s.key).collect()
}

#[derive(Debug, Serialize)]
pub struct Mixed {
    pub max_drop_points: f64,
    /// Sites moved to the wider format, most sensitive first.
    pub promoted: Vec<String>,
    pub high: String,
    pub low: String,
    pub trial: Trial,
    /// Folders measured during the search (the sensitivity pass not counted).
    pub trials: usize,
    /// Per-site sensitivity, when the search needed it.
    pub sensitivity: Vec<SiteSensitivity>,
    #[serde(skip)]
    pub plan: Plan,
}

/// The fewest most-sensitive sites promoted from `low` to `high` such that the dev drop is at most `max_drop`
/// points: all `low` first (no sensitivity pass needed when it holds), else a binary search over how many sites in
/// sensitivity order, as the drop shrinks (near) monotonically with each promotion.
pub fn mixed_precision(b: &Bench, layers: usize, low: Format, high: Format, max_drop: f64) -> Result<Mixed> {
    let all_low = b.trial(&Plan::uniform(layers, low), None)?;
    let done = |order: &[SiteKey], k: usize, trial: Trial, trials: usize, sensitivity: Vec<SiteSensitivity>| {
        let mut plan = Plan::uniform(layers, low);
        for key in &order[..k] {
            plan.0.insert(*key, high);
        }
        Mixed {
            max_drop_points: max_drop,
            promoted: order[..k].iter().map(|(l, s)| format!("layer {l} {s:?}")).collect(),
            high: high.name.into(),
            low: low.name.into(),
            trial,
            trials,
            sensitivity,
            plan,
        }
    };
    if all_low.drop_points <= max_drop {
        return Ok(done(&[], 0, all_low, 1, Vec::new()));
    }
    let sens = sensitivity(b, layers, low)?;
    let order = order(&sens);
    let mut trials = 1;
    let mut measure = |k: usize| -> Result<Trial> {
        trials += 1;
        let mut p = Plan::uniform(layers, low);
        for key in &order[..k] {
            p.0.insert(*key, high);
        }
        b.trial(&p, None)
    };
    let (mut lo, mut hi) = (1, order.len());
    let mut best = measure(hi)?;
    if best.drop_points > max_drop {
        bail!(
            "even with every site in {} the dev drop is {:.2} points, above --max-drop {max_drop}",
            high.name,
            best.drop_points
        );
    }
    // Invariant: hi holds the budget (best is its trial); lo - 1 does not.
    while lo < hi {
        let mid = (lo + hi) / 2;
        let t = measure(mid)?;
        if t.drop_points <= max_drop {
            (hi, best) = (mid, t);
        } else {
            lo = mid + 1;
        }
    }
    Ok(done(&order, hi, best, trials, sens))
}

/// The dev metric over disjoint calibration subsets.
#[derive(Debug, Serialize)]
pub struct Spread {
    pub scores: Vec<f64>,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(scores: Vec<f64>) -> Self {
        let n = scores.len().max(1) as f64;
        let mean = scores.iter().sum::<f64>() / n;
        let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
        let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Self { scores, mean, std, min, max }
    }
}

/// `shrink quantize` with a dev subset: the calibration spread (several subsets) and/or the mixed-precision search
/// (`max_drop`), then the folder from the first subset's calibration.
#[allow(clippy::too_many_arguments)]
pub fn run(
    src: &Source,
    out: &OutDir,
    opts: &Options,
    subsets: &[Vec<String>],
    dev: &Dev,
    max_drop: Option<f64>,
    fallback: Option<&str>,
    threads: usize,
    max_len: Option<usize>,
    report: Option<&Path>,
) -> Result<super::Summary> {
    let layers = src.cfg.num_hidden_layers;
    let low = opts.format()?;
    let uniform = Plan::uniform(layers, low);
    let cal = src.calibrate(&uniform, opts, &subsets[0])?;
    let scratch = scratch()?;
    let bench = Bench { src, opts, cal: &cal, dev, threads, max_len, scratch: scratch.path() };
    let metric = dev.data.task().metric();
    eprintln!("fp32 on the dev subset ({} rows): {metric} {:.4}", dev.base.outputs.len(), dev.base.score);
    let spread = if subsets.len() > 1 {
        let mut scores = Vec::new();
        for (i, texts) in subsets.iter().enumerate() {
            let t = if i == 0 {
                bench.trial(&uniform, None)?
            } else {
                bench.trial(&uniform, Some(&src.calibrate(&uniform, opts, texts)?))?
            };
            eprintln!("  calibration subset {i}: {metric} {:.4} (drop {:.2} points)", t.score, t.drop_points);
            scores.push(t.score);
        }
        let s = Spread::of(scores);
        eprintln!(
            "{metric} over {} disjoint calibration subsets: mean {:.4}, std {:.4}, min {:.4}, max {:.4}",
            subsets.len(),
            s.mean,
            s.std,
            s.min,
            s.max
        );
        Some(s)
    } else {
        None
    };
    let mixed = match max_drop {
        None => None,
        Some(budget) => {
            let high = match fallback {
                Some(name) => Format::parse(name)?,
                None if matches!(low.storage, shrink_runtime::Storage::I4 { .. }) => Format::parse("int8")?,
                None => Format::FP32,
            };
            let m = mixed_precision(&bench, layers, low, high, budget)?;
            eprintln!(
                "mixed precision: {} of {} sites in {} (the rest {}), dev drop {:.2} points (budget {budget}), {:.1} MB, {} folders measured",
                m.promoted.len(),
                uniform.0.len(),
                m.high,
                m.low,
                m.trial.drop_points,
                m.trial.file_bytes as f64 / 1e6,
                m.trials
            );
            Some(m)
        }
    };
    let plan = mixed.as_ref().map_or(uniform, |m| m.plan.clone());
    let step = super::step(src, opts, subsets[0].len(), &cal)?
        .metric("dev", serde_json::json!({"rows": dev.base.outputs.len(), "metric": metric, "fp32": dev.base.score}))
        .metric("mixed_precision", &mixed)
        .metric("calibration_spread", &spread);
    let summary = emit(src, out, opts, &plan, &cal, Some(step.clone()))?;
    if let Some(path) = report {
        shrink_format::folder::write_atomic(path, serde_json::to_string_pretty(&step)?.as_bytes())?;
    }
    Ok(summary)
}

/// `shrink sensitivity`: one site at a time; the table, also written with JSON and an SVG plot into `out_dir`.
pub fn sensitivity_report(
    src: &Source,
    opts: &Options,
    calib: &[String],
    dev: &Dev,
    threads: usize,
    max_len: Option<usize>,
    out_dir: &Path,
) -> Result<String> {
    let low = opts.format()?;
    let layers = src.cfg.num_hidden_layers;
    let cal = src.calibrate(&Plan::uniform(layers, low), opts, calib)?;
    let scratch = scratch()?;
    let bench = Bench { src, opts, cal: &cal, dev, threads, max_len, scratch: scratch.path() };
    let sens = sensitivity(&bench, layers, low)?;
    let metric = dev.data.task().metric();
    let title = format!("{}: one site at a time in {} (fp32 {metric} {:.4})", src.dir.display(), low.name, dev.base.score);
    let json = serde_json::json!({"model": src.dir, "format": low.name, "metric": metric, "fp32": dev.base.score, "sites": sens});
    super::report::write(out_dir, &title, metric, &sens, &json)
}
