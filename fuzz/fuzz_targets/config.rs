//! config.json text through `Config::parse` (serde + validation), the per-layer width accessors every loader
//! calls, and the round trip folder writers rely on: a config that loaded serialises to one that loads again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shrink_format::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = Config::parse(text) else { return };
    // Capped so a huge layer count cannot stall the target; the per-layer lists are checked to have one entry each.
    for l in 0..cfg.num_hidden_layers.min(1024) {
        let _ = (cfg.heads(l), cfg.attention_width(l), cfg.ffn(l));
    }
    let _ = (cfg.head_dim(), cfg.labels());
    let again = serde_json::to_string(&cfg).expect("a parsed config serialises");
    if let Err(e) = Config::parse(&again) {
        panic!("a config that loaded does not load after a round trip: {e:#}\n{again}");
    }
});
