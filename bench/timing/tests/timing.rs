//! The timing server the bench/ scripts drive, on the real model.

fn model() -> String {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/models/all-MiniLM-L6-v2");
    assert!(p.exists(), "{} missing: run scripts/fetch-assets.sh", p.display());
    p.display().to_string()
}

#[test]
fn timing_server_answers_each_case_and_rejects_unknown_ones() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shrink-timing"))
        .args(["--model", &model(), "--threads", "2"])
        .env("SHRINK_NO_PROGRESS", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"forward 2 16 2\ntrain 2 16 1\ndistill 2 16 2\nbogus 1 4 1\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let answers: Vec<serde_json::Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let counts: Vec<usize> = answers.iter().map(|a| a["ms"].as_array().unwrap().len()).collect();
    assert_eq!(counts, [2, 1, 2], "one answer per known case, one time per repetition");
    assert!(answers.iter().flat_map(|a| a["ms"].as_array().unwrap()).all(|ms| ms.as_f64().unwrap() > 0.0));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("unknown timing case \"bogus\"") && !err.contains("panicked"), "{err}");
}

#[test]
fn timing_rejects_empty_shapes() {
    use std::io::Write;
    for line in ["forward 1 0 1", "train 0 4 1", "distill 2 0 1", "forward 1 513 1"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shrink-timing"))
            .args(["--model", &model(), "--threads", "1"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{line}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        let want = if line.contains("513") { "T = 513 exceeds max_position_embeddings 512" } else { "B, T and R must be at least 1" };
        assert!(!out.status.success() && err.contains(&format!("{line:?}: {want}")) && !err.contains("panicked"), "{line}: {err}");
        assert!(out.stdout.is_empty(), "{line}: answered {:?}", String::from_utf8_lossy(&out.stdout));
    }
}
