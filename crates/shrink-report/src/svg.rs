//! The report's charts as inline SVG: a scatter with its front, horizontal bars, a heatmap. Every mark carries a
//! `<title>` (the browser's tooltip, no script) and a class the tests look for.

use std::fmt::Write;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[derive(Clone, Copy, PartialEq)]
pub enum Mark {
    Trial,
    Teacher,
    Chosen,
}

pub struct Point {
    pub x: f64,
    pub y: f64,
    pub mark: Mark,
    pub front: bool,
    pub label: String,
}

const W: f64 = 640.0;
const H: f64 = 380.0;
// Margins: left, right, top, bottom.
const L: f64 = 64.0;
const R: f64 = 16.0;
const T: f64 = 28.0;
const B: f64 = 48.0;

/// "Nice" tick values covering lo..hi.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let mut v = Vec::new();
    let mut t = (lo / step).ceil() * step;
    while t <= hi + 1e-9 * span {
        v.push(t);
        t += step;
    }
    v
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A scatter of `points` (x: size or latency, y: score in percent), the front joined by a line.
pub fn scatter(id: &str, title: &str, x_label: &str, y_label: &str, points: &[Point]) -> String {
    let mut s = String::new();
    let _ = write!(s, r##"<svg id="{id}" class="chart scatter" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><title>{t}</title>"##, t = esc(title));
    if points.is_empty() {
        return s + "</svg>";
    }
    let (mut x0, mut x1) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.x), b.max(p.x)));
    let (mut y0, mut y1) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.y), b.max(p.y)));
    let (px, py) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.08).max(0.1));
    (x0, x1, y0, y1) = ((x0 - px).max(0.0), x1 + px, y0 - py, y1 + py);
    let sx = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let sy = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    let _ = write!(s, r##"<rect class="plot" x="{L}" y="{T}" width="{}" height="{}" fill="#fafafa" stroke="#ccc"/>"##, W - L - R, H - T - B);
    for t in ticks(x0, x1, 6) {
        let x = sx(t);
        let _ = write!(s, r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{}" stroke="#e4e4e4"/><text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##, H - B, H - B + 14.0, fmt_tick(t));
    }
    for t in ticks(y0, y1, 5) {
        let y = sy(t);
        let _ = write!(s, r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##, W - R, L - 6.0, y + 4.0, fmt_tick(t));
    }
    let _ = write!(s, r##"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"##, (L + W - R) / 2.0, H - 10.0, esc(x_label));
    let _ = write!(s, r##"<text x="14" y="{}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {})">{}</text>"##, (T + H - B) / 2.0, (T + H - B) / 2.0, esc(y_label));
    let mut front: Vec<&Point> = points.iter().filter(|p| p.front).collect();
    front.sort_by(|a, b| a.x.total_cmp(&b.x));
    if front.len() > 1 {
        let pts: Vec<String> = front.iter().map(|p| format!("{:.1},{:.1}", sx(p.x), sy(p.y))).collect();
        let _ = write!(s, r##"<polyline class="front" points="{}" fill="none" stroke="#2b7" stroke-width="1.5" stroke-dasharray="4 3"/>"##, pts.join(" "));
    }
    for p in points.iter().filter(|p| p.mark == Mark::Trial).chain(points.iter().filter(|p| p.mark != Mark::Trial)) {
        let (x, y, tip) = (sx(p.x), sy(p.y), esc(&p.label));
        let _ = match p.mark {
            Mark::Trial => write!(s, r##"<circle class="trial" cx="{x:.1}" cy="{y:.1}" r="4" fill="{}" fill-opacity="0.75"><title>{tip}</title></circle>"##, if p.front { "#2b7" } else { "#89a" }),
            Mark::Teacher => write!(s, r##"<rect class="teacher" x="{:.1}" y="{:.1}" width="10" height="10" fill="#333"><title>teacher: {tip}</title></rect>"##, x - 5.0, y - 5.0),
            Mark::Chosen => write!(s, r##"<circle class="chosen" cx="{x:.1}" cy="{y:.1}" r="7" fill="none" stroke="#d33" stroke-width="2.5"><title>chosen: {tip}</title></circle>"##),
        };
    }
    let _ = write!(s, r##"<g class="legend" font-size="11"><rect x="{lx}" y="8" width="9" height="9" fill="#333"/><text x="{}" y="16">teacher</text><circle cx="{}" cy="12.5" r="4" fill="#89a"/><text x="{}" y="16">trial</text><circle cx="{}" cy="12.5" r="4" fill="#2b7"/><text x="{}" y="16">front</text><circle cx="{}" cy="12.5" r="6" fill="none" stroke="#d33" stroke-width="2"/><text x="{}" y="16">chosen</text></g>"##,
        L + 13.0, L + 72.0, L + 80.0, L + 118.0, L + 126.0, L + 172.0, L + 182.0, lx = L);
    s + "</svg>"
}

/// Horizontal bars, one per (label, value); negative values are drawn left of zero.
pub fn bars(id: &str, title: &str, unit: &str, items: &[(String, f64)]) -> String {
    let row = 16.0;
    let h = T + B / 2.0 + row * items.len() as f64;
    let label_w = 150.0;
    let lo = items.iter().map(|i| i.1).fold(0.0, f64::min);
    let hi = items.iter().map(|i| i.1).fold(0.0, f64::max).max(lo + 1e-9);
    let sx = |v: f64| label_w + (v - lo) / (hi - lo) * (W - label_w - 70.0);
    let mut s = String::new();
    let _ = write!(s, r##"<svg id="{id}" class="chart bars" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"##, t = esc(title));
    for (i, (label, v)) in items.iter().enumerate() {
        let y = T + row * i as f64;
        let (a, b) = (sx(0.0).min(sx(*v)), sx(0.0).max(sx(*v)));
        let _ = write!(s, r##"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text><rect class="bar" x="{a:.1}" y="{:.1}" width="{:.1}" height="{}" fill="#e83"><title>{}: {v:.3} {}</title></rect><text x="{:.1}" y="{:.1}" font-size="10">{v:.2}</text>"##,
            label_w - 6.0, y + 11.0, esc(label), y + 2.0, (b - a).max(0.5), row - 4.0, esc(label), esc(unit), b + 4.0, y + 11.0);
    }
    let _ = write!(s, r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{:.1}" stroke="#333"/>"##, h - B / 2.0, x = sx(0.0));
    s + "</svg>"
}

/// A rows x columns heatmap of non-negative values, darker for larger.
pub fn heatmap(id: &str, title: &str, row_name: &str, col_name: &str, rows: &[Vec<f64>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let cell = 28.0;
    let (w, h) = (70.0 + cell * cols as f64 + 10.0, T + cell * rows.len() as f64 + 30.0);
    let max = rows.iter().flatten().cloned().fold(0.0, f64::max).max(1e-12);
    let mut s = String::new();
    let _ = write!(s, r##"<svg id="{id}" class="chart heatmap" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"##, t = esc(title));
    for (r, row) in rows.iter().enumerate() {
        let y = T + cell * r as f64;
        let _ = write!(s, r##"<text x="62" y="{:.1}" font-size="11" text-anchor="end">{} {r}</text>"##, y + cell / 2.0 + 4.0, esc(row_name));
        for (c, v) in row.iter().enumerate() {
            let shade = (255.0 * (1.0 - v / max)).round() as u8;
            let _ = write!(s, r##"<rect class="cell" x="{:.1}" y="{y:.1}" width="{}" height="{}" fill="rgb({shade},{shade},255)" stroke="#fff"><title>{} {r}, {} {c}: {v:.3}</title></rect>"##, 70.0 + cell * c as f64, cell - 1.0, cell - 1.0, esc(row_name), esc(col_name));
        }
    }
    for c in 0..cols {
        let _ = write!(s, r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{c}</text>"##, 70.0 + cell * c as f64 + cell / 2.0, T + cell * rows.len() as f64 + 14.0);
    }
    s + "</svg>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_cover_the_range_with_round_steps() {
        assert_eq!(ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(93.2, 97.1, 5);
        assert!(t.first().unwrap() >= &93.2 && t.last().unwrap() <= &97.1 && t.len() >= 3, "{t:?}");
    }

    #[test]
    fn marks_carry_their_class_and_an_escaped_tooltip() {
        let p = |x, mark, front| Point { x, y: 95.0 + x, mark, front, label: "a<b & c".into() };
        let s = scatter("s", "t", "MB", "%", &[p(1.0, Mark::Teacher, false), p(2.0, Mark::Trial, true), p(3.0, Mark::Chosen, true)]);
        for needle in ["class=\"teacher\"", "class=\"trial\"", "class=\"chosen\"", "class=\"front\"", "a&lt;b &amp; c"] {
            assert!(s.contains(needle), "{needle}: {s}");
        }
        assert!(!s.contains("a<b"));
        assert_eq!(bars("b", "t", "pts", &[("x".into(), -1.0), ("y".into(), 2.0)]).matches("class=\"bar\"").count(), 2);
        assert_eq!(heatmap("h", "t", "layer", "head", &[vec![0.1, 0.9], vec![0.5, 0.0]]).matches("class=\"cell\"").count(), 4);
    }
}
