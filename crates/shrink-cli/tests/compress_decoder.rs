//! `shrink compress --task perplexity` on a real decoder cut short: SmolLM2's first two layers, its tokenizer and
//! its tied embeddings, stored in f32 so the quantized trials are smaller than the teacher. The search measures
//! every format on dev text carved from --data, picks the smallest within the perplexity budget, scores it once on
//! test, and writes the model and the report; bad pairings of model and task are refused.

mod common;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use common::{asset, fails, model, ok, root};
use shrink_format::gguf::write::{write, Tensor};
use shrink_format::gguf::{type_info, GgufFile, Value};

const LAYERS: u32 = 2;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// SmolLM2 with its first `LAYERS` layers, every tensor dequantized to f32.
fn two_layers(dir: &Path) -> PathBuf {
    let f = GgufFile::open(&asset("models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let metadata: Vec<(String, Value)> =
        f.metadata.iter().map(|(k, v)| (k.clone(), if k == "llama.block_count" { Value::U32(LAYERS) } else { v.clone() })).collect();
    let kept = |name: &str| name.strip_prefix("blk.").is_none_or(|rest| rest.split('.').next().unwrap().parse::<u32>().unwrap() < LAYERS);
    let tensors: Vec<Tensor> = f
        .tensors
        .iter()
        .filter(|t| kept(&t.name))
        .map(|t| {
            let bytes = f.dequantize(&t.name).unwrap().iter().flat_map(|v| v.to_le_bytes()).collect();
            Tensor { name: t.name.clone(), dims: t.dims.clone(), kind: type_info(0).unwrap(), data: Cow::Owned(bytes) }
        })
        .collect();
    let path = dir.join("smollm2-2l.gguf");
    write(&path, Path::new("/nonexistent"), &metadata, &tensors).unwrap();
    path
}

/// The first `bytes` of `from`, cut at a line end.
fn head(from: &Path, bytes: usize, to: &Path) -> PathBuf {
    let text = std::fs::read_to_string(from).unwrap();
    let end = text[..bytes].rfind('\n').unwrap() + 1;
    std::fs::write(to, &text[..end]).unwrap();
    to.to_path_buf()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn a_decoder_search_picks_the_smallest_format_within_the_perplexity_budget() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = two_layers(dir.path());
    let wikitext = root().join("../shared/data/wikitext-2");
    // Calibration (8192 tokens) and the mixed search's held-out 2048 tokens come from the training part.
    let data = head(&wikitext.join("valid.txt"), 60_000, &dir.path().join("data.txt"));
    let test = head(&wikitext.join("test.txt"), 10_000, &dir.path().join("test.txt"));
    let out = dir.path().join("search");
    let argv = ["--threads", "2", "compress", s(&gguf), "--task", "perplexity", "--data", s(&data), "--dev-fraction", "0.15", "--test", s(&test), "--max-drop", "5", "--latency-at", "1x32", "--out", s(&out)];
    // --dry-run: the plan, estimated, and nothing written.
    let mut dry = argv.to_vec();
    dry.push("--dry-run");
    let plan = ok(&dry);
    assert_eq!(plan.lines().filter(|l| l.starts_with("round 0 t0")).count(), 5, "{plan}");
    assert!(plan.contains("per generated token after a 32-token prompt") && plan.contains("round 0 is the whole search"), "{plan}");
    assert!(!out.exists());
    let printed: serde_json::Value = serde_json::from_str(&ok(&argv)).unwrap();

    // Dev is the last lines of --data, train the rest: running text, not shuffled.
    let (train, dev) = (std::fs::read_to_string(out.join("data/train.txt")).unwrap(), std::fs::read_to_string(out.join("data/dev.txt")).unwrap());
    assert_eq!(train + &dev, std::fs::read_to_string(&data).unwrap());

    let r = json(&out.join("report.json"));
    assert_eq!(r["metric"], "perplexity");
    let trials = r["trials"].as_array().unwrap();
    let variants: Vec<&str> = trials.iter().map(|t| t["variant"].as_str().unwrap()).collect();
    assert_eq!(variants, ["fp32", "int8", "int4-g32", "mixed-int4/int8", "mixed-int4/int8-near"], "{:?}", r["failed"]);
    let teacher = trials.iter().find(|t| t["id"] == r["teacher"]).unwrap();
    let chosen = trials.iter().find(|t| t["id"] == r["chosen"]).unwrap();
    let dev_ppl = |t: &serde_json::Value| t["dev"]["score"].as_f64().unwrap();
    let bytes = |t: &serde_json::Value| t["file_bytes"].as_u64().unwrap();
    for t in trials {
        let increase = (dev_ppl(t) / dev_ppl(teacher) - 1.0) * 100.0;
        assert_eq!(t["passed"] == true, increase <= 5.0 + 1e-9, "{}: {increase:+.2}%", t["id"]);
        if t["passed"] == true {
            assert!(bytes(t) >= bytes(chosen), "{} is smaller and passed", t["id"]);
        }
        assert!(t["latency_ms"].as_f64().unwrap() > 0.0 && t["peak_rss_mb"].as_f64().unwrap() > 0.0);
    }
    assert!(bytes(chosen) < bytes(teacher) / 3, "int8 at least passes a 5% budget, and is under a third of f32");
    assert_eq!(printed["chosen"]["id"], r["chosen"]);

    // The result is the chosen trial's file, in OUT/model; scored on test as reported, which dev never saw.
    let model_dir = out.join("model");
    assert_eq!(std::fs::metadata(model_dir.join("model.gguf")).unwrap().len(), bytes(chosen));
    let eval: serde_json::Value = serde_json::from_str(&ok(&["--threads", "2", "eval", s(&model_dir), "--task", "perplexity", "--data", s(&test), "--json"])).unwrap();
    assert_eq!(eval["perplexity"], chosen["test"]["score"]);
    assert!(teacher["test"]["score"].as_f64().unwrap() > 1.0);
    let bits = r["bits"].as_array().unwrap();
    assert_eq!(bits.len(), 2 * 7, "each layer's seven weights");
    assert!(bits.iter().all(|b| b["bits"].as_u64().unwrap() <= 8), "{bits:?}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("% more perplexity on dev") && html.contains("per generated token after a 32-token prompt"), "{}", &html[..2000.min(html.len())]);

    // The recipe written beside it rebuilds the same file.
    let rebuilt = dir.path().join("rebuilt");
    ok(&["--threads", "2", "run", s(&out.join("recipe.toml")), "--out", s(&rebuilt)]);
    assert!(std::fs::read(rebuilt.join("model/model.gguf")).unwrap() == std::fs::read(model_dir.join("model.gguf")).unwrap(), "the recipe rebuilds the chosen file");

    // Run again: every trial is on disk, so nothing is quantized again and the choice is the same.
    let again: serde_json::Value = serde_json::from_str(&ok(&argv)).unwrap();
    assert_eq!(again["chosen"]["id"], r["chosen"]);
    assert_eq!(json(&out.join("report.json"))["time"]["spent_s"], r["time"]["spent_s"]);

    // Pairings that cannot work say so.
    let err = fails(&["compress", s(&gguf), "--task", "classify", "--data", s(&data), "--out", s(&dir.path().join("x"))]);
    assert!(err.contains("a decoder; its search is --task perplexity"), "{err}");
    let err = fails(&["compress", &model(), "--task", "perplexity", "--data", s(&data), "--out", s(&dir.path().join("y"))]);
    assert!(err.contains("--task perplexity searches a decoder"), "{err}");
    let short = head(&data, 3000, &dir.path().join("short.txt"));
    let err = fails(&["compress", s(&gguf), "--task", "perplexity", "--data", s(&short), "--dev-fraction", "0.01", "--out", s(&dir.path().join("z"))]);
    assert!(err.contains("short.txt") && err.contains("for dev: both splits need at least 10"), "{err}");
}
