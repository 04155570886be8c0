//! JSONL datasets: one JSON object per line, errors naming the file and line.

use std::path::Path;

use anyhow::{bail, Result};

/// One dataset row: field name -> value.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// JSONL text read from `path` (named in errors) into rows; a malformed line is an error naming file and line.
/// Blank lines are skipped, and so is a UTF-8 byte order mark at the start (Windows editors write one; serde_json
/// would call line 1 malformed).
pub fn parse(path: &Path, text: &str) -> Result<Vec<Row>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(m)) => rows.push(m),
            Ok(_) => bail!("{}:{}: expected a JSON object", path.display(), n + 1),
            Err(e) => bail!("{}:{}: malformed JSON: {e}", path.display(), n + 1),
        }
    }
    if rows.is_empty() {
        bail!("{}: no rows", path.display());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line_and_a_bom_is_skipped() {
        let p = Path::new("d.jsonl");
        let err = parse(p, "{\"text\": \"a\"}\n{not json\n").unwrap_err().to_string();
        assert!(err.contains("d.jsonl:2") && err.contains("malformed"), "{err}");
        let err = parse(p, "\n[1]\n").unwrap_err().to_string();
        assert!(err.contains("d.jsonl:2") && err.contains("expected a JSON object"), "{err}");
        assert!(parse(p, " \n\n").unwrap_err().to_string().contains("no rows"));
        let rows = parse(p, "\u{feff}{\"text\": \"a\"}\r\n\r\n{\"text\": \"b\"}\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1]["text"], "b");
    }
}
