//! JSONL dataset text through `shrink_format::jsonl::parse` (the row reader every data command uses).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = shrink_format::jsonl::parse(Path::new("data.jsonl"), text) {
        assert!(e.to_string().starts_with("data.jsonl"), "the error does not name the file: {e}");
    }
});
