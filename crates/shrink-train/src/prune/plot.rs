//! SVG figures of pruning: the layers x heads importance heatmap and the accuracy-vs-pruning curve.

/// Layers (rows) x heads (columns), darker = more important; cells hold the score. Layers may differ in width.
pub fn heatmap(heads: &[Vec<f64>], title: &str) -> String {
    let (cell, left, top) = (44.0, 70.0, 40.0);
    let cols = heads.iter().map(Vec::len).max().unwrap_or(0);
    let (w, h) = (left + cell * cols as f64 + 10.0, top + cell * heads.len() as f64 + 10.0);
    let max = heads.iter().flatten().copied().fold(1e-12, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"10\">\n\
         <text x=\"10\" y=\"18\" font-size=\"13\">{title}</text>\n"
    );
    for hd in 0..cols {
        s += &format!("<text x=\"{:.1}\" y=\"{:.1}\">h{hd}</text>\n", left + cell * hd as f64 + 14.0, top - 4.0);
    }
    for (l, row) in heads.iter().enumerate() {
        let y = top + cell * l as f64;
        s += &format!("<text x=\"10\" y=\"{:.1}\">layer {l}</text>\n", y + cell / 2.0 + 4.0);
        for (hd, &v) in row.iter().enumerate() {
            let x = left + cell * hd as f64;
            // White (0) to dark blue (the largest score).
            let t = (v / max).clamp(0.0, 1.0);
            let (r, g, b) = (255.0 - 225.0 * t, 255.0 - 180.0 * t, 255.0 - 90.0 * t);
            let ink = if t > 0.6 { "white" } else { "black" };
            s += &format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell}\" height=\"{cell}\" fill=\"rgb({r:.0},{g:.0},{b:.0})\" stroke=\"#ccc\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{ink}\">{v:.2}</text>\n",
                x + 8.0,
                y + cell / 2.0 + 4.0
            );
        }
    }
    s + "</svg>\n"
}
