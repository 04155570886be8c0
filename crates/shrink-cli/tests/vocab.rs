//! Vocabulary trimming (`shrink trim-vocab`): a smaller token table with the same output on the corpus it kept.

mod common;
use common::{asset, fails, model, ok};
use shrink_runtime::{Engine, Options};

/// The same ids reach the same rows, and everything after the lookup is unchanged: only rounding-free equality
/// would be stricter.
const MAX_CORPUS_EMBEDDING_DIFF: f32 = 1e-6;
/// A text outside a 300-article corpus splits its unseen words into smaller kept pieces: its embedding moves, but
/// stays close on average (measured 0.92 over 20 test articles; with all 1777 train articles as the corpus, 0.988
/// over the 448 test rows, and retrieval MRR@10 0.929 vs 0.925).
const MIN_HELD_OUT_MEAN_COSINE: f32 = 0.85;

fn texts(file: &str, field: &str, n: usize) -> Vec<String> {
    let rows = std::fs::read_to_string(asset(file)).unwrap();
    rows.lines().take(n).map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[field].as_str().unwrap().to_string()).collect()
}

fn engine(dir: &std::path::Path) -> Engine {
    Engine::load(dir, Options { threads: 2, max_len: Some(128), ..Default::default() }).unwrap()
}

#[test]
fn trimmed_model_embeds_corpus_texts_exactly_and_held_out_texts_closely() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = texts("data/bbc/train.jsonl", "text", 300);
    let corpus_file = tmp.path().join("corpus.txt");
    let one_line: Vec<String> = corpus.iter().map(|t| t.replace('\n', " ")).collect();
    std::fs::write(&corpus_file, one_line.join("\n")).unwrap();
    let out = tmp.path().join("trimmed");
    let report: serde_json::Value = serde_json::from_str(&ok(&[
        "trim-vocab",
        &model(),
        "--data",
        corpus_file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]))
    .unwrap();
    let kept = report["vocab_after"].as_u64().unwrap() as usize;
    assert!(kept < 30522 / 2, "300 articles use less than half the vocabulary: kept {kept}");
    assert_eq!(report["texts_unchanged"], 300);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["vocab_size"].as_u64().unwrap() as usize, kept);
    let vocab_lines = std::fs::read_to_string(out.join("vocab.txt")).unwrap().lines().count();
    assert_eq!(vocab_lines, kept);

    let (mut full, mut small) = (engine(model().as_ref()), engine(&out));
    let some = &one_line[..40];
    for (a, b) in full.embed(some).unwrap().iter().zip(small.embed(some).unwrap()) {
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(diff <= MAX_CORPUS_EMBEDDING_DIFF, "corpus text embedding moved by {diff}");
    }
    let held_out = texts("data/bbc/test.jsonl", "text", 20);
    let (a, b) = (full.embed(&held_out).unwrap(), small.embed(&held_out).unwrap());
    let mean = a.iter().zip(&b).map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>()).sum::<f32>() / a.len() as f32;
    assert!(mean >= MIN_HELD_OUT_MEAN_COSINE, "held-out mean cosine {mean}");
    // Characters never seen still tokenise: single characters are always kept.
    small.embed(&["Zürich Ω quixotic xylophones"]).unwrap();
}

#[test]
fn bad_trim_requests_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("c.txt");
    std::fs::write(&corpus, "shares rose\n").unwrap();
    let out = tmp.path().join("o");
    let (c, o) = (corpus.to_str().unwrap(), out.to_str().unwrap());
    let err = fails(&["trim-vocab", &model(), "--data", c, "--min-count", "0", "--out", o]);
    assert!(err.contains("--min-count"), "{err}");

    // Only WordPiece's greedy longest match guarantees corpus texts keep their pieces.
    let bpe = tmp.path().join("wordlevel");
    std::fs::create_dir(&bpe).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::os::unix::fs::symlink(asset("models/all-MiniLM-L6-v2").join(f), bpe.join(f)).unwrap();
    }
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(asset("models/all-MiniLM-L6-v2/tokenizer.json")).unwrap()).unwrap();
    tok["model"]["type"] = "WordLevel".into();
    std::fs::write(bpe.join("tokenizer.json"), tok.to_string()).unwrap();
    let err = fails(&["trim-vocab", bpe.to_str().unwrap(), "--data", c, "--out", o]);
    assert!(err.contains("WordPiece") && err.contains("tokenizer.json"), "{err}");

    let q = tmp.path().join("q");
    ok(&["quantize", &model(), "--scheme", "int8-dynamic", "--out", q.to_str().unwrap()]);
    let err = fails(&["trim-vocab", q.to_str().unwrap(), "--data", c, "--out", o]);
    assert!(err.contains("quantized"), "{err}");
    assert!(!out.exists(), "a failed trim writes nothing");
}
