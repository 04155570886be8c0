//! RoBERTa and XLM-RoBERTa (`model_type` "roberta", "xlm-roberta"): BERT's names under a `roberta.` task prefix, one
//! token type, and position ids that start after `padding_idx` (= `pad_token_id`, 1): real tokens count from
//! pad + 1, padding keeps pad, so a table of P rows numbers at most P - pad - 1 tokens.

use super::{bert, Spec};

pub static SPEC: Spec = Spec {
    model_types: &["roberta", "xlm-roberta"],
    prefix: "roberta",
    names: bert::NAMES,
    renames: &[],
    implied: Vec::new,
    positions_after_padding: true,
};
