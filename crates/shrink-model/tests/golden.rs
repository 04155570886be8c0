//! Parity with PyTorch (../shared/golden/all-minilm-l6-v2): token ids, per-layer hidden states, embeddings, loss and
//! gradients of one training step.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use shrink_model::{batch_tensors, ops, pooling, tokenizer, Bert, TextTokenizer};

/// f32 vs f32 against PyTorch, per the golden README.
const HIDDEN_TOL: f32 = 1e-4;
/// Relative to the largest magnitude of each gradient tensor.
const GRAD_REL_TOL: f32 = 1e-3;
/// Some gradients are zero in exact arithmetic (the key bias: softmax ignores a shift shared by all keys), so both
/// sides hold only rounding noise; relative error is meaningless there and an absolute floor applies.
const GRAD_ZERO_FLOOR: f32 = 1e-6;
/// A text alone vs inside a padded batch: same math, different summation order only.
const PAD_TOL: f32 = 1e-5;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model_dir() -> PathBuf {
    let d = root().join("assets/models/all-MiniLM-L6-v2");
    assert!(d.join("model.safetensors").is_file(), "{} missing: run scripts/fetch-assets.sh", d.display());
    d
}

fn golden_dir() -> PathBuf {
    root().join("../shared/golden/all-minilm-l6-v2")
}

fn load_st(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(golden_dir().join(name), &Device::Cpu).expect("golden tensors")
}

fn golden_texts() -> Vec<String> {
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden_dir().join("golden.json")).unwrap()).unwrap();
    j["sentences"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap().to_string()).collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn max_abs(a: &Tensor) -> f32 {
    a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn ids_of(golden: &HashMap<String, Tensor>, i: usize) -> Vec<u32> {
    golden[&format!("s{i}.input_ids")].to_dtype(DType::U32).unwrap().to_vec1().unwrap()
}

#[test]
fn token_ids_match_pytorch_exactly() {
    let golden = load_st("golden.safetensors");
    let tok = TextTokenizer::load(&model_dir(), 128).unwrap();
    for (i, text) in golden_texts().iter().enumerate() {
        assert_eq!(tok.encode(text).unwrap(), ids_of(&golden, i), "sentence {i}: {text:?}");
    }
}

#[test]
fn hidden_states_and_embeddings_match_pytorch() {
    let golden = load_st("golden.safetensors");
    let model = Bert::load_dir(&model_dir()).unwrap();
    for i in 0..golden_texts().len() {
        let ids = ids_of(&golden, i);
        let batch = tokenizer::pad(&[ids], 0);
        let (ids, mask) = batch_tensors(&batch).unwrap();
        let mut hidden = Vec::new();
        let last = model.forward(&ids, &mask, None, Some(&mut hidden)).unwrap().squeeze(0).unwrap();
        let d = max_abs_diff(&last, &golden[&format!("s{i}.last_hidden_state")]);
        assert!(d < HIDDEN_TOL, "s{i} last_hidden_state differs by {d}");
        for (l, h) in hidden.iter().enumerate() {
            if let Some(g) = golden.get(&format!("s{i}.hidden_states.{l}")) {
                let d = max_abs_diff(&h.squeeze(0).unwrap(), g);
                assert!(d < HIDDEN_TOL, "s{i} hidden_states.{l} differs by {d}");
            }
        }
        let emb = model.embed(&ids, &mask).unwrap().squeeze(0).unwrap();
        let d = max_abs_diff(&emb, &golden[&format!("s{i}.embedding")]);
        assert!(d < HIDDEN_TOL, "s{i} embedding differs by {d}");
    }
}

#[test]
fn padded_batch_gives_the_same_embeddings_as_one_text_at_a_time() {
    let golden = load_st("golden.safetensors");
    let model = Bert::load_dir(&model_dir()).unwrap();
    let tok = TextTokenizer::load(&model_dir(), 128).unwrap();
    let texts = golden_texts();
    let (ids, mask) = batch_tensors(&tok.batch(&texts).unwrap()).unwrap();
    assert!(mask.to_dtype(DType::F32).unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() < 0.5, "batch has padding");
    let batch_emb = model.embed(&ids, &mask).unwrap(); // (B, C)
    for (i, text) in texts.iter().enumerate() {
        let (ids, mask) = batch_tensors(&tok.batch(&[text]).unwrap()).unwrap();
        let alone = model.embed(&ids, &mask).unwrap().squeeze(0).unwrap();
        let row = batch_emb.get(i).unwrap();
        assert!(max_abs_diff(&row, &alone) < PAD_TOL, "s{i}: batched vs alone");
        assert!(max_abs_diff(&row, &golden[&format!("s{i}.embedding")]) < HIDDEN_TOL, "s{i}: batched vs golden");
    }
}

/// Turns every parameter into a trainable variable; returns them by checkpoint name.
fn make_trainable(model: &mut Bert) -> Vec<(String, Var)> {
    let mut vars = Vec::new();
    model.visit(&mut |name, t| {
        let v = Var::from_tensor(t).unwrap();
        *t = v.as_tensor().clone();
        vars.push((name.to_string(), v));
    });
    vars
}

#[test]
fn training_step_loss_and_gradients_match_pytorch() {
    let g = load_st("grads.safetensors");
    let mut model = Bert::load_dir(&model_dir()).unwrap();
    let labels: Vec<String> = ["business", "entertainment", "politics", "sports", "tech"].map(String::from).to_vec();
    model.add_classifier(&labels, 0).unwrap();
    let head = model.classifier.as_mut().unwrap();
    head.weight = g["head.weight"].clone();
    head.bias = g["head.bias"].clone();
    let vars = make_trainable(&mut model);

    let ids = g["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = g["attention_mask"].to_dtype(DType::U32).unwrap();
    let y = g["labels"].to_dtype(DType::U32).unwrap();
    let h = model.forward(&ids, &mask, None, None).unwrap();
    let logits = model.classifier.as_ref().unwrap().forward(&pooling::mean_pool(&h, &mask).unwrap()).unwrap();
    assert!(max_abs_diff(&logits, &g["logits"]) < HIDDEN_TOL, "logits");
    let loss = ops::cross_entropy(&logits, &y).unwrap();
    let want = g["loss"].to_vec1::<f32>().unwrap()[0];
    let got = loss.to_scalar::<f32>().unwrap();
    assert!((got - want).abs() < HIDDEN_TOL, "loss {got} vs {want}");

    let grads = loss.backward().unwrap();
    let mut checked = 0;
    for (name, var) in &vars {
        let grad = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} received no gradient"));
        assert!(max_abs(grad) > 0.0, "{name} has an all-zero gradient");
        let hf_name = name.replace("classifier.", "head.");
        let Some(want) = g.get(&format!("grad.{hf_name}")) else { continue };
        let grad = if name == "embeddings.word_embeddings.weight" {
            let rows = g["grad.embeddings.word_embeddings.weight.rows"].to_dtype(DType::U32).unwrap();
            grad.index_select(&rows, 0).unwrap()
        } else {
            grad.clone()
        };
        let d = max_abs_diff(&grad, want);
        let scale = max_abs(want);
        assert!(d <= (GRAD_REL_TOL * scale).max(GRAD_ZERO_FLOOR), "grad {name}: max diff {d} vs scale {scale}");
        checked += 1;
    }
    assert_eq!(checked, g.keys().filter(|k| k.starts_with("grad.") && !k.ends_with(".rows")).count());
    // 5 embedding tensors + 16 per layer + 2 head.
    assert_eq!(vars.len(), 5 + 16 * model.layers.len() + 2);
}
