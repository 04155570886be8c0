//! `shrink quantize` + the runtime's int8 path on the real model and data: quality against fp32, the folder format,
//! inspect, bench, and clear errors on damaged quantized folders.

mod common;

use std::path::Path;

use common::{asset, fails, model, ok};
use shrink_runtime::{Engine, Options};

/// Issue target: mean cosine of int8 vs fp32 sentence embeddings over the 448 BBC test bodies (ONNX Runtime's
/// per-channel dynamic int8 gets 0.993).
const MIN_MEAN_COSINE: f64 = 0.995;
/// Issue target: retrieval MRR@10 of int8 may trail fp32 by at most this.
const MAX_MRR_DROP: f64 = 0.005;
/// fp32 on the runtime, ties against the query (`cli.rs` pins it; int8 measured 0.931).
const FP32_MRR: f64 = 0.925_005_3;

fn quantize(out: &Path, extra: &[&str]) {
    let model = model();
    let mut args = vec!["quantize", &model, "--scheme", "int8-dynamic", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    ok(&args);
}

fn bodies() -> Vec<String> {
    std::fs::read_to_string(asset("data/bbc/test.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["body"].as_str().unwrap().to_string())
        .collect()
}

fn mean_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    // Both sides are unit vectors.
    a.iter().zip(b).map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p * q) as f64).sum::<f64>()).sum::<f64>() / a.len() as f64
}

fn embed_all(dir: &Path, texts: &[String]) -> Vec<Vec<f32>> {
    let mut e = Engine::load(dir, Options { threads: 2, max_len: Some(128), ..Default::default() }).unwrap();
    texts.chunks(32).flat_map(|c| e.embed(c).unwrap()).collect()
}

#[test]
fn int8_embeddings_and_retrieval_stay_close_to_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("int8");
    quantize(&q, &[]);
    let texts = bodies();
    assert_eq!(texts.len(), 448);
    let cos = mean_cosine(&embed_all(&asset("models/all-MiniLM-L6-v2"), &texts), &embed_all(&q, &texts));
    assert!(cos >= MIN_MEAN_COSINE, "mean cosine int8 vs fp32 {cos}");
    let test = asset("data/bbc/test.jsonl");
    let r: serde_json::Value =
        serde_json::from_str(&ok(&["eval", q.to_str().unwrap(), "--task", "retrieval", "--data", test.to_str().unwrap(), "--json"])).unwrap();
    let mrr = r["mrr@10"].as_f64().unwrap();
    assert!(mrr >= FP32_MRR - MAX_MRR_DROP, "int8 MRR@10 {mrr} vs fp32 {FP32_MRR}");
    eprintln!("int8: mean cosine {cos:.5}, {r}");
}

#[test]
fn quantized_folder_format_inspect_and_bench() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("int8");
    quantize(&q, &["--embeddings", "int8"]);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(q.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["quantization"]["scheme"], "int8-dynamic");
    assert_eq!(cfg["quantization"]["attention"], "bf16", "int8 activations everywhere: bf16 attention by default");
    assert_eq!(cfg["quantization"]["embeddings"], "int8");
    assert_eq!(cfg["quantization"]["layers"]["encoder.layer.5.output.dense"], "int8");
    for f in ["tokenizer.json", "vocab.txt"] {
        assert!(q.join(f).is_file(), "{f} not copied");
    }
    let r: serde_json::Value = serde_json::from_str(&ok(&["inspect", q.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(r["total"]["params"], 22_565_376, "the parameters the model runs (the unused pooler dropped)");
    let size = std::fs::metadata(q.join("model.safetensors")).unwrap().len() as f64;
    let stored = r["total"]["stored_bytes"].as_f64().unwrap();
    assert!((stored - size).abs() / size < 0.01, "inspect's stored bytes {stored} vs file {size}");
    // int8 weights + one f32 scale per row: 8 + 32 / 384 bits for the encoder's square matrices.
    for (i, (name, s)) in r["layers"].as_array().unwrap().iter().map(|l| (l[0].clone(), l[1].clone())).enumerate() {
        let bits = s["stored_bytes"].as_f64().unwrap() * 8.0 / s["params"].as_f64().unwrap();
        assert!((8.0..8.3).contains(&bits), "layer {i} {name}: {bits} bits per weight");
    }
    assert!(size < 25e6, "int8 with int8 embeddings should be about a quarter of 90.9 MB, is {size}");
    // The bench's peak RSS is its own, not its parent's: this process holds 1 GB while it runs (Linux carries
    // ru_maxrss over fork and exec, which once made a bench started by a trainer report the trainer's peak).
    let held = vec![1u8; 1 << 30];
    let b: serde_json::Value =
        serde_json::from_str(&ok(&["--threads", "1", "bench", q.to_str().unwrap(), "--seq", "16", "--runs", "3", "--json"])).unwrap();
    assert_eq!(held.iter().step_by(4096).map(|&v| v as usize).sum::<usize>(), (1 << 30) / 4096);
    for k in ["median_ms", "p90_ms", "seqs_per_s", "peak_rss_mb", "weights_mb", "load_ms"] {
        assert!(b[k].as_f64().unwrap() > 0.0, "{k} in {b}");
    }
    let rss = b["peak_rss_mb"].as_f64().unwrap();
    assert!(rss < 300.0, "peak RSS {rss} MB for a 23 MB int8 model at 1 x 16");
    // The candle (training) side refuses quantized folders rather than misreading them.
    let data = asset("data/bbc/train.jsonl");
    let err = fails(&["finetune", q.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", tmp.path().join("x").to_str().unwrap()]);
    assert!(err.contains("quantized"), "{err}");
    let err = fails(&["quantize", q.to_str().unwrap(), "--scheme", "int8-dynamic", "--out", tmp.path().join("y").to_str().unwrap()]);
    assert!(err.contains("already quantized"), "{err}");
}

#[test]
fn damaged_quantized_folders_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let q = tmp.path().join("int8");
    quantize(&q, &[]);
    let cfg_path = q.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    let test = asset("data/bbc/test.jsonl");
    let eval = |dir: &Path| fails(&["eval", dir.to_str().unwrap(), "--task", "retrieval", "--data", test.to_str().unwrap()]);

    std::fs::write(&cfg_path, cfg.replace("\"encoder.layer.2.intermediate.dense\": \"int8\"", "\"encoder.layer.2.intermediate.dense\": \"int3\"")).unwrap();
    let err = eval(&q);
    assert!(err.contains("quantization.layers.encoder.layer.2.intermediate.dense: unknown weight format \"int3\""), "{err}");

    std::fs::write(&cfg_path, cfg.replace("\"encoder.layer.1.attention.self.key\": \"int8\"", "\"encoder.layer.1.attention.self.key\": \"fp32\"")).unwrap();
    let err = eval(&q);
    assert!(err.contains("is I8, expected a floating type") || err.contains("share a format"), "{err}");

    std::fs::write(&cfg_path, &cfg).unwrap();
    let weights = q.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = eval(&q);
    assert!(err.contains("model.safetensors") && err.contains("truncated or corrupt"), "{err}");
}
