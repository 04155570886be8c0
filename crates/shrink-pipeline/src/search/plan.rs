//! The plan file (`OUT/plan.json`): the search's settings and every trial it has decided to run, each an
//! independent job (`shrink trial PLAN ID`) that reads only this file and the stage folders. Rounds are appended
//! as the search goes; a trial's result is `OUT/trials/ID.json`. Another executor (a cluster's) can run the
//! trials of a round in any order or in parallel.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use shrink_eval::task::Task;
use shrink_format::choices;
use shrink_format::folder::write_atomic;

use crate::recipe::Stage;

choices! {
    /// What the search minimises among the models within the accuracy budget.
    pub enum Objective {
        Size = "size": "bytes on disk",
        Latency = "latency": "median latency on the runtime at --latency-at, --latency-threads",
        Pareto = "pareto": "size x latency, each relative to the teacher (the whole front is in the report)",
    }
}

/// Everything that decides what a trial computes and how it is measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub task: Task,
    /// The checkpoint the search starts from.
    pub model: PathBuf,
    /// Fine-tune `model` on `train` first (it has no classifier for these labels).
    pub finetune: bool,
    /// Training rows every stage uses.
    pub train: PathBuf,
    /// Rows the search ranks trials on (never trained on).
    pub dev: PathBuf,
    pub train_rows: usize,
    pub dev_rows: usize,
    /// Held out: only the chosen model and the teacher are scored on it, after the search.
    pub test: Option<PathBuf>,
    /// What the chosen model may lose against the teacher on dev (`drop`).
    pub max_drop: f64,
    pub objective: Objective,
    /// Latency and memory are measured at batch x seq on this many threads.
    pub batch: usize,
    pub seq: usize,
    pub latency_threads: usize,
    /// Threads the trials train and evaluate with.
    pub threads: usize,
    pub time_budget_s: Option<f64>,
    pub seed: u64,
}

impl Settings {
    /// The metric the search ranks by, as `shrink eval --json` names it.
    pub fn metric(&self) -> &'static str {
        match self.task {
            Task::Classify => "accuracy",
            Task::Retrieval => "mrr@10",
            Task::Perplexity => "perplexity",
        }
    }

    /// `score` with higher better: perplexity is negated.
    pub fn quality(&self, score: f64) -> f64 {
        match self.task {
            Task::Perplexity => -score,
            _ => score,
        }
    }

    /// What `score` loses against the teacher's, in the unit of `max_drop`: points of accuracy or MRR@10, or
    /// percent of perplexity added.
    pub fn drop(&self, teacher: f64, score: f64) -> f64 {
        match self.task {
            Task::Perplexity => (score / teacher - 1.0) * 100.0,
            _ => (teacher - score) * 100.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrialSpec {
    pub id: String,
    pub round: usize,
    /// The structure it belongs to (`teacher`, `prune-h50-f50`, `student-l3`, ...): successive halving ranks these.
    pub structure: String,
    /// Training epochs of its structural stage (0: none).
    pub epochs: usize,
    /// What follows the structure (`fp32`, `trim+int8`, ...).
    pub variant: String,
    /// From `Settings::model`, in order.
    pub stages: Vec<Stage>,
    /// Seconds this session's cost model predicted for it (stages not yet done, plus measuring).
    pub estimate_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub shrink: String,
    pub settings: Settings,
    pub trials: Vec<TrialSpec>,
}

pub const PLAN_FILE: &str = "plan.json";

impl Plan {
    pub fn new(settings: Settings) -> Self {
        Self { shrink: env!("CARGO_PKG_VERSION").to_string(), settings, trials: Vec::new() }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = shrink_format::folder::read_regular(path, "search plan")?;
        let plan: Plan = serde_json::from_str(&text).with_context(|| format!("{}: not a shrink search plan", path.display()))?;
        if plan.shrink != env!("CARGO_PKG_VERSION") {
            bail!("{}: written by shrink {}, this is {}; start a new --out", path.display(), plan.shrink, env!("CARGO_PKG_VERSION"));
        }
        Ok(plan)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }

    pub fn trial(&self, id: &str) -> Result<&TrialSpec> {
        self.trials.iter().find(|t| t.id == id).with_context(|| {
            let ids: Vec<&str> = self.trials.iter().map(|t| t.id.as_str()).collect();
            format!("no trial {id:?} in the plan (it has {})", ids.join(", "))
        })
    }

    pub fn last_round(&self) -> Option<usize> {
        self.trials.iter().map(|t| t.round).max()
    }

    /// Adds `t` unless a trial with the same stages is planned already; its id is then the next free one.
    pub fn push(&mut self, mut t: TrialSpec) -> bool {
        if self.trials.iter().any(|o| o.stages == t.stages) {
            return false;
        }
        t.id = format!("t{:03}", self.trials.len());
        self.trials.push(t);
        true
    }
}

/// The folders of a search under OUT.
#[derive(Debug, Clone)]
pub struct Layout {
    pub out: PathBuf,
}

impl Layout {
    pub fn plan(&self) -> PathBuf {
        self.out.join(PLAN_FILE)
    }
    pub fn stages(&self) -> PathBuf {
        self.out.join("stages")
    }
    pub fn trial(&self, id: &str) -> PathBuf {
        self.out.join("trials").join(format!("{id}.json"))
    }
    pub fn artifacts(&self) -> PathBuf {
        self.out.join("artifacts")
    }
    pub fn data(&self) -> PathBuf {
        self.out.join("data")
    }
}
