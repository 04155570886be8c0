//! Activation range observers for static int8 quantization.
//!
//! At conversion time the input of each Linear is fed to an [`Observer`] while the model runs on calibration texts,
//! in two passes: pass 1 tracks min/max, pass 2 fills histograms over the range pass 1 fixed. [`Observer::range`]
//! then picks the clipping range, and [`ActGrid::from_range`] turns it into the per-tensor u8 scale and zero point used at
//! run time.
//!
//! Design:
//! - Pass 2 keeps two histograms of [`BINS`] bins: a signed one over [min(min, 0), max(max, 0)] for asymmetric
//!   ranges and one of |x| over [0, max |x|] for symmetric ones. Folding the signed one into |x| bins would blur the
//!   bins that straddle the fold and halve the resolution, and entropy calibration is defined on exactly `BINS`
//!   |x| bins; a second increment per value is cheap next to running the model.
//! - Values are taken as uniform within a bin: percentiles interpolate linearly, and the MSE search integrates the
//!   clipping error exactly over the clipped part of a bin.
//! - Percentile, asymmetric: each tail is clipped at its own (100 - p)% of the values, lo = quantile(1 - p/100),
//!   hi = quantile(p/100).
//! - Entropy follows TensorRT's algorithm (GTC 2017, "8-bit Inference with TensorRT"; smoothing as in the
//!   MXNet/TVM reimplementations) on the |x| histogram. Asymmetric ranges clip each side at the same threshold t,
//!   [max(min, -t), min(max, t)]: the criterion is built around the symmetric 128-level grid, and the u8 grid over
//!   that range is at least as fine.
//! - Mse tries candidate ranges shrinking from the full one by fractions k / `MSE_STEPS` (of each side
//!   independently when asymmetric, a 2-D grid) and keeps the one with the least expected error: step²/12 per value
//!   inside plus the squared distance to the range for values outside, evaluated on the grid `ActGrid::from_range` will
//!   really use (zero point rounding included). Prefix sums make each candidate O(1).
//! - Non-finite inputs are counted, not binned, and make `range` fail: a model producing NaN/Inf must not be
//!   calibrated, and silently skipping them would hide that.

pub use shrink_format::quant::ActGrid;
use shrink_io::choices;

/// Histogram resolution; TensorRT's entropy calibration is defined on 2048 bins.
pub const BINS: usize = 2048;
/// Quantized levels per sign in entropy calibration (TensorRT's, for the int8 grid).
const ENTROPY_LEVELS: usize = 128;
/// Counts moved onto empty bins before KL, so that it stays finite (MXNet/TVM's value).
const ENTROPY_EPS: f64 = 1e-4;
/// Candidate fractions of the full range per side that Mse tries.
const MSE_STEPS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    MinMax,
    /// Clip to the p-th percentile of |x| (p in (0, 100], e.g. 99.99), per tail when asymmetric.
    Percentile(f64),
    /// TensorRT's entropy calibration: the threshold minimising KL(P || Q) between the clipped reference
    /// distribution and its 128-level quantized version, over a 2048-bin histogram.
    Entropy,
    /// The range minimising the expected squared quantization error (rounding + clipping) under the histogram.
    Mse,
}

choices! {
    /// A `Method` by name, its percentile given apart (`--observer`, `--percentile`).
    pub enum Kind {
        MinMax = "minmax",
        Percentile = "percentile",
        Entropy = "entropy",
        Mse = "mse",
    }
}

impl Method {
    pub fn new(kind: Kind, percentile: f64) -> Self {
        match kind {
            Kind::MinMax => Method::MinMax,
            Kind::Percentile => Method::Percentile(percentile),
            Kind::Entropy => Method::Entropy,
            Kind::Mse => Method::Mse,
        }
    }

    /// Whether `range` needs pass 2, so the caller can skip the second run of the model.
    pub fn needs_histogram(self) -> bool {
        !matches!(self, Method::MinMax)
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::MinMax => "minmax",
            Method::Percentile(_) => "percentile",
            Method::Entropy => "entropy",
            Method::Mse => "mse",
        }
    }
}

/// `BINS` equal bins over [lo, hi]; values outside count in the end bins.
#[derive(Clone)]
struct Histogram {
    lo: f32,
    hi: f32,
    /// Bins per unit, in f32 so that binning stays cheap; 0 for a zero-width range (everything in bin 0).
    inv_width: f32,
    counts: Vec<u64>,
}

impl Histogram {
    fn new(lo: f32, hi: f32) -> Self {
        let width = hi as f64 - lo as f64;
        let inv_width = if width > 0.0 { (BINS as f64 / width) as f32 } else { 0.0 };
        Histogram { lo, hi, inv_width, counts: vec![0; BINS] }
    }

    #[inline]
    fn add(&mut self, x: f32) {
        // `as` saturates, so values below `lo` land in bin 0; the `min` sends those above `hi` to the last.
        let k = (((x - self.lo) * self.inv_width) as usize).min(BINS - 1);
        self.counts[k] += 1;
    }

    fn width(&self) -> f64 {
        (self.hi as f64 - self.lo as f64) / BINS as f64
    }

    fn edge(&self, k: usize) -> f64 {
        self.lo as f64 + k as f64 * self.width()
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value below which a fraction `q` of the counts lies.
    fn quantile(&self, q: f64) -> f64 {
        let target = q * self.total() as f64;
        let mut below = 0.0;
        for (k, &n) in self.counts.iter().enumerate().filter(|(_, &n)| n > 0) {
            let n = n as f64;
            if below + n >= target {
                return self.edge(k) + self.width() * ((target - below) / n).clamp(0.0, 1.0);
            }
            below += n;
        }
        self.hi as f64
    }
}

/// Pass-2 state.
#[derive(Clone)]
struct Histograms {
    signed: Histogram,
    abs: Histogram,
}

/// Range statistics of one activation tensor over the calibration set.
#[derive(Clone)]
pub struct Observer {
    min: f32,
    max: f32,
    count: u64,
    /// NaN/Inf seen in either pass; any makes `range` fail.
    non_finite: u64,
    hist: Option<Histograms>,
}

impl Default for Observer {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer {
    pub fn new() -> Self {
        Observer { min: f32::INFINITY, max: f32::NEG_INFINITY, count: 0, non_finite: 0, hist: None }
    }

    /// Pass 1.
    pub fn observe_range(&mut self, x: &[f32]) {
        for &v in x {
            if v.is_finite() {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                self.count += 1;
            } else {
                self.non_finite += 1;
            }
        }
    }

    /// Fixes the histogram range from pass 1 (widened to include 0). Calling it again restarts pass 2.
    pub fn begin_histogram(&mut self) {
        let (lo, hi) = self.widened();
        self.hist = Some(Histograms { signed: Histogram::new(lo, hi), abs: Histogram::new(0.0, (-lo).max(hi)) });
    }

    /// Pass 2; values outside the pass-1 range count in the end bins.
    /// Panics if `begin_histogram` was not called: the caller skipped a step.
    pub fn observe_histogram(&mut self, x: &[f32]) {
        let h = self.hist.as_mut().expect("observe_histogram called before begin_histogram");
        for &v in x {
            if v.is_finite() {
                h.signed.add(v);
                h.abs.add(v.abs());
            } else {
                self.non_finite += 1;
            }
        }
    }

    /// Smallest finite value of pass 1 (+inf before any).
    pub fn min(&self) -> f32 {
        self.min
    }

    /// Largest finite value of pass 1 (-inf before any).
    pub fn max(&self) -> f32 {
        self.max
    }

    /// Finite values seen in pass 1.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Pass-1 range widened to include 0, so that 0 stays exactly representable; (0, 0) before any value.
    fn widened(&self) -> (f32, f32) {
        (self.min.min(0.0), self.max.max(0.0))
    }

    /// Clipping range for `method`; symmetric = the range is [-t, t]. Err (clear message) if nothing was observed,
    /// if the method needs the histogram and pass 2 did not run, or on a bad percentile.
    pub fn range(&self, method: Method, symmetric: bool) -> Result<(f32, f32), String> {
        if let Method::Percentile(p) = method {
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!("percentile must be in (0, 100], got {p}"));
            }
        }
        if self.non_finite > 0 {
            return Err(format!(
                "saw {} non-finite activation values (NaN or Inf); refusing to calibrate a broken model",
                self.non_finite
            ));
        }
        if self.count == 0 {
            return Err("no values observed: run pass 1 (observe_range) on the calibration data".into());
        }
        let (lo, hi) = self.widened();
        let amax = (-lo).max(hi);
        if !method.needs_histogram() {
            return Ok(if symmetric { (-amax, amax) } else { (lo, hi) });
        }
        let h = self.hist.as_ref().ok_or_else(|| {
            format!("{} calibration needs the histogram pass (begin_histogram, observe_histogram)", method.name())
        })?;
        if h.signed.total() == 0 {
            return Err(format!("{} calibration: the histogram pass saw no values", method.name()));
        }
        if amax == 0.0 {
            return Ok((0.0, 0.0));
        }
        let (l, u) = match method {
            Method::Percentile(p) if symmetric => {
                let t = h.abs.quantile(p / 100.0);
                (-t, t)
            }
            Method::Percentile(p) => (h.signed.quantile(1.0 - p / 100.0), h.signed.quantile(p / 100.0)),
            Method::Entropy => {
                let t = entropy_bins(&h.abs.counts) as f64 * h.abs.width();
                (-t, t)
            }
            Method::Mse if symmetric => {
                let t = mse_symmetric(&Moments::new(&h.abs));
                (-t, t)
            }
            Method::Mse => mse_asymmetric(&Moments::new(&h.signed)),
            Method::MinMax => unreachable!("answered from pass 1 above"),
        };
        // Never wider than what pass 1 saw, and 0 stays inside.
        Ok(if symmetric {
            let t = (u as f32).clamp(0.0, amax);
            (-t, t)
        } else {
            ((l as f32).clamp(lo, 0.0), (u as f32).clamp(0.0, hi))
        })
    }
}

/// TensorRT's entropy calibration on an |x| histogram: how many leading bins to keep (the threshold is that many
/// bin widths). Tries every i in 128..=bins, including the full range, and keeps the first minimum of KL(P || Q).
fn entropy_bins(hist: &[u64]) -> usize {
    let n = hist.len();
    let h: Vec<f64> = hist.iter().map(|&c| c as f64).collect();
    // beyond[i] = counts in bins i.. (what clipping at i bins folds into the last kept bin).
    let mut beyond = vec![0.0; n + 1];
    for i in (0..n).rev() {
        beyond[i] = beyond[i + 1] + h[i];
    }
    let (mut p, mut q) = (vec![0.0; n], vec![0.0; n]);
    let mut best = (f64::INFINITY, n);
    for i in ENTROPY_LEVELS..=n {
        // Reference P: the first i bins, outliers folded into the last.
        p[..i].copy_from_slice(&h[..i]);
        p[i - 1] += beyond[i];
        // Candidate Q: the same bins without the outliers merged into 128 levels (the remainder of i / 128 goes to
        // the last level), each level spread evenly over the bins of its group where P is non-zero.
        let merged = i / ENTROPY_LEVELS;
        for j in 0..ENTROPY_LEVELS {
            let start = j * merged;
            let stop = if j + 1 == ENTROPY_LEVELS { i } else { start + merged };
            let level: f64 = h[start..stop].iter().sum();
            let nonzero = p[start..stop].iter().filter(|&&v| v != 0.0).count() as f64;
            for (qk, &pk) in q[start..stop].iter_mut().zip(&p[start..stop]) {
                *qk = if pk != 0.0 { level / nonzero } else { 0.0 };
            }
        }
        let kl = smoothed_kl(&p[..i], &q[..i]);
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1
}

/// Smoothing of a count vector: empty bins get `ENTROPY_EPS`, taken evenly from the others (so the total is kept).
/// Returns (amount taken per non-empty bin, total), or None when that would empty a bin: not a distribution.
fn smoothing(v: &[f64]) -> Option<(f64, f64)> {
    let nonzero = v.iter().filter(|&&x| x != 0.0).count();
    if nonzero == 0 {
        return None;
    }
    let taken = ENTROPY_EPS * (v.len() - nonzero) as f64 / nonzero as f64;
    let smallest = v.iter().copied().filter(|&x| x != 0.0).fold(f64::INFINITY, f64::min);
    (smallest > taken).then(|| (taken, v.iter().sum()))
}

/// KL(P || Q) of the smoothed, normalised count vectors; infinite when Q cannot be smoothed.
fn smoothed_kl(p: &[f64], q: &[f64]) -> f64 {
    let (Some((tp, sp)), Some((tq, sq))) = (smoothing(p), smoothing(q)) else {
        return f64::INFINITY;
    };
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let a = if a == 0.0 { ENTROPY_EPS } else { a - tp } / sp;
            let b = if b == 0.0 { ENTROPY_EPS } else { b - tq } / sq;
            a * (a / b).ln()
        })
        .sum()
}

/// Prefix sums of a histogram's moments (values uniform within each bin), for O(1) clipping-error queries.
struct Moments {
    lo: f64,
    width: f64,
    counts: Vec<f64>,
    /// s0[k], s1[k], s2[k]: Σ over bins < k of n, n·E[x], n·E[x²].
    s0: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
}

impl Moments {
    fn new(h: &Histogram) -> Self {
        let (lo, width) = (h.lo as f64, h.width());
        let counts: Vec<f64> = h.counts.iter().map(|&n| n as f64).collect();
        let (mut s0, mut s1, mut s2) = (vec![0.0], vec![0.0], vec![0.0]);
        for (k, &n) in counts.iter().enumerate() {
            let c = lo + (k as f64 + 0.5) * width;
            s0.push(s0[k] + n);
            s1.push(s1[k] + n * c);
            s2.push(s2[k] + n * (c * c + width * width / 12.0));
        }
        Moments { lo, width, counts, s0, s1, s2 }
    }

    /// Σ (x - t)² over the whole bins a..b.
    fn sq_dev(&self, a: usize, b: usize, t: f64) -> f64 {
        let n = self.s0[b] - self.s0[a];
        let s = self.s1[b] - self.s1[a];
        let s2 = self.s2[b] - self.s2[a];
        (s2 - 2.0 * t * s + t * t * n).max(0.0)
    }

    /// The bin holding t, its lower edge and t clamped to the histogram.
    fn locate(&self, t: f64) -> (usize, f64, f64) {
        let pos = ((t - self.lo) / self.width).clamp(0.0, BINS as f64);
        let k = (pos as usize).min(BINS - 1);
        let edge = self.lo + k as f64 * self.width;
        (k, edge, self.lo + pos * self.width)
    }

    fn mass_below(&self, t: f64) -> f64 {
        let (k, edge, m) = self.locate(t);
        self.s0[k] + self.counts[k] * (m - edge) / self.width
    }

    /// Σ (t - x)² over the values below t.
    fn sq_dev_below(&self, t: f64) -> f64 {
        let (k, edge, m) = self.locate(t);
        let part = self.counts[k] / self.width * ((t - edge).powi(3) - (t - m).powi(3)) / 3.0;
        self.sq_dev(0, k, t) + part
    }

    /// Σ (x - t)² over the values above t.
    fn sq_dev_above(&self, t: f64) -> f64 {
        let (k, edge, m) = self.locate(t);
        let part = self.counts[k] / self.width * ((edge + self.width - t).powi(3) - (m - t).powi(3)) / 3.0;
        self.sq_dev(k + 1, BINS, t) + part
    }

    /// Expected squared error of quantizing onto a grid of `step` spanning [a, b].
    fn error(&self, a: f64, b: f64, step: f64) -> f64 {
        (self.mass_below(b) - self.mass_below(a)) * step * step / 12.0 + self.sq_dev_below(a) + self.sq_dev_above(b)
    }
}

/// Mse threshold t on an |x| histogram; the grid is 127 steps of t/127 per sign.
fn mse_symmetric(m: &Moments) -> f64 {
    let amax = m.lo + BINS as f64 * m.width;
    let mut best = (f64::INFINITY, amax);
    for k in (1..=MSE_STEPS).rev() {
        let t = amax * k as f64 / MSE_STEPS as f64;
        let err = m.error(-t, t, t / 127.0);
        if err < best.0 {
            best = (err, t);
        }
    }
    best.1
}

/// Mse range on a signed histogram, each side shrinking independently.
fn mse_asymmetric(m: &Moments) -> (f64, f64) {
    let (lo, hi) = (m.lo, m.lo + BINS as f64 * m.width);
    let mut best = (f64::INFINITY, (lo, hi));
    for i in (0..=MSE_STEPS).rev() {
        let l = lo * i as f64 / MSE_STEPS as f64;
        for j in (0..=MSE_STEPS).rev() {
            let u = hi * j as f64 / MSE_STEPS as f64;
            if u <= l {
                continue;
            }
            let p = ActGrid::from_range(l as f32, u as f32, false);
            let s = p.scale as f64;
            let err = m.error(-p.zero as f64 * s, (255 - p.zero) as f64 * s, s);
            if err < best.0 {
                best = (err, (l, u));
            }
        }
    }
    best.1
}

/// u8 quantization parameters of a range: x ≈ scale * (q - zero), q in 0..=255.
#[cfg(test)]
mod tests;
