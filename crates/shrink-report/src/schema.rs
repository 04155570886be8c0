//! report.json, schema 1. Scores are fractions (accuracy or MRR@10, as `metric` says); drops are in points (percent).
//! Sizes are bytes of every file in the model folder; latency is the median of 20 runs on the runtime at
//! `batch` x `seq` on `latency_threads` threads; peak RSS is that benchmark process's.

use serde::{Deserialize, Serialize};

pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub schema: u32,
    /// shrink's version.
    pub shrink: String,
    /// Where the numbers were measured (CPU model and cores).
    pub machine: String,
    pub task: String,
    /// `accuracy` or `mrr@10`.
    pub metric: String,
    pub objective: String,
    pub max_drop_points: f64,
    pub batch: usize,
    pub seq: usize,
    pub latency_threads: usize,
    pub data: Data,
    pub time: Time,
    /// Trial ids.
    pub teacher: String,
    pub chosen: String,
    /// Every trial measured (the teacher's among them), in plan order.
    pub trials: Vec<Trial>,
    /// Trials that failed, with the error.
    pub failed: Vec<Failed>,
    /// Trial ids on the front of score against size, and against latency (best score for its size or speed).
    pub front_size: Vec<String>,
    pub front_latency: Vec<String>,
    /// The chosen model's recipe, one row per stage: the model before the first, then after each.
    pub stages: Vec<StageRow>,
    pub sensitivity: Option<Sensitivity>,
    /// Head importance of the teacher, [layer][head] (unit norm per layer).
    pub head_importance: Option<Vec<Vec<f64>>>,
    /// The chosen model's Linears: name, format, bits per stored weight.
    pub bits: Vec<LayerBits>,
    /// The recipe (TOML) `shrink run` rebuilds the chosen model with.
    pub recipe: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Data {
    pub train: String,
    pub train_rows: usize,
    pub dev: String,
    pub dev_rows: usize,
    pub test: Option<String>,
    pub test_rows: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Time {
    pub budget_s: Option<f64>,
    /// Trials and artifacts, over every run of the search.
    pub spent_s: f64,
    /// The budget ran out before the plan did.
    pub out_of_time: bool,
}

/// A model measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scores {
    pub score: f64,
    /// Everything `shrink eval --json` reported (macro F1, recall@k, ...).
    pub metrics: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trial {
    pub id: String,
    pub round: usize,
    pub structure: String,
    pub epochs: usize,
    pub variant: String,
    pub dev: Scores,
    /// Only for the teacher and the chosen model.
    pub test: Option<Scores>,
    pub file_bytes: u64,
    pub latency_ms: f64,
    pub peak_rss_mb: f64,
    pub seconds: f64,
    pub estimate_s: f64,
    /// Within the budget on dev.
    pub passed: bool,
    /// The model folder.
    pub dir: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failed {
    pub id: String,
    pub structure: String,
    pub variant: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageRow {
    /// `model` for the starting point, else the stage's command.
    pub stage: String,
    /// The stage's flags as on its command line.
    pub args: Vec<String>,
    pub dev: Scores,
    pub test: Option<Scores>,
    pub file_bytes: u64,
    pub latency_ms: f64,
    pub peak_rss_mb: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sensitivity {
    /// The format each site was quantized to alone.
    pub format: String,
    pub sites: Vec<Site>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Site {
    pub layer: usize,
    pub site: String,
    pub drop_points: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerBits {
    pub name: String,
    pub format: String,
    pub bits: u32,
}
