//! `shrink attention` on the real MiniLM: full, sliding and linear layers with the position table copied out to
//! 1024. Every converted folder computes the same on the runtime and in the trainable candle model, on BBC bodies
//! longer than the 512 positions the checkpoint learned; full attention with the longer table is the original
//! model below 512 tokens. Bad requests fail clearly.

mod common;

use std::path::Path;

use common::{asset, fails, model, ok};
use shrink_format::TextTokenizer;
use shrink_runtime::{Engine, Options};

/// Runtime vs candle on the same weights (the golden budget).
const RUNTIME_VS_CANDLE: f32 = 1e-4;
/// Below the learned length the copied table is the old one, row for row: the same numbers, but for reassociated
/// sums (the runtime's key blocks depend only on T, so nothing changes at all).
const SAME_BELOW_LEARNED: f32 = 1e-6;
/// Past one key block of the runtime's full attention (512) and past the learned positions.
const LONG: usize = 700;

fn bodies(n: usize) -> Vec<String> {
    let rows = std::fs::read_to_string(asset("data/bbc/test.jsonl")).unwrap();
    // The longest first: every one runs past 512 tokens.
    let mut all: Vec<String> = rows.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["body"].as_str().unwrap().to_string()).collect();
    all.sort_by_key(|b| std::cmp::Reverse(b.len()));
    all.truncate(n);
    all
}

fn config(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// Last hidden states of `texts` at `max_len` on the runtime and on candle, compared over the real tokens.
fn runtime_matches_candle(dir: &Path, texts: &[String], max_len: usize) -> Vec<f32> {
    let model = shrink_model::Bert::load_dir(dir).unwrap();
    let tok = TextTokenizer::for_model(dir, max_len, model.config.vocab_size).unwrap();
    let b = tok.batch(texts).unwrap();
    assert!(b.t > 512, "the texts reach past the learned positions: T = {}", b.t);
    let (ids, mask) = shrink_model::batch_tensors(&b).unwrap();
    let candle: Vec<f32> = model.forward(&ids, &mask, None, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let mut e = Engine::load(dir, Options { threads: 2, max_len: Some(max_len), ..Default::default() }).unwrap();
    let runtime = e.forward(&b.ids, &b.mask, b.b, b.t).unwrap().to_vec();
    let c = model.config.hidden_size;
    let d = (0..b.b * b.t).filter(|&r| b.mask[r] == 1).flat_map(|r| (0..c).map(move |j| r * c + j)).map(|i| (candle[i] - runtime[i]).abs()).fold(0f32, f32::max);
    assert!(d <= RUNTIME_VS_CANDLE, "{}: runtime vs candle {d}", dir.display());
    runtime
}

#[test]
fn converted_folders_agree_on_the_runtime_and_in_training_past_the_learned_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = bodies(3);
    let m = model();
    let mut hidden = Vec::new();
    for (name, flags) in [
        ("full", &["--to", "full"][..]),
        ("sliding", &["--to", "sliding", "--window", "32", "--global", "cls"][..]),
        ("linear", &["--to", "linear", "--feature-map", "elu"][..]),
        ("hedgehog", &["--to", "linear", "--feature-map", "hedgehog"][..]),
    ] {
        let out = tmp.path().join(name);
        let args: Vec<&str> = [&["attention", m.as_str()][..], flags, &["--max-len", "1024", "--out", out.to_str().unwrap()]].concat();
        let report: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
        assert_eq!((report["positions_before"].as_u64(), report["positions_after"].as_u64()), (Some(512), Some(1024)));
        let cfg = config(&out);
        assert_eq!(cfg["max_position_embeddings"], 1024);
        assert_eq!(cfg["shrink_positions"]["learned"], 512);
        let kinds = cfg.get("shrink_attention").and_then(|v| v.as_array()).map(|v| v.iter().map(|k| k["kind"].as_str().unwrap().to_string()).collect::<Vec<_>>());
        match name {
            "full" => assert!(kinds.is_none(), "full everywhere writes no list: {kinds:?}"),
            "hedgehog" => {
                assert_eq!(kinds.unwrap(), vec!["linear"; 6]);
                assert_eq!(cfg["shrink_attention"][3]["feature_map"], "hedgehog");
            }
            _ => assert_eq!(kinds.unwrap(), vec![name; 6]),
        }
        assert_eq!(common::step(&cfg, "attention")["parameters"]["max_len"], 1024);
        hidden.push(runtime_matches_candle(&out, &texts, LONG));
    }
    // The variants compute different things (a kernel that ignored the band or the feature map would not).
    let apart = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(apart(&hidden[0], &hidden[1]) > 1e-2 && apart(&hidden[0], &hidden[2]) > 1e-2 && apart(&hidden[2], &hidden[3]) > 1e-2);

    // Full attention with the copied table is the original model wherever the original runs.
    let engine = |dir: &Path| Engine::load(dir, Options { threads: 2, max_len: Some(512), ..Default::default() }).unwrap();
    let (mut before, mut after) = (engine(Path::new(&model())), engine(&tmp.path().join("full")));
    for (a, b) in before.embed(&texts).unwrap().iter().zip(after.embed(&texts).unwrap()) {
        let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d <= SAME_BELOW_LEARNED, "the copied table changed a 512-token embedding by {d}");
    }
}

fn tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let tf = shrink_format::TensorFile::open(&dir.join("model.safetensors")).unwrap();
    let mut names: Vec<String> = tf.names().map(str::to_string).collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), tf.f32(&n, tf.shape(&n).unwrap()).unwrap().into_owned())).collect()
}

/// Attention transfer on a Hedgehog conversion trains its feature maps and nothing else, lowers the transfer loss
/// on held-out texts, and the learned maps (no longer the identity) run the same on the runtime as in candle, in
/// fp32 and after int8 quantization. Requests it cannot serve fail clearly.
#[test]
fn attention_transfer_trains_the_feature_maps_and_the_runtime_follows() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model();
    let path = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    ok(&["attention", &m, "--to", "linear", "--feature-map", "hedgehog", "--max-len", "1024", "--out", &path("hh")]);
    let data = asset("data/bbc/train.jsonl").display().to_string();
    let train = ["--data", &data, "--limit", "48", "--max-len", "128", "--batch", "8", "--epochs", "1", "--lr", "1e-2"];
    let report: serde_json::Value = serde_json::from_str(&ok(&[&["attention-transfer", &path("hh")][..], &train, &["--out", &path("hh-at")]].concat())).unwrap();
    assert_eq!(report["train"], "maps");
    let (before, after) = (report["dev_loss_before"].as_f64().unwrap(), report["dev_loss_after"].as_f64().unwrap());
    assert!(after.is_finite() && after < before, "dev transfer loss {before} -> {after}");
    let (old, new) = (tensors(&tmp.path().join("hh")), tensors(&tmp.path().join("hh-at")));
    assert_eq!(old.iter().map(|t| &t.0).collect::<Vec<_>>(), new.iter().map(|t| &t.0).collect::<Vec<_>>());
    let mut maps_moved = 0;
    for ((name, a), (_, b)) in old.iter().zip(&new) {
        match name.contains("feature_map") {
            true => maps_moved += usize::from(a != b),
            false => assert_eq!(a, b, "{name} changed, but only the feature maps train"),
        }
    }
    assert_eq!(maps_moved, 6 * 4, "every layer's W and b of Q and K");
    assert_eq!(common::step(&config(&tmp.path().join("hh-at")), "attention-transfer")["parameters"]["train"], "maps");
    let texts = bodies(2);
    runtime_matches_candle(&tmp.path().join("hh-at"), &texts, LONG);
    // int8 keeps the maps in f32 beside its quantized Linears.
    ok(&["quantize", &path("hh-at"), "--scheme", "int8-dynamic", "--out", &path("hh-int8")]);
    let embed = |dir: &str| Engine::load(Path::new(dir), Options { threads: 2, max_len: Some(LONG), ..Default::default() }).unwrap().embed(&texts).unwrap();
    for (a, b) in embed(&path("hh-at")).iter().zip(embed(&path("hh-int8"))) {
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        let cos = dot(a, &b) / (dot(a, a) * dot(&b, &b)).sqrt();
        assert!(cos > 0.99, "int8 vs fp32 cosine {cos}");
    }
    // Pruned heads take their maps with them (the loaders check the (H', D, D) shapes).
    ok(&["prune", &path("hh-at"), "--heads", "0.25", "--method", "l2", "--out", &path("hh-pruned")]);
    let pruned = config(&tmp.path().join("hh-pruned"));
    assert!(pruned["layer_heads"].as_array().is_some_and(|h| h.iter().any(|n| n.as_u64() < Some(12))), "{pruned}");
    runtime_matches_candle(&tmp.path().join("hh-pruned"), &texts, LONG);
    // Nothing converted; maps asked of layers without them; a teacher that is itself converted.
    let err = fails(&[&["attention-transfer", &m][..], &train, &["--out", &path("x")]].concat());
    assert!(err.contains("nothing to transfer"), "{err}");
    ok(&["attention", &m, "--to", "linear", "--feature-map", "elu", "--out", &path("elu")]);
    let err = fails(&[&["attention-transfer", &path("elu"), "--train", "maps"][..], &train, &["--out", &path("x")]].concat());
    assert!(err.contains("have no learned feature map"), "{err}");
    let err = fails(&[&["attention-transfer", &path("elu"), "--teacher", &path("hh")][..], &train, &["--out", &path("x")]].concat());
    assert!(err.contains("the teacher must be the unconverted"), "{err}");
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn bad_attention_requests_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model();
    let out = tmp.path().join("o");
    let o = out.to_str().unwrap();
    for (flags, want) in [
        (&["--to", "sliding"][..], "--to sliding needs --window"),
        (&["--to", "linear", "--window", "8"][..], "--window applies to --to sliding only"),
        (&["--to", "sliding", "--window", "0"][..], "window 0"),
        (&["--to", "full", "--layers", "1,9"][..], "names layer 9, but the model has 6"),
        (&["--to", "full", "--max-len", "100"][..], "already numbers 512 positions"),
        (&["--to", "sparse"][..], "invalid value 'sparse'"),
    ] {
        let args: Vec<&str> = [&["attention", m.as_str()][..], flags, &["--out", o]].concat();
        let err = fails(&args);
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(!out.exists(), "{flags:?}: a failed conversion left {o}");
    }
    // A quantized folder: convert first, then quantize.
    let q = tmp.path().join("int8");
    ok(&["quantize", &m, "--scheme", "int8-dynamic", "--out", q.to_str().unwrap()]);
    let err = fails(&["attention", q.to_str().unwrap(), "--to", "linear", "--out", o]);
    assert!(err.contains("a quantized model (int8-dynamic)"), "{err}");
    // A layer list of only some layers converts only those; ONNX export refuses what it cannot write.
    let some = tmp.path().join("some");
    ok(&["attention", &m, "--to", "sliding", "--window", "64", "--layers", "0,5", "--out", some.to_str().unwrap()]);
    let kinds: Vec<String> = config(&some)["shrink_attention"].as_array().unwrap().iter().map(|k| k["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["sliding", "full", "full", "full", "full", "sliding"]);
    let err = fails(&["export", some.to_str().unwrap(), "--format", "onnx", "--out", tmp.path().join("m.onnx").to_str().unwrap()]);
    assert!(err.contains("layer 0 computes sliding-64 attention"), "{err}");
}
