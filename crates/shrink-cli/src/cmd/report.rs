use std::path::PathBuf;

use anyhow::Result;

/// Render report.md and report.html again from the report.json of a `shrink compress` run.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  shrink report out/compress-bbc")]
pub struct Args {
    /// The folder holding report.json (the --out of `shrink compress`).
    dir: PathBuf,
}

impl Args {
    pub fn run(self) -> Result<()> {
        let r = shrink_report::read(&self.dir)?;
        shrink_report::render(&self.dir, &r)?;
        eprintln!("wrote {} and {}", self.dir.join("report.md").display(), self.dir.join("report.html").display());
        Ok(())
    }
}
