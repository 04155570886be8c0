//! A decoder's KV cache and causal attention over it. Keys and values are kept per token and key/value head (D
//! values each, after RoPE), contiguous, in f32 or in int8 with one f32 scale per D values (symmetric, round to
//! nearest, as llama.cpp's q8_0 cache but per head rather than per 32): a quarter of the memory for long contexts,
//! read back by the same attention loops.
//!
//! Dimensions: T new tokens, H query heads, G key/value heads, D head width.

use rayon::prelude::*;

/// How the KV cache stores keys and values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvFormat {
    #[default]
    F32,
    Int8,
}

impl KvFormat {
    pub const NAMES: [&'static str; 2] = ["f32", "int8"];

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" => Some(Self::F32),
            "int8" => Some(Self::Int8),
            _ => None,
        }
    }
}

/// One layer's keys or values: rows of D values, row (token j, head kv) = j * G + kv.
#[derive(Debug)]
enum Store {
    F32(Vec<f32>),
    Int8 { q: Vec<i8>, scale: Vec<f32> },
}

impl Store {
    fn new(format: KvFormat) -> Self {
        match format {
            KvFormat::F32 => Store::F32(Vec::new()),
            KvFormat::Int8 => Store::Int8 { q: Vec::new(), scale: Vec::new() },
        }
    }

    /// Appends x (rows of D values).
    fn push(&mut self, x: &[f32], d: usize) {
        match self {
            Store::F32(v) => v.extend_from_slice(x),
            Store::Int8 { q, scale } => {
                for row in x.chunks_exact(d) {
                    let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let s = if amax > 0.0 { amax / 127.0 } else { 1.0 };
                    let inv = 1.0 / s;
                    q.extend(row.iter().map(|&v| (v * inv).round() as i8));
                    scale.push(s);
                }
            }
        }
    }


    fn bytes(&self) -> usize {
        match self {
            Store::F32(v) => v.len() * 4,
            Store::Int8 { q, scale } => q.len() + scale.len() * 4,
        }
    }
}

/// Rows of a store as attention reads them; one implementation per format, so the loops over rows are compiled
/// for each (a match per row cost int8 a fifth of its decode speed).
trait Rows: Sync {
    /// q · row r.
    fn dot(&self, r: usize, q: &[f32]) -> f32;
    /// o += a · row r.
    fn axpy(&self, r: usize, a: f32, o: &mut [f32]);
}

struct F32Rows<'a>(&'a [f32], usize);
struct I8Rows<'a>(&'a [i8], &'a [f32], usize);

impl Rows for F32Rows<'_> {
    #[inline(always)]
    fn dot(&self, r: usize, q: &[f32]) -> f32 {
        dot(q, &self.0[r * self.1..][..self.1], |x| x)
    }

    #[inline(always)]
    fn axpy(&self, r: usize, a: f32, o: &mut [f32]) {
        o.iter_mut().zip(&self.0[r * self.1..][..self.1]).for_each(|(o, &x)| *o += a * x);
    }
}

impl Rows for I8Rows<'_> {
    #[inline(always)]
    fn dot(&self, r: usize, q: &[f32]) -> f32 {
        dot(q, &self.0[r * self.2..][..self.2], |x| x as f32) * self.1[r]
    }

    #[inline(always)]
    fn axpy(&self, r: usize, a: f32, o: &mut [f32]) {
        let a = a * self.1[r];
        o.iter_mut().zip(&self.0[r * self.2..][..self.2]).for_each(|(o, &x)| *o += a * x as f32);
    }
}

/// Keys and values of the tokens run so far, per layer (len, G*D) each: contiguous, grown per call.
#[derive(Debug, Default)]
pub struct KvCache {
    pub len: usize,
    format: KvFormat,
    k: Vec<Store>,
    v: Vec<Store>,
}

impl KvCache {
    pub fn new(format: KvFormat) -> Self {
        Self { format, ..Self::default() }
    }

    /// Bytes the cache holds.
    pub fn bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(Store::bytes).sum()
    }

    /// Appends layer i's new keys and values (T, G*D each); the first call sizes the cache for `layers`.
    pub(crate) fn push(&mut self, layers: usize, i: usize, k: &[f32], v: &[f32], d: usize) {
        if self.k.is_empty() {
            self.k = (0..layers).map(|_| Store::new(self.format)).collect();
            self.v = (0..layers).map(|_| Store::new(self.format)).collect();
        }
        self.k[i].push(k, d);
        self.v[i].push(v, d);
    }

    /// softmax(q k^T / sqrt(D)) v per query head over layer i's cache, the new token t (position past + t) seeing
    /// the keys up to its own; query head j reads key/value head j / (H / G). q (T, H*D), out (T, H*D). Query rows
    /// run in parallel when there are enough of them (a prompt); a decode step's one row stays on this thread, as
    /// it takes less time than waking a worker.
    pub(crate) fn attend(&self, i: usize, q: &[f32], past: usize, (h, g, d): (usize, usize, usize), out: &mut [f32]) {
        let t = q.len() / (h * d);
        match (&self.k[i], &self.v[i]) {
            (Store::F32(k), Store::F32(v)) => attend_rows(&F32Rows(k, d), &F32Rows(v, d), q, past, t, (h, g, d), out),
            (Store::Int8 { q: k, scale: ks }, Store::Int8 { q: v, scale: vs }) => {
                attend_rows(&I8Rows(k, ks, d), &I8Rows(v, vs, d), q, past, t, (h, g, d), out)
            }
            _ => unreachable!("a cache holds one format"),
        }
    }
}

/// `KvCache::attend` on one layer's rows.
fn attend_rows<R: Rows>(k: &R, v: &R, q: &[f32], past: usize, t: usize, (h, g, d): (usize, usize, usize), out: &mut [f32]) {
    const PARALLEL_MIN_ROWS: usize = 16;
    // p: one row's scores (past + T at most), allocated once per task.
    let row = |p: &mut Vec<f32>, (r, o): (usize, &mut [f32])| attend_row(&q[r * h * d..][..h * d], k, v, past + r + 1, (h, g, d), p, o);
    if t >= PARALLEL_MIN_ROWS && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(h * d).enumerate().for_each_init(|| Vec::with_capacity(past + t), row);
    } else {
        let mut p = Vec::with_capacity(past + t);
        out.chunks_mut(h * d).enumerate().for_each(|r| row(&mut p, r));
    }
}

/// One query row (H*D) over the first `seen` keys and values: out (H*D); `p` holds the scores.
fn attend_row<R: Rows>(q: &[f32], k: &R, v: &R, seen: usize, (h, g, d): (usize, usize, usize), p: &mut Vec<f32>, out: &mut [f32]) {
    let scale = 1.0 / (d as f32).sqrt();
    p.resize(seen, 0.0);
    for head in 0..h {
        let (kv, qh) = (head / (h / g), &q[head * d..][..d]);
        for (j, s) in p.iter_mut().enumerate() {
            *s = k.dot(j * g + kv, qh) * scale;
        }
        let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        p.iter_mut().for_each(|s| {
            *s = (*s - max).exp();
            sum += *s;
        });
        let (o, inv) = (&mut out[head * d..][..d], 1.0 / sum);
        o.fill(0.0);
        for (j, &pj) in p.iter().enumerate() {
            v.axpy(j * g + kv, pj * inv, o);
        }
    }
}

/// Sum of a * f(b) in 8 independent lanes, which the compiler turns into vector FMAs (one running sum would not be).
#[inline(always)]
fn dot<T: Copy>(a: &[f32], b: &[T], f: impl Fn(T) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, &y)| x * f(y)).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * f(y[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform in [-1, 1) from a xorshift, with a few large values as real keys have.
    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                if i % 61 == 0 { 8.0 * u } else { u }
            })
            .collect()
    }

    #[test]
    fn int8_rows_round_within_half_a_step_and_take_a_quarter_of_the_bytes() {
        let (d, rows) = (64, 40);
        let x = data(rows * d, 1);
        let mut s = Store::new(KvFormat::Int8);
        s.push(&x, d);
        let Store::Int8 { q, scale } = &s else { unreachable!() };
        for (r, row) in x.chunks_exact(d).enumerate() {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(scale[r], amax / 127.0);
            for (c, &v) in row.iter().enumerate() {
                let back = q[r * d + c] as f32 * scale[r];
                assert!((back - v).abs() <= scale[r] / 2.0 * 1.0001, "row {r} col {c}: {v} -> {back}");
            }
        }
        assert_eq!(s.bytes(), rows * d + rows * 4);
        let mut zeros = Store::new(KvFormat::Int8);
        zeros.push(&[0.0; 64], d);
        assert!(matches!(&zeros, Store::Int8 { q, scale } if q.iter().all(|&v| v == 0) && scale[0] == 1.0), "an all-zero row is exact");
    }

    /// Attention of T new rows over a cache filled by two calls (prefill, then one decode step), int8 against f32.
    #[test]
    fn int8_cache_attends_as_f32_within_its_rounding() {
        let (h, g, d, layers) = (6, 2, 64, 2);
        let attend = |format: KvFormat| {
            let mut cache = KvCache::new(format);
            let mut outs = Vec::new();
            for (past, t) in [(0, 19), (19, 1)] {
                let (k, v, q) = (data(t * g * d, 10 + past as u64), data(t * g * d, 20 + past as u64), data(t * h * d, 30 + past as u64));
                let mut out = vec![0f32; t * h * d];
                for i in 0..layers {
                    cache.push(layers, i, &k, &v, d);
                }
                cache.attend(1, &q, past, (h, g, d), &mut out);
                outs.push(out);
            }
            (outs, cache.bytes())
        };
        let ((want, f32_bytes), (got, int8_bytes)) = (attend(KvFormat::F32), attend(KvFormat::Int8));
        assert_eq!((f32_bytes, int8_bytes), (20 * g * d * 4 * 2 * layers, (20 * g * (d + 4)) * 2 * layers));
        for (w, o) in want.iter().zip(&got) {
            let err = w.iter().zip(o).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt() / w.iter().map(|a| a * a).sum::<f32>().sqrt();
            // Measured 0.013 and 0.015 (rows with 8x outliers): keys and values each rounded to 1/254 of their row's largest value.
            assert!(err < 0.02, "relative error {err}");
            assert!(err > 0.0, "the int8 cache is not a copy of the f32 one");
        }
    }
}
