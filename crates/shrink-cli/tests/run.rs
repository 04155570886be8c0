//! `shrink run`: a recipe on the tiny fixture (fine-tune, prune with recovery, int8), its lineage, and the stage
//! cache: a rerun reuses every stage, a changed stage reruns from there on, and a stage whose folder is gone (a
//! run killed in it) runs again while the stages after it, whose input comes out the same, are reused.

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
