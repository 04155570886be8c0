//! Writes the BERT fixture (seed 7) to $FIXTURE for `shrink-cli/tests/legacy/make.sh`; ignored in the suite.

#[test]
#[ignore]
fn dump() {
    let out = std::path::PathBuf::from(std::env::var("FIXTURE").expect("FIXTURE=DIR"));
    let f = shrink_fixture::Fixture::new(shrink_fixture::Family::Bert, 7).unwrap();
    std::fs::create_dir_all(out.join("model")).unwrap();
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(f.model.join(name), out.join("model").join(name)).unwrap();
    }
    std::fs::copy(&f.train, out.join("train.jsonl")).unwrap();
}
