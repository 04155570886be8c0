//! Folders written before the on-disk contract got its typed home (shrink at 08428b9: untyped
//! `quantization.layers`, `quantization.recipe`, the `pruning` / `shrink_sparsity` / `shrink_vocab` blobs, no
//! lineage) still load: each embeds byte for byte as the binary that wrote it did, on the scalar kernels (bf16-attention
//! folders within a budget: off AMX-BF16 they now run f32 attention)
//! (`tests/legacy/NAME.npy`), and `inspect` reads it. `tests/legacy/make.sh` rebuilt the folders from the tiny BERT
//! fixture with that binary.

mod common;

use std::path::PathBuf;

use common::{ok, root, shrink};

const FOLDERS: [&str; 8] = ["clf", "int8", "int8-static", "int4", "fp16", "sparse", "pruned", "trimmed"];

fn legacy(rel: &str) -> PathBuf {
    root().join("crates/shrink-cli/tests/legacy").join(rel)
}

/// Largest |now - old| of an L2-normalised embedding value where bf16 attention became f32: bf16 keeps 8 mantissa
/// bits of Q, K, V and the probabilities.
const BF16_ATTENTION_BUDGET: f32 = 1e-2;

fn cfg(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(legacy(name).join("config.json")).unwrap()).unwrap()
}

/// The f32 values of a little-endian .npy file (version 1 header).
fn values(npy: &[u8]) -> Vec<f32> {
    let header = 10 + u16::from_le_bytes([npy[8], npy[9]]) as usize;
    npy[header..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn folders_written_by_the_old_binary_load_and_embed_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let texts = legacy("texts.txt");
    for name in FOLDERS {
        let (dir, out) = (legacy(name), tmp.path().join(format!("{name}.npy")));
        let args = ["embed", dir.to_str().unwrap(), "--input", texts.to_str().unwrap(), "--output", out.to_str().unwrap()];
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_shrink"))
            .args(args)
            .args(["--max-len", "32", "--threads", "1"])
            .env("SHRINK_NO_PROGRESS", "1")
            .env("SHRINK_ISA", "scalar")
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        let (got, want) = (std::fs::read(&out).unwrap(), std::fs::read(legacy(&format!("{name}.npy"))).unwrap());
        if cfg(name)["quantization"]["attention"] == "bf16" {
            // The old binary emulated bf16 attention on the f32 kernels; without AMX-BF16 it now runs f32.
            let worst = values(&got).iter().zip(values(&want)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(got.len() == want.len() && worst <= BF16_ATTENTION_BUDGET, "{name}: embeddings off the old binary's by {worst}");
        } else {
            assert!(got == want, "{name}: embeddings differ from the old binary's");
        }
        let r: serde_json::Value = serde_json::from_str(&ok(&["inspect", dir.to_str().unwrap(), "--json"])).unwrap();
        assert!(r["total"]["params"].as_u64().unwrap() > 0, "{name}: {r}");
    }
    // The old records are still there to read; new stages start a lineage on top of them.
    assert!(cfg("int8")["quantization"]["recipe"].is_object() && cfg("pruned")["pruning"].is_object());
    let again = tmp.path().join("again");
    let o = shrink(&["quantize", legacy("pruned").to_str().unwrap(), "--scheme", "int8-dynamic", "--out", again.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(again.join("config.json")).unwrap()).unwrap();
    assert_eq!(c["shrink_lineage"][0]["stage"], "quantize");
    assert_eq!(c["pruning"], cfg("pruned")["pruning"], "an older blob is carried along");
}
