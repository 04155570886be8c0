//! The same integers on every architecture: the tiny legacy folders (fp32, int8 dynamic and static, int4; built by
//! crates/shrink-cli/tests/legacy/make.sh) embed texts.txt here exactly as they did on x86-64, whose embeddings on
//! the scalar kernels are committed in tests/cross_arch/NAME.f32 (raw little-endian f32).
//! - On the scalar kernels the embeddings must be equal bit for bit: same integer products, same float operations
//!   in the same order, on any target (scripts/test-aarch64.sh runs this under emulation with SHRINK_ISA=scalar).
//! - On a SIMD level the int8 and int4 GEMMs are still exact (the kernels' own tests), but LayerNorm, softmax and
//!   the f32 attention products sum in their lanes' order, so they are held to `SIMD_BUDGET`.
//!
//! Refresh the files on x86-64 with `SHRINK_ISA=scalar SHRINK_BLESS=1 cargo test --release -p shrink-runtime --test cross_arch`.

use std::path::{Path, PathBuf};

use shrink_runtime::{Engine, Options};

const FOLDERS: [&str; 4] = ["clf", "int8", "int8-static", "int4"];

/// Largest |SIMD - scalar| of an L2-normalised embedding value: f32 summation order, and the activation bytes it
/// moves by one step now and then.
const SIMD_BUDGET: f32 = 1e-3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn embeddings(dir: &Path, texts: &[String]) -> Vec<f32> {
    let mut engine = Engine::load(dir, Options { threads: 1, max_len: Some(32), ..Default::default() })
        .unwrap_or_else(|e| panic!("{}: {e:#}", dir.display()));
    engine.embed(texts).unwrap().concat()
}

#[test]
fn legacy_folders_embed_as_on_x86() {
    let legacy = root().join("crates/shrink-cli/tests/legacy");
    let texts: Vec<String> = std::fs::read_to_string(legacy.join("texts.txt")).unwrap().lines().map(str::to_owned).collect();
    let scalar = shrink_kernels::ops().isa == shrink_kernels::isa::Isa::Scalar;
    for name in FOLDERS {
        let got = embeddings(&legacy.join(name), &texts);
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/cross_arch/{name}.f32"));
        if std::env::var_os("SHRINK_BLESS").is_some() {
            assert!(scalar && cfg!(target_arch = "x86_64"), "bless on x86-64 with SHRINK_ISA=scalar");
            std::fs::write(&file, got.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        }
        let want: Vec<f32> = std::fs::read(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}: embedding values");
        if scalar {
            let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name}: scalar embeddings differ from x86-64's bit for bit");
        } else {
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            eprintln!("{name}: {:?} vs x86-64 scalar: max |diff| {worst:.2e}", shrink_kernels::ops().isa);
            assert!(worst <= SIMD_BUDGET, "{name}: off x86-64's scalar embeddings by {worst}");
        }
    }
}
