//! The runtime's fp32 path against PyTorch (../shared/golden/all-minilm-l6-v2): every layer's hidden state and the
//! sentence embeddings, one text at a time and inside a padded batch; and errors on malformed calls.

use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use shrink_runtime::{Engine, Options};

/// f32 vs f32 against PyTorch, per the golden README.
const HIDDEN_TOL: f32 = 1e-4;
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

struct Golden {
    bytes: Vec<u8>,
    texts: Vec<String>,
}

impl Golden {
    fn load() -> Self {
        let dir = root().join("../shared/golden/all-minilm-l6-v2");
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
        let texts = j["sentences"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap().to_string()).collect();
        Self { bytes: std::fs::read(dir.join("golden.safetensors")).unwrap(), texts }
    }

    fn get(&self, name: &str) -> Option<Vec<f32>> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).ok()?;
        assert_eq!(t.dtype(), Dtype::F32);
        Some(t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect())
    }

    fn ids(&self, i: usize) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(&format!("s{i}.input_ids")).unwrap();
        assert_eq!(t.dtype(), Dtype::I64);
        t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn every_layer_and_embedding_matches_pytorch() {
    let golden = Golden::load();
    for threads in [1, 2] {
        let mut engine = Engine::load(&model_dir(), Options { threads, ..Default::default() }).unwrap();
        for i in 0..golden.texts.len() {
            let ids = golden.ids(i);
            assert_eq!(engine.tokenizer.encode(&golden.texts[i]).unwrap(), ids, "s{i}: tokenizer");
            let mask = vec![1u32; ids.len()];
            let hidden = engine.forward_all_layers(&ids, &mask, 1, ids.len()).unwrap();
            for (l, h) in hidden.iter().enumerate() {
                if let Some(g) = golden.get(&format!("s{i}.hidden_states.{l}")) {
                    let d = max_abs_diff(h, &g);
                    assert!(d < HIDDEN_TOL, "{threads}t s{i} hidden_states.{l} differs by {d}");
                }
            }
            let d = max_abs_diff(hidden.last().unwrap(), &golden.get(&format!("s{i}.last_hidden_state")).unwrap());
            assert!(d < HIDDEN_TOL, "{threads}t s{i} last_hidden_state differs by {d}");
            let emb = engine.embed(&[&golden.texts[i]]).unwrap();
            let d = max_abs_diff(&emb[0], &golden.get(&format!("s{i}.embedding")).unwrap());
            assert!(d < HIDDEN_TOL, "{threads}t s{i} embedding differs by {d}");
        }
    }
}

#[test]
fn padded_batch_matches_one_text_at_a_time() {
    let golden = Golden::load();
    let mut engine = Engine::load(&model_dir(), Options { threads: 2, ..Default::default() }).unwrap();
    let batch = engine.embed(&golden.texts).unwrap();
    for (i, text) in golden.texts.iter().enumerate() {
        let alone = engine.embed(&[text]).unwrap();
        assert!(max_abs_diff(&batch[i], &alone[0]) < PAD_TOL, "s{i}: batched vs alone");
        assert!(max_abs_diff(&batch[i], &golden.get(&format!("s{i}.embedding")).unwrap()) < HIDDEN_TOL, "s{i}: vs golden");
    }
}

#[test]
fn malformed_calls_are_errors_not_panics() {
    let mut engine = Engine::load(&model_dir(), Options::default()).unwrap();
    let err = |r: anyhow::Result<&[f32]>| r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err(engine.forward(&[101, 102], &[1, 1], 1, 3)).contains("B x T"));
    let e = err(engine.forward(&[101, 99_999], &[1, 1], 1, 2));
    assert!(e.contains(&model_dir().display().to_string()) && e.contains("token id 99999 (sequence 0, position 1) is outside the vocabulary of 30522"), "{e}");
    assert!(err(engine.forward(&[101, 102], &[1, 2], 1, 2)).contains("expected 0 or 1"));
    assert!(err(engine.forward(&[], &[], 0, 0)).contains("empty batch"));
    let long = vec![101u32; 513];
    assert!(err(engine.forward(&long, &vec![1; 513], 1, 513)).contains("max_position_embeddings"));
    assert!(engine.embed(&["   "]).unwrap_err().to_string().contains("empty text"));
    assert!(engine.classify(&["a text"]).unwrap_err().to_string().contains("no classification head"));
    // An app matches on the kind, under whatever context was added.
    let kind = |e: anyhow::Error| e.context("in my app").downcast_ref::<shrink_runtime::Error>().cloned();
    assert!(matches!(kind(engine.forward(&[101, 102], &[1, 2], 1, 2).unwrap_err()), Some(shrink_runtime::Error::Input(_))));
    assert!(matches!(kind(engine.classify(&["a text"]).unwrap_err()), Some(shrink_runtime::Error::NoHead(_))));
    assert!(matches!(kind(engine.reserve(usize::MAX / 128, 128).unwrap_err()), Some(shrink_runtime::Error::Memory(_))));
    assert!(matches!(kind(shrink_runtime::check_threads(usize::MAX).unwrap_err()), Some(shrink_runtime::Error::Threads(_))));
    let missing = Engine::load(&root().join("no/such/model"), Options::default()).err().unwrap().to_string();
    assert!(missing.contains("no such model folder"), "{missing}");
}

#[test]
fn sizes_past_the_machine_are_errors_before_any_allocation() {
    let mut engine = Engine::load(&model_dir(), Options::default()).unwrap();
    // B x T wraps to 0 in unchecked arithmetic, and empty ids then matched it.
    let e = engine.forward(&[], &[], 1 << 57, 128).err().unwrap().to_string();
    assert!(e.contains("144115188075855872 x 128 tokens: B x T overflows"), "{e}");
    let e = engine.reserve(usize::MAX / 128, 128).err().unwrap().to_string();
    assert!(e.contains("buffer sizes overflow"), "{e}");
    if cfg!(target_os = "linux") {
        // 2^30 x 128 tokens of 384 floats: ~200 TB of hidden states alone.
        let e = engine.reserve(1 << 30, 128).err().unwrap().to_string();
        assert!(e.contains("a batch of 1073741824 x 128 tokens needs about") && e.contains("MB of memory is available"), "{e}");
    }
    // Still usable at a sane size afterwards.
    assert_eq!(engine.embed(&["a text"]).unwrap()[0].len(), 384);
    let start = std::time::Instant::now();
    let e = Engine::load(&model_dir(), Options { threads: 100_000, ..Default::default() }).err().unwrap().to_string();
    let max = shrink_runtime::max_threads();
    assert!(e.contains(&format!("100000 worker threads: at most {max} (4 x the {} cores available)", max / 4)), "{e}");
    assert!(start.elapsed().as_secs() < 2, "refused only after {:?}", start.elapsed());
    assert!(Engine::load(&model_dir(), Options { threads: max, ..Default::default() }).is_ok());
}

#[test]
fn copied_weights_survive_the_file_being_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(model_dir().join(f), tmp.path().join(f)).unwrap();
    }
    let mut engine = Engine::load(tmp.path(), Options { mmap: false, ..Default::default() }).unwrap();
    let before = engine.embed(&["the weights were read into memory"]).unwrap();
    // Mapped, this truncation would make the next forward pass die of SIGBUS.
    std::fs::OpenOptions::new().write(true).open(tmp.path().join("model.safetensors")).unwrap().set_len(0).unwrap();
    assert_eq!(engine.embed(&["the weights were read into memory"]).unwrap(), before);
    let e = format!("{:#}", Engine::load(tmp.path(), Options { mmap: false, ..Default::default() }).err().unwrap());
    assert!(e.contains("model.safetensors: not a valid safetensors file"), "{e}");
}
