//! The report's tables as rows of text, rendered by both markdown.rs and html.rs.

use crate::schema::{Report, Scores, Trial};

pub struct Table {
    pub id: &'static str,
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

pub fn mb(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / 1e6)
}

pub fn pct(x: f64) -> String {
    format!("{:.2}", x * 100.0)
}

/// The second metric beside the searched one: macro F1 (classify) or recall@10 (retrieval).
pub fn second(r: &Report) -> (&'static str, &'static str) {
    if r.metric == "accuracy" {
        ("macro_f1", "macro F1")
    } else {
        ("recall@10", "recall@10")
    }
}

fn metric_cell(r: &Report, s: &Scores) -> [String; 2] {
    let (key, _) = second(r);
    [pct(s.score), s.metrics.get(key).and_then(|v| v.as_f64()).map_or("-".into(), |v| format!("{v:.4}"))]
}

pub fn teacher(r: &Report) -> Option<&Trial> {
    r.trials.iter().find(|t| t.id == r.teacher)
}

pub fn chosen(r: &Report) -> Option<&Trial> {
    r.trials.iter().find(|t| t.id == r.chosen)
}

/// The headline: teacher and chosen model on dev and test.
pub fn summary(r: &Report) -> Table {
    let (_, name) = second(r);
    let mut rows = Vec::new();
    for (what, t) in [("teacher", teacher(r)), ("chosen", chosen(r))] {
        let Some(t) = t else { continue };
        let mut row = vec![what.to_string(), format!("{} {} {}", t.structure, t.epochs, t.variant)];
        row.extend(metric_cell(r, &t.dev));
        match &t.test {
            Some(s) => row.extend(metric_cell(r, s)),
            None => row.extend(["-".to_string(), "-".to_string()]),
        }
        row.extend([mb(t.file_bytes), format!("{:.2}", t.latency_ms), format!("{:.0}", t.peak_rss_mb)]);
        rows.push(row);
    }
    let header = ["model", "structure / epochs / variant", &format!("dev {}", r.metric), &format!("dev {name}"), &format!("test {}", r.metric), &format!("test {name}"), "MB", "ms", "peak RSS MB"];
    Table { id: "summary", title: "Teacher and chosen model".into(), header: header.map(String::from).into(), rows }
}

/// Each stage of the chosen recipe, before and after.
pub fn stages(r: &Report) -> Table {
    let (_, name) = second(r);
    let rows = r
        .stages
        .iter()
        .map(|s| {
            let mut row = vec![s.stage.clone(), s.args.join(" ")];
            row.extend(metric_cell(r, &s.dev));
            row.extend(s.test.as_ref().map_or(["-".into(), "-".into()], |t| metric_cell(r, t)));
            row.extend([mb(s.file_bytes), format!("{:.2}", s.latency_ms), format!("{:.0}", s.peak_rss_mb)]);
            row
        })
        .collect();
    let header = ["stage", "flags", &format!("dev {}", r.metric), &format!("dev {name}"), &format!("test {}", r.metric), &format!("test {name}"), "MB", "ms", "peak RSS MB"];
    Table { id: "stages", title: "The chosen recipe, stage by stage".into(), header: header.map(String::from).into(), rows }
}

/// Every trial, in the order it was planned.
pub fn trials(r: &Report) -> Table {
    let rows = r
        .trials
        .iter()
        .map(|t| {
            let mark = if t.id == r.chosen { "chosen" } else if t.id == r.teacher { "teacher" } else if t.passed { "passed" } else { "over budget" };
            vec![
                t.id.clone(),
                t.round.to_string(),
                t.structure.clone(),
                t.epochs.to_string(),
                t.variant.clone(),
                pct(t.dev.score),
                mb(t.file_bytes),
                format!("{:.2}", t.latency_ms),
                format!("{:.0}", t.peak_rss_mb),
                format!("{:.0}", t.seconds),
                format!("{:.0}", t.estimate_s),
                mark.to_string(),
            ]
        })
        .chain(r.failed.iter().map(|f| vec![f.id.clone(), "".into(), f.structure.clone(), "".into(), f.variant.clone(), "failed".into(), "".into(), "".into(), "".into(), "".into(), "".into(), f.error.clone()]))
        .collect();
    let header = ["trial", "round", "structure", "epochs", "variant", &format!("dev {}", r.metric), "MB", "ms", "peak RSS MB", "seconds", "estimated s", ""];
    Table { id: "trials", title: "Trial log".into(), header: header.map(String::from).into(), rows }
}

/// Bits per stored weight of each Linear of the chosen model, grouped by format.
pub fn bits(r: &Report) -> Table {
    let rows = r.bits.iter().map(|b| vec![b.name.clone(), b.format.clone(), b.bits.to_string()]).collect();
    Table { id: "bits", title: "Bits per weight of the chosen model".into(), header: ["Linear", "format", "bits"].map(String::from).into(), rows }
}
