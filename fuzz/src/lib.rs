//! What the fuzz targets share: a scratch folder for inputs the library reads from files, and the tiny model the
//! quantized target's seed folders are built from (`examples/tiny_model.rs`, `make-seeds.sh`).

use std::path::Path;
use std::sync::OnceLock;

/// A temp folder for this process, under $TMPDIR (scripts/fuzz.sh points it at a RAM folder it removes after).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("shrink-fuzz-").tempdir().expect("cannot create a temp folder"))
        .path()
}

/// The MiniLM tokenizer cut to 242 tokens (`make-tokenizer.jq`): loading it every iteration stays cheap.
pub const TOKENIZER: &[u8] = include_bytes!("../tiny/tokenizer.json");
pub const TOKENIZER_VOCAB: usize = 242;

/// Tokens per text in the targets that encode: below the tiny model's 16 positions, above most of `TEXTS`.
pub const MAX_LEN: usize = 8;

/// Short, long (truncated), non-ASCII, special-token and out-of-vocabulary texts, of different lengths so a batch
/// of them is padded.
pub const TEXTS: [&str; 5] = [
    "the time of the world",
    "she said that it was one of the first new school years, and then there were two more after that",
    "Ünïcödé naïve café 中文 🎉 \u{200b}tabs\tand\nnewlines",
    "[CLS] [SEP] [PAD] [MASK] [UNK]",
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
];

/// config.json of the tiny model: C = 32, 2 heads (D = 16), 1 layer, F = 64, 16 positions, the tiny vocabulary;
/// with `labels`, a 3-class shrink head.
pub fn tiny_config(labels: bool) -> serde_json::Value {
    let mut cfg = serde_json::json!({
        "model_type": "bert", "vocab_size": TOKENIZER_VOCAB, "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 16, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0
    });
    if labels {
        cfg["shrink"] = serde_json::json!({ "pooling": "mean", "head": "classifier", "max_len": MAX_LEN });
        cfg["id2label"] = serde_json::json!({ "0": "a", "1": "b", "2": "c" });
        cfg["label2id"] = serde_json::json!({ "a": 0, "b": 1, "c": 2 });
    }
    cfg
}
