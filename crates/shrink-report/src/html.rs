//! report.html: one self-contained page (inline CSS and SVG, no script, no network).

use std::fmt::Write;

use crate::schema::Report;
use crate::svg::{self, esc, Mark, Point};
use crate::tables::{self, Table};

/// One sentence: what was chosen, against the teacher.
pub fn headline(r: &Report) -> String {
    let (Some(t), Some(c)) = (tables::teacher(r), tables::chosen(r)) else { return "No model was measured.".into() };
    let test = match (&t.test, &c.test) {
        (Some(a), Some(b)) => format!(", test {} {} vs {} ({})", r.metric, tables::score(r, b.score), tables::score(r, a.score), tables::change(r, a.score, b.score)),
        _ => String::new(),
    };
    format!(
        "Objective {}, budget {} {} on dev: chosen {} ({} {}, {} epochs): {} MB ({:.3}x the teacher), {:.2} ms ({:.3}x) {} on {} thread(s), dev {} {} vs {}{test}. {} trials in {:.0} s{}. Measured on {}.",
        r.objective,
        r.max_drop_points,
        tables::budget_unit(r),
        c.id,
        c.structure,
        c.variant,
        c.epochs,
        tables::mb(c.file_bytes),
        c.file_bytes as f64 / t.file_bytes as f64,
        c.latency_ms,
        c.latency_ms / t.latency_ms,
        tables::latency_at(r),
        r.latency_threads,
        r.metric,
        tables::score(r, c.dev.score),
        tables::score(r, t.dev.score),
        r.trials.len(),
        r.time.spent_s,
        if r.time.out_of_time { " (the time budget ran out)" } else { "" },
        r.machine
    )
}

fn table(out: &mut String, t: &Table) {
    let _ = write!(out, "<h2>{}</h2><table id=\"{}\"><thead><tr>", esc(&t.title), t.id);
    for h in &t.header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in &t.rows {
        out.push_str("<tr>");
        for c in row {
            let _ = write!(out, "<td>{}</td>", esc(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

fn points(r: &Report, x: impl Fn(&crate::schema::Trial) -> f64, front: &[String]) -> Vec<Point> {
    r.trials
        .iter()
        .map(|t| Point {
            x: x(t),
            y: tables::plotted(r, t.dev.score),
            mark: if t.id == r.chosen { Mark::Chosen } else if t.id == r.teacher { Mark::Teacher } else { Mark::Trial },
            front: front.contains(&t.id),
            label: format!("{} {} {} e{}: {} {:.2}, {} MB, {:.2} ms", t.id, t.structure, t.variant, t.epochs, r.metric, tables::plotted(r, t.dev.score), tables::mb(t.file_bytes), t.latency_ms),
        })
        .collect()
}

pub fn render(r: &Report) -> String {
    let mut s = String::from("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>shrink report</title><style>");
    s.push_str("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left}th{background:#f3f3f3}pre{background:#f6f6f6;padding:1em;overflow-x:auto}.charts{display:flex;flex-wrap:wrap;gap:1em}");
    s.push_str("</style></head><body>");
    let _ = write!(s, "<h1>shrink compress: {} ({})</h1><p id=\"headline\">{}</p>", esc(&r.task), esc(&r.metric), esc(&headline(r)));
    table(&mut s, &tables::summary(r));
    let y = if r.metric == "perplexity" { "dev perplexity".to_string() } else { format!("dev {} (%)", r.metric) };
    s.push_str("<h2>Pareto fronts (dev)</h2><div class=\"charts\">");
    s.push_str(&svg::scatter("pareto-size", "score against size", "MB on disk", &y, &points(r, |t| t.file_bytes as f64 / 1e6, &r.front_size)));
    let lat = format!("ms {}, {} thread(s)", tables::latency_at(r), r.latency_threads);
    s.push_str(&svg::scatter("pareto-latency", "score against latency", &lat, &y, &points(r, |t| t.latency_ms, &r.front_latency)));
    s.push_str("</div>");
    table(&mut s, &tables::stages(r));
    if let Some(sens) = &r.sensitivity {
        let items: Vec<(String, f64)> = sens.sites.iter().map(|x| (format!("layer {} {}", x.layer, x.site), x.drop_points)).collect();
        let _ = write!(s, "<h2>Per-site sensitivity ({} alone, teacher)</h2>", esc(&sens.format));
        s.push_str(&svg::bars("sensitivity", "drop in points when one site is quantized", "points", &items));
    }
    if let Some(h) = &r.head_importance {
        s.push_str("<h2>Head importance (teacher)</h2>");
        s.push_str(&svg::heatmap("heads", "head importance, layers x heads", "layer", "head", h));
    }
    if !r.bits.is_empty() {
        s.push_str("<h2>Bits per weight of the chosen model</h2>");
        let items: Vec<(String, f64)> = r.bits.iter().map(|b| (b.name.replace("encoder.layer.", "L").replace("attention.self.", "").replace("attention.output.", "attn-out."), b.bits as f64)).collect();
        s.push_str(&svg::bars("bits", "bits per stored weight", "bits", &items));
    }
    table(&mut s, &tables::trials(r));
    let _ = write!(s, "<h2>Recipe</h2><p><code>shrink run recipe.toml --out DIR</code> rebuilds the chosen model:</p><pre id=\"recipe\">{}</pre>", esc(&r.recipe));
    let _ = write!(s, "<p>Data: train {} ({} rows), dev {} ({} rows){}. shrink {}, report schema {}.</p>", esc(&r.data.train), r.data.train_rows, esc(&r.data.dev), r.data.dev_rows,
        r.data.test.as_ref().map_or(String::new(), |t| format!(", test {} ({} rows, scored only after the search)", esc(t), r.data.test_rows.unwrap_or(0))), esc(&r.shrink), r.schema);
    s.push_str("</body></html>\n");
    s
}
