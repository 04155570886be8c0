//! The runtime's folder reader: a model folder (config.json with its `quantization` section, model.safetensors
//! with weights, scales, zero points, smooth vectors, sparse masks and indices; the tiny tokenizer fixed) through
//! `Engine::load`, then, when it loads, a forward pass on fixed ids, an embedding and, with a head, a classification.
//! Input: config.json bytes, one NUL byte, model.safetensors bytes (make-seeds.sh packs real folders this way).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shrink_format::folder::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use shrink_fuzz::{MAX_LEN, TEXTS, TOKENIZER};
use shrink_runtime::{Engine, Options};

/// (B, T) = (2, MAX_LEN) ids inside the tiny vocabulary ([CLS] text [SEP], then padding).
const IDS: [u32; 2 * MAX_LEN] = [2, 52, 53, 54, 3, 0, 0, 0, 2, 100, 200, 241, 5, 26, 71, 3];
const MASK: [u32; 2 * MAX_LEN] = [1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];

fn folder() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = shrink_fuzz::scratch().join("model");
        std::fs::create_dir_all(&dir).expect("cannot create the scratch folder");
        std::fs::write(dir.join(TOKENIZER_FILE), TOKENIZER).expect("cannot write the tokenizer");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(cut) = data.iter().position(|&b| b == 0) else { return };
    let dir = folder();
    std::fs::write(dir.join(CONFIG_FILE), &data[..cut]).expect("cannot write config.json");
    std::fs::write(dir.join(WEIGHTS_FILE), &data[cut + 1..]).expect("cannot write the weights");
    let Ok(mut engine) = Engine::load(dir, Options { threads: 1, max_len: Some(MAX_LEN), ..Options::default() }) else { return };
    let c = engine.config.hidden_size;
    if let Ok(h) = engine.forward(&IDS, &MASK, 2, MAX_LEN) {
        assert_eq!(h.len(), 2 * MAX_LEN * c);
    }
    let _ = engine.embed(&TEXTS);
    if engine.labels().is_some() {
        let _ = engine.classify(&TEXTS);
    }
});
