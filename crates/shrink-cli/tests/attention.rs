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
            _ => assert_eq!(kinds.unwrap(), vec![name; 6]),
        }
        assert_eq!(common::step(&cfg, "attention")["parameters"]["max_len"], 1024);
        hidden.push(runtime_matches_candle(&out, &texts, LONG));
    }
    // The variants compute different things (a kernel that ignored the band or the feature map would not).
    let apart = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(apart(&hidden[0], &hidden[1]) > 1e-2 && apart(&hidden[0], &hidden[2]) > 1e-2);

    // Full attention with the copied table is the original model wherever the original runs.
    let engine = |dir: &Path| Engine::load(dir, Options { threads: 2, max_len: Some(512), ..Default::default() }).unwrap();
    let (mut before, mut after) = (engine(Path::new(&model())), engine(&tmp.path().join("full")));
    for (a, b) in before.embed(&texts).unwrap().iter().zip(after.embed(&texts).unwrap()) {
        let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d <= SAME_BELOW_LEARNED, "the copied table changed a 512-token embedding by {d}");
    }
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
