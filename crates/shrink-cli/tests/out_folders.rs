//! Output folders are safe: nothing a user holds is deleted, a replaced folder is always old or new and complete,
//! killed runs leave no temp folders behind, and quantize rejects what another command would before writing.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use common::{asset, fails, model, ok};
use rand::{Rng, SeedableRng};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every entry of `dir` with its bytes (one level: model folders are flat).
fn snapshot(dir: &Path) -> HashMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = if e.file_type().unwrap().is_file() { std::fs::read(e.path()).unwrap() } else { Vec::new() };
            (e.file_name().into_string().unwrap(), bytes)
        })
        .collect()
}

/// Temp folders shrink leaves in `dir`.
fn temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".shrink-"))
        .collect()
}

fn quantize(out: &Path, extra: &[&str]) -> Vec<String> {
    let m = model();
    let mut args = vec!["quantize", m.as_str(), "--scheme", "int8-dynamic", "--out", s(out)];
    args.extend_from_slice(extra);
    args.iter().map(|a| a.to_string()).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn run(args: &[String], cwd: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shrink")).args(args).current_dir(cwd).env("SHRINK_NO_PROGRESS", "1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    (out.status.success(), err)
}

#[test]
fn a_folder_holding_other_files_is_never_replaced_by_any_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = tmp.path().join("keep");
    std::fs::create_dir(&keep).unwrap();
    std::fs::write(keep.join("notes.txt"), "important").unwrap();
    let (m, train) = (model(), asset("data/bbc/train.jsonl"));
    let (k, d) = (s(&keep), s(&train));
    // Each is refused before any work, --force or not.
    let commands: [&[&str]; 8] = [
        &["quantize", &m, "--scheme", "int8-dynamic", "--out", k],
        &["quantize", &m, "--scheme", "int8-dynamic", "--out", k, "--force"],
        &["finetune", &m, "--data", d, "--out", k],
        &["distill", "--teacher", &m, "--task", "embedding", "--data", d, "--out", k],
        &["qat", "--model", &m, "--scheme", "int8", "--data", d, "--out", k],
        &["sparsify", &m, "--sparsity", "0.5", "--out", k],
        &["prune", &m, "--heads", "0.5", "--out", k],
        &["trim-vocab", &m, "--data", d, "--out", k],
    ];
    for args in commands {
        let start = Instant::now();
        let err = fails(args);
        assert!(err.contains("not a model folder written by shrink") && err.contains("notes.txt"), "{args:?}: {err}");
        assert!(start.elapsed() < Duration::from_secs(20), "{args:?} did work before refusing");
        assert_eq!(snapshot(&keep), HashMap::from([("notes.txt".to_string(), b"important".to_vec())]), "{args:?}");
    }
    assert!(temps(tmp.path()).is_empty());
}

#[test]
fn out_may_not_be_the_input_its_parents_or_the_current_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let src = work.join("models/minilm");
    std::fs::create_dir_all(&src).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(asset("models/all-MiniLM-L6-v2").join(f), src.join(f)).unwrap();
    }
    std::fs::write(work.join("notes.txt"), "mine").unwrap();
    let before = (snapshot(&work), snapshot(&src));
    let q = |out: &str, force: bool| {
        let mut a = vec!["quantize".to_string(), s(&src).into(), "--scheme".into(), "int8-dynamic".into(), "--out".into(), out.into()];
        if force {
            a.push("--force".into());
        }
        a
    };
    let cases = [
        (s(&src).to_string(), "is the input model folder"),
        (s(&work.join("models")).to_string(), "holds the input model"),
        (format!("{}/models/minilm/..", s(&work)), "holds the input model"),
        (format!("{}/models/minilm/../..", s(&work)), "current folder"),
        (".".to_string(), "current folder"),
        ("..".to_string(), "current folder"),
        ("models/..".to_string(), "current folder"),
    ];
    for (out, want) in &cases {
        for force in [false, true] {
            let (ok, err) = run(&q(out, force), &work);
            assert!(!ok && err.contains(want), "--out {out}: {err}");
            assert_eq!((snapshot(&work), snapshot(&src)), before, "--out {out} changed files");
        }
    }
    assert!(temps(&work).is_empty() && temps(&work.join("models")).is_empty());
}

#[test]
fn symlinks_are_refused_and_shrink_folders_need_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dangling = tmp.path().join("dangling");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &dangling).unwrap();
    let err = fails(&strs(&quantize(&dangling, &[])));
    assert!(err.contains("symbolic link"), "{err}");
    assert!(std::fs::read_link(&dangling).is_ok() && !tmp.path().join("nowhere").exists());
    assert_eq!(temps(tmp.path()), Vec::<String>::new(), "no stranded copy");

    let out = tmp.path().join("q");
    // An empty folder is a fine destination.
    std::fs::create_dir(&out).unwrap();
    ok(&strs(&quantize(&out, &[])));
    let first = snapshot(&out);
    let err = fails(&strs(&quantize(&out, &[])));
    assert!(err.contains("pass --force"), "{err}");
    assert_eq!(snapshot(&out), first);
    ok(&strs(&quantize(&out, &["--force", "--embeddings", "int8"])));
    let second = snapshot(&out);
    assert_ne!(second["model.safetensors"], first["model.safetensors"]);
    assert!(String::from_utf8_lossy(&second["config.json"]).contains("\"embeddings\": \"int8\""));
    assert!(temps(tmp.path()).is_empty());
}

#[test]
fn stale_temp_folders_of_dead_writers_are_swept() {
    let tmp = tempfile::tempdir().unwrap();
    // pid_max on Linux is at most 2^22: this writer is certainly dead. pid 1 is alive: its folder stays.
    let dead = tmp.path().join(".shrink-tmp-99999999-abc");
    let live = tmp.path().join(".shrink-tmp-1-abc");
    for d in [&dead, &live] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("model.safetensors"), "partial").unwrap();
    }
    // A dead fallback swap's old folder goes back to its name when nothing took it.
    let aside = tmp.path().join(".shrink-tmp-99999998-old-earlier");
    std::fs::create_dir(&aside).unwrap();
    std::fs::write(aside.join("config.json"), "{}").unwrap();
    ok(&strs(&quantize(&tmp.path().join("q"), &[])));
    assert!(!dead.exists() && live.exists() && !aside.exists());
    assert_eq!(std::fs::read_to_string(tmp.path().join("earlier/config.json")).unwrap(), "{}");
}

/// The weights and config of a complete folder.
fn state(dir: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    let snap = snapshot(dir);
    let complete = ["config.json", "model.safetensors", "tokenizer.json"].iter().all(|f| snap.contains_key(*f));
    complete.then(|| (snap["config.json"].clone(), snap["model.safetensors"].clone()))
}

#[test]
fn killing_quantize_anywhere_leaves_the_old_or_the_new_folder_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("ref-a"), tmp.path().join("ref-b"));
    let args = |out: &Path, emb: &str, force: bool| {
        let mut v = quantize(out, &["--embeddings", emb]);
        if force {
            v.push("--force".into());
        }
        v
    };
    let start = Instant::now();
    assert!(run(&args(&a, "fp32", false), tmp.path()).0);
    let full = start.elapsed();
    assert!(run(&args(&b, "int8", false), tmp.path()).0);
    let (sa, sb) = (state(&a).unwrap(), state(&b).unwrap());
    assert_ne!(sa, sb);

    let out = tmp.path().join("out");
    assert!(run(&args(&out, "fp32", false), tmp.path()).0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut kept_old, mut got_new) = (0, 0);
    for i in 0..20 {
        let now = state(&out).expect("complete before the kill");
        let (emb, next) = if now == sa { ("int8", &sb) } else { ("fp32", &sa) };
        let mut child = Command::new(env!("CARGO_BIN_EXE_shrink"))
            .args(args(&out, emb, true))
            .env("SHRINK_NO_PROGRESS", "1")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(rng.random_range(0.0..1.3)));
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        let after = state(&out).unwrap_or_else(|| panic!("kill {i}: {} is incomplete", out.display()));
        assert!(after == now || &after == next, "kill {i}: neither the old nor the new folder");
        if after == now {
            kept_old += 1;
        } else {
            got_new += 1;
        }
    }
    assert!(kept_old > 0 && got_new > 0, "the kills should land on both sides of the swap ({kept_old} / {got_new})");
    // The next writer removes what the killed ones left.
    assert!(run(&args(&tmp.path().join("last"), "fp32", false), tmp.path()).0);
    assert_eq!(temps(tmp.path()), Vec::<String>::new());
}

/// A copy of MiniLM under `dir` with `edit` applied to its tensors and `cfg` to its config.
fn broken_copy(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>), cfg: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let src = asset("models/all-MiniLM-L6-v2");
    std::fs::create_dir_all(dir).unwrap();
    let mut tensors = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg(&mut c);
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    dir.to_path_buf()
}

#[test]
fn quantize_rejects_what_the_runtime_would_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let drop = |name: &'static str| move |m: &mut HashMap<String, Tensor>| assert!(m.remove(name).is_some(), "{name}");
    let same = |_: &mut serde_json::Value| {};
    let keep = |_: &mut HashMap<String, Tensor>| {};
    let cases: Vec<(PathBuf, &str)> = vec![
        (broken_copy(&t.join("no-words"), drop("embeddings.word_embeddings.weight"), same), "embeddings.word_embeddings.weight is missing"),
        (
            broken_copy(&t.join("int-words"), |m| {
                let w = m["embeddings.word_embeddings.weight"].to_dtype(candle_core::DType::I64).unwrap();
                m.insert("embeddings.word_embeddings.weight".into(), w);
            }, same),
            "expected a floating type",
        ),
        (broken_copy(&t.join("no-ln"), drop("encoder.layer.3.output.LayerNorm.weight"), same), "encoder.layer.3.output.LayerNorm.weight"),
        (broken_copy(&t.join("vocab"), keep, |c| c["vocab_size"] = 30000.into()), "vocab_size"),
        (broken_copy(&t.join("positions"), keep, |c| c["max_position_embeddings"] = 256.into()), "position_embeddings"),
        (broken_copy(&t.join("types"), keep, |c| c["type_vocab_size"] = 3.into()), "token_type_embeddings"),
        (
            broken_copy(&t.join("head"), |m| {
                m.insert("classifier.weight".into(), Tensor::zeros((5, 384), candle_core::DType::F32, &Device::Cpu).unwrap());
                m.insert("classifier.bias".into(), Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap());
            }, |c| c["shrink"] = serde_json::json!({"pooling": "mean", "head": "classifier"})),
            "no id2label",
        ),
    ];
    let no_tok = broken_copy(&t.join("no-tok"), keep, same);
    std::fs::remove_file(no_tok.join("tokenizer.json")).unwrap();
    let bad_tok = broken_copy(&t.join("bad-tok"), keep, same);
    std::fs::write(bad_tok.join("tokenizer.json"), "{\"version\": ").unwrap();
    let cases = cases.into_iter().chain([(no_tok, "tokenizer"), (bad_tok, "tokenizer.json")]);
    for (dir, want) in cases {
        let out = t.join("out");
        let err = fails(&["quantize", s(&dir), "--scheme", "int8-dynamic", "--out", s(&out)]);
        assert!(err.contains(want), "{}: {err}", dir.display());
        assert!(!out.exists() && temps(t).is_empty(), "{}: left output behind", dir.display());
    }
}
