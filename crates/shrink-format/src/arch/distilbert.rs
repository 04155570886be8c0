//! DistilBERT (`model_type` "distilbert"): BERT's post-norm layers under other names, no token-type table, its
//! config in its own keys (`dim`, `n_heads`, `n_layers`, `hidden_dim`, `activation`), LayerNorm eps fixed at 1e-12.

use serde_json::Value;

use super::{Names, Spec};

pub static SPEC: Spec = Spec {
    model_types: &["distilbert"],
    prefix: "distilbert",
    names: Names {
        word: "embeddings.word_embeddings",
        position: "embeddings.position_embeddings",
        token_type: None,
        embed_norm: "embeddings.LayerNorm",
        layers: "transformer.layer",
        parts: [
            "attention.q_lin",
            "attention.k_lin",
            "attention.v_lin",
            "attention.out_lin",
            "sa_layer_norm",
            "ffn.lin1",
            "ffn.lin2",
            "output_layer_norm",
        ],
    },
    renames: &[
        ("dim", "hidden_size"),
        ("n_heads", "num_attention_heads"),
        ("n_layers", "num_hidden_layers"),
        ("hidden_dim", "intermediate_size"),
        ("activation", "hidden_act"),
        ("dropout", "hidden_dropout_prob"),
        ("attention_dropout", "attention_probs_dropout_prob"),
    ],
    implied,
    positions_after_padding: false,
};

/// What `DistilBertModel` hard-codes: no token types, nn.LayerNorm(eps=1e-12), a learned position table (a
/// sinusoidal one is refused by `Config::validate`).
fn implied() -> Vec<(&'static str, Value)> {
    vec![("type_vocab_size", 0.into()), ("layer_norm_eps", 1e-12.into()), ("position_embedding_type", "absolute".into())]
}
