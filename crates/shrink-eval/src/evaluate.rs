//! `shrink eval`: a model scored on a task, optionally against a reference model's outputs (`--compare`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use shrink_io::{data, model};

use crate::task::{mean_cosine, output_error, Fields, Outcome, Task, TaskData};

pub struct Job {
    pub model: String,
    pub task: Task,
    pub data: PathBuf,
    pub fields: Fields,
    pub max_len: Option<usize>,
    pub batch: usize,
    /// Also run this model and add how far the outputs moved to the report.
    pub compare: Option<String>,
    pub threads: usize,
}

pub fn run(job: &Job) -> Result<Outcome> {
    let mut engine = model::engine(&job.model, job.max_len, job.threads)?;
    let rows = data::read_jsonl(&job.data)?;
    let task_data = TaskData::from_rows(job.task, &job.data, &rows, &job.fields)?;
    let mut outcome = task_data.run(&mut engine, job.batch)?;
    if let Some(reference) = &job.compare {
        let base = task_data.run(&mut model::engine(reference, job.max_len, job.threads)?, job.batch)?;
        let mut moved = vec![("output_error", output_error(&base.outputs, &outcome.outputs))];
        if job.task == Task::Retrieval {
            moved.push(("mean_cosine", mean_cosine(&base.outputs, &outcome.outputs)));
        }
        for (name, v) in moved {
            // JSON has no NaN: it would print as null and look like a measurement.
            if !v.is_finite() {
                bail!("--compare {reference}: {name} is {v}; the outputs of {} and {reference} cannot be compared", job.model);
            }
            outcome.report[name] = v.into();
        }
        outcome.report["reference_score"] = base.score.into();
    }
    Ok(outcome)
}
