//! shrink-pipeline: a recipe (TOML) lists stages; each reads the folder the one before wrote and writes its own,
//! appending to the lineage record. A stage's output is kept under a key made of everything that determines it
//! (`cache.rs`), so a rerun skips finished stages and a run killed mid-stage resumes with that stage. Running a
//! stage is the caller's (`shrink run` hands it to the stage's own command).

pub mod cache;
pub mod recipe;
pub mod run;
pub mod search;

pub use recipe::{Recipe, Stage};
pub use run::{plan, run, Record, StageRun};
