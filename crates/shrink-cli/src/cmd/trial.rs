use std::path::PathBuf;

use anyhow::Result;
use shrink_pipeline::search::trial::run_trial;

use super::local::Local;

/// One trial of a `shrink compress` plan: its stages (reusing those any trial made before), then its model
/// measured on dev and on the runtime; the result goes to trials/ID.json beside the plan. `shrink compress` runs
/// these itself; this is the job another executor (a cluster's) would run.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink trial out/compress-bbc/plan.json t007\n\
    Prints the result as JSON ({\"error\": ...} when it fails).")]
pub struct Args {
    /// The plan file (OUT/plan.json of a `shrink compress` run).
    plan: PathBuf,
    /// The trial's id (`t007`), as listed in the plan.
    id: String,
}

impl Args {
    pub fn run(self, threads: usize) -> Result<()> {
        let local = Local { threads };
        match run_trial(&self.plan, &self.id, &local, &mut |stage, args, input, output| super::run::run_stage(stage, args, input, output, threads)) {
            Ok(r) => {
                println!("{}", serde_json::to_string(&r)?);
                Ok(())
            }
            Err(e) => {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
                Err(e)
            }
        }
    }
}
