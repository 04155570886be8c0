//! Running the `shrink` binary on the real assets, shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn asset(rel: &str) -> PathBuf {
    let p = root().join("assets").join(rel);
    assert!(p.exists(), "{} missing: run scripts/fetch-assets.sh", p.display());
    p
}

/// The base model folder, as a string argument.
pub fn model() -> String {
    asset("models/all-MiniLM-L6-v2").display().to_string()
}

/// A checked destination for a library call that writes a model folder.
pub fn out_dir(p: &std::path::Path) -> shrink_format::folder::OutDir {
    shrink_format::folder::OutDir::new(p, &[], false).unwrap()
}

pub fn shrink(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shrink")).args(args).env("SHRINK_NO_PROGRESS", "1").output().expect("run shrink")
}

/// Runs and requires success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let out = shrink(args);
    assert!(out.status.success(), "shrink {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and requires failure without a panic; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let out = shrink(args);
    assert!(!out.status.success(), "shrink {args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "shrink {args:?} panicked: {err}");
    err
}

/// `shrink` that must finish within `secs` (a hang is a failure, not a stuck test run); returns its output.
pub fn shrink_within(args: &[&str], secs: u64) -> Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_shrink"))
        .args(args)
        .env("SHRINK_NO_PROGRESS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shrink");
    let start = std::time::Instant::now();
    while child.try_wait().expect("wait for shrink").is_none() {
        if start.elapsed().as_secs() >= secs {
            child.kill().ok();
            child.wait().ok();
            panic!("shrink {args:?} still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("shrink output")
}

/// The last lineage step of `stage` in a folder's config.json; fails the test when there is none.
pub fn step<'a>(cfg: &'a serde_json::Value, stage: &str) -> &'a serde_json::Value {
    let steps = cfg["shrink_lineage"].as_array().unwrap_or_else(|| panic!("no shrink_lineage in {cfg}"));
    steps.iter().rev().find(|s| s["stage"] == stage).unwrap_or_else(|| panic!("no {stage} step in {steps:?}"))
}
