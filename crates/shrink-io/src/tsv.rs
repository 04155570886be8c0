//! Labelled TSV (a header row naming the columns, then one row per line, tab-separated, no quoting: the GLUE files
//! such as SST-2) into the JSONL rows every command reads, with a seeded dev split carved off.

use std::path::Path;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::data::{read_utf8, write_jsonl};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub text: String,
    pub label: String,
}

/// The `text` and `label` columns of `path`; `names` maps label values (`0`, `1`) to names, in index order.
pub fn read(path: &Path, text: &str, label: &str, names: Option<&[String]>) -> Result<Vec<Row>> {
    let content = read_utf8(path)?;
    let mut lines = content.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').map(str::trim).collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (Some(t), Some(l)) = (col(text), col(label)) else {
        let missing: Vec<&str> = [text, label].into_iter().filter(|c| col(c).is_none()).collect();
        bail!("{}: the header {header:?} has no column {missing:?} (--text-column, --label-column)", path.display());
    };
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let at = i + 2;
        let cells: Vec<&str> = line.split('\t').collect();
        if cells.len() != header.len() {
            bail!("{}:{at}: {} columns, the header has {}", path.display(), cells.len(), header.len());
        }
        let text = cells[t].trim();
        if text.is_empty() {
            bail!("{}:{at}: empty text", path.display());
        }
        let value = cells[l].trim();
        let label = match names {
            None => value.to_string(),
            Some(names) => match value.parse::<usize>().ok().and_then(|k| names.get(k)) {
                Some(n) => n.clone(),
                None => bail!("{}:{at}: label {value:?} is not an index into --labels {names:?}", path.display()),
            },
        };
        rows.push(Row { text: text.to_string(), label });
    }
    if rows.is_empty() {
        bail!("{}: no rows after the header", path.display());
    }
    Ok(rows)
}

/// (train, dev): a seeded random `fraction` of the rows is dev; both keep the file's order.
pub fn split(rows: Vec<Row>, fraction: f64, seed: u64) -> Result<(Vec<Row>, Vec<Row>)> {
    if !(0.0..1.0).contains(&fraction) {
        bail!("--dev-fraction {fraction}: must be in [0, 1)");
    }
    let n_dev = (rows.len() as f64 * fraction).round() as usize;
    let dev_idx: std::collections::HashSet<usize> = crate::data::sample((0..rows.len()).collect(), Some(n_dev), seed).into_iter().collect();
    let (mut train, mut dev) = (Vec::new(), Vec::new());
    for (i, r) in rows.into_iter().enumerate() {
        if dev_idx.contains(&i) { dev.push(r) } else { train.push(r) }
    }
    Ok((train, dev))
}

/// `read` + `split`, written as `out/train.jsonl` and `out/dev.jsonl`.
pub fn write_split(path: &Path, text: &str, label: &str, names: Option<&[String]>, fraction: f64, seed: u64, out: &Path) -> Result<(Vec<Row>, Vec<Row>)> {
    let (train, dev) = split(read(path, text, label, names)?, fraction, seed)?;
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("{}: cannot create ({e})", out.display()))?;
    write_jsonl(&out.join("train.jsonl"), &train)?;
    write_jsonl(&out.join("dev.jsonl"), &dev)?;
    Ok((train, dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_labels_and_a_seeded_split() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tsv");
        let body: String = (0..20).map(|i| format!("text {i} \t{}\n", i % 2)).collect();
        std::fs::write(&p, format!("sentence\tlabel\n{body}")).unwrap();
        let names = ["negative".to_string(), "positive".to_string()];
        let rows = read(&p, "sentence", "label", Some(&names)).unwrap();
        assert_eq!(rows[1], Row { text: "text 1".into(), label: "positive".into() });
        let (train, dev) = split(rows.clone(), 0.25, 3).unwrap();
        assert_eq!((train.len(), dev.len()), (15, 5));
        assert_eq!(split(rows.clone(), 0.25, 3).unwrap().1, dev, "same seed, same split");
        assert_ne!(split(rows, 0.25, 4).unwrap().1, dev);
        for (text, want) in [
            ("text\tlabel\nok\t0\nbad\n", "t.tsv:3: 1 columns, the header has 2"),
            ("text\tlabel\n \t0\n", "t.tsv:2: empty text"),
            ("text\tlabel\nok\t7\n", "t.tsv:2: label \"7\" is not an index"),
            ("sentence\tlabel\nok\t0\n", "has no column [\"text\"]"),
            ("text\tlabel\n", "no rows after the header"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = read(&p, "text", "label", Some(&names)).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
