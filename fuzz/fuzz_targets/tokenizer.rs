//! tokenizer.json bytes through `TextTokenizer::from_json` (what `load` runs on the file), then encoding fixed texts
//! one by one and as a padded batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrink_format::TextTokenizer;
use shrink_fuzz::{MAX_LEN, TEXTS};

fuzz_target!(|data: &[u8]| {
    let Ok(tok) = TextTokenizer::from_json(data, "tokenizer.json".into(), MAX_LEN) else { return };
    let _ = tok.vocab_size();
    for text in TEXTS {
        if let Ok(ids) = tok.encode(text) {
            assert!(ids.len() <= MAX_LEN, "{} ids for max length {MAX_LEN}", ids.len());
        }
    }
    if let Ok(batch) = tok.batch(&TEXTS) {
        assert!(batch.b == TEXTS.len() && batch.t <= MAX_LEN && batch.ids.len() == batch.b * batch.t);
    }
});
