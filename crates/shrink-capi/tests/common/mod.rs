//! The model folders the tests run on, and the Rust engine their C results are checked against.

use std::path::{Path, PathBuf};

use shrink_runtime::{Engine, Options};

/// Largest |C - Rust| of an output value: both run the same engine, so they agree bit for bit in practice.
pub const TOLERANCE: f32 = 1e-6;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// all-MiniLM-L6-v2 (scripts/fetch-assets.sh): no classification head.
pub fn minilm() -> PathBuf {
    root().join("assets/models/all-MiniLM-L6-v2")
}

/// The tiny fine-tuned BERT the CLI's legacy tests keep in the repository: 5 BBC topics, hidden 64.
pub fn classifier() -> PathBuf {
    root().join("crates/shrink-cli/tests/legacy/clf")
}

pub fn engine(dir: &Path, threads: usize) -> Engine {
    Engine::load(dir, Options { threads, ..Options::default() }).unwrap()
}

pub fn assert_close(c: &[f32], rust: &[f32], what: &str) {
    assert_eq!(c.len(), rust.len(), "{what}: lengths");
    let worst = c.iter().zip(rust).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= TOLERANCE, "{what}: C and Rust differ by {worst} (budget {TOLERANCE})");
}
