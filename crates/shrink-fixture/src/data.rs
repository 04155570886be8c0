//! A labelled slice of the BBC split, every topic in it.

use std::path::Path;

use anyhow::{Context, Result};

pub struct Row {
    pub line: String,
    pub text: String,
}

/// Every row of a BBC JSONL file.
pub fn bbc_rows(file: &Path) -> Result<Vec<Row>> {
    let all = std::fs::read_to_string(file).with_context(|| format!("{}: run scripts/fetch-assets.sh", file.display()))?;
    all.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).with_context(|| format!("{}: not JSON", file.display()))?;
            let field = |k: &str| v[k].as_str().map(str::to_string).with_context(|| format!("{}: row without {k}", file.display()));
            Ok(Row { line: l.to_string(), text: field("text")? })
        })
        .collect()
}

/// Writes `n` rows of `src` to `dst`, evenly spaced through the file. The file is sorted by topic, so the spacing
/// takes every topic in proportion.
pub fn write_slice(src: &Path, dst: &Path, n: usize) -> Result<()> {
    let rows = bbc_rows(src)?;
    let step = (rows.len() / n).max(1);
    let picked: String = rows.iter().step_by(step).take(n).map(|r| format!("{}\n", r.line)).collect();
    std::fs::write(dst, picked)?;
    Ok(())
}
