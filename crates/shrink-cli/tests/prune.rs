//! Structured pruning on the real MiniLM: a cut model computes exactly what the unpruned model computes with the
//! removed heads and neurons zeroed (candle and runtime), pruned folders load, save, quantize and run, per-layer
//! size mismatches are clear errors, importance finds a dead head, and a pruned model trains.

mod common;

use std::path::Path;

use candle_core::Tensor;
use common::{asset, fails, model, ok, step};
use shrink_train::prune::importance::{self, Method};
use shrink_train::prune::surgery::{cut, Keep};
use shrink_io::data;
use shrink_train::train;
use shrink_model::{batch_tensors, ops, Bert, TextTokenizer};
use shrink_runtime::{Engine, Options};

/// Cutting changes only the summation order of the surviving terms (f32).
const MAX_CUT_VS_MASKED: f32 = 1e-5;

fn minilm() -> Bert {
    Bert::load_dir(&asset("models/all-MiniLM-L6-v2")).unwrap()
}

fn texts() -> Vec<String> {
    let rows = data::read_jsonl(&asset("data/bbc/test.jsonl")).unwrap();
    data::field(Path::new("test.jsonl"), &rows[..6], "text").unwrap()
}

/// A deliberately uneven cut: layer 0 keeps one head, layer 1 all, the rest every other head; FFN widths differ
/// per layer (multiples of 32, scattered neurons); layer 3 goes entirely.
fn uneven(model: &Bert) -> Keep {
    let layers = vec![0, 1, 2, 4, 5];
    let heads = layers
        .iter()
        .map(|&l| match l {
            0 => vec![7],
            1 => (0..12).collect(),
            _ => (0..12).filter(|h| (h + l) % 2 == 0).collect(),
        })
        .collect();
    let f = model.layers[0].intermediate.weight.dims()[0];
    let neurons = layers.iter().map(|&l| (0..f).filter(|j| (j * 5 + l) % (l + 2) == 0).take(32 * (l + 1)).collect()).collect();
    Keep { layers, heads, neurons }
}

/// The unpruned model with `keep`'s removed heads (V rows) and FFN neurons (intermediate rows) zeroed — their
/// contributions are then exactly 0 — and its removed layers skipped.
fn masked(model: &Bert, keep: &Keep) -> Bert {
    let mut m = model.clone();
    let zero_rows = |w: &Tensor, keep: &[usize], per: usize| {
        let n = w.dims()[0];
        let rows: Vec<f32> = (0..n).map(|r| if keep.contains(&(r / per)) { 1.0 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(rows, n, w.device()).unwrap();
        if w.rank() == 2 { w.broadcast_mul(&mask.unsqueeze(1).unwrap()).unwrap() } else { w.mul(&mask).unwrap() }
    };
    for ((&l, heads), neurons) in keep.layers.iter().zip(&keep.heads).zip(&keep.neurons) {
        let layer = &mut m.layers[l];
        let d = layer.attention.head_dim;
        let v = &mut layer.attention.value;
        (v.weight, v.bias) = (zero_rows(&v.weight, heads, d), zero_rows(&v.bias, heads, d));
        let i = &mut layer.intermediate;
        (i.weight, i.bias) = (zero_rows(&i.weight, neurons, 1), zero_rows(&i.bias, neurons, 1));
    }
    m.layers = keep.layers.iter().map(|&l| m.layers[l].clone()).collect();
    m.config.num_hidden_layers = m.layers.len();
    m
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn candle_hidden(m: &Bert, tok: &TextTokenizer, texts: &[String]) -> Vec<f32> {
    let (ids, mask) = batch_tensors(&tok.batch(texts).unwrap()).unwrap();
    m.forward(&ids, &mask, None, None).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn runtime_hidden(dir: &Path, tok: &TextTokenizer, texts: &[String]) -> Vec<f32> {
    let b = tok.batch(texts).unwrap();
    let mut e = Engine::load(dir, Options { threads: 2, max_len: Some(64), ..Default::default() }).unwrap();
    e.forward(&b.ids, &b.mask, b.b, b.t).unwrap().to_vec()
}

#[test]
fn cut_model_equals_the_masked_model_on_candle_and_runtime() {
    let model = minilm();
    let keep = uneven(&model);
    let pruned = cut(&model, &keep).unwrap();
    assert_eq!(pruned.config.layer_heads, Some(vec![1, 12, 6, 6, 6]));
    assert_eq!(pruned.config.layer_intermediate_sizes, Some(vec![32, 64, 96, 160, 192]));
    let reference = masked(&model, &keep);
    let tok = TextTokenizer::for_model(&asset("models/all-MiniLM-L6-v2"), 64, model.config.vocab_size).unwrap();
    let texts = texts();
    let (cut_c, masked_c) = (candle_hidden(&pruned, &tok, &texts), candle_hidden(&reference, &tok, &texts));
    let d = max_diff(&cut_c, &masked_c);
    assert!(d <= MAX_CUT_VS_MASKED, "candle: cut vs masked {d}");

    let tmp = tempfile::tempdir().unwrap();
    let (p, r) = (tmp.path().join("cut"), tmp.path().join("masked"));
    pruned.save_dir(&common::out_dir(&p), &asset("models/all-MiniLM-L6-v2")).unwrap();
    reference.save_dir(&common::out_dir(&r), &asset("models/all-MiniLM-L6-v2")).unwrap();
    let (cut_r, masked_r) = (runtime_hidden(&p, &tok, &texts), runtime_hidden(&r, &tok, &texts));
    let d = max_diff(&cut_r, &masked_r);
    assert!(d <= MAX_CUT_VS_MASKED, "runtime: cut vs masked {d}");
    // The runtime agrees with the candle model on the pruned shapes as it does on the full ones (golden: 1e-4).
    let d = max_diff(&cut_r, &cut_c);
    assert!(d <= 1e-4, "runtime vs candle on the pruned model {d}");

    // Load + save round-trips every tensor and the per-layer config.
    let again = Bert::load_dir(&p).unwrap();
    assert_eq!(again.config, pruned.config);
    let (a, b) = (again.named_params(), pruned.named_params());
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let (x, y): (Vec<f32>, Vec<f32>) = (ta.flatten_all().unwrap().to_vec1().unwrap(), tb.flatten_all().unwrap().to_vec1().unwrap());
        assert_eq!(x, y, "{na}");
    }
}

fn cfg(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn embed_all(dir: &Path, texts: &[String]) -> Vec<Vec<f32>> {
    Engine::load(dir, Options { threads: 2, max_len: Some(64), ..Default::default() }).unwrap().embed(texts).unwrap()
}

fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p * q) as f64).sum::<f64>()).fold(1.0, f64::min)
}

#[test]
fn pruned_folder_inspects_quantizes_and_rejects_mismatched_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("pruned");
    let ps = p.to_str().unwrap();
    // Data-free weight norms; 5 of the 12 heads x 5 layers are kept per layer on average.
    ok(&["prune", &model(), "--method", "l2", "--heads", "0.6", "--ffn", "0.5", "--layers", "1", "--out", ps]);
    let c = cfg(&p);
    assert_eq!(c["num_hidden_layers"], 5);
    let heads: Vec<usize> = serde_json::from_value(c["layer_heads"].clone()).unwrap();
    let ffn: Vec<usize> = serde_json::from_value(c["layer_intermediate_sizes"].clone()).unwrap();
    assert_eq!(heads.iter().sum::<usize>(), 24, "40% of the 60 heads of the 5 kept layers");
    assert!(heads.iter().all(|&h| h >= 1) && ffn == vec![768; 5], "{heads:?} {ffn:?}");
    assert_eq!(step(&c, "prune")["parameters"]["method"], "l2");

    // inspect counts the reduced parameters exactly.
    let r: serde_json::Value = serde_json::from_str(&ok(&["inspect", ps, "--json"])).unwrap();
    let (cc, d) = (384u64, 32u64);
    let embeddings = 30522 * cc + 512 * cc + 2 * cc + 2 * cc;
    let layers: u64 = heads
        .iter()
        .zip(&ffn)
        .map(|(&h, &f)| {
            let (a, f) = (h as u64 * d, f as u64);
            3 * (a * cc + a) + (a * cc + cc) + (f * cc + f) + (cc * f + cc) + 4 * cc
        })
        .sum();
    assert_eq!(r["total"]["params"], embeddings + layers, "the unused pooler is not carried over");
    assert!(ok(&["inspect", ps]).contains(&format!("layer 0 H{} F768", heads[0])));

    // int8 and int4 folders of the pruned model run on the runtime and stay close to its fp32 output.
    let texts = texts();
    let fp32 = embed_all(&p, &texts);
    for (scheme, group, min_cos) in [("int8-dynamic", "32", 0.99), ("int4", "32", 0.9)] {
        let q = tmp.path().join(scheme);
        ok(&["quantize", ps, "--scheme", scheme, "--group", group, "--out", q.to_str().unwrap()]);
        let cos = min_cosine(&fp32, &embed_all(&q, &texts));
        assert!(cos >= min_cos, "{scheme}: min cosine to the pruned fp32 {cos}");
    }
    // A group that does not divide an odd layer's attention width (H_l x 32) is a clear error.
    if let Some(l) = heads.iter().position(|h| h % 2 == 1) {
        let err = fails(&["quantize", ps, "--scheme", "int4", "--group", "64", "--out", tmp.path().join("g64").to_str().unwrap()]);
        assert!(err.contains(&format!("encoder.layer.{l}.attention.output.dense")) && err.contains("int4 group 64"), "{err}");
    }

    // config.json and weights that disagree: every loader names the file and the tensor.
    let mut bad = c.clone();
    bad["layer_heads"][0] = (heads[0] % 12 + 1).into();
    std::fs::write(p.join("config.json"), serde_json::to_string(&bad).unwrap()).unwrap();
    for args in [&["inspect", ps][..], &["quantize", ps, "--scheme", "int8-dynamic", "--out", tmp.path().join("x").to_str().unwrap()]] {
        let err = fails(args);
        assert!(err.contains("model.safetensors") && err.contains("encoder.layer.0.attention.self.query"), "{args:?}: {err}");
    }
    let err = format!("{:#}", Engine::load(&p, Options { threads: 1, max_len: None, ..Default::default() }).err().expect("mismatch"));
    assert!(err.contains("model.safetensors") && err.contains("encoder.layer.0.attention.self"), "{err}");
    let err = format!("{:#}", Bert::load_dir(&p).err().expect("mismatch"));
    assert!(err.contains("model.safetensors") && err.contains("encoder.layer.0.attention.self"), "{err}");
    for (field, value, says) in [("layer_heads", serde_json::json!([1, 2]), "2 entries"), ("layer_intermediate_sizes", serde_json::json!([0, 1, 1, 1, 1]), "layer_intermediate_sizes[0] is 0")] {
        let mut bad = c.clone();
        bad[field] = value;
        std::fs::write(p.join("config.json"), serde_json::to_string(&bad).unwrap()).unwrap();
        let err = fails(&["inspect", ps]);
        assert!(err.contains("config.json") && err.contains(says), "{field}: {err}");
    }
}

/// MiniLM with a fresh BBC head and `n` labelled rows at 32 tokens.
fn classifier(n: usize) -> (Bert, Vec<shrink_train::example::Example>) {
    let mut m = minilm();
    let labels: Vec<String> = data::BBC_LABELS.iter().map(|s| s.to_string()).collect();
    m.add_classifier(&labels, 0).unwrap();
    let tok = TextTokenizer::for_model(&asset("models/all-MiniLM-L6-v2"), 32, m.config.vocab_size).unwrap();
    let path = asset("data/bbc/train.jsonl");
    let rows = data::read_jsonl(&path).unwrap();
    let ex = train::examples(&path, &rows[..n], &tok, ("text", "label"), &labels).unwrap();
    (m, ex)
}

#[test]
fn importance_ranks_a_zeroed_head_lowest() {
    let (mut m, ex) = classifier(8);
    let (l, h) = (2, 5);
    let a = &mut m.layers[l].attention;
    let d = a.head_dim;
    // Head 5 of layer 2 is dead: its V rows are 0 (its context is 0: zero mask gradient) and, for l2, all its weights.
    let zero = |w: &Tensor, dim: usize| {
        let n = w.dims()[dim];
        let keep: Vec<f32> = (0..n).map(|i| if i / d == h { 0.0 } else { 1.0 }).collect();
        let keep = Tensor::from_vec(keep, n, w.device()).unwrap();
        let keep = if dim == 0 && w.rank() == 2 { keep.unsqueeze(1).unwrap() } else { keep };
        w.broadcast_mul(&keep).unwrap()
    };
    for lin in [&mut a.query, &mut a.key, &mut a.value] {
        (lin.weight, lin.bias) = (zero(&lin.weight, 0), zero(&lin.bias, 0));
    }
    a.output.weight = zero(&a.output.weight, 1);
    for method in [Method::Taylor, Method::L2] {
        let s = importance::score(&m, &ex, method, 4, false).unwrap();
        let (lowest, _) = s.heads[l].iter().enumerate().fold((0, f64::MAX), |b, (i, &v)| if v < b.1 { (i, v) } else { b });
        assert_eq!(lowest, h, "{method:?}: {:?}", s.heads[l]);
        assert!(s.heads[l][h] < 1e-6, "{method:?}: dead head scored {}", s.heads[l][h]);
        let norm: f64 = s.heads[0].iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-9, "{method:?}: per-layer normalisation {norm}");
        assert!(s.neurons.iter().all(|n| n.len() == 1536 && n.iter().all(|v| v.is_finite())));
    }
}

#[test]
fn every_parameter_of_a_pruned_model_gets_a_gradient() {
    let (m, ex) = classifier(4);
    let mut pruned = cut(&m, &uneven(&m)).unwrap();
    let vars = train::trainable(&mut pruned).unwrap();
    let seqs: Vec<Vec<u32>> = ex.iter().map(|e| e.ids.clone()).collect();
    let (ids, mask) = batch_tensors(&shrink_model::tokenizer::pad(&seqs, 0)).unwrap();
    let labels = Tensor::new(ex.iter().map(|e| e.label.unwrap()).collect::<Vec<u32>>().as_slice(), ids.device()).unwrap();
    let loss = ops::cross_entropy(&pruned.logits(&ids, &mask, None).unwrap(), &labels).unwrap();
    let grads = loss.backward().unwrap();
    for (name, v) in &vars {
        let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        assert_eq!(g.dims(), v.dims(), "{name}");
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        // The position / type rows the batch never uses get exact zeros; everything else moves.
        assert!(norm.is_finite() && (norm > 0.0 || name.contains("embeddings")), "{name}: gradient norm {norm}");
    }
}

/// The commands' wiring (importance, iterative prune with recovery, distillation recovery, bad flags) on the fixture
/// BERT: 2 layers of 4 heads, FFN 128.
#[test]
fn prune_command_scores_cuts_and_recovers() {
    let f = shrink_fixture::Fixture::new(shrink_fixture::Family::Bert, 9).unwrap();
    let (clf, out, scores) = (f.scratch.join("clf"), f.scratch.join("pruned"), f.scratch.join("scores"));
    let t = f.train.to_str().unwrap();
    ok(&["finetune", f.model.to_str().unwrap(), "--data", t, "--out", clf.to_str().unwrap(), "--max-len", "32", "--epochs", "1"]);
    let printed = ok(&["importance", clf.to_str().unwrap(), "--data", t, "--samples", "8", "--out", scores.to_str().unwrap()]);
    assert!(printed.contains("layer 1: heads") && printed.contains("drop-one"), "{printed}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(scores.join("importance.json")).unwrap()).unwrap();
    assert_eq!(s["heads"].as_array().unwrap().len(), 2);
    assert_eq!(s["layers"].as_array().unwrap().len(), 2);
    assert!(std::fs::read_to_string(scores.join("heads.svg")).unwrap().starts_with("<svg"));
    ok(&[
        "prune", clf.to_str().unwrap(), "--heads", "0.5", "--ffn", "0.5", "--layers", "1", "--schedule", "iterative", "--steps", "2",
        "--data", t, "--samples", "8", "--recover", "finetune", "--epochs", "1", "--out", out.to_str().unwrap(),
    ]);
    let c = cfg(&out);
    assert_eq!(c["num_hidden_layers"], 1);
    assert_eq!(c["layer_heads"], serde_json::json!([2]));
    assert_eq!(c["layer_intermediate_sizes"], serde_json::json!([64]));
    assert_eq!(c["shrink"]["max_len"], 32);
    let r: serde_json::Value =
        serde_json::from_str(&ok(&["eval", out.to_str().unwrap(), "--task", "classify", "--data", t, "--json"])).unwrap();
    assert_eq!(r["n"], shrink_fixture::TRAIN_ROWS);
    // Distillation recovery: the same loop against the unpruned model's logits.
    let distilled = f.scratch.join("distilled");
    ok(&["prune", clf.to_str().unwrap(), "--heads", "0.25", "--data", t, "--samples", "8", "--recover", "distill", "--out", distilled.to_str().unwrap()]);
    assert_eq!(step(&cfg(&distilled), "prune")["parameters"]["recover"], "distill 1 epochs");
    // Bad flags are errors that name them, and leave no output.
    let bad = f.scratch.join("bad");
    for (args, says) in [
        (vec!["--heads", "1.0"], "--heads"),
        (vec!["--layers", "2"], "--layers"),
        (vec!["--recover", "finetune", "--method", "l2"], "--data"),
    ] {
        let mut a = vec!["prune", clf.to_str().unwrap(), "--out", bad.to_str().unwrap()];
        a.extend(args);
        let err = fails(&a);
        assert!(err.contains(says), "{a:?}: {err}");
    }
    let err = fails(&["prune", f.model.to_str().unwrap(), "--heads", "0.5", "--data", t, "--out", bad.to_str().unwrap()]);
    assert!(err.contains("id2label"), "{err}");
    assert!(!bad.exists());
}
