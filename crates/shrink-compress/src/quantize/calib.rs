//! Calibration: runs the fp32 model on the runtime over calibration texts and records, for every Linear input site,
//! what the quantizer asked for: per-channel |x| maxima (SmoothQuant), the Hessian 2/n XᵀX (GPTQ), and the range
//! and histogram of the (smoothed) input (static activation scales). Padding rows are skipped.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use shrink_kernels::gemm::{matmul, Mat};
use shrink_runtime::{Engine, Observer as Probe, Site};

use super::gptq::Hessian;
use super::observer::{ActGrid, Observer};

/// (layer, site): one input shared by the Linears of `site` in that layer.
pub type SiteKey = (usize, Site);

#[derive(Clone, Copy, Debug, Default)]
pub struct Needs {
    pub channels: bool,
    pub hessian: bool,
    pub ranges: bool,
    pub histogram: bool,
}

#[derive(Default)]
pub struct SiteStats {
    /// max |x| per input channel (K).
    pub absmax: Vec<f32>,
    pub hessian: Option<Hessian>,
    /// Range and histogram of x / smooth.
    pub observer: Observer,
}

#[derive(Default)]
pub struct Calibration {
    pub sites: BTreeMap<SiteKey, SiteStats>,
    /// Real (non-padding) tokens seen per pass.
    pub tokens: usize,
    /// SmoothQuant factors s (K) of the sites that are smoothed.
    pub smooth: BTreeMap<SiteKey, Vec<f32>>,
    /// Static activation parameters decided elsewhere (QAT's trained ranges); they win over the observer's.
    pub fixed: BTreeMap<SiteKey, ActGrid>,
}

#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Channels,
    Range,
    Histogram,
}

/// The runtime observer for one pass.
struct Recorder<'a> {
    pass: Pass,
    hessian: bool,
    mask: Vec<u32>,
    sites: &'a mut BTreeMap<SiteKey, SiteStats>,
    inv_smooth: &'a BTreeMap<SiteKey, Vec<f32>>,
    rows: Vec<f32>, // (real tokens, K)
    gram: Vec<f32>, // (K, K)
}

impl Probe for Recorder<'_> {
    fn linear_input(&mut self, layer: usize, site: Site, x: &[f32], k: usize) {
        self.rows.clear();
        for (row, _) in x.chunks_exact(k).zip(&self.mask).filter(|(_, &m)| m != 0) {
            match (self.pass, self.inv_smooth.get(&(layer, site))) {
                (Pass::Range | Pass::Histogram, Some(inv)) => self.rows.extend(row.iter().zip(inv).map(|(v, s)| v * s)),
                _ => self.rows.extend_from_slice(row),
            }
        }
        let n = self.rows.len() / k;
        let st = self.sites.entry((layer, site)).or_default();
        match self.pass {
            Pass::Channels => {
                st.absmax.resize(k, 0.0);
                for row in self.rows.chunks_exact(k) {
                    st.absmax.iter_mut().zip(row).for_each(|(a, v)| *a = a.max(v.abs()));
                }
                if self.hessian && n > 0 {
                    // XᵀX through the f32 GEMM (the naive f64 sum is K/8 times slower), then into the f64 sum.
                    self.gram.resize(k * k, 0.0);
                    let xm = Mat::row_major(&self.rows, n, k);
                    matmul(&mut self.gram, xm.t(), xm, false);
                    st.hessian.get_or_insert_with(|| Hessian::new(k)).add_gram(&self.gram, n);
                }
            }
            Pass::Range => st.observer.observe_range(&self.rows),
            Pass::Histogram => st.observer.observe_histogram(&self.rows),
        }
    }
}

/// Batches of calibration texts.
const BATCH: usize = 16;

/// SmoothQuant's per-channel factors s_j = max|x_j|^α / max|w_j|^(1-α): dividing x by s and multiplying W's
/// column j by s moves the activation outliers into the weights. Channels never active (or with zero weights)
/// keep s = 1; s stays within [1e-4, 1e4] so no f32 overflows.
pub fn smooth_factors(x_absmax: &[f32], w_absmax: &[f32], alpha: f32) -> Vec<f32> {
    x_absmax
        .iter()
        .zip(w_absmax)
        .map(|(&x, &w)| if x > 0.0 && w > 0.0 { (x.powf(alpha) / w.powf(1.0 - alpha)).clamp(1e-4, 1e4) } else { 1.0 })
        .collect()
}

/// SmoothQuant: α and max |W| per input channel of every site (over the site's stacked Linears).
pub struct Smoothing<'a> {
    pub alpha: f32,
    pub w_absmax: &'a BTreeMap<SiteKey, Vec<f32>>,
}

/// Runs the passes `needs` asks for (smoothing implies the channel pass); with `smooth`, the range passes see each
/// site's input divided by its factors, which land in `Calibration::smooth`.
pub fn calibrate(engine: &mut Engine, texts: &[String], needs: Needs, smooth: Option<Smoothing>) -> Result<Calibration> {
    if texts.is_empty() {
        bail!("no calibration texts");
    }
    let mut cal = Calibration::default();
    let mut passes = Vec::new();
    if needs.channels || needs.hessian || smooth.is_some() {
        passes.push(Pass::Channels);
    }
    if needs.ranges || needs.histogram {
        passes.push(Pass::Range);
    }
    if needs.histogram {
        passes.push(Pass::Histogram);
    }
    for pass in passes {
        if pass == Pass::Histogram {
            cal.sites.values_mut().for_each(|s| s.observer.begin_histogram());
        }
        let inv: BTreeMap<SiteKey, Vec<f32>> =
            cal.smooth.iter().map(|(k, s)| (*k, s.iter().map(|v| 1.0 / v).collect())).collect();
        let label = match pass {
            Pass::Channels => "calibrate (channels)",
            Pass::Range => "calibrate (ranges)",
            Pass::Histogram => "calibrate (histograms)",
        };
        let pb = shrink_io::events::bar(texts.len(), label);
        let mut rec = Recorder {
            pass,
            hessian: needs.hessian,
            mask: Vec::new(),
            sites: &mut cal.sites,
            inv_smooth: &inv,
            rows: Vec::new(),
            gram: Vec::new(),
        };
        let mut tokens = 0;
        for chunk in texts.chunks(BATCH) {
            let batch = engine.tokenizer.batch(chunk)?;
            rec.mask.clone_from(&batch.mask);
            tokens += batch.mask.iter().filter(|&&m| m != 0).count();
            engine.observe(&batch, &mut rec)?;
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        cal.tokens = tokens;
        if let (Pass::Channels, Some(sm)) = (pass, &smooth) {
            // As in the SmoothQuant paper: the LayerNorm outputs (QKV and FFN-in inputs) carry the outlier channels.
            for (key, st) in cal.sites.iter().filter(|(k, _)| matches!(k.1, Site::Qkv | Site::Inter)) {
                let Some(w) = sm.w_absmax.get(key) else { continue };
                cal.smooth.insert(*key, smooth_factors(&st.absmax, w, sm.alpha));
            }
        }
    }
    Ok(cal)
}
