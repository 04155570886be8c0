//! Datasets as JSONL rows: the BBC News split and reading text/label fields with errors that name file and line.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The five BBC News topics, in label-index order.
pub const BBC_LABELS: [&str; 5] = ["business", "entertainment", "politics", "sports", "tech"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BbcRow {
    pub id: String,
    pub title: String,
    pub body: String,
    pub text: String,
    pub label: String,
}

/// Builds the fixed split: within each category, files sorted by name; index i % 5 == 0 goes to test.
pub fn bbc_split(corpus: &Path) -> Result<(Vec<BbcRow>, Vec<BbcRow>)> {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for label in BBC_LABELS {
        let dir = corpus.join(label);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("{}: cannot read category folder", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{}: no .txt articles", dir.display());
        }
        for (i, file) in files.iter().enumerate() {
            let row = read_article(file, label)?;
            if i % 5 == 0 { test.push(row) } else { train.push(row) }
        }
    }
    Ok((train, test))
}

fn read_article(file: &Path, label: &str) -> Result<BbcRow> {
    let bytes = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    // One article (sports/199.txt) is Latin-1; every byte maps to the code point of the same value.
    let raw = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    };
    let text = raw.replace("\r\n", "\n");
    let (title, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let (title, body) = (title.trim().to_string(), rest.trim().to_string());
    if title.is_empty() || body.is_empty() {
        bail!("{}: expected a title line and a body", file.display());
    }
    let stem = file.file_stem().and_then(|s| s.to_str()).ok_or_else(|| anyhow!("{}: bad file name", file.display()))?;
    Ok(BbcRow { id: format!("{label}/{stem}"), text: format!("{title}\n{body}"), title, body, label: label.to_string() })
}

/// Writes rows as JSONL atomically.
/// `shrink data bbc`: the split written as `out`/train.jsonl and `out`/test.jsonl.
pub fn write_bbc(corpus: &Path, out: &Path) -> Result<(Vec<BbcRow>, Vec<BbcRow>)> {
    let (train, test) = bbc_split(corpus)?;
    std::fs::create_dir_all(out)?;
    write_jsonl(&out.join("train.jsonl"), &train)?;
    write_jsonl(&out.join("test.jsonl"), &test)?;
    Ok((train, test))
}

pub fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut out = String::new();
    for r in rows {
        out.push_str(&serde_json::to_string(r)?);
        out.push('\n');
    }
    shrink_model::checkpoint::write_atomic(path, out.as_bytes())
}

/// A UTF-8 text file without the byte-order mark some Windows editors put first (it is not part of the text).
pub(crate) fn read_utf8(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read (UTF-8 text expected)", path.display()))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Reads a JSONL file into objects; a malformed line is an error naming file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<shrink_format::jsonl::Row>> {
    shrink_format::jsonl::parse(path, &read_utf8(path)?)
}

/// One string field of every row; missing, non-string or empty values are errors naming file and row.
/// The distinct values of the label field `name`, sorted: a new head's classes in index order (at least 2).
pub fn label_set(path: &Path, rows: &[serde_json::Map<String, serde_json::Value>], name: &str) -> Result<Vec<String>> {
    let mut labels = field(path, rows, name)?;
    labels.sort();
    labels.dedup();
    if labels.len() < 2 {
        anyhow::bail!("{}: need at least 2 distinct labels in field {name:?}, found {labels:?}", path.display());
    }
    Ok(labels)
}

pub fn field(path: &Path, rows: &[serde_json::Map<String, serde_json::Value>], name: &str) -> Result<Vec<String>> {
    rows.iter()
        .enumerate()
        .map(|(i, r)| match r.get(name) {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            Some(serde_json::Value::String(_)) => bail!("{}: row {}: field {name:?} is empty", path.display(), i + 1),
            Some(_) => bail!("{}: row {}: field {name:?} is not a string", path.display(), i + 1),
            None => bail!("{}: row {}: no field {name:?}", path.display(), i + 1),
        })
        .collect()
}

/// `e`, when it is the runtime's `NonFinite` for batch item k, as an error naming the text: `path`, its row
/// (`row_of(k)`, 0-based into `texts`) and how it starts. Any other error comes back unchanged.
pub fn name_text(e: anyhow::Error, path: &Path, texts: &[String], row_of: impl Fn(usize) -> usize) -> anyhow::Error {
    let Some(shrink_runtime::Error::NonFinite(bad)) = e.downcast_ref::<shrink_runtime::Error>() else { return e };
    let i = row_of(bad.item);
    anyhow!("{}: row {} ({}): {}", path.display(), i + 1, text_start(&texts[i]), bad.reason())
}

/// The first 40 characters of a text, quoted, for error messages.
pub fn text_start(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// A seeded random sample of `n` rows in their original order (all rows when `n` is None or too large).
pub fn sample<T: Clone>(rows: Vec<T>, n: Option<usize>, seed: u64) -> Vec<T> {
    use rand::{seq::index, SeedableRng};
    let Some(n) = n.filter(|&n| n < rows.len()) else { return rows };
    let mut picked = index::sample(&mut rand::rngs::StdRng::seed_from_u64(seed), rows.len(), n).into_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| rows[i].clone()).collect()
}

/// All rows in a seeded random order.
pub fn shuffled<T: Clone>(rows: Vec<T>, seed: u64) -> Vec<T> {
    use rand::{seq::index, SeedableRng};
    let order = index::sample(&mut rand::rngs::StdRng::seed_from_u64(seed), rows.len(), rows.len());
    order.into_iter().map(|i| rows[i].clone()).collect()
}

/// Texts of a `.txt` (one per line; empty lines are errors) or `.jsonl` (`field`) file.
pub fn read_texts(path: &Path, text_field: &str) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e == "jsonl") {
        let rows = read_jsonl(path)?;
        return field(path, &rows, text_field);
    }
    let text = read_utf8(path)?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    if let Some(i) = lines.iter().position(|l| l.trim().is_empty()) {
        bail!("{}:{}: empty line (one text per line expected)", path.display(), i + 1);
    }
    if lines.is_empty() {
        bail!("{}: no texts", path.display());
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_crlf_article_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("199.txt");
        std::fs::write(&f, b"Caf\xe9 title\r\n\r\nBody line one.\r\nLine two.\r\n").unwrap();
        let row = read_article(&f, "sports").unwrap();
        assert_eq!(row.title, "Café title");
        assert_eq!(row.body, "Body line one.\nLine two.");
        assert_eq!(row.text, "Café title\nBody line one.\nLine two.");
        assert_eq!(row.id, "sports/199");
    }

    #[test]
    fn malformed_jsonl_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.jsonl");
        std::fs::write(&f, "{\"text\": \"a\"}\n{not json\n").unwrap();
        let err = read_jsonl(&f).unwrap_err().to_string();
        assert!(err.contains("d.jsonl:2") && err.contains("malformed"), "{err}");
        std::fs::write(&f, "{\"text\": \"a\"}\n{\"text\": \"  \"}\n").unwrap();
        let rows = read_jsonl(&f).unwrap();
        let err = field(&f, &rows, "text").unwrap_err().to_string();
        assert!(err.contains("row 2") && err.contains("empty"), "{err}");
        assert!(field(&f, &rows, "label").unwrap_err().to_string().contains("no field \"label\""));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let (jsonl, txt) = (dir.path().join("d.jsonl"), dir.path().join("t.txt"));
        std::fs::write(&jsonl, "\u{feff}{\"text\": \"a\"}\n{\"text\": \"b\"}\n").unwrap();
        assert_eq!(field(&jsonl, &read_jsonl(&jsonl).unwrap(), "text").unwrap(), ["a", "b"]);
        std::fs::write(&txt, "\u{feff}first\nsecond\n").unwrap();
        assert_eq!(read_texts(&txt, "text").unwrap(), ["first", "second"]);
    }

    #[test]
    fn empty_text_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.txt");
        std::fs::write(&f, "one\n\nthree\n").unwrap();
        assert!(read_texts(&f, "text").unwrap_err().to_string().contains("t.txt:2"));
    }
}
