//! `shrink run`: a recipe on the tiny fixture (fine-tune, prune with recovery, int8), its lineage, and the stage
//! cache: a rerun reuses every stage, a changed stage reruns from there on, and a stage whose folder is gone (a
//! run killed in it) runs again while the stages after it, whose input comes out the same, are reused. A run
//! killed (SIGKILL) partway finishes on the next run with the same model.

mod common;

use std::path::Path;

use common::{fails, ok};
use shrink_fixture::{Family, Fixture};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn recipe(f: &Fixture, quantize: &str) -> String {
    let (m, d) = (s(&f.model), s(&f.train));
    format!(
        "model = \"{m}\"\n\
         [[stage]]\ncommand = \"finetune\"\ndata = \"{d}\"\nmax_len = 32\nepochs = 1\nlr = 1e-3\n\
         [[stage]]\ncommand = \"prune\"\nheads = 0.5\ndata = \"{d}\"\nsamples = 8\nrecover = \"finetune\"\nepochs = 1\n\
         [[stage]]\ncommand = \"quantize\"\n{quantize}\n"
    )
}

/// `shrink --threads 1 run` (one thread: the training stages are then deterministic); the stages' cached flags.
fn run(path: &Path, out: &Path) -> Vec<bool> {
    let r: serde_json::Value = serde_json::from_str(&ok(&["--threads", "1", "run", s(path), "--out", s(out)])).unwrap();
    r["stages"].as_array().unwrap().iter().map(|st| st["cached"].as_bool().unwrap()).collect()
}

#[test]
fn recipes_chain_stages_and_reuse_what_is_done() {
    let f = Fixture::new(Family::Bert, 3).unwrap();
    let (path, out) = (f.scratch.join("recipe.toml"), f.scratch.join("run"));
    std::fs::write(&path, recipe(&f, "scheme = \"int8-dynamic\"")).unwrap();
    assert_eq!(run(&path, &out), [false, false, false]);
    let model = out.join("model");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let stages: Vec<&str> = cfg["shrink_lineage"].as_array().unwrap().iter().map(|st| st["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["finetune", "prune", "quantize"]);
    assert_eq!(cfg["quantization"]["scheme"], "int8-dynamic");
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();

    assert_eq!(run(&path, &out), [true, true, true], "a rerun reuses every stage");
    assert_eq!(std::fs::read(model.join("model.safetensors")).unwrap(), weights);

    // A stage whose folder is missing runs again; its output is the same, so the stage after it is found done.
    let stages_dir = out.join("stages");
    let pruned = std::fs::read_dir(&stages_dir).unwrap().map(|e| e.unwrap().path()).find(|p| s(p).contains("-prune-")).unwrap();
    std::fs::remove_dir_all(&pruned).unwrap();
    let plan = ok(&["run", s(&path), "--out", s(&out), "--dry-run"]);
    let states: Vec<bool> = plan.lines().map(|l| l.contains(": done: ")).collect();
    assert_eq!(states, [true, false, false], "--dry-run: the stages after a missing one are not known done\n{plan}");
    assert!(!pruned.exists(), "--dry-run ran nothing");
    assert_eq!(run(&path, &out), [true, false, true]);

    // A changed stage runs again, and only it.
    std::fs::write(&path, recipe(&f, "scheme = \"fp16\"")).unwrap();
    assert_eq!(run(&path, &out), [true, true, false]);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["quantization"]["scheme"], "fp16", "model points at the new last stage");

    // Mistakes name the stage and the flag.
    std::fs::write(&path, recipe(&f, "scheme = \"int8-dynamic\"\nbogus = 1")).unwrap();
    let e = fails(&["--threads", "1", "run", s(&path), "--out", s(&out)]);
    assert!(e.contains("stage 3/3 (quantize)") && e.contains("--bogus"), "{e}");
    std::fs::write(&path, recipe(&f, "scheme = \"int8-dynamic\"")).unwrap();
    let e = fails(&["run", s(&path), "--out", s(&f.model)]);
    assert!(e.contains("is not a recipe run's folder"), "{e}");
    std::fs::write(&path, "[[stage]]\ncommand = \"train\"\n").unwrap();
    let e = fails(&["run", s(&path), "--out", s(&out)]);
    assert!(e.contains("recipe.toml") && e.contains("stage 1: command \"train\" is not a stage"), "{e}");
}

#[test]
fn a_killed_run_resumes_to_the_same_model() {
    let f = Fixture::new(Family::Bert, 5).unwrap();
    let path = f.scratch.join("recipe.toml");
    std::fs::write(&path, recipe(&f, "scheme = \"int8-dynamic\"")).unwrap();
    let whole = f.scratch.join("whole");
    run(&path, &whole);
    let want = std::fs::read(whole.join("model/model.safetensors")).unwrap();
    let out = f.scratch.join("killed");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shrink"))
        .args(["--threads", "1", "run", s(&path), "--out", s(&out)])
        .env("SHRINK_NO_PROGRESS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the first stage is done: in the second stage, or later on a fast machine.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // A stage is finished once its folder has its own name (its temp folder, which holds config.json first, does not).
    let finished = |e: &std::fs::DirEntry| !e.file_name().to_string_lossy().starts_with(".shrink-tmp") && e.path().join("config.json").is_file();
    while !std::fs::read_dir(out.join("stages")).is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| finished(&e)))) {
        assert!(std::time::Instant::now() < deadline, "the first stage never finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let cached = run(&path, &out);
    assert!(cached[0], "the finished stage is reused: {cached:?}");
    assert_eq!(std::fs::read(out.join("model/model.safetensors")).unwrap(), want, "resumed run gives another model");
    let leftovers: Vec<_> = std::fs::read_dir(out.join("stages")).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with(".shrink-tmp")).collect();
    assert!(leftovers.is_empty(), "temp folders of the killed stage are swept: {leftovers:?}");
}

/// An `attention` stage in a recipe: a fine-tuned fixture converted to sliding-window attention with a longer
/// position table, fine-tuned at the new length and quantized; the result says so and scores on the runtime.
#[test]
fn an_attention_stage_converts_between_the_others() {
    let f = Fixture::new(Family::Bert, 5).unwrap();
    let (m, d) = (s(&f.model), s(&f.train));
    let text = format!(
        "model = \"{m}\"\n\
         [[stage]]\ncommand = \"finetune\"\ndata = \"{d}\"\nmax_len = 32\nepochs = 1\nlr = 1e-3\n\
         [[stage]]\ncommand = \"attention\"\nto = \"sliding\"\nwindow = 4\nglobal = \"cls\"\nmax_len = 256\n\
         [[stage]]\ncommand = \"attention-transfer\"\ndata = \"{d}\"\nmax_len = 32\nepochs = 1\nlr = 1e-3\n\
         [[stage]]\ncommand = \"finetune\"\ndata = \"{d}\"\nmax_len = 48\nepochs = 1\nlr = 1e-3\n\
         [[stage]]\ncommand = \"quantize\"\nscheme = \"int8-dynamic\"\n"
    );
    let (path, out) = (f.scratch.join("long.toml"), f.scratch.join("long"));
    std::fs::write(&path, text).unwrap();
    assert_eq!(run(&path, &out), [false; 5]);
    let model = out.join("model");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let stages: Vec<&str> = cfg["shrink_lineage"].as_array().unwrap().iter().map(|st| st["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["finetune", "attention", "attention-transfer", "finetune", "quantize"]);
    let transfer = cfg["shrink_lineage"].as_array().unwrap().iter().find(|st| st["stage"] == "attention-transfer").unwrap();
    assert_eq!(transfer["parameters"]["train"], "qk", "sliding layers have no maps: their Q and K train");
    assert!(cfg["shrink_attention"].as_array().unwrap().iter().all(|k| k["kind"] == "sliding" && k["window"] == 4 && k["global"] == 1), "{cfg}");
    assert!(cfg["max_position_embeddings"].as_u64().unwrap() >= 256);
    let r: serde_json::Value = serde_json::from_str(&ok(&["eval", s(&model), "--task", "classify", "--data", s(&f.test), "--max-len", "48", "--json"])).unwrap();
    assert!(r["accuracy"].as_f64().unwrap().is_finite());
    assert_eq!(run(&path, &out), [true; 5], "a rerun reuses every stage");
}
