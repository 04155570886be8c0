//! The `quantize` and `sensitivity` commands as library calls: the calibration file read once in a seeded order
//! and carved into disjoint calibration subsets and a dev subset.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::{Map, Value};
use shrink_eval::task::{Fields, Task, TaskData};
use shrink_format::folder::OutDir;
use shrink_io::data;

use super::{select, Options, Source, Summary};

/// The calibration texts: `--calib`, `--calib-samples`, `--calib-field`, `--seed`.
pub struct Calib {
    pub path: Option<PathBuf>,
    pub samples: usize,
    pub field: String,
    pub seed: u64,
}

impl Calib {
    /// The rows in a seeded random order (empty without a file).
    fn check(&self) -> Result<()> {
        if self.samples == 0 {
            bail!("--calib-samples 0: calibration needs at least 1 text");
        }
        Ok(())
    }

    fn rows(&self) -> Result<Vec<Map<String, Value>>> {
        match &self.path {
            Some(p) => Ok(data::shuffled(data::read_jsonl(p)?, self.seed)),
            None => Ok(Vec::new()),
        }
    }

    fn texts(&self, rows: &[Map<String, Value>]) -> Result<Vec<String>> {
        match &self.path {
            Some(p) => data::field(p, rows, &self.field),
            None => Ok(Vec::new()),
        }
    }

    fn name(&self) -> String {
        self.path.as_ref().map_or(String::new(), |p| p.display().to_string())
    }
}

pub struct Job {
    pub model: String,
    pub opts: Options,
    pub calib: Calib,
    /// Tokens per calibration / dev text (None: the model's fine-tuning length, else 128).
    pub max_len: Option<usize>,
    /// Mixed precision: the largest drop on the dev subset, and the wider format sites are promoted to.
    pub max_drop: Option<f64>,
    pub fallback: Option<String>,
    pub dev_samples: usize,
    /// Disjoint calibration subsets whose dev-metric spread is reported; the folder uses the first.
    pub calib_repeats: usize,
    pub report: Option<PathBuf>,
    pub threads: usize,
}

/// Quantizes `job.model` into `out` (checked by the caller before any work).
pub fn run(job: &Job, out: &OutDir) -> Result<Summary> {
    let src = Source::open(&shrink_model::resolve_model(&job.model)?, job.threads, job.max_len)?;
    job.calib.check()?;
    job.opts.check()?;
    let rows = job.calib.rows()?;
    if let Some(d) = job.max_drop.filter(|d| !(d.is_finite() && *d >= 0.0)) {
        bail!("--max-drop {d}: the allowed drop must be a finite number of points >= 0");
    }
    if job.dev_samples == 0 {
        bail!("--dev-samples 0: the dev subset needs at least 1 row");
    }
    let (n, repeats, dev_samples) = (job.calib.samples, job.calib_repeats.max(1), job.dev_samples);
    let wants_dev = job.max_drop.is_some() || repeats > 1;
    if wants_dev && job.calib.path.is_none() {
        bail!("--max-drop and --calib-repeats carve a dev subset from --calib: pass --calib FILE.jsonl");
    }
    let need = n * repeats + if wants_dev { dev_samples } else { 0 };
    if job.calib.path.is_some() && rows.len() < need.min(n) {
        bail!("{}: {} rows, fewer than --calib-samples {n}", job.calib.name(), rows.len());
    }
    if wants_dev && rows.len() < need {
        bail!(
            "{}: {} rows; {repeats} calibration subsets of {n} plus a dev subset of {dev_samples} need {need}",
            job.calib.name(),
            rows.len()
        );
    }
    let subsets: Vec<Vec<String>> =
        (0..repeats).map(|i| job.calib.texts(&rows[(i * n).min(rows.len())..((i + 1) * n).min(rows.len())])).collect::<Result<_>>()?;
    let (threads, max_len) = (job.threads, job.max_len);
    if !wants_dev {
        return super::quantize(&src, out, &job.opts, &subsets[0]);
    }
    let task = if src.cfg.shrink.is_some() { Task::Classify } else { Task::Retrieval };
    let dev_rows = &rows[n * repeats..need];
    let data = TaskData::from_rows(task, job.calib.path.as_deref().unwrap_or(Path::new("")), dev_rows, &Fields::default())?;
    let dev = select::Dev::new(&src, data, 32)?;
    select::run(&src, out, &job.opts, &subsets, &dev, job.max_drop, job.fallback.as_deref(), threads, max_len, job.report.as_deref())
}

/// One site quantized at a time on `data`'s first `limit` rows; writes the report files to `out_dir` and returns
/// the table.
pub struct Sensitivity {
    pub model: String,
    pub opts: Options,
    pub calib: Calib,
    pub max_len: Option<usize>,
    pub task: Task,
    pub data: PathBuf,
    pub fields: Fields,
    pub limit: Option<usize>,
    pub batch: usize,
    pub out_dir: PathBuf,
    pub threads: usize,
}

pub fn sensitivity(job: &Sensitivity) -> Result<String> {
    let src = Source::open(&shrink_model::resolve_model(&job.model)?, job.threads, job.max_len)?;
    job.calib.check()?;
    job.opts.check()?;
    let mut rows = data::read_jsonl(&job.data)?;
    rows.truncate(job.limit.unwrap_or(rows.len()));
    let calib = job.calib.texts(&job.calib.rows()?.into_iter().take(job.calib.samples).collect::<Vec<_>>())?;
    let (threads, max_len) = (job.threads, job.max_len);
    let dev = select::Dev::new(&src, TaskData::from_rows(job.task, &job.data, &rows, &job.fields)?, job.batch)?;
    select::sensitivity_report(&src, &job.opts, &calib, &dev, threads, max_len, &job.out_dir)
}
