//! `shrink quantize`: conversion-time quantization of an fp32 model folder into a folder the runtime loads.
//!
//! Every Linear input site of the encoder (QKV, attention output, FFN in, FFN out of each layer) gets one runtime
//! format from `shrink_format::quant::FORMATS` (a `Plan`): `int8` (per-channel weights, per-token dynamic activations),
//! `int8-static` (activation scale fixed by calibration with an observer), `int4-gN` (group-wise weights, int8
//! activations, or f32 activations with `-f32act`), `fp16` or `fp32`. Optional on top: SmoothQuant (`smooth`
//! factors the runtime divides the inputs by, folded into the weights) and GPTQ (weights rounded with the
//! calibration Hessian). Embedding tables stay f32 or become int8 / int4 per row. The unused [CLS] pooler is
//! dropped; the classifier head stays f32. config.json's `quantization` section records every choice.

pub mod calib;
pub mod gptq;
pub mod job;
pub mod observer;
pub mod report;
pub mod select;
#[cfg(test)]
mod testrng;

use std::cell::{RefCell, RefMut};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use safetensors::Dtype;
use serde_json::json;
use shrink_format::folder::{write_model_dir, OutDir, CONFIG_FILE, WEIGHTS_FILE};
use shrink_format::quant::grid::scale_rounding;
use shrink_format::quant::{ActGrid, Acts, Format, Int4Weight, Int8Weight, Smooth, SparseWeight, Storage, TableFormat};
use shrink_format::schema::{Activations, SchemeRecord, Step};
use shrink_format::tensors::{serialize, OwnedTensor};
use shrink_format::{Config, QuantSection, TensorFile};
use shrink_io::{choices, Choice};
use shrink_runtime::{Engine, Site};

use calib::{Calibration, Needs, SiteKey, Smoothing};
use gptq::{GptqOptions, Grid, Hessian, Quantized};

pub use shrink_format::schema::{AttentionPrecision, Scheme};

choices! {
    pub enum EmbeddingStorage {
        Fp32 = "fp32",
        Fp16 = "fp16": "Half precision (half the bytes; widened per looked-up row at run time)",
        Int8 = "int8": "Per-row symmetric int8 of the token embedding table (the largest tensor of small models)",
        Int4 = "int4": "Per-row int4 in groups of 32 with f16 scales",
    }
}

impl EmbeddingStorage {
    /// Without `--embeddings`: fp16 for the fp16 scheme, else fp32.
    pub fn default_for(scheme: Scheme) -> Self {
        match scheme {
            Scheme::Fp16 => Self::Fp16,
            _ => Self::Fp32,
        }
    }

    /// The table's grid (per row: each row is one "channel"); None for float storage.
    pub fn grid(self) -> Option<Grid> {
        match self {
            Self::Fp32 | Self::Fp16 => None,
            Self::Int8 => Some(Int8Weight::GRID),
            Self::Int4 => Some(Int4Weight::grid(EMBEDDING_GROUP)),
        }
    }
}

choices! {
    pub enum Granularity {
        PerChannel = "per-channel",
        PerTensor = "per-tensor",
    }
}

choices! {
    pub enum ActStorage {
        Int8 = "int8",
        F32 = "f32",
        Static = "static": "int8 with one scale per tensor fixed by calibration (as int8-static; `--observer`)",
    }
}

/// Group of the int4 embedding table.
const EMBEDDING_GROUP: usize = 32;

#[derive(Clone, Debug)]
pub struct Options {
    pub scheme: Scheme,
    pub embeddings: EmbeddingStorage,
    /// int8 schemes: one weight scale per output channel or per tensor.
    pub weights: Granularity,
    /// int8-static: how activation ranges are chosen, and whether they are symmetric (zero point 128).
    pub observer: observer::Method,
    pub symmetric: bool,
    /// int4: K group and activation storage.
    pub group: usize,
    pub int4_acts: ActStorage,
    pub smooth_alpha: Option<f32>,
    /// Decoders: search each site's scales (AWQ, `decoder::awq`) instead of one SmoothQuant strength.
    pub awq: bool,
    pub gptq: Option<GptqOptions>,
    /// The folder's `attention`; None: bf16 when every Linear takes int8 activations, else fp32.
    pub attention: Option<AttentionPrecision>,
}

impl Options {
    pub fn new(scheme: Scheme) -> Self {
        Self {
            scheme,
            embeddings: EmbeddingStorage::Fp32,
            weights: Granularity::PerChannel,
            observer: observer::Method::MinMax,
            symmetric: false,
            group: 32,
            int4_acts: ActStorage::Int8,
            smooth_alpha: None,
            awq: false,
            gptq: None,
            attention: None,
        }
    }

    /// The runtime format this scheme gives every site.
    pub fn format(&self) -> Result<Format> {
        let name = match self.scheme {
            Scheme::Int8Dynamic => "int8".to_string(),
            Scheme::Int8Static => "int8-static".to_string(),
            Scheme::Fp16 => "fp16".to_string(),
            Scheme::Sparse => "sparse".to_string(),
            Scheme::Int4 => match self.int4_acts {
                ActStorage::Int8 => format!("int4-g{}", self.group),
                ActStorage::F32 => format!("int4-g{}-f32act", self.group),
                ActStorage::Static => format!("int4-g{}-static", self.group),
            },
        };
        Ok(Format::parse(&name)?)
    }

    pub fn check(&self) -> Result<()> {
        let f = self.format()?;
        if self.smooth_alpha.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
            bail!("--smooth-alpha must be in [0, 1]");
        }
        if self.awq {
            bail!("--awq: the scale search is built for decoders (a .gguf model) so far; encoders take --smooth-alpha");
        }
        if self.smooth_alpha.is_some() && f.acts == Acts::F32 {
            bail!("--smooth-alpha needs int8 activations; {} keeps them f32", f.name);
        }
        if self.gptq.is_some() && matches!(f.storage, Storage::F32 | Storage::F16 | Storage::Sparse) {
            bail!("--gptq rounds int8/int4 weights; {} has none", f.name);
        }
        if self.gptq.is_some() && self.weights == Granularity::PerTensor {
            bail!("--gptq needs per-channel weight scales (--weights per-channel)");
        }
        Ok(())
    }
}

/// The format of every site; the same format for the Linears of one site, which run as one GEMM or share an input.
#[derive(Clone, Debug)]
pub struct Plan(pub BTreeMap<SiteKey, Format>);

impl Plan {
    pub fn uniform(layers: usize, f: Format) -> Self {
        Plan((0..layers).flat_map(|l| Site::ALL.map(|s| ((l, s), f))).collect())
    }

    /// What calibration these formats need under `opts`.
    pub fn needs(&self, opts: &Options) -> Needs {
        let quantized_acts = self.0.values().any(|f| f.acts != Acts::F32);
        let static_acts = self.0.values().any(|f| f.acts == Acts::Static);
        let int_weights = self.0.values().any(|f| matches!(f.storage, Storage::I8 | Storage::I4 { .. }));
        Needs {
            channels: opts.smooth_alpha.is_some() && quantized_acts,
            hessian: opts.gptq.is_some() && int_weights,
            ranges: static_acts,
            histogram: static_acts && opts.observer.needs_histogram(),
        }
    }
}

/// An fp32 model folder opened for conversion, with the fp32 engine calibration and dev scoring run on.
pub struct Source {
    pub dir: PathBuf,
    pub cfg: Config,
    pub file: TensorFile,
    engine: RefCell<Engine>,
}

impl Source {
    /// Loads `dir` once on the runtime (`threads` workers, texts cut at `max_len`): whatever another command would
    /// reject (tokenizer, every tensor, every size, a head without labels) is rejected before any work, and never
    /// dropped from the output.
    pub fn open(dir: &Path, threads: usize, max_len: Option<usize>) -> Result<Self> {
        let engine = Engine::load(dir, shrink_io::model::engine_options(threads, max_len)).with_context(|| format!("loading {}", dir.display()))?;
        let cfg = engine.config.clone();
        if cfg.quantization.is_some() {
            bail!("{}: this model is already quantized; start from the fp32 folder", dir.join(CONFIG_FILE).display());
        }
        let file = TensorFile::open(&dir.join(WEIGHTS_FILE))?;
        file.check_layer_shapes(&cfg)?;
        Ok(Self { dir: dir.to_path_buf(), cfg, file, engine: RefCell::new(engine) })
    }

    /// A Linear weight (N, K) checked to be 2-D.
    fn weight(&self, name: &str) -> Result<(Vec<f32>, usize, usize)> {
        let w = format!("{name}.weight");
        let shape = self.file.shape(&w).map(<[usize]>::to_vec).with_context(|| format!("{}: tensor {w} is missing", self.file.file.display()))?;
        let [n, k] = shape[..] else {
            bail!("{}: tensor {w} has shape {shape:?}; a Linear weight is 2-D", self.file.file.display());
        };
        Ok((self.file.f32(&w, &shape)?.into_owned(), n, k))
    }

    /// max |W[:, j]| over the stacked Linears of each site: SmoothQuant's weight side.
    pub fn weight_absmax(&self) -> Result<BTreeMap<SiteKey, Vec<f32>>> {
        let mut out = BTreeMap::new();
        for l in 0..self.cfg.num_hidden_layers {
            for site in Site::ALL {
                let mut m: Vec<f32> = Vec::new();
                for name in site.names(l) {
                    let (w, _, k) = self.weight(&name)?;
                    m.resize(k, 0.0);
                    for row in w.chunks_exact(k) {
                        m.iter_mut().zip(row).for_each(|(a, v)| *a = a.max(v.abs()));
                    }
                }
                out.insert((l, site), m);
            }
        }
        Ok(out)
    }

    /// The fp32 engine.
    pub fn engine(&self) -> RefMut<'_, Engine> {
        self.engine.borrow_mut()
    }

    /// Runs the calibration `plan` needs (nothing when it needs none).
    pub fn calibrate(&self, plan: &Plan, opts: &Options, texts: &[String]) -> Result<Calibration> {
        let needs = plan.needs(opts);
        if !(needs.channels || needs.hessian || needs.ranges) {
            return Ok(Calibration::default());
        }
        if texts.is_empty() {
            bail!("{} needs calibration data: pass --calib FILE.jsonl", describe(opts));
        }
        let w_absmax = if needs.channels { self.weight_absmax()? } else { BTreeMap::new() };
        let smooth = opts.smooth_alpha.filter(|_| needs.channels).map(|alpha| Smoothing { alpha, w_absmax: &w_absmax });
        calib::calibrate(&mut self.engine(), texts, needs, smooth)
    }
}

fn describe(opts: &Options) -> String {
    let mut s = opts.scheme.name().to_string();
    if opts.smooth_alpha.is_some() {
        s += " with --smooth-alpha";
    }
    if opts.gptq.is_some() {
        s += " with --gptq";
    }
    s
}

/// The writer's grid for weights stored as `storage`: int8 per output channel, int4 per group of K; None for
/// float storage.
pub fn weight_grid(storage: Storage) -> Option<Grid> {
    match storage {
        Storage::I8 => Some(Int8Weight::GRID),
        Storage::I4 { group } => Some(Int4Weight::grid(group)),
        Storage::F32 | Storage::F16 | Storage::Sparse => None,
    }
}

/// The values the runtime computes with for a weight the writer stores on `grid` by rounding to nearest. (N, K)
pub fn fake_quantize(w: &[f32], n: usize, k: usize, grid: &Grid) -> Vec<f32> {
    gptq::rtn(w, n, k, grid, &scale_rounding(grid)).dequantize(n, k, grid)
}

/// Weights of one Linear on `grid`: GPTQ with the site's Hessian when asked, else round to nearest.
fn round_weights(w: &[f32], n: usize, k: usize, grid: &Grid, opts: &Options, h: Option<&Hessian>, name: &str) -> Result<Quantized> {
    let round_scale = scale_rounding(grid);
    match (opts.gptq, h) {
        (Some(g), Some(h)) => gptq::gptq(w, n, k, h, grid, &g, &round_scale).map_err(|e| anyhow::anyhow!("GPTQ of {name}: {e}")),
        (Some(_), None) => bail!("GPTQ of {name}: no calibration Hessian for its input"),
        (None, _) => Ok(gptq::rtn(w, n, k, grid, &round_scale)),
    }
}

pub struct Summary {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub quantized: usize,
}

/// Writes the folder `out`: every site in `plan`'s format, with `cal`'s static ranges, smoothing and Hessians.
/// `step` is appended to the lineage record (None: a scratch folder of a search).
pub fn emit(src: &Source, out: &OutDir, opts: &Options, plan: &Plan, cal: &Calibration, step: Option<Step>) -> Result<Summary> {
    let cfg = &src.cfg;
    let (c, v) = (cfg.hidden_size, cfg.vocab_size);
    let mut layers = BTreeMap::new();
    let mut tensors = Vec::new();
    let mut quantized = 0;
    let pb = shrink_io::events::bar(plan.0.len(), "quantize");
    for (&(l, site), &f) in &plan.0 {
        let key = (l, site);
        let smooth = cal.smooth.get(&key).filter(|_| f.acts != Acts::F32);
        let stats = cal.sites.get(&key);
        let act = match f.acts {
            Acts::Static if cal.fixed.contains_key(&key) => cal.fixed.get(&key).copied(),
            Acts::Static => {
                let st = stats.with_context(|| format!("layer {l} {site:?}: no calibration ranges"))?;
                let (lo, hi) = st.observer.range(opts.observer, opts.symmetric).map_err(|e| anyhow::anyhow!("layer {l} {site:?}: {e}"))?;
                Some(ActGrid::from_range(lo, hi, opts.symmetric))
            }
            _ => None,
        };
        // GPTQ sees the inputs the weights will meet: x / s, so H' = S⁻¹ H S⁻¹.
        let hessian = match (stats.and_then(|s| s.hessian.as_ref()), smooth) {
            (Some(h), Some(s)) => Some(h.scaled(&s.iter().map(|v| 1.0 / v).collect::<Vec<_>>())),
            (h, _) => h.cloned(),
        };
        for name in site.names(l) {
            let (mut w, n, k) = src.weight(&name)?;
            if let Some(s) = smooth {
                for row in w.chunks_exact_mut(k) {
                    row.iter_mut().zip(s).for_each(|(w, s)| *w *= s);
                }
            }
            let wname = format!("{name}.weight");
            match f.storage {
                Storage::F32 => tensors.push(OwnedTensor::f32(&wname, vec![n, k], &w)),
                Storage::F16 => tensors.push(OwnedTensor::f16(&wname, vec![n, k], &w)),
                Storage::Sparse => tensors.extend(SparseWeight::encode(&w, n, k).map_err(|e| anyhow::anyhow!("{name}: {e}"))?.tensors(&name)),
                Storage::I8 if opts.weights == Granularity::PerTensor => tensors.extend(Int8Weight::encode_per_tensor(&w, n, k).tensors(&name)),
                Storage::I8 => {
                    let r = round_weights(&w, n, k, &Int8Weight::GRID, opts, hessian.as_ref(), &name)?;
                    tensors.extend(Int8Weight::from_rounded(r, n, k).tensors(&name));
                }
                Storage::I4 { group } => {
                    if !k.is_multiple_of(group) {
                        // Pruned layers: `shrink prune` keeps FFN widths at multiples of 32 for this.
                        bail!("{name}: K = {k} (its input width) is not a multiple of the int4 group {group}; use a group that divides it");
                    }
                    let r = round_weights(&w, n, k, &Int4Weight::grid(group), opts, hessian.as_ref(), &name)?;
                    tensors.extend(Int4Weight::from_rounded(r, n, k, group).tensors(&name));
                }
            }
            if let Some(p) = act {
                tensors.extend(p.tensors(&name));
            }
            if let Some(s) = smooth {
                tensors.extend(Smooth(s.clone()).tensors(&name));
            }
            quantized += usize::from(f.storage != Storage::F32);
            layers.insert(name, f);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    if src.file.contains("classifier.weight") {
        // The head is tiny and its errors go straight into the logits.
        layers.insert("classifier".to_string(), Format::FP32);
    }
    let word_table = shrink_format::arch::name(shrink_format::arch::Module::Word);
    let word = &format!("{word_table}.weight");
    let embeddings = match opts.embeddings {
        EmbeddingStorage::Fp16 => {
            tensors.push(OwnedTensor::f16(word, vec![v, c], &src.file.f32(word, &[v, c])?));
            TableFormat::F16
        }
        EmbeddingStorage::Fp32 => TableFormat::F32,
        EmbeddingStorage::Int8 => {
            tensors.extend(Int8Weight::encode(&src.file.f32(word, &[v, c])?, v, c).tensors(&word_table));
            TableFormat::Int8
        }
        EmbeddingStorage::Int4 => {
            let t = Int4Weight::encode(&src.file.f32(word, &[v, c])?, v, c, EMBEDDING_GROUP).map_err(|e| anyhow::anyhow!("{word}: {e}"))?;
            tensors.extend(t.tensors(&word_table));
            TableFormat::Int4 { group: EMBEDDING_GROUP }
        }
    };
    // Everything else (biases, LayerNorms, position and type tables, the head) is copied as f32.
    let done: HashSet<String> = tensors.iter().map(|t| t.name.clone()).collect();
    // The [CLS] pooler is never run by mean-pooling models: dropped.
    let mut rest: Vec<&str> = src.file.names().filter(|n| !done.contains(*n) && !n.starts_with("pooler.")).collect();
    rest.sort();
    for name in rest {
        if !matches!(src.file.dtype(name), Some(Dtype::F32 | Dtype::F16 | Dtype::BF16)) {
            continue; // integer buffers such as position_ids are not parameters
        }
        let shape = src.file.shape(name).unwrap_or_default().to_vec();
        tensors.push(OwnedTensor::f32(name, shape.clone(), &src.file.f32(name, &shape)?));
    }
    let formats: HashSet<&str> = plan.0.values().map(|f| f.name).collect();
    let acts: HashSet<Acts> = plan.0.values().map(|f| f.acts).collect();
    // Activations already int8 everywhere: bf16 attention costs no accuracy that counts next to theirs.
    let int8_acts = !acts.contains(&Acts::F32);
    let mut out_cfg = cfg.clone();
    out_cfg.quantization = Some(QuantSection {
        // "mixed" once any site differs from what --scheme gives them all.
        scheme: if formats.len() == 1 && formats.contains(opts.format()?.name) { SchemeRecord::Uniform(opts.scheme) } else { SchemeRecord::Mixed },
        activations: match acts.into_iter().collect::<Vec<_>>()[..] {
            [Acts::F32] => Activations::Fp32,
            [Acts::Dynamic] => Activations::Dynamic,
            [Acts::Static] => Activations::Static,
            _ => Activations::Mixed,
        },
        embeddings,
        layers,
        attention: opts.attention.unwrap_or(if int8_acts { AttentionPrecision::Bf16 } else { AttentionPrecision::Fp32 }),
    });
    out_cfg.lineage.extend(step);
    let bytes = serialize(tensors)?;
    write_model_dir(out, &serde_json::to_string_pretty(&out_cfg)?, &bytes, &src.dir)?;
    let bytes_in = std::fs::metadata(src.dir.join(WEIGHTS_FILE))?.len();
    Ok(Summary { bytes_in, bytes_out: bytes.len() as u64, quantized })
}

/// The settings of `opts` as the lineage record keeps them.
pub fn parameters(opts: &Options) -> serde_json::Value {
    json!({
        "scheme": opts.scheme.name(),
        "weights": opts.weights.name(),
        "embeddings": opts.embeddings.name(),
        "group": opts.group,
        "int4_activations": opts.int4_acts.name(),
        "observer": opts.observer.name(),
        "symmetric_activations": opts.symmetric,
        "smooth_alpha": opts.smooth_alpha,
        "awq": opts.awq,
        "gptq": opts.gptq.map(|g| json!({"damp": g.damp, "act_order": g.act_order, "block": g.block})),
        "attention": opts.attention.map(|a| a.name()),
    })
}

/// The lineage step of quantizing `src` with `opts` on `calib_texts` texts.
pub fn step(src: &Source, opts: &Options, calib_texts: usize, cal: &Calibration) -> Result<Step> {
    Ok(Step::new("quantize", &src.dir, parameters(opts))?.metric("calibration_texts", calib_texts).metric("calibration_tokens", cal.tokens))
}

/// One scheme everywhere: calibrate if it needs to, then write `out`.
pub fn quantize(src: &Source, out: &OutDir, opts: &Options, calib: &[String]) -> Result<Summary> {
    opts.check()?;
    let plan = Plan::uniform(src.cfg.num_hidden_layers, opts.format()?);
    let cal = src.calibrate(&plan, opts, calib)?;
    emit(src, out, opts, &plan, &cal, Some(step(src, opts, calib.len(), &cal)?))
}
