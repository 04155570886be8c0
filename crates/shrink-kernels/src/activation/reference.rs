//! f64 textbook forms the generic builds are checked against (the SIMD builds are checked against those).

/// LayerNorm of one row, eps 1e-12.
pub(crate) fn layer_norm(x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + 1e-12).sqrt();
    x.iter().zip(w).zip(b).map(|((&v, &w), &b)| ((v as f64 - mean) * inv * w as f64 + b as f64) as f32).collect()
}

/// exp(x + bias - max) of one row, and their sum: softmax before its division.
pub(crate) fn exps(x: &[f32], bias: &[f32]) -> (Vec<f64>, f64) {
    let row: Vec<f64> = x.iter().zip(bias).map(|(&x, &b)| x as f64 + b as f64).collect();
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
    let sum = e.iter().sum();
    (e, sum)
}
