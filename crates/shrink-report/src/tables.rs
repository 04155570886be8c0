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

fn is_perplexity(r: &Report) -> bool {
    r.metric == "perplexity"
}

/// A score as plotted and printed: percent for the fractions (accuracy, MRR@10), perplexity as it is.
pub fn plotted(r: &Report, x: f64) -> f64 {
    if is_perplexity(r) {
        x
    } else {
        x * 100.0
    }
}

pub fn score(r: &Report, x: f64) -> String {
    format!("{:.2}", plotted(r, x))
}

/// What `max_drop_points` counts.
pub fn budget_unit(r: &Report) -> &'static str {
    if is_perplexity(r) {
        "% more perplexity"
    } else {
        "points"
    }
}

/// What the latency is: a forward at batch x seq, or a decoder's generated token after a seq-token prompt.
pub fn latency_at(r: &Report) -> String {
    match is_perplexity(r) {
        true => format!("per generated token after a {}-token prompt", r.seq),
        false => format!("at {}x{}", r.batch, r.seq),
    }
}

/// `x` against the teacher's `base`, in the budget's unit.
pub fn change(r: &Report, base: f64, x: f64) -> String {
    if is_perplexity(r) {
        format!("{:+.2}% perplexity", (x / base - 1.0) * 100.0)
    } else {
        format!("{:+.2} points", (x - base) * 100.0)
    }
}

/// The second metric beside the searched one: macro F1 (classify), recall@10 (retrieval), or the mean NLL
/// (perplexity).
pub fn second(r: &Report) -> (&'static str, &'static str) {
    match r.metric.as_str() {
        "accuracy" => ("macro_f1", "macro F1"),
        "perplexity" => ("nll", "NLL per token"),
        _ => ("recall@10", "recall@10"),
    }
}

fn metric_cell(r: &Report, s: &Scores) -> [String; 2] {
    let (key, _) = second(r);
    [score(r, s.score), s.metrics.get(key).and_then(|v| v.as_f64()).map_or("-".into(), |v| format!("{v:.4}"))]
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
                score(r, t.dev.score),
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
