//! `quantize_gguf` on a tiny random Llama written with the GGUF writer: smoothing and the AWQ search keep the fp32
//! function; SmoothQuant, AWQ and GPTQ cut the quantized model's error; the files hold our formats; bad requests are refused.

use std::path::{Path, PathBuf};

use shrink_format::gguf::ours::{int4_of, int8_of};

use super::*;
use shrink_eval::perplexity::perplexity_of;
use crate::quantize::gptq::GptqOptions;

const LAYERS: usize = 2;
const C: usize = 64;
const H: usize = 4;
const G: usize = 2;
const D: usize = C / H;
const F: usize = 96;
const V: usize = 40;
/// Input channels every norm scales up, as the few large channels of real decoders' activations.
const OUTLIERS: [usize; 2] = [3, 17];

fn meta(arch: &str) -> Vec<(String, Value)> {
    let u = |k: &str, v: usize| (format!("llama.{k}"), Value::U32(v as u32));
    vec![
        ("general.architecture".into(), Value::Str(arch.into())),
        u("block_count", LAYERS),
        u("embedding_length", C),
        u("feed_forward_length", F),
        u("attention.head_count", H),
        u("attention.head_count_kv", G),
        ("llama.attention.layer_norm_rms_epsilon".into(), Value::F32(1e-5)),
        ("llama.rope.freq_base".into(), Value::F32(1e4)),
    ]
}

/// Every tensor of the model: name, dims (fastest first), f32 values; tied embeddings.
fn random_tensors() -> Vec<(String, Vec<u64>, Vec<f32>)> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut t = Vec::new();
    let mut linear = |name: String, n: usize, k: usize, t: &mut Vec<_>| {
        let w = (0..n * k).map(|_| uniform() * (3.0 / k as f32).sqrt()).collect();
        t.push((name, vec![k as u64, n as u64], w));
    };
    linear("token_embd.weight".into(), V, C, &mut t);
    let norm = |name: String| {
        let w = (0..C).map(|j| if OUTLIERS.contains(&j) { 20.0 } else { 1.0 + 0.1 * (j % 5) as f32 }).collect();
        (name, vec![C as u64], w)
    };
    for l in 0..LAYERS {
        let p = |leaf: &str| format!("blk.{l}.{leaf}.weight");
        t.push(norm(p("attn_norm")));
        linear(p("attn_q"), H * D, C, &mut t);
        linear(p("attn_k"), G * D, C, &mut t);
        linear(p("attn_v"), G * D, C, &mut t);
        linear(p("attn_output"), C, H * D, &mut t);
        t.push(norm(p("ffn_norm")));
        linear(p("ffn_gate"), F, C, &mut t);
        linear(p("ffn_up"), F, C, &mut t);
        linear(p("ffn_down"), C, F, &mut t);
    }
    t.push(norm("output_norm.weight".into()));
    t
}

fn write_f32(path: &Path, metadata: &[(String, Value)], tensors: &[(String, Vec<u64>, Vec<f32>)]) {
    let tensors: Vec<Tensor> = tensors
        .iter()
        .map(|(name, dims, w)| Tensor { name: name.clone(), dims: dims.clone(), kind: type_info(F32).unwrap(), data: Cow::Owned(f32_bytes(w)) })
        .collect();
    write(path, Path::new("/nonexistent"), metadata, &tensors).unwrap();
}

fn tiny(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    write_f32(&path, &meta("llama"), &random_tensors());
    path
}

fn ids() -> Vec<u32> {
    (0..64).map(|i| (i * 7 % V) as u32).collect()
}

fn logits(path: &Path) -> Vec<f32> {
    Llama::from_gguf(&GgufFile::open(path).unwrap()).unwrap().forward(&ids(), None).unwrap()
}

/// ||a - b|| / ||b||.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    (d / b.iter().map(|b| (*b as f64).powi(2)).sum::<f64>()).sqrt()
}

/// The tiny model's largest logit change when `fold` rewrites each layer's tensors (as f32), relative to the
/// largest |logit|.
fn folded_change(fold: impl Fn(&LlamaConfig, usize, &mut Tensors, &Stats) -> HashMap<Site, Vec<f32>>) -> f32 {
    let dir = tempfile::tempdir().unwrap();
    let f = GgufFile::open(&tiny(dir.path())).unwrap();
    let cfg = LlamaConfig::of(&f).unwrap();
    let stats = calibrate(&Llama::from_gguf(&f).unwrap(), &ids(), 16, false, awq::SAMPLES).unwrap();
    let mut tensors = random_tensors();
    for layer in 0..LAYERS {
        let name = |leaf: &str| format!("blk.{layer}.{leaf}.weight");
        let mut t: Tensors = LINEARS.iter().map(|l| l.0).chain(NORMS).map(|leaf| (leaf, f.dequantize(&name(leaf)).unwrap())).collect();
        let inv = fold(&cfg, layer, &mut t, &stats);
        assert_eq!(inv.len(), 4);
        for (n, _, w) in tensors.iter_mut() {
            if let Some(leaf) = n.strip_prefix(&format!("blk.{layer}.")).and_then(|s| s.strip_suffix(".weight")) {
                *w = t[leaf].clone();
            }
        }
    }
    let folded = dir.path().join("folded.gguf");
    write_f32(&folded, &f.metadata, &tensors);
    let (want, got) = (logits(&f.path), logits(&folded));
    let top = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / top
}

#[test]
fn smoothing_and_the_awq_search_keep_the_fp32_function() {
    let change = folded_change(|cfg, layer, t, stats| {
        let inv = smooth(cfg, layer, t, &stats.amax, 0.5);
        // The outlier channels are tamed in the norm that makes them: the test is not passing on a no-op.
        assert!(t["attn_norm"][OUTLIERS[0]] < 10.0, "{}", t["attn_norm"][OUTLIERS[0]]);
        inv
    });
    assert!(change <= 1e-4, "smoothing moved a logit by {change} of the largest");
    for int4 in [false, true] {
        let change = folded_change(|cfg, layer, t, stats| {
            let (inv, choices) = awq::search(cfg, layer, t, stats, int4).unwrap();
            assert_eq!(choices.len(), 4);
            // Every site of this model has 20x outlier inputs: scaling them beats leaving them.
            for c in &choices {
                assert!(c.family != "none" && c.error < c.unscaled, "{c:?}");
            }
            inv
        });
        assert!(change <= 1e-4, "the AWQ search (int4 {int4}) moved a logit by {change} of the largest");
    }
}

/// Quantizes the tiny model with `opts`, calibrated on `ids()` when asked; the relative error of its logits.
fn quantized_err(dir: &Path, opts: &Options, hessians: Option<bool>) -> (f64, GgufFile) {
    let input = GgufFile::open(&dir.join("tiny.gguf")).unwrap();
    let samples = if opts.awq { awq::SAMPLES } else { 0 };
    let stats = hessians.map(|h| calibrate(&Llama::from_gguf(&input).unwrap(), &ids(), 16, h, samples).unwrap());
    let out = dir.join("q.gguf");
    let r = quantize_file(&input, &out, opts, stats.as_ref(), None).unwrap();
    assert_eq!(r.quantized, LAYERS * 7 + 1, "every Linear and the embeddings");
    assert!(r.bytes_out < r.bytes_in / 3, "{} -> {} bytes", r.bytes_in, r.bytes_out);
    (rel_err(&logits(&out), &logits(&input.path)), GgufFile::open(&out).unwrap())
}

#[test]
fn int8_and_int4_files_hold_our_formats_and_calibration_cuts_the_error() {
    let dir = tempfile::tempdir().unwrap();
    tiny(dir.path());
    let mut int8 = Options::new(Scheme::Int8Dynamic);
    int8.embeddings = EmbeddingStorage::Int8;
    let (rtn8, f) = quantized_err(dir.path(), &int8, None);
    assert_eq!(f.uint("general.file_type").unwrap(), u64::from(FTYPE_Q8_0));
    assert!(f.tensors.iter().filter(|t| t.dims.len() == 2).all(|t| int8_of(&f, t).is_some()), "every matrix is our int8");
    int8.smooth_alpha = Some(0.5);
    let (smooth8, _) = quantized_err(dir.path(), &int8, Some(false));
    int8.smooth_alpha = None;
    int8.awq = true;
    let (awq8, _) = quantized_err(dir.path(), &int8, Some(false));

    let mut int4 = Options::new(Scheme::Int4);
    int4.embeddings = EmbeddingStorage::Int4;
    let (rtn4, f) = quantized_err(dir.path(), &int4, None);
    assert_eq!(f.uint("general.file_type").unwrap(), u64::from(FTYPE_Q4_0));
    assert!(f.tensors.iter().filter(|t| t.dims.len() == 2).all(|t| int4_of(&f, t).is_some()), "every matrix is our int4");
    int4.awq = true;
    let (awq4, _) = quantized_err(dir.path(), &int4, Some(false));
    int4.awq = false;
    int4.gptq = Some(GptqOptions::default());
    let (gptq4, _) = quantized_err(dir.path(), &int4, Some(true));
    int4.awq = true;
    let (awq_gptq4, _) = quantized_err(dir.path(), &int4, Some(true));

    eprintln!("relative logit error: int8 {rtn8:.4}, smoothed {smooth8:.4}, AWQ {awq8:.4}; int4 {rtn4:.4}, AWQ {awq4:.4}, GPTQ {gptq4:.4}, both {awq_gptq4:.4}");
    // Measured 0.080 / 0.052 and 0.41 / 0.36: the 20x outlier channels are what per-token activations and 3-bit
    // magnitudes handle worst, which is the point of the two methods.
    assert!(rtn8 < 0.15 && rtn4 < 0.6, "int8 {rtn8}, int4 {rtn4}");
    assert!(smooth8 < rtn8, "SmoothQuant {smooth8} vs rounding {rtn8}");
    assert!(gptq4 < rtn4, "GPTQ {gptq4} vs rounding {rtn4}");
    // Measured 0.068 (int8) and 0.27 (with GPTQ). Alone on int4 the search cuts every site's error but not these
    // random weights' logit error (0.47): they have no salient channels to protect. On SmolLM2 it takes int4
    // perplexity from 37.2 to 31.3 (the CLI test checks the direction there).
    assert!(awq8 < rtn8 && awq_gptq4 < gptq4, "AWQ int8 {awq8} vs {rtn8}; int4 with GPTQ {awq_gptq4} vs {gptq4} ({awq4} alone)");
}

#[test]
fn bad_requests_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let input = tiny(dir.path());
    let out = dir.path().join("q.gguf");
    let err = |opts: &Options, calib: Option<&Calib>, out: &Path| quantize_gguf(&input, out, opts, calib, None).unwrap_err().to_string();
    let mut o = Options::new(Scheme::Int4);
    o.group = 64;
    assert!(err(&o, None, &out).contains("--group 64: a GGUF file holds int4 in groups of 32"));
    assert!(err(&Options::new(Scheme::Int8Static), None, &out).contains("--scheme int8-static: decoders"));
    let mut o = Options::new(Scheme::Int4);
    o.gptq = Some(GptqOptions::default());
    assert!(err(&o, None, &out).contains("--calib (a text file) goes with --gptq"));
    let mut both = Options::new(Scheme::Int8Dynamic);
    (both.awq, both.smooth_alpha) = (true, Some(0.5));
    assert!(err(&both, None, &out).contains("--calib (a text file) goes with --gptq, --smooth-alpha, --awq or --max-ppl-increase"));
    let calib = Calib { path: Path::new("no/such.txt"), tokens: 64, ctx: 16 };
    assert!(err(&both, Some(&calib), &out).contains("--awq searches each site's scales, --smooth-alpha fixes them"));
    assert!(format!("{:#}", quantize_gguf(&input, &out, &o, Some(&calib), None).unwrap_err()).contains("no/such.txt: cannot read the calibration text"));
    let o = Options::new(Scheme::Int8Dynamic);
    assert!(err(&o, None, &input).contains("is the input file"));
    let gpt2 = dir.path().join("gpt2.gguf");
    write_f32(&gpt2, &meta("gpt2"), &random_tensors());
    let e = format!("{:#}", quantize_gguf(&gpt2, &out, &o, None, None).unwrap_err());
    assert!(e.contains("gpt2.gguf: architecture \"gpt2\"; the decoder reads llama"), "{e}");
    assert!(!out.exists(), "a refused request writes nothing");
    assert_eq!(GgufFile::open(&input).unwrap().tensors.len(), random_tensors().len(), "the input is untouched");
}

#[test]
fn a_perplexity_budget_promotes_sites_to_int8_until_the_held_out_text_is_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = GgufFile::open(&tiny(dir.path())).unwrap();
    // Text the fp32 model wrote (sampled at temperature 1): quantization can only make it less likely.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut pick = |logits: &[f32]| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let p: Vec<f64> = shrink_eval::perplexity::log_softmax(logits).iter().map(|l| l.exp()).collect();
        let mut u = (state >> 11) as f64 / (1u64 << 53) as f64;
        p.iter().position(|&p| {
            u -= p;
            u < 0.0
        }).unwrap_or(p.len() - 1) as u32
    };
    let mut dev = vec![1];
    dev.extend(Llama::from_gguf(&input).unwrap().decode(&[1], 255, &[], &mut pick, &mut |_| {}).unwrap());
    let mut opts = Options::new(Scheme::Int4);
    opts.embeddings = EmbeddingStorage::Int8;
    let out = dir.path().join("mixed.gguf");
    let run = |max_increase: f64| {
        let b = mixed::Budget { max_increase, dev: &dev, ctx: 32 };
        quantize_file(&input, &out, &opts, None, Some(&b))
    };
    // A budget int4 alone meets: nothing promoted.
    let all4 = run(1e6).unwrap();
    let loose = all4.mixed.unwrap();
    assert!(loose.promoted.is_empty() && loose.chosen == loose.int4, "{loose:?}");
    let increase = (loose.int4 / loose.fp32 - 1.0) * 100.0;
    assert!(increase > 0.5, "int4 costs this model {increase}%: the test needs room below it");
    // Half int4's increase: some sites, not all, and the file written holds them and measures what was reported.
    let r = run(increase / 2.0).unwrap();
    let m = r.mixed.unwrap();
    eprintln!("fp32 {:.4}, int4 {:.4}, {} of {} sites int8: {:.4}", m.fp32, m.int4, m.promoted.len(), m.sites, m.chosen);
    assert_eq!(m.sites, LAYERS * 4);
    assert!(!m.promoted.is_empty() && m.promoted.len() < m.sites, "{:?}", m.promoted);
    assert!(m.chosen <= m.fp32 * (1.0 + increase / 200.0), "{} over the budget of {}", m.chosen, m.fp32);
    let f = GgufFile::open(&out).unwrap();
    let ppl = perplexity_of(&Llama::from_gguf(&f).unwrap(), &dev, 32).unwrap();
    assert_eq!(ppl, m.chosen, "the file measures what the search reported");
    let is8 = |l: usize, leaf: &str| int8_of(&f, f.tensor(&format!("blk.{l}.{leaf}.weight")).unwrap()).is_some();
    for (l, site) in &m.promoted {
        assert!(LINEARS.iter().filter(|x| x.1 == *site).all(|x| is8(*l, x.0)), "layer {l} {site:?} is int8");
    }
    assert!(r.bytes_out > all4.bytes_out, "promotion costs bytes");
    // Refused: a budget on int8.
    let mut o8 = Options::new(Scheme::Int8Dynamic);
    o8.embeddings = EmbeddingStorage::Int8;
    let b = mixed::Budget { max_increase: 1.0, dev: &dev, ctx: 32 };
    let e = quantize_file(&input, &out, &o8, None, Some(&b)).unwrap_err().to_string();
    assert!(e.contains("--max-ppl-increase promotes int4 sites to int8: pass --scheme int4"), "{e}");
}
