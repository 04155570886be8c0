//! DistilBERT and RoBERTa on the runtime against transformers (../shared/golden/{distilbert,roberta}-random): every
//! hidden state of every case, padded batches included, on 1 and 2 threads. RoBERTa's folder has no tokenizer.

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use shrink_runtime::{Engine, Options};

/// f32 vs f32 against transformers, per the golden README.
const HIDDEN_TOL: f32 = 1e-4;

fn golden_dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden").join(family)
}

struct Golden {
    bytes: Vec<u8>,
    cases: Vec<(usize, usize)>,
}

impl Golden {
    fn load(family: &str) -> Self {
        let dir = golden_dir(family);
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
        let shape = |c: &serde_json::Value| (c["shape"][0].as_u64().unwrap() as usize, c["shape"][1].as_u64().unwrap() as usize);
        let cases = j["cases"].as_array().unwrap().iter().map(shape).collect();
        Self { bytes: std::fs::read(dir.join("golden.safetensors")).unwrap(), cases }
    }

    fn f32(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("golden {name}"));
        assert_eq!(t.dtype(), Dtype::F32);
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    fn u32(&self, name: &str) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::I64);
        t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Every case on 1 and 2 threads; returns the largest error of each case.
fn check(family: &str) -> Vec<f32> {
    let golden = Golden::load(family);
    let mut worst = vec![0.0f32; golden.cases.len()];
    for threads in [1, 2] {
        let mut engine = Engine::load_ids(&golden_dir(family).join("model"), Options { threads, ..Default::default() }).unwrap();
        for (i, &(b, t)) in golden.cases.iter().enumerate() {
            let (ids, mask) = (golden.u32(&format!("c{i}.input_ids")), golden.u32(&format!("c{i}.attention_mask")));
            let hidden = engine.forward_all_layers(&ids, &mask, b, t).unwrap();
            assert_eq!(hidden.len(), engine.config.num_hidden_layers + 1);
            for (l, h) in hidden.iter().enumerate() {
                let d = max_abs_diff(h, &golden.f32(&format!("c{i}.hidden_states.{l}")));
                assert!(d < HIDDEN_TOL, "{family} {threads}t c{i} hidden_states.{l} differs by {d}");
                worst[i] = worst[i].max(d);
            }
            let d = max_abs_diff(hidden.last().unwrap(), &golden.f32(&format!("c{i}.last_hidden_state")));
            assert!(d < HIDDEN_TOL, "{family} {threads}t c{i} last_hidden_state differs by {d}");
        }
    }
    for (i, w) in worst.iter().enumerate() {
        eprintln!("{family} c{i} {:?}: max abs error {w:.2e}", golden.cases[i]);
    }
    worst
}

#[test]
fn distilbert_matches_transformers() {
    assert_eq!(check("distilbert-random").len(), 5);
    // Its tokenizer is the real one: text goes through the same forward pass.
    let mut engine = Engine::load(&golden_dir("distilbert-random/model"), Options::default()).unwrap();
    assert_eq!(engine.embed(&["a text"]).unwrap()[0].len(), 128);
}

#[test]
fn roberta_matches_transformers() {
    assert_eq!(check("roberta-random").len(), 2);
    let dir = golden_dir("roberta-random/model");
    let e = Engine::load(&dir, Options::default()).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
    let mut engine = Engine::load_ids(&dir, Options::default()).unwrap();
    let e = engine.embed(&["a text"]).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json") && e.contains("token ids only"), "{e}");
    // 130 position rows, numbered from padding_idx + 1 = 2: 128 tokens fit, 129 do not.
    assert!(engine.forward(&[5; 128], &[1; 128], 1, 128).is_ok());
    let e = engine.forward(&[5; 129], &[1; 129], 1, 129).err().unwrap().to_string();
    assert!(e.contains("exceeds the 128 that max_position_embeddings numbers"), "{e}");
}
