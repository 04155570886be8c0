//! The sensitivity report people read: a markdown table (most sensitive first), an SVG bar chart and the JSON,
//! written into one folder. The search that measures it is `select.rs`.

use std::path::Path;

use anyhow::Result;
use shrink_format::folder::write_atomic;

use super::select::SiteSensitivity;

/// Writes sensitivity.md, sensitivity.svg and sensitivity.json (`json`) into `out_dir`; returns the table.
pub fn write(out_dir: &Path, title: &str, metric: &str, sens: &[SiteSensitivity], json: &serde_json::Value) -> Result<String> {
    let table = format!("{title}\n\n{}", table(sens, metric));
    std::fs::create_dir_all(out_dir).map_err(|e| anyhow::anyhow!("{}: cannot create ({e})", out_dir.display()))?;
    write_atomic(&out_dir.join("sensitivity.md"), table.as_bytes())?;
    write_atomic(&out_dir.join("sensitivity.svg"), svg(sens, title).as_bytes())?;
    write_atomic(&out_dir.join("sensitivity.json"), serde_json::to_string_pretty(json)?.as_bytes())?;
    Ok(table)
}

/// Bar chart of the sensitivity table: dev drop (points) and output error per site.
pub fn svg(sens: &[SiteSensitivity], title: &str) -> String {
    let (w, row, left) = (720.0, 18.0, 190.0);
    let h = 60.0 + row * sens.len() as f64;
    let max_drop = sens.iter().map(|s| s.trial.drop_points.abs()).fold(1e-9, f64::max);
    let max_err = sens.iter().map(|s| s.trial.output_error).fold(1e-12, f64::max);
    let half = (w - left - 20.0) / 2.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <text x=\"10\" y=\"18\" font-size=\"13\">{title}</text>\n\
         <text x=\"{left}\" y=\"38\">dev drop (points, max {max_drop:.2})</text>\n\
         <text x=\"{}\" y=\"38\">output error (max {max_err:.4})</text>\n",
        left + half + 10.0
    );
    for (i, r) in sens.iter().enumerate() {
        let y = 46.0 + row * i as f64;
        let dw = (r.trial.drop_points.max(0.0) / max_drop) * (half - 10.0);
        let ew = (r.trial.output_error / max_err) * (half - 10.0);
        s += &format!(
            "<text x=\"10\" y=\"{:.1}\">layer {} {}</text>\
             <rect x=\"{left}\" y=\"{y:.1}\" width=\"{dw:.1}\" height=\"{:.1}\" fill=\"#c0392b\"/>\
             <rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{ew:.1}\" height=\"{:.1}\" fill=\"#2e86c1\"/>\n",
            y + 12.0,
            r.layer,
            r.site,
            row - 4.0,
            left + half + 10.0,
            row - 4.0
        );
    }
    s + "</svg>\n"
}

/// Markdown table of the sensitivity results, most sensitive first.
pub fn table(sens: &[SiteSensitivity], metric: &str) -> String {
    let mut v: Vec<&SiteSensitivity> = sens.iter().collect();
    v.sort_by(|a, b| b.trial.drop_points.total_cmp(&a.trial.drop_points).then(b.trial.output_error.total_cmp(&a.trial.output_error)));
    let mut s = format!("| layer | site | {metric} | drop (points) | output error |\n|---:|---|---:|---:|---:|\n");
    for r in v {
        s += &format!(
            "| {} | {} | {:.4} | {:.2} | {:.5} |\n",
            r.layer, r.site, r.trial.score, r.trial.drop_points, r.trial.output_error
        );
    }
    s
}
