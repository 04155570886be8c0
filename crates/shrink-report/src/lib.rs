//! shrink-report: what `shrink compress` found, as data (`report.json`, schema in `schema.rs`) and as two renderings
//! of it: `report.md` and `report.html` (one self-contained file, inline SVG charts, readable without JavaScript).
//! `shrink report DIR` renders both again from report.json.

pub mod html;
pub mod markdown;
pub mod schema;
pub mod svg;
pub mod tables;

use std::path::Path;

use anyhow::{Context, Result};
use shrink_format::folder::{read_regular, write_atomic};

pub use schema::Report;

pub const JSON: &str = "report.json";

/// Writes report.json, report.md and report.html into `dir`.
pub fn write(dir: &Path, r: &Report) -> Result<()> {
    write_atomic(&dir.join(JSON), serde_json::to_string_pretty(r)?.as_bytes())?;
    render(dir, r)
}

/// Writes report.md and report.html from `r`.
pub fn render(dir: &Path, r: &Report) -> Result<()> {
    write_atomic(&dir.join("report.md"), markdown::render(r).as_bytes())?;
    write_atomic(&dir.join("report.html"), html::render(r).as_bytes())
}

/// Reads `dir/report.json`.
pub fn read(dir: &Path) -> Result<Report> {
    let path = dir.join(JSON);
    let text = read_regular(&path, "report")?;
    let r: Report = serde_json::from_str(&text).with_context(|| format!("{}: not a shrink report (schema {})", path.display(), schema::SCHEMA))?;
    if r.schema != schema::SCHEMA {
        anyhow::bail!("{}: report schema {}, this shrink reads {}", path.display(), r.schema, schema::SCHEMA);
    }
    Ok(r)
}
