//! examples/c/*.c built with the C compiler (`$CC`, else `cc`) against include/shrink.h and the libshrink.a cargo
//! built beside this test (the crate's staticlib comes out of the same rustc run as the rlib the tests link), then
//! run on MiniLM and the tiny classifier, what they print checked against the Rust engine. Cross runs
//! (scripts/test-aarch64.sh) set `CC` to the cross compiler and `SHRINK_C_RUNNER` to the emulator that runs its
//! binaries.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{assert_close, classifier, engine, minilm, root};

/// target/<profile>/, from this test's own path target/<profile>/deps/c_example-HASH.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).expect("test binary outside target/<profile>/deps").to_path_buf()
}

fn static_lib() -> PathBuf {
    let dir = profile_dir();
    [dir.join("deps/libshrink.a"), dir.join("libshrink.a")]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no libshrink.a under {}: build it with `cargo build --release -p shrink-capi`", dir.display()))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}{}", out.status, text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Each example compiled once (C99, warnings as errors) into target/<profile>/c-examples/.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let (dir, lib, cc) = (profile_dir().join("c-examples"), static_lib(), std::env::var("CC").unwrap_or("cc".into()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sources: Vec<PathBuf> = std::fs::read_dir(root().join("examples/c")).unwrap().map(|e| e.unwrap().path()).collect();
        sources.retain(|p| p.extension().is_some_and(|e| e == "c"));
        assert!(!sources.is_empty(), "no examples/c/*.c");
        for src in sources {
            let bin = dir.join(src.file_stem().unwrap());
            run(Command::new(&cc)
                .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2", "-I"])
                .arg(root().join("include"))
                .arg(&src)
                .arg(&lib)
                .args(["-lpthread", "-ldl", "-lm", "-o"])
                .arg(&bin));
        }
        dir
    });
    dir.join(name)
}

/// Runs example `name`, through `SHRINK_C_RUNNER` (a command and its arguments) when set.
fn exec(name: &str) -> Command {
    let bin = example(name);
    let runner = std::env::var("SHRINK_C_RUNNER").unwrap_or_default();
    let mut runner = runner.split_whitespace();
    match runner.next() {
        Some(emulator) => {
            let mut c = Command::new(emulator);
            c.args(runner).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// The values after `key` on each line starting with it, e.g. "embedding 0 v1 v2" -> [0, v1, v2].
fn records(out: &str, key: &str) -> Vec<Vec<String>> {
    let prefix = format!("{key} ");
    out.lines().filter_map(|l| l.strip_prefix(&prefix)).map(|l| l.split(' ').map(str::to_owned).collect()).collect()
}

fn floats(fields: &[String]) -> Vec<f32> {
    fields.iter().map(|v| v.parse().unwrap()).collect()
}

#[test]
fn embed_c_gives_the_engines_embeddings_and_reports_errors() {
    let texts = ["A man is playing a guitar.", "Someone is playing an instrument.", "The central bank raised interest rates."];
    let out = run(exec("embed").arg(minilm()).args(texts));
    assert!(out.starts_with(&format!("shrink {}\n", env!("CARGO_PKG_VERSION"))), "{out}");
    assert_eq!(records(&out, "dim"), [["384"]]);

    let rust = engine(&minilm(), 2).embed(&texts).unwrap();
    let rows = records(&out, "embedding");
    assert_eq!(rows.len(), texts.len(), "{out}");
    for (i, (row, want)) in rows.iter().zip(&rust).enumerate() {
        assert_eq!(row[0], i.to_string());
        assert_close(&floats(&row[1..]), want, &format!("embedding {i}"));
    }
    let cos: Vec<f32> = records(&out, "cosine").iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(cos[0] > cos[1] + 0.2, "related {} vs unrelated {}", cos[0], cos[1]);

    let no_head = records(&out, "no head:").concat().join(" ");
    assert!(no_head.starts_with("code -4: ") && no_head.ends_with("has no classification head (fine-tune it with `shrink finetune` first)"), "{out}");
    assert_eq!(records(&out, "missing folder:").concat().join(" "), "code -2: no/such/model: no such model folder");
}

#[test]
fn embed_c_classifies_with_a_model_that_has_labels() {
    let texts = ["Shares in the bank fell after its profits dropped.", "The striker scored twice in the cup final."];
    let out = run(exec("embed").arg(classifier()).args(texts));
    let rust = engine(&classifier(), 2).classify(&texts).unwrap();
    let (probs, labels) = (records(&out, "probs"), records(&out, "label"));
    assert_eq!((probs.len(), labels.len()), (2, 2), "{out}");
    for (i, want) in rust.iter().enumerate() {
        assert_close(&floats(&probs[i][1..]), &want.probs, &format!("probs {i}"));
        assert_eq!(labels[i], [i.to_string(), want.label.clone()]);
    }
    assert!(out.contains("missing folder: code -2: "), "{out}");
}

#[test]
fn the_header_compiles_as_cpp() {
    let cxx = std::env::var("CXX").unwrap_or("c++".into());
    run(Command::new(cxx)
        .args(["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "-x", "c++"])
        .arg(root().join("include/shrink.h")));
}
