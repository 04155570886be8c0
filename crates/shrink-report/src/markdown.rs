//! report.md: the same tables as the HTML page, and the recipe.

use std::fmt::Write;

use crate::schema::Report;
use crate::tables::{self, Table};

fn table(out: &mut String, t: &Table) {
    let cell = |s: &str| s.replace('|', "\\|");
    let _ = writeln!(out, "## {}\n", t.title);
    let _ = writeln!(out, "| {} |", t.header.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(t.header.len()));
    for row in &t.rows {
        let _ = writeln!(out, "| {} |", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "));
    }
    out.push('\n');
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# shrink compress: {} ({})\n", r.task, r.metric);
    let _ = writeln!(s, "{}\n", crate::html::headline(r));
    for t in [tables::summary(r), tables::stages(r), tables::trials(r), tables::bits(r)] {
        table(&mut s, &t);
    }
    if let Some(sens) = &r.sensitivity {
        let _ = writeln!(s, "## Sensitivity ({} one site at a time, drop in points)\n", sens.format);
        for site in &sens.sites {
            let _ = writeln!(s, "- layer {} {}: {:+.2}", site.layer, site.site, site.drop_points);
        }
        s.push('\n');
    }
    let _ = writeln!(s, "## Recipe\n\n`shrink run recipe.toml --out DIR` rebuilds the chosen model:\n\n```toml\n{}```", r.recipe);
    s
}
