//! Every command on every family: the tiny generated BERT, DistilBERT and RoBERTa (`shrink-fixture`) go through
//! finetune, quantize (int8-dynamic, int8-static, int4), prune with recovery, distill, qat, sparsify, trim-vocab,
//! inspect, eval and embed, and every folder written loads on the runtime and scores. The runtime and the candle
//! model agree on each family's forward pass. Numbers on real models are pinned elsewhere (golden, MiniLM tests).

mod common;

use std::path::{Path, PathBuf};

use common::ok;
use shrink_fixture::{Family, Fixture, HIDDEN, LAYERS, TEST_ROWS};
use shrink_format::TextTokenizer;
use shrink_runtime::{Engine, Options};

/// Runtime vs candle on the same weights (the golden budget).
const RUNTIME_VS_CANDLE: f32 = 1e-4;
/// Short texts: every step of a 2-layer, 64-wide model then takes well under a second.
const MAX_LEN: &str = "32";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `eval --task classify` on the test slice: the runtime loads the folder and its logits are finite (a NaN logit
/// is an error there); returns the accuracy.
fn classify(f: &Fixture, dir: &Path) -> f64 {
    let r = json(&ok(&["eval", s(dir), "--task", "classify", "--data", s(&f.test), "--max-len", MAX_LEN, "--json"]));
    assert_eq!(r["n"], TEST_ROWS, "{}: {r}", dir.display());
    let acc = r["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{}: {r}", dir.display());
    acc
}

/// `inspect --json` counts `layers` encoder layers.
fn inspect_layers(dir: &Path) -> usize {
    let r = json(&ok(&["inspect", s(dir), "--json"]));
    assert!(r["total"]["params"].as_u64().unwrap() > 0, "{r}");
    r["layers"].as_array().unwrap().len()
}

fn config(dir: &Path) -> serde_json::Value {
    json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
}

/// The folder's lineage names these stages, oldest first, and its last step read `input` as it is now.
fn lineage(dir: &Path, stages: &[&str], input: &Path) {
    let cfg = config(dir);
    let steps = cfg["shrink_lineage"].as_array().unwrap_or_else(|| panic!("{}: no lineage", dir.display()));
    let got: Vec<&str> = steps.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(got, stages, "{}", dir.display());
    let last = steps.last().unwrap();
    assert_eq!(last["input"]["hash"], shrink_format::schema::lineage::folder_hash(input).unwrap(), "{}", dir.display());
    assert_eq!(last["shrink"], env!("CARGO_PKG_VERSION"));
}

/// A few BBC test texts of different lengths, so batches are padded.
fn texts(f: &Fixture) -> Vec<String> {
    let rows = std::fs::read_to_string(&f.test).unwrap();
    rows.lines()
        .take(6)
        .enumerate()
        .map(|(i, l)| {
            let t = json(l)["text"].as_str().unwrap().to_string();
            t.split_whitespace().take(4 + 7 * i).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// The base model's last hidden states on the runtime and on candle, on one padded batch.
fn runtime_matches_candle(f: &Fixture) {
    let texts = texts(f);
    let model = shrink_model::Bert::load_dir(&f.model).unwrap();
    let tok = TextTokenizer::for_model(&f.model, 64, model.config.vocab_size).unwrap();
    let b = tok.batch(&texts).unwrap();
    let (ids, mask) = shrink_model::batch_tensors(&b).unwrap();
    let candle: Vec<f32> = model.forward(&ids, &mask, None, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let mut e = Engine::load(&f.model, Options { threads: 2, max_len: Some(64), ..Default::default() }).unwrap();
    let runtime = e.forward(&b.ids, &b.mask, b.b, b.t).unwrap().to_vec();
    assert_eq!(candle.len(), b.b * b.t * HIDDEN);
    // Padding rows are garbage on both sides; compare the real tokens.
    let d = (0..b.b * b.t)
        .filter(|&r| b.mask[r] == 1)
        .flat_map(|r| (0..HIDDEN).map(move |c| r * HIDDEN + c))
        .map(|i| (candle[i] - runtime[i]).abs())
        .fold(0.0f32, f32::max);
    assert!(d <= RUNTIME_VS_CANDLE, "{:?}: runtime vs candle {d}", f.family);
}

/// `embed` writes one finite unit vector per line.
fn embeds(f: &Fixture, dir: &Path) {
    let input = f.scratch.join("texts.txt");
    std::fs::write(&input, texts(f).join("\n")).unwrap();
    let out = f.scratch.join(format!("{}.jsonl", dir.file_name().unwrap().to_str().unwrap()));
    ok(&["embed", s(dir), "--input", s(&input), "--output", s(&out), "--max-len", MAX_LEN]);
    let rows = std::fs::read_to_string(&out).unwrap();
    assert_eq!(rows.lines().count(), 6);
    for l in rows.lines() {
        let v: Vec<f64> = json(l)["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(v.len() == HIDDEN && (norm - 1.0).abs() < 1e-4, "{}: norm {norm}", dir.display());
    }
}

fn every_command(family: Family) {
    let f = Fixture::new(family, 7).unwrap();
    let out = |name: &str| -> PathBuf { f.scratch.join(name) };
    runtime_matches_candle(&f);
    assert_eq!(inspect_layers(&f.model), LAYERS);
    embeds(&f, &f.model);
    let r = json(&ok(&["eval", s(&f.model), "--task", "retrieval", "--data", s(&f.test), "--max-len", MAX_LEN, "--json"]));
    assert!(r["mrr@10"].as_f64().unwrap().is_finite(), "{r}");

    let train = s(&f.train);
    let clf = out("clf");
    ok(&["finetune", s(&f.model), "--data", train, "--out", s(&clf), "--max-len", MAX_LEN, "--epochs", "2", "--lr", "1e-3"]);
    assert_eq!(config(&clf)["model_type"], shrink_fixture::model_type(family));
    classify(&f, &clf);
    embeds(&f, &clf);

    for (name, extra) in [
        ("int8-dynamic", vec!["--scheme", "int8-dynamic"]),
        ("int8-static", vec!["--scheme", "int8-static", "--calib", train, "--calib-samples", "32"]),
        ("int4", vec!["--scheme", "int4", "--group", "32", "--embeddings", "int4"]),
    ] {
        let q = out(name);
        ok(&[&["quantize", s(&clf), "--out", s(&q), "--max-len", MAX_LEN][..], &extra].concat());
        classify(&f, &q);
        assert_eq!(inspect_layers(&q), LAYERS, "{name}");
    }

    let pruned = out("pruned");
    ok(&[
        "prune", s(&clf), "--heads", "0.5", "--ffn", "0.5", "--data", train, "--samples", "16", "--recover", "finetune",
        "--epochs", "1", "--out", s(&pruned),
    ]);
    // Half of the 2 x 4 heads, ranked across layers (each layer keeps one at least).
    let heads: Vec<u64> = serde_json::from_value(config(&pruned)["layer_heads"].clone()).unwrap();
    assert!(heads.iter().sum::<u64>() == 4 && heads.iter().all(|&h| h >= 1), "{heads:?}");
    classify(&f, &pruned);
    let pruned8 = out("pruned-int8");
    ok(&["quantize", s(&pruned), "--scheme", "int8-dynamic", "--out", s(&pruned8)]);
    classify(&f, &pruned8);
    lineage(&pruned8, &["finetune", "prune", "quantize"], &pruned);
    lineage(&pruned, &["finetune", "prune"], &clf);

    let student = out("student");
    ok(&[
        "distill", "--teacher", s(&clf), "--data", train, "--out", s(&student), "--student-layers", "1", "--epochs", "1",
        "--max-len", MAX_LEN, "--hidden-weight", "1",
    ]);
    assert_eq!(inspect_layers(&student), 1);
    classify(&f, &student);
    lineage(&student, &["finetune", "distill"], &clf);

    for (name, scheme, acts) in [("qat-int8", "int8", "dynamic"), ("qat-int4-static", "int4-g32", "static")] {
        let q = out(name);
        ok(&["qat", "--model", s(&clf), "--scheme", scheme, "--activations", acts, "--data", train, "--epochs", "1", "--max-len", MAX_LEN, "--out", s(&q)]);
        classify(&f, &q);
        lineage(&q, &["finetune", "qat"], &clf);
    }

    let (sparse, gradual, packed) = (out("sparse"), out("gradual"), out("sparse-packed"));
    ok(&["sparsify", s(&clf), "--sparsity", "0.5", "--out", s(&sparse)]);
    classify(&f, &sparse);
    ok(&["quantize", s(&sparse), "--scheme", "sparse", "--out", s(&packed)]);
    classify(&f, &packed);
    assert_eq!(inspect_layers(&packed), LAYERS);
    ok(&["sparsify", s(&clf), "--data", train, "--method", "movement", "--sparsity", "0.5", "--epochs", "1", "--max-len", MAX_LEN, "--out", s(&gradual)]);
    classify(&f, &gradual);
    lineage(&packed, &["finetune", "sparsify", "quantize"], &sparse);

    // trim-vocab keeps the train texts' tokens: they tokenise and classify exactly as before, on a smaller table.
    let trimmed = out("trimmed");
    // The position table is cut to the 32 tokens the classifier runs at (RoBERTa's offset rows stay before them).
    let report = json(&ok(&["trim-vocab", s(&clf), "--data", train, "--max-positions", "32", "--out", s(&trimmed)]));
    assert_eq!(report["texts_unchanged"], report["texts"], "{report}");
    assert_eq!(report["positions_after"], 32, "{report}");
    let e = Engine::load(&trimmed, Options { threads: 1, max_len: Some(33), ..Default::default() }).err().expect("33 tokens are past the table");
    assert!(format!("{e:#}").contains("max_position_embeddings"), "{e:#}");
    assert!(report["vocab_after"].as_u64() < report["vocab_before"].as_u64(), "{report}");
    // BPE keeps the intermediate tokens its merges go through (without them the corpus check inside trim fails).
    assert_eq!(report["merge_parts"].as_u64().unwrap() > 0, family == Family::Roberta, "{report}");
    let logits = |dir: &Path| {
        let mut e = Engine::load(dir, Options { threads: 2, max_len: Some(32), ..Default::default() }).unwrap();
        let rows = std::fs::read_to_string(&f.train).unwrap();
        let texts: Vec<String> = rows.lines().take(8).map(|l| json(l)["text"].as_str().unwrap().to_string()).collect();
        e.classify(&texts).unwrap().into_iter().map(|c| c.probs).collect::<Vec<_>>()
    };
    assert_eq!(logits(&clf), logits(&trimmed), "{family:?}: trimming changed the train texts' outputs");
    let trimmed8 = out("trimmed-int8");
    ok(&["quantize", s(&trimmed), "--scheme", "int8-dynamic", "--embeddings", "int8", "--out", s(&trimmed8)]);
    classify(&f, &trimmed8);
    lineage(&trimmed8, &["finetune", "trim-vocab", "quantize"], &trimmed);
}

#[test]
fn every_command_on_bert() {
    every_command(Family::Bert);
}

#[test]
fn every_command_on_distilbert() {
    every_command(Family::DistilBert);
}

#[test]
fn every_command_on_roberta() {
    every_command(Family::Roberta);
}
