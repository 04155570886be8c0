//! `shrink compress` on the tiny fixture: the whole search (teacher variants, structures, successive halving),
//! the chosen model and its report, a rerun that runs nothing, a search killed midway that resumes to the same
//! choice, `shrink trial` and `shrink report` on its files, the report in a real browser, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fails, ok};
use shrink_fixture::{Family, Fixture};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One thread: training is then deterministic, so two searches make the same choices.
fn args<'a>(f: &'a Fixture, out: &'a Path) -> Vec<&'a str> {
    vec!["--threads", "1", "compress", s(&f.model), "--data", s(&f.train), "--dev-fraction", "0.2", "--test", s(&f.test), "--max-drop", "5", "--latency-at", "1x32", "--out", s(out)]
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn trial_files(out: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(out.join("trials")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn the_search_measures_every_candidate_and_picks_the_smallest_within_budget() {
    let f = Fixture::new(Family::Bert, 11).unwrap();
    let out = f.scratch.join("search");
    let printed: serde_json::Value = serde_json::from_str(&ok(&args(&f, &out))).unwrap();
    let r = json(&out.join("report.json"));
    let plan = json(&out.join("plan.json"));
    let trials = r["trials"].as_array().unwrap();
    let planned = plan["trials"].as_array().unwrap().len();
    assert_eq!(trials.len() + r["failed"].as_array().unwrap().len(), planned, "every planned trial ran or failed");
    assert!(plan["trials"].as_array().unwrap().iter().any(|t| t["round"] == 2), "successive halving ran a second round");

    // The choice: within the budget on dev, and the smallest such; a real folder, copied to OUT/model.
    let teacher = trials.iter().find(|t| t["id"] == r["teacher"]).unwrap();
    let chosen = trials.iter().find(|t| t["id"] == r["chosen"]).unwrap();
    let dev = |t: &serde_json::Value| t["dev"]["score"].as_f64().unwrap();
    let bytes = |t: &serde_json::Value| t["file_bytes"].as_u64().unwrap();
    assert!((dev(teacher) - dev(chosen)) * 100.0 <= 5.0 + 1e-9);
    for t in trials.iter().filter(|t| t["passed"] == true) {
        assert!(bytes(t) >= bytes(chosen), "{} is smaller and passed", t["id"]);
        assert!(t["latency_ms"].as_f64().unwrap() > 0.0 && t["peak_rss_mb"].as_f64().unwrap() > 0.0);
    }
    assert!(bytes(chosen) < bytes(teacher), "something smaller than the teacher passed a 5-point budget");
    assert_eq!(printed["chosen"]["id"], r["chosen"]);
    let model = out.join("model");
    let eval: serde_json::Value = serde_json::from_str(&ok(&["eval", s(&model), "--task", "classify", "--data", s(&f.test), "--json"])).unwrap();
    assert_eq!(eval["accuracy"], chosen["test"]["score"], "the test score reported is the copied model's");
    assert!(teacher["test"]["score"].is_number(), "the teacher is scored on test too");
    assert!(trials.iter().filter(|t| t["id"] != r["chosen"] && t["id"] != r["teacher"]).all(|t| t["test"].is_null()), "no other trial sees test");

    // The report: stages of the chosen recipe, fronts, artifacts, and a recipe that rebuilds the same model.
    let stages = r["stages"].as_array().unwrap();
    let recipe = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
    // A row for the teacher (the checkpoint, or the finetune stage that made it), then one per stage after it.
    let finetuned = recipe.contains("command = \"finetune\"");
    assert_eq!(stages.len() + usize::from(finetuned), 1 + recipe.matches("[[stage]]").count(), "{recipe}");
    assert!(r["front_size"].as_array().unwrap().contains(&r["teacher"]) || dev(teacher) < trials.iter().map(dev).fold(0.0, f64::max));
    assert!(r["sensitivity"]["sites"].as_array().unwrap().len() >= 4 * 2, "a site per Linear group per layer");
    assert_eq!(r["head_importance"].as_array().unwrap().len(), 2, "one row per layer");
    let rebuilt = f.scratch.join("rebuilt");
    ok(&["--threads", "1", "run", s(&out.join("recipe.toml")), "--out", s(&rebuilt)]);
    assert_eq!(std::fs::read(rebuilt.join("model/model.safetensors")).unwrap(), std::fs::read(model.join("model.safetensors")).unwrap(), "recipe.toml rebuilds the chosen model");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Trial log") && md.contains(r["chosen"].as_str().unwrap()), "{md}");

    // Rerun: nothing runs again, the same choice. `shrink trial` on a done trial prints its result.
    let before = trial_files(&out);
    let again: serde_json::Value = serde_json::from_str(&ok(&args(&f, &out))).unwrap();
    assert_eq!(again["chosen"]["id"], r["chosen"]);
    assert_eq!(trial_files(&out), before);
    let id = r["chosen"].as_str().unwrap();
    let t: serde_json::Value = serde_json::from_str(&ok(&["trial", s(&out.join("plan.json")), id])).unwrap();
    assert_eq!(t["dev"]["file_bytes"], chosen["file_bytes"]);
    let e = fails(&["trial", s(&out.join("plan.json")), "t999"]);
    assert!(e.contains("no trial \"t999\" in the plan"), "{e}");

    // `shrink report` renders the page again from report.json alone.
    std::fs::remove_file(out.join("report.html")).unwrap();
    ok(&["report", s(&out)]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    browser(&out.join("report.html"), &html);

    // Settings differ from the plan's: refused, naming the field.
    let mut other = args(&f, &out);
    let i = other.iter().position(|a| *a == "5").unwrap();
    other[i] = "2";
    let e = fails(&other);
    assert!(e.contains("a search with other settings") && e.contains("max_drop"), "{e}");
}

/// The page in headless Chromium: no console errors, and the charts' key elements in the rendered DOM. A
/// screenshot goes to target/ci/report.png.
fn browser(page: &Path, html: &str) {
    for id in ["pareto-size", "pareto-latency", "sensitivity", "heads", "summary", "stages", "trials", "recipe"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id} missing from the page");
    }
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src="), "self-contained: no script, no external resource");
    let chromium = ["chromium", "chromium-browser"].into_iter().find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()));
    let chromium = chromium.expect("chromium is needed for the report test (scripts/test.sh installs it)");
    let url = format!("file://{}", page.display());
    let flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0", "--window-size=1200,2600"];
    let dom = Command::new(chromium).args(flags).arg("--dump-dom").arg(&url).stdin(Stdio::null()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&dom.stdout), String::from_utf8_lossy(&dom.stderr));
    assert!(dom.status.success(), "chromium failed: {stderr}");
    let console: Vec<&str> = stderr.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    for needle in ["<svg id=\"pareto-size\"", "class=\"teacher\"", "class=\"chosen\"", "class=\"trial\"", "class=\"bar\"", "class=\"cell\""] {
        assert!(stdout.contains(needle), "{needle} not in the rendered page");
    }
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ci");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("report.png");
    let shot = Command::new(chromium).args(flags).arg(format!("--screenshot={}", png.display())).arg(&url).stdin(Stdio::null()).output().unwrap();
    assert!(shot.status.success() && std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000), "no screenshot: {}", String::from_utf8_lossy(&shot.stderr));
    eprintln!("report screenshot: {}", png.display());
}

#[test]
fn a_killed_search_resumes_to_the_same_choice() {
    let f = Fixture::new(Family::Bert, 12).unwrap();
    // Same-length names: config.json records input paths, and sizes are compared.
    let whole = f.scratch.join("run-a");
    ok(&args(&f, &whole));
    let want = json(&whole.join("report.json"));
    let out = f.scratch.join("run-b");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shrink")).args(args(&f, &out)).env("SHRINK_NO_PROGRESS", "1").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Killed once a few trials are done: partway through the search.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(out.join("trials")).map_or(0, |d| d.count()) < 6 {
        assert!(Instant::now() < deadline, "no trial finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("report.json").exists(), "killed before the end");
    ok(&args(&f, &out));
    let got = json(&out.join("report.json"));
    assert_eq!(got["chosen"], want["chosen"]);
    let ids = |r: &serde_json::Value| r["trials"].as_array().unwrap().iter().map(|t| (t["id"].clone(), t["dev"]["score"].clone(), t["file_bytes"].clone())).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&want), "the same trials with the same scores and sizes");
    assert_eq!(std::fs::read(out.join("model/model.safetensors")).unwrap(), std::fs::read(whole.join("model/model.safetensors")).unwrap());
}

#[test]
fn bad_input_is_refused_before_any_work() {
    let f = Fixture::new(Family::Bert, 13).unwrap();
    let out = f.scratch.join("o");
    let with = |extra: &[&str]| {
        let mut a = args(&f, &out);
        a.extend_from_slice(extra);
        fails(&a)
    };
    assert!(with(&["--time-budget", "3x"]).contains("--time-budget \"3x\": not a duration"));
    let mut a = args(&f, &out);
    let i = a.iter().position(|x| *x == "1x32").unwrap();
    a[i] = "128";
    assert!(fails(&a).contains("--latency-at \"128\": give it as BATCHxSEQ"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let e = fails(&args(&f, &out));
    assert!(e.contains("holds \"notes.txt\"") && out.join("notes.txt").exists(), "{e}");
    std::fs::remove_dir_all(&out).unwrap();
    let mut a = args(&f, &out);
    let i = a.iter().position(|x| *x == "0.2").unwrap();
    a[i] = "0.01";
    assert!(fails(&a).contains("both splits need at least 10"));
    let missing = f.scratch.join("nope.jsonl");
    let mut a = args(&f, &out);
    let i = a.iter().position(|x| *x == s(&f.train)).unwrap();
    a[i] = s(&missing);
    assert!(fails(&a).contains("nope.jsonl: no such data file"));
    let dry = ok(&{
        let mut a = args(&f, &out);
        a.push("--dry-run");
        a
    });
    assert!(dry.contains("round 0 t000 teacher") && dry.contains("round 1") && !out.join("plan.json").exists(), "{dry}");
}

#[test]
fn retrieval_searches_on_mrr_and_keeps_the_vocabulary() {
    let f = Fixture::new(Family::Bert, 14).unwrap();
    let out = f.scratch.join("retrieval");
    let mut a = args(&f, &out);
    a.splice(3..3, ["--task", "retrieval"]);
    ok(&a);
    let r = json(&out.join("report.json"));
    assert_eq!(r["metric"], "mrr@10");
    let trials = r["trials"].as_array().unwrap();
    assert!(trials.iter().all(|t| !t["variant"].as_str().unwrap().contains("trim") && t["dev"]["metrics"]["mrr@10"].is_number()));
    assert!(trials.iter().any(|t| t["structure"].as_str().unwrap().starts_with("student")), "embedding students are searched");
    let recipe = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
    assert!(!recipe.contains("finetune") && !recipe.contains("trim-vocab"), "{recipe}");
}
