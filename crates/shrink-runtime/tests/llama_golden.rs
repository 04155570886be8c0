//! The Llama decoder against transformers (../shared/golden/smollm2-135m, the GGUF's weights dequantized to fp32):
//! the 5 golden prompts' logits within 1e-3 of each position's largest |logit|, every layer's hidden state of
//! prompt 0, the greedy next token at every position, and greedy generation on the KV cache token for token.

use std::path::PathBuf;

use safetensors::SafeTensors;
use shrink_format::gguf::GgufFile;
use shrink_runtime::llama::Llama;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name).unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

#[test]
fn smollm2_logits_and_hidden_states_match_transformers() {
    let gguf = root().join("assets/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf");
    let file = GgufFile::open(&gguf).unwrap_or_else(|e| panic!("{e:#} (run scripts/fetch-assets.sh)"));
    let model = Llama::from_gguf(&file).unwrap();
    assert_eq!((model.cfg.layers, model.cfg.c, model.cfg.h, model.cfg.g, model.cfg.f, model.cfg.v), (30, 576, 9, 3, 1536, 49152));
    let bytes = std::fs::read(root().join("../shared/golden/smollm2-135m/golden.safetensors")).unwrap();
    let golden = SafeTensors::deserialize(&bytes).unwrap();
    let v = model.cfg.v;
    // Fewer under an emulator (scripts/test-aarch64.sh): each prompt runs the same kernels.
    let prompts = std::env::var("SHRINK_GOLDEN_PROMPTS").ok().and_then(|n| n.parse().ok()).unwrap_or(5usize).clamp(1, 5);
    for p in 0..prompts {
        let ids: Vec<u32> = golden.tensor(&format!("p{p}.input_ids")).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect();
        let mut hidden = Vec::new();
        let logits = model.forward(&ids, (p == 0).then_some(&mut hidden)).unwrap();
        let want = f32s(&golden, &format!("p{p}.logits"));
        assert_eq!(logits.len(), want.len(), "prompt {p}: logits");
        let mut worst = 0f32;
        for (t, (got, want)) in logits.chunks_exact(v).zip(want.chunks_exact(v)).enumerate() {
            let top = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / top;
            worst = worst.max(err);
            assert!(err <= 1e-3, "prompt {p} position {t}: logits off by {err} of the largest");
            assert_eq!(argmax(got), argmax(want), "prompt {p} position {t}: greedy token");
        }
        eprintln!("prompt {p} ({} tokens): worst logit error {worst:.2e} of the largest", ids.len());
        // transformers stops at EOS (id 2, included) or after 32 new tokens.
        let want: Vec<u32> = golden.tensor(&format!("p{p}.greedy_ids")).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect();
        assert_eq!(model.greedy(&ids, 32, Some(2), &mut |_| ()).unwrap(), want, "prompt {p}: greedy continuation");
        if p == 0 {
            assert_eq!(hidden.len(), 31);
            for (l, got) in hidden.iter().enumerate() {
                let want = f32s(&golden, &format!("p0.hidden_states.{l}"));
                let top = want.iter().fold(0f32, |m, x| m.max(x.abs()));
                let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / top;
                assert!(err <= 1e-3, "hidden state {l}: off by {err} of its largest value");
            }
        }
    }
}
