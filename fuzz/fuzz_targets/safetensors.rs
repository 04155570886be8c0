//! The weights reader: a safetensors file (header length, JSON header, dtypes, shapes, offsets) through
//! `TensorFile::open`, then every tensor through every typed getter, at its own shape and at a wrong one, and the
//! per-layer shape check against the tiny config.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use shrink_format::{Config, TensorFile};

fuzz_target!(|data: &[u8]| {
    // A file, not bytes in memory: `open` maps it, and that path is what real folders take.
    let path = shrink_fuzz::scratch().join("model.safetensors");
    std::fs::write(&path, data).expect("cannot write the scratch file");
    let Ok(file) = TensorFile::open(&path) else { return };
    let file = Arc::new(file);
    let names: Vec<String> = file.names().map(str::to_string).collect();
    for name in &names {
        let shape = file.shape(name).expect("a listed tensor has a shape").to_vec();
        let _ = file.f32_shared(name, &shape).map(|v| v.iter().sum::<f32>());
        let _ = file.i8(name, &shape);
        let _ = file.u8(name, &shape);
        let _ = file.f16(name, &shape);
        let _ = file.u16(name, &shape);
        assert!(file.f32(name, &[shape.as_slice(), &[1]].concat()).is_err(), "{name}: a wrong shape was accepted");
    }
    let cfg: Config = serde_json::from_value(shrink_fuzz::tiny_config(false)).expect("the tiny config parses");
    let _ = file.check_layer_shapes(&cfg);
});
