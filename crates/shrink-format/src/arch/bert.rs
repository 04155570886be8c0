//! BERT (`model_type` "bert"): the canonical row; every other family's names are mapped to these.

use super::{Names, Spec};

pub const NAMES: Names = Names {
    word: "embeddings.word_embeddings",
    position: "embeddings.position_embeddings",
    token_type: Some("embeddings.token_type_embeddings"),
    embed_norm: "embeddings.LayerNorm",
    layers: "encoder.layer",
    parts: [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    ],
};

pub static SPEC: Spec = Spec {
    model_types: &["bert"],
    prefix: "bert",
    names: NAMES,
    renames: &[],
    implied: Vec::new,
    positions_after_padding: false,
};
