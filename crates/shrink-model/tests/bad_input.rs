//! Loading: every bad checkpoint is a clear error naming the file and tensor; good variants (bert. prefix, f16/bf16)
//! load; save/load round-trips.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use safetensors::Dtype;
use shrink_model::checkpoint::{safetensors_bytes, write_model_dir, OutDir};
use shrink_model::{batch_tensors, resolve_model, Bert, TextTokenizer};

fn assets_model() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/all-MiniLM-L6-v2");
    assert!(d.join("tokenizer.json").is_file(), "{} missing: run scripts/fetch-assets.sh", d.display());
    d
}

/// A 2-layer, 32-wide BERT with random weights and the real tokenizer (vocab 30522).
fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"
    })
}

fn tiny_tensors(cfg: &serde_json::Value) -> Vec<(String, Tensor)> {
    let g = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (v, c, f, p) = (g("vocab_size"), g("hidden_size"), g("intermediate_size"), g("max_position_embeddings"));
    let r = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, &Device::Cpu).unwrap();
    let mut t = vec![
        ("embeddings.word_embeddings.weight".to_string(), r(&[v, c])),
        ("embeddings.position_embeddings.weight".into(), r(&[p, c])),
        ("embeddings.token_type_embeddings.weight".into(), r(&[2, c])),
        ("embeddings.LayerNorm.weight".into(), r(&[c])),
        ("embeddings.LayerNorm.bias".into(), r(&[c])),
    ];
    for l in 0..g("num_hidden_layers") {
        let p = format!("encoder.layer.{l}");
        for (name, o, i) in [
            ("attention.self.query", c, c),
            ("attention.self.key", c, c),
            ("attention.self.value", c, c),
            ("attention.output.dense", c, c),
            ("intermediate.dense", f, c),
            ("output.dense", c, f),
        ] {
            t.push((format!("{p}.{name}.weight"), r(&[o, i])));
            t.push((format!("{p}.{name}.bias"), r(&[o])));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            t.push((format!("{p}.{ln}.weight"), r(&[c])));
            t.push((format!("{p}.{ln}.bias"), r(&[c])));
        }
    }
    t
}

fn write_dir(dir: &Path, cfg: &serde_json::Value, weights: &[u8]) {
    write_model_dir(&OutDir::new(dir, &[], true).unwrap(), &cfg.to_string(), weights, &assets_model()).unwrap();
}

fn load_err(dir: &Path) -> String {
    match Bert::load_dir(dir) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn truncated_and_corrupt_weights_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let cfg = tiny_config();
    let bytes = safetensors_bytes(&tiny_tensors(&cfg)).unwrap();
    write_dir(&dir, &cfg, &bytes[..bytes.len() / 2]);
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors") && e.contains("truncated or corrupt"), "{e}");
    std::fs::write(dir.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}").unwrap();
    let e = load_err(&dir);
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors"), "{e}");
}

#[test]
fn config_that_disagrees_with_weights_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let cfg = tiny_config();
    let bytes = safetensors_bytes(&tiny_tensors(&cfg)).unwrap();
    let mut wrong = cfg.clone();
    wrong["intermediate_size"] = 128.into();
    write_dir(&dir, &wrong, &bytes);
    let e = load_err(&dir);
    assert!(e.contains("encoder.layer.0.intermediate.dense.weight") && e.contains("config.json implies"), "{e}");
    let mut fewer = cfg.clone();
    fewer["num_hidden_layers"] = 1.into();
    write_dir(&dir, &fewer, &bytes);
    assert!(load_err(&dir).contains("more encoder layers"));
    let mut more = cfg.clone();
    more["num_hidden_layers"] = 3.into();
    write_dir(&dir, &more, &bytes);
    let e = load_err(&dir);
    assert!(e.contains("encoder.layer.2.") && e.contains("missing"), "{e}");
}

#[test]
fn unsupported_configs_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let cfg = tiny_config();
    let bytes = safetensors_bytes(&tiny_tensors(&cfg)).unwrap();
    for (key, value, expect) in [
        ("model_type", serde_json::json!("gpt2"), "model_type"),
        ("num_attention_heads", serde_json::json!(5), "not a multiple"),
        ("hidden_act", serde_json::json!("relu"), "hidden_act"),
    ] {
        let mut c = cfg.clone();
        c[key] = value;
        write_dir(&dir, &c, &bytes);
        let e = load_err(&dir);
        assert!(e.contains("config.json") && e.contains(expect), "{key}: {e}");
    }
    std::fs::write(dir.join("config.json"), "{\"model_type\": \"bert\"").unwrap();
    assert!(load_err(&dir).contains("not a valid BERT-family config.json"));
}

#[test]
fn non_finite_weights_are_rejected_with_the_tensor_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let cfg = tiny_config();
    let mut tensors = tiny_tensors(&cfg);
    let (name, t) = &mut tensors[8];
    let mut v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
    v[3] = f32::NAN;
    *t = Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap();
    let name = name.clone();
    write_dir(&dir, &cfg, &safetensors_bytes(&tensors).unwrap());
    let e = load_err(&dir);
    assert!(e.contains(&name) && e.contains("non-finite"), "{e}");
}

#[test]
fn missing_tokenizer_and_missing_model_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let e = TextTokenizer::load(tmp.path(), 128).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
    let e = resolve_model(tmp.path().join("nope").to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("no such model folder"), "{e}");
    let e = Bert::load_dir(tmp.path()).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn tokenizer_larger_than_the_vocab_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let mut cfg = tiny_config();
    cfg["vocab_size"] = 1000.into();
    write_dir(&dir, &cfg, &safetensors_bytes(&tiny_tensors(&cfg)).unwrap());
    let m = Bert::load_dir(&dir).unwrap();
    let e = TextTokenizer::for_model(&dir, 16, m.config.vocab_size).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("30522 tokens") && e.contains("vocab_size is 1000"), "{e}");
    assert!(TextTokenizer::for_model(&assets_model(), 16, 30522).is_ok());
}

#[test]
fn hub_id_offline_fails_with_a_clear_message() {
    // Points the hub client at a closed local port so the test never leaves the machine.
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    std::env::set_var("HF_HOME", tempfile::tempdir().unwrap().path());
    let e = resolve_model("shrink-test/not-a-real-model").unwrap_err().to_string();
    assert!(e.contains("Hugging Face hub") && e.contains("local folder"), "{e}");
}

/// Writes tensors with a `bert.` prefix in the given half dtype.
fn half_bytes(tensors: &[(String, Tensor)], dtype: Dtype) -> Vec<u8> {
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let bytes = match dtype {
                Dtype::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
            };
            (format!("bert.{n}"), t.dims().to_vec(), bytes)
        })
        .collect();
    let views = owned.iter().map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap()));
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn half_precision_and_prefixed_checkpoints_load_and_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let tensors = tiny_tensors(&cfg);
    let tok = TextTokenizer::load(&assets_model(), 16).unwrap();
    let (ids, mask) = batch_tensors(&tok.batch(&["a short text", "and another, longer one here"]).unwrap()).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let dir = tmp.path().join(format!("{dtype:?}"));
        write_dir(&dir, &cfg, &half_bytes(&tensors, dtype));
        let m = Bert::load_dir(&dir).unwrap();
        let out = m.embed(&ids, &mask).unwrap();
        assert_eq!(out.dims(), &[2, 32]);
        // Round trip: save as f32 and load again gives the very same outputs.
        let again = tmp.path().join(format!("{dtype:?}-saved"));
        m.save_dir(&OutDir::new(&again, &[], false).unwrap(), &dir).unwrap();
        let m2 = Bert::load_dir(&again).unwrap();
        let d: f32 = (m2.embed(&ids, &mask).unwrap() - &out).unwrap().abs().unwrap().max(1).unwrap().max(0).unwrap().to_scalar().unwrap();
        assert_eq!(d, 0.0, "{dtype:?} round trip changed outputs");
        assert!(again.join("tokenizer.json").is_file() && again.join("vocab.txt").is_file());
    }
}

#[test]
fn two_spellings_of_one_tensor_are_an_error_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let cfg = tiny_config();
    let mut tensors = tiny_tensors(&cfg);
    let (name, t) = tensors[3].clone();
    tensors.push((format!("bert.{name}"), (t + 1.0).unwrap()));
    write_dir(&dir, &cfg, &safetensors_bytes(&tensors).unwrap());
    let e = load_err(&dir);
    assert!(e.contains(&format!("tensors bert.{name} and {name} are both {name}")), "{e}");
}
