//! DistilBERT and RoBERTa on the candle model against transformers (../shared/golden/{distilbert,roberta}-random):
//! every hidden state of every case, padded batches included; and a folder shrink writes reloads to the same
//! outputs with the family's own config keys.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use shrink_model::checkpoint::OutDir;
use shrink_model::Bert;

/// f32 vs f32 against transformers, per the golden README.
const HIDDEN_TOL: f32 = 1e-4;

fn golden_dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden").join(family)
}

struct Golden {
    tensors: HashMap<String, Tensor>,
    cases: usize,
}

impl Golden {
    fn load(family: &str) -> Self {
        let dir = golden_dir(family);
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
        let tensors = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).expect("golden tensors");
        Self { tensors, cases: j["cases"].as_array().unwrap().len() }
    }

    /// Case i's ids and mask, (B, T) u32.
    fn inputs(&self, i: usize) -> (Tensor, Tensor) {
        let get = |k: &str| self.tensors[&format!("c{i}.{k}")].to_dtype(DType::U32).unwrap();
        (get("input_ids"), get("attention_mask"))
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Every case's hidden states against transformers; returns the largest error of each case.
fn check(family: &str, model: &Bert) -> Vec<f32> {
    let golden = Golden::load(family);
    (0..golden.cases)
        .map(|i| {
            let (ids, mask) = golden.inputs(i);
            let mut hidden = Vec::new();
            let last = model.forward(&ids, &mask, None, Some(&mut hidden)).unwrap();
            assert_eq!(hidden.len(), model.layers.len() + 1);
            let mut worst = max_abs_diff(&last, &golden.tensors[&format!("c{i}.last_hidden_state")]);
            for (l, h) in hidden.iter().enumerate() {
                let d = max_abs_diff(h, &golden.tensors[&format!("c{i}.hidden_states.{l}")]);
                assert!(d < HIDDEN_TOL, "{family} c{i} hidden_states.{l} differs by {d}");
                worst = worst.max(d);
            }
            assert!(worst < HIDDEN_TOL, "{family} c{i} last_hidden_state differs by {worst}");
            eprintln!("{family} c{i} {:?}: max abs error {worst:.2e}", ids.dims());
            worst
        })
        .collect()
}

#[test]
fn distilbert_matches_transformers() {
    let model = Bert::load_dir(&golden_dir("distilbert-random/model")).unwrap();
    assert!(model.embeddings.token_type_embeddings.is_none());
    assert_eq!(check("distilbert-random", &model).len(), 5);
}

#[test]
fn roberta_matches_transformers() {
    let model = Bert::load_dir(&golden_dir("roberta-random/model")).unwrap();
    assert_eq!(check("roberta-random", &model).len(), 2);
}

#[test]
fn written_folders_reload_with_their_own_config_keys() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, own, bert) in [("distilbert-random", "dim", "hidden_size"), ("roberta-random", "hidden_size", "dim")] {
        let src = golden_dir(family).join("model");
        let model = Bert::load_dir(&src).unwrap();
        let out = tmp.path().join(family);
        model.save_dir(&OutDir::new(&out, &[&src], false).unwrap(), &src).unwrap();
        let read = |dir: &std::path::Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
        };
        let cfg = read(&out);
        assert!(cfg.get(own).is_some() && cfg.get(bert).is_none(), "{family}: {cfg}");
        if family.starts_with("distilbert") {
            // Nothing BERT-only added (type_vocab_size, layer_norm_eps), nothing of its own lost.
            assert_eq!(cfg, read(&src), "{family}");
        }
        let again = Bert::load_dir(&out).unwrap();
        assert_eq!(again.config, model.config, "{family}");
        let golden = Golden::load(family);
        let (ids, mask) = golden.inputs(0);
        let (a, b) = (model.forward(&ids, &mask, None, None).unwrap(), again.forward(&ids, &mask, None, None).unwrap());
        assert_eq!(max_abs_diff(&a, &b), 0.0, "{family}");
    }
}
